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

:mod:`statcell.plots.latent_space` draws the figures from those tables alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from statcell.analysis.embed import latent_dim_of, rank_dimensions
from statcell.normalize import imaged_cells

if TYPE_CHECKING:  # torch is imported where it is used: the figure functions run without it
    import torch

#: Name endings of the per-cell measurements of ``cells.parquet`` that latent dimensions are correlated with.
MEASUREMENT_SUFFIXES: tuple[str, ...] = ("_volume_um3", "_height_um", "_surface_area_um2", "_sphericity",
                                         "_integrated_intensity")
#: Measurements whose recovery by a top reference dimension is reported (ground-truth check of the latent space).
RECOVERED_MEASUREMENTS: tuple[str, ...] = ("cell_height_um", "cell_volume_um3")
#: Unit of each measurement suffix (axis labels).
MEASUREMENT_UNITS: dict[str, str] = {"_volume_um3": "µm³", "_height_um": "µm", "_surface_area_um2": "µm²",
                                     "_sphericity": "", "_intensity": "a.u."}


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
    built = set(cells["cell_id"]) - set(imaged_cells(cells)["cell_id"])
    return embeddings[~embeddings["cell_id"].isin(built)]


def top_dimensions(dimensions: pd.DataFrame, count: int) -> list[int]:
    """The ``count`` best-ranked latent dimensions of a dimensions table (rank 1 first)."""
    return dimensions.sort_values("rank")["dimension"].head(count).astype(int).tolist()


def grid_examples(x: np.ndarray, y: np.ndarray, *, size: int, coverage: float = 0.96) -> pd.DataFrame:
    """Real cells at the nodes of a regular grid over a latent plane (paper Fig 2B/2D: example cells in place).

    The grid spans the central ``coverage`` of both coordinates (percentiles, so a few outliers do not stretch it);
    each node takes the nearest cell not taken by another node, if that cell lies within half a grid step of it
    along both axes (else the node stays empty: the data have no cell there).

    Parameters
    ----------
    x, y : ndarray
        The cells' coordinates on the two dimensions.
    size : int
        Nodes per axis.
    coverage : float
        Fraction of the cells, per axis, the grid spans.

    Returns
    -------
    DataFrame
        One row per node with a cell: ``row`` (0 at the largest ``y``), ``column`` (0 at the smallest ``x``),
        ``node_x``, ``node_y``, ``cell`` (position in ``x``/``y``).

    Examples
    --------
    >>> grid = grid_examples(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 1.0]), size=2, coverage=1.0)
    >>> sorted(zip(grid["row"], grid["column"], grid["cell"]))
    [(0, 0, 2), (0, 1, 3), (1, 0, 0), (1, 1, 1)]
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    tail = 100 * (1 - coverage) / 2
    xs = np.linspace(*np.percentile(x, [tail, 100 - tail]), size)
    ys = np.linspace(*np.percentile(y, [tail, 100 - tail]), size)[::-1]
    step_x = (xs[-1] - xs[0]) / max(size - 1, 1) or 1.0
    step_y = (ys[0] - ys[-1]) / max(size - 1, 1) or 1.0
    taken, rows = set(), []
    for row, node_y in enumerate(ys):
        for column, node_x in enumerate(xs):
            near = (np.abs(x - node_x) <= step_x / 2 + 1e-12) & (np.abs(y - node_y) <= step_y / 2 + 1e-12)
            distance = np.hypot((x - node_x) / step_x, (y - node_y) / step_y)
            for cell in np.flatnonzero(near)[np.argsort(distance[near], kind="stable")]:
                if int(cell) not in taken:
                    taken.add(int(cell))
                    rows.append({"row": row, "column": column, "node_x": float(node_x), "node_y": float(node_y),
                                 "cell": int(cell)})
                    break
    return pd.DataFrame(rows, columns=["row", "column", "node_x", "node_y", "cell"])


def measured(embeddings: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
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

    joined = measured(embeddings, cells)
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

