"""The reference latent space: ranked dimensions against cell measurements, latent walks, KL per dimension.

Tables (paper Fig 2, S1–S3, S6), computed on the held-out cells of the training dataset:

- :func:`feature_correlations`: Spearman correlation of the top dimensions (ranked by mean absolute deviation) with
  every cell measurement (volumes, heights, surface areas, sphericities, integrated intensities);
- :func:`measurement_recovery`: for chosen measurements, the top dimension that correlates best with it;
- :func:`feature_pca`: explained variance of the principal components of the z-scored measurements;
- :func:`dimension_correlations`: Pearson correlation among the top dimensions;
- :func:`ranked_kl`: mean KL per dimension, ranked, per model and (for the target model) per structure;
- :func:`walk_latent_space`: images decoded along the top dimensions, from −k to +k standard deviations of each
  dimension's aggregate posterior over the test cells, all other dimensions at 0.

The ``plot_*`` functions draw the figures from those tables alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from statcell.analysis.embed import latent_dim_of, mean_columns, rank_dimensions
from statcell.figures import composite
from statcell.normalize import CONTROL_SOURCE_COLUMN
from statcell.synth import MITOTIC_STAGES

if TYPE_CHECKING:  # torch is imported where it is used: the figure functions run without it
    import torch

#: Name endings of the per-cell measurements of ``cells.parquet`` that latent dimensions are correlated with.
MEASUREMENT_SUFFIXES: tuple[str, ...] = ("_volume_um3", "_height_um", "_surface_area_um2", "_sphericity",
                                         "_integrated_intensity")
#: Measurements whose recovery by a top reference dimension is reported (ground-truth check of the latent space).
RECOVERED_MEASUREMENTS: tuple[str, ...] = ("cell_height_um", "cell_volume_um3")
_UNITS = {"_volume_um3": "µm³", "_height_um": "µm", "_surface_area_um2": "µm²", "_sphericity": "",
          "_intensity": "a.u."}


def measurement_columns(cells: pd.DataFrame) -> list[str]:
    """The numeric cell measurements of a cells table, in table order.

    Examples
    --------
    >>> measurement_columns(pd.DataFrame({"cell_volume_um3": [1.0], "split": ["test"], "true_height_um": [2.0]}))
    ['cell_volume_um3', 'true_height_um']
    """
    return [column for column in cells.columns
            if column.endswith(MEASUREMENT_SUFFIXES) and pd.api.types.is_numeric_dtype(cells[column])]


def imaged(embeddings: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The embedding rows of imaged cells: without the controls built at normalization, whose reference channels
    are copies of imaged cells' (a reference-space analysis would count those cells twice).

    Examples
    --------
    >>> cells = pd.DataFrame({"cell_id": ["a", "b"], "control_source_cell_id": ["", "a"]})
    >>> imaged(pd.DataFrame({"cell_id": ["a", "b"]}), cells)["cell_id"].tolist()
    ['a']
    """
    if CONTROL_SOURCE_COLUMN not in cells:
        return embeddings
    built = cells.loc[cells[CONTROL_SOURCE_COLUMN].fillna("") != "", "cell_id"]
    return embeddings[~embeddings["cell_id"].isin(built)]


def top_dimensions(dimensions: pd.DataFrame, count: int) -> list[int]:
    """The ``count`` best-ranked latent dimensions of a dimensions table (rank 1 first)."""
    return dimensions.sort_values("rank")["dimension"].head(count).astype(int).tolist()


