"""Normalization into the Zarr store and the per-cell table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from statcell import io, normalize
from statcell.vocabulary import CONTROLS


def test_splits_are_80_10_10_within_every_fov_and_stable():
    ids = [f"main/fov_{i // 20:03d}/{i % 20 + 1}" for i in range(6000)]
    fovs = [cell_id.split("/")[1] for cell_id in ids]
    splits = pd.Series(normalize.assign_splits(ids, fovs))
    per_fov = pd.crosstab(pd.Series(fovs), splits)
    assert (per_fov["train"] == 16).all() and (per_fov["val"] == 2).all() and (per_fov["test"] == 2).all()
    assert normalize.assign_splits(ids[:20][::-1], fovs[:20]) == list(splits[:20])[::-1]  # not the row order
    assert normalize.assign_splits(ids[:40], fovs[:40]) == list(splits[:40])  # other FOVs move no cell


def test_splits_of_small_fovs_and_lone_cells_are_80_10_10_on_average():
    ids = [f"main/fov_{i // 3:04d}/{i % 3 + 1}" for i in range(9000)]
    shares = pd.Series(normalize.assign_splits(ids, [cell_id.split("/")[1] for cell_id in ids])).value_counts(
        normalize=True)
    assert abs(shares["train"] - 0.8) < 0.02 and abs(shares["val"] - 0.1) < 0.015 and abs(shares["test"] - 0.1) < 0.015
    lone = pd.Series(normalize.assign_splits(ids, ids)).value_counts(normalize=True)  # every cell its own FOV
    assert abs(lone["train"] - 0.8) < 0.02 and abs(lone["val"] - 0.1) < 0.015 and abs(lone["test"] - 0.1) < 0.015


def _fake_crop(rng, shape=(5, 8, 10, 12)):
    crop = np.zeros(shape, dtype=np.uint16)
    mask = np.zeros(shape[1:], dtype=bool)
    mask[2:6, 2:8, 2:10] = True
    crop[3] = mask
    crop[4, 3:5, 4:6, 4:7] = 1
    for channel in range(3):
        crop[channel][mask] = rng.poisson(20, mask.sum())  # above the background, as cropping leaves it
    crop[0][mask & (np.indices(shape[1:])[2] == 2)] += 900  # a bright wall
    return crop


def test_normalize_crop_scales_each_channel_to_unit_inside_the_cell():
    crop = _fake_crop(np.random.default_rng(0))
    crop[2][crop[3] == 0] = 7  # stray values outside the cell do not count
    out = normalize.normalize_crop(crop, settings=normalize.NormalizeSettings())
    inside = crop[3] > 0
    assert out.dtype == np.float32
    for channel in range(3):
        np.testing.assert_allclose(out[channel][inside], crop[channel][inside] / crop[channel][inside].max())
        assert (out[channel][~inside] == 0).all()
    assert np.median(out[0][inside]) < 0.1  # the wall sets the membrane's scale
    np.testing.assert_array_equal(out[3:], crop[3:])
    robust = normalize.normalize_crop(crop, settings=normalize.NormalizeSettings(method="percentile", percentile=50))
    assert (robust[:3] <= 1).all() and (robust[0][inside] == 1).mean() > 0.4


@pytest.mark.parametrize("percentile", [50, 99.9])
def test_the_percentile_scale_of_a_channel_that_fills_a_sliver_of_the_cell_is_its_signals(percentile):
    """The DNA lies in the nucleus only and a sparse structure in a few voxels: a percentile of the whole cell's
    voxels would be 0 and blank them."""
    crop = np.zeros((5, 12, 12, 12), np.uint16)
    crop[3, 1:11, 1:11, 1:11] = 1  # a cell of 1,000 voxels
    inside = crop[3] > 0
    crop[:2] = 20 * inside
    sliver = np.zeros_like(inside)
    sliver[5, 5, 5] = True  # 0.1% of the cell: below the percentiles' share of the cell, so their value was 0
    crop[2] = np.where(sliver, 40, 0)
    out = normalize.normalize_crop(crop, settings=normalize.NormalizeSettings(method="percentile",
                                                                              percentile=percentile))
    np.testing.assert_allclose(out[2][sliver], 1.0)
    assert (out[2][~sliver] == 0).all()


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
    assert array.dtype == np.uint8  # the default encoding: round(value * 255)
    np.testing.assert_allclose(io.read_cells(out / "cells.zarr", range(5), channels=None), np.stack(expected),
                               atol=0.5 / 255 + 1e-6)
    assert zarr.open_group(out / "cells.zarr", mode="r").attrs["statcell"]["encoding"]["scale"] == 1 / 255
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
    assert io.store_metadata(out / "cells.zarr") == io.StoreMetadata(
        spacing=(0.5, 0.5, 0.5), channels=("membrane", "dna", "structure", "cell_mask", "nucleus_mask"), n_cells=5,
        cell_ids_sha256=io.cell_ids_digest(table))
    assert not list(out.glob("*.partial"))
    # the table is read back checked against its store; another dataset's table of as many cells is refused
    assert io.read_cell_table(out / "cells.parquet", store=out / "cells.zarr").equals(table)
    table.assign(cell_id=table["cell_id"].str.replace("main/", "drugs/")).to_parquet(out / "other.parquet")
    with pytest.raises(ValueError, match=f"the cells table {out / 'other.parquet'} does not list the cells of the "
                                         f"store {out / 'cells.zarr'}"):
        io.read_cell_table(out / "other.parquet", store=out / "cells.zarr")


def test_cell_store_holds_one_compressed_chunk_per_cell_and_checks_its_shape(tmp_path):
    array = normalize.create_cell_store(tmp_path / "cells.zarr", (3, 5, 4, 6, 8), voxel_um=0.5)
    assert array.shape == (3, 5, 4, 6, 8) and array.chunks == (1, 5, 4, 6, 8) and array.dtype == np.uint8
    # a store that states no digest of its cells' ids (as stores written before it did) is checked by its count
    for rows in (3, 2):
        pd.DataFrame({"cell_id": [f"c{k}" for k in range(rows)], "store_index": range(rows)}).to_parquet(
            tmp_path / f"{rows}.parquet")
    assert len(io.read_cell_table(tmp_path / "3.parquet", store=tmp_path / "cells.zarr")) == 3
    with pytest.raises(ValueError, match="does not list the cells of the store"):
        io.read_cell_table(tmp_path / "2.parquet", store=tmp_path / "cells.zarr")
    assert io.store_spacing(tmp_path / "cells.zarr") == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"\(N, 5, Z, Y, X\) cells, got shape \(3, 2, 4, 6, 8\)"):
        normalize.create_cell_store(tmp_path / "other.zarr", (3, 2, 4, 6, 8), voxel_um=0.5)
    with pytest.raises(ValueError, match="unknown store encoding 'int8'; encodings are uint8, uint16, float32"):
        normalize.create_cell_store(tmp_path / "other.zarr", (3, 5, 4, 6, 8), voxel_um=0.5, dtype="int8")


@pytest.mark.parametrize("dtype, step", [("uint8", 1 / 255), ("uint16", 1 / 65535), ("float32", 0.0)])
def test_each_encoding_reads_back_within_half_its_step_and_keeps_masks_exact(tmp_path, dtype, step):
    rng = np.random.default_rng(3)
    cells = np.stack([_normalized_cell(rng) for _ in range(3)])
    array = normalize.create_cell_store(tmp_path / "cells.zarr", (3, 5, *cells.shape[2:]), voxel_um=0.5, dtype=dtype)
    array[:] = io.encode_cells(cells, dtype)
    assert array.dtype == np.dtype(dtype)
    read = io.read_cells(tmp_path / "cells.zarr", [2, 0], channels=None)
    assert read.dtype == np.float32
    np.testing.assert_allclose(read, cells[[2, 0]], atol=step / 2 + 1e-7, rtol=0)
    np.testing.assert_array_equal(read[:, 3:], cells[[2, 0], 3:])  # masks: 0 and 1 exactly
    window = zarr.open_group(tmp_path / "cells.zarr", mode="r").attrs["ome"]["omero"]["channels"][0]["window"]
    assert window["max"] == (np.iinfo(dtype).max if dtype != "float32" else 1.0)


def _normalized_cell(rng, shape=(6, 8, 10)) -> np.ndarray:
    """A normalized cell: random intensities in [0, 1] inside a box, a smaller nucleus inside it."""
    cell = np.zeros((5, *shape), np.float32)
    cell[3, 1:5, 1:7, 1:9] = 1
    cell[4, 2:4, 3:5, 3:6] = 1
    cell[:3] = rng.random((3, *shape)).astype(np.float32) * cell[3]
    return cell


def test_control_images_copy_blank_noise_and_move_a_structure():
    rng = np.random.default_rng(2)
    cell, donor = _normalized_cell(rng), _normalized_cell(rng)
    donor[2] = 0.5  # bright outside this cell's mask too
    inside, nucleus = cell[3] > 0, cell[4] > 0
    built = {kind: normalize.control_image(cell, kind, donor=donor, rng=np.random.default_rng(0))
             for kind in CONTROLS}
    for kind, image in built.items():
        assert image.dtype == np.float32 and image.shape == cell.shape
        np.testing.assert_array_equal(image[[0, 1, 3, 4]], cell[[0, 1, 3, 4]], err_msg=kind)
        assert (image[2][~inside] == 0).all(), kind
    assert (built["control_blank"][2] == 0).all()
    np.testing.assert_array_equal(built["control_dna"][2], cell[1])
    np.testing.assert_array_equal(built["control_membrane"][2], cell[0])
    noise = built["control_noise"][2]
    assert noise.max() == pytest.approx(1.0) and noise.min() >= 0
    assert noise[nucleus].mean() > 1.5 * noise[inside & ~nucleus].mean()  # brighter inside the nucleus
    np.testing.assert_allclose(built["control_random_structure"][2], inside * 1.0)  # 0.5 inside, scaled to 1
    np.testing.assert_array_equal(cell, _normalized_cell(np.random.default_rng(2)))  # input untouched
    again = normalize.control_image(cell, "control_noise", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again, built["control_noise"])
    with pytest.raises(ValueError, match="unknown control"):
        normalize.control_image(cell, "control_other")


def _cells_table(counts: dict[str, int], dataset: str = "main") -> pd.DataFrame:
    rows = []
    for structure, count in counts.items():
        for label in range(1, count + 1):
            cell_id = f"{dataset}/{structure}_00/{label}"
            rows.append({"cell_id": cell_id, "store_index": len(rows), "fov_id": f"{structure}_00", "label": label,
                         "structure": structure, "structure_integrated_intensity": 5.0})
    table = pd.DataFrame(rows)
    table.insert(1, "split", normalize.assign_splits(table["cell_id"], table["fov_id"]))
    return table


def test_plan_controls_samples_each_class_deterministically(caplog):
    cells = _cells_table({"golgi": 30, "nucleoli": 10, "control_membrane": 20})
    with caplog.at_level("INFO"):
        plan = normalize.plan_controls(cells, dataset="main")
    assert "already holds 20 cells of control_membrane" in caplog.text
    kinds = [kind for kind in CONTROLS if kind != "control_membrane"]
    assert plan.groupby("structure", sort=False).size().to_dict() == {kind: 20 for kind in kinds}  # median class
    source = cells.set_index("cell_id")
    assert set(plan[normalize.CONTROL_SOURCE_COLUMN]) <= set(cells.loc[cells["structure"] != "control_membrane",
                                                                       "cell_id"])
    for row in plan.itertuples():
        origin = source.loc[getattr(row, normalize.CONTROL_SOURCE_COLUMN)]
        assert row.cell_id == f"main/{row.structure}/{origin.name.removeprefix('main/')}"
        assert row.split == origin["split"] and row.source_index == origin["store_index"]
        assert row.fov_id == origin["fov_id"] and row.label == origin["label"]
    assert plan["cell_id"].is_unique and plan["structure_integrated_intensity"].isna().all()
    random = plan[plan["structure"] == "control_random_structure"]
    donors = source.loc[random[normalize.CONTROL_DONOR_COLUMN]]
    recipients = source.loc[random[normalize.CONTROL_SOURCE_COLUMN]]
    assert (donors["structure"].to_numpy() != recipients["structure"].to_numpy()).all()
    assert (donors["store_index"].to_numpy() == random["donor_index"].to_numpy()).all()
    assert (plan.loc[plan["structure"] != "control_random_structure", "donor_index"] == -1).all()
    # the classes draw different samples; the same cells in another order give the same plan
    assert set(plan.loc[plan["structure"] == "control_dna", "source_index"]) != set(
        plan.loc[plan["structure"] == "control_noise", "source_index"])
    shuffled = normalize.plan_controls(cells.sample(frac=1, random_state=0).reset_index(drop=True), dataset="main")
    pd.testing.assert_frame_equal(shuffled.reset_index(drop=True), plan)
    few = normalize.plan_controls(cells, dataset="main", cells_per_class=100)
    assert (few.groupby("structure").size() == 40).all()  # at most every non-control cell


def test_normalize_cells_adds_the_built_controls_after_the_cells(tmp_path):
    rng = np.random.default_rng(4)
    names = ["golgi_00", "nucleoli_00"]
    for name, count in zip(names, (6, 4)):
        _write_fov(tmp_path, name, count, rng)
        table = pd.read_parquet(tmp_path / f"{name}.parquet")
        io.write_table(table.assign(structure=name.removesuffix("_00")), tmp_path / f"{name}.parquet")
    arguments = dict(voxel_um=0.5, dataset="main", threads=2)
    files = ([tmp_path / f"{n}.npz" for n in names], [tmp_path / f"{n}.parquet" for n in names])

    def run(folder, **options):
        out = tmp_path / folder
        settings = normalize.NormalizeSettings(**options.pop("settings", {}))
        cells = normalize.normalize_cells(*files, store=out / "cells.zarr", cells_table=out / "cells.parquet",
                                          rejects_table=out / "rejects.parquet", settings=settings, **arguments,
                                          **options)
        return cells, zarr.open_array(out / "cells.zarr" / "0", mode="r")[:]

    cells, store = run("with", build_controls=True, settings={"control_cells": 3})
    plain, plain_store = run("without")
    assert len(plain) == 10 and len(cells) == 10 + 5 * 3 and store.shape[0] == len(cells)
    np.testing.assert_array_equal(store[:10], plain_store)
    pd.testing.assert_frame_equal(cells.iloc[:10].drop(columns=[normalize.CONTROL_SOURCE_COLUMN,
                                                                normalize.CONTROL_DONOR_COLUMN]), plain)
    assert (cells["store_index"] == np.arange(len(cells))).all()
    built = cells.iloc[10:]
    assert built["structure"].value_counts().to_dict() == {kind: 3 for kind in CONTROLS}
    index = cells.set_index("cell_id")["store_index"]
    for row in built.itertuples():
        source = store[index[getattr(row, normalize.CONTROL_SOURCE_COLUMN)]]
        image = store[row.store_index]
        np.testing.assert_array_equal(image[[0, 1, 3, 4]], source[[0, 1, 3, 4]])
        if row.structure == "control_dna":
            np.testing.assert_array_equal(image[2], source[1])
        elif row.structure == "control_blank":
            assert not image[2].any()
        elif row.structure == "control_random_structure":
            donor = cells.set_index("cell_id").loc[getattr(row, normalize.CONTROL_DONOR_COLUMN)]
            assert donor["structure"] != cells.set_index("cell_id").loc[
                getattr(row, normalize.CONTROL_SOURCE_COLUMN), "structure"]
    assert pd.read_parquet(tmp_path / "with" / "cells.parquet").equals(cells)
    off, off_store = run("off", build_controls=True, settings={"controls": False})
    assert len(off) == 10 and off_store.shape[0] == 10


def test_settings_read_the_control_keys():
    from statcell.config import validate_config

    default = normalize.NormalizeSettings.from_config(validate_config({})["normalize"])
    assert default.controls and default.control_cells is None  # auto: the median structure class
    chosen = normalize.NormalizeSettings.from_config(
        validate_config({"normalize": {"controls": False, "control_cells": 12}})["normalize"])
    assert not chosen.controls and chosen.control_cells == 12


def test_cell_annotations_are_read_checked_and_joined_on_fov_and_label(tmp_path):
    (tmp_path / "notes.csv").write_text("fov_id,label,mitotic_stage,comment\nfov_a,1,interphase,x\nfov_a,3,prophase,"
                                        "\nfov_c,2,,odd\n")
    annotations = normalize.read_cell_annotations(tmp_path / "notes.csv")
    assert annotations.to_dict("list") == {"fov_id": ["fov_a", "fov_a", "fov_c"], "label": [1, 3, 2],
                                           "mitotic_stage": ["interphase", "prophase", "unknown"]}
    rng = np.random.default_rng(5)
    for name, count in (("fov_a", 3), ("fov_c", 2)):
        _write_fov(tmp_path, name, count, rng)
    cells = normalize.normalize_cells(
        [tmp_path / "fov_a.npz", tmp_path / "fov_c.npz"], [tmp_path / "fov_a.parquet", tmp_path / "fov_c.parquet"],
        store=tmp_path / "cells.zarr", cells_table=tmp_path / "cells.parquet", rejects_table=tmp_path / "r.parquet",
        dataset="main", voxel_um=0.5, settings=normalize.NormalizeSettings(), annotations=annotations)
    assert cells.set_index("cell_id")["mitotic_stage"].fillna("none").to_dict() == {
        "main/fov_a/1": "interphase", "main/fov_a/2": "none", "main/fov_a/3": "prophase", "main/fov_c/1": "none",
        "main/fov_c/2": "unknown"}
    (tmp_path / "notes_semicolons.csv").write_text("fov_id; label; mitotic_stage\nfov_a; 1; interphase\n")
    assert normalize.read_cell_annotations(tmp_path / "notes_semicolons.csv").to_dict("list") == {
        "fov_id": ["fov_a"], "label": [1], "mitotic_stage": ["interphase"]}
    (tmp_path / "bad.csv").write_text("fov_id,label\nfov_a,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv lack the column\(s\): mitotic_stage"):
        normalize.read_cell_annotations(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("fov_id,label,mitotic_stage\nfov_a,1,interphase\nfov_a,1,prophase\n")
    with pytest.raises(ValueError, match=r"cell 1 of FOV 'fov_a' is listed twice"):
        normalize.read_cell_annotations(tmp_path / "twice.csv")
    (tmp_path / "label.csv").write_text("fov_id,label,mitotic_stage\nfov_a,one,interphase\n")
    with pytest.raises(ValueError, match=r"row 2: label 'one' is not an integer"):
        normalize.read_cell_annotations(tmp_path / "label.csv")


def test_annotations_written_by_hand_read_as_their_phase(tmp_path):
    (tmp_path / "notes.csv").write_text("fov_id,label,mitotic_stage\nfov_a ,1,Interphase \nfov_a,2,G1\nfov_a,3,S\n"
                                        "fov_a,4,Prophase\nfov_a,5,Unknown\n")
    annotations = normalize.read_cell_annotations(tmp_path / "notes.csv")
    assert annotations["fov_id"].tolist() == ["fov_a"] * 5
    assert annotations["mitotic_stage"].tolist() == ["interphase", "interphase", "interphase", "prophase", "unknown"]


def test_control_classes_to_build_can_be_chosen():
    cells = pd.DataFrame({"cell_id": [f"main/f/{i}" for i in range(6)], "split": "train", "store_index": range(6),
                          "structure": ["golgi", "nucleoli"] * 3})
    planned = normalize.plan_controls(cells, dataset="main", cells_per_class=2,
                                      classes=("control_membrane", "control_dna"))
    assert list(planned["structure"]) == ["control_dna"] * 2 + ["control_membrane"] * 2  # in CONTROLS' order
    with pytest.raises(ValueError, match="unknown control classes \\['golgi'\\]"):
        normalize.plan_controls(cells, dataset="main", classes=("golgi",))


def test_each_cell_names_its_fov_the_replicate_unit_of_the_statistics():
    """FOV sources: the FOV's id; pre-cropped data: the dataset's FOV id where given, else the cell itself."""
    fov_cells, _ = normalize.cell_table([pd.DataFrame({"fov_id": ["f1", "f1", "f2"], "label": [1, 2, 1],
                                                       "reject_reason": ""})], dataset="main")
    assert fov_cells["imaging_fov"].tolist() == ["f1", "f1", "f2"]
    precropped = pd.DataFrame({"fov_id": "allencell_00000", "label": [1, 2, 3], "source_cell_id": ["7", "8", "9"],
                               "imaging_fov": ["100", "", "100"], "reject_reason": ""})
    cells, _ = normalize.cell_table([precropped], dataset="main")
    assert cells["imaging_fov"].tolist() == ["100", "main/8", "100"]
    unnamed, _ = normalize.cell_table([precropped.drop(columns="imaging_fov")], dataset="main")
    assert unnamed["imaging_fov"].tolist() == ["main/7", "main/8", "main/9"]  # never the import chunk
