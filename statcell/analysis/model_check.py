"""A first look at the trained models: test cells beside their reconstructions, how well each channel and structure
is reconstructed, and each model's KL per dimension.

:func:`check_models` runs both models on the test cells; :func:`statcell.plots.models.plot_model_check` draws
the result from the table and images it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.io import read_cells
from statcell.normalize import imaged_cells

#: Store channels the models read: membrane and DNA (reference), structure (target).
_STORE_CHANNELS = [0, 1, 2]
#: Names of those channels in the reconstruction table.
_CHANNEL_NAMES = ("membrane", "dna", "structure")
#: Cells decoded at once.
_BATCH = 32


def reconstruction_correlations(real: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Pearson correlation of each image with its reconstruction, over all its voxels.

    Parameters
    ----------
    real, reconstruction : ndarray
        ``(N, ...)`` images of the same shape.

    Returns
    -------
    ndarray
        ``(N,)`` correlations; NaN where either image is constant (a blank cell has no correlation to speak of).

    Examples
    --------
    >>> real = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    >>> reconstruction_correlations(real, np.array([[0.0, 2.0, 4.0], [0.0, 1.0, 2.0]])).tolist()
    [1.0, nan]
    """
    if real.shape != reconstruction.shape:
        raise ValueError(f"images {real.shape} and reconstructions {reconstruction.shape} differ in shape")
    a = real.reshape(len(real), -1).astype(np.float64)
    b = reconstruction.reshape(len(reconstruction), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=1) / norms, np.nan)


def summarize_reconstruction(correlations: pd.DataFrame, structures: Sequence[str] = ()) -> pd.DataFrame:
    """Median and quartiles of the per-cell correlations of each model, channel and structure.

    Parameters
    ----------
    correlations : DataFrame
        One row per cell and channel: ``model``, ``channel``, ``structure``, ``pearson`` (NaN: constant image).
    structures : sequence of str
        The target model's structures: one without test cells gets a row of 0 cells (NaN statistics), so that it is
        listed rather than silently absent.

    Returns
    -------
    DataFrame
        ``model, channel, structure, cells, cells_with_signal, median_pearson, q25_pearson, q75_pearson``, the
        reference model's channels over all structures (``structure`` ``all``), the target model per structure.

    Examples
    --------
    >>> rows = pd.DataFrame({"model": "target", "channel": "structure", "structure": ["golgi"] * 3,
    ...                      "pearson": [0.2, 0.4, np.nan]})
    >>> summarize_reconstruction(rows)[["structure", "cells", "cells_with_signal", "median_pearson"]].values.tolist()
    [['golgi', 3, 2, 0.30000000000000004]]
    >>> summarize_reconstruction(rows, ["er", "golgi"])[["structure", "cells"]].values.tolist()
    [['er', 0], ['golgi', 3]]
    """
    untested = set(structures) - set(correlations.loc[correlations["model"] == "target", "structure"])
    rows = [{"model": "target", "channel": "structure", "structure": structure, "cells": 0, "cells_with_signal": 0,
             "median_pearson": np.nan, "q25_pearson": np.nan, "q75_pearson": np.nan} for structure in untested]
    for (model, channel, structure), group in correlations.groupby(["model", "channel", "structure"], sort=True):
        values = group["pearson"].dropna()
        quartiles = values.quantile([0.25, 0.5, 0.75]).to_numpy() if len(values) else np.full(3, np.nan)
        rows.append({"model": model, "channel": channel, "structure": structure, "cells": len(group),
                     "cells_with_signal": len(values), "median_pearson": quartiles[1], "q25_pearson": quartiles[0],
                     "q75_pearson": quartiles[2]})
    return pd.DataFrame(rows, columns=["model", "channel", "structure", "cells", "cells_with_signal",
                                       "median_pearson", "q25_pearson", "q75_pearson"]).sort_values(
        ["model", "channel", "structure"], ignore_index=True)


