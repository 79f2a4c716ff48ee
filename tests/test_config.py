"""fairl.config: the one YAML loader and error formatter, on hostile and malformed input."""

import dataclasses
import errno
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairl import config as fconfig
from fairl.config import ConfigError, apply_overrides, build, load_yaml, parse_yaml
from fairl.data.planted import PlantedConfig
from fairl.irl.config import MAX_BATCH, MAX_ROUNDS, MAX_SEED, FitConfig

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "data" / "malformed"
MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES = fconfig.MAX_DEPTH, fconfig.MAX_FILE_BYTES, fconfig.MAX_NODES
CASES = load_yaml(CORPUS / "cases.yaml")["cases"]
MAX_MESSAGE = 2048


def check_experiment(path: Path, kind: str) -> None:
    """What `fairl fit --config` checks of the parts this module owns: world (planted) and fit."""
    data = load_yaml(path)
    problems = []
    checks = [lambda: build(FitConfig, data.get("fit"), f"{path}:fit")]
    world = data.get("world")
    if isinstance(world, dict) and world.get("name") == "planted":
        checks.append(lambda: build(PlantedConfig, world.get("options"), f"{path}:world.options"))
    for check in checks:
        try:
            check()
        except ConfigError as error:
            problems.append(str(error))
    if kind == "experiment":
        problems += [f"{path}: {key}: unknown key" for key in set(data) - {"world", "fit"}]
    if problems:
        raise ConfigError("\n".join(problems))


def test_corpus_is_big_and_every_file_is_listed():
    files = {path.name for path in CORPUS.iterdir()} - {"cases.yaml"}
    assert len(CASES) >= 40
    assert files == {case["file"] for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_malformed_config_gives_one_short_error_naming_the_field(case):
    path = CORPUS / case["file"]
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        check_experiment(path, case["kind"])
    elapsed = time.perf_counter() - start
    message = str(error.value)
    assert case["names"] in message, message
    assert str(path) in message, message
    assert len(message.encode()) < MAX_MESSAGE
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_valid_configs_of_the_repository_still_load():
    for path in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("studies/**/*.yaml")]:
        data = load_yaml(path)
        if isinstance(data.get("fit"), dict):
            build(FitConfig, data["fit"], f"{path}:fit")
        world = data.get("world") or {}
        if world.get("name") == "planted":
            build(PlantedConfig, world.get("options"), f"{path}:world.options")


# --- files that are not there, not readable, too big -------------------------------------------

def test_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("fit:\n" + "  # padding\n" * (2 * 1024 * 1024 // 12))
    assert path.stat().st_size > 2_000_000
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"big.yaml: file larger than the {MAX_FILE_BYTES} byte"):
        load_yaml(path)
    assert time.perf_counter() - start < 2.0


def test_endless_device_is_refused_after_the_limit():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(ConfigError, match="larger than"):
        load_yaml("/dev/zero")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path))}: cannot read: "
                                          rf"{os.strerror(errno.EISDIR)}"):
        load_yaml(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads any file; test_permission_denied_injected covers it")
def test_permission_denied_real(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("fit: {}\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="secret.yaml: cannot read: Permission denied"):
        load_yaml(path)


def test_permission_denied_injected(tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text("fit: {}\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError) as error:
        load_yaml(path)
    assert str(error.value) == f"{path}: cannot read: {os.strerror(errno.EACCES)}"


# --- YAML 1.2 core schema -----------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),  # 1.1 booleans
    ("true", True), ("False", False), ("TRUE", True),
    ("~", None), ("null", None), ("", None),
    ("012", 12), ("0o17", 15), ("0x1F", 31), ("-5", -5), ("1_000", "1_000"), ("1:30", "1:30"),
    ("1e-3", 0.001), ("1E3", 1000.0), (".5", 0.5), ("5.", 5.0), ("-.inf", -math.inf),
    ("2024-01-01", "2024-01-01"), ("<<", "<<"), ("'5'", "5"), ("!!float 5", 5.0),
    ("!!str 5", "5"), ("!!int '7'", 7), ("! 5", "5"),
])
def test_scalars_follow_yaml_1_2_core_schema(text, value):
    assert parse_yaml(f"v: {text}\n", "t")["v"] == value


def test_nan_and_copies_of_aliases():
    assert math.isnan(parse_yaml("v: .NaN", "t")["v"])
    data = parse_yaml("a: &a {x: [1, 2]}\nb: *a\n", "t")
    assert data == {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}} and data["a"] is not data["b"]


def test_limits_are_in_the_messages():
    with pytest.raises(ConfigError, match=rf"t:1: nested deeper than {MAX_DEPTH} levels"):
        parse_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "t")
    assert parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "t") is not None
    with pytest.raises(ConfigError, match=rf"more than {MAX_NODES} values"):
        parse_yaml("[" + "1, " * MAX_NODES + "]", "t")
    with pytest.raises(ConfigError, match=rf"{MAX_FILE_BYTES} byte limit"):
        parse_yaml("x" * (MAX_FILE_BYTES + 1), "t")


