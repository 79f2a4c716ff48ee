"""Studies: Optuna searches over FitConfig (studies/*.yaml) and re-RLHF grids, tracked in MLflow.

* `spec`: the IRL study file, validated whole before any work; a trial's `TrialConfig`;
* `rerlhf_spec`: the re-RLHF study file (reward source x seed), its cells' identities;
* `files`, `kinds`: which kind a study file is; what the runner asks each kind;
* `storage`: the Optuna storage (journal or RDB), the study lock, re-queueing, tallies;
* `runner`: launch and workers, for both kinds; `trial`, `batch`: one IRL trial, K in a pass;
  `rerlhf`: one re-RLHF cell; `verdicts`, `rerlhf_verdicts`: the launch run's verdicts;
* `status`, `repair`: `fairl study list|status|repair`.

Nothing is imported here: `fairl.study.spec` validates a file without loading optuna or torch.
"""
