"""Normalization of every cell crop into one chunked Zarr store, with a per-cell table beside it.

The store ``cells.zarr`` holds one array ``(N, C, Z, Y, X)`` (channels of :data:`statcell.crop.CROP_CHANNELS`), one
cell per chunk, zstd-compressed, with OME-NGFF metadata (axes, voxel size, channel names and colours). Each intensity
channel of each cell has its background (the most populous intensity inside the cell) subtracted, negatives clipped
and is scaled to [0, 1]; the masks stay 0/1. Work is spread over Dask tasks, one per FOV, writing straight into the
store, so memory stays bounded however many cells there are. The store is written under a temporary name and renamed
when complete, so a killed job never leaves a store that looks finished.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io
from statcell.crop import CROP_CHANNELS, most_populous_intensity

log = logging.getLogger(__name__)

SPLITS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.9), ("test", 1.0))
_COLOURS = {"membrane": "FF33FF", "dna": "2673FF", "structure": "FFE600", "cell_mask": "FFFFFF",
            "nucleus_mask": "AAAAAA"}


@dataclass(frozen=True)
class NormalizeSettings:
    """The ``normalize`` section of the configuration.

    Attributes
    ----------
    method : str
        ``max`` scales each channel by its maximum inside the cell; ``percentile`` by its ``percentile``-th
        percentile inside the cell, clipping above 1 (robust to a few hot pixels).
    percentile : float
        The percentile used by the ``percentile`` method.
    scheduler_address : str or None
        Address of a running Dask scheduler (e.g. ``tcp://10.0.0.5:8786``); ``None`` uses local threads.
    """

    method: str = "max"
    percentile: float = 99.9
    scheduler_address: str | None = None

    @classmethod
    def from_config(cls, section: dict) -> NormalizeSettings:
        """Build settings from the validated ``normalize`` config section."""
        return cls(method=section["method"], percentile=section["percentile"],
                   scheduler_address=section["scheduler_address"])


def split_of(cell_id: str) -> str:
    """Train/validation/test split (80/10/10) from a stable hash of the cell id; adding cells never moves others.

    Examples
    --------
    >>> split_of("main/golgi_00/7") in ("train", "val", "test")
    True
    """
    fraction = int.from_bytes(hashlib.sha256(cell_id.encode()).digest()[:8], "little") / 2.0**64
    return next(name for name, upper in SPLITS if fraction < upper)


def normalize_crop(crop: np.ndarray, *, settings: NormalizeSettings) -> np.ndarray:
    """Normalize one cell crop.

    Parameters
    ----------
    crop : ndarray
        ``(5, Z, Y, X)`` as in :data:`statcell.crop.CROP_CHANNELS` (intensities masked to the cell, masks 0/1).
    settings : NormalizeSettings
        Scaling method.

    Returns
    -------
    ndarray
        float32 ``(5, Z, Y, X)``; intensity channels in [0, 1], zero outside the cell; masks unchanged.
    """
    out = crop.astype(np.float32)
    inside = crop[3] > 0
    if not inside.any():
        return np.zeros_like(out)
    for channel in range(3):
        values = out[channel] - most_populous_intensity(crop[channel][inside])
        values = np.clip(values, 0, None) * inside
        scale = (float(values[inside].max()) if settings.method == "max"
                 else float(np.percentile(values[inside], settings.percentile)))
        out[channel] = np.clip(values / scale, 0, 1) if scale > 0 else 0.0
    return out


def _normalized_fov(crop_file: str, settings: NormalizeSettings) -> np.ndarray:
    with np.load(crop_file) as archive:
        crops = archive["crops"]
    return np.stack([normalize_crop(crop, settings=settings) for crop in crops]) if len(crops) else \
        np.zeros((0, *crops.shape[1:]), dtype=np.float32)


def cell_table(tables: Sequence[pd.DataFrame], *, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split per-FOV crop tables into the accepted cells (with ids, splits, store indices) and the rejects.

    Parameters
    ----------
    tables : sequence of DataFrame
        Per-FOV tables written by ``crop_cells`` (columns ``fov_id``, ``label``, ``reject_reason``,
        ``crop_index``, ...), in store order.
    dataset : str
        Dataset name, the first part of every cell id.

    Returns
    -------
    cells : DataFrame
        Accepted cells: ``cell_id`` (``dataset/fov/label``, or ``dataset/source_cell_id`` for pre-cropped data),
        ``split``, ``store_index`` and every other column.
    rejects : DataFrame
        Dropped cells and FOVs, with their ``reject_reason``.
    """
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["fov_id", "reject_reason"])
    rejected = table["reject_reason"].fillna("") != ""
    cells = table[~rejected].copy()
    if "source_cell_id" in cells and cells["source_cell_id"].notna().all():  # pre-cropped data keeps its own ids
        ids = [f"{dataset}/{source}" for source in cells["source_cell_id"]]
    else:
        ids = [f"{dataset}/{fov}/{label}" for fov, label in zip(cells["fov_id"], cells["label"])]
    cells.insert(0, "cell_id", ids)
    cells.insert(1, "dataset", dataset)
    cells.insert(2, "split", [split_of(cell_id) for cell_id in cells["cell_id"]])
    cells.insert(3, "store_index", np.arange(len(cells)))
    return cells.reset_index(drop=True), table[rejected].reset_index(drop=True)


