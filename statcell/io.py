"""File input and output: OME-TIFF images through bioio, FOV manifests, tables, the cell store (``cells.zarr``) and
meshes.

All image arrays are channel-first ``(C, Z, Y, X)``; voxel sizes are ``spacing=(z, y, x)`` in micrometres.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # imported where a table is read or written, a store opened or a mesh written: a segmentation job
    import pandas as pd  # needs none of them (pandas alone is 0.17 s of its ~0.9 s)
    import trimesh
    import zarr

MANIFEST_COLUMNS: dict[str, str] = {
    "fov_id": "unique name of the field of view (letters, digits, '_' and '-')",
    "path": "image file (OME-TIFF or TIFF), absolute or relative to the manifest's folder",
    "membrane_channel": "the membrane-dye channel: its 0-based index, or its name in the image file",
    "dna_channel": "the DNA-dye channel: its 0-based index, or its name in the image file",
    "structure_channel": "the tagged-structure channel: its 0-based index, or its name in the image file",
    "structure": "name of the tagged structure (or control)",
    "pixel_size_z_um": "z-step in micrometres",
    "pixel_size_y_um": "pixel height in micrometres",
    "pixel_size_x_um": "pixel width in micrometres",
}
OPTIONAL_MANIFEST_COLUMNS: dict[str, str] = {
    "drug": "treatment name (empty for untreated cells)",
    "concentration_um": "drug concentration in micromolar",
    "cell_segmentation": "existing cell label image to use instead of segmenting (same grid as the image)",
    "nucleus_segmentation": "existing nucleus label image to use instead of segmenting",
    "scene": "0-based scene (series, stage position) of a file that holds several; required for such a file",
    "timepoint": "0-based time point of a time-lapse file; required for such a file",
}
#: Optional manifest columns that select one image of a file holding several (:func:`read_fov`).
IMAGE_SELECTORS: tuple[str, ...] = ("scene", "timepoint")
#: Voxel sides a manifest may give (µm): wider than light microscopy's, narrow enough to catch nanometres or metres.
VOXEL_SIZE_RANGE_UM: tuple[float, float] = (0.001, 20.0)
#: Relative difference between a manifest's voxel side and the file's metadata above which the FOV's jobs warn.
VOXEL_SIZE_TOLERANCE = 0.02


#: Group attribute of ``cells.zarr`` that holds the project's own metadata (cell count, channel names), beside the
#: group attribute ``ome``, which holds only what the OME-Zarr specification defines.
STORE_ATTRIBUTE = "statcell"
#: Encodings of a cell store's values (``normalize.store_dtype``): unsigned integers hold ``round(value * max)`` of
#: values in [0, 1] (normalized intensities, masks), float32 the values themselves.
STORE_DTYPES: tuple[str, ...] = ("uint8", "uint16", "float32")
#: Most consecutive cells :func:`read_cells` reads in one slice.
_READ_RUN = 32


class ManifestError(ValueError):
    """A FOV manifest is malformed; the message names the file, the row and the column."""


@dataclass(frozen=True)
class Image:
    """An image read from disk.

    Attributes
    ----------
    data : ndarray
        Pixels, shape ``(C, Z, Y, X)``.
    channel_names : tuple of str
        One name per channel.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in micrometres, or NaN where the file does not say.
    scenes, timepoints : int
        How many scenes (series, stage positions) and time points the file holds; ``data`` is one of each.
    """

    data: np.ndarray
    channel_names: tuple[str, ...]
    spacing: tuple[float, float, float]
    scenes: int = 1
    timepoints: int = 1


#: Deflate level of the OME-TIFFs statcell writes. A raw FOV of the synthetic colony is written about 5 times faster
#: at level 1 than at zlib's default (6), for a file 3% larger; a label image as fast, 0.18 MB against 0.14; both read
#: as fast (``bench/bench_ome_tiff.py``). Deflate, not zstd, so that every OME reader (Bio-Formats, Fiji) opens them.
OME_TIFF_DEFLATE_LEVEL = 1


def write_ome_tiff(
    path: str | Path,
    image: np.ndarray,
    *,
    channel_names: list[str],
    spacing: tuple[float, float, float],
    image_name: str | None = None,
    deflate_level: int = OME_TIFF_DEFLATE_LEVEL,
) -> None:
    """Write a ``(C, Z, Y, X)`` array as a compressed OME-TIFF with channel names and physical pixel sizes.

    Written with tifffile (bioio's own TIFF backend), whose import costs a fraction of bioio's writer; any OME reader,
    bioio included, reads the result.

    Parameters
    ----------
    path : str or Path
        Output file; its folder is created. Written to a temporary name first and renamed, so a killed job never
        leaves a truncated file under the final name.
    image : ndarray
        Pixels, shape ``(C, Z, Y, X)``.
    channel_names : list of str
        One name per channel.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in micrometres.
    image_name : str, optional
        Name stored in the OME metadata.
    deflate_level : int
        Compression level of deflate (zlib), 1 (fastest) to 9.
    """
    import tifffile

    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) array for {path}, got shape {image.shape}")
    if len(channel_names) != image.shape[0]:
        raise ValueError(f"{len(channel_names)} channel names for {image.shape[0]} channels in {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.ome.tiff")
    metadata = {
        "axes": "CZYX", "Name": image_name or path.name.split(".")[0], "Channel": {"Name": list(channel_names)},
        "PhysicalSizeZ": spacing[0], "PhysicalSizeY": spacing[1], "PhysicalSizeX": spacing[2],
        "PhysicalSizeZUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeXUnit": "µm",
    }
    tifffile.imwrite(partial, image, ome=True, photometric="minisblack", compression="zlib",
                     compressionargs={"level": deflate_level}, metadata=metadata)
    partial.replace(path)


def _holds_ome_xml(path: Path) -> bool:
    """Whether a TIFF file carries OME-XML (an OME-TIFF by content; some writers name them plain ``.tif``)."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        return bool(tiff.is_ome)


def _zarr_attributes(path: Path) -> dict:
    """The OME attributes of a Zarr group folder (v3's ``zarr.json`` ``attributes.ome``, v2's ``.zattrs``)."""
    for name in ("zarr.json", ".zattrs"):
        if (path / name).is_file():
            loaded = json.loads((path / name).read_text())
            attributes = loaded.get("attributes", {}) if name == "zarr.json" else loaded
            return attributes.get("ome", attributes)
    return {}


def _zarr_micrometres_per_unit(attributes: dict) -> tuple[float, float, float]:
    """Per axis z, y, x, the factor from an OME-Zarr image's axis unit to µm (1 where no unit is stated, as bioio
    reads the scale without its unit), from its attributes (:func:`_zarr_attributes`)."""
    multiscales = attributes.get("multiscales") or [{}]
    units = {axis.get("name"): axis.get("unit") for axis in multiscales[0].get("axes", []) if isinstance(axis, dict)}
    return tuple(_micrometres("1", units[axis]) if units.get(axis) else 1.0 for axis in "zyx")


def _refuse_zarr_containers(path: Path, attributes: dict) -> None:
    """Stop at an OME-Zarr folder that holds images rather than being one (a plate, a bioformats2raw container),
    saying which folder to name instead."""
    if "plate" in attributes:
        raise ValueError(f"{path} is an OME-Zarr plate, which holds its images in wells: name one field's folder "
                         f"(row/column/field, e.g. {path / 'A' / '1' / '0'})")
    if "bioformats2raw.layout" in attributes:
        raise ValueError(f"{path} is a bioformats2raw container of OME-Zarr images: name one series' folder (e.g. "
                         f"{path / '0'})")


def _names_axes(path: Path, axes: str) -> bool:
    """Whether a TIFF's own metadata (ImageJ's, say) names each of ``axes`` for its first series."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        return bool(tiff.series) and set(axes) <= set(tiff.series[0].axes)


def _check_index(path: Path, what: str, index: int, count: int) -> None:
    if not 0 <= index < count:
        raise ValueError(f"{path} holds {count} {what}(s), numbered from 0; {what} {index} was asked for")


def _missing_companions(path: Path, ome_metadata: str) -> list[str]:
    """The files an OME-TIFF's metadata names (``UUID FileName``) that are not in its folder."""
    import xml.etree.ElementTree as ElementTree

    names = {element.get("FileName") for element in ElementTree.fromstring(ome_metadata).iter()
             if element.tag.rsplit("}", 1)[-1] == "UUID" and element.get("FileName")}
    return sorted(name for name in names if not (path.parent / name).exists())


#: OME's length units (``UnitsLength``) in micrometres, as files write them.
_MICROMETRES_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0, "nm": 1e-3, "nanometer": 1e-3,
                         "Å": 1e-4, "angstrom": 1e-4, "pm": 1e-6, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6}


