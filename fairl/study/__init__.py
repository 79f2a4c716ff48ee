"""Studies: Optuna searches over FitConfig (studies/*.yaml) and re-RLHF grids, tracked in MLflow.

* `spec`: the study file, validated whole before any work; a trial's `TrialConfig`;
* `storage`: the Optuna storage (journal or RDB), the study lock, re-queueing, tallies;
* `runner`: launch, workers, and one trial from study file to MLflow run;
* `status`: `fairl study list|status`;
* `rerlhf_spec`, `rerlhf`: the re-RLHF grid (reward source x seed), the same tracking.

Nothing is imported here: `fairl.study.spec` validates a file without loading optuna or torch.
"""
