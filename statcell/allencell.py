"""Pre-cropped single-cell datasets of the Allen Institute (``data.source: allencell``): they join at normalization.

Each supported dataset is one declared :class:`Layout` in :data:`LAYOUTS` (its columns, the file and channel of each
role, the stored axis order, where the voxel size comes from, and whether the crops are already registered); the
readers below hold no per-dataset branches.

``pipeline4``
    The Allen Institute's Pipeline 4 single-cell package, on which the paper trained (``save_reg_path``): one
    registered uint8 ``(C, Z, Y, X)`` TIFF per cell without channel names, channels 0 nucleus segmentation, 1 cell
    segmentation, 2 DNA, 3 membrane, 4 structure, 5 transmitted light (per-cell columns ``ch_*`` override these);
    the cell's long axis lies along the file's Y axis, so it is turned onto X by a rotation.
``hipsc_single_cell``
    The hiPSC Single-Cell Image Dataset (Viana et al. 2023): per cell an OME-TIFF of raw channels (``crop_raw``,
    ``(Z, C, Y, X)``) and one of masks (``crop_seg``), named by the ``name_dict`` column; bounding boxes cut from the
    FOV, unaligned and unmasked, so they take the full :func:`statcell.crop.align_cell` path with this cell's masks.

Every imported cell becomes a crop of :data:`statcell.vocabulary.CROP_CHANNELS` at the configured voxel size, masked
as the paper does (DNA by the nucleus, membrane and structure by the cell).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from statcell import io
from statcell.crop import (BACKGROUND_COLUMNS, CROP_CHANNELS, CropSettings, align_cell, cell_backgrounds,
                           mask_channels, measure_cell, place_at_centre, resample, subtract_background)
from statcell.vocabulary import IMAGING_FOV, INTERPHASE

log = logging.getLogger(__name__)

#: The roles an imported cell needs, in the order :func:`import_cell` reads them.
ROLES: tuple[str, ...] = ("membrane", "dna", "structure", "cell_segmentation", "nucleus_segmentation")

#: Structure names as the Allen Institute's datasets write them (gene symbols of the hiPSC dataset, display names of
#: Pipeline 4) → statcell's names. ``allencell.structure_names`` in the config extends or overrides it.
STRUCTURE_NAMES: dict[str, str] = {
    # hiPSC Single-Cell Image Dataset (`structure_name`: the tagged gene)
    "AAVS1": "plasma_membrane", "ACTB": "actin_filaments", "ACTN1": "actin_bundles", "ATP2A2": "er_serca2",
    "CETN2": "centrioles", "CTNNB1": "adherens_junctions", "DSP": "desmosomes", "FBL": "nucleoli_dfc",
    "GJA1": "gap_junctions", "HIST1H2BJ": "histones", "LAMP1": "lysosomes", "LMNB1": "nuclear_envelope",
    "MYH10": "actomyosin_bundles", "NPM1": "nucleoli_gc", "NUP153": "nuclear_pores", "PXN": "matrix_adhesions",
    "RAB5A": "endosomes", "SEC61B": "er_sec61b", "SLC25A17": "peroxisomes", "SMC1A": "cohesins",
    "SON": "nuclear_speckles", "ST6GAL1": "golgi", "TJP1": "tight_junctions", "TOMM20": "mitochondria",
    "TUBA1B": "microtubules",
    # Pipeline 4 (`StructureDisplayName`), the paper's 24 classes
    "Actin filaments": "actin_filaments", "Actomyosin bundles": "actomyosin_bundles",
    "Adherens junctions": "adherens_junctions", "Centrin-2": "centrioles", "Centrioles": "centrioles", "Desmosomes": "desmosomes",
    "Endoplasmic reticulum": "er_sec61b", "Endosomes": "endosomes", "Gap junctions": "gap_junctions",
    "Golgi": "golgi", "Lysosome": "lysosomes", "Matrix adhesions": "matrix_adhesions",
    "Microtubules": "microtubules", "Mitochondria": "mitochondria", "Nuclear envelope": "nuclear_envelope",
    "Nucleolus (Dense Fibrillar Component)": "nucleoli_dfc", "Nucleolus (Granular Component)": "nucleoli_gc",
    "Peroxisomes": "peroxisomes", "Plasma membrane": "plasma_membrane", "Tight junctions": "tight_junctions",
    "Control - DNA": "control_dna", "Control - Memb": "control_membrane", "Control - Blank": "control_blank",
    "Control - Noise": "control_noise", "Control - Random": "control_random_structure",
}


@dataclass(frozen=True)
class ChannelSource:
    """Where one role's channel lies in a layout's files.

    Attributes
    ----------
    file : str
        Which of the layout's files holds it (a key of :attr:`Layout.files`).
    index : int, optional
        Its position in that file, for files that do not name their channels.
    name : str, optional
        Its name in the layout's channel-name column, for files named there (read by name, never by position).
    column : str, optional
        Per-cell CSV column giving its position; used where the CSV has it, else ``index``.
    """

    file: str
    index: int | None = None
    name: str | None = None
    column: str | None = None


@dataclass(frozen=True)
class Layout:
    """One dataset's layout: everything the reader needs to know about its files, declared as data.

    Attributes
    ----------
    name : str
        Key in :data:`LAYOUTS` and value of ``allencell.layout``.
    files : mapping of str to str
        File role (``image``, ``segmentation``) → CSV column holding that file's path.
    axes : str
        Axis order of the stored arrays (a permutation of ``CZYX``) where the files do not state it.
    channels : mapping of str to ChannelSource
        Role (:data:`ROLES`) → where its channel is.
    cell_id_column, structure_column : str
        Columns with the cell id and the structure name.
    mitotic_column : str
        Column with the mitotic annotation (optional in the CSV); its values map through ``mitotic_stages``.
    mitotic_stages : mapping of str to str
        The dataset's mitotic annotation → statcell's classes (:data:`statcell.vocabulary.MITOTIC_STAGES`).
    fov_column : str
        Column with the id of the FOV each cell was imaged in (optional in the CSV): the replicate unit of the
        statistics (:data:`statcell.vocabulary.IMAGING_FOV`).
    channel_names_column : str, optional
        Column holding a Python-literal dict ``{file column: [channel names]}`` (read with ``ast.literal_eval``).
    voxel_size_um : float, optional
        Isotropic voxel size of the files, where the CSV does not give it.
    voxel_size_column : str, optional
        Column holding a Python-literal ``[z, y, x]`` voxel size in µm, per cell.
    registered : bool
        True if the files are already aligned, centred and cropped to the cell (only turned and centred here);
        False for raw bounding boxes cut from the FOV (the full :func:`statcell.crop.align_cell` path).
    long_axis : str
        For registered files, the file axis (``y`` or ``x``) along which the cell's long axis lies.
    path_depth : int
        Trailing components of an absolute path kept when it is rebased on ``allencell.image_root``.
    """

    name: str
    files: Mapping[str, str]
    axes: str
    channels: Mapping[str, ChannelSource]
    cell_id_column: str
    structure_column: str
    mitotic_column: str
    mitotic_stages: Mapping[str, str]
    fov_column: str = "FOVId"
    channel_names_column: str | None = None
    voxel_size_um: float | None = None
    voxel_size_column: str | None = None
    registered: bool = False
    long_axis: str = "x"
    path_depth: int = 2


LAYOUTS: dict[str, Layout] = {
    "pipeline4": Layout(
        name="pipeline4",
        files={"image": "save_reg_path"},
        axes="CZYX",
        channels={
            "membrane": ChannelSource("image", index=3, column="ch_memb"),
            "dna": ChannelSource("image", index=2, column="ch_dna"),
            "structure": ChannelSource("image", index=4, column="ch_struct"),
            "cell_segmentation": ChannelSource("image", index=1, column="ch_seg_cell"),
            "nucleus_segmentation": ChannelSource("image", index=0, column="ch_seg_nuc"),
        },
        cell_id_column="CellId",
        structure_column="StructureDisplayName",
        mitotic_column="MitoticStateId/Name",
        mitotic_stages={"M0": "interphase", "M1/M2": "prophase", "M3": "early_prometaphase",
                        "M4/M5": "prometaphase_metaphase", "M6/M7": "anaphase_telophase"},
        voxel_size_um=0.29,
        registered=True,
        long_axis="y",
    ),
    "hipsc_single_cell": Layout(
        name="hipsc_single_cell",
        files={"image": "crop_raw", "segmentation": "crop_seg"},
        axes="ZCYX",
        channels={
            "membrane": ChannelSource("image", name="membrane"),
            "dna": ChannelSource("image", name="dna"),
            "structure": ChannelSource("image", name="structure"),
            "cell_segmentation": ChannelSource("segmentation", name="membrane_segmentation"),
            "nucleus_segmentation": ChannelSource("segmentation", name="dna_segmentation"),
        },
        cell_id_column="CellId",
        structure_column="structure_name",
        mitotic_column="cell_stage",
        mitotic_stages={"M0": "interphase", "M1M2": "prophase", "M3": "early_prometaphase",
                        "M4M5": "prometaphase_metaphase", "M6M7_complete": "anaphase_telophase",
                        "M6M7_single": "anaphase_telophase"},
        channel_names_column="name_dict",
        voxel_size_column="scale_micron",
        registered=False,
    ),
}

_COLUMN_KEYS = {"cell_id": "cell_id_column", "structure": "structure_column", "mitotic_state": "mitotic_column",
                "fov": "fov_column"}


@dataclass(frozen=True)
class AllenCellSettings:
    """The ``allencell`` section of the configuration, with the layout's defaults and the config's overrides applied.

    Attributes
    ----------
    csv : str
        The dataset's CSV (``data_jobs_out.csv`` or ``metadata.csv``).
    layout : Layout
        The effective layout (the declared one with ``allencell.columns``, ``channels`` and ``voxel_size_um``
        overrides).
    image_root : str, optional
        Folder the CSV's paths are taken from (see :func:`statcell.io.resolve_paths`).
    structure_names : mapping of str to str
        Dataset structure names → statcell names (:data:`STRUCTURE_NAMES` plus the config's).
    chunk_size : int
        Cells per import job.
    """

    csv: str
    layout: Layout = LAYOUTS["pipeline4"]
    image_root: str | None = None
    structure_names: Mapping[str, str] = field(default_factory=lambda: dict(STRUCTURE_NAMES))
    chunk_size: int = 200

    @classmethod
    def from_config(cls, section: dict) -> AllenCellSettings:
        """Build settings from the validated ``allencell`` config section (null entries keep the layout's)."""
        if not section.get("csv"):
            raise ValueError("data.source is `allencell` but allencell.csv is not set")
        layout = LAYOUTS[section.get("layout", "pipeline4")]
        columns = {key: value for key, value in (section.get("columns") or {}).items() if value is not None}
        changes: dict = {_COLUMN_KEYS[key]: value for key, value in columns.items() if key in _COLUMN_KEYS}
        files = {role: columns.get(role, column) for role, column in layout.files.items()}
        unknown = sorted(set(columns) - set(_COLUMN_KEYS) - set(layout.files))
        if unknown:
            raise ValueError(f"allencell.columns.{unknown[0]}: layout {layout.name} has no file {unknown[0]!r} "
                             f"(it reads {', '.join(layout.files)})")
        channels = dict(layout.channels)
        for role, value in (section.get("channels") or {}).items():
            if value is None:
                continue
            by_name = channels[role].name is not None
            if by_name != isinstance(value, str) or isinstance(value, bool):
                wanted = "a channel name from its name_dict" if by_name else "a channel index"
                raise ValueError(f"allencell.channels.{role}: layout {layout.name} needs {wanted}, got {value!r}")
            channels[role] = dataclasses.replace(channels[role], **({"name": value} if by_name else {"index": value}))
        if section.get("voxel_size_um") is not None:
            changes.update(voxel_size_um=float(section["voxel_size_um"]), voxel_size_column=None)
        layout = dataclasses.replace(layout, files=files, channels=channels, **changes)
        return cls(csv=section["csv"], layout=layout, image_root=section.get("image_root"),
                   structure_names={**STRUCTURE_NAMES, **(section.get("structure_names") or {})},
                   chunk_size=section.get("chunk_size", 200))


def _literal(text: str, *, what: str, csv: Path) -> object:
    """A Python literal from a CSV cell, parsed with ``ast.literal_eval`` (never ``eval``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise io.ManifestError(f"{csv}: column {what} holds {text!r}, not a Python literal ({error})") from error


def _channel_indices(table: pd.DataFrame, layout: Layout, csv: Path) -> dict[str, np.ndarray]:
    """Each role's channel index per cell: from the per-cell column, the names in ``name_dict``, or the default."""
    indices: dict[str, np.ndarray] = {}
    if layout.channel_names_column is not None:
        texts = table[layout.channel_names_column]
        parsed = {text: _literal(text, what=layout.channel_names_column, csv=csv) for text in texts.unique()}
        for role, source in layout.channels.items():
            # name_dict keys its lists by the layout's own column names, also where allencell.columns renames the
            # file columns (some releases and tools call them crop_raw_path and crop_seg_path)
            column = layout.files[source.file]
            declared = LAYOUTS[layout.name].files[source.file]
            positions = {}
            for text, names in parsed.items():
                key = column if isinstance(names, dict) and column in names else declared
                listed = list(names.get(key, [])) if isinstance(names, dict) else []
                if source.name not in listed:
                    raise io.ManifestError(
                        f"{csv}: channel {source.name!r} ({role}) is not in {layout.channel_names_column} for "
                        f"{column}, which names {listed}")
                positions[text] = listed.index(source.name)
            indices[role] = texts.map(positions).to_numpy(dtype=np.int64)
        return indices
    for role, source in layout.channels.items():
        if source.column and source.column in table.columns:
            values = pd.to_numeric(table[source.column], errors="coerce")
            bad = values.isna() | (values < 0) | (values % 1 != 0)
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise io.ManifestError(f"{csv}, row {table.index[row] + 2}, column {source.column}: "
                                       f"{table[source.column].iloc[row]!r} is not a channel index")
            indices[role] = values.to_numpy(dtype=np.int64)
        else:
            indices[role] = np.full(len(table), source.index, dtype=np.int64)
    return indices


def _spacings(table: pd.DataFrame, layout: Layout, csv: Path) -> np.ndarray:
    """Voxel size ``(z, y, x)`` in µm per cell, ``(N, 3)``."""
    if layout.voxel_size_column is None:
        return np.full((len(table), 3), layout.voxel_size_um, dtype=float)
    codes, texts = pd.factorize(table[layout.voxel_size_column])
    parsed = []
    for text in texts:
        value = _literal(text, what=layout.voxel_size_column, csv=csv)
        try:
            sizes = np.atleast_1d(np.asarray(value, dtype=float))
        except (TypeError, ValueError):
            sizes = np.zeros(0)
        if sizes.ndim != 1 or len(sizes) not in (1, 3) or not np.all(sizes > 0):
            raise io.ManifestError(f"{csv}: column {layout.voxel_size_column} holds {text!r}, not a voxel size "
                                   "[z, y, x] in µm")
        parsed.append(np.broadcast_to(sizes, 3))
    return np.stack(parsed)[codes] if parsed else np.zeros((0, 3))


def _structure_names(source: pd.Series, names: Mapping[str, str]) -> pd.Series:
    """statcell's structure names; a name not in the table keeps its own and is logged once."""
    for unknown in sorted(set(source) - set(names)):
        log.warning("structure %r is not in statcell's structure-name table: kept as it is (add it under "
                    "allencell.structure_names to rename it)", unknown)
    return source.map(lambda value: names.get(value, value))


def _mitotic_stages(source: pd.Series, stages: Mapping[str, str], column: str) -> pd.Series:
    """statcell's mitotic classes; an empty entry is ``unknown``, a value not in the layout's table is kept."""
    source = source.fillna("").str.strip()
    for unknown in sorted(set(source) - set(stages) - {""}):
        log.warning("mitotic annotation %r in column %s is not one the layout knows: kept as it is, and counted as "
                    "mitosis (every stage but interphase is)", unknown, column)
    return source.map(lambda value: stages.get(value, value or "unknown"))


def _is_mitotic(stages: pd.Series) -> pd.Series:
    """Whether each cell is in mitosis: empty (``<NA>``) where its stage is ``unknown``, so that an unannotated cell
    is never counted as interphase.

    Examples
    --------
    >>> _is_mitotic(pd.Series(["interphase", "prophase", "unknown", "M6/M7 Partial"])).tolist()
    [False, True, <NA>, True]
    """
    return pd.Series(stages != INTERPHASE, dtype="boolean").mask(stages == "unknown")


def _read_table(path: Path) -> pd.DataFrame:
    """The dataset's table as text, a CSV or (by its suffix) a Parquet file, empty entries as ``""``."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
            return table.astype(object).where(table.notna(), "").astype(str)
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as error:
        kind = "Parquet file" if path.suffix.lower() in (".parquet", ".pq") else "CSV (comma-separated, UTF-8)"
        raise io.ManifestError(f"{path} cannot be read as a {kind}: {error}") from error


def read_cell_table(settings: AllenCellSettings, chunk: str | None = None) -> pd.DataFrame:
    """Read the dataset's CSV into one row per cell, with resolved paths and channel positions.

    Columns the layout does not name (FOV paths, plate ids, features, ...) are ignored.

    Parameters
    ----------
    settings : AllenCellSettings
        The dataset's settings.
    chunk : str, optional
        Only this import job's cells (their ids are still checked against the whole table); paths, channels and
        voxel sizes are then read for those cells only.

    Returns
    -------
    DataFrame
        ``cell_id``, ``structure`` (statcell's name), ``source_structure`` (the CSV's), ``mitotic_stage``
        (``unknown`` where the CSV has no annotation) and, where it has one, ``is_mitotic``; ``imaging_fov`` where
        the CSV names each cell's FOV; one ``path_<file>``
        per file of the layout; ``channel_<role>`` per role of :data:`ROLES`; ``spacing_z_um``, ``spacing_y_um``,
        ``spacing_x_um``; ``chunk`` (which import job handles the cell).

    Raises
    ------
    io.ManifestError
        If the CSV or a required column is missing, a channel name is absent from ``name_dict``, a channel index or
        voxel size cannot be read, or a cell id repeats (with the same structure); the message names the file.
    """
    csv, layout = Path(settings.csv), settings.layout
    if not csv.is_file():
        raise io.ManifestError(f"Allen single-cell CSV not found: {csv}")
    table = _read_table(csv)
    required = [layout.cell_id_column, layout.structure_column, *layout.files.values()]
    required += [column for column in (layout.channel_names_column, layout.voxel_size_column) if column]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise io.ManifestError(f"{csv} lacks the column(s) {', '.join(missing)} that layout {layout.name} reads "
                               "(see allencell.layout and allencell.columns)")
    ids = table[layout.cell_id_column].str.strip()
    for column, values in ((layout.cell_id_column, ids), (layout.structure_column, table[layout.structure_column])):
        empty = np.flatnonzero((values.str.strip() == "").to_numpy())
        if len(empty):
            raise io.ManifestError(f"{csv}, row {empty[0] + 2}: column {column} is empty ({len(empty)} row(s) so); "
                                   "every cell needs its id and structure")
    cells = pd.DataFrame({"cell_id": ids, "source_structure": table[layout.structure_column].str.strip()})
    cells.insert(1, "structure", _structure_names(cells["source_structure"], settings.structure_names))
    repeated = ids.duplicated(keep=False)
    if repeated.any():  # control classes may reuse their source cell's id: tell them apart by structure
        cells.loc[repeated, "cell_id"] = ids[repeated] + "_" + cells.loc[repeated, "structure"]
        twice = cells.loc[cells["cell_id"].duplicated(), "cell_id"]
        if len(twice):
            raise io.ManifestError(f"{csv}: cell id {twice.iloc[0]!r} appears more than once for the same structure")
    if layout.mitotic_column in table.columns:
        cells["mitotic_stage"] = _mitotic_stages(table[layout.mitotic_column], layout.mitotic_stages,
                                                 layout.mitotic_column)
        cells["is_mitotic"] = _is_mitotic(cells["mitotic_stage"])
    else:
        cells["mitotic_stage"] = "unknown"
    if layout.fov_column in table.columns:
        cells[IMAGING_FOV] = table[layout.fov_column].astype(str).str.strip()
    else:
        log.warning("%s has no column %s: each cell is its own replicate in the statistics, which then assume that "
                    "cells are independent (see allencell.columns.fov)", csv, layout.fov_column)
    cells["chunk"] = [f"allencell_{index // settings.chunk_size:05d}" for index in range(len(cells))]
    if chunk is not None:  # an import job: the per-cell work below for its own cells only
        keep = (cells["chunk"] == chunk).to_numpy()
        cells, table = cells[keep], table[keep]
    folder = csv.resolve().parent
    for role, column in layout.files.items():
        cells[f"path_{role}"] = io.resolve_paths(table[column].tolist(), folder=folder,
                                                 image_root=settings.image_root, depth=layout.path_depth)
    for role, values in _channel_indices(table, layout, csv).items():
        cells[f"channel_{role}"] = values
    for axis, values in zip("zyx", _spacings(table, layout, csv).T):
        cells[f"spacing_{axis}_um"] = values
    return cells


def _registered_crop(signal: np.ndarray, masks: np.ndarray, *, layout: Layout, spacing: tuple[float, ...],
                     settings: CropSettings) -> tuple[np.ndarray, np.ndarray]:
    """Crop of a registered cell: rescaled, its long axis turned onto x (a rotation), masked, centred on the nucleus."""
    signal, masks = resample(signal, masks, zoom=[step / settings.voxel_size_um for step in spacing])
    if layout.long_axis == "y":  # +y onto +x: a proper rotation in the yx plane, never a transpose (a reflection)
        signal, masks = np.rot90(signal, k=1, axes=(2, 3)), np.rot90(masks, k=1, axes=(2, 3))
    masked = mask_channels(signal, masks[0], masks[1])
    measured = np.concatenate([signal * masks[0], masks.astype(np.float32)])
    volume = np.concatenate([masked, masks.astype(np.float32)])
    centre = np.array(ndimage.center_of_mass(masks[1])) if masks[1].any() else np.array(masks.shape[1:]) / 2
    return place_at_centre(volume, centre, settings.shape), measured


def import_cell(image: np.ndarray, segmentation: np.ndarray | None, *, channels: Mapping[str, int],
                layout: Layout, spacing: tuple[float, float, float],
                crop_settings: CropSettings) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Turn one cell's files into a crop (and the aligned whole cell, for measuring).

    A cell's file holds a box around it, often filled by its neighbours, so each channel's background is the most
    populous intensity inside the cell itself (the paper's choice; a FOV's cells are measured against the FOV's
    cell-free voxels instead, :func:`statcell.crop.fov_backgrounds`). Pipeline 4's cells were saved with that
    background already subtracted, which leaves it at 0.

    Parameters
    ----------
    image : ndarray
        ``(C, Z, Y, X)`` the layout's ``image`` file.
    segmentation : ndarray, optional
        ``(C, Z, Y, X)`` its ``segmentation`` file, for layouts that have one.
    channels : mapping of str to int
        Each role's channel index in its file (``channel_<role>`` of :func:`read_cell_table`).
    layout : Layout
        The dataset's layout (registered crops are only turned and centred; raw boxes are aligned).
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm of the files.
    crop_settings : CropSettings
        Target voxel size and shape.

    Returns
    -------
    crop, whole : ndarray
        float32 ``(5, Z, Y, X)`` of :data:`statcell.vocabulary.CROP_CHANNELS` at the crop shape (DNA masked by the
        nucleus, membrane and structure by the cell), and the whole aligned cell with every intensity masked to the
        cell, for :func:`statcell.crop.measure_cell`; intensities above their background.
    backgrounds : tuple of float
        The background subtracted from membrane, DNA and structure.

    Raises
    ------
    io.FovError
        If a channel index lies beyond its file's channels, or the channels hold NaN or infinite values.
    """
    files = {"image": image, "segmentation": segmentation}
    picked = []
    for role in ROLES:
        stack, index = files[layout.channels[role].file], int(channels[role])
        if index >= stack.shape[0]:
            raise io.FovError(f"its {layout.channels[role].file} file has {stack.shape[0]} channels, the "
                              f"{role} channel is {index}")
        picked.append(stack[index])
    if {array.shape for array in picked} != {picked[0].shape}:
        raise io.FovError(f"its channels differ in shape: {sorted({array.shape for array in picked})}")
    intensities = np.stack(picked[:3]).astype(np.float32)
    if not np.isfinite(intensities).all():
        raise io.FovError("it contains NaN or infinite values")
    masks = np.stack([picked[3] > 0, picked[4] > 0])
    masks[1] &= masks[0]
    backgrounds = cell_backgrounds(intensities, masks[0], regions=("cell",) * len(intensities))
    signal = subtract_background(intensities, backgrounds)
    if layout.registered:
        return (*_registered_crop(signal, masks, layout=layout, spacing=spacing, settings=crop_settings), backgrounds)
    crop, info = align_cell(signal, masks[0], masks[1], spacing=spacing, settings=crop_settings)
    return crop, info["aligned"], backgrounds


def import_chunk(cells: pd.DataFrame, *, settings: AllenCellSettings,
                 crop_settings: CropSettings) -> tuple[np.ndarray, pd.DataFrame]:
    """Import the cells of one chunk; an unreadable, missing or malformed file becomes a rejects row naming it.

    Returns
    -------
    crops : ndarray
        uint16 ``(N, 5, Z, Y, X)`` of the imported cells.
    table : DataFrame
        One row per cell, in the per-FOV table format of ``crop_cells`` (``fov_id`` is the chunk, ``label`` the
        row within it, ``source_cell_id`` the dataset's cell id), with ``structure``, ``source_structure``,
        ``mitotic_stage`` (and ``is_mitotic`` where annotated), ``reject_reason``, ``crop_index`` and measurements.
    """
    layout = settings.layout
    crops, rows = [], []
    annotations = [column for column in ("structure", "source_structure", "mitotic_stage", "is_mitotic", IMAGING_FOV)
                   if column in cells.columns]
    for index, cell in enumerate(cells.to_dict("records")):
        row = {"fov_id": cell["chunk"], "label": index + 1, "source_cell_id": cell["cell_id"],
               **{column: cell[column] for column in annotations}, "reject_reason": "", "crop_index": -1}
        paths = {role: cell[f"path_{role}"] for role in layout.files}
        stacks = {}
        try:
            for role, path in paths.items():
                reading = path
                stacks[role] = io.read_stack(path, axes=layout.axes)
        except Exception as error:  # noqa: BLE001 - any reader failure makes this cell unusable; record which file
            rows.append({**row, "reject_reason": f"unusable_cell_image: {reading}: {type(error).__name__}: {error}"})
            log.warning("cell %s: cannot read %s: %s", cell["cell_id"], reading, error)
            continue
        spacing = (cell["spacing_z_um"], cell["spacing_y_um"], cell["spacing_x_um"])
        try:
            crop, whole, backgrounds = import_cell(stacks["image"], stacks.get("segmentation"),
                                                   channels={role: cell[f"channel_{role}"] for role in ROLES},
                                                   layout=layout, spacing=spacing, crop_settings=crop_settings)
        except io.FovError as error:
            rows.append({**row, "reject_reason": f"unusable_cell_image: {', '.join(paths.values())}: {error}"})
            log.warning("cell %s: %s: %s", cell["cell_id"], ", ".join(paths.values()), error)
            continue
        if not crop[3].any() or not crop[4].any():
            rows.append({**row, "reject_reason": "no_nucleus" if crop[3].any() else
                         f"empty_cell_mask: {paths.get('segmentation', paths['image'])}"})
            continue
        crops.append(np.clip(np.rint(crop), 0, np.iinfo(np.uint16).max).astype(np.uint16))
        rows.append({**row, "crop_index": len(crops) - 1, **measure_cell(whole, voxel_um=crop_settings.voxel_size_um),
                     **dict(zip(BACKGROUND_COLUMNS, backgrounds))})
    stack = np.stack(crops) if crops else np.zeros((0, len(CROP_CHANNELS), *crop_settings.shape), dtype=np.uint16)
    return stack, pd.DataFrame(rows)
