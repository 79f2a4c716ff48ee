"""Your own pairs in: CSV, JSONL, Parquet or a Hugging Face dataset -> a `pairset` world.

Rows need a prompt, the aligned output (o_T) and the base output (o_NT); columns are mapped
by name. Without reward columns the project's judges score both outputs (r* as in every
PairSet); with them, the given r* is kept and the judges only label toxicity. Every check runs
on the whole input before any scoring, and names the row (1 = first data row) or the column.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from fairl.config import ConfigError

FORMATS = ("csv", "jsonl", "parquet", "hf")


@dataclasses.dataclass
class Columns:
    """Which source column is which PairSet field."""

    prompt: str = "prompt"
    aligned: str = "o_T"
    base: str = "o_NT"
    id: str | None = None
    rewards: tuple[str, str] | None = None  # (r of o_T, r of o_NT)


def guess_format(source: str) -> str:
    path = Path(source)
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    for fmt, suffixes in {"csv": (".csv",), "jsonl": (".jsonl", ".json", ".ndjson"),
                          "parquet": (".parquet", ".pq")}.items():
        if suffix in suffixes:
            return fmt
    if path.exists():
        raise ConfigError(f"{source}: cannot tell its format from the name; give --format "
                          f"({', '.join(FORMATS)})")
    return "hf"  # not a local path: a Hugging Face hub dataset name


def _text(path: Path) -> str:
    """The file as UTF-8 text; a bad byte is an error naming its line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 (byte {data[error.start]:#04x} at "
                          f"offset {error.start}); re-save the file as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty")
    return text.removeprefix("\ufeff")


def read_source(source: str, fmt: str):
    """The source rows as a pandas DataFrame (all columns as read)."""
    import pandas as pd

    path = Path(source)
    if fmt in ("csv", "jsonl", "parquet") and not path.is_file():
        raise ConfigError(f"{source}: no such file")
    if fmt == "csv":
        import io

        try:  # strings as they are: no NaN for empty cells, no numbers guessed
            return pd.read_csv(io.StringIO(_text(path)), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise ConfigError(f"{source}: not a readable CSV ({error})") from None
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{source}: line {number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{source}: line {number}: a JSON object per line expected")
            rows.append(row)
        return pd.DataFrame(rows)
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 (pyarrow raises many types)
            raise ConfigError(f"{source}: not a readable Parquet file ({error})") from None
    return _read_hf(source)


def _read_hf(source: str):
    """A `save_to_disk` folder, or a hub name (needs the network); splits joined."""
    import datasets

    try:
        data = datasets.load_from_disk(source) if Path(source).is_dir() \
            else datasets.load_dataset(source)
    except Exception as error:  # noqa: BLE001 (datasets raises many types)
        raise ConfigError(f"{source}: not a Hugging Face dataset folder or reachable hub "
                          f"dataset ({type(error).__name__}: {error})") from None
    if isinstance(data, datasets.DatasetDict):
        data = datasets.concatenate_datasets(list(data.values()))
    return data.to_pandas()


def check_rows(frame, columns: Columns, source: str):
    """The rows mapped to PairSet columns, or a ConfigError naming the row or column."""
    import pandas as pd

    if frame.empty:
        raise ConfigError(f"{source}: no rows")
    wanted = {columns.prompt: "prompt", columns.aligned: "o_T", columns.base: "o_NT"}
    if columns.id:
        wanted[columns.id] = "source_id"
    if columns.rewards:
        wanted.update({columns.rewards[0]: "r_T", columns.rewards[1]: "r_NT"})
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        raise ConfigError(f"{source}: column {missing[0]!r} not found (columns: "
                          f"{', '.join(map(str, frame.columns))}); map it with --"
                          f"{_flag(columns, missing[0])}")
    rows = frame[list(wanted)].rename(columns=wanted).reset_index(drop=True)
    for field in ("prompt", "o_T", "o_NT"):
        name = next(k for k, v in wanted.items() if v == field)
        for index, value in enumerate(rows[field]):
            if not isinstance(value, str) or not value.strip():
                what = "empty" if isinstance(value, str) or value is None else \
                    f"not text ({type(value).__name__})"
                raise ConfigError(f"{source}: row {index + 1}, column {name!r}: {what}")
    if columns.id:
        ids = rows["source_id"].astype(str)
        repeated = ids[ids.duplicated(keep=False)]
        if len(repeated):
            first = repeated.index[:2].tolist()
            raise ConfigError(f"{source}: column {columns.id!r}: id {repeated.iloc[0]!r} in rows "
                              f"{first[0] + 1} and {first[1] + 1} (ids must be unique)")
        rows["source_id"] = ids
    for field in ("r_T", "r_NT") if columns.rewards else ():
        name = next(k for k, v in wanted.items() if v == field)
        values = pd.to_numeric(rows[field].replace("", None), errors="coerce")
        bad = values.isna() | ~values.apply(lambda v: abs(v) < float("inf"))
        if bad.any():
            index = int(bad.idxmax())
            raise ConfigError(f"{source}: row {index + 1}, column {name!r}: not a finite "
                              f"number ({rows[field].iloc[index]!r})")
        rows[field] = values.astype("float64")
    return rows


def _flag(columns: Columns, name: str) -> str:
    for flag, value in (("prompt-col", columns.prompt), ("aligned-col", columns.aligned),
                        ("base-col", columns.base), ("id-col", columns.id)):
        if value == name:
            return flag
    return "reward-cols"


def import_world(source: str, out: str | Path, fmt: str | None = None,
                 columns: Columns | None = None, name: str | None = None):
    """Read, check, score and save `source` as a PairSet world in `out`; returns the PairSet."""
    from fairl.data.pairset import PairSet  # heavy: datasets, the judges

    started = time.perf_counter()
    fmt = fmt or guess_format(source)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    columns = columns or Columns()
    rows = check_rows(read_source(source, fmt), columns, source)
    rows["prompt_source"] = "imported"
    pairset = PairSet.build(
        rows, name=name or Path(source.rstrip("/")).stem, given_rewards=bool(columns.rewards),
        build_config={"source": str(source), "format": fmt, **dataclasses.asdict(columns)},
        notes=[f"Imported by `fairl world import` from {source} ({fmt}, {len(rows)} rows)."],
        build_seconds=time.perf_counter() - started)
    pairset.save(out)
    return pairset
