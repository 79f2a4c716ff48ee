"""fairl.feasible: LP widths of the feasible reward set on 2-d toys solved by hand."""

import numpy as np
import pytest

from fairl.feasible import chebyshev_centre, max_margin, random_directions, width, widths

# One pair whose difference is e1: F = {θ1 >= M, |θ1|, |θ2| <= 1}.
ONE_PAIR = np.array([[1.0, 0.0]])


def test_width_of_a_box_slab_matches_the_hand_answer():
    assert width(ONE_PAIR, [1, 0], 0.5) == pytest.approx(0.5)  # θ1 in [0.5, 1]
    assert width(ONE_PAIR, [0, 1], 0.5) == pytest.approx(2.0)  # θ2 in [-1, 1]
    # along (1, 1)/√2: max (1 + 1)/√2, min (0.5 − 1)/√2
    assert width(ONE_PAIR, [1, 1], 0.5) == pytest.approx(2.5 / np.sqrt(2))


def test_failure_margin_shrinks_the_set_as_theorem_1_says():
    failure = np.array([True])
    assert width(ONE_PAIR, [1, 0], 0.5, failure, 0.8) == pytest.approx(0.2)  # θ1 in [0.8, 1]
    assert width(ONE_PAIR, [0, 1], 0.5, failure, 0.8) == pytest.approx(2.0)  # untouched
    assert np.isnan(width(ONE_PAIR, [1, 0], 0.5, failure, 1.5))  # empty: θ1 <= 1


def test_two_pairs_make_a_triangle():
    # Δ1 = θ1 − θ2 >= 0.5, Δ2 = θ1 + θ2 >= 0.5 in the box: a triangle with corners
    # (0.5, 0), (1, 0.5), (1, −0.5); width along e2 is 1, along e1 is 0.5.
    diffs = np.array([[1.0, -1.0], [1.0, 1.0]])
    assert width(diffs, [0, 1], 0.5) == pytest.approx(1.0)
    assert width(diffs, [1, 0], 0.5) == pytest.approx(0.5)
    # demand Δ2 >= 1 on pair 2: corners (0.75, 0.25), (1, 0), (1, 0.5) -> e2 width 0.5
    assert width(diffs, [0, 1], 0.5, np.array([False, True]), 1.0) == pytest.approx(0.5)
    assert max_margin(diffs) == pytest.approx(1.0)  # θ = (1, 0)
    centre = chebyshev_centre(diffs, 0.5)
    # the triangle's incircle: centre on θ2 = 0, touching θ1 = 1 and both slanted sides
    assert centre.theta[1] == pytest.approx(0.0, abs=1e-9)
    assert centre.radius == pytest.approx((1 - centre.theta[0]), abs=1e-9)
    assert centre.radius == pytest.approx((centre.theta[0] - 0.5) / np.sqrt(2), abs=1e-9)


def test_random_directions_are_unit_and_widths_never_grow_with_failures():
    rng = np.random.default_rng(0)
    directions = random_directions(3, 50, rng)
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    diffs = rng.standard_normal((30, 3)) + np.array([1.5, 0.0, 0.0])
    diffs = diffs[diffs[:, 0] > 0.3]  # separable along e1
    M = 0.25 * max_margin(diffs)
    standard = widths(diffs, directions, M)
    mask = np.zeros(len(diffs), bool)
    mask[:5] = True
    aware = widths(diffs, directions, M, mask, 0.6 * max_margin(diffs))
    assert np.all(np.isfinite(standard)) and np.all(aware <= standard + 1e-9)
    assert np.any(aware < standard - 1e-6)
