"""Drug-treated cells in the trained latent spaces: centroid shifts, permutation tests and trajectories (paper Fig 6).

The drug set is embedded with the models trained on the main dataset, with no retraining. For every structure and
every drug, the treated cells are compared with the same structure's control cells. The control treatment is
``analysis.control_treatment``: ``auto`` (the default) takes ``vehicle`` where the drug set has it, else the untreated
cells (an empty ``drug`` in the manifest, shown as "untreated"); see :func:`resolve_control`. A (structure, drug)
whose structure has no control cells is listed in the shift table, untested, with the reason in ``note``.

- the **shift** is the Euclidean distance between the two groups' centroids of the posterior means ``mu``, with its
  standardized size (Cohen's d along the shift: the distance over the cells' pooled standard deviation along it);
- the **energy distance** compares the two groups' whole distributions, not only their centres;
- the **spectrum distance** ``dEIG_k`` (GILEA's) compares the square roots of the top ``k`` eigenvalues of the two
  groups' latent covariances (``analysis.spectrum_components``): it answers whether a drug changes the *spread* of a
  phenotype, which moves no centroid;
- each statistic's **p-value** comes from relabeling whole FOVs, not cells: a treatment is applied per well, and
  cells of one FOV share its brightness, density and plate position, so shuffling cells would credit FOV
  differences to the drug (pseudo-replication). With few FOVs every relabeling is enumerated (an exact test; 7
  FOVs per arm give 3432, a smallest p of 2/3432, as swapping the arms gives the same distance), else
  ``analysis.permutations`` random ones; ``min_p_value`` says how small a p-value the FOVs allow. Each test draws
  from its own random stream named by the analysis seed and the test's name (so a p-value depends neither on the
  order of the tests nor on which other tests run); each statistic is Holm-corrected over every test of the table
  (both latent spaces, every structure and drug), which holds the family-wise error rate at
  ``analysis.significance`` as Bonferroni's correction does, with more power;
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
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from statcell.analysis.statistics import holm, permutation_p_value, replicate_units, unit_relabelings
from statcell.seeding import numpy_stream
from statcell.vocabulary import IMAGING_FOV
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


def conditions(cells: pd.DataFrame) -> pd.Series:
    """Each cell's treatment condition: its ``drug``, split by ``concentration_um`` where one drug was given at
    several (a dose series is one condition per dose, never pooled), ``""`` for untreated cells.

    Examples
    --------
    >>> cells = pd.DataFrame({"drug": ["taxol", "taxol", "bfa", "", None],
    ...                       "concentration_um": [1.0, 5.0, 5.0, 0.0, float("nan")]})
    >>> conditions(cells).tolist()
    ['taxol 1 µM', 'taxol 5 µM', 'bfa', '', '']
    """
    drugs = cells["drug"].fillna(UNTREATED).astype(str)
    if "concentration_um" not in cells.columns:
        return drugs
    doses = pd.to_numeric(cells["concentration_um"], errors="coerce")
    several = drugs.map(doses.groupby(drugs).nunique()) > 1
    labelled = drugs + " " + doses.map(lambda dose: f"{dose:g}") + " µM"
    return drugs.where(~several, labelled)


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
    """Result of the FOV-level tests of one (structure, drug) against its control cells."""

    distance: float
    """Euclidean distance between the centroids of the two groups of cells (latent units)."""
    effect_size: float
    """``distance`` over the pooled within-group standard deviation of the cells along the shift (Cohen's d)."""
    null_mean: float
    """Mean centroid distance over the FOV relabelings."""
    p_value: float
    """Permutation p-value of the centroid distance, FOVs relabeled."""
    energy_distance: float
    """Energy distance between the two groups' distributions (0 for identical distributions)."""
    energy_p_value: float
    """Permutation p-value of the energy distance, FOVs relabeled."""
    spectrum_distance: float
    """``dEIG_k``: relative change of the top ``k`` square-rooted covariance eigenvalues (a change of spread)."""
    spectrum_p_value: float
    """Permutation p-value of ``dEIG_k``, FOVs relabeled."""
    fovs_control: int
    """FOVs of control cells."""
    fovs_treated: int
    """FOVs of treated cells."""
    relabelings: int
    """FOV relabelings the p-values come from."""
    exact: bool
    """True when the relabelings are every possible one (an exact test)."""
    min_p_value: float
    """Smallest p-value these FOVs allow the centroid and energy tests: ``1 / relabelings`` for an exact test
    (``2 / relabelings`` with as many FOVs in each arm: swapping the arms gives the same distance), else
    ``1 / (1 + relabelings)``."""


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
        ``embeddings`` with columns ``drug`` (the cell's condition, :func:`conditions`), ``store_index`` and
        ``imaging_fov`` (the replicate unit); sorted by ``cell_id`` so results do not depend on row order.

    Raises
    ------
    ValueError
        If an embedded cell is missing from ``cells``.
    """
    cells = cells.assign(**{IMAGING_FOV: replicate_units(cells), "drug": conditions(cells)})
    joined = embeddings.merge(cells[["cell_id", "drug", "store_index", IMAGING_FOV]], on="cell_id", how="left",
                              validate="one_to_one", indicator=True)
    missing = joined.pop("_merge") != "both"
    if missing.any():
        raise ValueError(f"{int(missing.sum())} embedded cells are not in the cell table, e.g. "
                         f"{joined.loc[missing, 'cell_id'].iloc[0]!r}")
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


def _spectrum(moments: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Covariance eigenvalues, largest first, of groups given by their second moments ``(R, d*d)``, sums ``(R, d)``
    and sizes ``(R,)``."""
    d = sums.shape[1]
    means = sums / counts[:, None]
    scatter = moments.reshape(-1, d, d) - counts[:, None, None] * means[:, :, None] * means[:, None, :]
    covariance = scatter / np.maximum(counts - 1, 1)[:, None, None]
    return np.clip(np.linalg.eigvalsh(covariance)[:, ::-1], 0.0, None)


def spectrum_distance(control: np.ndarray, treated: np.ndarray, *, components: int) -> np.ndarray:
    """``dEIG_k = sum_{i <= k} ((sqrt(l_i^treated) - sqrt(l_i^control)) / sqrt(l_i^control))^2`` (GILEA).

    Parameters
    ----------
    control, treated : ndarray
        ``(..., d)`` covariance eigenvalues of each group, largest first.
    components : int
        ``k``, the leading eigenvalues compared.

    Returns
    -------
    ndarray
        ``(...)``: 0 for equal spectra; a group twice as spread along its leading axis adds 1.

    Examples
    --------
    >>> spectrum_distance(np.array([4.0, 1.0]), np.array([16.0, 1.0]), components=2).item()
    1.0
    """
    k = min(components, control.shape[-1])
    low, high = np.sqrt(control[..., :k]), np.sqrt(treated[..., :k])
    return (((high - low) / np.maximum(low, 1e-12)) ** 2).sum(axis=-1)


def shift_tests(latents: np.ndarray, treated: np.ndarray, units: np.ndarray, *, permutations: int,
                spectrum_components: int, rng: np.random.Generator) -> ShiftTest:
    """FOV-level permutation tests of two groups of cells: centroid distance, energy distance, covariance spectrum.

    The treatment is applied per FOV, so the null distribution comes from relabeling whole FOVs (every relabeling
    when there are at most ``permutations``, else that many at random; see
    :func:`statcell.analysis.statistics.unit_relabelings`); each statistic is computed on the cells of each
    relabeling.

    Parameters
    ----------
    latents : ndarray
        ``(cells, dimensions)`` coordinates.
    treated : ndarray of bool
        ``(cells,)``: True for the second group.
    units : ndarray
        ``(cells,)`` FOV of each cell. A FOV whose cells carry both labels is split in two, one per label.
    permutations : int
        Most FOV relabelings.
    spectrum_components : int
        Leading covariance eigenvalues compared by ``dEIG_k`` (at most the number of dimensions).
    rng : Generator
        Source of random relabelings.

    Returns
    -------
    ShiftTest

    Raises
    ------
    ValueError
        If either group is empty.
    """
    x = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(treated, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError(f"both groups need cells (treated {int(labels.sum())}, control {int((~labels).sum())})")
    keys = np.char.add(np.asarray(units).astype(str), np.where(labels, "\0treated", "\0control"))
    unit_names, unit_of = np.unique(keys, return_inverse=True)
    unit_treated = np.zeros(len(unit_names), dtype=bool)
    unit_treated[unit_of] = labels
    relabeled = unit_relabelings(unit_treated, permutations=permutations, rng=rng)
    if relabeled.exact:  # every relabeling, the observed one among them
        rows, observed = relabeled.labels, int(np.flatnonzero((relabeled.labels == unit_treated).all(axis=1))[0])
        null = np.arange(len(rows))
    else:
        rows, observed = np.vstack([unit_treated, relabeled.labels]), 0
        null = np.arange(1, len(rows))
    groups = rows[:, unit_of].astype(np.float64)  # (relabelings, cells): 1 in the treated group
    n_treated = groups.sum(axis=1)
    n_control = len(labels) - n_treated

    treated_sums = groups @ x
    control_sums = x.sum(axis=0) - treated_sums
    shift = treated_sums / n_treated[:, None] - control_sums / n_control[:, None]
    distances = np.linalg.norm(shift, axis=1)

    from scipy.spatial.distance import cdist  # imported here: the workflow's parse imports this module

    pairwise = cdist(x, x)  # (cells, cells); no (cells, cells, dimensions) intermediate
    to_treated = groups @ pairwise
    within_treated = np.einsum("ri,ri->r", to_treated, groups)
    across = np.einsum("ri,ri->r", to_treated, 1 - groups)
    within_control = pairwise.sum() - within_treated - 2 * across
    energy = 2 * across / (n_treated * n_control) - within_treated / n_treated ** 2 - within_control / n_control ** 2

    products = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    treated_moments = groups @ products
    spectrum = spectrum_distance(_spectrum(products.sum(axis=0) - treated_moments, control_sums, n_control),
                                 _spectrum(treated_moments, treated_sums, n_treated), components=spectrum_components)

    along = x @ (shift[observed] / max(float(distances[observed]), 1e-30))
    pooled = ((np.var(along[labels], ddof=1) if labels.sum() > 1 else 0.0) * (labels.sum() - 1)
              + (np.var(along[~labels], ddof=1) if (~labels).sum() > 1 else 0.0) * ((~labels).sum() - 1))
    spread = np.sqrt(pooled / (len(labels) - 2)) if len(labels) > 2 else 0.0
    exact = relabeled.exact
    symmetric = 2 if exact and 2 * unit_treated.sum() == len(unit_treated) else 1  # the arms swapped: a tie
    return ShiftTest(
        distance=float(distances[observed]),
        effect_size=float(distances[observed] / spread) if spread > 0 else float("nan"),
        null_mean=float(distances[null].mean()),
        p_value=permutation_p_value(distances[observed], distances[null], exact=exact),
        energy_distance=float(energy[observed]),
        energy_p_value=permutation_p_value(energy[observed], energy[null], exact=exact),
        spectrum_distance=float(spectrum[observed]),
        spectrum_p_value=permutation_p_value(spectrum[observed], spectrum[null], exact=exact),
        fovs_control=int((~unit_treated).sum()), fovs_treated=int(unit_treated.sum()), relabelings=len(null),
        exact=exact, min_p_value=symmetric / len(null) if exact else 1 / (1 + len(null)))


#: The FOV-level tests of the shift table: p-value column → its family's Holm-corrected column and call.
TESTS: dict[str, tuple[str, str]] = {"p_value": ("p_adjusted", "significant"),
                                     "energy_p_value": ("energy_p_adjusted", "energy_significant"),
                                     "spectrum_p_value": ("spectrum_p_adjusted", "spectrum_significant")}


def drug_shifts(embeddings: Mapping[str, pd.DataFrame], cells: pd.DataFrame, dimensions: Mapping[str, pd.DataFrame],
                *, min_kl: float, permutations: int, seed: int, significance: float, spectrum_components: int = 5,
                control: str = AUTO_CONTROL) -> pd.DataFrame:
    """FOV-level tests of every (structure, drug) against the structure's control cells, in each latent space.

    Parameters
    ----------
    embeddings : mapping of str to DataFrame
        Drug-set embedding table of each model, keyed ``"target"`` and/or ``"reference"``.
    cells : DataFrame
        The drug set's ``cells.parquet`` (``cell_id``, ``drug``, ``store_index`` and the cells' FOVs,
        :func:`statcell.analysis.statistics.replicate_units`).
    dimensions : mapping of str to DataFrame
        Dimension table of each model on the main dataset (``dimension``, ``kl``, ``rank``), same keys.
    min_kl : float
        Mean KL (nats) above which a dimension is active; the statistics use the active dimensions only.
    permutations : int
        Most FOV relabelings per test (fewer FOVs allow fewer; then every one is used, an exact test).
    seed : int
        Analysis seed; each test draws from its own stream named by space, structure and drug.
    significance : float
        Family-wise level: a test is significant when its Holm-corrected p-value is below it.
    spectrum_components : int
        Leading covariance eigenvalues compared by the spectrum test (``dEIG_k``'s ``k``).
    control : str
        Treatment the drugs are compared with, or ``auto`` (:func:`resolve_control`).

    Returns
    -------
    DataFrame
        One row per space, structure and drug: ``space, structure, drug, control`` (the control treatment as
        named in figures), ``n_control, n_treated, dimensions`` (active dimensions used), the fields of
        :class:`ShiftTest`, per test its Holm-corrected p-value and call (:data:`TESTS`; each test is its own
        family, corrected over every row it was made for: both spaces, every structure and drug), and ``note``:
        empty for a test made, else why there is none (the structure has no control cells; its statistics are
        NaN and it is not counted in the corrections).

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
            result = shift_tests(latents[chosen], treated, table.loc[chosen, IMAGING_FOV].to_numpy(),
                                 permutations=permutations, spectrum_components=spectrum_components,
                                 rng=numpy_stream(seed, "drug test", space, structure, drug))
            rows.append({"space": space, "structure": structure, "drug": drug, "control": label,
                         "n_control": int((~treated).sum()), "n_treated": int(treated.sum()),
                         "dimensions": len(active), **result._asdict(), "note": _untestable_note(result, significance)})
        for structure, drug in untestable(table, control=chosen_control):
            treated = int(((table["structure"] == structure) & (table["drug"] == drug)).sum())
            rows.append({"space": space, "structure": structure, "drug": treatment_label(drug), "control": label,
                         "n_control": 0, "n_treated": treated, "dimensions": len(active),
                         "note": f"not tested: no {label} cells of {structure} in the drug set"})
    shifts = pd.DataFrame(rows, columns=["space", "structure", "drug", "control", "n_control", "n_treated",
                                         "dimensions", *ShiftTest._fields, "note"])
    for p_value, (corrected, call) in TESTS.items():
        shifts[corrected] = holm(shifts[p_value].astype(np.float64))
        shifts[call] = shifts[corrected] < significance
    order = ["space", "structure", "drug", "control", "n_control", "n_treated", "dimensions", *ShiftTest._fields,
             *(column for pair in TESTS.values() for column in pair), "note"]
    return shifts[order]


def _untestable_note(result: ShiftTest, significance: float) -> str:
    """Why a shift's tests can reject nothing, where the FOVs allow no p-value below ``significance``; else ``""``."""
    if result.min_p_value < significance:
        return ""
    return (f"untestable: {result.fovs_control} control and {result.fovs_treated} treated FOVs allow "
            f"{result.relabelings} relabelings, so no p-value below {result.min_p_value:.2g} (analysis.significance "
            f"{significance:g}); image more FOVs per condition")


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

