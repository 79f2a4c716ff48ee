"""Config plumbing shared by every stage: readable validation errors, YAML files, overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import ConfigDict

# Every config in fairl rejects unknown keys and re-validates on assignment.
STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config value is wrong; the message names the file (if any) and the field."""


def describe_validation_error(error: pydantic.ValidationError, where: str) -> str:
    """One line per problem: `where.field.sub: message (got value)`."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        field = ".".join(part for part in (where, location) if part) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        got = problem.get("input")
        got_text = ("" if problem["type"] in {"missing"} or isinstance(got, dict | list)
                    else f" (got {got!r})")
        lines.append(f"{field}: {message}{got_text}")
    return "\n".join(lines)


def build(cls, values: dict[str, Any] | None, where: str):
    """Construct config class `cls` from `values`, raising ConfigError that names the field."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(values).__name__}")
    try:
        return cls(**(values or {}))
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None


class _YAML12Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2), not as a string."""


_YAML12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (missing, malformed, not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_YAML12Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: malformed YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested dict, returning a copy."""
    result = yaml.safe_load(yaml.safe_dump(values))  # deep copy of plain data
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {override!r}: expected key=value")
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {override!r}: {part} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return result
