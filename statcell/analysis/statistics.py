"""Replicates and the tests built on them: the field of view is the unit, never the single cell.

Cells imaged in one field of view (FOV) share its well, its treatment, its brightness and its density, so they are
not independent replicates: a test that counts cells where the treatment (or any FOV effect) acts on whole FOVs
credits FOV differences to the effect (pseudo-replication) and gives p-values that are too small. Every test of the
analyses therefore works at the FOV level:

- a one-sample question ("is the mean coupling rank above its null value?") is a one-sided t-test of the **mean over
  cells with FOVs as clusters** (:func:`unit_mean_test`): the standard error comes from the FOVs' summed deviations
  (the cluster-robust variance with Bell and McCaffrey's small-sample correction, CR2) and the degrees of freedom
  from the FOVs too (Bell and McCaffrey's, ``FOVs - 1`` when FOVs hold equal numbers of cells). With equal FOVs this
  is exactly the t-test of the FOV means; with unequal ones a FOV weighs by its cells, as it does in the reported
  mean and in the FOV-bootstrap interval (a FOV of one cell weighs as one cell, not as much as a FOV of five);
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
from itertools import combinations, permutations
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
    """A one-sample test of the mean over cells, FOVs as clusters."""

    mean: float
    """Mean over the cells."""
    units: int
    """FOVs (replicates, clusters) tested."""
    p_value: float
    """One-sided p-value of "mean above the null value"; NaN with fewer than :data:`MIN_UNITS` FOVs."""
    degrees_of_freedom: float
    """Of the t distribution the p-value comes from (Bell and McCaffrey's); NaN where no test was made."""


def unit_mean_test(values: np.ndarray, units: Sequence[str] | np.ndarray, *, null_mean: float) -> UnitTest:
    """One-sided t-test of the mean over cells against ``null_mean``, the cells' FOVs as clusters.

    The mean is over the ``N`` cells; its variance is the cluster-robust one with the CR2 small-sample correction,
    ``sum_g S_g**2 / (1 - n_g / N) / N**2``, where ``S_g`` is the sum of the deviations from the mean of the
    ``n_g`` cells of FOV ``g``; the t statistic is referred to a t distribution with Bell and McCaffrey's degrees of
    freedom, computed for cells independent within FOVs (the working model): ``FOVs - 1`` when all FOVs hold the
    same number of cells, fewer when they do not. With equal FOVs the test is exactly the one-sample t-test of the
    FOV means; with unequal ones each FOV weighs by its cells (Bell & McCaffrey 2002, Survey Methodology 28:169;
    Imbens & Kolesár 2016, Rev. Econ. Stat. 98:701).

    Parameters
    ----------
    values : ndarray
        One value per cell; NaN (not measured) is left out.
    units : sequence of str
        Each cell's FOV (:func:`replicate_units`).
    null_mean : float
        Expected value of a cell's value under the null hypothesis.

    Returns
    -------
    UnitTest
        With fewer than :data:`MIN_UNITS` FOVs the p-value is NaN (too few replicates, no test). FOV means that are
        all equal (no spread between FOVs, e.g. every cell's rank at its maximum) are the t-test's limit: 0 above
        the null value, else 1.

    Examples
    --------
    >>> test = unit_mean_test(np.array([0.9, 0.8, 0.95, 0.85]), ["a", "a", "b", "c"], null_mean=0.5)
    >>> test.units, round(test.mean, 3), bool(test.p_value < 0.05)
    (3, 0.875, True)
    """
    from scipy import stats

    values = np.asarray(values, np.float64)
    measured = ~np.isnan(values)
    values, units = values[measured], np.asarray(units)[measured]
    grouped = pd.Series(values).groupby(units)
    sizes, means = grouped.size().to_numpy(np.float64), grouped.mean().to_numpy()
    cells, fovs = len(values), len(sizes)
    mean = float(values.mean()) if cells else float("nan")
    if fovs < MIN_UNITS:
        return UnitTest(mean, fovs, float("nan"), float("nan"))
    if np.ptp(means) == 0:
        return UnitTest(mean, fovs, 0.0 if mean > null_mean else 1.0, float("nan"))
    leverage = sizes / cells
    variance = float(np.sum((sizes * (means - mean)) ** 2 / (1 - leverage))) / cells**2
    # Bell and McCaffrey: the variance is a quadratic form e'Be of the cells' residuals e = My, B = sum_g a_g a_g'
    # with a_g = 1_g / (N sqrt(1 - n_g / N)); for independent cells its degrees of freedom are tr(MBM)**2 /
    # tr((MBM)**2), whose nonzero eigenvalues are those of the FOVs' Gram matrix (Ma_g)'(Ma_h) = diag(d) - u u' / N.
    diagonal = sizes / (cells**2 * (1 - leverage))
    spread = sizes / (cells * np.sqrt(1 - leverage))
    squared = spread @ spread / cells
    trace = diagonal.sum() - squared
    frobenius = np.sum(diagonal**2) - 2 * np.sum(diagonal * spread**2) / cells + squared**2
    degrees_of_freedom = float(trace**2 / frobenius)
    statistic = (mean - null_mean) / math.sqrt(variance)
    return UnitTest(mean, fovs, float(stats.t.sf(statistic, degrees_of_freedom)), degrees_of_freedom)


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


#: Up to this many pairs, :func:`spearman_chance` enumerates every ordering (8! = 40,320).
EXACT_SPEARMAN_PAIRS = 8


def spearman_chance(threshold: float, pairs: int) -> float:
    """The probability that ``pairs`` independent pairs reach ``|Spearman| ≥ threshold`` by chance.

    Exact, over every ordering of the ranks, up to :data:`EXACT_SPEARMAN_PAIRS` pairs; above, the t approximation
    ``t = r sqrt((n - 2) / (1 - r**2))`` on ``n - 2`` degrees of freedom. Ties are not modelled.

    Parameters
    ----------
    threshold : float
        The bar on the absolute correlation, in (0, 1].
    pairs : int
        Number of pairs (cells).

    Returns
    -------
    float
        Two-sided probability; 1 for fewer than 3 pairs.

    Examples
    --------
    >>> round(spearman_chance(1.0, 3), 3), round(spearman_chance(0.6, 8), 3) > round(spearman_chance(0.6, 40), 3)
    (0.333, True)
    """
    from scipy import stats

    if pairs < 3:
        return 1.0
    if pairs <= EXACT_SPEARMAN_PAIRS:
        orderings = np.array(list(permutations(range(pairs))))
        squared = ((orderings - np.arange(pairs)) ** 2).sum(axis=1)
        rho = 1 - 6 * squared / (pairs * (pairs**2 - 1))
        return float(np.mean(np.abs(rho) >= threshold - 1e-12))
    if threshold >= 1:
        return 0.0
    statistic = threshold * math.sqrt((pairs - 2) / (1 - threshold**2))
    return float(min(1.0, 2 * stats.t.sf(statistic, pairs - 2)))
