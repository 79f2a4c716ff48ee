import math

import pytest

from fairl.irl import gamma_schedule, lambda_schedule, p_schedule


@pytest.mark.parametrize("shape,mid", [("linear", 0.5), ("cosine", 0.5), ("constant", 0.0)])
def test_gamma_first_mid_last(shape, mid):
    rounds = 101  # round 50 is exactly halfway
    assert gamma_schedule(0, rounds, 0.0, 1.0, shape) == pytest.approx(0.0)
    assert gamma_schedule(50, rounds, 0.0, 1.0, shape) == pytest.approx(mid)
    last = 0.0 if shape == "constant" else 1.0
    assert gamma_schedule(100, rounds, 0.0, 1.0, shape) == pytest.approx(last)


def test_cosine_gamma_is_slow_at_the_ends():
    assert gamma_schedule(10, 101, 0.0, 1.0, "cosine") < gamma_schedule(10, 101, 0.0, 1.0, "linear")


def test_lambda_decays_exponentially_or_stays_fixed():
    assert lambda_schedule(0, 10.0, 0.03) == pytest.approx(10.0)
    assert lambda_schedule(50, 10.0, 0.03) == pytest.approx(10.0 * math.exp(-1.5))
    assert lambda_schedule(99, 10.0, 0.03) == pytest.approx(10.0 * math.exp(-2.97))
    assert lambda_schedule(99, 5.0, 0.03, fixed=True) == 5.0
    # scaled to the budget: 400 rounds reach at t = 396 what 100 rounds reach at t = 99
    assert lambda_schedule(396, 10.0, 0.03, rounds=400) == pytest.approx(10.0 * math.exp(-2.97))
    assert lambda_schedule(50, 10.0, 0.03, rounds=100) == lambda_schedule(50, 10.0, 0.03)


def test_p_goes_from_twenty_percent_to_zero():
    assert p_schedule(0, 101, 0.2, 0.0) == pytest.approx(0.2)
    assert p_schedule(50, 101, 0.2, 0.0) == pytest.approx(0.1)
    assert p_schedule(100, 101, 0.2, 0.0) == pytest.approx(0.0)


def test_single_round_uses_the_start_values():
    assert gamma_schedule(0, 1, 0.3, 1.0) == 0.3
    assert p_schedule(0, 1, 0.2, 0.0) == 0.2