def test_deep_nesting_of_200_kb_is_one_line_not_a_recursion_error():
    text = "fit: " + "[" * 100_000 + "]" * 100_000
    with pytest.raises(ConfigError) as error:
        parse_yaml(text, "deep.yaml")
    # libyaml may stop first (at its own depth limit, 1000), else our limit does.
    assert "\n" not in str(error.value) and "nest" in str(error.value)
    block = "".join("  " * i + f"k{i}:\n" for i in range(200))  # 40 KB
    with pytest.raises(ConfigError, match=rf"deep.yaml:{MAX_DEPTH + 1}: nested deeper than"):
        parse_yaml(block, "deep.yaml")


def test_text_that_is_not_utf8_from_argv():
    with pytest.raises(ConfigError, match="not UTF-8 text at character 2"):
        parse_yaml("ab\udcff", "--set 'x'")


# --- --set overrides ---------------------------------------------------------------------------

def test_overrides_parse_yaml_1_2_and_copy():
    values = {"fit": {"rounds": 10}}
    result = apply_overrides(values, ["fit.lr=1e-3", "fit.dual_path=false", "world.name=planted"])
    assert result == {"fit": {"rounds": 10, "lr": 0.001, "dual_path": False},
                      "world": {"name": "planted"}}
    assert values == {"fit": {"rounds": 10}}


@pytest.mark.parametrize("override,phrase", [
    ("fit.objective=[a", "--set 'fit.objective=[a':2:1: malformed YAML"),
    ("fit.objective={a: 1, a: 2}", "duplicate key a"),
    ("fit.rounds=" + "[" * 60, "nested deeper than 50"),
    ("fit.rounds=!!python/name:os.system", "unsupported tag"),
    ("fit..rounds=5", "expected key=value"),
    ("fit.rounds", "expected key=value"),
    ("fit.rounds.x=5", "rounds is not a mapping"),
])
def test_malformed_override_names_the_set_item(override, phrase):
    with pytest.raises(ConfigError) as error:
        apply_overrides({"fit": {"rounds": 5}}, [override])
    assert phrase in str(error.value) and str(error.value).startswith("--set ")


# --- error messages ----------------------------------------------------------------------------

def test_every_message_is_capped():
    assert len(str(ConfigError("x" * 100_000)).encode()) < MAX_MESSAGE
    assert len(str(ConfigError("é" * 100_000)).encode()) < MAX_MESSAGE
    huge = list(range(100_000))
    with pytest.raises(ConfigError) as error:
        build(FitConfig, {"lr": huge, "rounds": "x" * 10**6}, "fit")
    assert "fit.lr:" in str(error.value) and "fit.rounds:" in str(error.value)
    assert len(str(error.value).encode()) < 1000


def test_non_string_key_given_to_build():
    with pytest.raises(ConfigError, match=r"fit: key 1 is not a string"):
        build(FitConfig, {1: 2}, "fit")


def test_strict_types_and_bounds():
    assert FitConfig(lr=1).lr == 1.0  # an int is a float
    for values in [{"rounds": "5"}, {"rounds": 5.0}, {"rounds": True}, {"dual_path": 1},
                   {"dual_path": "yes"}, {"lr": math.inf}, {"M": math.nan},
                   {"rounds": MAX_ROUNDS + 1}, {"batch_size": MAX_BATCH + 1},
                   {"seed": MAX_SEED + 1}]:
        with pytest.raises(ConfigError, match=rf"fit\.{next(iter(values))}:"):
            build(FitConfig, values, "fit")
    config = FitConfig(rounds=MAX_ROUNDS, batch_size=MAX_BATCH, seed=MAX_SEED)
    with pytest.raises(Exception, match="valid integer"):
        config.rounds = "6"  # validate_assignment is still on
    with pytest.raises(ConfigError, match=r"world\.d: \(n_train \+ n_test\) \* d"):
        build(PlantedConfig, {"n_train": 10**6, "n_test": 10**6, "d": 51}, "world")
    assert PlantedConfig(n_train=10**6, n_test=10**6, d=50).d == 50


