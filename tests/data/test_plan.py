"""`fairl world build --plan`: every stage, sizes, device, disk, estimated time and hub inputs,
without doing any work; offline with hub inputs missing it exits 2 naming them."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("prompts", "RLHF (RLOO + LoRA)", "generation (base + aligned)",
          "log-probs (KL estimate)", "judges", "encode h(o)", "total")
HUB = ("EleutherAI/pythia-410m", "s-nlp/roberta_toxicity_classifier",
       "allenai/real-toxicity-prompts")


def _plan(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, bool]:
    """The plan in its own process (an empty hub cache, offline): result, seconds, torch loaded."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "FAIRL_CACHE": str(tmp_path / "cache")}
    code = ("import sys; from fairl.cli import main; code = main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "world", "build", "--plan", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    return done, time.perf_counter() - started, "torch imported: True" in done.stdout


def test_paper_plan_offline_lists_every_stage_and_names_the_three_downloads(tmp_path):
    done, seconds, torch_loaded = _plan(tmp_path, "--config", "configs/world_paper.yaml")
    assert done.returncode == 2, done.stderr
    assert not torch_loaded  # nothing heavy: the plan costs a second (measured: see the note)
    for stage in STAGES:
        assert f"\n  {stage}" in done.stdout
    assert "10,000 prompts" in done.stdout and "40,000 sequences x 24 tokens" in done.stdout
    assert "200 steps x 64 x 4 = 51,200 seq." in done.stdout
    assert "device: cuda (" in done.stdout and "disk: about" in done.stdout
    assert "estimates, no GPU was available" in done.stdout
    for name in HUB:
        assert f"MISSING  {'dataset' if 'prompts' in name else 'model'} {name}" in done.stdout
        assert f"hf download {'--repo-type dataset ' if 'prompts' in name else ''}{name}" \
            in done.stderr
    assert "nothing was built" in done.stderr and not (tmp_path / "cache" / "worlds").exists()
    print(f"paper plan offline: exit {done.returncode} in {seconds:.2f} s")


def test_default_plan_needs_no_hub_input(tmp_path):
    done, _, _ = _plan(tmp_path, "--set", "max_prompts=100")
    assert done.returncode == 0, done.stderr
    assert "100 prompts" in done.stdout and "none (every input ships" in done.stdout


def test_plan_defaults_are_the_trainers():
    from fairl.data.plan import RLHF_DEFAULTS, parameters
    from fairl.lm.rlhf import RLHFConfig

    defaults = dataclasses.asdict(RLHFConfig())
    assert {key: defaults[key] for key in RLHF_DEFAULTS} == RLHF_DEFAULTS
    assert parameters("EleutherAI/pythia-410m") == 410e6
    assert parameters("EleutherAI/pythia-1.4b") == 1.4e9
    assert parameters("s-nlp/roberta_toxicity_classifier") is None
