"""The integrated cell: every structure the target model knows, predicted in a cell from its membrane and DNA.

The target model is p(x_structure | x_reference, t) with a latent z ~ N(0, I) independent of the reference, so in a
cell where structure t was not imaged the distribution of its image is the decoder's output over that prior. For each
cell and structure :func:`predict_structures` writes

- the **mean** prediction: the decoder at z = 0, the mean of the latent distribution (the "posterior mean" of a cell
  whose structure is unknown; where it was imaged, ``check-models`` reconstructs it from its own posterior mean);
- **samples**: the decoder at independent draws of z, so the spread of plausible locations is visible.

Cells come from a store (any embedded dataset, chosen by id, or a few test cells, one of each structure first), from
a new image file (segmented, cropped and normalized by the pipeline's own code, on the grid the model was trained on:
:func:`cells_from_image`), or are fully generated (a reference drawn from the reference model's prior, then every
structure drawn in it). Each cell becomes one OME-TIFF: membrane, DNA, each structure's mean prediction, then the
samples, with channel names and the voxel size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch

from statcell.seeding import integer_seed
from statcell.vocabulary import showcase_order

#: Store channels of a cell's reference image: membrane and DNA.
REFERENCE_CHANNELS: tuple[int, int] = (0, 1)


@dataclass(frozen=True)
class PredictSettings:
    """The ``predict`` section of the configuration.

    Attributes
    ----------
    dataset : str
        Dataset whose cells the rule predicts in.
    cells : tuple of str
        Cell ids to predict in; empty: the first ``count`` test cells, one of each structure first.
    count : int
        Test cells when ``cells`` is empty.
    samples : int
        Samples per structure and cell.
    generated : int
        Fully generated cells (references from the prior).
    """

    dataset: str
    cells: tuple[str, ...]
    count: int
    samples: int
    generated: int

    @classmethod
    def from_section(cls, section: Mapping) -> PredictSettings:
        """Settings from the validated ``predict`` section."""
        return cls(dataset=str(section["dataset"]), cells=tuple(str(cell) for cell in section["cells"]),
                   count=int(section["count"]), samples=int(section["samples"]),
                   generated=int(section["generated"]))


def choose_cells(cells: pd.DataFrame, *, ids: Sequence[str], count: int, dataset: str = "the dataset") -> pd.DataFrame:
    """The cells to predict in: those named, in the order named, else a few test cells.

    Parameters
    ----------
    cells : DataFrame
        A dataset's ``cells.parquet`` (``cell_id``, ``split``, ``structure``, ``store_index``).
    ids : sequence of str
        Cell ids (one named twice is predicted in once); empty: the first ``count`` test cells (all cells where
        there is no test split), one of each structure first, controls last.
    count : int
        Cells when no ids are given.
    dataset : str
        How to name the dataset in an error.

    Raises
    ------
    ValueError
        If an id is not in the table (naming the first missing ones).
    """
    if ids:
        known = set(cells["cell_id"])
        missing = [cell for cell in ids if cell not in known]
        if missing and not known:
            raise ValueError(f"{dataset} has no cells")
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(f"cell ids not in {dataset}: {', '.join(missing[:5])}{more} "
                             f"(ids look like {cells['cell_id'].iloc[0]!r})")
        return cells.set_index("cell_id").loc[list(dict.fromkeys(ids))].reset_index()  # each cell once
    pool = cells[cells["split"] == "test"] if (cells["split"] == "test").any() else cells
    pool = pool.sort_values("cell_id")
    return pool.iloc[showcase_order(pool["structure"].astype(str).tolist())[:count]].reset_index(drop=True)


@torch.no_grad()
def predict_structures(references: np.ndarray, keys: Sequence[str], *, target_model: torch.nn.Module,
                       samples: int, seed: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Every structure of the target model predicted in each cell from its membrane and DNA.

    Parameters
    ----------
    references : ndarray
        float32 ``(N, 2, Z, Y, X)``: membrane and DNA, normalized as the model's training data.
    keys : sequence of str
        One name per cell (its id): cell ``i``'s samples come from the stream named by ``seed`` and ``keys[i]``, so
        they do not depend on which other cells are predicted or on the batch size.
    target_model : TargetVAE
        The trained target model; its structures are in the order of its card.
    samples : int
        Samples of each structure per cell (0: the mean only).
    seed : int
        Seed of the samples.
    batch_size : int
        Images per forward pass (memory only).

    Returns
    -------
    mean : ndarray
        float32 ``(N, S, Z, Y, X)``: the decoder at z = 0, clipped to [0, 1].
    draws : ndarray
        float32 ``(N, S, samples, Z, Y, X)``: the decoder at z drawn from the prior, clipped to [0, 1].
    """
    target_model.eval()
    structures = target_model.config.n_classes
    latent_dim = target_model.config.latent_dim
    like = next(target_model.parameters())
    per_cell = structures * (1 + samples)
    labels = torch.arange(structures).repeat_interleave(1 + samples)
    outputs = []
    for index, key in enumerate(keys):
        generator = torch.Generator().manual_seed(integer_seed(seed, "prediction", str(key)))
        z = torch.randn(structures, 1 + samples, latent_dim, generator=generator)
        z[:, 0] = 0.0  # the mean prediction
        reference = torch.from_numpy(np.ascontiguousarray(references[index])).to(like.device, like.dtype)
        decoded = []
        for start in range(0, per_cell, batch_size):
            stop = min(start + batch_size, per_cell)
            decoded.append(target_model.decode(z.reshape(per_cell, latent_dim)[start:stop].to(like.device, like.dtype),
                                               reference.expand(stop - start, *reference.shape),
                                               labels[start:stop].to(like.device)))
        outputs.append(torch.cat(decoded).clamp(0, 1).float().cpu().reshape(structures, 1 + samples,
                                                                              *references.shape[2:]))
    stacked = torch.stack(outputs).numpy() if outputs else np.zeros(
        (0, structures, 1 + samples, *references.shape[2:]), np.float32)
    return stacked[:, :, 0], stacked[:, :, 1:]


