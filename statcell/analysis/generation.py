"""Generated cells (paper Fig 4, S4, S5): the reference prior, test cells' counterparts, structures in one cell.

:func:`generate_cells` decodes, from the trained reference and target models and a dataset's store:

- ``prior``: cells drawn from the reference model's prior, ``(N, 2, Z, Y, X)`` (membrane, DNA);
- ``test_cells``: every test cell (``real``, ``(N, 3, Z, Y, X)``), its *reconstruction* from the posterior means of
  both models (membrane and DNA by the reference model, the structure by the target model given the real membrane,
  DNA and label) — the "generated counterparts" whose features are compared with the real ones — and a structure
  *sample* from the target prior inside the real membrane and DNA;
- ``structures_in_one_cell``: one real test cell (the one with the median reference ELBO, a typical cell, among those
  that lie wholly inside their crop where any does) hosting every structure class generated ``per_structure`` times
  from the target prior, ``(S, K, 3, Z, Y, X)``, and each class's *expected* structure there, the mean of
  ``expected_draws`` prior draws, ``(S, Z, Y, X)``: where the model puts the structure in that cell (its
  localization rule), which one draw shows only in part; with the host's cell and nucleus masks;
- ``structure_examples``: ``examples`` real test cells per structure class (train cells where the test split has too
  few), ``(S, E, 3, Z, Y, X)``, with their masks;
- ``localization``: where each structure's intensity lies in the test cells (:mod:`statcell.analysis.localization`,
  from each cell's own masks), for the real structure, its reconstruction and its prior sample: a localization rule
  the model learned shows as a sample whose profile matches the real one;
- ``truncated``: the first prior draws decoded with only the reference model's top-k latent dimensions drawn (by mean
  KL; the others at the prior mean, 0), for k = 1, 2, 4, ... and all, ``(K, N, 2, Z, Y, X)``: how much of a cell's
  shape each additional dimension carries (latent-space truncation, a reviewer's request on the original work).

Every draw comes from a generator seeded by ``seed`` and the draw's purpose, so results do not depend on batching.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from statcell.analysis.embed import structure_labels
from statcell.analysis.localization import localization_table
from statcell.io import read_cells
from statcell.models.loss import elbo_estimate, kl_per_dimension
from statcell.normalize import imaged_cells
from statcell.seeding import integer_seed
from statcell.vocabulary import CROP_CHANNELS


class Generation(NamedTuple):
    """The images and manifest of :func:`generate_cells` (arrays float32 in the store's channel order)."""

    prior: np.ndarray
    test_cells: dict[str, np.ndarray]
    structures_in_one_cell: dict[str, np.ndarray]
    structure_examples: dict[str, np.ndarray]
    truncated: dict[str, np.ndarray]
    localization: pd.DataFrame
    manifest: pd.DataFrame


#: The store channels of a cell's masks: cell, nucleus.
MASK_CHANNELS: tuple[int, int] = (CROP_CHANNELS.index("cell_mask"), CROP_CHANNELS.index("nucleus_mask"))
#: Membrane, DNA and structure, then the masks: one read of the store per set of cells.
_IMAGE_AND_MASK_CHANNELS: tuple[int, ...] = (*(CROP_CHANNELS.index(name) for name in ("membrane", "dna", "structure")),
                                            *MASK_CHANNELS)



def truncation_counts(latent_dim: int) -> list[int]:
    """Numbers of top latent dimensions kept in the truncation rows: 1, 2, 4, ... below ``latent_dim``, then all.

    Examples
    --------
    >>> truncation_counts(32), truncation_counts(6)
    ([1, 2, 4, 8, 16, 32], [1, 2, 4, 6])
    """
    counts, k = [], 1
    while k < latent_dim:
        counts.append(k)
        k *= 2
    return [*counts, latent_dim]


@torch.no_grad()
def truncated_prior(model: torch.nn.Module, z: torch.Tensor, *, order: list[int], counts: list[int],
                    batch_size: int) -> np.ndarray:
    """Decode prior draws with only the top ``k`` latent dimensions of ``order`` kept (the others set to 0).

    Parameters
    ----------
    model : ReferenceVAE
        The trained reference model.
    z : Tensor
        ``(N, latent_dim)`` draws from the prior.
    order : list of int
        Latent dimensions, most informative first (e.g. by mean KL on held-out cells).
    counts : list of int
        The ``k`` of each row.
    batch_size : int
        Cells per forward pass (memory only).

    Returns
    -------
    ndarray
        ``(len(counts), N, channels, *spatial)`` float32 in [0, 1].
    """
    rows = []
    for count in counts:
        kept = torch.zeros(z.shape[1], dtype=z.dtype)
        kept[list(order[:count])] = 1
        rows.append(_batched(model.decode, z * kept, batch_size=batch_size).clamp(0, 1))
    return torch.stack(rows).numpy()


def _generator(seed: int, purpose: str) -> torch.Generator:
    """The stream of one purpose of draws (``prior``, ``host elbo``, ``test samples``, ``in one cell``,
    ``expected in one cell``)."""
    return torch.Generator().manual_seed(integer_seed(seed, "generation", purpose))


@torch.no_grad()
def _batched(function, *tensors: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([function(*(t[start:start + batch_size] for t in tensors))
                      for start in range(0, len(tensors[0]), batch_size)])


@torch.no_grad()
def counterparts(real: torch.Tensor, labels: torch.Tensor, *, reference_model: torch.nn.Module,
                 target_model: torch.nn.Module, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions (posterior means of both models) and target-prior structure samples of real cells.

    Parameters
    ----------
    real : Tensor
        ``(N, 3, Z, Y, X)`` membrane, DNA, structure.
    labels : Tensor
        ``(N,)`` structure class indices of the target model.
    reference_model, target_model : Module
        Trained models in eval mode.
    batch_size : int
        Cells per forward pass (memory only).
    seed : int
        Seed of the structure samples.

    Returns
    -------
    reconstruction, sample : Tensor
        ``(N, 3, Z, Y, X)`` each; ``sample`` keeps the real membrane and DNA.
    """
    reference, target = real[:, :2], real[:, 2:3]
    recon_reference = _batched(lambda x: reference_model.decode(reference_model.encode(x).mean), reference,
                               batch_size=batch_size)
    recon_structure = _batched(
        lambda t, r, y: target_model.decode(target_model.encode(t, r, y).mean, r, y), target, reference, labels,
        batch_size=batch_size)
    noise = torch.randn(len(real), target_model.config.latent_dim, generator=_generator(seed, "test samples"))
    sampled = _batched(lambda z, r, y: target_model.decode(z, r, y), noise, reference, labels, batch_size=batch_size)
    return (torch.cat([recon_reference, recon_structure], dim=1).clamp(0, 1),
            torch.cat([reference, sampled], dim=1).clamp(0, 1))


@torch.no_grad()
def host_expectation(target_model: torch.nn.Module, reference: torch.Tensor, n_classes: int, *, draws: int,
                     batch_size: int, seed: int) -> np.ndarray:
    """Each structure class's expected image inside one cell: the mean of ``draws`` decoded target-prior draws.

    Parameters
    ----------
    target_model : Module
        The trained target model, in eval mode.
    reference : Tensor
        ``(2, Z, Y, X)`` the cell's membrane and DNA.
    n_classes : int
        Structure classes, decoded as labels ``0 .. n_classes - 1``.
    draws : int
        Prior draws per class (the same draws for every class).
    batch_size : int
        Cells per forward pass (memory only).
    seed : int
        Seed of the draws.

    Returns
    -------
    ndarray
        ``(n_classes, Z, Y, X)`` float32 in [0, 1].
    """
    z = torch.randn(draws, target_model.config.latent_dim, generator=_generator(seed, "expected in one cell"))
    references = reference.unsqueeze(0).repeat(draws, *([1] * reference.ndim))
    return torch.stack([
        _batched(lambda latent, ref, label: target_model.decode(latent, ref, label), z, references,
                 torch.full((draws,), label), batch_size=batch_size).clamp(0, 1)[:, 0].mean(dim=0)
        for label in range(n_classes)]).numpy()


def touches_crop_border(cell_masks: np.ndarray) -> np.ndarray:
    """Whether each cell reaches a face of its crop (so the crop cut it), from ``(N, Z, Y, X)`` cell masks.

    Examples
    --------
    >>> masks = np.zeros((2, 4, 4, 4), bool); masks[0, 1:3, 1:3, 1:3] = True; masks[1, 1:3, 1:3, 2:] = True
    >>> touches_crop_border(masks).tolist()
    [False, True]
    """
    masks = np.asarray(cell_masks, bool)
    faces = [masks.take(index, axis=axis).reshape(len(masks), -1).any(axis=1)
             for axis in (1, 2, 3) for index in (0, -1)]
    return np.logical_or.reduce(faces)


@torch.no_grad()
def median_elbo_cell(reference: torch.Tensor, *, model: torch.nn.Module, samples: int, seed: int) -> int:
    """Position of the cell with the median K-sample reference ELBO (the lower middle one for an even count)."""
    elbo, _, _ = elbo_estimate(lambda: tuple(model.encode(reference)), model.decode, reference, samples=samples,
                               generator=_generator(seed, "host elbo"))
    order = np.argsort(elbo.numpy(), kind="stable")
    return int(order[(len(order) - 1) // 2])


def _examples(cells: pd.DataFrame, structure: str, count: int) -> pd.DataFrame:
    """The first ``count`` test cells of a structure by cell id, topped up with train then val cells if too few."""
    rank = {"test": 0, "train": 1, "val": 2}
    pool = cells[cells["structure"] == structure].assign(_rank=lambda t: t["split"].map(rank).fillna(3))
    return pool.sort_values(["_rank", "cell_id"]).head(count)


@torch.no_grad()
def generate_cells(store: str | Path, cells: pd.DataFrame, *, reference_model: torch.nn.Module,
                   target_model: torch.nn.Module, structures: list[str], generated_cells: int, per_structure: int,
                   examples: int, elbo_samples: int, batch_size: int, seed: int,
                   dimension_order: list[int] | None = None, truncated_cells: int = 8,
                   expected_draws: int = 32) -> Generation:
    """Decode the generated cells of the paper's Fig 4, S4 and S5 (see the module's notes).

    Parameters
    ----------
    store : path
        ``cells.zarr`` of the dataset the models were trained on.
    cells : DataFrame
        Its ``cells.parquet`` (``cell_id``, ``split``, ``store_index``, ``structure``).
    reference_model, target_model : Module
        The trained 3D models (``load_model``); ``structures`` is the target model's class order.
    generated_cells : int
        Cells drawn from the reference prior.
    per_structure : int
        Generations of each structure inside the host cell.
    examples : int
        Real cells per structure.
    elbo_samples : int
        Latent draws of the ELBO that picks the host cell.
    batch_size : int
        Cells per forward pass (memory only).
    seed : int
        Seed of every draw.
    dimension_order : list of int, optional
        The reference model's latent dimensions, most informative first, for the truncation rows (default: the
        dimensions' mean KL on the imaged test cells).
    truncated_cells : int
        Prior draws decoded in each truncation row.
    expected_draws : int
        Prior draws averaged into each structure's expected image in the host cell.

    Returns
    -------
    Generation
        Arrays as described in the module's notes and one manifest row per stored image (``array``, ``position``,
        ``source`` in {real, reconstruction, sample, prior, generated}, ``cell_id``, ``store_index``,
        ``structure``, ``draw``, and for test cells ``imaged``: False for a control built from another cell, whose
        membrane and DNA are that cell's, so that what measures the reference images counts each cell once).
    """
    if expected_draws < 1:
        raise ValueError(f"expected_draws must be at least 1, got {expected_draws}")
    reference_model.eval()
    target_model.eval()
    test = cells[cells["split"] == "test"].sort_values("cell_id").reset_index(drop=True)
    if test.empty:
        raise ValueError("the dataset has no test cells")
    stored = read_cells(store, test["store_index"].to_numpy(), channels=_IMAGE_AND_MASK_CHANNELS)
    real, masks = torch.from_numpy(stored[:, :3]), stored[:, 3:] > 0.5
    labels = torch.tensor(structure_labels(test["structure"], structures))
    reconstruction, sample = counterparts(real, labels, reference_model=reference_model, target_model=target_model,
                                          batch_size=batch_size, seed=seed)
    prior_z = torch.randn(generated_cells, reference_model.config.latent_dim, generator=_generator(seed, "prior"))
    prior = _batched(reference_model.decode, prior_z, batch_size=batch_size).clamp(0, 1)
    imaged = test.index.isin(imaged_cells(test).index)  # a built control's membrane and DNA are its source cell's
    if dimension_order is None:
        with torch.no_grad():
            mean, log_var = _batched(lambda x: torch.cat(reference_model.encode(x), dim=1), real[imaged, :2],
                                     batch_size=batch_size).chunk(2, dim=1)
        dimension_order = torch.argsort(kl_per_dimension(mean, log_var).mean(dim=0), descending=True).tolist()
    counts = truncation_counts(reference_model.config.latent_dim)
    truncated = truncated_prior(reference_model, prior_z[:truncated_cells], order=list(dimension_order),
                                counts=counts, batch_size=batch_size)

    whole = np.flatnonzero(~touches_crop_border(masks[:, 0]))
    candidates = whole if len(whole) else np.arange(len(test))
    host = int(candidates[median_elbo_cell(real[candidates, :2], model=reference_model, samples=elbo_samples,
                                           seed=seed)])
    count = len(structures) * per_structure
    host_reference = real[host:host + 1, :2].repeat(count, *([1] * (real.ndim - 1)))
    host_labels = torch.arange(len(structures)).repeat_interleave(per_structure)
    host_z = torch.randn(count, target_model.config.latent_dim, generator=_generator(seed, "in one cell"))
    host_structure = _batched(lambda z, r, y: target_model.decode(z, r, y), host_z, host_reference, host_labels,
                              batch_size=batch_size).clamp(0, 1)
    in_one_cell = torch.cat([host_reference, host_structure], dim=1).reshape(
        len(structures), per_structure, *real.shape[1:])
    expected = host_expectation(target_model, real[host, :2], len(structures), draws=expected_draws,
                                batch_size=batch_size, seed=seed)

    localization = localization_table(test["structure"], masks, {
        "real": real[:, 2].numpy(), "reconstruction": reconstruction[:, 2].numpy(), "sample": sample[:, 2].numpy()})

    picked = [_examples(cells, structure, examples) for structure in structures]
    example_images = np.zeros((len(structures), examples, *real.shape[1:]), np.float32)
    example_masks = np.zeros((len(structures), examples, len(MASK_CHANNELS), *real.shape[2:]), bool)
    for row, table in enumerate(picked):
        example = read_cells(store, table["store_index"].to_numpy(), channels=_IMAGE_AND_MASK_CHANNELS)
        example_images[row, :len(table)], example_masks[row, :len(table)] = example[:, :3], example[:, 3:] > 0.5

    manifest = pd.concat([
        pd.DataFrame({"array": "test_cells", "position": np.arange(len(test)), "source": source,
                      "cell_id": test["cell_id"], "store_index": test["store_index"], "structure": test["structure"],
                      "draw": 0, "imaged": imaged}) for source in ("real", "reconstruction", "sample")
    ] + [
        pd.DataFrame({"array": "prior", "position": np.arange(generated_cells), "source": "prior", "cell_id": "",
                      "store_index": -1, "structure": "", "draw": np.arange(generated_cells)}),
        pd.DataFrame({"array": "structures_in_one_cell", "position": np.arange(count), "source": "generated",
                      "cell_id": test.loc[host, "cell_id"], "store_index": int(test.loc[host, "store_index"]),
                      "structure": np.repeat(structures, per_structure),
                      "draw": np.tile(np.arange(per_structure), len(structures))}),
    ] + [
        pd.DataFrame({"array": "structure_examples", "position": row * examples + np.arange(len(table)),
                      "source": "real", "cell_id": table["cell_id"].to_numpy(),
                      "store_index": table["store_index"].to_numpy(), "structure": structure,
                      "draw": np.arange(len(table))})
        for row, (structure, table) in enumerate(zip(structures, picked))
    ], ignore_index=True)
    return Generation(
        prior=prior.numpy(),
        test_cells={"real": real.numpy(), "reconstruction": reconstruction.numpy(), "sample": sample.numpy(),
                    "store_index": test["store_index"].to_numpy()},
        structures_in_one_cell={"images": in_one_cell.numpy(), "host": real[host].numpy(),
                                "host_masks": masks[host], "expected": expected,
                                "expected_draws": np.array(expected_draws),
                                "host_store_index": np.array(int(test.loc[host, "store_index"])),
                                "structures": np.array(structures)},
        structure_examples={"images": example_images, "masks": example_masks, "structures": np.array(structures),
                            "counts": np.array([len(table) for table in picked])},
        truncated={"images": truncated, "kept": np.array(counts), "order": np.array(dimension_order)},
        localization=localization,
        manifest=manifest,
    )