def _measured(embeddings: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Embeddings joined with the measurements of their cells (one row per embedded cell)."""
    columns = ["cell_id", *(column for column in cells.columns if column not in embeddings.columns)]
    joined = embeddings.merge(cells[columns], on="cell_id", how="left", validate="one_to_one")
    if len(joined) != len(embeddings):
        raise ValueError("embedding and cell tables do not match one to one on cell_id")
    return joined


def feature_correlations(embeddings: pd.DataFrame, cells: pd.DataFrame, *, dimensions: pd.DataFrame,
                         count: int) -> pd.DataFrame:
    """Spearman correlation of the top latent dimensions with every cell measurement.

    Parameters
    ----------
    embeddings : DataFrame
        Embedding rows (``cell_id``, ``mu_*``) of the cells to correlate over, e.g. the test split.
    cells : DataFrame
        ``cells.parquet`` of the dataset (``cell_id`` and the measurements).
    dimensions : DataFrame
        Ranked dimensions (``dimension``, ``rank``).
    count : int
        Number of top dimensions.

    Returns
    -------
    DataFrame
        One row per (dimension, measurement): ``dimension, rank, feature, spearman, p_value, n_cells``; a
        measurement constant over the cells gives NaN.
    """
    from scipy.stats import spearmanr

    joined = _measured(embeddings, cells)
    ranks = dimensions.set_index("dimension")["rank"]
    rows = []
    for dimension in top_dimensions(dimensions, count):
        for feature in measurement_columns(cells):
            pair = joined[[f"mu_{dimension}", feature]].dropna()
            constant = pair.nunique().min() < 2
            rho, p_value = (np.nan, np.nan) if constant else spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])
            rows.append({"dimension": dimension, "rank": int(ranks[dimension]), "feature": feature,
                         "spearman": float(rho), "p_value": float(p_value), "n_cells": len(pair)})
    return pd.DataFrame(rows)


def measurement_recovery(correlations: pd.DataFrame, *,
                         measurements: tuple[str, ...] = RECOVERED_MEASUREMENTS) -> pd.DataFrame:
    """For each measurement, the top dimension with the largest absolute Spearman correlation.

    Parameters
    ----------
    correlations : DataFrame
        From :func:`feature_correlations`.
    measurements : tuple of str
        Measurements to report (those absent from ``correlations`` are skipped).

    Returns
    -------
    DataFrame
        ``measurement, dimension, rank, spearman, abs_spearman, n_cells, dimensions_searched``.

    Examples
    --------
    >>> table = pd.DataFrame({"dimension": [4, 7], "rank": [1, 2], "feature": ["cell_height_um"] * 2,
    ...                       "spearman": [0.2, -0.8], "n_cells": [9, 9]})
    >>> measurement_recovery(table)[["measurement", "dimension", "abs_spearman"]].values.tolist()
    [['cell_height_um', 7, 0.8]]
    """
    rows = []
    for measurement in measurements:
        candidates = correlations[correlations["feature"] == measurement].dropna(subset=["spearman"])
        if candidates.empty:
            continue
        best = candidates.loc[candidates["spearman"].abs().idxmax()]
        rows.append({"measurement": measurement, "dimension": int(best["dimension"]), "rank": int(best["rank"]),
                     "spearman": float(best["spearman"]), "abs_spearman": abs(float(best["spearman"])),
                     "n_cells": int(best["n_cells"]), "dimensions_searched": len(candidates)})
    return pd.DataFrame(rows, columns=["measurement", "dimension", "rank", "spearman", "abs_spearman", "n_cells",
                                       "dimensions_searched"])


def feature_pca(cells: pd.DataFrame) -> pd.DataFrame:
    """Explained variance of the principal components of the z-scored cell measurements.

    Parameters
    ----------
    cells : DataFrame
        The cells to analyse (e.g. the test split); measurements that are constant or have missing values are left
        out.

    Returns
    -------
    DataFrame
        ``component`` (1-based), ``explained_variance_ratio``, ``cumulative``.
    """
    values = cells[measurement_columns(cells)].dropna(axis=1)
    values = values.loc[:, values.std() > 1e-9 * values.abs().max().clip(lower=1.0)].to_numpy(dtype=np.float64)
    scores = (values - values.mean(axis=0)) / values.std(axis=0)
    singular = np.linalg.svd(scores, compute_uv=False)
    ratio = singular**2 / np.sum(singular**2)
    return pd.DataFrame({"component": np.arange(1, len(ratio) + 1), "explained_variance_ratio": ratio,
                         "cumulative": np.cumsum(ratio)})


def dimension_correlations(embeddings: pd.DataFrame, *, dimensions: pd.DataFrame, count: int) -> pd.DataFrame:
    """Pearson correlation among the top latent dimensions (long format, every ordered pair).

    Returns
    -------
    DataFrame
        ``dimension_a, rank_a, dimension_b, rank_b, pearson``.
    """
    chosen = top_dimensions(dimensions, count)
    matrix = np.corrcoef(embeddings[[f"mu_{d}" for d in chosen]].to_numpy(dtype=np.float64), rowvar=False)
    ranks = dimensions.set_index("dimension")["rank"]
    return pd.DataFrame([{"dimension_a": a, "rank_a": int(ranks[a]), "dimension_b": b, "rank_b": int(ranks[b]),
                          "pearson": float(matrix[i, j])}
                         for i, a in enumerate(chosen) for j, b in enumerate(chosen)])


def ranked_kl(embeddings: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean KL per latent dimension, ranked, per model over all its cells and, for the target model, per structure.

    Parameters
    ----------
    embeddings : dict of str to DataFrame
        Embedding rows of the cells to average over, by model name (``reference``, ``target``).

    Returns
    -------
    DataFrame
        ``model, structure`` (``"all"`` for every cell), ``kl_rank`` (1 = largest KL), ``dimension``, ``kl`` (nats),
        ``n_cells``.
    """
    tables = []
    for model, rows in embeddings.items():
        groups = [("all", rows)]
        if model == "target":
            groups += list(rows.groupby("structure", sort=True))
        for structure, group in groups:
            ranked = rank_dimensions(group).sort_values(["kl", "dimension"], ascending=[False, True])
            tables.append(pd.DataFrame({"model": model, "structure": structure,
                                        "kl_rank": np.arange(1, len(ranked) + 1),
                                        "dimension": ranked["dimension"].to_numpy(), "kl": ranked["kl"].to_numpy(),
                                        "n_cells": len(group)}))
    return pd.concat(tables, ignore_index=True)


def correlate_latent_space(reference: pd.DataFrame, target: pd.DataFrame, cells: pd.DataFrame, *,
                           dimensions: pd.DataFrame, count: int, split: str = "test") -> dict[str, pd.DataFrame]:
    """Every table of the latent-space figures, on one split of the training dataset.

    Parameters
    ----------
    reference, target : DataFrame
        Embeddings of the dataset by the reference and target models (:func:`statcell.analysis.embed.embed_cells`).
    cells : DataFrame
        ``cells.parquet`` of the dataset.
    dimensions : DataFrame
        The reference model's ranked dimensions.
    count : int
        Top dimensions in the correlation tables.
    split : str
        Cells analysed (imaged cells only in the reference space: :func:`imaged`).

    Returns
    -------
    dict of str to DataFrame
        ``feature_correlations``, ``measurement_recovery``, ``feature_pca``, ``dimension_correlations``,
        ``kl_ranked``.
    """
    held_out = imaged(reference[reference["split"] == split], cells)
    if len(held_out) < 3:
        raise ValueError(f"{len(held_out)} {split!r} cells: at least 3 are needed for correlations")
    correlations = feature_correlations(held_out, cells, dimensions=dimensions, count=count)
    return {
        "feature_correlations": correlations,
        "measurement_recovery": measurement_recovery(correlations),
        "feature_pca": feature_pca(cells[cells["cell_id"].isin(held_out["cell_id"])]),
        "dimension_correlations": dimension_correlations(held_out, dimensions=dimensions, count=count),
        "kl_ranked": ranked_kl({"reference": held_out, "target": target[target["split"] == split]}),
    }


def walk_latent_space(model: torch.nn.Module, embeddings: pd.DataFrame, *, dimensions: pd.DataFrame, count: int,
                      steps: int, range_sd: float) -> dict[str, np.ndarray]:
    """Reference images decoded along the top latent dimensions, all other dimensions at 0.

    Parameters
    ----------
    model : ReferenceVAE
        Trained reference model.
    embeddings : DataFrame
        Embedding rows (``mu_*``, ``log_var_*``) whose aggregate posterior sets each dimension's standard
        deviation (e.g. the test split).
    dimensions : DataFrame
        Ranked dimensions; the walks follow ranks 1 to ``count``.
    count : int
        Dimensions walked along.
    steps : int
        Images per walk, evenly spaced from ``-range_sd`` to ``+range_sd`` standard deviations.
    range_sd : float
        Extent of each walk, in standard deviations of the dimension's aggregate posterior (the mixture of the
        cells' posteriors, whose variance is the variance of the means plus the mean posterior variance; about 1
        for a model whose aggregate posterior matches its prior).

    Returns
    -------
    dict of str to ndarray
        ``images`` ``(count, steps, C, Z, Y, X)`` float32; ``dimension``, ``rank``, ``sd`` (the dimension's standard
        deviation), each ``(count,)``; ``sd_offsets`` ``(steps,)``; ``latent_values`` ``(count, steps)``.
    """
    import torch

    chosen = top_dimensions(dimensions, count)
    sd = np.sqrt(embeddings[[f"mu_{d}" for d in chosen]].var(ddof=0).to_numpy(dtype=np.float64)
                 + np.exp(embeddings[[f"log_var_{d}" for d in chosen]].to_numpy(dtype=np.float64)).mean(axis=0))
    offsets = np.linspace(-range_sd, range_sd, steps)
    values = sd[:, None] * offsets[None, :]
    z = np.zeros((len(chosen), steps, latent_dim_of(embeddings)), dtype=np.float32)
    for row, dimension in enumerate(chosen):
        z[row, :, dimension] = values[row]
    like = next(model.parameters())
    with torch.inference_mode():
        images = model.decode(torch.from_numpy(z.reshape(-1, z.shape[-1])).to(like.device, like.dtype))
    images = images.float().cpu().numpy().reshape(len(chosen), steps, *images.shape[1:])
    ranks = dimensions.set_index("dimension")["rank"]
    return {"images": images, "dimension": np.array(chosen), "rank": ranks[chosen].to_numpy(), "sd": sd,
            "sd_offsets": offsets, "latent_values": values}


# --- figures ---------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, output: str | Path, *, dpi: int) -> None:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    if Path(output).suffix == ".png":
        figure.savefig(Path(output).with_suffix(".svg"))
    _pyplot().close(figure)


def _label(feature: str) -> str:
    """Axis label of a measurement, with its unit."""
    unit = next((unit for suffix, unit in _UNITS.items() if feature.endswith(suffix)), "")
    name = feature.replace("_um3", "").replace("_um2", "").replace("_um", "").replace("_", " ")
    return f"{name} ({unit})" if unit else name


def plot_latent_scatter(embeddings: pd.DataFrame, cells: pd.DataFrame, output: str | Path, *,
                        dimensions: pd.DataFrame, point_size: float, colormap: str, dpi: int) -> str:
    """Cells on the top two reference dimensions, coloured by mitotic stage and by cell height (paper Fig 2A/C).

    Without a mitotic annotation (no ``mitotic_stage``, or only ``unknown``: a lab's own FOVs) the first panel is
    coloured by structure instead. Controls built at normalization are left out (:func:`imaged`).

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
    plt = _pyplot()
    joined = _measured(imaged(embeddings, cells), cells).reset_index(drop=True)
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
    _save(figure, output, dpi=dpi)
    return coloured_by


def plot_latent_pairs(embeddings: pd.DataFrame, output: str | Path, *, dimensions: pd.DataFrame, count: int = 4,
                      point_size: float, dpi: int) -> None:
    """Pairwise scatter plots of the top reference dimensions, with their marginal histograms (paper S1 Fig).

    Parameters
    ----------
    embeddings : DataFrame
        Reference embeddings of the cells drawn (e.g. the test split).
    output : path
        PNG to write (an SVG is written beside it).
    dimensions : DataFrame
        Ranked dimensions.
    count : int
        Dimensions shown.
    point_size, dpi
        Marker area (points²), resolution.
    """
    plt = _pyplot()
    chosen = top_dimensions(dimensions, count)
    values = embeddings[[f"mu_{d}" for d in chosen]].to_numpy()
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
    _save(figure, output, dpi=dpi)


def _walk_panel(volume: np.ndarray, *, scale: np.ndarray) -> np.ndarray:
    """An RGB panel of one reference image ``(2, Z, Y, X)``: max projection along z (top) over one along y.

    ``scale`` holds each channel's display maximum, shared by all panels of a figure.
    """
    clipped = np.clip(volume / scale[:, None, None, None], 0, 1)
    top = composite({"membrane": clipped[0].max(axis=0), "dna": clipped[1].max(axis=0)})
    side = composite({"membrane": clipped[0].max(axis=1)[::-1], "dna": clipped[1].max(axis=1)[::-1]})
    gap = np.ones((1, top.shape[1], 3), dtype=np.float32)
    return np.concatenate([top, gap, side])


def plot_latent_walks(walks: dict[str, np.ndarray], correlations: pd.DataFrame, output: str | Path, *,
                      dpi: int) -> None:
    """Images decoded along the top reference dimensions, one row per dimension (paper Fig 2E/F, S2 Fig).

    Parameters
    ----------
    walks : dict of str to ndarray
        From :func:`walk_latent_space`.
    correlations : DataFrame
        From :func:`feature_correlations`; each row is labelled with the dimension's most correlated measurement.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = _pyplot()
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
    _save(figure, output, dpi=dpi)


def _cluster_order(matrix: np.ndarray) -> np.ndarray:
    """Row order of a hierarchical clustering (average linkage, correlation-profile distance) of a matrix."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    if len(matrix) < 3:
        return np.arange(len(matrix))
    return leaves_list(linkage(np.nan_to_num(matrix), method="average", metric="euclidean", optimal_ordering=True))


def plot_latent_correlations(correlations: pd.DataFrame, dimensions: pd.DataFrame, pca: pd.DataFrame,
                             dimension_pairs: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Four panels of paper S3 Fig: Spearman heatmap, MAD per dimension, feature PCA, correlation among dimensions.

    Parameters
    ----------
    correlations : DataFrame
        From :func:`feature_correlations`.
    dimensions : DataFrame
        Ranked dimensions (``dimension``, ``mad``, ``rank``).
    pca : DataFrame
        From :func:`feature_pca`.
    dimension_pairs : DataFrame
        From :func:`dimension_correlations`.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = _pyplot()
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
    square = dimension_pairs.pivot(index="rank_a", columns="rank_b", values="pearson").sort_index().sort_index(axis=1)
    image = axis.imshow(square.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                        extent=(0.5, square.shape[1] + 0.5, square.shape[0] + 0.5, 0.5))
    axis.set_xlabel("dimension rank")
    axis.set_ylabel("dimension rank")
    axis.set_title("d  Pearson correlation among the top dimensions", loc="left", fontsize=10)
    figure.colorbar(image, ax=axis, label="Pearson r", fraction=0.046, pad=0.04)
    figure.tight_layout()
    _save(figure, output, dpi=dpi)


def plot_kl_per_dimension(kl: pd.DataFrame, output: str | Path, *, dpi: int) -> None:
    """Ranked mean KL per dimension of the reference and target models, the target also per structure (S6 Fig c).

    Parameters
    ----------
    kl : DataFrame
        From :func:`ranked_kl`.
    output : path
        PNG to write.
    dpi : int
        Resolution.
    """
    plt = _pyplot()
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
        axis.set_title(f"{model} model", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        if structures:
            axis.legend(fontsize=6.5, ncol=2, title="structure (test cells)", title_fontsize=7, loc="lower left")
    left.set_ylabel("mean KL per dimension on test cells (nats)")
    figure.suptitle("Ranked KL divergence per latent dimension", fontsize=11)
    figure.tight_layout()
    _save(figure, output, dpi=dpi)