def _ngff_attributes(voxel_um: float, shape: tuple[int, ...]) -> dict:
    axes = [{"name": "cell", "type": "cell"}, {"name": "c", "type": "channel"},
            *({"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx")]
    return {"ome": {
        "version": "0.5",
        "multiscales": [{"name": "cells", "axes": axes, "datasets": [{
            "path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, *(voxel_um,) * 3]}]}]}],
        "omero": {"channels": [{"label": name, "color": _COLOURS[name], "active": index < 3,
                                "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}}
                               for index, name in enumerate(CROP_CHANNELS)]},
        "statcell": {"n_cells": shape[0], "channels": list(CROP_CHANNELS)},
    }}


def create_cell_store(path: str | Path, shape: tuple[int, ...], *, voxel_um: float):
    """Create an empty ``cells.zarr`` (replacing any at ``path``) and return its array ``0``.

    One chunk per cell, Zstd-compressed, with OME-NGFF 0.5 metadata naming the channels (:data:`CROP_CHANNELS`).

    Parameters
    ----------
    path : path
        Folder of the store.
    shape : tuple of int
        ``(N, C, Z, Y, X)``: cells, channels (as many as :data:`CROP_CHANNELS`), voxels.
    voxel_um : float
        Voxel edge in µm (metadata).

    Returns
    -------
    zarr.Array
        The float32 array ``0``, filled with zeros until written.
    """
    import zarr

    if len(shape) != 5 or shape[1] != len(CROP_CHANNELS):
        raise ValueError(f"a cell store holds (N, {len(CROP_CHANNELS)}, Z, Y, X) cells, got shape {shape}")
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs.update(_ngff_attributes(voxel_um, shape))
    return root.create_array("0", shape=shape, chunks=(1, *shape[1:]), dtype="float32", fill_value=0.0,
                             compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=["cell", "c", "z", "y", "x"])


def normalize_cells(crop_files: Sequence[str | Path], table_files: Sequence[str | Path], *, store: str | Path,
                    cells_table: str | Path, rejects_table: str | Path, dataset: str, voxel_um: float,
                    settings: NormalizeSettings, threads: int = 1,
                    annotations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Normalize every crop of a dataset into ``cells.zarr`` and write ``cells.parquet`` and the rejects beside it.

    Parameters
    ----------
    crop_files, table_files : sequence of path
        Per-FOV ``.npz`` crops (array ``crops``) and their ``.parquet`` tables, in the same order.
    store : path
        The Zarr store to write (replaced if present).
    cells_table, rejects_table : path
        Parquet tables of the accepted and dropped cells.
    dataset : str
        Dataset name (first part of the cell ids).
    voxel_um : float
        Voxel edge of the crops (metadata).
    settings : NormalizeSettings
        Scaling method and Dask scheduler.
    threads : int
        Local Dask threads when no scheduler address is given.
    annotations : DataFrame, optional
        Per-cell annotations joined on (``fov_id``, ``truth_label``), e.g. the synthetic ground truth.

    Returns
    -------
    DataFrame
        The accepted cells' table.
    """
    import dask
    import dask.array as da

    tables = [pd.read_parquet(path) for path in table_files]
    cells, rejects = cell_table(tables, dataset=dataset)
    if annotations is not None and "truth_label" in cells:
        cells = cells.merge(annotations, on=["fov_id", "truth_label"], how="left", suffixes=("", "_truth"))
    counts = [int((table["crop_index"] >= 0).sum()) for table in tables]
    if not crop_files:
        raise ValueError(f"no FOVs to normalize for dataset {dataset}")
    with np.load(crop_files[0]) as first:  # every FOV's archive holds (n, C, Z, Y, X), n possibly 0
        crop_shape = tuple(first["crops"].shape[1:])
    shape = (int(sum(counts)), *crop_shape)

    # Absolute paths: the workers of a Dask cluster may run in another directory, or on another node.
    store = Path(store).resolve()
    partial = Path(f"{store}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    array = create_cell_store(partial, shape, voxel_um=voxel_um)
    pieces = [da.from_delayed(dask.delayed(_normalized_fov)(str(Path(path).resolve()), settings),
                              shape=(count, *crop_shape),
                              dtype=np.float32) for path, count in zip(crop_files, counts) if count]
    if pieces:
        stacked = da.concatenate(pieces, axis=0)
        log.info("normalizing %d cells from %d FOVs into %s", shape[0], len(pieces), store)
        if settings.scheduler_address:
            from distributed import Client

            with Client(settings.scheduler_address) as client:
                log.info("using the Dask scheduler at %s (%d workers)", settings.scheduler_address,
                         len(client.scheduler_info()["workers"]))
                da.store(stacked, array, lock=False, compute=True)
        else:
            with dask.config.set(scheduler="threads", num_workers=threads):
                da.store(stacked, array, lock=False, compute=True)
    shutil.rmtree(store, ignore_errors=True)
    partial.rename(store)
    io.write_table(cells, cells_table)
    io.write_table(rejects, rejects_table)
    return cells

