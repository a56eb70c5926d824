"""Latent embeddings of every cell under a trained model, with per-cell ELBO and the ranking of latent dimensions.

For each cell, the posterior mean and log-variance of ``q(z | x)`` (the reference model sees the membrane and DNA
channels; the target model the structure channel, conditioned on those two and on the structure label), and a
K-sample estimate of its ELBO: ``-(E_q[SSE] + KL)``, the squared error averaged over K latent draws (paper section
4.3). Each cell's draws come from its own random stream, seeded by the analysis seed and the cell's store index, so
a cell's values depend neither on the batch size nor on which other cells are embedded with it.

Latent dimensions are ranked by their mean absolute deviation from 0 (MAD, mean of ``|mu|``) on the held-out cells,
as in the paper (S1–S3 Figs); the KL of each dimension is averaged over the same cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from statcell.seeding import integer_seed

if TYPE_CHECKING:  # torch is imported where it is used, so the figure code can import this module without it
    import torch

    from statcell.train import ModelKind


def mean_columns(latent_dim: int) -> list[str]:
    """Column names of the posterior means in an embedding table, ``mu_0 .. mu_{L-1}``."""
    return [f"mu_{i}" for i in range(latent_dim)]


def log_var_columns(latent_dim: int) -> list[str]:
    """Column names of the posterior log-variances in an embedding table, ``log_var_0 .. log_var_{L-1}``."""
    return [f"log_var_{i}" for i in range(latent_dim)]


def latent_dim_of(embeddings: pd.DataFrame) -> int:
    """Number of latent dimensions of an embedding table (its ``mu_*`` columns)."""
    return sum(1 for column in embeddings.columns if column.startswith("mu_"))


def structure_labels(structures: pd.Series, classes: list[str]) -> np.ndarray:
    """Label indices of structures in the model's class order.

    Parameters
    ----------
    structures : Series of str
        Structure of each cell.
    classes : list of str
        The classes the target model was trained on (``hparams["structures"]``), in label order.

    Returns
    -------
    ndarray of int64
        One label index per cell.

    Raises
    ------
    ValueError
        If a structure is not one of ``classes``; the message names it.

    Examples
    --------
    >>> structure_labels(pd.Series(["golgi", "actin"]), ["actin", "golgi"]).tolist()
    [1, 0]
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(structures) - set(index))
    if unknown:
        raise ValueError(f"structure(s) {', '.join(map(repr, unknown))} unknown to the target model, which was "
                         f"trained on: {', '.join(classes)}")
    return structures.map(index).to_numpy(dtype=np.int64)


