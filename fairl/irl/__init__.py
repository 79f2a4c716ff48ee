"""FA-IRL and standard IRL on embedded preference pairs.

Names are imported on first use (PEP 562), so that `fairl.irl.config` (validation) can be
imported without torch: `from fairl.irl import fit` still works and loads torch then.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_WHERE = {
    "FitConfig": "config",
    "ground_truth_failures": "failures",
    "margin_failures": "failures",
    "sample_failures": "failures",
    "FitDiverged": "fit",
    "FitResult": "fit",
    "fa_irl_loss": "fit",
    "fit": "fit",
    "fit_many": "batch",
    "max_entropy_loss": "losses",
    "max_margin_loss": "losses",
    "gamma_schedule": "schedules",
    "lambda_schedule": "schedules",
    "p_schedule": "schedules",
}

__all__ = [
    "FitConfig",
    "FitDiverged",
    "FitResult",
    "fa_irl_loss",
    "fit",
    "fit_many",
    "gamma_schedule",
    "ground_truth_failures",
    "lambda_schedule",
    "margin_failures",
    "max_entropy_loss",
    "max_margin_loss",
    "p_schedule",
    "sample_failures",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below loads them
    from fairl.irl.batch import fit_many
    from fairl.irl.config import FitConfig
    from fairl.irl.failures import ground_truth_failures, margin_failures, sample_failures
    from fairl.irl.fit import FitDiverged, FitResult, fa_irl_loss, fit
    from fairl.irl.losses import max_entropy_loss, max_margin_loss
    from fairl.irl.schedules import gamma_schedule, lambda_schedule, p_schedule


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """This package, except that loading the submodule `fit` does not hide the function `fit`."""

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets `fairl.irl.fit` to the submodule when it loads; the eager
        # imports this file had then replaced it with the function, which is what callers use.
        if name == "fit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
