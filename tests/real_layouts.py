"""Fixtures written exactly as the Allen Institute's single-cell datasets are, made from synthetic cells (known truth).

- :func:`write_pipeline4`: the Pipeline 4 single-cell package the paper trained on: ``data_jobs_out.csv`` (absolute
  paths of the institute's file system in ``save_reg_path``, per-cell ``ch_*`` columns, extra columns) and one plain
  uint8 ``(C, Z, Y, X)`` TIFF per cell, without channel names: 0 nucleus segmentation, 1 cell segmentation, 2 DNA,
  3 membrane, 4 structure, 5 transmitted light; control cells as 11-channel TIFFs whose ``ch_struct`` is 6-10. Cells
  are registered (aligned, centred, background-subtracted and scaled to 0-255, masked to the cell) with their long
  axis along Y.
- :func:`write_hipsc`: the hiPSC Single-Cell Image Dataset: ``metadata.csv`` (``name_dict``, ``scale_micron``,
  ``cell_stage``, gene symbols, FOV-level columns) and per cell two OME-TIFFs stored ``(Z, C, Y, X)``: raw channels
  (dna, membrane, structure) of the cell's bounding box cut from the FOV, unaligned, unmasked and with neighbours in
  it, resampled to isotropic voxels; and its five masks.

Each writer returns a table of what it wrote (CSV row → synthetic FOV and label), so a test can crop the same cell
directly from the FOV with :func:`statcell.crop.align_cell` and compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage

from statcell import allencell, crop, synth, vocabulary

#: Gene symbol of each synthetic structure in the hiPSC dataset (statcell.allencell.STRUCTURE_NAMES maps them back).
GENES = {"plasma_membrane": "AAVS1", "nuclear_envelope": "LMNB1", "nucleoli": "FBL", "mitochondria": "TOMM20",
         "microtubules": "TUBA1B", "golgi": "ST6GAL1", "tight_junctions": "TJP1", "matrix_adhesions": "PXN"}
#: Pipeline 4 display name of each synthetic structure.
DISPLAY_NAMES = {"plasma_membrane": "Plasma membrane", "nuclear_envelope": "Nuclear envelope",
                 "nucleoli": "Nucleolus (Dense Fibrillar Component)", "mitochondria": "Mitochondria",
                 "microtubules": "Microtubules", "golgi": "Golgi", "tight_junctions": "Tight junctions",
                 "matrix_adhesions": "Matrix adhesions"}
#: The paper's control classes: Pipeline 4 display name and channel of the 11-channel control TIFFs.
CONTROLS = {"control_dna": ("Control - DNA", 6), "control_membrane": ("Control - Memb", 7),
            "control_blank": ("Control - Blank", 8), "control_noise": ("Control - Noise", 9),
            "control_random_structure": ("Control - Random", 10)}
PIPELINE4_STAGES = {"interphase": "M0", "prophase": "M1/M2", "early_prometaphase": "M3",
                    "prometaphase_metaphase": "M4/M5", "anaphase_telophase": "M6/M7"}
HIPSC_STAGES = {"interphase": "M0", "prophase": "M1M2", "early_prometaphase": "M3",
                "prometaphase_metaphase": "M4M5", "anaphase_telophase": "M6M7_complete"}
NAME_DICT = ("{'crop_raw': ['dna', 'membrane', 'structure'], 'crop_seg': ['dna_segmentation', "
             "'membrane_segmentation', 'membrane_segmentation_roof', 'struct_segmentation', "
             "'struct_segmentation_roof']}")
HIPSC_VOXEL_UM = 0.108333
#: Where the institute's CSV says the files are (rebased onto ``allencell.image_root``).
INSTITUTE_ROOT = "/allen/aics/modeling/gregj/results/ipp/scp_19_04_10/cell_images_3d"


def synthetic_colony(structures: tuple[str, ...], *, seed: int = 7, fov_um: float = 30.0,
                     fovs_per_structure: int = 1) -> tuple[synth.SynthSettings, dict[str, synth.SyntheticFov]]:
    """Synthesize a small colony (one FOV per structure by default), no drug set."""
    from statcell.config import validate_config

    section = validate_config({"synthetic": {
        "seed": seed, "structures": list(structures), "fovs_per_structure": fovs_per_structure,
        "drug_structures": [], "fov_size_um": {"z": 14.0, "y": fov_um, "x": fov_um}, "mitotic_fraction": 0.3}})
    settings = synth.SynthSettings.from_config(section["synthetic"])
    plans = [plan for plan in synth.plan_fovs(settings) if plan.dataset == vocabulary.MAIN_DATASET]
    return settings, {plan.fov_id: synth.synthesize_fov(plan, settings) for plan in plans}


def whole_cells(fov: synth.SyntheticFov, *, min_visible: float = 0.999) -> list[int]:
    """Labels of the FOV's cells that lie wholly inside it (and have a visible nucleus)."""
    cells = fov.cells[fov.cells["visible_fraction"] >= min_visible]
    return [int(label) for label in cells["label"] if (fov.nucleus_labels == label).any()]


