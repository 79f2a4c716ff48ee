"""Fault injection for the subprocesses of tests/study/test_faults.py, by environment variable.

On PYTHONPATH only in those tests; does nothing unless FAIRL_FAULT is set:
* `kill_before_run:N`: the process that takes trial N SIGKILLs itself before creating its
  MLflow run (once: the marker file FAIRL_FAULT_MARK says it happened);
* `hold_trial:N`: trial N waits (up to 120 s) before its fit, for the test's signal, having
  made the file FAIRL_FAULT_MARK: the signal lands mid-trial however slow the machine (its
  re-queued copy has another number);
* `term_after_run:N`: the process that takes trial N sends itself SIGTERM as soon as MLflow's
  start_run returns, before fairl has the run's id (the narrowest window of a trial);
* `term_in_tell:N`: the process sends itself SIGTERM inside Optuna's tell of trial N (its grid
  sampler's after_trial), after the trial's own code ended;
* `term_in_journal_unlock:N`: the process that takes trial N sends itself SIGTERM inside the
  journal lock's release, just after it unlinked the lock file, in the first journal write
  after MLflow's start_run (the trial's mlflow_run_id): where CI's signal once landed.
* `pause_at:POINT:N[,POINT:N...]`: trial N stops before its first call of POINT (start_run,
  log_run, log_text, log_world_inputs, end_run of fairl.runs.write; log_reward_model; tell:
  Optuna's tell, in its grid sampler's after_trial), makes the file `FAIRL_FAULT_MARK.POINT.N`
  and waits (up to 120 s) for `FAIRL_FAULT_MARK.POINT.N.go`: the test takes a store away in
  between, so the call meets the outage.
"""

import os

_FAULT = os.environ.get("FAIRL_FAULT", "")

if _FAULT:
    import signal
    import time

    from fairl.runs import write as _write
    from fairl.study import trial as _trial

    _kind, _, _arg = _FAULT.partition(":")
    _start_run = _write.start_run
    _current = {"trial": None}

    def _start_run_and_note(uri, experiment, name, tags, parent_run_id=None):
        _current["trial"] = tags.get("trial_number")
        if _kind == "kill_before_run" and _current["trial"] == _arg:
            mark = os.environ["FAIRL_FAULT_MARK"]
            if not os.path.exists(mark):
                open(mark, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        run_id = _start_run(uri, experiment, name, tags, parent_run_id)
        if _kind == "term_after_run" and _current["trial"] == _arg:
            os.kill(os.getpid(), signal.SIGTERM)
        return run_id

    _write.start_run = _start_run_and_note
    _evaluate = _trial.evaluate

    def _slow_evaluate(*args, **kwargs):
        if _kind == "hold_trial" and _current["trial"] == _arg:
            open(os.environ["FAIRL_FAULT_MARK"], "w").close()
            end = time.time() + 120
            while time.time() < end:
                time.sleep(0.1)
        return _evaluate(*args, **kwargs)

    _trial.evaluate = _slow_evaluate
    if _kind == "term_in_tell":
        from optuna.samplers import GridSampler

        _after_trial = GridSampler.after_trial

        def _after_trial_and_term(self, study, trial, state, values):
            if str(trial.number) == _arg:
                os.kill(os.getpid(), signal.SIGTERM)
            return _after_trial(self, study, trial, state, values)

        GridSampler.after_trial = _after_trial_and_term
    if _kind == "term_in_journal_unlock":
        _unlink = os.unlink
        _fired = []

        def _unlink_and_term(path, *args, **kwargs):
            _unlink(path, *args, **kwargs)
            if str(path).endswith(".rename") and _current["trial"] == _arg and not _fired:
                _fired.append(path)
                os.kill(os.getpid(), signal.SIGTERM)  # taken before this function returns

        os.unlink = _unlink_and_term

    if _kind == "pause_at":
        _points = {tuple(item.split(":")) for item in _arg.split(",")}
        _paused = set()

        def _pause(point: str, number) -> None:
            if (point, str(number)) in _points and (point, str(number)) not in _paused:
                _paused.add((point, str(number)))
                mark = f"{os.environ['FAIRL_FAULT_MARK']}.{point}.{number}"
                open(mark, "w").close()
                end = time.time() + 120
                while not os.path.exists(f"{mark}.go") and time.time() < end:
                    time.sleep(0.05)

        def _paused_before(point: str, function):
            def call(*args, **kwargs):
                _pause(point, _current["trial"])
                return function(*args, **kwargs)
            return call

        for _point in ("log_run", "log_text", "log_world_inputs", "end_run"):
            setattr(_write, _point, _paused_before(_point, getattr(_write, _point)))
        _noted_start_run = _write.start_run

        def _start_run_paused(uri, experiment, name, tags, parent_run_id=None):
            _pause("start_run", tags.get("trial_number"))
            return _noted_start_run(uri, experiment, name, tags, parent_run_id)

        _write.start_run = _start_run_paused
        import fairl.models as _models  # the trial imports it from there when it logs

        _models.log_reward_model = _paused_before("log_reward_model", _models.log_reward_model)
        from optuna.samplers import GridSampler

        _grid_after_trial = GridSampler.after_trial

        def _after_trial_paused(self, study, trial, state, values):
            _pause("tell", trial.number)
            return _grid_after_trial(self, study, trial, state, values)

        GridSampler.after_trial = _after_trial_paused

# World builds (tests/cli/test_paper.py), by FAIRL_BUILD_FAULT: `term_in_rlhf:N` sends SIGTERM
# at the start of RLHF step N (0-based), `term_in_generation:N` at the start of the N-th
# generation chunk (0-based, counted over the build); FAIRL_BUILD_FAULT_LOG, if set, gets a line
# per RLHF step ("rlhf N") and per generated chunk ("generate OFFSET") the process ran.
_BUILD_FAULT = os.environ.get("FAIRL_BUILD_FAULT", "")

if _BUILD_FAULT or os.environ.get("FAIRL_BUILD_FAULT_LOG"):
    import signal

    from fairl.lm import rlhf as _rlhf
    from fairl.lm import sample as _sample

    _build_kind, _, _build_arg = _BUILD_FAULT.partition(":")
    _rloo_step, _generate = _rlhf.rloo_step, _sample.generate
    _chunks = []

    def _note(line):
        if os.environ.get("FAIRL_BUILD_FAULT_LOG"):
            with open(os.environ["FAIRL_BUILD_FAULT_LOG"], "a") as log:
                log.write(line + "\n")

    def _rloo_step_or_term(model, tokenizer, prompts, encoded, reward_fn, optimizer, config,
                           step, *args, **kwargs):
        if _build_kind == "term_in_rlhf" and str(step) == _build_arg:
            os.kill(os.getpid(), signal.SIGTERM)
        _note(f"rlhf {step}")
        return _rloo_step(model, tokenizer, prompts, encoded, reward_fn, optimizer, config,
                          step, *args, **kwargs)

    def _generate_or_term(*args, index_offset=0, **kwargs):
        if _build_kind == "term_in_generation" and str(len(_chunks)) == _build_arg:
            os.kill(os.getpid(), signal.SIGTERM)
        _chunks.append(index_offset)
        _note(f"generate {index_offset}")
        return _generate(*args, index_offset=index_offset, **kwargs)

    _rlhf.rloo_step = _rloo_step_or_term
    _sample.generate = _generate_or_term