@torch.no_grad()
def generate_references(reference_model: torch.nn.Module, count: int, *, seed: int) -> np.ndarray:
    """Reference images (membrane, DNA) drawn from the reference model's prior, ``(count, 2, Z, Y, X)`` in [0, 1]."""
    reference_model.eval()
    generator = torch.Generator().manual_seed(integer_seed(seed, "prediction", "generated references"))
    z = torch.randn(count, reference_model.config.latent_dim, generator=generator)
    like = next(reference_model.parameters())
    return reference_model.decode(z.to(like.device, like.dtype)).clamp(0, 1).float().cpu().numpy()


def integrated_cell(reference: np.ndarray, mean: np.ndarray, draws: np.ndarray, *,
                    structures: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """One cell's image with every structure: membrane, DNA, each structure's mean, then its samples.

    Parameters
    ----------
    reference : ndarray
        ``(2, Z, Y, X)`` membrane and DNA.
    mean : ndarray
        ``(S, Z, Y, X)`` mean predictions.
    draws : ndarray
        ``(S, K, Z, Y, X)`` samples.
    structures : sequence of str
        The S structure names.

    Returns
    -------
    image : ndarray
        float32 ``(2 + S * (1 + K), Z, Y, X)``.
    names : list of str
        Channel names: ``membrane``, ``dna``, each structure, then ``<structure> sample <k>`` (k from 1).

    Examples
    --------
    >>> image, names = integrated_cell(np.zeros((2, 1, 1, 1)), np.ones((2, 1, 1, 1)), np.ones((2, 1, 1, 1, 1)),
    ...                                structures=["golgi", "nucleoli"])
    >>> image.shape, names
    ((6, 1, 1, 1), ['membrane', 'dna', 'golgi', 'nucleoli', 'golgi sample 1', 'nucleoli sample 1'])
    """
    samples = draws.shape[1]
    names = ["membrane", "dna", *structures,
             *(f"{structure} sample {k + 1}" for k in range(samples) for structure in structures)]
    image = np.concatenate([reference, mean, draws.transpose(1, 0, *range(2, draws.ndim)).reshape(
        samples * len(structures), *draws.shape[2:])])
    return image.astype(np.float32), names


#: File-name endings of images, longest first, that an image's name leaves out.
IMAGE_SUFFIXES: tuple[str, ...] = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr")


def image_name(path: str | Path) -> str:
    """The name a new image's cells are called by (``<name>/<label>``): its file name without the image suffix, and,
    for an image inside a Zarr container (a plate's field ``plate.ome.zarr/A/1/0``), the path from the container's
    name on, joined by ``-``.

    Examples
    --------
    >>> image_name("data/exp.a.ome.tiff"), image_name("data/exp.b.ome.tiff"), image_name("fov.TIF")
    ('exp.a', 'exp.b', 'fov')
    >>> image_name("screens/plate.ome.zarr/A/1/0"), image_name("image.zarr/0/")
    ('plate-A-1-0', 'image-0')
    """
    parts = PurePath(path).parts
    containers = [index for index, part in enumerate(parts[:-1]) if part.lower().endswith(".zarr")]
    named = list(parts[containers[-1]:]) if containers else [parts[-1]]
    for suffix in IMAGE_SUFFIXES:
        if named[0].lower().endswith(suffix) and len(named[0]) > len(suffix):
            named[0] = named[0][: -len(suffix)]
            break
    return "-".join(named)


def cells_from_image(channels: np.ndarray, *, spacing: tuple[float, float, float], segmentation: Mapping,
                     crop: Mapping, normalize: Mapping, name: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment, crop and normalize the cells of a new image with the pipeline's own code.

    Parameters
    ----------
    channels : ndarray
        ``(2, Z, Y, X)`` membrane and DNA (or ``(3, ...)`` with a structure channel).
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm.
    segmentation, crop, normalize : mapping
        The validated config sections; ``crop`` already holds the model's crop shape and voxel size.
    name : str
        The image's name: cell ids are ``<name>/<label>``.

    Returns
    -------
    cells : ndarray
        float32 ``(N, 5, Z, Y, X)`` normalized crops of the accepted cells (:data:`statcell.vocabulary.CROP_CHANNELS`).
    table : DataFrame
        Every cell found, accepted or not (``reject_reason``), with ``cell_id`` and the crop's measurements.
    """
    from statcell import crop as cropping
    from statcell import normalize as normalizing
    from statcell import segment

    if channels.shape[0] == 2:
        channels = np.concatenate([channels, np.zeros_like(channels[:1])])
    settings = segment.SegmentationSettings.from_config(segmentation)
    nuclei = segment.segment_nuclei(channels[1], spacing=spacing, settings=settings)
    labels = segment.segment_cells(channels[0], nuclei, spacing=spacing, settings=settings)
    crops, table = cropping.crop_cells(channels.astype(np.float32), labels, nuclei, spacing=spacing,
                                       settings=cropping.CropSettings.from_config(crop))
    table.insert(0, "cell_id", [f"{name}/{label}" for label in table["label"]])
    normalized = [normalizing.normalize_crop(cell, settings=normalizing.NormalizeSettings.from_config(normalize))
                  for cell in crops]
    stack = np.stack(normalized) if normalized else np.zeros((0, *crops.shape[1:]), np.float32)
    return stack, table