def test_cpu_devices_validate_without_torch_and_the_rest_with_it(monkeypatch):
    for device in ["cpu", "cpu:0"]:
        assert FitConfig(device=device).device == device
    for device in ["gpu", "cuda:x", "CPU", "cuda:12345", " cpu", "meta"]:
        with pytest.raises(ConfigError, match="fit.device: not a torch device name"):
            build(FitConfig, {"device": device}, "fit")


def test_light_imports_in_a_fresh_process():
    code = (
        "import sys\n"
        "import fairl.config, fairl.irl.config\n"
        "from fairl.irl.config import FitConfig\n"
        "from fairl.config import build\n"
        "build(FitConfig, {'rounds': 3, 'device': 'cpu'}, 'fit')\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'fairl.irl.fit') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        # importing the submodule first must not hide the function `fit` of the package
        "import fairl.irl.fit\n"
        "from fairl.irl import fit, FitResult, __all__\n"
        "assert callable(fit) and fit.__module__ == 'fairl.irl.fit', fit\n"
        "import fairl.irl as irl\n"
        "assert all(getattr(irl, name) is not None for name in __all__)\n"
        "assert sorted(__all__) == sorted(irl._WHERE)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


# --- property-based: FitConfig from random mappings --------------------------------------------

FIELDS = {field.name for field in dataclasses.fields(FitConfig)}
LITERALS = {name: list(get_args(info.annotation)) for name, info in
            FitConfig.__pydantic_fields__.items() if get_origin(info.annotation) is Literal}
FLOATS = [name for name, info in FitConfig.__pydantic_fields__.items() if info.annotation is float]
BOOLS = [name for name, info in FitConfig.__pydantic_fields__.items() if info.annotation is bool]
INTS = ["rounds", "seed", "ensemble_size"]
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0)
junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def valid_fit(draw):
    """A mapping FitConfig must accept: each field from its range (cross-field rules kept)."""
    M, tau, gamma_start = draw(positive), draw(positive), draw(finite)
    values = {
        "M": M, "M_fail": M + draw(st.floats(0, 1e6)),
        "tau": tau, "tau_fail": tau * draw(st.floats(1e-3, 1.0)),
        "gamma_start": gamma_start, "gamma_end": gamma_start + draw(st.floats(0, 1e6)),
        "lambda0": draw(st.floats(0, 1e6)), "lambda_decay": draw(st.floats(0, 10)),
        "p0": draw(unit), "p_end": draw(unit), "l2_fail": draw(st.floats(0, 10)),
        "lr": draw(positive | st.integers(1, 10)),  # an int is fine for a float
        "rounds": draw(st.integers(1, MAX_ROUNDS)),
        "batch_size": draw(st.none() | st.integers(1, MAX_BATCH)),
        "seed": draw(st.integers(0, MAX_SEED)),
        "ensemble_size": draw(st.integers(2, 64)),
        "device": draw(st.sampled_from(["cpu", "cpu:0"])),
        **{name: draw(st.booleans()) for name in BOOLS},
        **{name: draw(st.sampled_from(choices)) for name, choices in LITERALS.items()},
    }
    keep = draw(st.sets(st.sampled_from(sorted(values))))
    # Drop keys only where the default cannot break a cross-field rule.
    paired = {"M", "M_fail", "tau", "tau_fail", "gamma_start", "gamma_end"}
    return {key: value for key, value in values.items() if key in keep or key in paired}


