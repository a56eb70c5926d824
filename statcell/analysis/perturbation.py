"""Drug-treated cells in the trained latent spaces: centroid shifts, permutation tests and trajectories (paper Fig 6).

The drug set is embedded with the models trained on the main dataset, with no retraining. For every structure and
every drug, the treated cells are compared with the same structure's control cells. The control treatment is
``analysis.control_treatment``: ``auto`` (the default) takes ``vehicle`` where the drug set has it, else the untreated
cells (an empty ``drug`` in the manifest, shown as "untreated"); see :func:`resolve_control`. A (structure, drug)
whose structure has no control cells is listed in the shift table, untested, with the reason in ``note``.

- the **shift** is the Euclidean distance between the two groups' centroids of the posterior means ``mu``;
- its **permutation p-value** comes from shuffling the treatment labels among the pooled cells,
  ``p = (1 + #{shuffled distance >= observed}) / (1 + shuffles)``, each test with its own random stream seeded by the
  analysis seed and the test's name (so a p-value depends neither on the order of the tests nor on which other tests
  run); p-values are Bonferroni-corrected over every test of the table (both latent spaces, every structure and
  drug);
- the **trajectory** is the cells nearest to evenly spaced points between the untreated and treated centroids, after
  projecting every cell onto the line through them (Fig 6G).

Distances are measured in the model's *active* latent dimensions only: those whose mean KL on the main dataset's
held-out cells exceeds a threshold (``analysis.active_kl_nats``, 0.05 nats by default). A collapsed dimension
(KL near 0.001 nats) is ignored by the decoder, so its posterior mean carries no image information; on cells unlike
the training data its value is noise that adds to every centroid distance, shuffled or not, and dilutes the test.
The threshold is deliberately far below the β sweep's 0.6 nats for *important* dimensions: a conditional target
model spreads its KL thinly (the default run's 32 target dimensions hold 0.09 to 1.0 nats each, only 4 above 0.6),
and a dimension with 0.1 nats still carries what distinguishes a cell from its structure's average, such as a
dispersed Golgi. The latent units are those of the N(0, 1) prior, so the active dimensions are on a common scale
without re-scaling.

The latent scatter plots show two actual latent dimensions, as the paper does. The reference space (Fig 6C) uses
the top two by mean absolute deviation on the main dataset, the paper's ranking. The target space (Fig 6D–F) uses,
per structure, the active dimension along which a treatment's centroid moves farthest from the vehicle's (the paper's
"most significant dimension", where brefeldin-treated cells shift), and the other active dimension of largest
variance among that structure's drug-set cells: the global MAD ranking is dominated by the dimensions separating
structure classes from each other, which can be nearly constant within one structure. The arrows are the full shift
projected onto the two plotted dimensions; the test itself uses all active dimensions.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from statcell.vocabulary import VEHICLE


#: The vehicle treatment of the paper's (and the synthetic) drug set, the preferred control.
CONTROL = VEHICLE
#: ``analysis.control_treatment`` value that picks the control from the data (:func:`resolve_control`).
AUTO_CONTROL = "auto"
#: The treatment of untreated cells: an empty ``drug`` in the manifest.
UNTREATED = ""
#: How the untreated cells are named in figures and logs.
UNTREATED_LABEL = "untreated"

#: The latent spaces tested, in table order.
SPACES = ("target", "reference")


class NoControlError(ValueError):
    """The drug set has no cells of the control treatment; the message names the treatments it has."""


def treatment_label(drug: object) -> str:
    """A treatment as figures and logs name it: ``untreated`` for an empty (or missing) drug.

    Examples
    --------
    >>> [treatment_label(drug) for drug in ("paclitaxel", "", float("nan"))]
    ['paclitaxel', 'untreated', 'untreated']
    """
    return UNTREATED_LABEL if drug is None or (isinstance(drug, float) and np.isnan(drug)) or drug == "" \
        else str(drug)


def resolve_control(drugs: Sequence[str], requested: str = AUTO_CONTROL) -> str:
    """The control treatment of a drug set.

    Parameters
    ----------
    drugs : sequence of str
        The treatments of the drug set's cells (``""`` for untreated cells; repeats are fine).
    requested : str
        ``analysis.control_treatment``: ``auto`` takes ``vehicle`` where present, else the untreated cells; any
        other value names the control (``""``: the untreated cells).

    Returns
    -------
    str
        The control's ``drug`` value (``""`` for the untreated cells).

    Raises
    ------
    NoControlError
        If the drug set has no cells of the requested control (with ``auto``: neither ``vehicle`` nor untreated
        cells); the message names ``analysis.control_treatment`` and the treatments present.

    Examples
    --------
    >>> resolve_control(["vehicle", "paclitaxel", ""]), resolve_control(["", "paclitaxel"])
    ('vehicle', '')
    >>> resolve_control(["DMSO", "paclitaxel"], "DMSO")
    'DMSO'
    """
    present = {"" if drug is None or (isinstance(drug, float) and np.isnan(drug)) else str(drug) for drug in drugs}
    names = ", ".join(sorted(treatment_label(drug) for drug in present)) or "none"
    if requested == AUTO_CONTROL:
        for candidate in (CONTROL, UNTREATED):
            if candidate in present:
                return candidate
        raise NoControlError(f"the drug set has no control cells: no '{CONTROL}' and no untreated cells (empty "
                             f"drug); its treatments: {names}. Name the control in analysis.control_treatment")
    if requested not in present:
        raise NoControlError(f"analysis.control_treatment is {treatment_label(requested)!r}, but the drug set has no "
                             f"such cells; its treatments: {names}")
    return requested


class ShiftTest(NamedTuple):
    """Result of one centroid-shift permutation test."""

    distance: float
    """Euclidean distance between the centroids of the two groups (latent units)."""
    null_mean: float
    """Mean distance over the label shuffles."""
    p_value: float
    """``(1 + #{shuffled >= observed}) / (1 + shuffles)``."""


def active_dimensions(dimensions: pd.DataFrame, *, min_kl: float) -> list[int]:
    """Latent dimensions whose mean KL exceeds a threshold, in the table's rank order.

    Parameters
    ----------
    dimensions : DataFrame
        A dimension table of ``embed-cells`` (``dimension``, ``kl``, ``rank``).
    min_kl : float
        Threshold in nats; a dimension counts when its mean KL is strictly above it.

    Returns
    -------
    list of int
        Dimension indices, best rank first. When no dimension exceeds the threshold (a model trained too briefly),
        every dimension, with a warning: the analyses still run, on a latent space that is mostly noise.

    Examples
    --------
    >>> table = pd.DataFrame({"dimension": [2, 0, 1], "kl": [1.5, 0.01, 0.9], "rank": [1, 2, 3]})
    >>> active_dimensions(table, min_kl=0.6)
    [2, 1]
    """
    ordered = dimensions.sort_values("rank")
    chosen = ordered.loc[ordered["kl"] > min_kl, "dimension"].astype(int).tolist()
    if not chosen:
        warnings.warn(f"no latent dimension has a mean KL above {min_kl} nats (largest: {dimensions['kl'].max():.3g});"
                      " using all of them", stacklevel=2)
        return ordered["dimension"].astype(int).tolist()
    return chosen


def latent_means(embeddings: pd.DataFrame, *, dimensions: Sequence[int]) -> np.ndarray:
    """Posterior means ``mu_<d>`` of chosen dimensions ``d``, ``(cells, len(dimensions))`` float64, from an embedding
    table."""
    return embeddings[[f"mu_{d}" for d in dimensions]].to_numpy(dtype=np.float64)


def treatments(embeddings: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """An embedding table with each cell's treatment and store index, sorted by cell id.

    Parameters
    ----------
    embeddings : DataFrame
        Rows of ``embed-cells`` (``cell_id``, ``structure``, ``mu_*`` ...).
    cells : DataFrame
        ``cells.parquet`` of the same dataset (``cell_id``, ``drug``, ``store_index``).

    Returns
    -------
    DataFrame
        ``embeddings`` with columns ``drug`` and ``store_index``; sorted by ``cell_id`` so results do not depend on
        row order.

    Raises
    ------
    ValueError
        If an embedded cell is missing from ``cells``.
    """
    joined = embeddings.merge(cells[["cell_id", "drug", "store_index"]], on="cell_id", how="left",
                              validate="one_to_one", indicator=True)
    missing = joined.pop("_merge") != "both"
    if missing.any():
        raise ValueError(f"{int(missing.sum())} embedded cells are not in the cell table, e.g. "
                         f"{joined.loc[missing, 'cell_id'].iloc[0]!r}")
    joined["drug"] = joined["drug"].fillna(UNTREATED).astype(str)  # untreated cells: an empty drug
    return joined.sort_values("cell_id", ignore_index=True)


def comparisons(table: pd.DataFrame, *, control: str) -> list[tuple[str, str]]:
    """The (structure, drug) pairs to compare with the structure's control cells, sorted.

    Structures without control cells are left out (there is nothing to compare with; see :func:`untestable`).
    """
    present = table.groupby("structure")["drug"].unique()
    return [(structure, drug) for structure, drugs in sorted(present.items()) if control in drugs
            for drug in sorted(drugs) if drug != control]


def untestable(table: pd.DataFrame, *, control: str) -> list[tuple[str, str]]:
    """The (structure, drug) pairs of treated cells whose structure has no control cells, sorted."""
    present = table.groupby("structure")["drug"].unique()
    return [(structure, drug) for structure, drugs in sorted(present.items()) if control not in drugs
            for drug in sorted(drugs)]


def _stream(seed: int, name: str) -> np.random.Generator:
    """A random stream of its own for each named test, from the analysis seed."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def centroid_shift_test(latents: np.ndarray, treated: np.ndarray, *, permutations: int,
                        rng: np.random.Generator) -> ShiftTest:
    """Permutation test of the distance between the centroids of two groups of cells.

    Parameters
    ----------
    latents : ndarray
        ``(cells, dimensions)`` coordinates.
    treated : ndarray of bool
        ``(cells,)``: True for the second group.
    permutations : int
        Label shuffles.
    rng : Generator
        Source of the shuffles.

    Returns
    -------
    ShiftTest
        Observed distance, mean shuffled distance, and the p-value ``(1 + #{shuffled >= observed}) / (1 +
        permutations)`` (never 0; at least ``1 / (1 + permutations)``).

    Raises
    ------
    ValueError
        If either group is empty.
    """
    x = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(treated, dtype=bool)
    n_treated = int(labels.sum())
    n_control = len(labels) - n_treated
    if n_treated == 0 or n_control == 0:
        raise ValueError(f"both groups need cells (treated {n_treated}, control {n_control})")
    shuffled = rng.permuted(np.tile(labels, (permutations, 1)), axis=1)
    indicators = np.vstack([labels, shuffled]).astype(np.float64)  # row 0: the observed labels
    treated_sums = indicators @ x
    distances = np.linalg.norm(treated_sums / n_treated - (x.sum(axis=0) - treated_sums) / n_control, axis=1)
    observed, null = distances[0], distances[1:]
    exceed = np.count_nonzero(null >= observed * (1 - 1e-12))  # ties, up to rounding, count against the shift
    return ShiftTest(float(observed), float(null.mean()), (1 + exceed) / (1 + permutations))


def bonferroni(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bonferroni-corrected p-values, ``min(1, p * m)`` over the ``m`` tests made (NaN: not tested, stays NaN).

    Examples
    --------
    >>> bonferroni([0.001, 0.02, 0.5]).tolist()
    [0.003, 0.06, 1.0]
    >>> bonferroni([0.01, float("nan")]).tolist()
    [0.01, nan]
    """
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(1.0, p * np.count_nonzero(~np.isnan(p)))


def drug_shifts(embeddings: Mapping[str, pd.DataFrame], cells: pd.DataFrame, dimensions: Mapping[str, pd.DataFrame],
                *, min_kl: float, permutations: int, seed: int, significance: float,
                control: str = AUTO_CONTROL) -> pd.DataFrame:
    """Centroid shift of every (structure, drug) against the structure's control cells, in each latent space.

    Parameters
    ----------
    embeddings : mapping of str to DataFrame
        Drug-set embedding table of each model, keyed ``"target"`` and/or ``"reference"``.
    cells : DataFrame
        The drug set's ``cells.parquet`` (``cell_id``, ``drug``, ``store_index``).
    dimensions : mapping of str to DataFrame
        Dimension table of each model on the main dataset (``dimension``, ``kl``, ``rank``), same keys.
    min_kl : float
        Mean KL (nats) above which a dimension is active; distances use the active dimensions only.
    permutations : int
        Label shuffles per test.
    seed : int
        Analysis seed; each test draws from its own stream named by space, structure and drug.
    significance : float
        Family-wise level: a test is significant when its Bonferroni-corrected p-value is below it.
    control : str
        Treatment the drugs are compared with, or ``auto`` (:func:`resolve_control`).

    Returns
    -------
    DataFrame
        One row per space, structure and drug: ``space, structure, drug, control`` (the control treatment as
        named in figures), ``n_control, n_treated, dimensions`` (active dimensions used), ``distance``,
        ``null_mean``, ``p_value``, ``p_bonferroni``, ``significant`` and ``note``: empty for a test made, else why
        there is none (the structure has no control cells; its statistics are NaN and it is not counted in the
        Bonferroni correction).

    Raises
    ------
    NoControlError
        If the drug set has no control cells at all.
    """
    rows = []
    for space in (name for name in SPACES if name in embeddings):
        table = treatments(embeddings[space], cells)
        chosen_control = resolve_control(table["drug"], control)
        label = treatment_label(chosen_control)
        active = active_dimensions(dimensions[space], min_kl=min_kl)
        latents = latent_means(table, dimensions=active)
        for structure, drug in comparisons(table, control=chosen_control):
            chosen = ((table["structure"] == structure) & table["drug"].isin([chosen_control, drug])).to_numpy()
            treated = (table.loc[chosen, "drug"] == drug).to_numpy()
            result = centroid_shift_test(latents[chosen], treated, permutations=permutations,
                                         rng=_stream(seed, f"{space}/{structure}/{drug}"))
            rows.append({"space": space, "structure": structure, "drug": drug, "control": label,
                         "n_control": int((~treated).sum()), "n_treated": int(treated.sum()),
                         "dimensions": len(active), **result._asdict(), "note": ""})
        for structure, drug in untestable(table, control=chosen_control):
            treated = int(((table["structure"] == structure) & (table["drug"] == drug)).sum())
            rows.append({"space": space, "structure": structure, "drug": treatment_label(drug), "control": label,
                         "n_control": 0, "n_treated": treated, "dimensions": len(active), "distance": np.nan,
                         "null_mean": np.nan, "p_value": np.nan,
                         "note": f"not tested: no {label} cells of {structure} in the drug set"})
    shifts = pd.DataFrame(rows, columns=["space", "structure", "drug", "control", "n_control", "n_treated",
                                         "dimensions", *ShiftTest._fields, "note"])
    shifts["p_bonferroni"] = bonferroni(shifts["p_value"])
    shifts["significant"] = shifts["p_bonferroni"] < significance
    order = ["space", "structure", "drug", "control", "n_control", "n_treated", "dimensions", *ShiftTest._fields,
             "p_bonferroni", "significant", "note"]
    return shifts[order]


def drug_trajectory(embeddings: pd.DataFrame, cells: pd.DataFrame, dimensions: pd.DataFrame, *, steps: int,
                    min_kl: float, control: str = AUTO_CONTROL) -> pd.DataFrame:
    """Real cells at evenly spaced steps from the untreated to the treated centroid of each (structure, drug).

    The control and treated cells of a structure are projected onto the line through the two centroids (in the
    active dimensions), in units where the control centroid is at 0 and the treated centroid at 1; at each of
    ``steps`` positions evenly spaced in [0, 1] the cell with the nearest projection is taken.

    Parameters
    ----------
    embeddings : DataFrame
        Drug-set embedding table of the target model.
    cells : DataFrame
        The drug set's ``cells.parquet``.
    dimensions : DataFrame
        The target model's dimension table on the main dataset.
    steps : int
        Positions along each line (at least 2).
    min_kl : float
        Mean KL (nats) above which a dimension is active.
    control : str
        Treatment the drugs are compared with, or ``auto`` (:func:`resolve_control`).

    Returns
    -------
    DataFrame
        One row per (structure, drug, step): ``structure, drug, step, position, cell_id, store_index,
        cell_drug`` (the chosen cell's treatment, ``untreated`` for untreated cells), ``projection`` (its position
        on the line) and ``offset`` (its distance from the line, latent units).
    """
    table = treatments(embeddings, cells)
    control = resolve_control(table["drug"], control)
    latents = latent_means(table, dimensions=active_dimensions(dimensions, min_kl=min_kl))
    positions = np.linspace(0.0, 1.0, steps)
    rows = []
    for structure, drug in comparisons(table, control=control):
        chosen = np.flatnonzero(((table["structure"] == structure) & table["drug"].isin([control, drug])).to_numpy())
        x, treated = latents[chosen], (table["drug"].to_numpy()[chosen] == drug)
        start = x[~treated].mean(axis=0)
        shift = x[treated].mean(axis=0) - start
        projection = (x - start) @ shift / max(float(shift @ shift), 1e-30)
        offset = np.linalg.norm(x - start - projection[:, None] * shift, axis=1)
        for step, position in enumerate(positions):
            nearest = int(np.argmin(np.abs(projection - position)))
            cell = table.iloc[chosen[nearest]]
            rows.append({"structure": structure, "drug": drug, "step": step, "position": float(position),
                         "cell_id": cell["cell_id"], "store_index": int(cell["store_index"]),
                         "cell_drug": treatment_label(cell["drug"]), "projection": float(projection[nearest]),
                         "offset": float(offset[nearest])})
    return pd.DataFrame(rows, columns=["structure", "drug", "step", "position", "cell_id", "store_index", "cell_drug",
                                       "projection", "offset"])

