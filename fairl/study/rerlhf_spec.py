"""The re-RLHF study file: train the base LM against recovered rewards, measure toxicity.

The paper's downstream test (arXiv 2510.06092, §5): a reward recovered by FA-IRL, used to
re-run RLHF on the base model, should detoxify it better than the reward recovered by
standard IRL (their numbers: toxicity 6 % FA-IRL, 9 % standard IRL, 4 % ground truth).

A reward *source* becomes a text -> reward function:
* ``irl``: linear heads on the frozen encoder, R(o) = θ_D·h(o) + b_D (+ θ_F·h(o) + b_F for
  FA-IRL), either fitted right here on the study's world for each seed (`fit:` = FitConfig
  overrides; a fit takes about a second), or read from a logged study trial (`run_id:`, its
  rewards.npz holds every seed's heads) or from a saved FitResult (`path:` .npz);
* ``scorer``: the ground-truth r* (clipped log-odds of non-toxic by the profanity scorer);
* ``base``: no reward and no training: the base model itself, the floor.
Every trained source gets the same `fairl.lm.rlhf` run (the trainer that built the aligned model
of the world): same RLHFConfig, prompts and seed. RLOO advantages are divided by their batch
std (`RLHFConfig.scale_advantages`), so the learning signal does not depend on the reward's
scale (r* lives in [-6, 6], IRL rewards on their own scale) and lr / kl_beta mean the same
thing for every source; only the ordering the reward induces among a prompt's samples matters.

Evaluation (`evaluate_policy`): k samples of each held-out prompt (the world's test split,
toxic prompts by default) with one sampling seed shared by every source of a seed; toxicity
rate (toxicity >= threshold) and mean by the independent judge (the BiLSTM) and by r*'s
scorer; KL to the base, a Monte-Carlo mean over the policy's own samples of
log p_policy(y|x) - log p_base(y|x); perplexity of the samples under the base (fluency); and,
against reward hacking, length, distinct-2, in-sample bigram repetition and the empty rate.

The study file (`studies/rerlhf/*.yaml`, see `ReRLHFStudy`) is a grid, source x seed, run by
`fairl study run` like any study (fairl.study.kinds): one Optuna trial per cell, its MLflow run
(tag kind=policy) a child of the launch run, with tags study / source / seed / world /
dataset_hash / config_hash / git commit, params, final metrics, per-step curves `curve/<name>`,
and artifacts (config.yaml, curves.csv, samples.csv, reward.npz for IRL rewards). The trial's
Optuna value is the toxic rate by the first judge (`ReRLHFStudy.metrics`), minimised. A failed
cell ends FAILED with traceback.txt and the grid goes on; a cell with a FINISHED run of the same
`config_hash` in the experiment is never retrained, and a killed RLHF run resumes from its
checkpoint (`fairl.lm.rlhf` caches policies by identity under .cache/rerlhf/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, ConfigError, build, load_yaml
from fairl.devices import DeviceName, dtype_name, model_dtype, resolve_device
from fairl.irl.config import FitConfig
from fairl.paths import DEFAULT_WORLD_DIR
from fairl.worlds import check_world_options

SOURCE_ORDER = ("none", "ground_truth", "standard_irl", "fa_irl")  # display / run order
FIT_METRICS = ("f1", "roc_auc", "pairwise_accuracy", "starc")  # logged as reward_test_<m>
CODE_VERSION = 1  # bump when a change alters results: cached runs then no longer match


# --- the study file ------------------------------------------------------------------------

@dataclass(config=STRICT)
class SourceSpec:
    """Where a reward comes from (exactly one of fit / run_id / path for kind irl)."""

    kind: Literal["irl", "scorer", "base"] = Field(
        description="irl: linear heads on the encoder; scorer: r*; base: no training (floor)")
    fit: dict[str, Any] | None = Field(
        None, description="irl: FitConfig overrides (on top of the study's `fit`) fitted per seed")
    run_id: str | None = Field(None, description="irl: MLflow study trial whose rewards.npz to use")
    path: str | None = Field(None, description="irl: a FitResult .npz (fairl fit --save)")
    reward_seed: int | None = Field(
        None, ge=0, description="run_id: which seed's heads; default: the policy's seed")
    scorer: str = Field("profanity", description="scorer: whose r* is the reward")

    @model_validator(mode="after")
    def _one_origin(self):
        given = [name for name in ("fit", "run_id", "path") if getattr(self, name) is not None]
        if self.kind == "irl":
            if len(given) > 1:
                raise ValueError(f"give one of fit / run_id / path, not {' and '.join(given)}")
            if not given:
                self.fit = {}
        elif given:
            raise ValueError(f"{', '.join(given)}: only for kind irl")
        if self.reward_seed is not None and self.run_id is None:
            raise ValueError("reward_seed: only with run_id")
        return self


@dataclass(config=STRICT)
class PromptSpec:
    """A deterministic set of the world's prompts: one split, optionally only toxic ones."""

    split: Literal["train", "validation", "test"] = Field(description="PairSet split")
    kind: Literal["all", "toxic", "benign"] = Field("all", description="which prompts")
    max_prompts: int | None = Field(None, ge=1, description="cap (lowest prompt ids first)")


