"""Replicates and the tests built on them: the field of view is the unit, never the single cell.

Cells imaged in one field of view (FOV) share its well, its treatment, its brightness and its density, so they are
not independent replicates: a test that counts cells where the treatment (or any FOV effect) acts on whole FOVs
credits FOV differences to the effect (pseudo-replication) and gives p-values that are too small. Every test of the
analyses therefore works at the FOV level:

- a one-sample question ("is the mean coupling rank above its null value?") is a one-sided t-test of the **FOV means**
  (:func:`unit_mean_test`);
- a two-group question ("do treated cells differ from control cells?") is a **permutation of whole FOVs** between the
  groups (:func:`unit_relabelings`): every relabeling when there are at most ``permutations`` of them (an exact test),
  else ``permutations`` random ones.

The unit of a cell is :data:`UNIT_COLUMN` of ``cells.parquet`` (:func:`replicate_units`): the FOV it was cropped from;
for pre-cropped datasets the dataset's own FOV id (``FOVId``) where it has one. A dataset that names no FOV makes each
cell its own unit, the only choice left, and the analyses log that their p-values then assume independent cells.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd

from statcell.vocabulary import IMAGING_FOV

log = logging.getLogger(__name__)

#: Column of ``cells.parquet`` naming the FOV a cell was imaged in, the replicate unit of every test.
UNIT_COLUMN = IMAGING_FOV
#: Fewest FOVs a one-sample test is made on: with two, a t-test has one degree of freedom and, where both FOV means
#: sit at the same value (every cell's rank at its maximum), no spread to measure.
MIN_UNITS = 3


def replicate_units(cells: pd.DataFrame) -> pd.Series:
    """The replicate unit (imaging FOV) of each cell.

    Parameters
    ----------
    cells : DataFrame
        Rows of ``cells.parquet``: :data:`UNIT_COLUMN` is read where present and non-empty, else ``fov_id`` for
        tables written before it existed, else the cell's own id (``cell_id``, or the row label).

    Returns
    -------
    Series of str
        Same index as ``cells``.

    Examples
    --------
    >>> replicate_units(pd.DataFrame({"cell_id": ["a", "b"], "imaging_fov": ["f1", ""]})).tolist()
    ['f1', 'b']
    """
    units = pd.Series("", index=cells.index, dtype=object)
    for column in (UNIT_COLUMN, "fov_id"):
        if column in cells:
            units = cells[column].fillna("").astype(str)
            break
    empty = units == ""
    if empty.any():
        own = cells["cell_id"].astype(str) if "cell_id" in cells else pd.Series(cells.index.astype(str),
                                                                                  index=cells.index)
        units = units.where(~empty, own)
    return units


class UnitTest(NamedTuple):
    """A one-sample test of FOV means."""

    mean: float
    """Mean of the FOV means."""
    units: int
    """FOVs (replicates) tested."""
    p_value: float
    """One-sided p-value of "mean above the null value"; NaN with fewer than :data:`MIN_UNITS` FOVs."""


def unit_mean_test(values: np.ndarray, units: Sequence[str] | np.ndarray, *, null_mean: float) -> UnitTest:
    """One-sided one-sample t-test of the per-FOV means of ``values`` against ``null_mean``.

    Parameters
    ----------
    values : ndarray
        One value per cell.
    units : sequence of str
        Each cell's FOV (:func:`replicate_units`).
    null_mean : float
        Expected value of a FOV mean under the null hypothesis.

    Returns
    -------
    UnitTest
        With fewer than :data:`MIN_UNITS` FOVs the p-value is NaN (too few replicates, no test). FOV means that are
        all equal (no spread, e.g. every cell's rank at its maximum in every FOV) are the t-test's limit: 0 above
        the null value, else 1.

    Examples
    --------
    >>> test = unit_mean_test(np.array([0.9, 0.8, 0.95, 0.85]), ["a", "a", "b", "c"], null_mean=0.5)
    >>> test.units, bool(test.p_value < 0.05)
    (3, True)
    """
    from scipy import stats

    means = pd.Series(np.asarray(values, np.float64)).groupby(np.asarray(units)).mean().to_numpy()
    if len(means) < MIN_UNITS:
        return UnitTest(float(means.mean()) if len(means) else float("nan"), len(means), float("nan"))
    if np.ptp(means) == 0:
        return UnitTest(float(means[0]), len(means), 0.0 if means[0] > null_mean else 1.0)
    p_value = float(stats.ttest_1samp(means, null_mean, alternative="greater").pvalue)
    return UnitTest(float(means.mean()), len(means), p_value)


class Relabelings(NamedTuple):
    """Relabelings of FOVs between two groups for a permutation test."""

    labels: np.ndarray
    """``(R, units)`` bool: which FOVs each relabeling puts in the second (treated) group."""
    exact: bool
    """True when ``labels`` holds every relabeling (the observed one among them), False for random draws."""


def unit_relabelings(treated: np.ndarray, *, permutations: int, rng: np.random.Generator) -> Relabelings:
    """Every way to choose the treated FOVs among all FOVs, or ``permutations`` random ways if there are more.

    Parameters
    ----------
    treated : ndarray of bool
        ``(units,)``: the observed label of each FOV.
    permutations : int
        Most relabelings to enumerate; above it, that many are drawn at random.
    rng : Generator
        Source of the random draws.

    Returns
    -------
    Relabelings

    Examples
    --------
    >>> every = unit_relabelings(np.array([True, True, False, False]), permutations=100, rng=np.random.default_rng(0))
    >>> every.labels.shape, every.exact
    ((6, 4), True)
    """
    treated = np.asarray(treated, dtype=bool)
    units, chosen = len(treated), int(treated.sum())
    if math.comb(units, chosen) <= permutations:
        labels = np.zeros((math.comb(units, chosen), units), dtype=bool)
        for row, members in enumerate(combinations(range(units), chosen)):
            labels[row, list(members)] = True
        return Relabelings(labels, True)
    return Relabelings(rng.permuted(np.tile(treated, (permutations, 1)), axis=1), False)


def permutation_p_value(observed: float, null: np.ndarray, *, exact: bool) -> float:
    """p-value of a statistic against its permutation distribution (large values count against the null).

    ``#{null >= observed} / R`` for an exact test (``null`` holds every relabeling, the observed one included),
    ``(1 + #{null >= observed}) / (1 + R)`` for random relabelings; ties up to rounding count against the effect.

    Examples
    --------
    >>> permutation_p_value(3.0, np.array([1.0, 2.0, 3.0, 3.0]), exact=True)
    0.5
    """
    null = np.asarray(null, np.float64)
    exceed = int(np.count_nonzero(null >= observed - 1e-12 * max(abs(observed), 1.0)))
    return exceed / len(null) if exact else (1 + exceed) / (1 + len(null))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values over the ``m`` tests made (NaN: not tested, stays NaN).

    Holm's step-down procedure controls the family-wise error rate at the same level as Bonferroni's, under any
    dependence between the tests, and rejects every hypothesis Bonferroni's does and possibly more: the smallest
    p-value is multiplied by ``m``, the next by ``m - 1``, and so on, each adjusted value raised to the one before
    it so that the order is kept, and capped at 1.

    Parameters
    ----------
    p_values : sequence of float
        Raw p-values of one family of tests.

    Returns
    -------
    ndarray
        Adjusted p-values, same shape: a test is significant at family-wise level ``alpha`` when its value is below
        ``alpha``.

    Examples
    --------
    >>> holm([0.001, 0.02, 0.5]).tolist()
    [0.003, 0.04, 0.5]
    >>> holm([0.01, float("nan")]).tolist()
    [0.01, nan]
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.reshape(-1)
    adjusted = np.full(flat.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(flat))
    order = tested[np.argsort(flat[tested], kind="stable")]
    multipliers = np.arange(len(order), 0, -1)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(flat[order] * multipliers))
    return adjusted.reshape(p.shape)
