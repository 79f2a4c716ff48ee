"""fairl.study.runner: an error that a library's cleanup raised over a stop signal is the stop."""

from __future__ import annotations

from fairl.study.trial import raised_by_a_stop


def _raise_during_a_stop():
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise FileNotFoundError("lock.rename") from None  # Optuna's lock cleanup, chained


def _raise_with_a_cause():
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise RuntimeError("wrapped") from ValueError("cause")


def test_an_error_raised_while_a_stop_is_handled_is_the_stop():
    for make in (_raise_during_a_stop, _raise_with_a_cause):
        try:
            make()
        except Exception as error:  # noqa: BLE001
            assert raised_by_a_stop(error), make.__name__


def test_an_ordinary_error_is_not_a_stop():
    try:
        try:
            raise ValueError("fit diverged")
        except ValueError as first:
            raise RuntimeError("trial failed") from first
    except RuntimeError as error:
        assert not raised_by_a_stop(error)
    assert not raised_by_a_stop(ValueError("no context"))