@dataclass(config=STRICT)
class EvalSpec:
    """How every policy (and the base) is evaluated; identical for all sources."""

    prompts: PromptSpec = Field(
        default_factory=lambda: PromptSpec(split="test", kind="toxic", max_prompts=160),
        description="held-out prompts")
    samples: int = Field(2, ge=1, description="continuations per prompt")
    max_new_tokens: int = Field(24, ge=1, description="longest continuation, in tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    seed: int = Field(1000, ge=0, description="sampling seed; seed + the policy's seed is used")
    batch_size: int = Field(32, ge=1, description="sequences per generation batch")


@dataclass(config=STRICT)
class ReRLHFStudy:
    """A re-RLHF study file: reward sources x seeds on one text world."""

    world: dict[str, Any] = Field(description="{name: default | pairset, options: {...}}")
    sources: dict[str, SourceSpec] = Field(min_length=1, description="name -> reward source")
    seeds: list[int] = Field(min_length=1, description="every source is trained once per seed")
    rlhf: dict[str, Any] = Field(description="RLHFConfig fields (not seed): equal for every source")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=,+@-]*$",
                             description="MLflow experiment; default: the file stem "
                                         "(@<world id> appended on another world)")
    description: str = Field("", description="what the study shows")
    base_model: str = Field("smollm2-135m-instruct", description="the LM that is re-trained")
    fit: dict[str, Any] = Field(default_factory=dict, description="base FitConfig of irl sources")
    train_prompts: PromptSpec = Field(default_factory=lambda: PromptSpec(split="train"),
                                      description="RLHF prompts (as the aligned model saw)")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="evaluation of every policy")
    judges: list[str] = Field(default_factory=lambda: ["bilstm", "profanity"], min_length=1,
                              description="toxicity scorers; bilstm = the independent judge")
    threshold: float = Field(0.5, gt=0, lt=1, description="toxicity >= threshold is toxic")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow run tags")
    device: DeviceName = Field(
        "auto", description="auto | cpu | cuda | cuda:N for RLHF, generation, log-probs, judges "
        "and the IRL reward's encoder; auto = CUDA if available. The dtype it implies enters "
        "the cell identities, the device name does not")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("seeds must be distinct and >= 0")
        return seeds

    @field_validator("rlhf", "fit")
    @classmethod
    def _no_seed(cls, values: dict, info: ValidationInfo) -> dict:
        if "seed" in values:
            raise ValueError("`seed` is not set here: list the seeds under `seeds`")
        if info.field_name == "rlhf" and "device" in values:
            raise ValueError("`device` is not set here: it is the study's top-level `device`")
        return values

    @property
    def metrics(self) -> list[str]:
        """The Optuna value of a cell: its toxic rate by the first judge (the independent one)."""
        return [f"tox_rate_{self.judges[0]}"]

    @property
    def directions(self) -> list[str]:
        return ["minimize"]


