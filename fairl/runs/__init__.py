"""The only code that talks to MLflow: where runs go, writing them, reading them back, reaping.

* `store`: tracking URIs, the client (one per process), experiments;
* `provenance`: git commit, versions, worker identity and liveness;
* `write`: runs, params/metrics/curves in one batch, artifacts and their file formats;
* `read`: finished runs of a study (paged), artifacts as local files, heads from rewards.npz;
* `reap`: RUNNING runs of dead workers or launchers set KILLED;
* `ui`: the MLflow UI server;
* `watch`: every client call waits out an outage of a tracking server (fairl.outage).

mlflow is imported inside functions: it costs ~2 s, and validation paths never need it.
"""