def _bad_value(field: str):
    """Values field `field` must refuse (strict types, ranges, finiteness)."""
    not_number = st.text(max_size=10) | st.lists(junk, max_size=3) | st.dictionaries(
        st.text(max_size=5), junk, max_size=3) | st.booleans()
    if field in FLOATS:
        bounds = FitConfig.__pydantic_fields__[field].metadata
        options = [not_number | st.none(), st.sampled_from([math.inf, -math.inf, math.nan])]
        if any(hasattr(bound, "gt") or hasattr(bound, "ge") for bound in bounds):  # all >= 0
            options.append(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
        for bound in bounds:
            if hasattr(bound, "le"):
                options.append(st.floats(min_value=bound.le + 1e-6, allow_infinity=False))
        return st.one_of(options)
    if field in INTS or field == "batch_size":
        limit = {"rounds": MAX_ROUNDS, "seed": MAX_SEED, "batch_size": MAX_BATCH,
                 "ensemble_size": 64}[field]
        low = {"seed": 0, "ensemble_size": 2}.get(field, 1)
        out_of_range = st.integers(max_value=low - 1) | st.integers(min_value=limit + 1)
        none = st.nothing() if field == "batch_size" else st.none()
        return not_number | st.floats() | out_of_range | none
    if field in BOOLS:
        return st.text(max_size=10) | st.integers() | st.floats() | st.none() | st.lists(junk)
    if field in LITERALS:
        return (st.text(max_size=20).filter(lambda s: s not in LITERALS[field]) | st.integers()
                | st.none() | st.lists(junk, max_size=3))
    assert field == "device"
    return st.text(max_size=12).filter(lambda s: not fconfig_device_like(s)) | st.integers()


def fconfig_device_like(text: str) -> bool:
    from fairl.irl import config as irl_config

    return irl_config._DEVICE.fullmatch(text) is not None


@st.composite
def invalid_fit(draw):
    """A valid mapping with one field broken, or an unknown key: (mapping, name it must name)."""
    values = draw(valid_fit())
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(FIELDS - {"M_fail", "tau_fail", "gamma_end"})))
        values[field] = draw(_bad_value(field))
        return values, field
    key = draw(st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True).filter(
        lambda k: k not in FIELDS))
    values[key] = draw(junk)
    return values, key


def test_property_strategies_cover_every_field():
    assert {*FLOATS, *BOOLS, *LITERALS, *INTS, "batch_size", "device"} == FIELDS


SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(valid_fit())
def test_property_valid_mappings_build(values):
    config = build(FitConfig, values, "fit")
    for key, value in values.items():
        assert getattr(config, key) == value


@SETTINGS
@given(invalid_fit())
def test_property_invalid_mappings_raise_config_error_naming_the_field(case):
    values, field = case
    with pytest.raises(ConfigError) as error:
        build(FitConfig, values, "fit")
    assert f"fit.{field}:" in str(error.value)
    assert len(str(error.value).encode()) < MAX_MESSAGE


YAMLISH = st.text(alphabet="{}[]:,-?&*!|>'\"#%@` \n\tab01.~e+", max_size=120)


@SETTINGS
@given(YAMLISH)
def test_property_any_text_parses_or_raises_config_error(text):
    try:
        parse_yaml(text, "t")
    except ConfigError as error:
        assert str(error).startswith("t") and len(str(error).encode()) < MAX_MESSAGE


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text("abcxyz _-", max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=6), inner, max_size=4),
    max_leaves=20)


@SETTINGS
@given(plain)
def test_property_dumped_data_reads_back_the_same(data):
    assert parse_yaml(yaml.safe_dump(data), "t") == data


def test_module_constants_are_what_the_messages_say():
    assert fconfig.MAX_MESSAGE_BYTES < MAX_MESSAGE


@pytest.mark.parametrize("case", [case for case in CASES if case["kind"] == "experiment"],
                         ids=[case["file"] for case in CASES if case["kind"] == "experiment"])
def test_malformed_config_through_fairl_fit_exits_2_and_creates_nothing(
        case, tmp_path, monkeypatch, capsys):
    from fairl.cli import main

    monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path / "mlruns"))
    path = CORPUS / case["file"]
    start = time.perf_counter()
    code = main(["fit", "--config", str(path)])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    # The whole experiment is validated here; where it words a problem differently from the
    # fit-only check above, the case gives `cli_names`.
    assert case.get("cli_names", case["names"]) in err and str(path) in err, err
    assert len(err.encode()) < MAX_MESSAGE + 100  # the message and the one-line prefix
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").iterdir())
