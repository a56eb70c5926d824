"""Pre-cropped single-cell datasets in the Allen Institute's layout (one registered 3D TIFF per cell, listed in a CSV).

Such a dataset skips segmentation and cropping: each cell's TIFF (channels membrane, structure, DNA, cell
segmentation, nuclear segmentation by default) becomes a crop of :data:`statcell.crop.CROP_CHANNELS`, rescaled to the
configured voxel size and centred on its nucleus, and joins the workflow at normalization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from statcell import io
from statcell.crop import CROP_CHANNELS, CropSettings, measure_cell, most_populous_intensity, place_at_centre, resample

#: The Allen Institute's mitotic annotation classes, in the names used throughout statcell.
MITOTIC_STATES: dict[str, str] = {
    "M0": "interphase", "M1/M2": "prophase", "M3": "early_prometaphase", "M4/M5": "prometaphase_metaphase",
    "M6/M7": "anaphase_telophase",
}


@dataclass(frozen=True)
class AllenCellSettings:
    """The ``allencell`` section of the configuration (column names, channel order, voxel size, chunking)."""

    csv: str
    path_column: str = "save_reg_path"
    cell_id_column: str = "CellId"
    structure_column: str = "StructureDisplayName"
    mitotic_column: str = "MitoticStateId/Name"
    channels: tuple[int, int, int, int, int] = (0, 2, 1, 3, 4)  # membrane, DNA, structure, cell seg, nucleus seg
    voxel_size_um: float = 0.29
    chunk_size: int = 200

    @classmethod
    def from_config(cls, section: dict) -> AllenCellSettings:
        """Build settings from the validated ``allencell`` config section."""
        columns, channels = section["columns"], section["channels"]
        if not section["csv"]:
            raise ValueError("data.source is `allencell` but allencell.csv is not set")
        return cls(csv=section["csv"], path_column=columns["path"], cell_id_column=columns["cell_id"],
                   structure_column=columns["structure"], mitotic_column=columns["mitotic_state"],
                   channels=tuple(channels[name] for name in ("membrane", "dna", "structure", "cell_segmentation",
                                                              "nucleus_segmentation")),  # type: ignore[arg-type]
                   voxel_size_um=section["voxel_size_um"], chunk_size=section["chunk_size"])


def read_cell_table(settings: AllenCellSettings) -> pd.DataFrame:
    """Read the dataset's CSV: one row per cell, with absolute image paths.

    Returns
    -------
    DataFrame
        Columns ``cell_id``, ``path``, ``structure``, ``mitotic_stage`` (``unknown`` where the CSV has no column),
        ``chunk`` (which import job handles the cell).

    Raises
    ------
    io.ManifestError
        If the file or a required column is missing, or a cell id repeats.
    """
    path = Path(settings.csv)
    if not path.is_file():
        raise io.ManifestError(f"Allen single-cell CSV not found: {path}")
    table = pd.read_csv(path, dtype=str)
    required = (settings.path_column, settings.cell_id_column, settings.structure_column)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise io.ManifestError(f"{path} lacks the column(s) {', '.join(missing)} (see allencell.columns)")
    cells = pd.DataFrame({
        "cell_id": table[settings.cell_id_column].astype(str),
        "path": [str(entry if Path(entry).is_absolute() else (path.parent / entry).resolve())
                 for entry in table[settings.path_column].astype(str)],
        "structure": table[settings.structure_column].astype(str),
        "mitotic_stage": (table[settings.mitotic_column].map(lambda s: MITOTIC_STATES.get(s, s))
                          if settings.mitotic_column in table.columns else "unknown"),
    })
    duplicated = cells.loc[cells["cell_id"].duplicated(), "cell_id"]
    if len(duplicated):
        raise io.ManifestError(f"{path}: cell id {duplicated.iloc[0]!r} appears more than once")
    cells["chunk"] = [f"allencell_{index // settings.chunk_size:05d}" for index in range(len(cells))]
    return cells


def import_cell(image: np.ndarray, *, source_voxel_um: float, crop_settings: CropSettings,
                channels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Turn one registered single-cell image into a crop (and the whole cell, for measuring).

    Parameters
    ----------
    image : ndarray
        ``(C, Z, Y, X)`` registered cell (already aligned and masked by the Allen pipeline).
    source_voxel_um : float
        Its isotropic voxel size.
    crop_settings : CropSettings
        Target voxel size and shape.
    channels : tuple of int
        Indices of membrane, DNA, structure, cell segmentation and nuclear segmentation.

    Returns
    -------
    crop, whole : ndarray
        float32 ``(5, Z, Y, X)`` of :data:`statcell.crop.CROP_CHANNELS` at the crop shape, and before cutting.
    """
    intensities, masks = resample(image[list(channels[:3])], image[list(channels[3:])] > 0,
                                  zoom=source_voxel_um / crop_settings.voxel_size_um)
    whole = np.concatenate([intensities * masks[0], masks.astype(np.float32)])
    centre = np.array(ndimage.center_of_mass(masks[1])) if masks[1].any() else np.array(whole.shape[1:]) / 2
    return place_at_centre(whole, centre, crop_settings.shape), whole


def import_chunk(cells: pd.DataFrame, *, settings: AllenCellSettings,
                 crop_settings: CropSettings) -> tuple[np.ndarray, pd.DataFrame]:
    """Import the cells of one chunk; an unreadable or malformed file becomes a rejects row naming it.

    Returns
    -------
    crops : ndarray
        uint16 ``(N, 5, Z, Y, X)`` of the imported cells.
    table : DataFrame
        One row per cell, in the per-FOV table format of ``crop_cells`` (``fov_id`` is the chunk, ``label`` the
        row within it, ``source_cell_id`` the CSV's cell id), with ``reject_reason``, ``crop_index`` and
        measurements.
    """
    crops, rows = [], []
    for index, cell in enumerate(cells.itertuples()):
        row = {"fov_id": cell.chunk, "label": index + 1, "source_cell_id": cell.cell_id, "structure": cell.structure,
               "mitotic_stage": cell.mitotic_stage, "reject_reason": "", "crop_index": -1}
        try:
            image = io.read_image(cell.path).data
            if image.shape[0] <= max(settings.channels):
                raise io.FovError(f"it has {image.shape[0]} channels, allencell.channels asks for "
                                  f"{max(settings.channels) + 1}")
            if not np.isfinite(image).all():
                raise io.FovError("it contains NaN or infinite values")
        except Exception as error:  # noqa: BLE001 - any reader failure makes this cell unusable; record which file
            row["reject_reason"] = f"unusable_cell_image: {cell.path}: {error}"
            rows.append(row)
            continue
        crop, whole = import_cell(image, source_voxel_um=settings.voxel_size_um, crop_settings=crop_settings,
                                  channels=settings.channels)
        if not crop[4].any():
            row["reject_reason"] = "no_nucleus"
            rows.append(row)
            continue
        backgrounds = tuple(most_populous_intensity(whole[c][whole[3] > 0]) for c in range(3))
        crops.append(np.clip(np.rint(crop), 0, np.iinfo(np.uint16).max).astype(np.uint16))
        rows.append({**row, "crop_index": len(crops) - 1,
                     **measure_cell(whole, voxel_um=crop_settings.voxel_size_um, backgrounds=backgrounds)})
    stack = np.stack(crops) if crops else np.zeros((0, len(CROP_CHANNELS), *crop_settings.shape), dtype=np.uint16)
    return stack, pd.DataFrame(rows)
