"""Which world the suite runs on: `--world SPEC`, world ids, experiment names, world hashes.

A SPEC is a registered world with options, `sir:beta=0.5` or
`pairset:path=worlds/mine,encoder=minilm` (values read as YAML), or a YAML file holding a
world block (`{name, options}` or `{world: {name, options}}`, optionally `id:`). It replaces
the world block of every study it is given to (`study_on_world`); studies built on the SIR
construction (their own world is `sir`: identifiability, regime_map) run it over the given
world's PairSet instead, or are skipped (`StudySkipped`) when that world has no prompt with
two base samples. A world's runs never mix with another's:

* `world_id(block)` names it: the block's `id` if it has one, `default` for the embedded
  world (no options), else the PairSet folder's name (pairset) or the world's name, then
  every option set to a non-default value other than path and device, e.g. `sir,beta=0.5`,
  `mine` (pairset:path=worlds/mine), `mine,encoder=smollm2-meanpool`; the same world spelt
  two ways has one id;
* `experiment_name(study, world_id)` is the MLflow experiment and Optuna study of a study
  on that world: `main_table` on the default world (the names of every store made before
  worlds had ids), `main_table@sir,beta=0.5` on another; its report goes to
  `reports/<world id>/`;
* `world_hash(block)` is what the world is: its name, its non-default options (not path or
  device) and the content hash of the PairSet it reads. Every launch and trial run is tagged
  `world_id` and `world_hash`; fairl.runs.read refuses to put runs of two hashes in one table.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from fairl.config import ConfigError, load_yaml, parse_yaml
from fairl.data.compose import n_tnt_for
from fairl.data.planted import PlantedConfig
from fairl.data.sir import SirOptions
from fairl.paths import DEFAULT_WORLD_DIR
from fairl.worlds import WORLDS, PairSetWorldOptions, check_world_options

DEFAULT_WORLD_ID = "default"
OPTIONS = {"planted": PlantedConfig, "default": PairSetWorldOptions,
           "pairset": PairSetWorldOptions, "sir": SirOptions}
TEXT_WORLDS = ("default", "pairset", "sir")  # the worlds that read a PairSet folder
NOT_IDENTITY = ("path", "device")  # options that say where, not what
MIN_COMPOSED = 10  # a composed training set smaller than this is skipped, not run
_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.=,+-]")


class StudySkipped(Exception):
    """A study that cannot run on the given world; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class SuiteWorld:
    """The world every study of a `--world` run uses: its id and its block {name, options}."""

    id: str
    block: dict[str, Any]
    spec: str  # as the user gave it (messages, and the commands a report suggests)

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_WORLD_ID


def experiment_name(study: str, world: str | None) -> str:
    """MLflow experiment and Optuna study of `study` on world id `world` (None: the default)."""
    return study if world in (None, DEFAULT_WORLD_ID) else f"{study}@{world}"


def report_dir(root: Path, world: str | None) -> Path:
    """Where a world's report goes: `root` for the default world, `root/<world id>` else."""
    return Path(root) if world in (None, DEFAULT_WORLD_ID) else Path(root) / world


def identity_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that make a world what it is: set, not at their default, not path/device."""
    cls = OPTIONS.get(name)
    defaults = dataclasses.asdict(cls()) if cls else {}
    return {key: value for key, value in sorted(options.items())
            if key not in NOT_IDENTITY and (key not in defaults or defaults[key] != value)}


def world_id(block: dict[str, Any]) -> str:
    """The world's name in experiment names and report folders (see the module docstring)."""
    if block.get("id"):
        return str(block["id"])
    name, options = block["name"], block.get("options") or {}
    label = name
    if options.get("path"):
        folder = Path(options["path"]).resolve().name
        label = folder if name == "pairset" and folder not in WORLDS else f"{name}-{folder}"
    extras = [f"{key}={_text(value)}" for key, value in identity_options(name, options).items()]
    return _ID_CHARACTERS.sub("_", ",".join([label, *extras]))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def pairset_dir(block: dict[str, Any]) -> Path | None:
    """The PairSet folder a world reads (None for a world without one, e.g. planted)."""
    if block.get("name") not in TEXT_WORLDS:
        return None
    path = (block.get("options") or {}).get("path")
    return Path(path) if path else DEFAULT_WORLD_DIR


