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
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from statcell import io

#: The vehicle treatment of the paper's (and the synthetic) drug set, the preferred control.
CONTROL = "vehicle"
#: ``analysis.control_treatment`` value that picks the control from the data (:func:`resolve_control`).
AUTO_CONTROL = "auto"
#: The treatment of untreated cells: an empty ``drug`` in the manifest.
UNTREATED = ""
#: How the untreated cells are named in figures and logs.
UNTREATED_LABEL = "untreated"

#: Marker colours of the treatments (the paper's: vehicle black, paclitaxel pink, brefeldin blue); the control is
#: always black.
TREATMENT_COLOURS: dict[str, str] = {"vehicle": "black", "paclitaxel": "#e0529c", "brefeldin_a": "#2f6fd6"}
_OTHER_COLOURS = ("#2ca02c", "#ff7f0e", "#8c564b", "#9467bd", "#17becf")

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


def treatment_colour(drug: str, drugs: Sequence[str], *, control: str = CONTROL) -> str:
    """Colour of a treatment: black for the control, the paper's for paclitaxel and brefeldin A, else one of a fixed
    cycle."""
    if drug == control:
        return "black"
    others = [name for name in sorted(drugs) if name not in TREATMENT_COLOURS and name != control]
    return TREATMENT_COLOURS.get(drug) or _OTHER_COLOURS[others.index(drug) % len(_OTHER_COLOURS)]


def _treatment_order(drugs: Sequence[str], control: str) -> list[str]:
    return [control] * (control in drugs) + sorted(set(drugs) - {control})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, output: str | Path, *, dpi: int) -> None:
    """Write a figure as PNG, and beside it as SVG (vector, for the scatter plots)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    figure.savefig(output.with_suffix(".svg"))


def _p_label(row: pd.Series) -> str:
    """``drug: d = .., p = ..`` of one shift-table row (Bonferroni-corrected p), or why it was not tested."""
    if isinstance(row.get("note"), str) and row["note"]:
        return f"{row['drug']}: {row['note']}"
    star = " *" if row["significant"] else ""
    return f"{row['drug']}: d = {row['distance']:.2f}, p_bonf = {row['p_bonferroni']:.2g}{star}"


def _scatter_treatments(axis, table: pd.DataFrame, xy: np.ndarray, *, control: str, point_size: float) -> None:
    """Cells coloured by treatment (control underneath), each treatment's centroid as a large cross."""
    drugs = sorted(table["drug"].unique())
    for drug in _treatment_order(drugs, control):
        chosen = (table["drug"] == drug).to_numpy()
        colour = treatment_colour(drug, drugs, control=control)
        axis.scatter(xy[chosen, 0], xy[chosen, 1], s=point_size, color=colour, alpha=0.6, linewidths=0,
                     label=f"{treatment_label(drug)} (n = {int(chosen.sum())})")
        centre = xy[chosen].mean(axis=0)
        axis.scatter(*centre, s=point_size * 5, marker="X", color=colour, edgecolors="white", linewidths=0.6,
                     zorder=4)


