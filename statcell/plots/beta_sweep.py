"""β-sweep figures (paper Fig 3A–C, S6a/b, S8), drawn from the tables and images of ``analyze-beta-sweep``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.beta_sweep import EVAL_SPLIT
from statcell.plots.style import composite, pyplot, save, scale_bar

#: Colour map of β in every sweep figure (β = 0 dark blue, β = 1 yellow, as in the paper).
BETA_COLORMAP = "viridis"


def _beta_colours(betas: np.ndarray):
    """A scalar mappable of β on [0, 1] (for colour bars) and the colour of each β."""
    from matplotlib import cm, colors

    mappable = cm.ScalarMappable(norm=colors.Normalize(0.0, 1.0), cmap=BETA_COLORMAP)
    return mappable, [mappable.to_rgba(beta) for beta in betas]


def plot_rate_distortion(rate_distortion: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Rate and distortion on the test cells against β, and rate against distortion (paper Fig 3A).

    Parameters
    ----------
    rate_distortion : DataFrame
        The ``rate_distortion`` table of :func:`statcell.analysis.beta_sweep.analyze_beta_sweep`.
    output : path
        PNG to write; an SVG is written beside it.
    dpi : int
        Resolution of the PNG.
    """
    plt = pyplot()
    table = rate_distortion.sort_values("beta")
    mappable, colours = _beta_colours(table["beta"].to_numpy())
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.0), constrained_layout=True)
    for axis, column, label in ((axes[0], "rate", "rate: mean KL(q(z|x) ‖ p(z)) (nats)"),
                                (axes[1], "distortion", "distortion: mean SSE (intensity²)")):
        axis.plot(table["beta"], table[column], color="0.6", zorder=1)
        axis.scatter(table["beta"], table[column], c=colours, s=40, zorder=2, edgecolors="k", linewidths=0.5)
        axis.set_xlabel("β")
        axis.set_ylabel(label)
        axis.set_title(f"{column.capitalize()} against β")
    axis = axes[2]
    axis.plot(table["distortion"], table["rate"], color="0.6", zorder=1)
    axis.scatter(table["distortion"], table["rate"], c=colours, s=40, zorder=2, edgecolors="k", linewidths=0.5)
    best = table.loc[table["elbo"].idxmax()]
    total = best["rate"] + best["distortion"]
    span = np.linspace(0, total, 50)
    axis.plot(span, total - span, ":", color="0.5", label=f"rate + distortion of the best ELBO (β = {best['beta']:g})")
    axis.set_xlim(0, table["distortion"].max() * 1.08)
    axis.set_ylim(0, table["rate"].max() * 1.08)
    axis.set_xlabel("distortion: mean SSE (intensity²)")
    axis.set_ylabel("rate: mean KL (nats)")
    axis.set_title("Rate against distortion")
    axis.legend(fontsize=8, loc="upper right")
    figure.colorbar(mappable, ax=axis, label="β")
    figure.suptitle(f"β sweep of 2D reference models: the two ELBO terms on {int(table['test_cells'].iloc[0])} "
                    "test cells")
    save(figure, output, dpi=dpi)


def _projection_rgb(image: np.ndarray) -> np.ndarray:
    """Membrane and DNA of a 2D ``(2, Y, X)`` image (or a 3D one, max-projected) as an RGB composite, clipped to
    [0, 1] without rescaling so intensities compare across panels."""
    planes = np.clip(image if image.ndim == 3 else image.max(axis=1), 0.0, 1.0)
    return composite({"membrane": planes[0], "dna": planes[1]})