def _micrometres(size: str | None, unit: str) -> float:
    """An OME physical size in µm, from its value and unit (NaN where either is missing or unknown).

    Examples
    --------
    >>> _micrometres("290", "nm"), _micrometres("0.29", "µm"), _micrometres(None, "µm")
    (0.29, 0.29, nan)
    """
    factor = _MICROMETRES_PER_UNIT.get(unit.strip(), _MICROMETRES_PER_UNIT.get(unit.strip().lower()))
    if size is None or factor is None:
        return math.nan
    return float(size) * factor


def _read_ome_tiff(path: Path, scene: int, timepoint: int) -> Image | None:
    """Read an OME-TIFF (each series a scene; axes among T, C, Z, Y, X, and S, the samples of a pixel, read as
    channels) with tifffile; None if it is anything else."""
    import xml.etree.ElementTree as ElementTree

    import tifffile

    with tifffile.TiffFile(path) as tiff:
        if not tiff.is_ome or not tiff.series or not all(set(one.axes) <= set("TCZYXS") for one in tiff.series):
            return None
        scenes = len(tiff.series)
        _check_index(path, "scene", scene, scenes)
        series = tiff.series[scene]
        if any(page is None for page in series.pages):  # tifffile reads the planes of a file it cannot open as zeros
            missing = ", ".join(_missing_companions(path, tiff.ome_metadata)) or "(unnamed)"
            raise ValueError(f"{path} is one file of a multi-file OME-TIFF whose other file(s) {missing} are not "
                             "found beside it: copy every file of the set")
        axes = series.axes
        timepoints = series.shape[axes.index("T")] if "T" in axes else 1
        _check_index(path, "time point", timepoint, timepoints)
        if "T" in axes:  # one frame's pages only, through tifffile's chunked view: not the whole movie per frame
            import zarr

            with series.aszarr(level=0) as pages:  # the full resolution of a pyramid
                frame = tuple(timepoint if axis == "T" else slice(None) for axis in axes)
                data, axes = np.asarray(zarr.open_array(pages, mode="r")[frame]), axes.replace("T", "")
        else:
            data = series.asarray()
        ome = ElementTree.fromstring(tiff.ome_metadata)
    if "S" in axes:  # samples of a pixel (channels stored interleaved, as RGB is) are channels too
        leading = [axes.index(axis) for axis in "CS" if axis in axes]
        data = np.moveaxis(data, leading, range(len(leading)))
        data = data.reshape(-1, *data.shape[len(leading):])
        axes = "C" + "".join(axis for axis in axes if axis not in "CS")
    for axis in "CZ":
        if axis not in axes:
            data, axes = data[np.newaxis], axis + axes
    data = np.moveaxis(data, [axes.index(axis) for axis in "CZYX"], range(4))
    namespace = {"ome": ome.tag.split("}")[0].strip("{")} if ome.tag.startswith("{") else {}
    images = ome.findall("ome:Image" if namespace else "Image", namespace)
    pixels = images[scene].find("ome:Pixels" if namespace else "Pixels", namespace) if scene < len(images) else None
    channels = pixels.findall("ome:Channel" if namespace else "Channel", namespace) if pixels is not None else []
    names = tuple(channel.get("Name") or f"channel_{i}" for i, channel in enumerate(channels))
    if len(names) != data.shape[0]:
        names = tuple(f"channel_{i}" for i in range(data.shape[0]))
    spacing = tuple(_micrometres(pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
                    if pixels is not None else math.nan for axis in "ZYX")
    return Image(data=data, channel_names=names, spacing=spacing, scenes=scenes,  # type: ignore[arg-type]
                 timepoints=timepoints)


def read_image(path: str | Path, *, scene: int = 0, timepoint: int = 0) -> Image:
    """Read one image of a file as ``(C, Z, Y, X)`` with its channel names and voxel size.

    OME-TIFFs (any TIFF that carries OME-XML) are read with tifffile directly (fast to import, as every per-FOV job
    needs); every other format bioio reads goes through bioio (plain TIFF and OME-Zarr with the plugins installed;
    CZI, ND2, ... with theirs).

    Parameters
    ----------
    path : str or Path
        The image file.
    scene, timepoint : int
        Which scene (an OME-TIFF's series, a microscope file's stage position) and time point to read.

    Returns
    -------
    Image
        Pixels of that scene and time point, its metadata, and how many of each the file holds.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file has no such scene or time point (the message says how many it has), is one file of a multi-file
        OME-TIFF whose other files are missing, or is a plain TIFF whose planes read as more channels than z-slices
        (most likely stored Z, C, Y, X, which it cannot say).
    """
    path = Path(path)
    if not path.exists():  # a file, or a folder for formats stored as one (OME-Zarr)
        raise FileNotFoundError(f"image file not found: {path}")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")
    if is_tiff:  # OME-XML inside, whatever the name says
        image = _read_ome_tiff(path, scene, timepoint)
        if image is not None:
            return image
    from bioio import BioImage

    chosen = {}
    zarr_attributes = None  # an OME-Zarr image's, read once
    plain_tiff = is_tiff and not _holds_ome_xml(path)
    if plain_tiff:
        # a plain TIFF goes straight to bioio's TIFF reader: tried first, bioio's OME-TIFF reader fails on it and
        # bioio logs that failure as a warning in every job that reads the file
        from bioio_tifffile import Reader as TiffReader

        chosen["reader"] = TiffReader
    elif path.is_dir() and any((path / name).exists() for name in ("zarr.json", ".zattrs")):
        # an OME-Zarr image whatever its folder's name: a plate's field (plate.ome.zarr/A/1/0), a bioformats2raw
        # series (image.zarr/0); bioio chooses its reader by the name's suffix
        from bioio_ome_zarr import Reader as OmeZarrReader

        zarr_attributes = _zarr_attributes(path)
        _refuse_zarr_containers(path, zarr_attributes)
        chosen["reader"] = OmeZarrReader
    reader = BioImage(path, **chosen)
    _check_index(path, "scene", scene, len(reader.scenes))
    reader.set_scene(scene)
    _check_index(path, "time point", timepoint, reader.dims.T)
    samples = reader.dims.S if "S" in reader.dims.order else 1
    if plain_tiff and samples == 1 and reader.dims.C > reader.dims.Z > 1 and not _names_axes(path, "CZ"):
        raise ValueError(f"{path} is a plain TIFF without axis names whose planes read as {reader.dims.C} channels "
                         f"of {reader.dims.Z} z-slices each: more channels than slices, so it is most likely stored "
                         "z-slice by z-slice (Z, C, Y, X), which a plain TIFF cannot say; save it as an OME-TIFF or "
                         "an ImageJ hyperstack, whose axes are named")
    if samples == 1:
        data = np.asarray(reader.get_image_data("CZYX", T=timepoint))
        names = tuple(str(name) for name in (reader.channel_names or [f"channel_{i}" for i in range(data.shape[0])]))
    elif reader.dims.C == 1:  # an RGB(-like) stack, e.g. ImageJ's ZYXS: its samples are the channels
        data = np.asarray(reader.get_image_data("SZYX", T=timepoint, C=0))
        names = tuple(f"channel_{i}" for i in range(data.shape[0]))
    else:
        raise ValueError(f"{path} holds {reader.dims.C} planes of {samples} samples (colours) each and no axis "
                         f"names (dimensions {reader.dims.order} as read): channels stored both as planes and as "
                         "samples are ambiguous; save it as an OME-TIFF or an ImageJ hyperstack of one sample per "
                         "pixel")
    with warnings.catch_warnings():  # a TIFF without a resolution unit states no voxel size: NaN, not a warning
        warnings.filterwarnings("ignore", message="Could not parse tiff pixel size", category=UserWarning)
        sizes = reader.physical_pixel_sizes
    spacing = tuple(float(value) if value is not None else math.nan for value in (sizes.Z, sizes.Y, sizes.X))
    if zarr_attributes is not None:  # the OME-Zarr reader reads the scale without its unit
        spacing = tuple(side * factor for side, factor in zip(spacing, _zarr_micrometres_per_unit(zarr_attributes)))
    return Image(data=data, channel_names=names, spacing=spacing, scenes=len(reader.scenes),  # type: ignore[arg-type]
                 timepoints=reader.dims.T)


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as parquet (``.parquet``) or CSV (anything else), atomically.

    Parameters
    ----------
    table : DataFrame
        The table.
    path : str or Path
        Output file; its folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if path.suffix == ".parquet":
        table.to_parquet(partial, index=False)
    else:
        table.to_csv(partial, index=False)
    partial.replace(path)


def _text_encoding(path: Path) -> str:
    """The encoding of a table a user wrote: UTF-16 where it starts with its byte-order mark (a spreadsheet's
    "Unicode text"), else UTF-8 (with or without a mark), else Windows-1252 (a spreadsheet's "CSV" on Windows), which
    is logged."""
    with open(path, "rb") as file:
        raw = file.read()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        log.warning("%s is not UTF-8 (byte %d): read as Windows-1252, as a spreadsheet saves a CSV on Windows; save it "
                    "as CSV UTF-8 if a name reads wrong", path, error.start)
        return "cp1252"
    return "utf-8-sig"


def read_lab_table(path: str | Path, **options: Any) -> pd.DataFrame:
    """Read a CSV table a user wrote (a manifest, cell annotations) as a spreadsheet may have exported it.

    The separator is a comma, or the semicolon or tab of a header line without a comma (spreadsheets write
    semicolons where the comma is the decimal mark); a semicolon-separated table is read with the comma as decimal
    mark (a value with a point stays text, which the callers' numeric checks still read). Spaces after separators and
    around column names are dropped, and a byte-order mark is ignored. The text may be UTF-8, UTF-16 with its mark, or
    Windows-1252 (:func:`_text_encoding`).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    **options
        Further keyword arguments of :func:`pandas.read_csv` (``dtype``, ``keep_default_na``, ...).

    Returns
    -------
    DataFrame
        The table, its column names stripped.
    """
    import pandas as pd

    encoding = _text_encoding(Path(path))
    with open(path, encoding=encoding, errors="replace") as file:
        header = file.readline()
    separator = "," if "," in header else next((mark for mark in (";", "\t") if mark in header), ",")
    table = pd.read_csv(path, sep=separator, skipinitialspace=True, decimal="," if separator == ";" else ".",
                        encoding=encoding, **options)
    table.columns = [str(column).strip() for column in table.columns]
    return table


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and check a FOV manifest.

    Parameters
    ----------
    path : str or Path
        CSV file with the columns of :data:`MANIFEST_COLUMNS` (and optionally :data:`OPTIONAL_MANIFEST_COLUMNS`),
        as a spreadsheet may export it (:func:`read_lab_table`: comma, semicolon or tab separated).

    Returns
    -------
    DataFrame
        One row per FOV; ``path`` made absolute (relative paths are taken from the manifest's folder); ``drug`` is
        ``""`` and ``concentration_um`` 0 where absent.

    Raises
    ------
    ManifestError
        If a column is missing, a value has the wrong type, or a FOV id or an image (the same file, scene, time point
        and structure channel) is repeated.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    table = read_lab_table(path, dtype={"fov_id": str, "path": str, "structure": str, "drug": str})
    missing = [column for column in MANIFEST_COLUMNS if column not in table.columns]
    if missing:
        described = "; ".join(f"{column} ({MANIFEST_COLUMNS[column]})" for column in missing)
        raise ManifestError(f"manifest {path} lacks the column(s): {described}")
    if "drug" not in table.columns:
        table["drug"] = ""
    if "concentration_um" not in table.columns:
        table["concentration_um"] = 0.0
    table["drug"] = table["drug"].fillna("")
    for column in ("cell_segmentation", "nucleus_segmentation"):
        entries = table[column].fillna("").astype(str) if column in table.columns else pd.Series("", table.index)
        given = entries.str.strip() != ""
        table[column] = ""
        table.loc[given, column] = resolve_paths(entries[given], folder=path.parent)
    provided = (table["cell_segmentation"] != "") != (table["nucleus_segmentation"] != "")
    if provided.any():
        raise ManifestError(f"manifest {path}, row {table.index[provided][0] + 2}: give both cell_segmentation and "
                            "nucleus_segmentation, or neither")
    table["concentration_um"] = table["concentration_um"].fillna(0.0)

    for column in ("fov_id", "path", "structure"):
        empty = table.index[table[column].isna() | (table[column].astype(str).str.strip() == "")]
        if len(empty):
            raise ManifestError(f"manifest {path}, row {empty[0] + 2}: column '{column}' is empty")
    for column in ("fov_id", "path", "structure", "drug"):  # "golgi " and "golgi" are one structure
        table[column] = table[column].astype(str).str.strip()
    bad_ids = table.loc[~table["fov_id"].str.fullmatch(r"[A-Za-z0-9_\-]+"), "fov_id"]
    if len(bad_ids):
        raise ManifestError(
            f"manifest {path}: fov_id {bad_ids.iloc[0]!r} may hold only letters, digits, '_' and '-'"
        )
    duplicated = table.loc[table["fov_id"].duplicated(), "fov_id"]
    if len(duplicated):
        raise ManifestError(f"manifest {path}: fov_id {duplicated.iloc[0]!r} appears more than once")
    for column in CHANNEL_COLUMNS:
        selectors = []
        for row, value in table[column].items():
            try:
                selectors.append(channel_selector(value))
            except ValueError as error:
                raise ManifestError(f"manifest {path}, row {row + 2}: column '{column}': {error}") from error
        table[column] = pd.Series(selectors, index=table.index, dtype=object)
    same = table.index[table["membrane_channel"] == table["dna_channel"]]
    if len(same):
        raise ManifestError(f"manifest {path}, row {same[0] + 2}: membrane_channel and dna_channel are both "
                            f"{table.at[same[0], 'dna_channel']}; the membrane and the DNA dye are two channels")
    for column in ("pixel_size_z_um", "pixel_size_y_um", "pixel_size_x_um", "concentration_um"):
        values = pd.to_numeric(table[column], errors="coerce")
        positive = column != "concentration_um"
        bad = table.index[values.isna() | ((values <= 0) if positive else (values < 0))]
        if len(bad):
            expectation = "a positive number" if positive else "a number >= 0"
            raise ManifestError(
                f"manifest {path}, row {bad[0] + 2}: column '{column}' must be {expectation}, "
                f"got {table.at[bad[0], column]!r}"
            )
        if positive:
            implausible = table.index[(values < VOXEL_SIZE_RANGE_UM[0]) | (values > VOXEL_SIZE_RANGE_UM[1])]
            if len(implausible):
                raise ManifestError(
                    f"manifest {path}, row {implausible[0] + 2}: column '{column}' is "
                    f"{values[implausible[0]]:g}, outside the {VOXEL_SIZE_RANGE_UM[0]:g}-"
                    f"{VOXEL_SIZE_RANGE_UM[1]:g} µm of light-microscopy voxels: is it in micrometres (not nanometres "
                    "or metres)?")
        table[column] = values.astype(float)
    for column in IMAGE_SELECTORS:
        if column not in table.columns:
            continue
        blank = table[column].map(_is_blank)
        values = pd.to_numeric(table[column].where(~blank), errors="coerce")
        bad = table.index[~blank & (values.isna() | (values < 0) | (values != values.round()))]
        if len(bad):
            raise ManifestError(f"manifest {path}, row {bad[0] + 2}: column '{column}' must be a 0-based index "
                                f"(0, 1, ...) or empty, got {table.at[bad[0], column]!r}")
        table[column] = pd.Series([None if empty else int(value) for empty, value in zip(blank, values, strict=True)],
                                  index=table.index, dtype=object)
    table["path"] = resolve_paths(table["path"], folder=path.parent)
    image = ["path", *(column for column in IMAGE_SELECTORS if column in table.columns), "structure_channel"]
    repeated = table.index[table[image].astype(str).duplicated()]
    if len(repeated):  # its cells would be stored twice, and could be held out in one copy and trained on in the other
        first = table.index[(table[image].astype(str) == table.loc[repeated[0], image].astype(str)).all(axis=1)][0]
        raise ManifestError(f"manifest {path}, rows {first + 2} and {repeated[0] + 2}: the same image "
                            f"({table.at[first, 'path']}, same scene, time point and structure channel) is listed "
                            f"twice, as FOVs {table.at[first, 'fov_id']!r} and {table.at[repeated[0], 'fov_id']!r}")
    return table


def resolve_paths(entries: Iterable[str], *, folder: str | Path, image_root: str | None = None,
                  depth: int = 2) -> list[str]:
    """Where the path entries of a table (a FOV manifest, an Allen Institute CSV) point.

    A leading ``~`` is the user's home, as in a shell. A relative entry is taken from ``image_root``, or, without one,
    from the table's ``folder``, and normalized (``..`` taken out; links are not followed, so that no entry costs a
    file-system call and a table of 200,000 cells is read in seconds). An absolute entry is used as it is, unless
    ``image_root`` is set: then it is rebased, keeping its last ``depth`` components (e.g. the package's folder and
    the file name, ``crop_raw/123.ome.tiff``) below ``image_root``, as the original Allen loader did with its
    ``image_parent``; so a table written on another file system works on a downloaded copy.

    Parameters
    ----------
    entries : iterable of str
        The table's entries.
    folder : path
        The table's folder.
    image_root : str, optional
        Where the files are instead.
    depth : int
        Components of an absolute entry kept below ``image_root``.

    Returns
    -------
    list of str
        One path per entry, absolute where ``folder`` or ``image_root`` is.

    Examples
    --------
    >>> resolve_paths(["/allen/aics/x/cell_images_3d/1_reg.tiff"], folder="/d", image_root="/data")
    ['/data/cell_images_3d/1_reg.tiff']
    >>> resolve_paths(["crop_raw/1.ome.tiff", "../b.tiff"], folder="/d/tables")
    ['/d/tables/crop_raw/1.ome.tiff', '/d/b.tiff']
    """
    base = os.path.abspath(image_root or folder)
    paths = []
    for entry in entries:
        entry = os.path.expanduser(entry)  # "~/images/a.tiff" as a shell reads it
        if not os.path.isabs(entry):
            paths.append(os.path.normpath(os.path.join(base, entry)))
        elif image_root:
            paths.append(os.path.join(image_root, *PurePath(entry).parts[-depth:]))
        else:
            paths.append(str(PurePath(entry)))
    return paths


def resolve_path(entry: str, *, folder: str | Path, image_root: str | None = None, depth: int = 2) -> Path:
    """Where one path entry of a table points (:func:`resolve_paths`).

    Examples
    --------
    >>> str(resolve_path("crop_raw/1.ome.tiff", folder="/d"))
    '/d/crop_raw/1.ome.tiff'
    """
    return Path(resolve_paths([entry], folder=folder, image_root=image_root, depth=depth)[0])


class FovError(ValueError):
    """A field of view cannot be used (unreadable, too few channels, NaN, empty); the message names the file."""


@dataclass(frozen=True)
class FovRecord:
    """One manifest row: where a FOV's image is and which channel is which.

    Attributes
    ----------
    fov_id, path, structure, drug : str
        As in the manifest (``drug`` is ``""`` for untreated cells).
    membrane_channel, dna_channel, structure_channel : int or str
        0-based channel indices, or channel names as the image file states them.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm.
    concentration_um : float
        Drug concentration.
    cell_segmentation, nucleus_segmentation : str
        Label images to use instead of segmenting (``""``: segment).
    scene, timepoint : int or None
        Which scene and time point of the file is the FOV; None where the manifest does not say (then the file must
        hold only one).
    """

    fov_id: str
    path: str
    membrane_channel: int | str
    dna_channel: int | str
    structure_channel: int | str
    structure: str
    spacing: tuple[float, float, float]
    drug: str = ""
    concentration_um: float = 0.0
    cell_segmentation: str = ""
    nucleus_segmentation: str = ""
    scene: int | None = None
    timepoint: int | None = None

    @classmethod
    def from_row(cls, row: dict) -> FovRecord:
        """Build a record from a row of :func:`read_manifest`."""
        selectors = {column: None if _is_blank(row.get(column)) else int(row[column]) for column in IMAGE_SELECTORS}
        return cls(
            fov_id=str(row["fov_id"]), path=str(row["path"]),
            **{column: channel_selector(row[column]) for column in CHANNEL_COLUMNS},
            structure=str(row["structure"]),
            spacing=(float(row["pixel_size_z_um"]), float(row["pixel_size_y_um"]), float(row["pixel_size_x_um"])),
            drug=str(row.get("drug", "") or ""), concentration_um=float(row.get("concentration_um", 0.0) or 0.0),
            cell_segmentation=str(row.get("cell_segmentation", "") or ""),
            nucleus_segmentation=str(row.get("nucleus_segmentation", "") or ""),
            **selectors,
        )


#: The manifest's columns that say which channel of the image is which.
CHANNEL_COLUMNS: tuple[str, ...] = ("membrane_channel", "dna_channel", "structure_channel")


def channel_selector(value: object) -> int | str:
    """A manifest's channel entry as a 0-based index (a whole number, also written as text) or a channel name.

    Parameters
    ----------
    value : object
        The table cell.

    Returns
    -------
    int or str
        The index, or the name with surrounding spaces removed.

    Raises
    ------
    ValueError
        If the entry is empty, or a number that is negative or not whole.

    Examples
    --------
    >>> channel_selector(2), channel_selector("2"), channel_selector(2.0), channel_selector(" CMDRP ")
    (2, 2, 2, 'CMDRP')
    """
    if _is_blank(value):
        raise ValueError("empty: give a channel index (0, 1, ...) or the channel's name in the image file")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if number < 0 or not number.is_integer():
        raise ValueError(f"a channel index must be 0, 1, ..., got {value!r}")
    return int(number)


def _is_blank(value: object) -> bool:
    """True for a table cell that holds nothing (absent, None, NaN or an empty string)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def unnamed_selection(image: Image, *, scene: int | None, timepoint: int | None) -> tuple[str, list[str]]:
    """The choices a reader of ``image`` left unsaid: of scene and time point, those not given (None) where the file
    holds several.

    Returns
    -------
    holds : str
        What the file holds of them (``""`` when nothing is left unsaid).
    names : list of str
        Their names, ``"scene"`` and/or ``"timepoint"``.

    Examples
    --------
    >>> image = Image(np.zeros((3, 2, 4, 4)), ("m", "d", "s"), (1.0, 1.0, 1.0), scenes=4, timepoints=2)
    >>> unnamed_selection(image, scene=None, timepoint=None)
    ('4 scenes (stage positions) and 2 time points', ['scene', 'timepoint'])
    >>> unnamed_selection(image, scene=0, timepoint=1)
    ('', [])
    """
    unsaid = [(name, f"{count} {what}") for name, count, what, given in (
        ("scene", image.scenes, "scenes (stage positions)", scene),
        ("timepoint", image.timepoints, "time points", timepoint)) if count > 1 and given is None]
    return " and ".join(held for _, held in unsaid), [name for name, _ in unsaid]


def _states_voxel_size(path: str | Path) -> bool:
    """Whether a file's metadata states its voxel size: every format but plain TIFF (without OME-XML, whatever its
    name), whose resolution tags default to 1 per unit when a writer leaves them out."""
    path = Path(path)
    return path.suffix.lower() not in (".tif", ".tiff") or _holds_ome_xml(path)


def _channel_index(image: Image, selector: int | str, *, what: str, path: str | Path) -> int:
    """The index of a channel entry in an image: an index as it is, a name looked up."""
    if isinstance(selector, int):
        return selector
    names = list(image.channel_names)
    if names.count(selector) != 1:
        found = "names two channels" if names.count(selector) else "has no channel named"
        raise FovError(f"{what}: {path} {found} {selector!r}; its channels are {names}")
    return names.index(selector)


def differing_voxel_size(spacing: tuple[float, float, float], image: Image, path: str | Path) -> list[str]:
    """The sides on which the voxel size an image's metadata states differs from ``spacing`` by more than
    :data:`VOXEL_SIZE_TOLERANCE`, as text (``"y 0.108 µm"``); empty where the file states none."""
    if not _states_voxel_size(path):
        return []
    return [f"{axis} {found:g} µm" for axis, stated, found in zip("zyx", spacing, image.spacing)
            if math.isfinite(found) and abs(found - stated) > VOXEL_SIZE_TOLERANCE * stated]


def read_fov(record: FovRecord, *, warn_voxel_size: bool = True) -> np.ndarray:
    """Read a FOV's membrane, DNA and structure channels, checking that they can be used.

    The manifest's voxel size is the FOV's; where the file's metadata states another (by more than
    :data:`VOXEL_SIZE_TOLERANCE` on a side), a warning names both.

    Parameters
    ----------
    record : FovRecord
        The FOV's manifest row.
    warn_voxel_size : bool
        Whether to log the warning on a differing voxel size (a FOV read by several jobs warns in one of them).

    Returns
    -------
    ndarray
        float32 ``(3, Z, Y, X)``: membrane, DNA, structure (:func:`usable_channels`).

    Raises
    ------
    FovError
        If the file is missing or unreadable, holds several scenes or time points and the record does not say
        which, has no such scene or time point, or its channels cannot be used (:func:`usable_channels`); the
        message names the file.
    """
    try:
        image = read_image(record.path, scene=record.scene or 0, timepoint=record.timepoint or 0)
    except FileNotFoundError as error:
        raise FovError(f"FOV {record.fov_id}: image file not found: {record.path}") from error
    except Exception as error:  # noqa: BLE001 - any reader failure means the file cannot be used; say which file
        raise FovError(f"FOV {record.fov_id}: cannot read {record.path}: {type(error).__name__}: {error}") from error
    holds, unsaid = unnamed_selection(image, scene=record.scene, timepoint=record.timepoint)
    if unsaid:
        raise FovError(f"FOV {record.fov_id}: {record.path} holds {holds}; say which one is this FOV in the "
                       f"manifest's {' and '.join(map(repr, unsaid))} column (0-based; one row per scene or time "
                       "point to use them all)")
    differing = differing_voxel_size(record.spacing, image, record.path)
    if warn_voxel_size and differing:
        log.warning("FOV %s: the voxel size of the manifest (z, y, x %s µm) differs from %s's metadata (%s); the "
                    "manifest's is used", record.fov_id, ", ".join(f"{side:g}" for side in record.spacing),
                    record.path, ", ".join(differing))
    return usable_channels(image, [getattr(record, column) for column in CHANNEL_COLUMNS], path=record.path,
                           what=f"FOV {record.fov_id}",
                           given=[f"the manifest's {CHANNEL_COLUMNS[0]}", *CHANNEL_COLUMNS[1:]])


def usable_channels(image: Image, selectors: Sequence[int | str], *, path: str | Path, what: str,
                    given: Sequence[str]) -> np.ndarray:
    """An image's membrane, DNA and any further channels, in camera units, checked that they can be used.

    Floating-point images are mapped onto the camera's 0–65,535 (:func:`_to_camera_range`), as cropping stores
    16-bit camera units.

    Parameters
    ----------
    image : Image
        The image read (:func:`read_image`).
    selectors : sequence of int or str
        Each channel's index or name, membrane and DNA first.
    path : str or Path
        The image's file, named in messages.
    what : str
        What the messages are about, e.g. ``"FOV golgi_00"``.
    given : sequence of str
        Where each selector was given, for messages: ``"the manifest's membrane_channel"``, ``"--dna-channel"``.

    Returns
    -------
    ndarray
        float32 ``(len(selectors), Z, Y, X)``.

    Raises
    ------
    FovError
        If a name is not one of the image's channels, membrane and DNA are the same channel, an index is outside
        the image's channels, the image is a single z-slice, holds NaN or infinite values, or its membrane or DNA
        channel is constant (a blank structure channel is a valid control).
    """
    pixels = image.data
    wanted = tuple(_channel_index(image, selector, what=what, path=path) for selector in selectors)
    if wanted[0] == wanted[1]:
        raise FovError(f"{what}: {given[0]} {selectors[0]!r} and {given[1]} {selectors[1]!r} are both channel "
                       f"{wanted[0]} of {path}")
    if min(wanted) < 0 or max(wanted) >= pixels.shape[0]:
        asked = ", ".join(f"{source} {selector!r}" for source, selector in zip(given, selectors))
        raise FovError(f"{what}: {path} has {pixels.shape[0]} channel(s) (0 to {pixels.shape[0] - 1}) but {asked} "
                       f"ask for channels {wanted}")
    if pixels.shape[1] == 1:
        raise FovError(f"{what}: {path} is a single z-slice (a 2D image, or a projection); statcell segments and "
                       "crops 3D z-stacks")
    channels = pixels[list(wanted)].astype(np.float32)
    if not np.isfinite(channels).all():
        raise FovError(f"{what}: {path} contains NaN or infinite values")
    if np.issubdtype(pixels.dtype, np.floating):
        channels = _to_camera_range(channels, what=f"{what} ({path})")
    for name, channel in zip(("membrane", "DNA"), channels[:2]):
        if channel.min() == channel.max():
            raise FovError(f"{what}: the {name} channel of {path} is empty (constant {channel.min():g})")
    return channels


def label_images(cell_file: np.ndarray, nucleus_file: np.ndarray, *, same_file: bool,
                 what: str) -> tuple[np.ndarray, np.ndarray]:
    """The cell and nucleus labels ``(Z, Y, X)`` of the label images a manifest names, read as ``(C, Z, Y, X)``.

    Each file holds one label channel, or, where one file is given as both segmentations, two: cells then nuclei
    (the layout of the ``segmentation`` files statcell writes).

    Raises
    ------
    FovError
        If a file holds any other number of channels, or labels that are not non-negative integers below 2**32.

    Examples
    --------
    >>> both = np.stack([np.full((1, 2, 2), 1), np.eye(2, dtype=int)[np.newaxis]])
    >>> cells, nuclei = label_images(both, both, same_file=True, what="x")
    >>> int(cells.sum()), int(nuclei.sum())
    (4, 2)
    """
    if same_file and cell_file.shape[0] == 2:
        cells, nuclei = cell_file[0], cell_file[1]
    elif cell_file.shape[0] == 1 and nucleus_file.shape[0] == 1:
        cells, nuclei = cell_file[0], nucleus_file[0]
    else:
        counts = f"{cell_file.shape[0]}" if same_file else f"{cell_file.shape[0]} and {nucleus_file.shape[0]}"
        raise FovError(f"{what}: the label image(s) hold {counts} channel(s); each must hold one label channel, or "
                       "the one file given as both segmentations two (cells, then nuclei)")
    for labels in (cells, nuclei):
        if labels.min() < 0 or labels.max() >= 2**32 or (np.issubdtype(labels.dtype, np.floating)
                                                           and not np.array_equal(labels, np.round(labels))):
            raise FovError(f"{what}: labels must be non-negative whole numbers below 2**32 "
                           f"(found {labels.min():g} to {labels.max():g}, {labels.dtype})")
    return cells, nuclei


def _to_camera_range(channels: np.ndarray, *, what: str) -> np.ndarray:
    """Floating-point channels mapped linearly onto 0..65535, each from its own 0 (or lower minimum) to its maximum.

    Crops are stored as 16-bit integers of camera units and each channel's background is its most populous integer
    value, so an image of floats (deconvolved, or scaled to [0, 1]) would lose its values to rounding (and one
    beyond 65535 to clipping). Each cell is scaled to [0, 1] at normalization, so the map changes no normalized crop;
    the intensity measurements of such a FOV are in the map's units (logged).

    Examples
    --------
    >>> _to_camera_range(np.array([[0.0, 0.25, 0.5]], np.float32), what="x").tolist()
    [[0.0, 32767.5, 65535.0]]
    """
    mapped = np.empty_like(channels)
    for index, channel in enumerate(channels):
        low, high = min(float(channel.min()), 0.0), float(channel.max())
        scale = 65535.0 / (high - low) if high > low else 1.0
        mapped[index] = (channel - low) * np.float32(scale)
        log.info("%s: channel %d holds floating-point values (%g to %g), mapped onto 0..65535 (x %.6g)", what, index,
                 float(channel.min()), high, scale)
    return mapped


def write_crops(path: str | Path, crops: np.ndarray) -> None:
    """Write a FOV's cell crops ``(N, C, Z, Y, X)`` as a compressed ``.npz`` (array ``crops``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(partial, crops=crops)
    partial.replace(path)