def world_hash(block: dict[str, Any]) -> str:
    """sha256 of the world's name, identity options and the content hash of its PairSet."""
    payload: dict[str, Any] = {"name": block["name"], "options": identity_options(
        block["name"], block.get("options") or {})}
    folder = pairset_dir(block)
    if folder is not None:
        payload["pairset"] = json.loads((folder / "card.json").read_text())["content_hash"]
    text = json.dumps(payload, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the SPEC, checked at the edge ------------------------------------------------------------

def parse_world(spec: str) -> SuiteWorld:
    """A SPEC (`name:key=value,...` or a YAML file) as a checked SuiteWorld; ConfigError if bad."""
    where = f"--world {spec}"
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        values = load_yaml(spec)
        block = values.get("world", values) if isinstance(values, dict) else values
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: expected a world block {{name, options}}")
    else:
        name, _, rest = spec.partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: {item!r}: expected KEY=VALUE (e.g. sir:beta=0.5)")
            options[key.strip()] = parse_yaml(value, f"{where}: {key.strip()}")
        block = {"name": name.strip(), "options": options}
    return _checked_world(block, spec, where)


def _checked_world(block: dict[str, Any], spec: str, where: str) -> SuiteWorld:
    """A world block checked as a study would check it, with its id; ConfigError naming the field."""
    unknown = sorted(set(block) - {"name", "options", "id"})
    if unknown:
        hint = " (composition belongs to the study)" if "compose" in unknown else ""
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}{hint}; a world "
                          "block has name, options and id")
    name, options = block.get("name"), block.get("options") or {}
    if name not in WORLDS:
        raise ConfigError(f"{where}: name: unknown world {name!r}; known: {', '.join(WORLDS)}")
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options: expected a mapping")
    check_world_options(name, options, f"{where}: options")
    _check_validation_split(name, options, where)
    given_id = block.get("id")
    if given_id is not None and (not isinstance(given_id, str) or _ID_CHARACTERS.search(given_id)
                                 or not given_id):
        raise ConfigError(f"{where}: id: letters, digits and _ . = , + - only (got {given_id!r})")
    clean = {"name": name, "options": dict(options)}
    computed = world_id(clean)
    if given_id == DEFAULT_WORLD_ID and computed != DEFAULT_WORLD_ID:
        raise ConfigError(f"{where}: id: 'default' names the embedded world only")
    return SuiteWorld(given_id or computed, clean, spec)


def _check_validation_split(name: str, options: dict, where: str) -> None:
    """A text world's PairSet must have validation pairs: the suite's studies select on them."""
    if name not in ("default", "pairset"):
        return
    split = options.get("validation_split", "validation")
    card = json.loads(((pairset_dir({"name": name, "options": options})) / "card.json")
                      .read_text())
    if split is not None and card.get("sizes", {}).get(split, {}).get("pairs", 0) == 0:
        raise ConfigError(f"{where}: options.validation_split: the PairSet has no {split!r} "
                          "pairs, and every study of the suite selects on the validation split")


# --- a study on a world ----------------------------------------------------------------------

def study_on_world(path: str | Path, world: SuiteWorld | None) -> tuple[dict[str, Any], list[str]]:
    """The study file's mapping run on `world` (None: its own world), tagged world_id and
    world_hash, and notes on what was adapted; StudySkipped when it cannot run there."""
    raw = load_yaml(path)
    notes: list[str] = []
    if not isinstance(raw, dict) or not isinstance(raw.get("world", {}), dict):
        return raw, notes  # load_study names what is wrong
    stem = str(raw.get("name") or Path(path).stem)
    if world is not None and not world.is_default:
        own = raw.get("world") or {}
        block = _study_block(own, world, stem)
        compose = own.get("compose")
        if compose is not None and block["name"] != "sir":
            compose, note = _fit_composition(raw, compose, block, stem)
            notes += [note] if note else []
        raw["world"] = {**block, **({"compose": compose} if compose is not None else {})}
        raw["name"] = experiment_name(stem, world.id)
    tags = raw.get("tags")
    if tags is None or isinstance(tags, dict):
        tags = dict(tags or {})
        tags["world_id"] = world.id if world is not None else DEFAULT_WORLD_ID
        try:
            tags["world_hash"] = world_hash(raw["world"])
        except (OSError, KeyError, TypeError, ValueError):
            pass  # a broken world block: load_study reports it, naming the field
        raw["tags"] = tags
    return raw, notes


def _study_block(own: dict, world: SuiteWorld, stem: str) -> dict[str, Any]:
    """The world block a study runs with on `world`: the SIR construction for SIR studies."""
    block = copy.deepcopy(world.block)
    if own.get("name") != "sir":
        return block
    options = dict(own.get("options") or {})
    if block["name"] == "sir":
        return {"name": "sir", "options": {**options, **block["options"]}}
    folder = pairset_dir(block)
    if folder is None:
        raise StudySkipped(f"{stem}: skipped on {world.id}: it sweeps the SIR construction over "
                           f"a PairSet's base samples, and a {block['name']} world has none")
    most = max_samples_per_prompt(folder)
    if most < 2:
        raise StudySkipped(f"{stem}: skipped on {world.id}: the SIR construction needs >= 2 base "
                           f"samples per prompt, and this PairSet has at most {most} in a split")
    encoder = block["options"].get("encoder", "minilm")
    if encoder not in ("minilm", "base-meanpool"):
        raise StudySkipped(f"{stem}: skipped on {world.id}: the SIR world encodes with minilm "
                           f"or base-meanpool, not {encoder}")
    options.update(path=str(folder), encoder=encoder)
    return {"name": "sir", "options": options}


