"""Normalization into the Zarr store and the per-cell table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from statcell import io, normalize


def test_split_is_stable_and_near_80_10_10():
    ids = [f"main/fov_{i // 20:03d}/{i % 20 + 1}" for i in range(6000)]
    splits = pd.Series([normalize.split_of(cell_id) for cell_id in ids])
    shares = splits.value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.02 and abs(shares["val"] - 0.1) < 0.015 and abs(shares["test"] - 0.1) < 0.015
    assert [normalize.split_of(cell_id) for cell_id in ids[:50]] == list(splits[:50])


def _fake_crop(rng, shape=(5, 8, 10, 12)):
    crop = np.zeros(shape, dtype=np.uint16)
    mask = np.zeros(shape[1:], dtype=bool)
    mask[2:6, 2:8, 2:10] = True
    crop[3] = mask
    crop[4, 3:5, 4:6, 4:7] = 1
    for channel in range(3):
        crop[channel][mask] = 100 + rng.poisson(20, mask.sum())
    crop[0][mask & (np.indices(shape[1:])[2] == 2)] += 900  # a bright wall
    return crop


def test_normalize_crop_subtracts_background_and_scales_to_unit():
    crop = _fake_crop(np.random.default_rng(0))
    out = normalize.normalize_crop(crop, settings=normalize.NormalizeSettings())
    inside = crop[3] > 0
    assert out.dtype == np.float32
    for channel in range(3):
        assert out[channel].max() == pytest.approx(1.0)
        assert out[channel].min() == 0.0
        assert (out[channel][~inside] == 0).all()
        assert np.median(out[channel][inside]) < 0.5
    np.testing.assert_array_equal(out[3:], crop[3:])
    robust = normalize.normalize_crop(crop, settings=normalize.NormalizeSettings(method="percentile", percentile=50))
    assert (robust[:3] <= 1).all() and (robust[0][inside] == 1).mean() > 0.4


def _write_fov(tmp_path, name, count, rng, rejected=1):
    crops = np.stack([_fake_crop(rng) for _ in range(count)]) if count else np.zeros((0, 5, 8, 10, 12), np.uint16)
    rows = [{"fov_id": name, "label": i + 1, "nucleus_label": i + 1, "reject_reason": "", "crop_index": i}
            for i in range(count)]
    rows += [{"fov_id": name, "label": count + 1 + i, "nucleus_label": 0, "reject_reason": "no_nucleus",
              "crop_index": -1} for i in range(rejected)]
    io.write_crops(tmp_path / f"{name}.npz", crops)
    io.write_table(pd.DataFrame(rows), tmp_path / f"{name}.parquet")
    return crops


@pytest.mark.parametrize("threads", [1, 2])
def test_normalize_cells_writes_store_table_and_rejects(tmp_path, threads):
    rng = np.random.default_rng(1)
    names = ["fov_a", "fov_b", "fov_c"]
    crops = [_write_fov(tmp_path, name, count, rng) for name, count in zip(names, (3, 0, 2))]
    out = tmp_path / "out"
    cells = normalize.normalize_cells(
        [tmp_path / f"{n}.npz" for n in names], [tmp_path / f"{n}.parquet" for n in names], store=out / "cells.zarr",
        cells_table=out / "cells.parquet", rejects_table=out / "rejects.parquet", dataset="main", voxel_um=0.5,
        settings=normalize.NormalizeSettings(), threads=threads)
    array = zarr.open_array(out / "cells.zarr" / "0", mode="r")
    assert array.shape == (5, 5, 8, 10, 12) and array.chunks == (1, 5, 8, 10, 12)
    expected = [normalize.normalize_crop(c, settings=normalize.NormalizeSettings()) for c in np.concatenate(crops)]
    np.testing.assert_array_equal(array[:], np.stack(expected))
    table = pd.read_parquet(out / "cells.parquet")
    assert list(table["cell_id"]) == ["main/fov_a/1", "main/fov_a/2", "main/fov_a/3", "main/fov_c/1", "main/fov_c/2"]
    assert list(table["store_index"]) == [0, 1, 2, 3, 4]
    assert set(table["split"]) <= {"train", "val", "test"}
    assert table.equals(cells)
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert len(rejects) == 3 and set(rejects["reject_reason"]) == {"no_nucleus"}
    attrs = zarr.open_group(out / "cells.zarr", mode="r").attrs["ome"]
    assert [axis["name"] for axis in attrs["multiscales"][0]["axes"]] == ["cell", "c", "z", "y", "x"]
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][2:] == [0.5] * 3
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["membrane", "dna", "structure", "cell_mask",
                                                               "nucleus_mask"]
    assert not list(out.glob("*.partial"))


def test_cell_store_holds_one_compressed_chunk_per_cell_and_checks_its_shape(tmp_path):
    array = normalize.create_cell_store(tmp_path / "cells.zarr", (3, 5, 4, 6, 8), voxel_um=0.5)
    assert array.shape == (3, 5, 4, 6, 8) and array.chunks == (1, 5, 4, 6, 8) and array.dtype == np.float32
    assert io.store_spacing(tmp_path / "cells.zarr") == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"\(N, 5, Z, Y, X\) cells, got shape \(3, 2, 4, 6, 8\)"):
        normalize.create_cell_store(tmp_path / "other.zarr", (3, 2, 4, 6, 8), voxel_um=0.5)