def plot_generated(generated: Mapping[str, np.ndarray], rate_distortion: pd.DataFrame, output: str | Path, *,
                   dpi: int, columns: int = 8) -> None:
    """Observed cells, then cells generated from the prior of each model, one row per β (paper Fig 3B, 3C).

    Parameters
    ----------
    generated : mapping
        ``generated.npz`` of ``analyze-beta-sweep``: ``generated`` ``(models, n, 2, Y, X)`` membrane and DNA images
        drawn from each model's prior (rows in the order of the ``rate_distortion`` table), ``observed``
        ``(m, 2, Y, X)`` real test cells shown in the first row, and ``spacing`` (µm) for the scale bar.
    rate_distortion : DataFrame
        The ``rate_distortion`` table (its ``beta`` labels the rows).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        Resolution of the PNG.
    columns : int
        Cells shown per row.
    """
    betas, observed = rate_distortion["beta"].tolist(), generated["observed"]
    pixel_um = float(generated["spacing"][-1])
    generated = generated["generated"]
    if len(generated) != len(betas):
        raise ValueError(f"{len(generated)} rows of generated cells but {len(betas)} β values")
    plt = pyplot()
    columns = min(columns, generated.shape[1])
    rows = [("observed\n(test cells)", observed[:columns])]
    rows += [(f"β = {beta:.2f}", images[:columns]) for beta, images in zip(betas, generated)]
    height, width = generated.shape[-2:]
    panel = 1.1  # inches per panel row
    margins = {"left": 0.9, "right": 0.1, "top": 0.75, "bottom": 0.1}  # inches
    size = (margins["left"] + margins["right"] + columns * panel * width / height * 1.05,
            margins["top"] + margins["bottom"] + len(rows) * panel * 1.08)
    figure, axes = plt.subplots(len(rows), columns, squeeze=False, figsize=size)
    figure.subplots_adjust(left=margins["left"] / size[0], right=1 - margins["right"] / size[0],
                           top=1 - margins["top"] / size[1], bottom=margins["bottom"] / size[1], wspace=0.05,
                           hspace=0.08)
    for row, (label, images) in zip(axes, rows):
        for column, axis in enumerate(row):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(images):
                axis.imshow(_projection_rgb(images[column]))
            else:
                axis.set_axis_off()
        row[0].set_ylabel(label, fontsize=9)
    scale_bar(axes[0, 0], length_um=5.0, pixel_um=pixel_um, shape=(height, width))
    figure.suptitle("Cells generated from the prior of each 2D reference model\n(same latent draws in every row; "
                    "maximum projections: membrane magenta, DNA blue)", fontsize=10)
    save(figure, output, dpi=dpi)


def _plot_ranked_kl(axis, kl_per_dimension: pd.DataFrame, *, threshold: float | None) -> None:
    """Mean KL of each test-cell latent dimension against its rank, one line per β."""
    table = kl_per_dimension[kl_per_dimension["split"] == EVAL_SPLIT]
    betas = np.sort(table["beta"].unique())
    mappable, colours = _beta_colours(betas)
    for beta, colour in zip(betas, colours):
        rows = table[table["beta"] == beta].sort_values("rank")
        axis.plot(rows["rank"] + 1, rows["kl"].clip(lower=1e-4), color=colour, marker=".", markersize=3)
    if threshold is not None:
        axis.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"{threshold:g} nats: important")
        axis.legend(fontsize=8, loc="upper right")
    axis.set_yscale("log")
    axis.set_xlabel("latent dimension rank (by mean KL)")
    axis.set_ylabel("mean KL on test cells (nats)")
    axis.figure.colorbar(mappable, ax=axis, label="β")