def cell_box(fov: synth.SyntheticFov, label: int, *, margin_um: float, spacing: tuple[float, float, float]
             ) -> tuple[slice, ...]:
    """The cell's bounding box in the FOV, widened by ``margin_um`` (so neighbours show)."""
    box = ndimage.find_objects((fov.cell_labels == label).astype(np.uint8))[0]
    margin = [int(np.ceil(margin_um / step)) for step in spacing]
    return tuple(slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margin, fov.cell_labels.shape))


def truth_crop(fov: synth.SyntheticFov, label: int, *, spacing: tuple[float, float, float],
               settings: crop.CropSettings) -> tuple[np.ndarray, dict]:
    """The cell cropped directly from its FOV with :func:`statcell.crop.align_cell` (its true masks, the FOV's
    background)."""
    box = cell_box(fov, label, margin_um=2.0, spacing=spacing)
    signal = crop.subtract_background(fov.image[(slice(None), *box)], crop.fov_backgrounds(fov.image, fov.cell_labels))
    return crop.align_cell(signal, fov.cell_labels[box] == label,
                           fov.nucleus_labels[box] == label, spacing=spacing, settings=settings)


def _to_uint8(channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Background-subtract (most populous value in the cell), scale to 0-255 and mask, as Pipeline 4 saved cells."""
    values = np.clip(channel - crop.most_populous_intensity(channel[mask]), 0, None) * mask
    top = values.max()
    return np.rint(values / top * 255 if top > 0 else values).astype(np.uint8)


def registered_cell(fov: synth.SyntheticFov, label: int, *, spacing: tuple[float, float, float],
                    voxel_um: float, shape: tuple[int, int, int]) -> np.ndarray:
    """A Pipeline 4 registered cell: uint8 ``(6, Z, Y, X)`` (nucleus seg, cell seg, DNA, membrane, structure, light),
    aligned and centred with its long axis along Y."""
    _, info = truth_crop(fov, label, spacing=spacing, settings=crop_settings(voxel_um, shape))
    aligned = info["aligned"]  # membrane, DNA, structure masked to the cell; masks
    centre = np.array(ndimage.center_of_mass(aligned[4]))
    whole = crop.place_at_centre(aligned, centre, shape)
    cell, nucleus = whole[3] > 0.5, whole[4] > 0.5
    rng = np.random.default_rng(label)
    light = np.clip(rng.normal(120, 20, cell.shape) + 40 * ndimage.gaussian_filter(cell.astype(float), 3), 0, 255)
    stack = np.stack([nucleus * np.uint8(255), cell * np.uint8(255), _to_uint8(whole[1], cell),
                      _to_uint8(whole[0], cell), _to_uint8(whole[2], cell), light.astype(np.uint8)])
    return np.ascontiguousarray(np.rot90(stack, k=-1, axes=(2, 3)))  # long axis (x) onto the file's y


def write_pipeline4(folder: Path, fovs: dict[str, synth.SyntheticFov], *, spacing: tuple[float, float, float],
                    voxel_um: float = 0.29, shape: tuple[int, int, int] = (44, 56, 72), controls: bool = True,
                    bad_rows: bool = True) -> tuple[Path, pd.DataFrame]:
    """Write a Pipeline 4 package of the FOVs' whole cells; control classes from the first FOV's cells.

    Returns
    -------
    csv : Path
        ``folder/data_jobs_out.csv``; images in ``folder/cell_images_3d/`` (the CSV names them by the institute's
        absolute paths: read with ``allencell.image_root: folder``).
    written : DataFrame
        ``CellId``, ``fov_id``, ``label``, ``structure`` (the name statcell's table gives the display name),
        ``synthetic_structure``, ``mitotic_stage`` (true), ``control_channel``.
    """
    images = folder / "cell_images_3d"
    images.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    cell_id = 1000
    for index, (fov_id, fov) in enumerate(fovs.items()):
        structure = fov.cells["structure"].iloc[0]
        for label in whole_cells(fov):
            stack = registered_cell(fov, label, spacing=spacing, voxel_um=voxel_um, shape=shape)
            truth = fov.cells.set_index("label").loc[label]
            structures = [(DISPLAY_NAMES[structure], structure, 4, stack)]
            if controls and structure in DISPLAY_NAMES and fov_id == next(iter(fovs)):
                rng = np.random.default_rng(label)
                noise = np.clip(rng.normal(60, 25, stack[0].shape), 0, 255).astype(np.uint8) * (stack[1] > 0)
                other = stack[4][::-1]  # another cell's structure stands in for a random cell's
                extended = np.concatenate([stack, stack[2:3], stack[3:4], np.zeros_like(stack[:1]), noise[None],
                                           other[None] * (stack[1:2] > 0)])
                structures += [(name, control, channel, extended) for control, (name, channel) in CONTROLS.items()]
            for display, name, channel, image in structures:
                cell_id += 1
                file = images / f"{cell_id}_reg.tiff"
                tifffile.imwrite(file, image, photometric="minisblack", compression="zlib")
                rows.append({"CellId": cell_id, "CellIndex": label, "FOVId": 100 + index,
                             "StructureDisplayName": display, "StructureId/Name": display.split(" ")[0].lower(),
                             "save_reg_path": f"{INSTITUTE_ROOT}/{file.name}",
                             "save_reg_path_flat": f"{INSTITUTE_ROOT}_flat/{cell_id}_reg_flat.png",
                             "ch_memb": 3, "ch_struct": channel, "ch_dna": 2, "ch_seg_cell": 1, "ch_seg_nuc": 0,
                             "ch_trans": 5, "MitoticStateId/Name": PIPELINE4_STAGES[truth["mitotic_stage"]],
                             "inputFilename": f"/allen/aics/microscopy/{fov_id}.czi"})
                written.append({"CellId": str(cell_id), "fov_id": fov_id, "label": label,
                                "structure": allencell.STRUCTURE_NAMES[display], "synthetic_structure": name,
                                "mitotic_stage": truth["mitotic_stage"], "control_channel": channel})
    if bad_rows:
        (images / "9001_reg.tiff").write_bytes(b"II*\x00 truncated")
        for cell_id, name in ((9001, "9001_reg.tiff"), (9002, "9002_reg.tiff")):  # unreadable, then missing
            rows.append({**rows[0], "CellId": cell_id, "save_reg_path": f"{INSTITUTE_ROOT}/{name}"})
    csv = folder / "data_jobs_out.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, pd.DataFrame(written)


def _write_ome_zcyx(path: Path, image: np.ndarray, *, voxel_um: float, compression: str | None = "zlib") -> None:
    """An OME-TIFF stored ``(Z, C, Y, X)`` with isotropic physical sizes (the hiPSC dataset's crops)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, ome=True, photometric="minisblack", compression=compression,
                     metadata={"axes": "ZCYX", "PhysicalSizeX": voxel_um, "PhysicalSizeY": voxel_um,
                               "PhysicalSizeZ": voxel_um})


def hipsc_crops(fov: synth.SyntheticFov, label: int, *, spacing: tuple[float, float, float],
                voxel_um: float = HIPSC_VOXEL_UM, margin_um: float = 2.5) -> tuple[np.ndarray, np.ndarray, bool]:
    """The cell's ``crop_raw`` (uint16 ``(Z, 3, Y, X)``: dna, membrane, structure) and ``crop_seg`` (uint8
    ``(Z, 5, Y, X)``) at isotropic ``voxel_um``, and whether a neighbour shows in the box."""
    box = cell_box(fov, label, margin_um=margin_um, spacing=spacing)
    zoom = [step / voxel_um for step in spacing]
    raw = np.stack([ndimage.zoom(fov.image[c][box].astype(np.float32), zoom, order=1, grid_mode=True,
                                 mode="nearest") for c in (1, 0, 2)])
    cells = ndimage.zoom(fov.cell_labels[box], zoom, order=0, grid_mode=True, mode="nearest")
    nuclei = ndimage.zoom(fov.nucleus_labels[box], zoom, order=0, grid_mode=True, mode="nearest")
    cell, nucleus = cells == label, nuclei == label
    structure = raw[2] > np.percentile(raw[2][cell], 90) if cell.any() else cell
    seg = np.stack([nucleus, cell, cell, structure & cell, structure & cell]).astype(np.uint8) * 255
    neighbour = bool(((nuclei > 0) & (nuclei != label)).any())
    raw = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    return np.moveaxis(raw, 0, 1), np.moveaxis(seg, 0, 1), neighbour


def write_hipsc(folder: Path, fovs: dict[str, synth.SyntheticFov], *, spacing: tuple[float, float, float],
                voxel_um: float = HIPSC_VOXEL_UM, bad_rows: bool = True, genes: dict[str, str] | None = None,
                compression: str | None = "zlib") -> tuple[Path, pd.DataFrame]:
    """Write a hiPSC Single-Cell Image Dataset of the FOVs' whole cells (relative paths, as in the package).

    ``compression`` is the TIFF compression of the crops (``None`` for uncompressed files).

    Returns
    -------
    csv : Path
        ``folder/metadata.csv``; crops in ``folder/crop_raw/`` and ``folder/crop_seg/``.
    written : DataFrame
        ``CellId``, ``fov_id``, ``label``, ``structure`` (the name statcell's table gives the gene symbol),
        ``synthetic_structure``, ``mitotic_stage`` (true), ``neighbour``.
    """
    genes = {**GENES, **(genes or {})}
    rows, written = [], []
    scale = f"[{voxel_um}, {voxel_um}, {voxel_um}]"
    for index, (fov_id, fov) in enumerate(fovs.items()):
        structure = fov.cells["structure"].iloc[0]
        for label in whole_cells(fov):
            raw, seg, neighbour = hipsc_crops(fov, label, spacing=spacing, voxel_um=voxel_um)
            cell_id = 600000 + 100 * index + label
            _write_ome_zcyx(folder / "crop_raw" / f"{cell_id}_raw.ome.tif", raw, voxel_um=voxel_um,
                            compression=compression)
            _write_ome_zcyx(folder / "crop_seg" / f"{cell_id}_seg.ome.tif", seg, voxel_um=voxel_um,
                            compression=compression)
            stage = fov.cells.set_index("label").at[label, "mitotic_stage"]
            rows.append({"CellId": cell_id, "structure_name": genes[structure],
                         "crop_raw": f"crop_raw/{cell_id}_raw.ome.tif", "crop_seg": f"crop_seg/{cell_id}_seg.ome.tif",
                         "name_dict": NAME_DICT, "scale_micron": scale, "cell_stage": HIPSC_STAGES[stage],
                         "fov_path": f"fov_path/{fov_id}.ome.tiff", "fov_seg_path": f"fov_seg_path/{fov_id}.ome.tiff",
                         "this_cell_index": label, "FOVId": 100 + index, "PlateId": 3500000 + index,
                         "roi": "[1, 2, 3, 4, 5, 6]", "edge_flag": 0, "shape_mode_1": 0.1 * label})
            written.append({"CellId": str(cell_id), "fov_id": fov_id, "label": label,
                            "structure": allencell.STRUCTURE_NAMES.get(genes[structure], genes[structure]),
                            "synthetic_structure": structure,
                            "mitotic_stage": stage, "neighbour": neighbour})
    if bad_rows:
        (folder / "crop_raw" / "999_raw.ome.tif").write_bytes(b"not a tiff")
        rows.append({**rows[0], "CellId": 999, "crop_raw": "crop_raw/999_raw.ome.tif"})
    csv = folder / "metadata.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, pd.DataFrame(written)


def crop_settings(voxel_um: float, shape: tuple[int, int, int]) -> crop.CropSettings:
    """Crop settings without QC limits (the datasets' cells are already chosen)."""
    return crop.CropSettings(voxel_size_um=voxel_um, shape=shape, min_cell_volume_um3=0.0, max_cell_volume_um3=1e9,
                             min_nucleus_inside=0.0)
