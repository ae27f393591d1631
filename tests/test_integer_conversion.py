"""Calibrated ranges rounded outward onto the grid that makes an integer file and its block twin agree."""

import math

import numpy as np
import pytest

from bwe.integer_conversion import RANGE_STEPS_PER_OCTAVE, round_range_outward


@pytest.mark.parametrize("value, upper, expected", [
    (0.3, True, 2 ** -1.5),      # log2 0.3 = -1.737: up to the next quarter octave, -1.5
    (-0.3, False, -(2 ** -1.5)),  # a negative min moves down just as far
    (0.3, False, 2 ** -1.75),    # a positive min moves toward zero
    (-0.3, True, -(2 ** -1.75)),  # a negative max moves toward zero
    (2.0, True, 2.0),            # on the grid already: unchanged
    (0.0, True, 0.0),
])
def test_a_bound_moves_outward_onto_the_quarter_octave_grid(value, upper, expected):
    assert RANGE_STEPS_PER_OCTAVE == 4
    assert round_range_outward(value, upper) == pytest.approx(expected, rel=1e-12)


def test_ranges_only_grow_by_less_than_a_grid_step_and_near_equal_ones_meet():
    rng = np.random.default_rng(0)
    step = 2 ** (1 / RANGE_STEPS_PER_OCTAVE)
    for low, high in zip(-rng.lognormal(0, 3, 500), rng.lognormal(0, 3, 500)):
        lo, hi = round_range_outward(low, False), round_range_outward(high, True)
        assert lo <= low and hi >= high
        assert hi / high < step and lo / low < step
        assert math.log2(hi) * RANGE_STEPS_PER_OCTAVE == pytest.approx(round(math.log2(hi) * RANGE_STEPS_PER_OCTAVE))
    # Two calibrations 0.3 % apart (float rounding in two graphs) share a grid point unless one straddles it.
    hits = [round_range_outward(v, True) == round_range_outward(v * 1.003, True) for v in rng.lognormal(0, 3, 1000)]
    assert np.mean(hits) > 0.97
