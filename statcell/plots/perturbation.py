"""Drug-perturbation figures (paper Fig 6C–G), drawn from the tables of ``drug-shifts`` and ``drug-trajectory``
and the trajectory's cell images."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.perturbation import (AUTO_CONTROL, CONTROL, active_dimensions, latent_means, resolve_control,
                                            treatment_label, treatments)
from statcell.plots.style import composite, pyplot, save

#: Colour of each treatment in every drug figure (the control is black), as in the paper.
TREATMENT_COLOURS: dict[str, str] = {"vehicle": "black", "paclitaxel": "#e0529c", "brefeldin_a": "#2f6fd6"}
_OTHER_COLOURS = ("#2ca02c", "#ff7f0e", "#8c564b", "#9467bd", "#17becf")


def treatment_colour(drug: str, drugs: Sequence[str], *, control: str = CONTROL) -> str:
    """Colour of a treatment: black for the control, the paper's for paclitaxel and brefeldin A, else one of a fixed
    cycle."""
    if drug == control:
        return "black"
    others = [name for name in sorted(drugs) if name not in TREATMENT_COLOURS and name != control]
    return TREATMENT_COLOURS.get(drug) or _OTHER_COLOURS[others.index(drug) % len(_OTHER_COLOURS)]


def _treatment_order(drugs: Sequence[str], control: str) -> list[str]:
    return [control] * (control in drugs) + sorted(set(drugs) - {control})


def _p_label(row: pd.Series) -> str:
    """``drug: d = .. (p ..), distribution p .., spread p ..`` of one shift-table row (Holm-corrected FOV-level
    p-values of the centroid, energy-distance and covariance-spectrum tests; * where a test is significant; the
    spread where the table has it), or why it was not tested."""
    if isinstance(row.get("note"), str) and row["note"]:  # wrapped: an untestable shift's note is a sentence
        return textwrap.fill(f"{row['drug']}: {row['note']}", width=60)
    stars = {name: " *" if row.get(column) else "" for name, column in (("centroid", "significant"),
                                                                          ("energy", "energy_significant"),
                                                                          ("spectrum", "spectrum_significant"))}
    spread = (f", spread p {row['spectrum_p_adjusted']:.2g}{stars['spectrum']}"
              if pd.notna(row.get("spectrum_p_adjusted")) else "")
    return (f"{row['drug']}: d = {row['distance']:.2f} (p {row['p_adjusted']:.2g}{stars['centroid']}), "
            f"distribution p {row['energy_p_adjusted']:.2g}{stars['energy']}{spread}")


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
        Table of :func:`statcell.analysis.perturbation.drug_shifts` (its reference-space rows are listed beside
        the plot).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    point_size : float
        Marker area (points²).
    control : str
        The control treatment, or ``auto`` (:func:`statcell.analysis.perturbation.resolve_control`).

    Returns
    -------
    list of int
        The two dimensions shown.
    """
    plt = pyplot()
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
    axis.text(1.02, 0.0, f"centroid shift vs {treatment_label(control)}\n(all active dimensions,\nHolm-corrected "
              "permutation p)\n" + "\n".join(lines), transform=axis.transAxes, fontsize=7, va="bottom")
    axis.set_title("Drug set in the reference latent space (cell and nuclear shape), all structures", fontsize=10)
    save(figure, output, dpi=dpi)
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
    embeddings, cells, dimensions, shifts, output
        As in :func:`plot_drug_reference_latents`, for the target model (the target-space p-values of ``shifts``
        go into the panel titles).
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
    plt = pyplot()
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
                    "nats); p: FOVs relabeled between the arms, Holm-corrected, * significant; distribution: "
                    "energy-distance test; spread: covariance-spectrum test (GILEA's dEIG)",
                    fontsize=9, wrap=True)
    save(figure, output, dpi=dpi)
    return pd.DataFrame(shown)


def plot_drug_trajectory(trajectory: pd.DataFrame, images: Mapping[str, np.ndarray], shifts: pd.DataFrame,
                         output: str | Path, *, dpi: int = 150) -> None:
    """Fig 6G: the trajectory's real cells, xy (max along z) and yz (max along x) projections, composite colours.

    Parameters
    ----------
    trajectory : DataFrame
        Table of :func:`statcell.analysis.perturbation.drug_trajectory`.
    images : mapping
        ``trajectory.npz`` of ``drug-trajectory``: ``images`` ``(N, 3, Z, Y, X)``, the membrane, DNA and structure
        of the table's cells in its row order, and ``spacing`` (µm).
    shifts : DataFrame
        Table of :func:`statcell.analysis.perturbation.drug_shifts` (target-space p-values label the rows).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    plt = pyplot()
    cells, voxel = images["images"], float(images["spacing"][-1])
    trajectory = trajectory.reset_index(drop=True).assign(image=np.arange(len(trajectory)))
    pairs = list(trajectory.groupby(["structure", "drug"], sort=True))
    steps = int(trajectory["step"].max()) + 1
    depth, height, width = cells.shape[-3:]
    figure, axes = plt.subplots(2 * len(pairs), steps, figsize=(1.5 * steps + 1.4, 2.3 * len(pairs) + 0.7),
                                squeeze=False, layout="constrained",
                                gridspec_kw={"height_ratios": [height, depth] * len(pairs)})
    target = shifts[shifts["space"] == "target"].set_index(["structure", "drug"])
    weights = {"membrane": 0.5, "dna": 0.5, "structure": 1.0}  # dimmer reference channels: the structure stands out
    for index, ((structure, drug), rows) in enumerate(pairs):
        for row in rows.sort_values("step").itertuples():
            cell = np.asarray(cells[row.image], dtype=np.float32)
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
        label += "" if test is None else (f"\ncentroid p {test['p_adjusted']:.2g}, distribution p "
                                          f"{test['energy_p_adjusted']:.2g}")
        axes[2 * index, 0].set_ylabel(f"{label}\nxy: y (µm)", fontsize=7)
        axes[2 * index, 0].set_xlabel("x (µm)", fontsize=6, labelpad=1)
        axes[2 * index + 1, 0].set_ylabel("yz: z (µm)", fontsize=7)
        axes[2 * index + 1, 0].set_xlabel("y (µm)", fontsize=6, labelpad=1)
    title = ("Real drug-set cells nearest to evenly spaced steps t from the untreated (t = 0) to the treated (t = 1) "
             "centroid in the target latent space; xy: max projection along z, yz: along x. Membrane (magenta), DNA "
             "(blue), structure (yellow)")
    figure.suptitle(textwrap.fill(title, width=int(16 * figure.get_figwidth())), fontsize=8)  # ~16 characters/inch
    save(figure, output, dpi=dpi)
