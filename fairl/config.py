"""Config plumbing shared by every stage: the one YAML loader, readable errors, overrides.

YAML is read as YAML 1.2 core schema (`yes`, `on`, `2024-01-01`, `012`, `<<` are plain strings
or decimals, `1e-3` is a float) with hard limits, so that hostile or broken input costs little
and always ends in one short ConfigError naming the file and the field, never a traceback.
"""

from __future__ import annotations

import copy
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

# Every config in fairl rejects unknown keys, re-validates on assignment and refuses inf/nan.
# No strict=True: a strict pydantic dataclass refuses a dict wherever it is a nested field (as
# FitConfig in ExperimentConfig), and also makes its parents refuse dicts for their nested
# dataclasses. Strict types go on the fields instead: pydantic's StrictInt, StrictFloat (an int
# is accepted), StrictBool, StrictStr refuse '5' for 5, 1 for True, 5.0 for 5.
STRICT = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
Int, Float, Bool, Str = StrictInt, StrictFloat, StrictBool, StrictStr  # field types of configs

MAX_FILE_BYTES = 1 << 20  # a config is a few KB; this bounds the parse to well under a second
MAX_DEPTH = 50  # nesting of mappings/lists; real configs use 3 or 4
MAX_NODES = 10_000  # values after expanding aliases (stops "billion laughs"); studies use ~100
MAX_MESSAGE_BYTES = 1900  # every ConfigError message stays under 2 KB
MAX_PROBLEMS = 20  # validation problems listed per error (the rest are counted)

_EventLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # C: 5x faster
_SHORT = reprlib.Repr()  # bounded repr: cheap even for a huge or deeply nested input
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 3


class ConfigError(ValueError):
    """A config value is wrong; the message names the file (if any) and the field."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_cap(str(message)))


def _cap(message: str) -> str:
    """`message` cut to MAX_MESSAGE_BYTES of UTF-8, saying how long it was."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    head = data[:MAX_MESSAGE_BYTES - 60].decode("utf-8", "ignore")
    return f"{head} … (message cut: {len(data)} bytes in all)"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def short_repr(value: Any) -> str:
    """repr of `value`, bounded (a few elements per level, 80 characters per string)."""
    return _clip(_SHORT.repr(value), 200)


def describe_validation_error(error: pydantic.ValidationError, where: str) -> str:
    """One line per problem: `where.field.sub: message (got value)`, at most MAX_PROBLEMS."""
    lines = []
    problems = error.errors()
    for problem in problems[:MAX_PROBLEMS]:
        location = ".".join(_clip(str(part)) for part in problem["loc"])
        name = ".".join(part for part in (where, location) if part) or "(top level)"
        message = _clip(problem["msg"].removeprefix("Value error, "), 300)
        got = problem.get("input")
        got_text = "" if problem["type"] in {"missing"} or isinstance(got, dict | list) \
            else f" (got {short_repr(got)})"
        lines.append(f"{name}: {message}{got_text}")
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{where or '(top level)'}: … and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(lines)


