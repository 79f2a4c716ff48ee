"""The misspecification map: STARC(FA-IRL) − STARC(standard IRL) over m × T→NT fraction, per n.

On the SIR world r* = (1 − m)·probe + m·(the judge's logit): m = 0 is representable by a linear
head (max-entropy IRL is the maximum-likelihood fit), m = 1 is not. The map of
analysis.regime_map with rows = m, each row labelled with the linear oracle's test STARC at
that m (the launch run's reference_oracle_test_starc/misspecification:<m>): how much room a
linear reward has. Study: misspecification.
"""

from __future__ import annotations

from analysis.common import fmt, script_main
from analysis.regime_map import map_section
from fairl.report import Options, Section

NAME = "misspecification"
STUDY = "misspecification"
TITLE = "Misspecification map: where FA-IRL changes STARC as r* leaves the linear class"
ROW = "misspecification"
ORACLE = "reference_oracle_test_starc/misspecification:"


def oracles(source) -> dict[float, float]:
    """m -> the linear oracle's test STARC at m, from the launch run's reference metrics (the
    study's base m has the base world's oracle: fairl.study.references skips its r*)."""
    metrics = source.launch_metrics
    found = {float(key.removeprefix(ORACLE)): value
             for key, value in metrics.items() if key.startswith(ORACLE)}
    base = float(((source.spec or {}).get("world") or {}).get("options", {})
                 .get("misspecification", 0.0))
    if base not in found and "reference_oracle_test_starc" in metrics:
        found[base] = metrics["reference_oracle_test_starc"]
    return found


def _ticks(source) -> dict[float, str]:
    return {m: f"{m:g}\n(oracle {fmt(value)})" for m, value in oracles(source).items()}


def _notes(options: Options) -> str:
    found = oracles(options.study(STUDY))
    if not found:
        return "The launch run logged no oracle per m (reference metrics not computed)."
    return ("Linear oracle (ridge of r* on h, train → test) per misspecification m: "
            + ", ".join(f"m = {m:g}: STARC {fmt(value, 4)}" for m, value in sorted(found.items()))
            + ". Room for any linear reward, FA-IRL's included, starts above it.")


def build(options: Options) -> Section:
    return map_section(options, STUDY, NAME, TITLE, ROW,
                       "misspecification m of r*\n(linear oracle's STARC)", "m", _ticks,
                       notes=_notes(options))


if __name__ == "__main__":
    script_main(NAME)