def plot_kl(kl: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Mean KL per latent dimension against β, and ranked per β (paper S6a, S6b).

    Parameters
    ----------
    kl : DataFrame
        The ``kl`` table of :func:`statcell.analysis.beta_sweep.analyze_beta_sweep` (test cells are shown).
    output : path
        PNG to write; an SVG is written beside it.
    dpi : int
        Resolution of the PNG.
    """
    plt = pyplot()
    test = kl[kl["split"] == EVAL_SPLIT]
    average = test.groupby("beta")["kl"].mean()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.0), constrained_layout=True)
    axes[0].plot(average.index, average.to_numpy(), "o-", color="0.2")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("β")
    axes[0].set_ylabel("mean KL per dimension (nats)")
    axes[0].set_title("a) KL per latent dimension, averaged over dimensions")
    _plot_ranked_kl(axes[1], kl, threshold=None)
    axes[1].set_title("b) KL per latent dimension, ranked")
    figure.suptitle("Sparsity of the 2D reference latent space across β (test cells)")
    save(figure, output, dpi=dpi)


def plot_regression(kl: pd.DataFrame, regression: pd.DataFrame, feature_pcs: pd.DataFrame,
                    output: str | Path, *, threshold: float, dpi: int) -> None:
    """Important dimensions, the feature PCA and the R² of predicting each PC from them, across β (paper S8).

    Parameters
    ----------
    kl, regression, feature_pcs : DataFrame
        Tables of :func:`statcell.analysis.beta_sweep.analyze_beta_sweep`.
    output : path
        PNG to write; an SVG is written beside it.
    threshold : float
        KL (nats) above which a dimension is important.
    dpi : int
        Resolution of the PNG.
    """
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    _plot_ranked_kl(axes[0, 0], kl, threshold=threshold)
    axes[0, 0].set_title("a) Ranked mean KL per latent dimension")

    ratios = feature_pcs.groupby("pc")["explained_variance_ratio"].first()
    axis = axes[0, 1]
    axis.bar(ratios.index, ratios.to_numpy(), color="0.4", label="each PC")
    axis.plot(ratios.index, ratios.cumsum().to_numpy(), "o-", color="C3", label="cumulative")
    axis.set_xticks(ratios.index)
    axis.set_xlabel("principal component of the 14 z-scored features")
    axis.set_ylabel("explained variance ratio (training cells)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    axis.set_title("b) Feature PCA, fitted on training cells")

    loadings = feature_pcs.pivot(index="feature", columns="pc", values="loading")
    loadings = loadings.loc[feature_pcs["feature"].drop_duplicates()]
    axis = axes[1, 0]
    limit = float(np.abs(loadings.to_numpy()).max())
    image = axis.imshow(loadings.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(range(loadings.shape[1]), [f"PC {pc}" for pc in loadings.columns])
    axis.set_yticks(range(loadings.shape[0]), loadings.index, fontsize=8)
    figure.colorbar(image, ax=axis, label="loading")
    axis.set_title("c) Feature loadings of the top PCs")

    axis = axes[1, 1]
    per_pc = regression[regression["pc"] > 0]
    for pc, rows in per_pc.groupby("pc"):
        axis.plot(rows["beta"], rows["r2"], "o-", color=f"C{(pc - 1) % 10}", label=f"PC {pc}")
    total = regression[regression["pc"] == 0].sort_values("beta")
    axis.plot(total["beta"], total["r2"], "k:", marker="s", label="total: Σ R²·variance ratio")
    axis.axhline(float(total["explained_variance_ratio"].iloc[0]), color="0.6", linewidth=0.8,
                 label="maximum (variance of the PCs)")
    axis.set_xticks(total["beta"], [f"{beta:.2f}\n({int(dims)})" for beta, dims in
                                    total[["beta", "dimensions"]].to_numpy()], fontsize=8)
    axis.set_xlabel("β (important dimensions on training cells)")
    axis.set_ylabel("R² on test cells")
    axis.legend(fontsize=8, ncol=2)
    axis.set_title("d) R² of linear regressions: important dimensions → PC")
    figure.suptitle("Important latent dimensions of the 2D reference models and the features they predict")
    save(figure, output, dpi=dpi)


def plot_generated_features(generated_features: pd.DataFrame, features: pd.DataFrame, output: str | Path, *,
                            dpi: int) -> None:
    """The 14 features of the generated cells against β, each cell linked across β (paper Fig 3D, S7).

    Every β decodes the same latent draws, so a grey line follows one draw from β to β; the coloured line is the
    median over draws, and the band at the right the real test cells' interquartile range with their median.

    Parameters
    ----------
    generated_features : DataFrame
        ``generated_features.parquet`` of ``analyze-beta-sweep`` (``beta``, ``cell`` and the 14 features).
    features : DataFrame
        ``features.parquet`` of ``analyze-beta-sweep`` (real cells: ``split`` and the 14 features).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        Resolution of the PNG.
    """
    from statcell.analysis.features import FEATURE_NAMES

    plt = pyplot()
    names = list(FEATURE_NAMES)
    betas = np.sort(generated_features["beta"].unique())
    real = features[features["split"] == EVAL_SPLIT]
    figure, axes = plt.subplots(2, 7, figsize=(19, 6.2), constrained_layout=True)
    _, colours = _beta_colours(betas)
    right = betas.max() + 0.12
    for axis, name in zip(axes.ravel(), names):
        wide = generated_features.pivot(index="cell", columns="beta", values=name).reindex(columns=betas)
        for _, values in wide.iterrows():
            axis.plot(betas, values.to_numpy(), color="0.45", linewidth=0.6, alpha=0.5, zorder=1)
        axis.plot(betas, wide.median(axis=0).to_numpy(), color="k", linewidth=1.5, zorder=3)
        axis.scatter(betas, wide.median(axis=0).to_numpy(), c=colours, s=25, edgecolors="k", linewidths=0.5,
                     zorder=4)
        observed = real[name].dropna()
        if len(observed):
            low, middle, high = np.percentile(observed, [25, 50, 75])
            axis.fill_between([right - 0.05, right + 0.05], low, high, color="tab:orange", alpha=0.4, zorder=2)
            axis.plot([right - 0.05, right + 0.05], [middle, middle], color="tab:orange", linewidth=2, zorder=2)
        axis.set_xlim(betas.min() - 0.05, right + 0.08)
        axis.set_xticks([*np.round(betas, 2), right], [*(f"{beta:.2f}" for beta in betas), "real"], fontsize=7,
                        rotation=90)
        axis.set_title(name.replace("_", " "), fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    figure.suptitle(f"The 14 features of {wide.shape[0]} cells generated from each 2D reference model's prior, "
                    f"against β (grey: one latent draw followed across β; black: median; orange: "
                    f"{len(real)} real test cells, median and quartiles)", fontsize=10)
    save(figure, output, dpi=dpi)