def _cell_noise(store_indices: np.ndarray, *, samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Standard normal draws ``(cells, samples, latent_dim)``, each cell from its own seeded stream."""
    import torch

    noise = torch.empty(len(store_indices), samples, latent_dim)
    for row, index in enumerate(store_indices):
        generator = torch.Generator().manual_seed(integer_seed(seed, "embedding", int(index)))
        noise[row] = torch.randn(samples, latent_dim, generator=generator)
    return noise


def embed_batch(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], *, noise: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """Posterior parameters and the K-sample ELBO of a batch of cells.

    Parameters
    ----------
    model : ReferenceVAE or TargetVAE
        Trained model in eval mode.
    batch : tuple of Tensor
        A batch of :class:`statcell.train.CellDataset`: ``(image,)`` for the reference model (membrane and DNA,
        ``(N, 2, Z, Y, X)``), ``(target, reference, label)`` for the target model.
    noise : Tensor
        Standard normal draws ``(N, K, latent_dim)``; ``z_k = mean + exp(log_var / 2) * noise[:, k]``.

    Returns
    -------
    dict of str to Tensor
        ``mean``, ``log_var`` ``(N, latent_dim)``; ``reconstruction`` (mean SSE over the K draws), ``kl`` (exact,
        summed over dimensions) and ``elbo = -(reconstruction + kl)``, each ``(N,)``.
    """
    import torch

    from statcell.models.loss import kl_per_dimension, sum_squared_error

    code = model.encode(*batch)
    spread = (0.5 * code.log_var).exp()
    errors = torch.stack([sum_squared_error(batch[0], model.decode(code.mean + spread * noise[:, k], *batch[1:]))
                          for k in range(noise.shape[1])])
    reconstruction = errors.mean(dim=0)
    kl = kl_per_dimension(code.mean.float(), code.log_var.float()).sum(dim=1)
    return {"mean": code.mean, "log_var": code.log_var, "reconstruction": reconstruction, "kl": kl,
            "elbo": -(reconstruction + kl)}


def _device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_model_fits_data(hparams: dict, store: str | Path, cells: pd.DataFrame, *, model_name: str = "") -> None:
    """Stop before embedding when a model does not fit a dataset, naming every field that differs.

    Compares the model's card (crop shape, voxel size, channel names, and for the target model its structure labels)
    with the store's array shape and metadata and the structures of ``cells``; a field the card or the store does
    not state is not compared.

    Parameters
    ----------
    hparams : dict
        The model's card (:func:`statcell.train.load_model`).
    store : path
        ``cells.zarr`` of the dataset.
    cells : DataFrame
        Its ``cells.parquet`` (``structure``).
    model_name : str
        How the message names the model (e.g. its file).

    Raises
    ------
    statcell.models.export.ModelMismatchError
        If anything differs; the message names each differing field and both values.
    """
    from statcell.models import export
    from statcell.train import data_facts

    card = export.ModelCard.from_dict(hparams)
    export.check_fits(card, model=model_name or f"({card.kind})", data=str(store),
                      structures=sorted(set(cells["structure"])), **data_facts(store))


def embed_cells(store: str | Path, cells: pd.DataFrame, *, model: torch.nn.Module, hparams: dict, samples: int,
                batch_size: int, seed: int) -> pd.DataFrame:
    """Embed every cell of a dataset with one trained model, after checking that the model fits the data.

    Parameters
    ----------
    store : path
        ``cells.zarr`` of the dataset (array ``0`` of shape ``(N, C, Z, Y, X)``).
    cells : DataFrame
        ``cells.parquet`` of the dataset (``cell_id``, ``split``, ``structure``, ``store_index``).
    model : ReferenceVAE or TargetVAE
        Trained model (from :func:`statcell.train.load_model`); moved to the GPU when there is one.
    hparams : dict
        The model's card: ``kind``, ``config``, and, for the target model, ``structures`` (label order); its crop
        shape, voxel size, channels and structures are checked against the data (:func:`check_model_fits_data`).
    samples : int
        Latent draws K of the ELBO estimate.
    batch_size : int
        Cells per batch (memory only: the results do not depend on it).
    seed : int
        Seed of the latent draws.

    Returns
    -------
    DataFrame
        One row per cell, in the order of ``cells``: ``cell_id, split, structure, mu_0.., log_var_0.., elbo,
        reconstruction, kl``.

    Raises
    ------
    statcell.models.export.ModelMismatchError
        If the model does not fit the data (a cell's structure unknown to the target model, another crop shape,
        voxel size or channel layout).
    """
    import torch
    from torch.utils.data import DataLoader

    from statcell.train import CellDataset

    check_model_fits_data(hparams, store, cells)
    kind: ModelKind = hparams["kind"]
    labels = structure_labels(cells["structure"], hparams["structures"]) if kind == "target" else None
    latent_dim = int(hparams["config"]["latent_dim"])
    device = _device()
    model = model.to(device).eval()
    indices = cells["store_index"].to_numpy(dtype=np.int64)
    loader = DataLoader(CellDataset(store, indices, kind=kind, labels=labels), batch_size=batch_size)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("mean", "log_var", "elbo", "reconstruction", "kl")}
    with torch.inference_mode():
        for start, batch in zip(range(0, len(indices), batch_size), loader, strict=True):
            noise = _cell_noise(indices[start:start + batch_size], samples=samples, latent_dim=latent_dim, seed=seed)
            values = embed_batch(model, tuple(part.to(device) for part in batch), noise=noise.to(device))
            for name, value in values.items():
                parts[name].append(value.float().cpu().numpy())
    table = cells[["cell_id", "split", "structure"]].reset_index(drop=True)
    means = pd.DataFrame(np.concatenate(parts["mean"]), columns=mean_columns(latent_dim))
    log_vars = pd.DataFrame(np.concatenate(parts["log_var"]), columns=log_var_columns(latent_dim))
    scores = pd.DataFrame({name: np.concatenate(parts[name]) for name in ("elbo", "reconstruction", "kl")})
    return pd.concat([table, means, log_vars, scores], axis=1)


def rank_dimensions(embeddings: pd.DataFrame) -> pd.DataFrame:
    """Rank latent dimensions by mean absolute deviation from 0, with their mean KL, over the given cells.

    Parameters
    ----------
    embeddings : DataFrame
        Rows of :func:`embed_cells` (select the cells to rank on first, e.g. the test split).

    Returns
    -------
    DataFrame
        One row per dimension, sorted by rank: ``dimension``, ``kl`` (mean KL, nats), ``mad`` (mean ``|mu|``) and
        ``rank`` (1 = largest MAD).

    Examples
    --------
    >>> table = pd.DataFrame({"mu_0": [0.1, -0.1], "mu_1": [2.0, -1.0], "log_var_0": [0.0, 0.0],
    ...                       "log_var_1": [-1.0, -1.0]})
    >>> rank_dimensions(table)[["dimension", "rank"]].values.tolist()
    [[1, 1], [0, 2]]
    """
    import torch

    from statcell.models.loss import kl_per_dimension

    if embeddings.empty:
        raise ValueError("no cells to rank the latent dimensions on")
    latent_dim = latent_dim_of(embeddings)
    means = embeddings[mean_columns(latent_dim)].to_numpy(dtype=np.float64)
    log_vars = embeddings[log_var_columns(latent_dim)].to_numpy(dtype=np.float64)
    kl = kl_per_dimension(torch.tensor(means), torch.tensor(log_vars)).mean(dim=0).numpy()
    table = pd.DataFrame({"dimension": np.arange(latent_dim), "kl": kl, "mad": np.abs(means).mean(axis=0)})
    table = table.sort_values(["mad", "dimension"], ascending=[False, True], ignore_index=True)
    table["rank"] = np.arange(1, latent_dim + 1)
    return table


def ranking_cells(embeddings: pd.DataFrame, *, split: str | None) -> pd.DataFrame:
    """The cells dimensions are ranked on: one split (``"test"`` for the training dataset), or all when None."""
    if split is None:
        return embeddings
    chosen = embeddings[embeddings["split"] == split]
    if chosen.empty:
        raise ValueError(f"no {split!r} cells to rank the latent dimensions on")
    return chosen
