"""Normalization of every cell crop into one chunked Zarr store, with a per-cell table beside it.

The store ``cells.zarr`` holds one array ``(N, C, Z, Y, X)`` (channels of
:data:`statcell.vocabulary.CROP_CHANNELS`), one cell per chunk, zstd-compressed, with OME-NGFF metadata (axes, voxel
size, channel names and colours). Each intensity channel of each cell, above its background since cropping
(``crop.background``, :func:`statcell.crop.cell_backgrounds`), is scaled to [0, 1]; the masks stay 0/1. Work is spread
over Dask tasks, one per FOV, writing straight into the store, so memory stays bounded however many cells there are.
The store is written under a temporary name and renamed when complete, so a killed job never leaves a store that looks
finished.

The training dataset also gets the paper's five control "structures", built from its own cells (:func:`plan_controls`,
:func:`control_image`): a blank channel, a copy of the DNA channel, a copy of the membrane channel, Gaussian noise
inside the cell (brighter inside the nucleus), and another cell's structure (of another structure class, in this
cell: every crop is centred on its nucleus, so the two nuclei coincide). They are extra cells at the end of the
store, with ids ``dataset/control_<kind>/<source cell>`` and the split of their source cell, so no held-out cell's
image reaches training through its copy. A control class the dataset already holds (the synthetic colony images
them) is not built again.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io
from statcell.seeding import DATA_SEED, numpy_stream, stable_fraction
from statcell.vocabulary import CONTROLS, CROP_CHANNELS, IMAGING_FOV, INTERPHASE

log = logging.getLogger(__name__)

SPLITS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.9), ("test", 1.0))
#: Columns of ``cells.parquet`` naming a built control's source cell (whose reference channels it has) and, for
#: ``control_random_structure``, the cell its structure comes from; empty for every imaged cell.
CONTROL_SOURCE_COLUMN = "control_source_cell_id"
CONTROL_DONOR_COLUMN = "control_donor_cell_id"
#: Mean and SD of the noise control inside the cytoplasm and inside the nucleus (as ``statcell.synth`` draws it),
#: before scaling to [0, 1].
NOISE_CYTOPLASM = (0.3, 0.1)
NOISE_NUCLEUS = (0.6, 0.15)
_CONTROL_BATCH = 32
_COLOURS = {"membrane": "FF33FF", "dna": "2673FF", "structure": "FFE600", "cell_mask": "FFFFFF",
            "nucleus_mask": "AAAAAA"}


def imaged_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The rows of a cell table whose reference images are their own: every cell but the controls built from other
    cells, whose membrane and DNA are copies of their source cell's (:data:`CONTROL_SOURCE_COLUMN`).

    What learns or measures the reference images alone (the reference model, its latent space, the β sweep) takes
    these rows, so that no cell's membrane and DNA count more than once.

    Parameters
    ----------
    cells : DataFrame
        A ``cells.parquet`` table; one without :data:`CONTROL_SOURCE_COLUMN` holds no built control.

    Returns
    -------
    DataFrame
        The imaged rows, in their order, with their index.

    Examples
    --------
    >>> cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "control_source_cell_id": ["", "a", None]})
    >>> imaged_cells(cells)["cell_id"].tolist()
    ['a', 'c']
    """
    if CONTROL_SOURCE_COLUMN not in cells:
        return cells
    return cells[cells[CONTROL_SOURCE_COLUMN].fillna("").to_numpy() == ""]


@dataclass(frozen=True)
class NormalizeSettings:
    """The ``normalize`` section of the configuration.

    Attributes
    ----------
    method : str
        ``max`` scales each channel by its maximum inside the cell; ``percentile`` by the ``percentile``-th
        percentile of its voxels with signal (above 0, i.e. above the background) inside the cell, clipping above 1
        (robust to a few hot pixels).
    percentile : float
        The percentile used by the ``percentile`` method.
    scheduler_address : str or None
        Address of a running Dask scheduler (e.g. ``tcp://10.0.0.5:8786``); ``None`` uses local threads.
    controls : bool
        Build the five control classes where :func:`normalize_cells` is asked to (the training dataset).
    control_cells : int or None
        Cells per built control class; ``None`` (config ``auto``): as many as the median structure class holds.
    store_dtype : str
        How the store holds the values (:data:`statcell.io.STORE_DTYPES`, :func:`statcell.io.encode_cells`).
    """

    method: str = "max"
    percentile: float = 99.9
    scheduler_address: str | None = None
    controls: bool = True
    control_cells: int | None = None
    store_dtype: str = "uint8"

    @classmethod
    def from_config(cls, section: dict) -> NormalizeSettings:
        """Build settings from the validated ``normalize`` config section."""
        count = section["control_cells"]
        return cls(method=section["method"], percentile=section["percentile"],
                   scheduler_address=section["scheduler_address"], controls=section["controls"],
                   control_cells=None if count == "auto" else int(count), store_dtype=section["store_dtype"])


