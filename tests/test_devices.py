"""fairl.devices and the `device` setting of every model stage; CPU identities unchanged."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from fairl.config import ConfigError, build
from fairl.devices import batch_size, dtype_name, model_dtype, resolve_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
REFUSED = "CUDA is not available on this machine (got 'cuda')"
REFUSED_RE = re.escape(REFUSED)


def test_resolve_device_names_and_defaults():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"^x\.device: expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu", "x.device")
    assert model_dtype("cpu") == torch.float32 and dtype_name(torch.bfloat16) == "bfloat16"
    assert batch_size("generate", "cpu", None) == 32 and batch_size("encode", "cuda:0", None) == 256
    assert batch_size("encode", "cuda:0", 7) == 7


@NO_CUDA
def test_cuda_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^x\.device: no CUDA|^x\.device: CUDA is not"):
        resolve_device("cuda:1", "x.device")
    from fairl.data.build_config import load_build_config

    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump({"device": "cuda"}))
    with pytest.raises(ConfigError) as caught:
        load_build_config(path)
    assert str(caught.value) == f"{path}.device: {REFUSED}"
    with pytest.raises(ConfigError, match=rf"^world build config\.device: {REFUSED_RE}"):
        load_build_config(None, {"device": "cuda"})
    from fairl.irl.config import FitConfig

    with pytest.raises(ConfigError, match="fit.device: CUDA is not available"):
        build(FitConfig, {"device": "cuda"}, "fit")
    assert build(FitConfig, {"device": "auto"}, "fit").device == "auto"
    from fairl.worlds import check_world_options

    with pytest.raises(ConfigError, match=rf"world\.options\.device: {REFUSED_RE}"):
        check_world_options("default", {"device": "cuda"}, "world.options")


@NO_CUDA
def test_model_stages_refuse_cuda(tmp_path):
    from fairl import lm
    from fairl.data.scorers import BiLSTMJudge, HubClassifierScorer
    from fairl.lm.encode import LMMeanPoolEncoder, MiniLMEncoder
    from fairl.lm.rlhf import RLHFConfig

    with pytest.raises(ConfigError, match=rf"rlhf\.device: {REFUSED_RE}"):
        RLHFConfig(device="cuda")
    with pytest.raises(ConfigError, match=f"lm device: {REFUSED_RE}"):
        lm.load_lm(device="cuda")
    with pytest.raises(ConfigError, match=f"encoder device: {REFUSED_RE}"):
        MiniLMEncoder(device="cuda")
    with pytest.raises(ConfigError, match=f"encoder device: {REFUSED_RE}"):
        LMMeanPoolEncoder(device="cuda")
    with pytest.raises(ConfigError, match=f"bilstm device: {REFUSED_RE}"):
        BiLSTMJudge(device="cuda")
    with pytest.raises(ConfigError, match=f"hub:{tmp_path} device: {REFUSED_RE}"):
        HubClassifierScorer(str(tmp_path), device="cuda")  # refused before any loading


@NO_CUDA
def test_rerlhf_study_device(tmp_path):
    from fairl.study.rerlhf_spec import load_study

    study = {"world": {"name": "default"}, "sources": {"none": {"kind": "base"}}, "seeds": [0],
             "rlhf": {"steps": 1}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**study, "device": "cuda"}))
    with pytest.raises(ConfigError, match=rf"s\.yaml: device: {REFUSED_RE}"):
        load_study(path)
    path.write_text(yaml.safe_dump({**study, "rlhf": {"steps": 1, "device": "cpu"}}))
    with pytest.raises(ConfigError, match="top-level `device`"):
        load_study(path)
    path.write_text(yaml.safe_dump(study))  # default auto: the CPU here
    loaded = load_study(path)
    assert loaded.device == "cpu" and loaded.rlhf_config(0).device == "cpu"


def test_cpu_identities_are_those_of_before_devices():
    """Computed by the code before `device` existed: shipped caches and run ids keep hitting."""
    from fairl.data.build_config import WorldBuildConfig, config_hash
    from fairl.lm.encode import get_encoder
    from fairl.lm.rlhf import RLHFConfig, run_identity

    assert config_hash(WorldBuildConfig()) == "3fed7109aa6a"
    assert config_hash(WorldBuildConfig(device="cpu")) == "3fed7109aa6a"
    assert config_hash(WorldBuildConfig(), "bfloat16") != "3fed7109aa6a"
    config = RLHFConfig(bf16_autocast=False)
    assert run_identity("smollm2-135m-instruct", config, "r*:x", ["a", "b"]) == "bd681f68ac2e7e59"
    assert get_encoder("minilm").id == "minilm-65b7d602fed4121a"
    assert get_encoder("smollm2-meanpool").id == "smollm2-meanpool-f75302bd8b1aa769"
    assert get_encoder("minilm", device="auto" if not torch.cuda.is_available() else "cpu"
                       ).id == "minilm-65b7d602fed4121a"


def test_fit_cli_device_flag(capsys):
    from fairl.cli import main

    code = main(["fit", "--device", "cpu", "--set", "fit.rounds=2"])
    assert code == 0 and "final loss" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main(["fit", "--device", "cuda"]) == 2
        assert "config.fit.device: CUDA is not available" in capsys.readouterr().err


def test_paper_config_offline_fails_at_once_naming_the_downloads(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from fairl.config import load_yaml
    from fairl.data.build_config import WorldBuildConfig, hub_cached, hub_inputs

    root = Path(__file__).resolve().parents[1]
    config = build(WorldBuildConfig, load_yaml(root / "configs" / "world_paper.yaml"), "paper")
    needed = hub_inputs(config)
    assert ("model", "EleutherAI/pythia-410m") in needed
    assert ("dataset", "allenai/real-toxicity-prompts") in needed
    assert ("model", "s-nlp/roberta_toxicity_classifier") in needed
    if all(hub_cached(kind, name) for kind, name in needed):
        pytest.skip("the paper's hub inputs are cached here: the build would start")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FAIRL_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(root)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fairl", "world", "build", "--config",
                           str(root / "configs" / "world_paper.yaml"), "--out",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    seconds = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    for kind, name in needed:
        if not hub_cached(kind, name):
            assert f"{kind} {name}" in done.stderr and "hf download" in done.stderr
    assert seconds < 20, seconds  # ~2 s: no torch import, no model, no stage started
    assert not (tmp_path / "cache" / "worlds").exists() and not (tmp_path / "out").exists()
