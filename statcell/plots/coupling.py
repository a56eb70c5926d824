"""Coupling figures (paper Fig 5A/B), drawn from the tables of ``measure-coupling``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.coupling import NOT_MEASURED, PHASES, UNANNOTATED
from statcell.plots.style import CHANNEL_COLOURS, pyplot, save


def plot_coupling_cells(per_cell: pd.DataFrame, output: str | Path, *, dpi: int = 150) -> None:
    """Fig 5A: membrane against nucleus coupling of every measured cell, coloured by structure.

    Parameters
    ----------
    per_cell : DataFrame
        The table of :func:`statcell.analysis.coupling.measure_coupling`.
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    plt = pyplot()
    structures = sorted(per_cell["structure"].unique())
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(structures)] if len(structures) <= 20 else \
        plt.get_cmap("turbo")(np.linspace(0, 1, len(structures)))
    figure, axis = plt.subplots(figsize=(9.5, 6.5))
    values = per_cell[["membrane_coupling", "nucleus_coupling"]].to_numpy()
    low, high = min(0.0, values.min()), values.max()
    pad = 0.05 * (high - low or 1.0)
    limits = (low - pad, high + pad)
    axis.plot(limits, limits, color="0.6", linestyle="--", linewidth=1, label="equal coupling")
    axis.axhline(0, color="0.85", linewidth=0.8, zorder=0)
    axis.axvline(0, color="0.85", linewidth=0.8, zorder=0)
    for colour, structure in zip(colours, structures, strict=True):
        labelled = False
        for phase, marker in zip((*PHASES, UNANNOTATED), ("o", "^", "o"), strict=True):
            cells = per_cell[(per_cell["structure"] == structure) & (per_cell["phase"] == phase)]
            if len(cells):
                axis.scatter(cells["membrane_coupling"], cells["nucleus_coupling"], s=55 if phase == "mitosis"
                             else 30, marker=marker, color=colour, edgecolor="k" if phase == "mitosis" else "none",
                             linewidth=0.6, alpha=0.85, label=None if labelled else structure)
                labelled = True
    if (per_cell["phase"] == "mitosis").any():
        axis.scatter([], [], marker="^", color="white", edgecolor="k", s=55, label="(triangle: mitotic cell)")
    elif (per_cell["phase"] == UNANNOTATED).all():
        axis.scatter([], [], marker="o", color="white", s=0, label="(no mitotic annotation)")
    axis.set_xlim(limits)
    axis.set_ylim(limits)
    axis.set_aspect("equal")
    axis.set_xlabel("membrane coupling  log(mean swapped ELBO / ELBO)  (dimensionless)")
    axis.set_ylabel("nucleus coupling  log(mean swapped ELBO / ELBO)  (dimensionless)")
    splits = ", ".join(sorted(per_cell["split"].unique()))
    axis.set_title(f"Coupling of each structure to the cell membrane and the nucleus\n{len(per_cell)} cells "
                   f"({splits} splits); >0: the structure is explained worse with another cell's channel",
                   fontsize=10)
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, title="structure",
                title_fontsize=9)
    figure.tight_layout()
    save(figure, output, dpi=dpi)


def plot_coupling_structures(summary: pd.DataFrame, output: str | Path, *, dpi: int = 150) -> None:
    """Fig 5B: the normalized difference of membrane and nucleus coupling per structure, interphase and mitosis.

    Parameters
    ----------
    summary : DataFrame
        The table of :func:`statcell.analysis.coupling.summarize_structures`.
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """

    plt = pyplot()
    phases = [phase for phase in (*PHASES, UNANNOTATED) if (summary["phase"] == phase).any()]
    called = "interphase" if "interphase" in phases else phases[0]  # the phase whose calls are printed
    interphase = summary[summary["phase"] == called].set_index("structure")
    order = sorted(summary["structure"].unique(),
                   key=lambda name: interphase["normalized_difference"].get(name, np.nan))
    figure, axis = plt.subplots(figsize=(9.0, 0.42 * len(order) + 1.8))
    height = 0.76 / len(phases)
    phase_colours = {"interphase": "#9c6b3f", "mitosis": "#3b75af", UNANNOTATED: "0.45"}
    offsets = height * (np.arange(len(phases))[::-1] - (len(phases) - 1) / 2)
    for offset, phase in zip(offsets, phases, strict=True):
        rows = summary[summary["phase"] == phase].set_index("structure").reindex(order)
        shown = rows["n_cells"].notna().to_numpy()
        positions = np.arange(len(order))[shown] + offset
        rows = rows[shown]
        errors = np.abs(rows[["normalized_difference_ci_low", "normalized_difference_ci_high"]].to_numpy().T
                        - rows["normalized_difference"].to_numpy())
        axis.barh(positions, rows["normalized_difference"], height=height, color=phase_colours[phase],
                  xerr=np.nan_to_num(errors), error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"},
                  label=f"{'all cells, no mitotic annotation' if phase == UNANNOTATED else phase} "
                  "(n cells in brackets)")
        for position, (value, count) in zip(positions, rows[["normalized_difference", "n_cells"]].to_numpy(),
                                            strict=True):
            axis.text(1.07, position, f"({int(count)})", va="center", fontsize=6.5, color=phase_colours[phase])
    call_colour = {"membrane": CHANNEL_COLOURS["membrane"], "nucleus": CHANNEL_COLOURS["dna"], "both": "0.1",
                   "neither": "0.5", "undetermined": "0.7", NOT_MEASURED: "0.7"}
    for position, name in enumerate(order):
        call = interphase["couples_to"].get(name, "undetermined")
        axis.text(1.2, position, call, va="center", fontsize=8, color=call_colour[call])
    axis.axvline(0, color="0.3", linewidth=0.8)
    axis.set_yticks(np.arange(len(order)), order, fontsize=9)
    axis.set_xlim(-1.05, 1.05)
    axis.set_ylim(-0.6, len(order) - 0.4)
    axis.set_xlabel("normalized difference (c_membrane − c_nucleus) / (|c_membrane| + |c_nucleus|)\n"
                    "−1: coupled to the nucleus only     +1: coupled to the membrane only")
    level = 100 * float(summary["ci_level"].iloc[0])
    call_name = "interphase" if called == "interphase" else "all-cell" if called == UNANNOTATED else called
    axis.set_title(f"Differential coupling per structure (mean over cells, Eq 5; {level:g}% bootstrap intervals)\n"
                   f"right: {call_name} call, each cell's own ELBO ranked among its swapped ones:\n"
                   "mean ranks above 1/2 by a one-sided t-test, FOVs as clusters, Holm-corrected", fontsize=10)
    axis.text(1.2, len(order) - 0.45, f"{call_name}\ncall", va="bottom", fontsize=8, fontweight="bold")
    from matplotlib.transforms import ScaledTranslation

    below_label = axis.transAxes + ScaledTranslation(0, -0.62, figure.dpi_scale_trans)  # under the 2-line x label
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below_label, ncol=2, fontsize=8,
                frameon=False)
    figure.tight_layout()
    figure.subplots_adjust(right=0.8)
    save(figure, output, dpi=dpi)
