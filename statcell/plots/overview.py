"""The colony overview: the input FOVs at a glance, drawn from the projections ``project-colony`` writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.plots.style import ROLES, composite, display_range, pyplot, save, scale_bar


def plot_colony_overview(fovs: Mapping[str, np.ndarray], output: str | Path, *, dpi: int = 60) -> pd.DataFrame:
    """Gallery of the first FOV of every (structure, treatment): composite and structure max projections, xz section.

    Parameters
    ----------
    fovs : mapping
        ``projections.npz`` of :func:`statcell.analysis.overview.colony_projections`.
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.

    Returns
    -------
    DataFrame
        The FOVs shown (``fov_id``, ``structure``, ``drug``), one row per panel row.
    """
    plt = pyplot()
    shown = pd.DataFrame({name: fovs[name] for name in ("fov_id", "structure", "drug")})
    figure, axes = plt.subplots(len(shown), 3, figsize=(10.5, 3.3 * len(shown)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for k, row in enumerate(axes):
        spacing, drug = fovs["spacing"][k], str(fovs["drug"][k])
        projection = {role: display_range(plane) for role, plane in zip(ROLES, fovs[f"projection_{k}"])}
        section = {role: display_range(plane) for role, plane in zip(ROLES, fovs[f"section_{k}"])}
        treatment = f", {drug} {float(fovs['concentration_um'][k]):g} µM" if drug else ""
        row[0].imshow(composite(projection))
        row[0].set_title(f"{fovs['structure'][k]}{treatment}\nmax projection (z)", fontsize=9)
        row[1].imshow(projection["structure"], cmap="gray")
        row[1].set_title("structure channel, max projection", fontsize=9)
        row[2].imshow(composite(section), aspect=spacing[0] / spacing[2], origin="lower")
        centre = projection["structure"].shape[0] // 2
        row[2].set_title(f"xz section at y = {centre * spacing[1]:.0f} µm", fontsize=9)
        for axis in row[:2]:
            scale_bar(axis, length_um=10, pixel_um=spacing[2], shape=projection["structure"].shape, fontsize=8)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("Input FOVs: membrane (magenta), DNA (blue), structure (yellow)", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    save(figure, output, dpi=dpi)
    return shown