def plot_drug_reference_latents(embeddings: pd.DataFrame, cells: pd.DataFrame, dimensions: pd.DataFrame,
                                shifts: pd.DataFrame, output: str | Path, *, dpi: int = 150,
                                point_size: float = 14.0, control: str = AUTO_CONTROL) -> list[int]:
    """Fig 6C: drug-set cells in the top two reference dimensions, coloured by treatment.

    Parameters
    ----------
    embeddings : DataFrame
        Drug-set embedding table of the reference model.
    cells : DataFrame
        The drug set's ``cells.parquet``.
    dimensions : DataFrame
        The reference model's dimension table on the main dataset (the top two by ``rank`` are shown).
    shifts : DataFrame
        Table of :func:`drug_shifts` (its reference-space rows are listed beside the plot).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    point_size : float
        Marker area (points²).
    control : str
        The control treatment, or ``auto`` (:func:`resolve_control`).

    Returns
    -------
    list of int
        The two dimensions shown.
    """
    plt = _pyplot()
    table = treatments(embeddings, cells)
    control = resolve_control(table["drug"], control)
    shown = dimensions.sort_values("rank")["dimension"].astype(int).tolist()[:2]
    xy = latent_means(table, dimensions=shown)
    figure, axis = plt.subplots(figsize=(9.5, 5.6), layout="constrained")
    _scatter_treatments(axis, table, xy, control=control, point_size=point_size)
    axis.set_xlabel(f"reference latent dimension {shown[0]} (μ, prior SD units; MAD rank 1)")
    axis.set_ylabel(f"reference latent dimension {shown[1]} (μ, prior SD units; MAD rank 2)")
    axis.set_aspect("equal", adjustable="datalim")
    axis.legend(title="treatment (× centroid)", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    rows = shifts[shifts["space"] == "reference"]
    lines = [f"{row['structure']} — {_p_label(row)}" for _, row in rows.iterrows()]
    axis.text(1.02, 0.0, f"centroid shift vs {treatment_label(control)}\n(all active dimensions,\nBonferroni-corrected "
              "permutation p)\n" + "\n".join(lines), transform=axis.transAxes, fontsize=7, va="bottom")
    axis.set_title("Drug set in the reference latent space (cell and nuclear shape), all structures", fontsize=10)
    _save(figure, output, dpi=dpi)
    plt.close(figure)
    return shown


def _shown_dimensions(latents: np.ndarray, drugs: np.ndarray, candidates: Sequence[int], *, control: str) -> list[int]:
    """Two dimensions for a structure's panel: the one along which a treatment's centroid moves farthest from the
    control's (the largest variance where there is no control), then the other of largest variance among the cells.

    Examples
    --------
    >>> latents = np.array([[0.0, 0.0, 3.0], [0.0, 1.0, -3.0], [2.0, 0.0, 3.0], [2.0, 1.0, -3.0]])
    >>> _shown_dimensions(latents, np.array(["vehicle", "vehicle", "drug", "drug"]), [4, 5, 6], control="vehicle")
    [4, 6]
    """
    variance_order = list(np.argsort(-latents.var(axis=0), kind="stable"))
    first = variance_order[0]
    treated = [drug for drug in np.unique(drugs) if drug != control]
    if treated and (drugs == control).any():
        start = latents[drugs == control].mean(axis=0)
        moves = np.max([np.abs(latents[drugs == drug].mean(axis=0) - start) for drug in treated], axis=0)
        first = int(np.argmax(moves))
    second = next(index for index in variance_order if index != first)
    return [candidates[first], candidates[second]]


def plot_drug_target_latents(embeddings: pd.DataFrame, cells: pd.DataFrame, dimensions: pd.DataFrame,
                             shifts: pd.DataFrame, output: str | Path, *, min_kl: float, dpi: int = 150,
                             point_size: float = 14.0, control: str = AUTO_CONTROL) -> pd.DataFrame:
    """Fig 6D–F: per structure, its drug-set cells in two target dimensions with untreated→treated arrows.

    Parameters
    ----------
    embeddings : DataFrame
        Drug-set embedding table of the target model.
    cells : DataFrame
        The drug set's ``cells.parquet``.
    dimensions : DataFrame
        The target model's dimension table on the main dataset.
    shifts : DataFrame
        Table of :func:`drug_shifts` (target-space p-values go into the panel titles).
    output : path
        PNG to write (an SVG is written beside it).
    min_kl : float
        Mean KL (nats) above which a dimension is active; each panel shows the active dimension along which a
        treatment's centroid moves farthest, and the other of largest variance among the structure's cells.
    dpi, point_size, control
        As in :func:`plot_drug_reference_latents`.

    Returns
    -------
    DataFrame
        The dimensions shown per structure (``structure``, ``x_dimension``, ``y_dimension``).
    """
    plt = _pyplot()
    table = treatments(embeddings, cells)
    control = resolve_control(table["drug"], control)
    active = active_dimensions(dimensions, min_kl=min_kl)
    # a scatter plot needs two dimensions: with one active dimension, the others compete for the second axis
    candidates = active if len(active) >= 2 else dimensions.sort_values("rank")["dimension"].astype(int).tolist()
    latents = latent_means(table, dimensions=candidates)
    structures = sorted(table["structure"].unique())
    figure, axes = plt.subplots(1, len(structures), figsize=(5.2 * len(structures), 5.8), squeeze=False,
                                layout="constrained")
    shown = []
    for axis, structure in zip(axes[0], structures):
        chosen = (table["structure"] == structure).to_numpy()
        pair = _shown_dimensions(latents[chosen], table.loc[chosen, "drug"].to_numpy(), candidates, control=control)
        xy = latent_means(table[chosen], dimensions=pair)
        cell_rows = table[chosen].reset_index(drop=True)
        _scatter_treatments(axis, cell_rows, xy, control=control, point_size=point_size)
        drugs = sorted(cell_rows["drug"].unique())
        start = xy[(cell_rows["drug"] == control).to_numpy()].mean(axis=0)
        for drug in drugs:
            if drug == control or control not in drugs:
                continue
            end = xy[(cell_rows["drug"] == drug).to_numpy()].mean(axis=0)
            axis.annotate("", xy=end, xytext=start, zorder=5, arrowprops={
                "arrowstyle": "-|>", "color": "red", "linewidth": 2.2, "mutation_scale": 16})
            axis.annotate("", xy=end, xytext=start, zorder=6, arrowprops={
                "arrowstyle": "-|>", "color": treatment_colour(drug, drugs, control=control), "linewidth": 0.9,
                "mutation_scale": 9})
        rows = shifts[(shifts["space"] == "target") & (shifts["structure"] == structure)]
        axis.set_title(structure + "\n" + "\n".join(_p_label(row) for _, row in rows.iterrows()), fontsize=9)
        axis.set_xlabel(f"target latent dimension {pair[0]} (μ, prior SD units)")
        axis.set_ylabel(f"target latent dimension {pair[1]} (μ, prior SD units)")
        axis.set_aspect("equal", adjustable="datalim")
        axis.legend(fontsize=7, loc="best")
        shown.append({"structure": structure, "x_dimension": pair[0], "y_dimension": pair[1]})
    figure.suptitle(f"Drug set in the target latent space, per structure: x, the active dimension of the largest "
                    f"centroid shift; y, the other of largest variance; red arrows: {treatment_label(control)} → "
                    "treated centroid "
                    f"(projected). d: centroid distance over all {len(active)} active dimensions (KL > {min_kl:g} "
                    "nats); p: permutation test, Bonferroni-corrected, * significant", fontsize=9, wrap=True)
    _save(figure, output, dpi=dpi)
    plt.close(figure)
    return pd.DataFrame(shown)


def plot_drug_trajectory(trajectory: pd.DataFrame, store: str | Path, shifts: pd.DataFrame, output: str | Path, *,
                         dpi: int = 150) -> None:
    """Fig 6G: the trajectory's real cells, xy (max along z) and yz (max along x) projections, composite colours.

    Parameters
    ----------
    trajectory : DataFrame
        Table of :func:`drug_trajectory`.
    store : path
        The drug set's ``cells.zarr``.
    shifts : DataFrame
        Table of :func:`drug_shifts` (target-space p-values label the rows).
    output : path
        PNG to write.
    dpi : int
        PNG resolution.
    """
    import zarr

    from statcell.figures import composite

    plt = _pyplot()
    array = zarr.open_array(Path(store) / "0", mode="r")
    voxel = io.store_spacing(store)[-1]
    pairs = list(trajectory.groupby(["structure", "drug"], sort=True))
    steps = int(trajectory["step"].max()) + 1
    _, _, depth, height, width = array.shape
    figure, axes = plt.subplots(2 * len(pairs), steps, figsize=(1.5 * steps + 1.4, 2.3 * len(pairs) + 0.7),
                                squeeze=False, layout="constrained",
                                gridspec_kw={"height_ratios": [height, depth] * len(pairs)})
    target = shifts[shifts["space"] == "target"].set_index(["structure", "drug"])
    weights = {"membrane": 0.5, "dna": 0.5, "structure": 1.0}  # dimmer reference channels: the structure stands out
    for index, ((structure, drug), rows) in enumerate(pairs):
        for row in rows.sort_values("step").itertuples():
            cell = np.asarray(array[int(row.store_index), :3], dtype=np.float32)
            views = ((cell.max(axis=1), (0, width * voxel, 0, height * voxel)),   # xy: max along z
                     (cell.max(axis=3), (0, height * voxel, 0, depth * voxel)))   # yz: max along x
            for offset, (plane, extent) in enumerate(views):
                axis = axes[2 * index + offset, row.step]
                axis.imshow(composite({name: weights[name] * plane[c] for c, name in enumerate(weights)}),
                            extent=extent, origin="lower", interpolation="nearest")
                axis.tick_params(labelsize=6, length=2, labelbottom=row.step == 0, labelleft=row.step == 0)
            axes[2 * index, row.step].set_title(f"t = {row.position:.2f}: {treatment_label(row.cell_drug)}\n"
                                                f"(at {row.projection:.2f})",
                                                fontsize=7)
        test = target.loc[(structure, drug)] if (structure, drug) in target.index else None
        control = "control" if test is None or "control" not in test else treatment_label(test["control"])
        label = f"{structure}\n{control} → {drug}"
        label += "" if test is None else f"\np_bonf = {test['p_bonferroni']:.2g}"
        axes[2 * index, 0].set_ylabel(f"{label}\nxy: y (µm)", fontsize=7)
        axes[2 * index, 0].set_xlabel("x (µm)", fontsize=6, labelpad=1)
        axes[2 * index + 1, 0].set_ylabel("yz: z (µm)", fontsize=7)
        axes[2 * index + 1, 0].set_xlabel("y (µm)", fontsize=6, labelpad=1)
    figure.suptitle("Real drug-set cells nearest to evenly spaced steps t from the untreated (t = 0) to the treated "
                    "(t = 1) centroid\nin the target latent space; xy: max projection along z, yz: along x. Membrane "
                    "(magenta), DNA (blue), structure (yellow)", fontsize=8)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    plt.close(figure)
