"""Figures and tables of the fairl studies, rebuilt from MLflow runs (never refitted).

One module per item (a table and/or figure), each with `build(options) -> Section` called by
`fairl report` (fairl/report.py, which reads MLflow) and runnable on its own:
`python analysis/<item>.py [--tracking-uri URI] [--out reports]`.
"""
