"""Latent-space figures (paper Fig 2, S1–S3, S6), drawn from the tables of :mod:`statcell.analysis.latent_space`
and the walks of ``walk-latent-space``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.latent_space import MEASUREMENT_UNITS, imaged, measured, top_dimensions
from statcell.plots.style import composite, pyplot, save
from statcell.vocabulary import MITOTIC_STAGES

log = logging.getLogger(__name__)


def _label(feature: str) -> str:
    """Axis label of a measurement, with its unit."""
    unit = next((unit for suffix, unit in MEASUREMENT_UNITS.items() if feature.endswith(suffix)), "")
    name = feature.replace("_um3", "").replace("_um2", "").replace("_um", "").replace("_", " ")
    return f"{name} ({unit})" if unit else name


def plot_latent_scatter(embeddings: pd.DataFrame, cells: pd.DataFrame, output: str | Path, *,
                        dimensions: pd.DataFrame, point_size: float, colormap: str, dpi: int) -> str:
    """Cells on the top two reference dimensions, coloured by mitotic stage and by cell height (paper Fig 2A/C).

    Without a mitotic annotation (no ``mitotic_stage``, or only ``unknown``: a lab's own FOVs) the first panel is
    coloured by structure instead. Controls built at normalization are left out
    (:func:`statcell.analysis.latent_space.imaged`).

    Parameters
    ----------
    embeddings : DataFrame
        Reference embeddings of the cells drawn.
    cells : DataFrame
        ``cells.parquet`` (``cell_height_um``, and ``mitotic_stage`` where annotated).
    output : path
        PNG to write (an SVG is written beside it).
    dimensions : DataFrame
        Ranked dimensions.
    point_size, colormap, dpi
        Marker area (points²), colormap of the height panel, resolution.

    Returns
    -------
    str
        The column the first panel is coloured by: ``mitotic_stage`` or ``structure``.
    """
    plt = pyplot()
    joined = measured(imaged(embeddings, cells), cells).reset_index(drop=True)
    first, second = top_dimensions(dimensions, 2)
    x, y = joined[f"mu_{first}"], joined[f"mu_{second}"]
    figure, (stage_axis, height_axis) = plt.subplots(1, 2, figsize=(11, 4.6))
    stage_values = joined["mitotic_stage"].fillna("unknown").astype(str) if "mitotic_stage" in joined else None
    coloured_by = "mitotic_stage" if stage_values is not None and (stage_values != "unknown").any() else "structure"
    if coloured_by == "mitotic_stage":
        stages = [stage for stage in MITOTIC_STAGES if stage in set(stage_values)]
        stages += sorted(set(stage_values) - set(stages))
        colours = dict(zip(stages, ["0.75", *plt.get_cmap("tab10").colors]))
        for stage in stages:  # interphase first, underneath
            chosen = stage_values == stage
            stage_axis.scatter(x[chosen], y[chosen], s=point_size * (1 if stage == "interphase" else 2.5),
                               color=colours[stage], edgecolors="none" if stage == "interphase" else "black",
                               linewidths=0.4, label=f"{stage.replace('_', ' / ')} ({int(chosen.sum())})")
        stage_axis.legend(title="mitotic stage (cells)", fontsize=8, title_fontsize=8, loc="best", framealpha=0.7)
        stage_axis.set_title("A  coloured by mitotic stage", loc="left", fontsize=10)
    else:  # no mitotic annotation: the structure classes instead
        structures = sorted(joined["structure"].unique())
        palette = (plt.get_cmap("tab10").colors if len(structures) <= 10 else
                   plt.get_cmap("turbo")(np.linspace(0, 1, len(structures))))
        for colour, structure in zip(palette, structures):
            chosen = joined["structure"] == structure
            stage_axis.scatter(x[chosen], y[chosen], s=point_size, color=colour, edgecolors="none",
                               label=f"{structure} ({int(chosen.sum())})")
        stage_axis.legend(title="structure (cells)", fontsize=7, title_fontsize=8, loc="best", framealpha=0.7)
        stage_axis.set_title("A  coloured by structure (no mitotic annotation)", loc="left", fontsize=10)
        log.info("the cells carry no mitotic annotation: the first panel is coloured by structure")
    order = np.argsort(joined["cell_height_um"].to_numpy())
    points = height_axis.scatter(x.iloc[order], y.iloc[order], c=joined["cell_height_um"].iloc[order], s=point_size,
                                 cmap=colormap, edgecolors="none")
    figure.colorbar(points, ax=height_axis, label="cell height (µm)")
    height_axis.set_title("C  coloured by cell height", loc="left", fontsize=10)
    ranks = dimensions.set_index("dimension")["rank"]
    for axis in (stage_axis, height_axis):
        axis.set_xlabel(f"μ{first} (rank {ranks[first]} by mean |μ|)")
        axis.set_ylabel(f"μ{second} (rank {ranks[second]} by mean |μ|)")
    figure.suptitle(f"Reference latent space: top two dimensions, {len(joined)} cells (all splits)", fontsize=11)
    figure.tight_layout()
    save(figure, output, dpi=dpi)
    return coloured_by


def _decode_png(data: bytes) -> np.ndarray:
    """An RGB(A) float image from PNG bytes (a thumbnail of :mod:`statcell.analysis.thumbnails`)."""
    import io as _io

    from matplotlib.image import imread

    return imread(_io.BytesIO(data))


def plot_latent_examples(embeddings: pd.DataFrame, cells: pd.DataFrame, thumbnails: pd.DataFrame,
                         output: str | Path, *, dimensions: pd.DataFrame, grid_size: int, point_size: float,
                         dpi: int) -> pd.DataFrame:
    """Real cells in place on the top two reference dimensions (paper Fig 2B/2D).

    A regular grid over the latent plane (:func:`statcell.analysis.latent_space.grid_examples`) picks the real cell
    nearest each node; the right panel shows each picked cell's thumbnail (xy maximum projection above its xz view,
    membrane magenta, DNA blue, structure yellow) at its node, the left panel the cells on the plane with the picked
    ones circled. Controls built at normalization are left out.

    Parameters
    ----------
    embeddings : DataFrame
        Reference embeddings.
    cells : DataFrame
        ``cells.parquet`` of the dataset.
    thumbnails : DataFrame
        ``thumbnails.parquet`` of ``make-thumbnails`` (``cell_id``, ``xy_png``, ``xz_png``).
    output : path
        PNG to write (an SVG is written beside it).
    dimensions : DataFrame
        Ranked dimensions.
    grid_size : int
        Grid nodes per axis.
    point_size, dpi
        Marker area (points²) and resolution.

    Returns
    -------
    DataFrame
        The picked cells: :func:`~statcell.analysis.latent_space.grid_examples`'s table with ``cell_id``.
    """
    from statcell.analysis.latent_space import grid_examples

    plt = pyplot()
    joined = imaged(embeddings, cells).reset_index(drop=True)
    joined = joined[joined["cell_id"].isin(set(thumbnails["cell_id"]))].reset_index(drop=True)
    first, second = top_dimensions(dimensions, 2)
    x, y = joined[f"mu_{first}"].to_numpy(), joined[f"mu_{second}"].to_numpy()
    picked = grid_examples(x, y, size=grid_size)
    picked["cell_id"] = joined["cell_id"].to_numpy()[picked["cell"].to_numpy()]
    views = thumbnails.set_index("cell_id")
    figure, (plane, gallery) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1, 1.25]})
    plane.scatter(x, y, s=point_size, color="0.7", edgecolors="none")
    plane.scatter(x[picked["cell"]], y[picked["cell"]], s=point_size * 4, facecolors="none", edgecolors="k",
                  linewidths=0.8)
    ranks = dimensions.set_index("dimension")["rank"]
    plane.set_xlabel(f"μ{first} (rank {ranks[first]} by mean |μ|)")
    plane.set_ylabel(f"μ{second} (rank {ranks[second]} by mean |μ|)")
    plane.set_title(f"B  {len(joined)} cells; circled: the cells shown", loc="left", fontsize=10)
    for row in picked.itertuples():
        xy, xz = (_decode_png(views.at[row.cell_id, column])[..., :3] for column in ("xy_png", "xz_png"))
        width = max(xy.shape[1], xz.shape[1])
        pad = [np.pad(view, ((0, 0), (0, width - view.shape[1]), (0, 0)), constant_values=1.0) for view in (xy, xz)]
        tile = np.vstack([pad[0], np.ones((1, width, 3)), pad[1]])
        scale = 0.9 / max(tile.shape[:2])
        half_w, half_h = tile.shape[1] * scale / 2, tile.shape[0] * scale / 2
        gallery.imshow(tile, extent=(row.column - half_w, row.column + half_w, -row.row - half_h, -row.row + half_h),
                       interpolation="nearest")
    gallery.set_xlim(-0.55, grid_size - 0.45)
    gallery.set_ylim(-grid_size + 0.45, 0.55)
    gallery.set_xticks([])
    gallery.set_yticks([])
    gallery.set_xlabel(f"μ{first} →")
    gallery.set_ylabel(f"μ{second} →")
    gallery.set_title("D  the cell nearest each grid node (xy projection above xz)", loc="left", fontsize=10)
    figure.suptitle("Reference latent space: real cells in place on the top two dimensions", fontsize=11)
    figure.tight_layout()
    save(figure, output, dpi=dpi)
    return picked


def plot_latent_pairs(embeddings: pd.DataFrame, output: str | Path, *, dimensions: pd.DataFrame, count: int = 4,
                      point_size: float, dpi: int, split: str | None = "test") -> None:
    """Pairwise scatter plots of the top reference dimensions, with their marginal histograms (paper S1 Fig).

    Parameters
    ----------
    embeddings : DataFrame
        Reference embeddings.
    output : path
        PNG to write (an SVG is written beside it).
    dimensions : DataFrame
        Ranked dimensions.
    count : int
        Dimensions shown.
    point_size, dpi
        Marker area (points²), resolution.
    split : str, optional
        The cells drawn: those of this split (default the test cells), or all cells (None).
    """
    plt = pyplot()
    chosen = top_dimensions(dimensions, count)
    drawn = embeddings if split is None else embeddings[embeddings["split"] == split]
    values = drawn[[f"mu_{d}" for d in chosen]].to_numpy()
    limit = float(np.abs(values).max()) * 1.05
    figure, axes = plt.subplots(count, count, figsize=(2.3 * count, 2.3 * count), squeeze=False)
    grid = np.linspace(-limit, limit, 200)
    for i in range(count):
        for j in range(count):
            axis = axes[i, j]
            if i == j:
                axis.hist(values[:, i], bins=20, range=(-limit, limit), density=True, color="0.4")
                centre, spread = values[:, i].mean(), values[:, i].std()
                axis.plot(grid, np.exp(-0.5 * ((grid - centre) / spread) ** 2) / (spread * np.sqrt(2 * np.pi)),
                          color="C3", linewidth=1, label="normal, same mean and SD")
                axis.set_ylabel("density" if j == 0 else "")
                if i == 0:
                    axis.legend(fontsize=6, loc="upper left")
            else:
                axis.scatter(values[:, j], values[:, i], s=point_size / 2, color="0.25", edgecolors="none")
                axis.set_ylim(-limit, limit)
                if j == 0:
                    axis.set_ylabel(f"μ{chosen[i]}")
            axis.set_xlim(-limit, limit)
            if i == count - 1:
                axis.set_xlabel(f"μ{chosen[j]}")
            axis.tick_params(labelsize=7)
    figure.suptitle(f"Top {count} reference latent dimensions (ranked by mean |μ|), {len(values)} test cells; "
                    "diagonal: marginal histograms", fontsize=10)
    figure.tight_layout()
    save(figure, output, dpi=dpi)


def _walk_panel(volume: np.ndarray, *, scale: np.ndarray) -> np.ndarray:
    """An RGB panel of one reference image ``(2, Z, Y, X)``: max projection along z (top) over one along y.

    ``scale`` holds each channel's display maximum, shared by all panels of a figure.
    """
    clipped = np.clip(volume / scale[:, None, None, None], 0, 1)
    top = composite({"membrane": clipped[0].max(axis=0), "dna": clipped[1].max(axis=0)})
    side = composite({"membrane": clipped[0].max(axis=1)[::-1], "dna": clipped[1].max(axis=1)[::-1]})
    gap = np.ones((1, top.shape[1], 3), dtype=np.float32)
    return np.concatenate([top, gap, side])


def plot_latent_walks(walks: Mapping[str, np.ndarray], correlations: pd.DataFrame, output: str | Path, *,
                      dpi: int) -> None:
    """Images decoded along the top reference dimensions, one row per dimension (paper Fig 2E/F, S2 Fig).

    Parameters
    ----------
    walks : dict of str to ndarray
        From :func:`statcell.analysis.latent_space.walk_latent_space`.
    correlations : DataFrame
        From :func:`statcell.analysis.latent_space.feature_correlations`; each row is labelled with the dimension's
        most correlated measurement.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = pyplot()
    images, offsets = walks["images"], walks["sd_offsets"]
    rows, columns = images.shape[:2]
    scale = np.maximum(np.percentile(images, 99.8, axis=(0, 1, 3, 4, 5)), 1e-6)  # per channel, whole figure
    panel_shape = _walk_panel(images[0, 0], scale=scale).shape
    figure, axes = plt.subplots(rows, columns, squeeze=False,
                                figsize=(1.1 * columns * panel_shape[1] / 24 + 1.6, 1.1 * rows * panel_shape[0] / 24
                                         + 0.9))
    for row in range(rows):
        dimension = int(walks["dimension"][row])
        mine = correlations[correlations["dimension"] == dimension].dropna(subset=["spearman"])
        best = mine.loc[mine["spearman"].abs().idxmax()] if len(mine) else None
        for column in range(columns):
            axis = axes[row, column]
            axis.imshow(_walk_panel(images[row, column], scale=scale), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"{offsets[column]:+.1f} SD", fontsize=8)
        label = f"μ{dimension} (rank {int(walks['rank'][row])})"
        if best is not None:
            label += f"\n{_label(best['feature'])}\nρ = {best['spearman']:+.2f}"
        axes[row, 0].set_ylabel(label, fontsize=7)
    figure.suptitle("Latent walks of the reference model (other dimensions at 0): membrane magenta, DNA blue;\n"
                    "each panel: max projection along z (top), along y (bottom, z up); one display range per channel "
                    "for all panels", fontsize=9)
    figure.tight_layout()
    save(figure, output, dpi=dpi)


