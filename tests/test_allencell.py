"""Pre-cropped single cells in the Allen Institute's layout: a CSV listing one registered 3D TIFF per cell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from statcell import allencell, crop, io

ROOT = Path(__file__).resolve().parents[1]


def _cell_image(rng: np.random.Generator, shift: int) -> np.ndarray:
    """(membrane, structure, DNA, cell seg, nucleus seg) of one registered cell, 0.29 µm voxels."""
    z, y, x = np.indices((30, 40, 60))
    cell = ((z - 15) / 12) ** 2 + ((y - 20) / 16) ** 2 + ((x - 30 - shift) / 26) ** 2 <= 1
    nucleus = ((z - 15) / 7) ** 2 + ((y - 20) / 8) ** 2 + ((x - 30 - shift) / 10) ** 2 <= 1
    shell = cell & ~np.pad(cell[1:-1, 1:-1, 1:-1] & cell[2:, 1:-1, 1:-1] & cell[:-2, 1:-1, 1:-1], 1)
    membrane = (200 + 800 * shell + rng.normal(0, 5, cell.shape)) * cell
    structure = (200 + 300 * (rng.random(cell.shape) < 0.05)) * (cell & ~nucleus)
    dna = (200 + 600 * nucleus + rng.normal(0, 5, cell.shape)) * cell
    return np.stack([membrane, structure, dna, cell * 255, nucleus * 255]).clip(0).astype(np.uint16)


@pytest.fixture
def dataset(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "allen"
    rows = []
    for index in range(5):
        relative = f"cell_images_3d/{1000 + index}_reg.ome.tiff"
        io.write_ome_tiff(folder / relative, _cell_image(rng, shift=index - 2),
                          channel_names=["memb", "struct", "dna", "seg_cell", "seg_nuc"], spacing=(0.29,) * 3)
        rows.append({"CellId": 1000 + index, "save_reg_path": relative,
                     "StructureDisplayName": ["Golgi", "Nucleolus"][index % 2],
                     "MitoticStateId/Name": ["M0", "M4/M5", "M0", "M6/M7", "M0"][index]})
    (folder / "cell_images_3d" / "bad_reg.ome.tiff").write_bytes(b"not a tiff at all")
    rows.append({"CellId": 2000, "save_reg_path": "cell_images_3d/bad_reg.ome.tiff", "StructureDisplayName": "Golgi",
                 "MitoticStateId/Name": "M0"})
    pd.DataFrame(rows).to_csv(folder / "data_jobs_out.csv", index=False)
    return folder / "data_jobs_out.csv"


def test_csv_is_read_with_resolved_paths_and_mitotic_names(dataset):
    settings = allencell.AllenCellSettings(csv=str(dataset), chunk_size=4)
    cells = allencell.read_cell_table(settings)
    assert list(cells["cell_id"][:2]) == ["1000", "1001"]
    assert Path(cells.loc[0, "path"]).is_file()
    assert list(cells["mitotic_stage"][:4]) == ["interphase", "prometaphase_metaphase", "interphase",
                                                "anaphase_telophase"]
    assert list(cells["chunk"]) == ["allencell_00000"] * 4 + ["allencell_00001"] * 2


def test_missing_column_is_named(dataset):
    with pytest.raises(io.ManifestError, match="CellId"):
        allencell.read_cell_table(allencell.AllenCellSettings(csv=str(dataset), cell_id_column="CellId2"))


def test_import_centres_nuclei_and_rejects_unreadable_files(dataset):
    settings = allencell.AllenCellSettings(csv=str(dataset))
    crop_settings = crop.CropSettings(voxel_size_um=0.5, shape=(24, 24, 40), min_cell_volume_um3=0.0,
                                      max_cell_volume_um3=1e6, min_nucleus_inside=0.9)
    crops, table = allencell.import_chunk(allencell.read_cell_table(settings), settings=settings,
                                          crop_settings=crop_settings)
    assert crops.shape == (5, 5, 24, 24, 40)
    bad = table[table["source_cell_id"] == "2000"].iloc[0]
    assert bad["reject_reason"].startswith("unusable_cell_image") and "bad_reg.ome.tiff" in bad["reject_reason"]
    from scipy import ndimage

    for one in crops:
        np.testing.assert_allclose(ndimage.center_of_mass(one[4]), np.array(crop_settings.shape) / 2, atol=1.0)
        assert one[0][one[3] == 0].max() == 0  # intensities stay inside the cell
    volume = table.loc[table["crop_index"] == 0, "nucleus_volume_um3"].iloc[0]
    assert volume == pytest.approx(4 / 3 * np.pi * 7 * 8 * 10 * 0.29**3, rel=0.1)


@pytest.mark.slow
def test_workflow_on_an_allencell_csv_skips_segmentation(tmp_path, dataset):
    for name in ("Snakefile", "rules", "config", "workflow", "envs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "allen.yaml").write_text(yaml.safe_dump({
        "data": {"source": "allencell"}, "allencell": {"csv": str(dataset), "chunk_size": 4},
        "crop": {"voxel_size_um": 0.5, "shape": {"z": 24, "y": 24, "x": 40}}}))
    run = subprocess.run([sys.executable, "-m", "snakemake", "results/main/cells.parquet", "--cores", "2",
                          "--configfile", "allen.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "segment_fov" not in run.stdout + run.stderr
    cells = pd.read_parquet(tmp_path / "results" / "main" / "cells.parquet")
    assert sorted(cells["cell_id"]) == [f"main/{1000 + i}" for i in range(5)]
    assert set(cells["mitotic_stage"]) == {"interphase", "prometaphase_metaphase", "anaphase_telophase"}
    assert zarr.open_array(tmp_path / "results" / "main" / "cells.zarr" / "0", mode="r").shape == (5, 5, 24, 24, 40)
    rejects = pd.read_parquet(tmp_path / "results" / "main" / "rejects.parquet")
    assert list(rejects["source_cell_id"]) == ["2000"]