def check_models(reference_checkpoint: str | Path, target_checkpoint: str | Path, *, store: str | Path,
                 cells: pd.DataFrame, count: int = 6) -> tuple[pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]:
    """Each model's mean KL per latent dimension on the test cells, a few test cells with their reconstructions, and
    how well every test cell is reconstructed.

    Parameters
    ----------
    reference_checkpoint, target_checkpoint : path
        Trained models (``NAME.pt`` with its card, or a ``.ckpt``).
    store : path
        ``cells.zarr`` the models were trained on.
    cells : DataFrame
        Its ``cells.parquet``: test-split cells are shown (the first of each structure, up to ``count``) and enter
        the KL and the reconstruction table; the reference model's only where their membrane and DNA are their own
        (:func:`statcell.normalize.imaged_cells`: a built control's are a copy of its source cell's).
    count : int
        Cells shown.

    Returns
    -------
    kl : DataFrame
        Mean KL per latent dimension of each model (columns ``model``, ``dimension``, ``kl``), in decreasing order.
    images : dict of str to ndarray
        Maximum projections along z, clipped to [0, 1]: ``real`` ``(n, 3, Y, X)`` (membrane, DNA, structure),
        ``reference`` ``(n, 2, Y, X)`` and ``target`` ``(n, 1, Y, X)`` reconstructions from the posterior means,
        and ``structure``, the n cells' structure names.
    reconstruction : DataFrame
        :func:`summarize_reconstruction` of the test cells' correlations with their reconstructions from the
        posterior means (3D, every voxel): membrane and DNA by the reference model, the structure channel by the
        target model per structure.
    """
    import torch

    from statcell.models.loss import kl_per_dimension
    from statcell.train import load_model

    test = cells[cells["split"] == "test"].sort_values("store_index")
    images = torch.from_numpy(read_cells(store, test["store_index"].to_numpy(), channels=_STORE_CHANNELS))
    reference, _ = load_model(reference_checkpoint, "reference")
    target, hparams = load_model(target_checkpoint, "target")
    labels = torch.tensor(test["structure"].map({s: i for i, s in enumerate(hparams["structures"])}).to_numpy())
    with torch.no_grad():
        ref_code = reference.encode(images[:, :2])
        tgt_code = target.encode(images[:, 2:], images[:, :2], labels)
        ref_recon = torch.cat([reference.decode(ref_code.mean[start:start + _BATCH])
                               for start in range(0, len(test), _BATCH)])
        tgt_recon = torch.cat([target.decode(tgt_code.mean[start:start + _BATCH], images[start:start + _BATCH, :2],
                                             labels[start:start + _BATCH]) for start in range(0, len(test), _BATCH)])
    shown = test.reset_index(drop=True).groupby("structure").head(1).index[:count].to_numpy(copy=True)
    structures = test["structure"].to_numpy(dtype=str)
    own = torch.from_numpy(test["cell_id"].isin(imaged_cells(test)["cell_id"]).to_numpy())  # reference images
    correlations = pd.concat(
        [pd.DataFrame({"model": "reference", "channel": _CHANNEL_NAMES[channel], "structure": "all",
                       "pearson": reconstruction_correlations(images[own, channel].numpy(),
                                                              ref_recon[own, channel].numpy())})
         for channel in (0, 1)]
        + [pd.DataFrame({"model": "target", "channel": _CHANNEL_NAMES[2], "structure": structures,
                         "pearson": reconstruction_correlations(images[:, 2].numpy(), tgt_recon[:, 0].numpy())})])
    kl = pd.concat([pd.DataFrame({"model": name, "dimension": np.arange(code.mean.shape[1]),
                                  "kl": kl_per_dimension(code.mean[rows], code.log_var[rows]).mean(dim=0).numpy()})
                    .sort_values("kl", ascending=False) for name, code, rows in (("reference", ref_code, own),
                                                                                  ("target", tgt_code, slice(None)))])

    def projection(volume: torch.Tensor) -> np.ndarray:
        return volume.amax(dim=-3).clamp(0, 1).numpy().astype(np.float32)  # max projection along z

    return kl, {"real": projection(images[shown]), "reference": projection(ref_recon[shown]),
                "target": projection(tgt_recon[shown]), "structure": structures[shown]}, \
        summarize_reconstruction(correlations, hparams["structures"])