def assign_splits(cell_ids: Sequence[str], fovs: Sequence[str]) -> list[str]:
    """Train/validation/test splits (80/10/10, :data:`SPLITS`) drawn within each FOV by a stable hash of the cell ids.

    The cells of a FOV, ordered by a hash of their ids, take evenly spaced positions ``(i + s) / n`` in [0, 1), the
    start ``s`` a hash of the FOV's id, and each goes to the split whose share of [0, 1) holds its position: a
    systematic sample with a random start. So every FOV gives each split its share of its cells to within one cell
    (exactly 80/10/10 in expectation, whatever its size), and a FOV of ten cells or more has cells in every split.
    A hash of each cell alone leaves the held-out splits to chance: on one colony of the default run 9 of a
    structure's 90 cells, from 4 of its 6 FOVs, where the analyses that take the FOV as their replicate need held-out
    cells in every FOV. A cell's split depends only on the cells of its own FOV, so adding FOVs never moves another
    FOV's cells; a cell that is its own FOV (pre-cropped data without FOV ids) gets the split of its id's hash.

    Parameters
    ----------
    cell_ids : sequence of str
        Cell ids, unique.
    fovs : sequence of str
        The FOV of each cell.

    Returns
    -------
    list of str
        The split of each cell, in the order given.

    Examples
    --------
    >>> splits = assign_splits([f"main/fov_a/{label}" for label in range(10)], ["fov_a"] * 10)
    >>> splits.count("train"), splits.count("val"), splits.count("test")
    (8, 1, 1)
    """
    if len(cell_ids) != len(fovs):
        raise ValueError(f"{len(cell_ids)} cell ids but {len(fovs)} FOVs")
    cells = pd.DataFrame({"cell_id": list(cell_ids), "fov": [str(fov) for fov in fovs]})
    cells["hash"] = [stable_fraction(cell_id) for cell_id in cells["cell_id"]]
    ordered = cells.sort_values(["fov", "hash", "cell_id"])
    by_fov = ordered.groupby("fov", sort=False)
    start = ordered["fov"].map({fov: stable_fraction(fov) for fov in ordered["fov"].unique()})
    position = (by_fov.cumcount() + start) / by_fov["cell_id"].transform("size")
    names = np.array([name for name, _ in SPLITS], dtype=object)
    uppers = np.array([upper for _, upper in SPLITS])
    drawn = pd.Series(names[np.searchsorted(uppers, position.to_numpy(), side="right")], index=ordered.index)
    return drawn.sort_index().tolist()