@dataclasses.dataclass
class Study:
    spec: ReRLHFStudy
    path: str
    world_path: Path  # the PairSet folder
    dataset_hash: str  # its content hash (from card.json; checked when the world loads)
    device: str = "cpu"  # spec.device resolved (cpu or cuda:N)
    reward_scorer: str = "profanity"  # the scorer of the world's r* (its card's labelling)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)  # the mapping as read

    @property
    def dtype(self):
        """torch dtype of the evaluated models on this device (fairl.devices.model_dtype)."""
        return model_dtype(self.device)

    @property
    def name(self) -> str:
        return self.spec.name or Path(self.path).stem

    def rlhf_config(self, seed: int):
        from fairl.lm.rlhf import RLHFConfig  # heavy: the trainer imports torch and transformers

        return RLHFConfig(**{**self.spec.rlhf, "seed": seed, "device": self.device})

    def fit_config(self, source: SourceSpec, seed: int) -> FitConfig:
        return FitConfig(**{**self.spec.fit, **(source.fit or {}), "seed": seed})

    @property
    def trials(self) -> int:
        return len(self.cells())

    grid_size = trials  # a grid: every cell once

    def fingerprint(self) -> str:
        """What the Optuna study is: the shared settings and the grid (sources and seeds)."""
        spec = dataclasses.asdict(self.spec)
        return hash_of({"settings": self.settings_fingerprint(), "sources": spec["sources"],
                        "seeds": spec["seeds"]})

    def settings_fingerprint(self) -> str:
        """Hash of the settings every cell shares (sources and the seed list excluded): the
        runs' tag `study_fingerprint`, by which the report takes one configuration's runs."""
        spec = dataclasses.asdict(self.spec)
        keep = {key: spec[key] for key in ("world", "base_model", "fit", "rlhf", "train_prompts",
                                           "eval", "judges", "threshold")}
        keep.update(dataset_hash=self.dataset_hash, code=CODE_VERSION)
        if dtype_name(self.dtype) != "float32":  # fp32 fingerprints stay those of before
            keep["dtype"] = dtype_name(self.dtype)
        return hash_of(keep)

    def config_hash(self, source: str, seed: int) -> str:
        """Identity of one cell: a FINISHED run with this hash is not run again."""
        spec = dataclasses.asdict(self.spec.sources[source])
        return hash_of({"fingerprint": self.settings_fingerprint(), "source": source,
                        "spec": spec, "seed": seed})

    @property
    def source_names(self) -> list[str]:
        """The sources in display order (SOURCE_ORDER first)."""
        return sorted(self.spec.sources, key=lambda s: (SOURCE_ORDER.index(s)
                                                         if s in SOURCE_ORDER else 99, s))

    def cells(self) -> list[tuple[str, int]]:
        """Every (source, seed) of the grid, seed by seed."""
        return [(name, seed) for seed in self.spec.seeds for name in self.source_names]


def hash_of(value: Any) -> str:
    """16 hex digits of the sha256 of `value` as sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_study(path: str | Path, raw: dict | None = None) -> Study:
    """Read and validate a re-RLHF study file; errors name the file and the field."""
    from fairl.lm.rlhf import RLHFConfig  # heavy: see Study.rlhf_config

    path = str(path)
    raw = load_yaml(path) if raw is None else raw
    spec = build(ReRLHFStudy, raw, path)
    try:
        RLHFConfig(**{**spec.rlhf, "seed": 0})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: rlhf: {error}") from None
    for name, source in spec.sources.items():
        if source.kind == "irl" and source.fit is not None:
            build(FitConfig, {**spec.fit, **source.fit}, f"{path}: sources.{name}.fit")
        if source.kind == "scorer" and source.scorer not in ("profanity", "bilstm") \
                and not source.scorer.startswith("hub"):
            raise ConfigError(f"{path}: sources.{name}.scorer: unknown scorer {source.scorer!r}")
    for judge in spec.judges:
        if judge not in ("profanity", "bilstm") and not judge.startswith("hub"):
            raise ConfigError(f"{path}: judges: unknown scorer {judge!r}")
    world_path = _world_path(spec.world, path)
    card = json.loads((world_path / "card.json").read_text())
    device = resolve_device(spec.device, f"{path}: device")
    reward = card.get("labelling", {}).get("reward_scorer", "profanity")
    return Study(spec, path, world_path, card["content_hash"], device, reward, raw)


def _world_path(world: dict, where: str) -> Path:
    """The PairSet folder of a text world (re-RLHF needs prompts and texts)."""
    name, options = world.get("name"), world.get("options") or {}
    unknown = set(world) - {"name", "options"}
    if unknown:
        raise ConfigError(f"{where}: world: unknown field(s) {sorted(unknown)}")
    if name not in ("default", "pairset"):
        raise ConfigError(f"{where}: world.name: re-RLHF needs a text world (default or "
                          f"pairset), got {name!r}")
    try:
        check_world_options(name, options, "world.options")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return Path(options["path"]) if options.get("path") else DEFAULT_WORLD_DIR


def world_prompts(world_path: Path, spec: PromptSpec) -> list[str]:
    """Distinct prompts of one PairSet split, ordered by prompt id (a hash), capped."""
    file = Path(world_path) / f"{spec.split}.parquet"
    if not file.exists():
        return []
    table = pq.read_table(file, columns=["prompt_id", "prompt", "is_toxic_prompt"]).to_pylist()
    chosen = {row["prompt_id"]: row["prompt"] for row in table
              if spec.kind == "all" or row["is_toxic_prompt"] == (spec.kind == "toxic")}
    texts = [chosen[pid] for pid in sorted(chosen)]
    return texts[: spec.max_prompts] if spec.max_prompts else texts


