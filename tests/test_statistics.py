"""The FOV as the replicate unit: unit lookup, the FOV-clustered mean test, FOV relabelings, corrections."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from statcell.analysis import statistics


def test_units_are_the_imaging_fov_else_the_fov_id_else_the_cell():
    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "imaging_fov": ["f1", None, "f2"], "fov_id": ["x", "y", "z"]})
    assert statistics.replicate_units(cells).tolist() == ["f1", "b", "f2"]
    assert statistics.replicate_units(cells.drop(columns="imaging_fov")).tolist() == ["x", "y", "z"]
    assert statistics.replicate_units(cells[["cell_id"]]).tolist() == ["a", "b", "c"]


def test_fov_mean_test_counts_fovs_not_cells():
    """Many cells in three FOVs of different offsets: as cells they look significant; as FOVs they are not."""
    rng = np.random.default_rng(0)
    values = np.concatenate([0.75 + rng.normal(0, 0.01, 200), 0.45 + rng.normal(0, 0.01, 200),
                             0.6 + rng.normal(0, 0.01, 200)])
    units = np.repeat(["f1", "f2", "f3"], 200)
    test = statistics.unit_mean_test(values, units, null_mean=0.5)
    assert test.units == 3 and test.mean == pytest.approx(0.6, abs=0.01) and test.p_value > 0.1
    two = statistics.unit_mean_test(values[:400], units[:400], null_mean=0.5)
    assert two.units == 2 and math.isnan(two.p_value)  # too few FOVs for a test
    constant = statistics.unit_mean_test(np.ones(4), ["a", "a", "b", "c"], null_mean=0.5)
    assert constant.p_value == 0.0 and constant.units == 3
    unmeasured = statistics.unit_mean_test(np.r_[np.nan, values], np.concatenate([["f4"], units]), null_mean=0.5)
    assert unmeasured == test  # a NaN is left out, its FOV with it when it holds nothing else


@pytest.mark.parametrize("sizes", [[8] * 6, [1, 2, 3, 8, 12, 20], [1, 1, 4, 4, 4, 4, 4]])
def test_fov_mean_test_is_calibrated_when_fovs_differ(sizes):
    """Under the null with large FOV effects the false-positive rate stays at the level, FOVs equal or not."""
    rng = np.random.default_rng(1)
    units = np.repeat(np.arange(len(sizes)), sizes)
    p = [statistics.unit_mean_test(0.5 + rng.normal(0, 0.1, len(sizes))[units] + rng.normal(0, 0.05, len(units)),
                                   units, null_mean=0.5).p_value for _ in range(1000)]
    assert np.mean(np.asarray(p) <= 0.05) == pytest.approx(0.05, abs=0.025)


def test_with_equal_fovs_the_clustered_test_is_the_t_test_of_fov_means():
    values = np.random.default_rng(2).random(20)
    test = statistics.unit_mean_test(values, np.repeat(np.arange(5), 4), null_mean=0.5)
    fov_means = values.reshape(5, 4).mean(axis=1)
    assert test.p_value == pytest.approx(stats.ttest_1samp(fov_means, 0.5, alternative="greater").pvalue, rel=1e-9)
    assert test.degrees_of_freedom == pytest.approx(4) and test.mean == pytest.approx(values.mean())


def test_the_degrees_of_freedom_are_bell_and_mccaffreys_from_the_full_matrices():
    """The closed form against tr(MBM)^2 / tr((MBM)^2) built cell by cell, for unequal FOVs."""
    units = np.repeat(np.arange(6), [1, 2, 3, 4, 3, 9])
    cells = len(units)
    centring = np.eye(cells) - 1 / cells
    weights = [(units == fov) / (cells * math.sqrt(1 - np.mean(units == fov))) for fov in range(6)]
    form = centring @ sum(np.outer(weight, weight) for weight in weights) @ centring
    test = statistics.unit_mean_test(np.random.default_rng(3).random(cells), units, null_mean=0.5)
    assert test.degrees_of_freedom == pytest.approx(np.trace(form) ** 2 / np.trace(form @ form), rel=1e-9)
    assert test.degrees_of_freedom < 5  # unequal FOVs: fewer than FOVs - 1


def test_a_fov_of_one_cell_weighs_as_one_cell():
    """Five FOVs of 2-4 coupled cells and one FOV whose single cell sits at rank 0 (the default colony's seed 2)."""
    values = np.r_[0.0, [0.73] * 2, [0.8] * 3, [0.85] * 4, [0.9] * 3, [0.95] * 4]
    units = np.repeat(np.arange(6), [1, 2, 3, 4, 3, 4])
    test = statistics.unit_mean_test(values, units, null_mean=0.5)
    assert test.mean == pytest.approx(values.mean()) and test.p_value < 0.01
    fov_means = pd.Series(values).groupby(units).mean()
    assert stats.ttest_1samp(fov_means, 0.5, alternative="greater").pvalue > 0.05  # FOV means weighed equally


def test_relabelings_enumerate_every_choice_or_draw_at_random():
    treated = np.array([True, True, True, False, False, False, False])
    every = statistics.unit_relabelings(treated, permutations=100, rng=np.random.default_rng(0))
    assert every.exact and every.labels.shape == (math.comb(7, 3), 7)
    assert (every.labels.sum(axis=1) == 3).all() and len({row.tobytes() for row in every.labels}) == 35
    drawn = statistics.unit_relabelings(treated, permutations=20, rng=np.random.default_rng(0))
    assert not drawn.exact and drawn.labels.shape == (20, 7) and (drawn.labels.sum(axis=1) == 3).all()


def test_permutation_p_values():
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert statistics.permutation_p_value(4.0, null, exact=True) == 0.25
    assert statistics.permutation_p_value(4.0, null, exact=False) == pytest.approx(2 / 5)
    assert statistics.permutation_p_value(0.0, null, exact=True) == 1.0


def test_holm_steps_down_from_the_smallest_p_value_keeps_the_order_and_caps_at_one():
    # sorted: 0.0001 * 4, 0.01 * 3, 0.2 * 2, 0.5 * 1 -> raised to the running maximum, capped at 1
    assert statistics.holm([0.01, 0.2, 0.0001, 0.5]).tolist() == pytest.approx([0.03, 0.4, 0.0004, 0.5])
    # the running maximum: 0.02 * 2 = 0.04 > 0.03 * 1, so the larger p-value inherits 0.04
    assert statistics.holm([0.03, 0.02]).tolist() == pytest.approx([0.04, 0.04])
    assert statistics.holm([0.6, 0.7]).tolist() == pytest.approx([1.0, 1.0])
    assert statistics.holm([]).shape == (0,)


def test_holm_counts_only_the_tests_made_and_keeps_the_shape():
    adjusted = statistics.holm(np.array([[0.01, np.nan], [0.02, 0.04]]))
    assert adjusted.shape == (2, 2) and np.isnan(adjusted[0, 1])
    assert adjusted[~np.isnan(adjusted)].tolist() == pytest.approx([0.03, 0.04, 0.04])


def test_holm_rejects_everything_bonferroni_rejects_and_can_reject_more():
    p_values = np.array([0.001, 0.004, 0.015, 0.3])
    bonferroni = np.minimum(1, p_values * len(p_values))
    holm = statistics.holm(p_values)
    assert (holm <= bonferroni).all()
    assert (bonferroni < 0.05).sum() == 2 and (holm < 0.05).sum() == 3