def _cluster_order(matrix: np.ndarray) -> np.ndarray:
    """Row order of a hierarchical clustering (average linkage, correlation-profile distance) of a matrix."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    if len(matrix) < 3:
        return np.arange(len(matrix))
    return leaves_list(linkage(np.nan_to_num(matrix), method="average", metric="euclidean", optimal_ordering=True))


def plot_latent_correlations(correlations: pd.DataFrame, dimensions: pd.DataFrame, pca: pd.DataFrame,
                             dimension_correlations: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Four panels of paper S3 Fig: Spearman heatmap, MAD per dimension, feature PCA, correlation among dimensions.

    Parameters
    ----------
    correlations : DataFrame
        From :func:`statcell.analysis.latent_space.feature_correlations`.
    dimensions : DataFrame
        Ranked dimensions (``dimension``, ``mad``, ``rank``).
    pca : DataFrame
        From :func:`statcell.analysis.latent_space.feature_pca`.
    dimension_correlations : DataFrame
        From :func:`statcell.analysis.latent_space.dimension_correlations`.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = pyplot()
    heat = correlations.pivot(index="feature", columns="rank", values="spearman").sort_index(axis=1)
    heat = heat.iloc[_cluster_order(heat.to_numpy())]
    dims_by_rank = correlations.drop_duplicates("rank").set_index("rank")["dimension"]
    figure = plt.figure(figsize=(14, 10))
    grid = figure.add_gridspec(2, 3, height_ratios=[1.15, 1], width_ratios=[1.3, 0.8, 1])
    axis = figure.add_subplot(grid[0, :])
    image = axis.imshow(heat.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    axis.set_yticks(range(len(heat)), [_label(name) for name in heat.index], fontsize=7)
    axis.set_xticks(range(heat.shape[1]), [f"μ{dims_by_rank[r]}" for r in heat.columns], fontsize=7, rotation=90)
    axis.set_xlabel("latent dimension, by rank of mean |μ| (left = rank 1)")
    n_cells = int(correlations["n_cells"].max())
    axis.set_title(f"a  Spearman correlation of the top {heat.shape[1]} reference dimensions with cell "
                   f"measurements ({n_cells} test cells; measurements hierarchically clustered)", loc="left",
                   fontsize=10)
    figure.colorbar(image, ax=axis, label="Spearman ρ", fraction=0.03, pad=0.01)

    axis = figure.add_subplot(grid[1, 0])
    ranked = dimensions.sort_values("rank")
    axis.bar(ranked["rank"], ranked["mad"], color="0.35", width=0.8)
    axis.set_xlabel("latent dimension rank")
    axis.set_ylabel("mean |μ| over test cells")
    axis.set_title("b  mean absolute deviation from 0 per dimension", loc="left", fontsize=10)

    axis = figure.add_subplot(grid[1, 1])
    axis.bar(pca["component"], pca["explained_variance_ratio"], color="0.35", label="per component")
    axis.plot(pca["component"], pca["cumulative"], color="C3", marker="o", markersize=3, label="cumulative")
    axis.set_ylim(0, 1.02)
    axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axis.set_xlabel("principal component")
    axis.set_ylabel("explained variance ratio")
    axis.legend(fontsize=7, loc="center right")
    axis.set_title("c  PCA of the z-scored measurements", loc="left", fontsize=10)

    axis = figure.add_subplot(grid[1, 2])
    square = dimension_correlations.pivot(index="rank_a", columns="rank_b", values="pearson")
    square = square.sort_index().sort_index(axis=1)
    image = axis.imshow(square.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                        extent=(0.5, square.shape[1] + 0.5, square.shape[0] + 0.5, 0.5))
    axis.set_xlabel("dimension rank")
    axis.set_ylabel("dimension rank")
    axis.set_title("d  Pearson correlation among the top dimensions", loc="left", fontsize=10)
    figure.colorbar(image, ax=axis, label="Pearson r", fraction=0.046, pad=0.04)
    figure.tight_layout()
    save(figure, output, dpi=dpi)


def plot_kl_per_dimension(kl: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Ranked mean KL per dimension of the reference and target models, the target also per structure (S6 Fig c).

    Parameters
    ----------
    kl : DataFrame
        From :func:`statcell.analysis.latent_space.ranked_kl`.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for axis, model in ((left, "reference"), (right, "target")):
        rows = kl[kl["model"] == model]
        structures = [s for s in rows["structure"].unique() if s != "all"]
        colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(structures), 1)))
        for colour, structure in zip(colours, structures):
            mine = rows[rows["structure"] == structure]
            axis.plot(mine["kl_rank"], mine["kl"], color=colour, linewidth=1,
                      label=f"{structure.replace('_', ' ')} ({int(mine['n_cells'].iloc[0])})")
        pooled = rows[rows["structure"] == "all"]
        if not pooled.empty:
            axis.plot(pooled["kl_rank"], pooled["kl"], color="black", linewidth=2.2, marker="o", markersize=3,
                      label=f"all cells ({int(pooled['n_cells'].iloc[0])})")
        axis.set_yscale("log")
        axis.set_xlabel("latent dimension, ranked by mean KL")
        axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # ranks: whole numbers
        axis.set_title(f"{model} model", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        if structures:
            axis.legend(fontsize=6.5, ncol=2, title="structure (test cells)", title_fontsize=7, loc="lower left")
    left.set_ylabel("mean KL per dimension on test cells (nats)")
    figure.suptitle("Ranked KL divergence per latent dimension", fontsize=11)
    figure.tight_layout()
    save(figure, output, dpi=dpi)
