"""File input and output: OME-TIFF images through bioio, FOV manifests and tables.

All image arrays are channel-first ``(C, Z, Y, X)``; voxel sizes are ``spacing=(z, y, x)`` in micrometres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST_COLUMNS: dict[str, str] = {
    "fov_id": "unique name of the field of view (letters, digits, '_' and '-')",
    "path": "image file (OME-TIFF or TIFF), absolute or relative to the manifest's folder",
    "membrane_channel": "0-based index of the membrane-dye channel",
    "dna_channel": "0-based index of the DNA-dye channel",
    "structure_channel": "0-based index of the tagged-structure channel",
    "structure": "name of the tagged structure (or control)",
    "pixel_size_z_um": "z-step in micrometres",
    "pixel_size_y_um": "pixel height in micrometres",
    "pixel_size_x_um": "pixel width in micrometres",
}
OPTIONAL_MANIFEST_COLUMNS: dict[str, str] = {
    "drug": "treatment name (empty for untreated cells)",
    "concentration_um": "drug concentration in micromolar",
}


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
    """

    data: np.ndarray
    channel_names: tuple[str, ...]
    spacing: tuple[float, float, float]


def write_ome_tiff(
    path: str | Path,
    image: np.ndarray,
    *,
    channel_names: list[str],
    spacing: tuple[float, float, float],
    image_name: str | None = None,
) -> None:
    """Write a ``(C, Z, Y, X)`` array as a compressed OME-TIFF with channel names and physical pixel sizes.

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
    """
    from bioio_base.types import PhysicalPixelSizes
    from bioio_ome_tiff.writers import OmeTiffWriter

    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) array for {path}, got shape {image.shape}")
    if len(channel_names) != image.shape[0]:
        raise ValueError(f"{len(channel_names)} channel names for {image.shape[0]} channels in {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.ome.tiff")
    OmeTiffWriter.save(
        image,
        partial,
        dim_order="CZYX",
        channel_names=list(channel_names),
        physical_pixel_sizes=PhysicalPixelSizes(*spacing),
        image_name=image_name or path.name.split(".")[0],
    )
    partial.replace(path)


def read_image(path: str | Path) -> Image:
    """Read an OME-TIFF or TIFF as ``(C, Z, Y, X)`` with its channel names and voxel size.

    Parameters
    ----------
    path : str or Path
        The image file.

    Returns
    -------
    Image
        Pixels (first scene, first time point) and metadata.
    """
    from bioio import BioImage

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    reader = BioImage(path)
    data = np.asarray(reader.get_image_data("CZYX", T=0))
    names = tuple(str(name) for name in (reader.channel_names or [f"channel_{i}" for i in range(data.shape[0])]))
    sizes = reader.physical_pixel_sizes
    spacing = tuple(float(value) if value is not None else math.nan for value in (sizes.Z, sizes.Y, sizes.X))
    return Image(data=data, channel_names=names, spacing=spacing)  # type: ignore[arg-type]


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


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and check a FOV manifest.

    Parameters
    ----------
    path : str or Path
        CSV file with the columns of :data:`MANIFEST_COLUMNS` (and optionally :data:`OPTIONAL_MANIFEST_COLUMNS`).

    Returns
    -------
    DataFrame
        One row per FOV; ``path`` made absolute (relative paths are taken from the manifest's folder); ``drug`` is
        ``""`` and ``concentration_um`` 0 where absent.

    Raises
    ------
    ManifestError
        If a column is missing, a value has the wrong type, or a FOV id is repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    table = pd.read_csv(path, dtype={"fov_id": str, "path": str, "structure": str, "drug": str})
    missing = [column for column in MANIFEST_COLUMNS if column not in table.columns]
    if missing:
        described = "; ".join(f"{column} ({MANIFEST_COLUMNS[column]})" for column in missing)
        raise ManifestError(f"manifest {path} lacks the column(s): {described}")
    if "drug" not in table.columns:
        table["drug"] = ""
    if "concentration_um" not in table.columns:
        table["concentration_um"] = 0.0
    table["drug"] = table["drug"].fillna("")
    table["concentration_um"] = table["concentration_um"].fillna(0.0)

    for column in ("fov_id", "path", "structure"):
        empty = table.index[table[column].isna() | (table[column].astype(str).str.strip() == "")]
        if len(empty):
            raise ManifestError(f"manifest {path}, row {empty[0] + 2}: column '{column}' is empty")
    bad_ids = table.loc[~table["fov_id"].str.fullmatch(r"[A-Za-z0-9_\-]+"), "fov_id"]
    if len(bad_ids):
        raise ManifestError(
            f"manifest {path}: fov_id {bad_ids.iloc[0]!r} may hold only letters, digits, '_' and '-'"
        )
    duplicated = table.loc[table["fov_id"].duplicated(), "fov_id"]
    if len(duplicated):
        raise ManifestError(f"manifest {path}: fov_id {duplicated.iloc[0]!r} appears more than once")
    for column in ("membrane_channel", "dna_channel", "structure_channel"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = table.index[values.isna() | (values < 0) | (values != values.round())]
        if len(bad):
            raise ManifestError(
                f"manifest {path}, row {bad[0] + 2}: column '{column}' must be a channel index (0, 1, ...), "
                f"got {table.at[bad[0], column]!r}"
            )
        table[column] = values.astype(int)
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
        table[column] = values.astype(float)
    table["path"] = [str(_resolve(entry, path.parent)) for entry in table["path"]]
    return table


def _resolve(entry: str, folder: Path) -> Path:
    candidate = Path(entry)
    return candidate if candidate.is_absolute() else (folder / candidate).resolve()