def normalize_crop(crop: np.ndarray, *, settings: NormalizeSettings) -> np.ndarray:
    """Normalize one cell crop.

    Parameters
    ----------
    crop : ndarray
        ``(5, Z, Y, X)`` as in :data:`statcell.vocabulary.CROP_CHANNELS`: intensities above their background (cropping
        subtracts it) and masked to the cell, masks 0/1.
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
        values = np.clip(out[channel], 0, None) * inside
        # the percentile of the voxels with signal: the DNA is masked to the nucleus and a sparse structure fills a
        # sliver of the cell, so a percentile of every voxel of the cell can be 0 and blank the channel
        signal = values[values > 0]
        scale = (float(signal.max()) if settings.method == "max"
                 else float(np.percentile(signal, settings.percentile))) if signal.size else 0.0
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
        ``split``, ``store_index``, :data:`~statcell.vocabulary.IMAGING_FOV` (the FOV, the dataset's own FOV id for
        pre-cropped data, else the cell id) and every other column.
    rejects : DataFrame
        Dropped cells and FOVs, with their ``reject_reason``.
    """
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["fov_id", "reject_reason"])
    rejected = table["reject_reason"].fillna("") != ""
    cells = table[~rejected].copy()
    precropped = "source_cell_id" in cells and cells["source_cell_id"].notna().all()
    if precropped:  # pre-cropped data keeps its own ids; its fov_id is an import chunk, not a FOV
        ids = [f"{dataset}/{source}" for source in cells["source_cell_id"]]
        fovs = cells[IMAGING_FOV] if IMAGING_FOV in cells else pd.Series("", index=cells.index)
    else:
        ids = [f"{dataset}/{fov}/{label}" for fov, label in zip(cells["fov_id"], cells["label"])]
        fovs = cells["fov_id"]
    fovs = fovs.fillna("").astype(str).to_numpy()
    cells[IMAGING_FOV] = np.where(fovs == "", np.asarray(ids, dtype=object), fovs)
    cells.insert(0, "cell_id", ids)
    cells.insert(1, "dataset", dataset)
    cells.insert(2, "split", assign_splits(ids, cells[IMAGING_FOV].tolist()))
    cells.insert(3, "store_index", np.arange(len(cells)))
    return cells.reset_index(drop=True), table[rejected].reset_index(drop=True)


def plan_controls(cells: pd.DataFrame, *, dataset: str, cells_per_class: int | None = None,
                  classes: Sequence[str] = CONTROLS) -> pd.DataFrame:
    """The control cells to build from a dataset's cells: which cell each copies, and its table row.

    Each control class takes its own deterministic sample of the dataset's non-control cells (the first by a hash
    of the class and the cell id, so a class does not depend on the others, nor on row order). A class the dataset
    already holds is not built (logged). ``control_random_structure`` takes the structure of another cell of
    another structure class and the same split (else any split; with a single structure class, another cell of
    it, logged), chosen by a hash of the control's id.

    Parameters
    ----------
    cells : DataFrame
        The dataset's accepted cells (``cell_id``, ``split``, ``store_index``, ``structure``, ...).
    dataset : str
        Dataset name, the first part of every cell id.
    cells_per_class : int, optional
        Cells per control class (at most the number of non-control cells); ``None``: the median number of cells of
        the dataset's structure classes.
    classes : sequence of str
        The control classes to build, among :data:`CONTROLS` (all by default; a run given a target model builds
        only those the model was trained with).

    Returns
    -------
    DataFrame
        One row per control cell, ordered by class (:data:`CONTROLS`) then source store index: the source
        cell's row with ``cell_id`` ``dataset/<class>/<source id>``, ``structure`` the class, the source's ``split``,
        :data:`CONTROL_SOURCE_COLUMN`, :data:`CONTROL_DONOR_COLUMN` (``""`` unless a random structure),
        ``structure_integrated_intensity`` NaN (no raw structure image), and ``source_index`` / ``donor_index``
        (store indices to build from; ``donor_index`` -1 unless a random structure). No ``store_index``.
    """
    unknown = sorted(set(classes) - set(CONTROLS))
    if unknown:
        raise ValueError(f"unknown control classes {unknown}; controls are {', '.join(CONTROLS)}")
    present = set(cells["structure"]) if len(cells) else set()
    for kind in sorted(present & set(CONTROLS)):
        log.info("the dataset already holds %d cells of %s: not building it again",
                 int((cells["structure"] == kind).sum()), kind)
    kinds = [kind for kind in CONTROLS if kind in classes and kind not in present]
    sources = cells[~cells["structure"].isin(CONTROLS)] if len(cells) else cells
    if not kinds or sources.empty:
        if kinds:
            log.warning("no cells to build the controls %s from", ", ".join(kinds))
        return pd.DataFrame(columns=[*cells.columns, CONTROL_SOURCE_COLUMN, CONTROL_DONOR_COLUMN, "source_index",
                                     "donor_index"])
    if cells_per_class is None:
        cells_per_class = max(1, int(round(float(cells["structure"].value_counts().median()))))
    count = min(cells_per_class, len(sources))
    if sources["structure"].nunique() < 2 and "control_random_structure" in kinds:
        log.warning("a single structure class (%s): control_random_structure takes another cell's structure of the "
                    "same class", sources["structure"].iloc[0])
    plans = []
    for kind in kinds:
        ranked = sorted(sources.index, key=lambda index: stable_fraction(f"{kind}/{sources.at[index, 'cell_id']}"))
        chosen = sources.loc[ranked[:count]].sort_values("store_index").copy()
        chosen[CONTROL_SOURCE_COLUMN] = chosen["cell_id"]
        chosen["cell_id"] = [f"{dataset}/{kind}/{cell_id.removeprefix(f'{dataset}/')}" for cell_id in chosen["cell_id"]]
        chosen["source_index"] = chosen["store_index"].astype(np.int64)
        chosen[CONTROL_DONOR_COLUMN] = ""
        chosen["donor_index"] = np.int64(-1)
        if kind == "control_random_structure":
            for index, row in chosen.iterrows():
                donor = _random_donor(sources, recipient=row)
                chosen.at[index, CONTROL_DONOR_COLUMN] = donor["cell_id"]
                chosen.at[index, "donor_index"] = int(donor["store_index"])
        chosen["structure"] = kind
        plans.append(chosen)
    planned = pd.concat(plans, ignore_index=True).drop(columns="store_index")
    if "structure_integrated_intensity" in planned:
        planned["structure_integrated_intensity"] = np.nan
    log.info("building %d control cells from %d cells: %s", len(planned), len(sources),
             ", ".join(f"{count} {kind}" for kind in kinds))
    return planned


