"""The feature figure (paper Fig 3D, S7): the 14 features of real and generated cells, from ``measure-features``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from statcell.analysis.features import FEATURE_NAMES
from statcell.plots.style import pyplot, save

#: Colour of each source of cells: real (red, as in the paper), reconstructed and drawn from the prior.
SOURCE_COLOURS: dict[str, str] = {"real": "#d62728", "reconstruction": "#1f77b4", "prior": "#17becf"}


def _axis_label(name: str, ndim: int) -> str:
    region, quantity = name.split("_", 1)
    names3d = {"volume": "volume (µm³)", "surface": "surface area (µm²)", "sphericity": "sphericity"}
    names2d = {"volume": "area (µm²)", "surface": "perimeter (µm)", "sphericity": "circularity"}
    shape = names3d if ndim == 3 else names2d
    label = shape.get(quantity, {"entropy": "intensity entropy (bits)"}.get(quantity, f"intensity {quantity} (a.u.)"))
    return f"{region} {label}"


def plot_feature_violins(features: pd.DataFrame, output: str | Path, *, ndim: int = 3, dpi: int = 150) -> None:
    """Fig 3D / S7: the 14 features of real cells (red) and generated cells, one violin per source.

    Parameters
    ----------
    features : DataFrame
        From :func:`statcell.analysis.features.measure_features`.
    output : path
        PNG to write (an SVG is written beside it).
    ndim : {2, 3}
        Dimensionality of the measured images (axis labels: volume or area, ...).
    dpi : int
        PNG resolution.
    """
    plt = pyplot()
    sources = [source for source in SOURCE_COLOURS if source in set(features["source"])]
    figure, axes = plt.subplots(2, 7, figsize=(17, 6.2))
    for axis, name in zip(axes.ravel(), FEATURE_NAMES):
        values = [features.loc[features["source"] == source, name].dropna().to_numpy() for source in sources]
        shown = [k for k, v in enumerate(values) if len(v) > 1]
        parts = axis.violinplot([values[k] for k in shown], positions=shown, showmedians=True, widths=0.8)
        for body, k in zip(parts["bodies"], shown):
            body.set_facecolor(SOURCE_COLOURS[sources[k]])
            body.set_edgecolor("black")
            body.set_alpha(0.7)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            parts[key].set_color("black")
            parts[key].set_linewidth(0.8)
        axis.set_xticks(range(len(sources)), [f"{s}\n(n={len(v)})" for s, v in zip(sources, values)], fontsize=7)
        axis.set_ylabel(_axis_label(name, ndim), fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
        axis.set_title(name.replace("_", " "), fontsize=9)
    figure.suptitle("Features of real test cells (red) and generated cells: reconstructions of the same cells and "
                    "draws from the reference prior", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    save(figure, output, dpi=dpi)
