import subprocess
import sys

import pytest

from fairl import __version__
from fairl.cli import main


def test_version_and_help_from_a_real_process():
    out = subprocess.run([sys.executable, "-m", "fairl", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"fairl {__version__}"
    helptext = subprocess.run([sys.executable, "-m", "fairl", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "fit" in helptext and "FA-IRL" in helptext


def test_fit_help_explains_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--set" in capsys.readouterr().out


def test_fit_prints_metrics_table(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("world: {name: planted, options: {n_train: 300, n_test: 100, d: 8}}\n"
                      "fit: {rounds: 10}\n")
    assert main(["fit", "--config", str(config), "--set", "fit.objective=max_entropy",
                 "--save", str(tmp_path / "heads.npz")]) == 0
    out = capsys.readouterr().out
    assert "objective=max_entropy" in out and "method=fa_irl" in out
    assert "starc" in out and out.count("test") >= 1
    assert (tmp_path / "heads.npz").exists()


@pytest.mark.parametrize("text,field", [
    ("fit: {M_fail: 0.1}\n", "fit.M_fail"),
    ("fit: {rounds: many}\n", "fit.rounds"),
    ("fit: {lamda0: 3}\n", "fit.lamda0"),
    ("world: {name: moon}\n", "world.name"),
    ("world: {name: planted, options: {label_noise: 0.9}}\n", "world.options.label_noise"),
    ("fit: [1, 2\n", "malformed YAML"),
    ("- just a list\n", "expected a YAML mapping"),
])
def test_bad_config_names_the_field_and_exits_2(tmp_path, capsys, text, field):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["fit", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert field in err and str(config) in err


def test_missing_config_file(capsys):
    assert main(["fit", "--config", "/nonexistent/x.yaml"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bad_override_syntax(capsys):
    assert main(["fit", "--set", "fit.rounds"]) == 2
    assert "key=value" in capsys.readouterr().err