def _random_donor(sources: pd.DataFrame, *, recipient: pd.Series) -> pd.Series:
    """Another cell whose structure a random-structure control takes: of another structure class than the
    ``recipient`` (a source row, its ``cell_id`` already the control's) and the same split where there is one,
    else of another class, else another cell of the same split."""
    source_id = recipient[CONTROL_SOURCE_COLUMN]
    other_class = sources["structure"] != recipient["structure"]
    same_split = sources["split"] == recipient["split"]
    others = sources["cell_id"] != source_id
    for chosen in (other_class & same_split, other_class, others & same_split, others):
        if chosen.any():
            candidates = sources[chosen].sort_values("store_index")
            rng = numpy_stream(DATA_SEED, "control donor", recipient["cell_id"])
            return candidates.iloc[int(rng.integers(len(candidates)))]
    return sources[sources["cell_id"] == source_id].iloc[0]  # a single cell: its own structure


def control_image(cell: np.ndarray, kind: str, *, donor: np.ndarray | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """A control cell built from a normalized cell: its reference channels and masks with a control structure.

    Parameters
    ----------
    cell : ndarray
        Normalized ``(5, Z, Y, X)`` cell (:data:`statcell.vocabulary.CROP_CHANNELS`).
    kind : str
        One of :data:`CONTROLS`: ``control_blank`` (an empty channel), ``control_dna`` /
        ``control_membrane`` (an exact copy of that channel), ``control_noise`` (Gaussian noise inside the cell,
        :data:`NOISE_CYTOPLASM` outside the nucleus and the brighter :data:`NOISE_NUCLEUS` inside it, clipped at 0),
        ``control_random_structure`` (``donor``'s structure channel inside this cell).
    donor : ndarray, optional
        Normalized ``(5, Z, Y, X)`` cell whose structure a random-structure control takes.
    rng : Generator, optional
        Source of the noise control's noise.

    Returns
    -------
    ndarray
        float32 ``(5, Z, Y, X)``: channels 0, 1, 3, 4 of ``cell``; the structure channel zero outside the cell and
        scaled to a maximum of 1 inside it (unless empty).

    Examples
    --------
    >>> cell = np.zeros((5, 2, 2, 2), np.float32); cell[1] = 0.5; cell[3] = 1
    >>> control_image(cell, "control_dna")[2].max().item()
    0.5
    """
    out = np.array(cell, dtype=np.float32, copy=True)
    inside = out[3] > 0
    if kind == "control_blank":
        structure = np.zeros_like(out[2])
    elif kind in ("control_dna", "control_membrane"):
        return _with_structure(out, out[1 if kind == "control_dna" else 0].copy(), scale=False)
    elif kind == "control_noise":
        if rng is None:
            raise ValueError("the noise control needs a random generator")
        nucleus = inside & (out[4] > 0)
        structure = np.where(nucleus, rng.normal(*NOISE_NUCLEUS, out[2].shape),
                             rng.normal(*NOISE_CYTOPLASM, out[2].shape)).astype(np.float32)
    elif kind == "control_random_structure":
        if donor is None:
            raise ValueError("the random-structure control needs a donor cell")
        structure = np.asarray(donor[2], dtype=np.float32).copy()
    else:
        raise ValueError(f"unknown control {kind!r}; controls are {', '.join(CONTROLS)}")
    return _with_structure(out, np.clip(structure, 0, None) * inside, scale=True)


def _with_structure(cell: np.ndarray, structure: np.ndarray, *, scale: bool) -> np.ndarray:
    peak = float(structure.max()) if structure.size else 0.0
    cell[2] = structure / peak if scale and peak > 0 else structure
    return cell


def _control_batch(store: str, plan: pd.DataFrame) -> np.ndarray:
    """Control cells of a slice of :func:`plan_controls`' table, built from the cells already in the store."""
    array = io.open_cells(store)
    out = []
    for row in plan.itertuples():
        cell = io.read_cells(array, [row.source_index], channels=None)[0]
        donor = io.read_cells(array, [row.donor_index], channels=None)[0] if row.donor_index >= 0 else None
        rng = numpy_stream(DATA_SEED, "control noise", row.cell_id)
        out.append(control_image(cell, row.structure, donor=donor, rng=rng))
    return np.stack(out)


#: Columns of a per-cell annotation table (``data.cell_annotations``).
CELL_ANNOTATION_COLUMNS: dict[str, str] = {
    "fov_id": "the FOV's id in the manifest",
    "label": "the cell's label in the FOV's cell segmentation",
    "mitotic_stage": "interphase, a mitotic stage, or empty/unknown",
}


#: Annotations of interphase by its cell-cycle phases, read as ``interphase`` (every other stage counts as mitosis).
_INTERPHASE_NAMES: dict[str, str] = {phase: INTERPHASE for phase in ("g0", "g1", "s", "g2")}


def read_cell_annotations(path: str | Path) -> pd.DataFrame:
    """Read a per-cell annotation table of a manifest's cells (``data.cell_annotations``).

    Parameters
    ----------
    path : path
        CSV with the columns of :data:`CELL_ANNOTATION_COLUMNS` (others are ignored), comma, semicolon or tab
        separated (:func:`statcell.io.read_lab_table`).

    Returns
    -------
    DataFrame
        ``fov_id`` (str), ``label`` (int), ``mitotic_stage`` (str, lower case: ``Interphase`` and the interphase
        phases ``G0``, ``G1``, ``S``, ``G2`` are ``interphase``; ``unknown`` where empty), one row per cell.

    Raises
    ------
    ValueError
        If the file lacks a column, a label is not an integer, or a cell is listed twice; the message names the file
        and the column or cell.
    """
    table = io.read_lab_table(path, dtype={"fov_id": str, "mitotic_stage": str}, keep_default_na=False)
    missing = [column for column in CELL_ANNOTATION_COLUMNS if column not in table.columns]
    if missing:
        described = "; ".join(f"{column} ({CELL_ANNOTATION_COLUMNS[column]})" for column in missing)
        raise ValueError(f"cell annotations {path} lack the column(s): {described}")
    labels = pd.to_numeric(table["label"], errors="coerce")
    if labels.isna().any() or (labels != labels.round()).any():
        row = int(np.flatnonzero((labels.isna() | (labels != labels.round())).to_numpy())[0])
        raise ValueError(f"cell annotations {path}, row {row + 2}: label {table['label'].iloc[row]!r} is not an "
                         "integer")
    stages = table["mitotic_stage"].astype(str).str.strip().str.lower().replace(_INTERPHASE_NAMES)
    annotations = pd.DataFrame({"fov_id": table["fov_id"].astype(str).str.strip(), "label": labels.astype(np.int64),
                                "mitotic_stage": stages.replace("", "unknown")})
    repeated = annotations.duplicated(["fov_id", "label"])
    if repeated.any():
        first = annotations[repeated].iloc[0]
        raise ValueError(f"cell annotations {path}: cell {first['label']} of FOV {first['fov_id']!r} is listed twice")
    return annotations


def _store_attributes(voxel_um: float, shape: tuple[int, ...], dtype: str) -> dict:
    """The store's group attributes: OME-Zarr 0.5 image metadata under ``ome``, the project's own under ``statcell``.

    The first axis, ``cell``, has a custom type (NGFF allows one axis of a type other than space, time and channel);
    ``ome`` holds only what the specification defines, so validators and viewers read it as an image; the channels'
    display window is in stored units (0-255 for uint8). ``statcell.encoding`` states how values are stored.
    """
    top = float(np.iinfo(dtype).max) if np.dtype(dtype).kind == "u" else 1.0
    axes = [{"name": "cell", "type": "cell"}, {"name": "c", "type": "channel"},
            *({"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx")]
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [{"name": "cells", "axes": axes, "datasets": [{
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, *(voxel_um,) * 3]}]}]}],
            "omero": {"channels": [{"label": name, "color": _COLOURS[name], "active": index < 3,
                                    "window": {"start": 0.0, "end": top, "min": 0.0, "max": top}}
                                   for index, name in enumerate(CROP_CHANNELS)]},
        },
        io.STORE_ATTRIBUTE: {"n_cells": shape[0], "channels": list(CROP_CHANNELS),
                             "encoding": {"dtype": str(np.dtype(dtype)), "scale": 1.0 / top,
                                          "meaning": "value = stored * scale"}},
    }


