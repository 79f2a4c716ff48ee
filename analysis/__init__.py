"""Figures and tables of the fairl studies, rebuilt from MLflow runs (never refitted).

One module per item (a table and/or figure), each with `build(options) -> Section`, called by
`fairl report` (fairl/cli hands `ITEMS` to fairl/report.py) and runnable on its own:
`python analysis/<item>.py [--tracking-uri URI] [--out reports]`.
"""

# Items in report order: module analysis.<item> defines NAME, STUDY, TITLE and build().
ITEMS = ("claims", "main_table", "training_curves", "reward_distributions", "failures", "tnt_fraction",
         "ablation_no_rf", "ablation_fixed_lambda", "ablation_failure_source", "sweep_heatmap",
         "importances", "rerlhf", "identifiability", "regime_map", "misspecification", "budget",
         "feasible_width")
