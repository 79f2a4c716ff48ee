"""FA-IRL and standard IRL on embedded preference pairs."""

from fairl.irl.config import FitConfig
from fairl.irl.failures import ground_truth_failures, margin_failures, sample_failures
from fairl.irl.fit import FitDiverged, FitResult, fa_irl_loss, fit
from fairl.irl.losses import max_entropy_loss, max_margin_loss
from fairl.irl.schedules import gamma_schedule, lambda_schedule, p_schedule

__all__ = [
    "FitConfig",
    "FitDiverged",
    "FitResult",
    "fa_irl_loss",
    "fit",
    "gamma_schedule",
    "ground_truth_failures",
    "lambda_schedule",
    "margin_failures",
    "max_entropy_loss",
    "max_margin_loss",
    "p_schedule",
    "sample_failures",
]