def create_cell_store(path: str | Path, shape: tuple[int, ...], *, voxel_um: float, dtype: str = "uint8"):
    """Create an empty ``cells.zarr`` (replacing any at ``path``) and return its array ``0``.

    One chunk per cell, Zstd-compressed, with OME-Zarr (NGFF) 0.5 metadata naming the channels
    (:data:`CROP_CHANNELS`) and the project's own (cell count, channels, encoding) under the group attribute
    ``statcell``. Values are written encoded (:func:`statcell.io.encode_cells`) and read decoded
    (:func:`statcell.io.read_cells`).

    Parameters
    ----------
    path : path
        Folder of the store.
    shape : tuple of int
        ``(N, C, Z, Y, X)``: cells, channels (as many as :data:`CROP_CHANNELS`), voxels.
    voxel_um : float
        Voxel edge in µm (metadata).
    dtype : str
        The encoding, one of :data:`statcell.io.STORE_DTYPES`.

    Returns
    -------
    zarr.Array
        The array ``0`` of ``dtype``, filled with zeros until written.
    """
    import zarr

    if len(shape) != 5 or shape[1] != len(CROP_CHANNELS):
        raise ValueError(f"a cell store holds (N, {len(CROP_CHANNELS)}, Z, Y, X) cells, got shape {shape}")
    if dtype not in io.STORE_DTYPES:
        raise ValueError(f"unknown store encoding {dtype!r}; encodings are {', '.join(io.STORE_DTYPES)}")
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs.update(_store_attributes(voxel_um, shape, dtype))
    return root.create_array("0", shape=shape, chunks=(1, *shape[1:]), dtype=dtype, fill_value=0,
                             compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=["cell", "c", "z", "y", "x"])


