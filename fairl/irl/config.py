"""FitConfig: every knob of FA-IRL and standard IRL, validated, each with a one-line doc."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, Bool, Float, Int, Str
from fairl.devices import availability_problem

MAX_ROUNDS = 100_000  # ~1 s per 1000 rounds on 4000 pairs: past this a typo, not a plan
MAX_BATCH = 10_000_000  # >= the pairs means full batch; larger only hides a typo
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's limit
# torch device types a fit can use, with an optional index; anything else is refused without
# importing torch (a 6 s import to reject a typo).
_DEVICE = re.compile(r"auto|(cpu|cuda|mps|xpu)(:[0-9]{1,4})?")


@dataclass(config=STRICT)
class FitConfig:
    """One IRL fit. Standard IRL: failure_mode="none", dual_path=False."""

    # Float, Int, Bool, Str: strict per field (see fairl.config.STRICT for why not per class).
    objective: Literal["max_margin", "max_entropy"] = Field(
        "max_margin", description="base objective: hinge on margins, or Bradley-Terry log-loss")
    M: Float = Field(1.0, gt=0, description="margin every pair must reach (max-margin)")
    tau: Float = Field(1.0, gt=0, description="temperature of the base log-loss (max-entropy)")
    M_fail: Float = Field(2.0, gt=0, description="stricter margin for failure pairs; >= M")
    tau_fail: Float = Field(0.5, gt=0, description="sharper temperature for failure pairs; <= tau")
    failure_mode: Literal["margin", "ground_truth", "ensemble", "none"] = Field(
        "margin", description="how failures F_t are found: Δ < γ_t, disagreement with r*, sign "
        "disagreement of a bootstrap ensemble of base heads, or off")
    ensemble_size: Int = Field(
        5, ge=2, le=64, description="failure_mode ensemble: base heads, each fitted (same "
        "objective, rounds, lr) on a bootstrap resample of the pairs")
    dual_path: Bool = Field(True, description="R = R_D + R_F with a failure head; False: R = R_D")
    fail_grad_to_base: Bool = Field(
        False, description="failure loss also moves θ_D; default: only the failure head θ_F")
    gamma_start: Float = Field(0.0, description="failure threshold γ_0 on the margin Δ (round 0)")
    gamma_end: Float = Field(1.0, description="failure threshold at the last round; >= gamma_start")
    gamma_shape: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="how γ_t moves from gamma_start to gamma_end")
    lambda0: Float = Field(10.0, ge=0, description="failure-loss weight λ_0")
    lambda_decay: Float = Field(0.03, ge=0, description="λ_t = λ_0 exp(-lambda_decay t)")
    lambda_fixed: Bool = Field(False, description="keep λ_t = λ_0 every round (ablation)")
    lambda_decay_scaled: Bool = Field(
        False, description="decay per 1/rounds of the run: λ_t = λ_0 exp(-lambda_decay·100 t/"
        "rounds), the curve of 100 rounds stretched over any budget (as γ_t and p_t are)")
    p0: Float = Field(0.2, ge=0, le=1, description="failure sampling rate p_t at round 0")
    p_end: Float = Field(0.0, ge=0, le=1, description="failure sampling rate at the last round")
    failure_budget: Literal["of_failures", "of_batch"] = Field(
        "of_failures", description="|S_t| = ceil(p_t |F_t|), or min(|F_t|, ceil(p_t batch))")
    failure_sampling: Literal["random", "hardest"] = Field(
        "random", description="which failures fill S_t: uniform draw, or lowest margins")
    l2_fail: Float = Field(
        1e-3, ge=0, description="α of the L2 penalty α‖θ_F‖² on the failure head")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="torch optimiser")
    lr: Float = Field(0.05, gt=0, description="learning rate")
    rounds: Int = Field(
        100, ge=1, le=MAX_ROUNDS,
        description=f"training rounds (full passes over the pairs), <= {MAX_ROUNDS}")
    batch_size: Int | None = Field(
        None, ge=1, le=MAX_BATCH, description="pairs per step; None (or >= the pairs) = full batch")
    seed: Int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the head init and failure sampling, < 2**64")
    device: Str = Field(
        "cpu", description="torch device: auto (CUDA if available, else cpu), cpu, cuda, cuda:N, "
        "mps or xpu; the heads are tiny, so cpu stays the default")

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        match = _DEVICE.fullmatch(value)
        if match is None:
            raise ValueError("not a torch device name (try cpu or cuda:0)")
        kind = match.group(1)
        if value == "auto" or kind == "cpu":  # auto is resolved when the fit starts
            return value
        if kind == "cuda":  # the one CUDA check of every model stage (imports torch)
            problem = availability_problem(value)
            if problem is not None:
                raise ValueError(problem)
            return value
        # Imported here, not at the top: validating a config must not cost torch's import
        # unless an accelerator is asked for, and then we must ask torch whether it exists.
        import torch

        backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
        if backend is None or not backend.is_available():
            raise ValueError(f"{kind.upper()} is not available on this machine")
        return value

    # Field validators (not a model validator) so each error is reported under its field;
    # fields validate in declaration order, so M, tau and gamma_start are already in info.data.
    @field_validator("M_fail")
    @classmethod
    def _M_fail_stricter(cls, value: float, info: ValidationInfo) -> float:
        if "M" in info.data and value < info.data["M"]:
            raise ValueError(f"must be >= M ({info.data['M']}): failures get a stricter margin")
        return value

    @field_validator("tau_fail")
    @classmethod
    def _tau_fail_sharper(cls, value: float, info: ValidationInfo) -> float:
        if "tau" in info.data and value > info.data["tau"]:
            raise ValueError(f"must be <= tau ({info.data['tau']}): failures get a sharper loss")
        return value

    @field_validator("gamma_end")
    @classmethod
    def _gamma_tightens(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("gamma_start")
        if start is not None and value < start:
            raise ValueError(f"must be >= gamma_start ({start}): the criterion tightens over rounds")
        return value

    @property
    def method(self) -> str:
        """Short name: standard_irl, fa_irl, or the ablation this config is."""
        if self.failure_mode == "none":
            return "standard_irl" if not self.dual_path else "dual_path_no_failures"
        return "fa_irl" if self.dual_path else "failure_reweight_no_rf"
