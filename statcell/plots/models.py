"""The model check: test cells beside their reconstructions, and each model's KL per latent dimension, drawn from
what ``check-models`` writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.plots.style import composite, pyplot, save

#: KL (nats) above which the panel titles count a dimension as used.
USED_KL_NATS = 0.6


def plot_model_check(kl: pd.DataFrame, images: Mapping[str, np.ndarray], output: str | Path, *,
                     dpi: int = 80) -> None:
    """Test cells and their reconstructions by both models (max projections), and the ranked KL per dimension.

    Parameters
    ----------
    kl : DataFrame
        ``kl_per_dimension.csv`` of :func:`statcell.analysis.model_check.check_models`.
    images : mapping
        ``model_check.npz``: ``real``, ``reference``, ``target`` projections and ``structure`` names.
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    plt = pyplot()
    real, rebuilt_reference, rebuilt_target = images["real"], images["reference"], images["target"]
    shown = len(real)
    figure = plt.figure(figsize=(11, 2.0 * shown + 3.2))
    grid = figure.add_gridspec(shown + 1, 4, height_ratios=[1.0] * shown + [1.6])
    titles = ("input: membrane, DNA", "reference model", "input: structure", "target model")
    for row in range(shown):
        panels = (composite({"membrane": real[row, 0], "dna": real[row, 1]}),
                  composite({"membrane": rebuilt_reference[row, 0], "dna": rebuilt_reference[row, 1]}),
                  real[row, 2], rebuilt_target[row, 0])
        for column, panel in enumerate(panels):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=9)
            if column == 0:
                axis.set_ylabel(str(images["structure"][row]), fontsize=8)
    for column, name in enumerate(("reference", "target")):
        axis = figure.add_subplot(grid[-1, 2 * column:2 * column + 2])
        values = kl.loc[kl["model"] == name, "kl"].to_numpy()
        axis.bar(np.arange(len(values)), values, color="0.3")
        axis.set_yscale("log")
        axis.set_xlabel("latent dimension (ranked by KL)")
        axis.set_ylabel("mean KL on test cells (nats)")
        axis.set_title(f"{name} model: {int((values > USED_KL_NATS).sum())} of {len(values)} dimensions above "
                       f"{USED_KL_NATS:g} nats", fontsize=9)
    figure.suptitle("Test cells (max projections along z, after normalization) and their reconstructions "
                    "from the posterior mean", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    save(figure, output, dpi=dpi)