@dataclass(frozen=True)
class StoreMetadata:
    """What a ``cells.zarr`` store states about itself.

    Attributes
    ----------
    spacing : tuple of float or None
        Voxel size ``(z, y, x)`` in micrometres, from the OME-Zarr scale; None where the store does not state it.
    channels : tuple of str or None
        Channel names in order: those of the :data:`STORE_ATTRIBUTE` attribute, else the OME ``omero`` labels;
        None where the store names none.
    n_cells : int or None
        Cells in the store, as its :data:`STORE_ATTRIBUTE` attribute states.
    cell_ids_sha256 : str or None
        :func:`cell_ids_digest` of the cells the store holds, in store order, which ties a ``cells.parquet`` to its
        store; None for a store written before statcell recorded it.
    """

    spacing: tuple[float, float, float] | None
    channels: tuple[str, ...] | None
    n_cells: int | None
    cell_ids_sha256: str | None = None


def store_metadata(store: str | Path) -> StoreMetadata:
    """Read the metadata of a ``cells.zarr`` store (:func:`statcell.normalize.create_cell_store`).

    The OME-Zarr 0.5 metadata is the group attribute ``ome`` (axes ``cell, c, z, y, x``, scale, ``omero`` channel
    labels); the project's own is the group attribute :data:`STORE_ATTRIBUTE`. Stores written before it moved there
    kept it inside ``ome``, where it is still read. A store without group metadata (a bare array ``0``) states
    nothing: every field is None.
    """
    import zarr

    try:
        attributes = dict(zarr.open_group(store, mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        attributes = {}
    ome = attributes.get("ome") or {}
    ours = attributes.get(STORE_ATTRIBUTE) or ome.get(STORE_ATTRIBUTE) or {}
    try:
        scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        spacing = tuple(float(value) for value in scale[-3:])
    except (KeyError, IndexError, TypeError):
        spacing = None
    channels = ours.get("channels") or [channel.get("label") for channel in ome.get("omero", {}).get("channels", [])]
    n_cells = ours.get("n_cells")
    return StoreMetadata(spacing=spacing, channels=tuple(str(name) for name in channels) if channels else None,
                         n_cells=None if n_cells is None else int(n_cells), cell_ids_sha256=ours.get("cell_ids_sha256"))


def cell_ids_digest(cells: pd.DataFrame) -> str:
    """SHA-256 of a cells table's ids in store order (``store_index``), one per line.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"cell_id": ["main/a/2", "main/a/1"], "store_index": [1, 0]})
    >>> cell_ids_digest(table) == cell_ids_digest(table.iloc[::-1]) != cell_ids_digest(table.assign(store_index=[0, 1]))
    True
    """
    ordered = cells.sort_values("store_index")["cell_id"].astype(str)
    return hashlib.sha256("\n".join(ordered).encode()).hexdigest()


def read_cell_table(path: str | Path, *, store: str | Path) -> pd.DataFrame:
    """Read a dataset's ``cells.parquet``, checking that it lists the cells of ``store``.

    A table and a store from different datasets or runs would pair each row with another cell, silently: the store
    states the digest of its cells' ids (:func:`cell_ids_digest`; a store written before it did is checked by its
    number of cells only).

    Parameters
    ----------
    path : str or Path
        The cells table.
    store : str or Path
        The ``cells.zarr`` its ``store_index`` column indexes.

    Raises
    ------
    ValueError
        If the table does not list the store's cells, naming both files.
    """
    import pandas as pd

    table = pd.read_parquet(path)
    stated = store_metadata(store)
    if stated.cell_ids_sha256 is not None:
        same = {"cell_id", "store_index"} <= set(table.columns) and cell_ids_digest(table) == stated.cell_ids_sha256
    else:
        same = "store_index" in table.columns and len(table) == open_cells(store).shape[0]
    if not same:
        raise ValueError(f"the cells table {path} does not list the cells of the store {store} (a table and a store "
                         "of different datasets or runs?): give the cells.parquet written beside that cells.zarr")
    return table


def store_spacing(store: str | Path) -> tuple[float, float, float]:
    """Voxel size ``(z, y, x)`` in µm of a ``cells.zarr`` store, from its OME-Zarr scale.

    Raises
    ------
    ValueError
        If the store does not state its voxel size.
    """
    spacing = store_metadata(store).spacing
    if spacing is None:
        raise ValueError(f"the cell store {store} does not state its voxel size (OME-Zarr multiscales scale)")
    return spacing


def open_cells(store: str | Path) -> zarr.Array:
    """Open the cell array ``0`` of a ``cells.zarr`` store read-only, without reading any cell.

    For readers that fetch cells one at a time or in many batches (a torch ``Dataset``, thumbnails): pass the
    returned array to :func:`read_cells` to read cells without opening the store again.

    Parameters
    ----------
    store : str or Path
        Folder of the store (:func:`statcell.normalize.create_cell_store`).

    Returns
    -------
    zarr.Array
        Shape ``(N, C, Z, Y, X)``, encoded as :func:`encode_cells` (uint8 by default; older stores float32); cells are
        read only when indexed. Read values through :func:`read_cells`, which decodes them.
    """
    import zarr

    return zarr.open_array(Path(store) / "0", mode="r")


def encode_cells(values: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Encode cell values in [0, 1] as a store of ``dtype`` holds them: integers ``round(value * max)``, floats as is.

    Values outside [0, 1] are clipped where the encoding is an integer one (normalized channels and masks never are).

    Examples
    --------
    >>> encode_cells(np.array([0.0, 0.5, 1.0, 1.2], np.float32), "uint8").tolist()
    [0, 128, 255, 255]
    >>> round(float(decode_cells(encode_cells(np.array([0.3], np.float32), "uint16"))[0]), 4)
    0.3
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "u":
        return np.asarray(values, dtype=dtype)
    top = np.iinfo(dtype).max
    return np.rint(np.clip(values, 0.0, 1.0) * top).astype(dtype)


def decode_cells(values: np.ndarray) -> np.ndarray:
    """Float32 cell values from a store's encoded ones (the inverse of :func:`encode_cells`, to its step)."""
    values = np.asarray(values)
    if values.dtype.kind == "u":
        return values.astype(np.float32) * np.float32(1.0 / np.iinfo(values.dtype).max)
    return values.astype(np.float32, copy=False)


def read_cells(store: str | Path | zarr.Array, indices: Sequence[int] | np.ndarray, *,
               channels: Sequence[int] | None = (0, 1, 2), decode: bool = True) -> np.ndarray:
    """Read cells of a ``cells.zarr`` store, in the order of ``indices``, decoded to float32 (:func:`decode_cells`).

    The distinct indices are read once, in increasing order (one chunk per cell; consecutive cells in one slice), and
    the result is put back in the order asked for; an index may repeat.

    Parameters
    ----------
    store : str, Path or zarr.Array
        Folder of the store, or its array from :func:`open_cells` (to read many batches without reopening it).
    indices : sequence of int
        Store indices of the cells, ``(n,)``.
    channels : sequence of int, optional
        Channels to read, in the order wanted; the default is membrane, DNA and structure; None reads all of them.
    decode : bool
        Decode to float32 (:func:`decode_cells`); False returns the values as stored (e.g. uint8), for a reader that
        decodes them later (the training loader, on the device).

    Returns
    -------
    ndarray
        ``(n, len(channels), Z, Y, X)``, float32 (or the store's dtype without ``decode``); ``n`` may be 0.

    Raises
    ------
    IndexError
        If an index lies outside the store's cells.

    Examples
    --------
    >>> import zarr
    >>> values = np.arange(80, dtype="float32").reshape(2, 5, 2, 2, 2)  # 2 cells, 5 channels, 2 x 2 x 2 voxels
    >>> cells = zarr.create_array(zarr.storage.MemoryStore(), data=values)
    >>> read_cells(cells, [1, 0, 1], channels=[2])[:, 0, 0, 0, 0].tolist()
    [56.0, 16.0, 56.0]
    """
    array = open_cells(store) if isinstance(store, (str, Path)) else store
    channels = list(range(array.shape[1])) if channels is None else [int(channel) for channel in channels]
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if not len(indices):
        return np.zeros((0, len(channels), *array.shape[2:]), np.float32 if decode else array.dtype)
    if indices.min() < 0 or indices.max() >= array.shape[0]:
        outside = indices[(indices < 0) | (indices >= array.shape[0])][0]
        raise IndexError(f"cell index {outside} outside the {array.shape[0]} cells of the store {store}")
    unique, inverse = np.unique(indices, return_inverse=True)
    # Runs of consecutive cells as basic slices: a chunk holds one whole cell, so this decompresses what any read
    # would; zarr's orthogonal selection took 7 times as long on paper-size cells (bench/bench_store.py). Slices of
    # at most _READ_RUN cells bound the memory of the channels read and dropped.
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    runs = [(int(start), min(int(start) + _READ_RUN, int(run[-1]) + 1))
            for run in np.split(unique, breaks) for start in run[::_READ_RUN]]
    stored = np.concatenate([_read_run(array, start, stop, store=store)[:, channels] for start, stop in runs])
    return (decode_cells(stored) if decode else stored)[inverse.reshape(-1)]


def _read_run(array: zarr.Array, start: int, stop: int, *, store: object) -> np.ndarray:
    """Cells ``start:stop`` of a store's array; a chunk that cannot be decompressed is named, with its store."""
    try:
        return np.asarray(array[start:stop])
    except RuntimeError as error:  # numcodecs' "Zstd decompression error": a truncated or overwritten chunk
        raise ValueError(f"the cell store {store} is corrupt: cells {start} to {stop - 1} cannot be decoded "
                         f"({error}); rerun the rule that writes it (snakemake --forcerun RULE)") from error


def write_mesh(mesh: trimesh.Trimesh, path: str | Path) -> None:
    """Write a triangle mesh in the format its suffix names (``.obj``, ``.stl``, ``.ply``), creating the folder.

    The file is written beside its final name and then renamed, so a stopped job leaves no half-written mesh.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    mesh.export(partial, file_type=path.suffix.lstrip("."))
    partial.replace(path)


def read_stack(path: str | Path, *, axes: str) -> np.ndarray:
    """Read a single-cell TIFF or OME-TIFF as ``(C, Z, Y, X)``, its axis order declared by its data layout.

    A file that states its axes (OME-TIFF, ImageJ hyperstack) is read by them; a plain TIFF, which states only its
    shape, is taken to be in the declared order (as ``tifffile.imread`` returns it).

    Parameters
    ----------
    path : str or Path
        The file.
    axes : str
        Axis order of the stored array, a permutation of ``"CZYX"`` (e.g. ``"ZCYX"``).

    Returns
    -------
    ndarray
        The pixels, ``(C, Z, Y, X)``, in the file's dtype.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the array does not have the four declared axes.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with tifffile.TiffFile(path) as tiff:
        if not tiff.series:
            raise ValueError(f"{path} holds no image (truncated, or not a TIFF)")
        series = tiff.series[0]
        data, stated = series.asarray(), series.axes
        states_axes = bool(tiff.is_ome or tiff.is_imagej) and set(stated) <= set("TCZYX")
    if states_axes:
        if "T" in stated:
            data, stated = np.take(data, 0, axis=stated.index("T")), stated.replace("T", "")
        for axis in "CZ":
            if axis not in stated:
                data, stated = data[np.newaxis], axis + stated
        return np.moveaxis(data, [stated.index(axis) for axis in "CZYX"], range(4))
    if data.ndim != len(axes):
        raise ValueError(f"{path} holds a {data.ndim}-D array of shape {data.shape}; expected axes {axes}")
    return np.moveaxis(data, [axes.index(axis) for axis in "CZYX"], range(4))
