"""fairl.study.storage: a reap that stopped between a FAIL and its re-queue is finished later."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution

from fairl.study.storage import MAX_RETRY, reap_trials, tally


def _failed_by_a_reap(study, history=()):
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"x": "a"},
        distributions={"x": CategoricalDistribution(["a", "b"])},
        user_attrs={"fairl_killed": "worker h:1:2 died during the trial"},
        system_attrs={"retry_history": list(history)} if history else {})
    study.add_trial(trial)


def test_a_killed_trial_left_unqueued_is_requeued_once():
    study = optuna.create_study()
    _failed_by_a_reap(study)
    assert tally(study.get_trials()).failed == 1
    assert reap_trials(study) == ["trial 0: worker h:1:2 died during the trial; re-queued"]
    counts = tally(study.get_trials())
    assert (counts.failed, counts.requeued, counts.waiting) == (0, 1, 1)
    assert reap_trials(study) == []  # already queued: not again


def test_a_killed_trial_past_max_retry_counts_failed_without_a_message():
    study = optuna.create_study()
    _failed_by_a_reap(study, history=range(100, 100 + MAX_RETRY))
    assert reap_trials(study) == []
    assert tally(study.get_trials()).failed == 1
