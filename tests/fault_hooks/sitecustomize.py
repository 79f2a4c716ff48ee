"""Fault injection for the subprocesses of tests/study/test_faults.py, by environment variable.

On PYTHONPATH only in those tests; does nothing unless FAIRL_FAULT is set:
* `kill_before_run:N`: the process that takes trial N SIGKILLs itself before creating its
  MLflow run (once: the marker file FAIRL_FAULT_MARK says it happened);
* `slow_trial:S`: every trial sleeps S seconds before its fit (so a signal lands mid-trial).
"""

import os

_FAULT = os.environ.get("FAIRL_FAULT", "")

if _FAULT:
    import signal
    import time

    from fairl.runs import write as _write
    from fairl.study import runner as _runner

    _kind, _, _arg = _FAULT.partition(":")
    if _kind == "kill_before_run":
        _start_run = _write.start_run

        def _start_run_or_die(uri, experiment, name, tags, parent_run_id=None):
            mark = os.environ["FAIRL_FAULT_MARK"]
            if tags.get("trial_number") == _arg and not os.path.exists(mark):
                open(mark, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return _start_run(uri, experiment, name, tags, parent_run_id)

        _write.start_run = _start_run_or_die
    elif _kind == "slow_trial":
        _evaluate = _runner.evaluate

        def _slow_evaluate(*args, **kwargs):
            time.sleep(float(_arg))
            return _evaluate(*args, **kwargs)

        _runner.evaluate = _slow_evaluate