def max_samples_per_prompt(folder: Path) -> int:
    """The smallest, over the splits, of the most base samples a prompt has in that split."""
    import pyarrow.parquet as pq  # light beside datasets, and only needed here

    most = []
    for split in ("train", "validation", "test"):
        file = folder / f"{split}.parquet"
        ids = pq.read_table(file, columns=["prompt_id"]).column(0).to_pylist() \
            if file.is_file() else []
        most.append(max(Counter(ids).values(), default=0))
    return min(most)


def _fit_composition(raw: dict, compose: dict, block: dict, stem: str):
    """The study's (n, tnt_fraction) capped to what the world's training split holds."""
    fractions = [compose.get("tnt_fraction", 0.0)]
    searched = (raw.get("search") or {}).get("world.compose.tnt_fraction")
    if isinstance(searched, dict):
        searched = searched.get("choices") or [searched.get("low"), searched.get("high")]
    fractions += [value for value in searched or [] if isinstance(value, int | float)]
    folder = pairset_dir(block)
    if folder is None or not isinstance(compose.get("n"), int):
        return compose, None
    card = json.loads((folder / "card.json").read_text())
    splits = (block["options"].get("train_splits") or ["train"])
    tnt = sum(card["transitions"].get(split, {}).get("T->NT", 0) for split in splits)
    pairs = sum(card["sizes"].get(split, {}).get("pairs", 0) for split in splits)
    n = compose["n"]
    while n > 0 and any(n_tnt_for(n, f) > tnt or n - n_tnt_for(n, f) > pairs - tnt
                        for f in fractions):
        n -= 1
    if n == compose["n"]:
        return compose, None
    if n < MIN_COMPOSED:
        raise StudySkipped(
            f"{stem}: skipped: it composes {compose['n']} training pairs at T→NT fractions "
            f"{min(fractions):g}..{max(fractions):g}, and the training split has {tnt} T→NT of "
            f"{pairs} pairs (at most {n} such pairs)")
    return {**compose, "n": n}, (
        f"{stem}: world.compose.n {compose['n']} -> {n}: the training split has {tnt} T→NT "
        f"of {pairs} pairs (fractions {min(fractions):g}..{max(fractions):g})")


def rerlhf_on_world(path: str | Path, world: SuiteWorld | None) -> dict[str, Any]:
    """A re-RLHF study file's mapping on `world`: its PairSet, the base LM and r* its card
    names, the LoRA targets its aligned model was trained with; StudySkipped if it has none."""
    raw = load_yaml(path)
    if world is None or world.is_default or not isinstance(raw, dict):
        return raw
    stem = str(raw.get("name") or Path(path).stem)
    block = world.block
    if block["name"] not in ("default", "pairset"):
        raise StudySkipped(f"{stem}: skipped on {world.id}: re-RLHF re-trains a text world's "
                           f"base LM, and a {block['name']} world has none")
    card = json.loads((pairset_dir(block) / "card.json").read_text())
    models = card.get("models") or {}
    if not models.get("base"):
        raise StudySkipped(f"{stem}: skipped on {world.id}: re-RLHF re-trains the LM that wrote "
                           "o_NT, and the PairSet's card names none (models.base)")
    reward = card["labelling"]["reward_scorer"]
    raw["world"] = copy.deepcopy(block)
    raw["base_model"] = models["base"]
    raw["judges"] = list(dict.fromkeys(["bilstm", reward, *card.get("scorers", {})]))
    for source in (raw.get("sources") or {}).values():
        if isinstance(source, dict) and source.get("kind") == "scorer":
            source["scorer"] = reward  # the ground truth of this world
    targets = (models.get("rlhf") or {}).get("lora_targets")
    if targets and isinstance(raw.get("rlhf"), dict):
        raw["rlhf"] = {**raw["rlhf"], "lora_targets": list(targets)}
    if "device" in block["options"]:
        raw["device"] = block["options"]["device"]
    raw["name"] = experiment_name(stem, world.id)
    raw["tags"] = {**(raw.get("tags") or {}), "world_id": world.id,
                   "world_hash": world_hash(block)}
    return raw