def build(cls, values: dict[str, Any] | None, where: str):
    """Construct config class `cls` from `values`, raising ConfigError that names the field."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(values).__name__}")
    values = values or {}
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {short_repr(key)} is not a string (keys are fields)")
    try:
        return cls(**values)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None
    except TypeError as error:  # e.g. a key that collides with the __init__ signature
        raise ConfigError(f"{where}: {_clip(str(error), 300)}") from None


# --- reading YAML -------------------------------------------------------------------------------

def read_config_text(path: str | Path) -> str:
    """The UTF-8 text of a config file, refused (one line) if unreadable, too big or not UTF-8."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            # Only MAX_FILE_BYTES + 1 are ever read, so /dev/zero or a 50 MB file cost nothing.
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:  # a directory, permission denied, an I/O error, ...
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: file larger than the {MAX_FILE_BYTES} byte limit "
                          "of a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[error.start]:02x} at byte "
                          f"offset {error.start} ({error.reason})") from None
    return text.removeprefix("\ufeff")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (YAML 1.2, limits checked), with errors that name the file."""
    data = parse_yaml(read_config_text(path), str(path))
    if data is None:
        raise ConfigError(f"{path}: expected a YAML mapping at top level, got an empty file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at top level, "
                          f"got {type(data).__name__}")
    return data


def parse_yaml(text: str, where: str) -> Any:
    """One YAML 1.2 (core schema) document as plain data; ConfigError names `where` and line."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # e.g. surrogate-escaped bytes from argv
        raise ConfigError(f"{where}: not UTF-8 text at character {error.start}") from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: text larger than the {MAX_FILE_BYTES} byte limit")
    try:
        return _Builder(where).run(yaml.parse(text, Loader=_EventLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = " ".join(str(error.problem or error.context or "").split())
        raise ConfigError(f"{where}{at}: malformed YAML: {_clip(problem, 300)}") from None
    except yaml.reader.ReaderError as error:  # a control character such as NUL
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise ConfigError(f"{where}: malformed YAML: {error.reason}: #x{code:04x} at character "
                          f"{error.position}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: malformed YAML: {_clip(' '.join(str(error).split()), 300)}") \
            from None


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plain scalars only.
_NULL = re.compile(r"null|Null|NULL|~|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_CORE = "tag:yaml.org,2002:"


def _core_int(text: str) -> int | None:
    for pattern, skip, base in ((_INT10, 0, 10), (_INT8, 2, 8), (_INT16, 2, 16)):
        if pattern.fullmatch(text):
            if len(text) > 1000:  # int() raises ValueError past 4300 digits; no config needs 1000
                raise _LimitError(f"integer {_clip(text, 20)} has more than 1000 digits")
            return int(text[skip:], base)  # base 10: "012" is 12 (YAML 1.1 read octal 10)
    return None


def _core_float(text: str) -> float | None:
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return None


def _resolve_plain(text: str) -> Any:
    """A plain (unquoted, untagged) scalar: null, bool, int, float, else the string."""
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    number = _core_int(text)
    if number is not None:
        return number
    number = _core_float(text)
    return text if number is None else number


def _tagged(tag: str, text: str) -> Any:
    """A scalar with an explicit core tag (!!str, !!int, ...); None if it does not fit the tag."""
    if tag == f"{_CORE}str":
        return text
    if tag == f"{_CORE}int":
        return _core_int(text)
    if tag == f"{_CORE}float":
        return _core_float(text)  # "5" fits the float pattern too
    if tag == f"{_CORE}bool":
        return True if _TRUE.fullmatch(text) else False if _FALSE.fullmatch(text) else None
    raise _LimitError(f"unsupported tag {_tag_name(tag)} (core tags only: !!str, !!int, !!float, "
                      "!!bool, !!null, !!seq, !!map)")


def _tag_name(tag: str) -> str:
    return _clip(tag.replace(_CORE, "!!", 1))


class _LimitError(Exception):
    """Raised inside _Builder; turned into a ConfigError with the line and path."""


@dataclass
class _Open:
    """A mapping or list being built, with what its keys need: the pending key and key lines."""

    value: dict | list
    anchor: str | None
    nodes_before: int
    height: int = 1
    key: Any = None
    has_key: bool = False
    lines: dict[str, int] = field(default_factory=dict)


class _Builder:
    """Plain data from YAML parse events, without recursion, checking every limit on the way."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.stack: list[_Open] = []
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (value, nodes, height)
        self.nodes = 0
        self.documents = 0
        self.result: Any = None
        self.line = 0

    def run(self, events) -> Any:
        try:
            for event in events:
                if event.start_mark is not None:
                    self.line = event.start_mark.line + 1
                self._event(event)
        except RecursionError:  # not expected (nothing recurses); a last line of defence
            raise ConfigError(f"{self.where}: nested too deeply") from None
        except _LimitError as error:
            raise ConfigError(f"{self.where}:{self.line}: {error}") from None
        return self.result

    def _path(self) -> str:
        parts = []
        for frame in self.stack:
            if isinstance(frame.value, list):
                parts.append(str(len(frame.value)))
            elif frame.has_key:
                parts.append(_clip(str(frame.key), 40))
        return ".".join(parts) or "(top level)"

    def _count(self, nodes: int, height: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise _LimitError(f"more than {MAX_NODES} values (aliases count once per use), "
                              f"at {self._path()}")
        if len(self.stack) + height > MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels, at {_clip(self._path())}")

    def _event(self, event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise _LimitError("more than one YAML document (a config is one mapping)")
        elif isinstance(event, yaml.ScalarEvent):
            self._count(1, 0)
            value = self._scalar(event)
            self._remember(event.anchor, value, 1, 0)
            self._add(value)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise _LimitError(f"alias *{_clip(event.anchor)} has no complete anchor before it "
                                  "(undefined, or used inside its own anchor)")
            value, nodes, height = self.anchors[event.anchor]
            self._count(nodes, height)
            # A copy per use, so that changing one place (an override) does not change another.
            self._add(copy.deepcopy(value), height)
        elif isinstance(event, yaml.CollectionStartEvent):
            if event.tag not in (None, "!", f"{_CORE}seq", f"{_CORE}map"):
                raise _LimitError(f"unsupported tag {_tag_name(event.tag)} (core tags only)")
            self._count(1, 1)
            value = {} if isinstance(event, yaml.MappingStartEvent) else []
            self.stack.append(_Open(value, event.anchor, self.nodes))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            self._remember(frame.anchor, frame.value, self.nodes - frame.nodes_before + 1,
                           frame.height)
            self._add(frame.value, frame.height)

    def _scalar(self, event) -> Any:
        if event.tag in (None, "!"):
            plain = event.style in (None, "") and event.tag is None
            return _resolve_plain(event.value) if plain else event.value
        if event.tag == f"{_CORE}null":
            if not _NULL.fullmatch(event.value):
                raise _LimitError(f"{_clip(event.value)!r} is not a valid !!null")
            return None
        value = _tagged(event.tag, event.value)
        if value is None:
            raise _LimitError(f"{_clip(event.value)!r} is not a valid {_tag_name(event.tag)}")
        return value

    def _remember(self, anchor: str | None, value: Any, nodes: int, height: int) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, nodes, height)

    def _add(self, value: Any, height: int = 0) -> None:
        if not self.stack:
            self.result = value
            return
        frame = self.stack[-1]
        frame.height = max(frame.height, height + 1)
        if isinstance(frame.value, list):
            frame.value.append(value)
        elif not frame.has_key:
            if not isinstance(value, str):
                raise _LimitError(f"key {short_repr(value)} in {self._path()} is not a string "
                                  "(keys are field names; quote it)")
            if value in frame.lines:
                path = ".".join(part for part in (self._path(), _clip(value)) if part
                                and part != "(top level)")
                raise _LimitError(f"duplicate key {path} (lines {frame.lines[value]} and "
                                  f"{self.line})")
            frame.lines[value] = self.line
            frame.key, frame.has_key = value, True
        else:
            frame.value[frame.key] = value
            frame.has_key = False


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML 1.2) to a nested dict, returning a copy."""
    result = copy.deepcopy(values)
    for override in overrides:
        where = f"--set {_clip(override)!r}"
        key, sep, raw = override.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"{where}: expected key=value (key: names joined by dots)")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {_clip(part)} is not a mapping")
        node[parts[-1]] = parse_yaml(raw, where)
    return result
