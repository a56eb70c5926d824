"""Bad FOVs never take the workflow down silently: a clear message naming the file, and a rejects row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from statcell import io
from statcell.cli import main


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


def _missing(tmp_path, rng):
    return tmp_path / "nowhere.ome.tiff", "image file not found"


@pytest.mark.parametrize("make", [_truncated, _two_channels, _with_nan, _all_zero, _missing])
def test_bad_fov_is_rejected_with_a_message_naming_the_file(tmp_path, caplog, make):
    path, message = make(tmp_path, np.random.default_rng(0))
    record = json.dumps(_record(path))
    labels = tmp_path / "labels.ome.tiff"
    assert main(["segment-fov", "--fov-record", record, "--output", str(labels)]) == 0
    assert main(["crop-cells", "--fov-record", record, "--labels", str(labels), "--crops", str(tmp_path / "c.npz"),
                 "--table", str(tmp_path / "c.parquet")]) == 0
    assert str(path) in caplog.text and message in caplog.text
    table = pd.read_parquet(tmp_path / "c.parquet")
    assert len(table) == 1 and table.loc[0, "reject_reason"].startswith("unusable_fov")
    assert message in table.loc[0, "reject_reason"] and str(path) in table.loc[0, "reject_reason"]
    with np.load(tmp_path / "c.npz") as archive:
        assert archive["crops"].shape[0] == 0


def test_fov_with_no_cells_gives_an_empty_table(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "flat.ome.tiff"
    io.write_ome_tiff(path, rng.normal(100, 2, (3, 6, 20, 20)).clip(0).astype(np.uint16),
                      channel_names=["m", "d", "s"], spacing=(0.29, 0.216, 0.216))
    record = json.dumps(_record(path))
    labels = tmp_path / "labels.ome.tiff"
    assert main(["segment-fov", "--fov-record", record, "--output", str(labels)]) == 0
    assert main(["crop-cells", "--fov-record", record, "--labels", str(labels), "--crops", str(tmp_path / "c.npz"),
                 "--table", str(tmp_path / "c.parquet")]) == 0
    table = pd.read_parquet(tmp_path / "c.parquet")
    assert (table["crop_index"] == -1).all()