def _store(cells, array, *, settings: NormalizeSettings, threads: int, regions: tuple | None = None) -> None:
    """Compute a Dask array of cells, encoded as the store's array holds them (:func:`statcell.io.encode_cells`), into
    it: on the Dask cluster of ``settings``, else on local threads."""
    import dask
    import dask.array as da

    cells = cells.map_blocks(io.encode_cells, array.dtype, dtype=array.dtype)
    if settings.scheduler_address:
        from distributed import Client

        try:
            client = Client(settings.scheduler_address)
        except OSError as error:  # distributed's connection timeout is an OSError naming only the address
            from statcell.config import ConfigError

            raise ConfigError(f"config key 'normalize.scheduler_address': no Dask scheduler answers at "
                              f"{settings.scheduler_address} ({error}); start one there (dask scheduler), or set the "
                              "key to null to normalize on local threads") from error
        with client:
            log.info("using the Dask scheduler at %s (%d workers)", settings.scheduler_address,
                     len(client.scheduler_info()["workers"]))
            da.store(cells, array, lock=False, compute=True, regions=regions)
    else:
        with dask.config.set(scheduler="threads", num_workers=threads):
            da.store(cells, array, lock=False, compute=True, regions=regions)


def normalize_cells(crop_files: Sequence[str | Path], table_files: Sequence[str | Path], *, store: str | Path,
                    cells_table: str | Path, rejects_table: str | Path, dataset: str, voxel_um: float,
                    settings: NormalizeSettings, threads: int = 1,
                    annotations: pd.DataFrame | None = None, build_controls: bool = False,
                    control_classes: Sequence[str] = CONTROLS) -> pd.DataFrame:
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
        Per-cell annotations joined on (``fov_id``, ``truth_label``), e.g. the synthetic ground truth, or, without a
        ``truth_label`` column, on (``fov_id``, ``label``), e.g. :func:`read_cell_annotations`.
    build_controls : bool
        Add the control classes built from the dataset's cells (:func:`plan_controls`, ``settings.control_cells``
        per class) after its cells, when ``settings.controls`` is on too.
    control_classes : sequence of str
        Which control classes to build (all of :data:`CONTROLS` by default).

    Returns
    -------
    DataFrame
        The accepted cells' table (built controls last).
    """
    import dask
    import dask.array as da
    import zarr

    tables = [pd.read_parquet(path) for path in table_files]
    cells, rejects = cell_table(tables, dataset=dataset)
    if annotations is not None:
        keys = ["fov_id", "truth_label" if "truth_label" in annotations else "label"]
        if keys[1] in cells:
            cells = cells.merge(annotations, on=keys, how="left", suffixes=("", "_truth"))
    counts = [int((table["crop_index"] >= 0).sum()) for table in tables]
    if not crop_files:
        raise ValueError(f"no FOVs to normalize for dataset {dataset}")
    with np.load(crop_files[0]) as first:  # every FOV's archive holds (n, C, Z, Y, X), n possibly 0
        crop_shape = tuple(first["crops"].shape[1:])
    controls = None
    if build_controls and settings.controls:
        controls = plan_controls(cells, dataset=dataset, cells_per_class=settings.control_cells,
                                 classes=control_classes)
    elif build_controls:
        log.info("normalize.controls is off: no control classes built")
    n_controls = 0 if controls is None else len(controls)
    if controls is not None:
        cells = cells.assign(**{CONTROL_SOURCE_COLUMN: "", CONTROL_DONOR_COLUMN: ""})
    shape = (int(sum(counts)) + n_controls, *crop_shape)

    # Absolute paths: the workers of a Dask cluster may run in another directory, or on another node.
    store = Path(store).resolve()
    partial = Path(f"{store}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    array = create_cell_store(partial, shape, voxel_um=voxel_um, dtype=settings.store_dtype)
    pieces = [da.from_delayed(dask.delayed(_normalized_fov)(str(Path(path).resolve()), settings),
                              shape=(count, *crop_shape),
                              dtype=np.float32) for path, count in zip(crop_files, counts) if count]
    if pieces:
        stacked = da.concatenate(pieces, axis=0)
        log.info("normalizing %d cells from %d crop files into %s", shape[0] - n_controls, len(pieces), store)
        _store(stacked, array, settings=settings, threads=threads)
    if n_controls:  # built from the normalized cells, now in the store
        offset = shape[0] - n_controls
        batches = [controls.iloc[start:start + _CONTROL_BATCH] for start in range(0, n_controls, _CONTROL_BATCH)]
        built = da.concatenate([da.from_delayed(dask.delayed(_control_batch)(str(partial), batch),
                                                shape=(len(batch), *crop_shape), dtype=np.float32)
                                for batch in batches], axis=0)
        _store(built, array, settings=settings, threads=threads, regions=(slice(offset, shape[0]),))
        built_rows = controls.drop(columns=["source_index", "donor_index"]).assign(
            store_index=np.arange(offset, shape[0]))
        cells = pd.concat([cells, built_rows[cells.columns]], ignore_index=True)
    root = zarr.open_group(partial, mode="r+")  # what ties cells.parquet to this store (io.read_cell_table)
    root.attrs[io.STORE_ATTRIBUTE] = {**root.attrs[io.STORE_ATTRIBUTE], "cell_ids_sha256": io.cell_ids_digest(cells)}
    shutil.rmtree(store, ignore_errors=True)
    partial.rename(store)
    io.write_table(cells, cells_table)
    io.write_table(rejects, rejects_table)
    return cells

