"""Bad FOVs never take the workflow down silently: a clear message naming the file, and a rejects row."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from statcell import io, synth
from statcell.cli import main
from tests.conftest import TINY_SYNTHETIC
from tests.test_workflow import copy_workflow


def _record(path, channels=(0, 1, 2)) -> dict:
    return {"fov_id": "bad_fov", "path": str(path), "membrane_channel": channels[0], "dna_channel": channels[1],
            "structure_channel": channels[2], "structure": "golgi", "pixel_size_z_um": 0.29,
            "pixel_size_y_um": 0.216, "pixel_size_x_um": 0.216}


def _good_image(rng) -> np.ndarray:
    return rng.integers(90, 400, size=(3, 6, 20, 20)).astype(np.uint16)


def _truncated(tmp_path, rng):
    path = tmp_path / "bad.ome.tiff"
    io.write_ome_tiff(path, _good_image(rng), channel_names=["m", "d", "s"], spacing=(0.29, 0.216, 0.216))
    path.write_bytes(path.read_bytes()[:2000])
    return path, "cannot read"


def _two_channels(tmp_path, rng):
    path = tmp_path / "bad.ome.tiff"
    io.write_ome_tiff(path, _good_image(rng)[:2], channel_names=["m", "d"], spacing=(0.29, 0.216, 0.216))
    return path, "has 2 channel(s)"


def _with_nan(tmp_path, rng):
    path = tmp_path / "bad.ome.tiff"
    image = _good_image(rng).astype(np.float32)
    image[1, 2, 3, 4] = np.nan
    io.write_ome_tiff(path, image, channel_names=["m", "d", "s"], spacing=(0.29, 0.216, 0.216))
    return path, "NaN"


def _all_zero(tmp_path, rng):
    path = tmp_path / "bad.ome.tiff"
    io.write_ome_tiff(path, np.zeros((3, 6, 20, 20), np.uint16), channel_names=["m", "d", "s"],
                      spacing=(0.29, 0.216, 0.216))
    return path, "is empty"


def _single_slice(tmp_path, rng):
    path = tmp_path / "bad.ome.tiff"
    io.write_ome_tiff(path, _good_image(rng)[:, :1], channel_names=["m", "d", "s"], spacing=(0.29, 0.216, 0.216))
    return path, "single z-slice"


def _missing(tmp_path, rng):
    return tmp_path / "nowhere.ome.tiff", "image file not found"


def _segment_and_crop(record: dict, folder) -> tuple[str, str]:
    """Run ``preprocess-fov`` on one FOV; return its crop archive and table."""
    labels, crops, table = (str(folder / f"{record['fov_id']}{suffix}") for suffix in (".labels.tiff", ".npz",
                                                                                        ".parquet"))
    assert main(["preprocess-fov", "--fov-record", json.dumps(record), "--labels", labels, "--crops", crops,
                 "--table", table]) == 0
    return crops, table


@pytest.mark.parametrize("make", [_truncated, _two_channels, _single_slice, _with_nan, _all_zero, _missing])
def test_bad_fov_is_rejected_with_a_message_naming_the_file(tmp_path, caplog, make):
    path, message = make(tmp_path, np.random.default_rng(0))
    crops, table = _segment_and_crop(_record(path), tmp_path)
    assert str(path) in caplog.text and message in caplog.text
    table = pd.read_parquet(table)
    assert len(table) == 1 and table.loc[0, "reject_reason"].startswith("unusable_fov")
    assert message in table.loc[0, "reject_reason"] and str(path) in table.loc[0, "reject_reason"]
    with np.load(crops) as archive:
        assert archive["crops"].shape[0] == 0


def test_a_segmentation_the_manifest_names_but_cannot_be_read_rejects_its_fov(tmp_path, caplog):
    path = tmp_path / "good.ome.tiff"
    io.write_ome_tiff(path, _good_image(np.random.default_rng(0)), channel_names=["m", "d", "s"],
                      spacing=(0.29, 0.216, 0.216))
    missing = tmp_path / "labels" / "gone.ome.tiff"
    record = {**_record(path), "cell_segmentation": str(missing), "nucleus_segmentation": str(missing)}
    _, table = _segment_and_crop(record, tmp_path)
    reason = pd.read_parquet(table).loc[0, "reject_reason"]
    assert reason.startswith("unusable_fov: FOV bad_fov: cannot read its cell segmentation") and str(missing) in reason


def _flat(tmp_path, rng):
    path = tmp_path / "flat.ome.tiff"
    io.write_ome_tiff(path, rng.normal(100, 2, (3, 6, 20, 20)).clip(0).astype(np.uint16),
                      channel_names=["m", "d", "s"], spacing=(0.29, 0.216, 0.216))
    return path, "no_cells_found"


def test_fov_with_no_cells_gives_a_reject_row(tmp_path, caplog):
    caplog.set_level("INFO")
    path, reason = _flat(tmp_path, np.random.default_rng(0))
    _, table = _segment_and_crop(_record(path), tmp_path)
    rows = pd.read_parquet(table)
    assert list(rows["reject_reason"]) == [reason] and list(rows["crop_index"]) == [-1]
    assert f"bad_fov: 1 {reason}" in caplog.text


def test_stacks_that_cut_cells_or_step_coarsely_in_z_warn_and_keep_their_cells(tmp_path, caplog, tiny_fovs):
    """A stack that ends inside its cells, or whose z-step is coarser than the crop voxel, keeps its cells and says
    why their heights and volumes are uncertain; a whole stack at a fine step says nothing."""
    caplog.set_level("INFO")
    image = tiny_fovs["golgi_00"].image
    warnings = {}
    for name, stack, z_step in (("whole", image, 0.29), ("cut", image[:, 8:24], 0.29),
                                ("coarse", image[:, ::7], 0.29 * 7)):
        path = tmp_path / f"{name}.ome.tiff"
        io.write_ome_tiff(path, stack, channel_names=["m", "d", "s"], spacing=(z_step, 0.216, 0.216))
        caplog.clear()
        record = {**_record(path), "fov_id": name, "pixel_size_z_um": z_step}
        table = pd.read_parquet(_segment_and_crop(record, tmp_path)[1])
        accepted = table[table["reject_reason"] == ""]
        assert len(accepted) > 0, name
        warnings[name] = [entry.getMessage() for entry in caplog.records if entry.levelname == "WARNING"]
        if name == "cut":
            assert accepted["touches_z_end"].all()
    assert warnings["whole"] == []
    assert len(warnings["cut"]) == 1 and "reach the first or last of the 16 z-slices" in warnings["cut"][0]
    coarse = [message for message in warnings["coarse"] if "z-step" in message]
    assert len(coarse) == 1 and "2.03 µm, is coarser than the crops' voxel (0.80 µm)" in coarse[0]
    assert str(tmp_path / "coarse.ome.tiff") in coarse[0]


def test_bad_fovs_become_rejects_while_a_good_fov_reaches_the_store(tmp_path, caplog):
    """Every bad FOV of the corpus beside one good FOV, through segmentation, cropping and normalization."""
    caplog.set_level("INFO")
    settings = {**TINY_SYNTHETIC, "structures": ["golgi"], "drug_treatments": []}
    assert main(["synthesize", "--settings", json.dumps(settings), "--outdir", str(tmp_path / "synthetic")]) == 0
    good = io.read_manifest(synth.manifest_path(tmp_path / "synthetic", "main")).iloc[0].to_dict()
    outputs = [_segment_and_crop(good, tmp_path)]
    bad = {}
    for make in (_truncated, _two_channels, _with_nan, _all_zero, _missing, _flat):
        folder = tmp_path / make.__name__.strip("_")
        folder.mkdir()
        path, message = make(folder, np.random.default_rng(1))
        outputs.append(_segment_and_crop({**_record(path), "fov_id": folder.name}, folder))
        # A bad file is named in its reject reason and the log; a FOV without cells by its id in the log.
        bad[folder.name] = (message, f"{folder.name}: 1 {message}" if make is _flat else str(path))
    crops, tables = zip(*outputs)
    store = tmp_path / "cells.zarr"
    assert main(["normalize-cells", "--crops", *crops, "--tables", *tables, "--dataset", "main", "--voxel-um", "0.8",
                 "--store", str(store), "--cells", str(tmp_path / "cells.parquet"),
                 "--rejects", str(tmp_path / "rejects.parquet")]) == 0
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    accepted = pd.read_parquet(tables[0])
    accepted = accepted[accepted["reject_reason"] == ""]
    assert set(cells["fov_id"]) == {good["fov_id"]} and len(cells) == len(accepted) > 0
    assert zarr.open_array(store / "0", mode="r").shape[0] == len(cells)
    rejects = pd.read_parquet(tmp_path / "rejects.parquet")
    for fov, (message, named) in bad.items():
        reasons = list(rejects.loc[rejects["fov_id"] == fov, "reject_reason"])
        assert len(reasons) == 1 and message in reasons[0], (fov, reasons)
        assert named in caplog.text and (named in reasons[0] or reasons[0] == "no_cells_found")


@pytest.mark.slow
def test_a_manifest_with_a_repeated_fov_id_stops_the_workflow_naming_file_and_id(tmp_path):
    work = copy_workflow(tmp_path / "workflow")
    manifest = tmp_path / "manifest.csv"
    rows = [{**_record(tmp_path / f"{name}.ome.tiff"), "fov_id": "plate1_A01"} for name in ("a", "b")]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    (work / "user.yaml").write_text(yaml.safe_dump({"data": {"source": "manifest", "manifest": str(manifest)}}))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "user.yaml"],
                         cwd=work, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert f"manifest {manifest}: fov_id 'plate1_A01' appears more than once" in run.stdout + run.stderr
    assert "rule preprocess_fovs" not in run.stdout
