"""Pre-cropped single-cell datasets of the Allen Institute: Pipeline 4 (the paper's) and the hiPSC single-cell dataset.

The fixtures (tests/real_layouts.py) are written exactly as the real files are, from synthetic cells, so each
imported cell can be compared with the same cell cropped directly from its FOV by ``crop.align_cell``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from statcell import allencell, crop, io, normalize
from statcell.config import validate_config
from tests import real_layouts
from tests.test_workflow import TINY, copy_workflow, snakemake

STRUCTURES = ("nucleoli", "mitochondria", "nuclear_envelope")
#: Crop settings of the comparisons: Pipeline 4's own voxel size, so the registration and the direct crop decide
#: the same orientation; a shape that holds the whole cell.
COMPARE = real_layouts.crop_settings(0.29, (40, 48, 64))


@pytest.fixture(scope="module")
def colony():
    settings, fovs = real_layouts.synthetic_colony(STRUCTURES)
    return settings.pixel_size_um, fovs


@pytest.fixture(scope="module")
def pipeline4(colony, tmp_path_factory):
    spacing, fovs = colony
    folder = tmp_path_factory.mktemp("pipeline4")
    csv, written = real_layouts.write_pipeline4(folder, fovs, spacing=spacing)
    return csv, written


@pytest.fixture(scope="module")
def hipsc(colony, tmp_path_factory):
    spacing, fovs = colony
    folder = tmp_path_factory.mktemp("hipsc")
    two = dict(list(fovs.items())[:2])
    csv, written = real_layouts.write_hipsc(folder, two, spacing=spacing)
    return csv, written


def _settings(csv: Path, **section) -> allencell.AllenCellSettings:
    return allencell.AllenCellSettings.from_config(validate_config({"allencell": {"csv": str(csv), **section}})[
        "allencell"])


def _normalized(crop_: np.ndarray) -> np.ndarray:
    """A crop as it enters the store (background subtracted, scaled): what the comparison is about."""
    return normalize.normalize_crop(crop_, settings=normalize.NormalizeSettings())


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation after smoothing both by one voxel: two crops of one cell made along different resampling
    paths may sit a voxel apart, which a thin membrane shell would otherwise make look like disagreement."""
    a, b = (ndimage.gaussian_filter(np.asarray(x, dtype=float), 1.0) for x in (a, b))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _assert_channels_land_in_place(got: np.ndarray, truth: np.ndarray, *, floors: tuple[float, ...], cell: str) -> None:
    """Each intensity channel correlates with its own true channel above its floor, and better than with any other
    true channel (a swapped channel cannot pass)."""
    for channel, floor in enumerate(floors):
        scores = [_correlation(got[channel], truth[other]) for other in range(3)]
        assert scores[channel] > floor and scores[channel] == max(scores), (cell, channel, scores)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _is_round(mask: np.ndarray) -> bool:
    """Whether a mask's xy footprint is too round to have a major axis (axes within 15%): its orientation is then
    arbitrary, in the direct crop as in the import."""
    eigenvalues = np.linalg.eigvalsh(np.cov(np.argwhere(mask.any(axis=0)).T.astype(float)))
    return bool(eigenvalues[1] < 1.15**2 * eigenvalues[0])


def _long_axis_angle(mask: np.ndarray) -> float:
    """Angle (degrees, 0 = along x) of the major axis of a mask's xy footprint, folded into [0, 90]; 0 for a
    footprint too round to have one."""
    if _is_round(mask):
        return 0.0
    angle = abs(crop._major_axis_angle(mask.any(axis=0)))
    return min(angle, 180 - angle)


def _imported(csv: Path, settings: allencell.AllenCellSettings) -> tuple[np.ndarray, pd.DataFrame]:
    return allencell.import_chunk(allencell.read_cell_table(settings), settings=settings, crop_settings=COMPARE)


def test_layouts_declare_the_files_channel_order():
    pipeline4 = allencell.LAYOUTS["pipeline4"]
    order = {source.index: role for role, source in pipeline4.channels.items()}
    assert order == {0: "nucleus_segmentation", 1: "cell_segmentation", 2: "dna", 3: "membrane", 4: "structure"}
    assert pipeline4.axes == "CZYX" and pipeline4.registered and pipeline4.long_axis == "y"
    hipsc = allencell.LAYOUTS["hipsc_single_cell"]
    assert hipsc.axes == "ZCYX" and not hipsc.registered
    assert all(source.name and source.index is None for source in hipsc.channels.values())  # by name only


def test_pipeline4_table_rebases_paths_and_reads_per_cell_channels(pipeline4):
    csv, written = pipeline4
    cells = allencell.read_cell_table(_settings(csv, image_root=str(csv.parent)))
    good = cells.merge(written, left_on="cell_id", right_on="CellId", suffixes=("", "_true"))
    assert len(good) == len(written) and len(cells) == len(written) + 2
    assert all(Path(path).is_file() and Path(path).parent == csv.parent / "cell_images_3d"
               for path in good["path_image"])
    assert list(good["channel_structure"]) == list(good["control_channel"])  # ch_struct 4, or 6-10 for controls
    assert set(good["channel_membrane"]) == {3} and set(good["channel_nucleus_segmentation"]) == {0}
    assert list(good["structure"]) == list(good["structure_true"])
    assert {"control_dna", "control_membrane", "control_blank", "control_noise",
            "control_random_structure"} <= set(good["structure"])
    assert list(good["mitotic_stage"]) == list(good["mitotic_stage_true"])
    assert list(good["is_mitotic"]) == list(good["mitotic_stage_true"] != "interphase")
    assert not {"FOVId", "inputFilename", "save_reg_path_flat", "CellIndex"} & set(cells.columns)
    fovs = pd.read_csv(csv, dtype=str).set_index("CellId")["FOVId"]
    assert list(good["imaging_fov"]) == list(fovs[good["CellId"].astype(str)])  # the statistics' replicate unit
    without_root = allencell.read_cell_table(_settings(csv))
    assert without_root.loc[0, "path_image"].startswith(real_layouts.INSTITUTE_ROOT)


def test_pipeline4_cells_match_the_direct_crop_turned_long_axis_on_x(pipeline4, colony):
    csv, written = pipeline4
    spacing, fovs = colony
    crops, table = _imported(csv, _settings(csv, image_root=str(csv.parent)))
    accepted = table[table["crop_index"] >= 0].merge(written, left_on="source_cell_id", right_on="CellId",
                                                      suffixes=("_import", ""))
    assert len(accepted) == len(written)
    for row in accepted.itertuples():
        got = _normalized(crops[row.crop_index])
        truth = _normalized(real_layouts.truth_crop(fovs[row.fov_id], row.label, spacing=spacing, settings=COMPARE)[0])
        assert _iou(got[3] > 0, truth[3] > 0) > 0.9 and _iou(got[4] > 0, truth[4] > 0) > 0.85, row.CellId
        kind = row.synthetic_structure
        floors = (0.9, 0.9) if kind.startswith("control") else (0.9, 0.9, 0.85)  # controls: structure below
        _assert_channels_land_in_place(got, truth, floors=floors, cell=row.CellId)
        expected = {"control_dna": truth[1], "control_membrane": truth[0]}.get(kind, truth[2])
        if kind == "control_dna":  # a copy of the DNA, masked by the cell: compare inside the nucleus
            got[2] *= got[4] > 0
        if kind == "control_blank":
            assert got[2].max() == 0
        elif kind not in ("control_noise", "control_random_structure"):
            assert _correlation(got[2], expected) > 0.85, (row.CellId, kind)
        assert _long_axis_angle(got[3] > 0) < 10
        assert (got[1][got[4] == 0] == 0).all() and (got[[0, 2]][:, got[3] == 0] == 0).all()


def test_pipeline4_without_channel_columns_reads_the_files_order(pipeline4, tmp_path):
    csv, _ = pipeline4
    plain = tmp_path / "data_jobs_out.csv"
    table = pd.read_csv(csv)
    table[~table["StructureDisplayName"].str.startswith("Control")].drop(
        columns=["ch_memb", "ch_struct", "ch_dna", "ch_seg_cell", "ch_seg_nuc", "ch_trans"]).to_csv(plain, index=False)
    cells = allencell.read_cell_table(_settings(plain))
    assert [int(cells.loc[0, f"channel_{role}"]) for role in allencell.ROLES] == [3, 2, 4, 1, 0]
    assert not cells["path_image"].str.startswith(str(tmp_path)).any()  # absolute entries kept without image_root


def test_pipeline4_unreadable_and_missing_files_are_rejects_naming_them(pipeline4):
    csv, _ = pipeline4
    _, table = _imported(csv, _settings(csv, image_root=str(csv.parent)))
    reasons = table.set_index("source_cell_id")["reject_reason"]
    assert reasons["9001"].startswith("unusable_cell_image") and "9001_reg.tiff" in reasons["9001"]
    assert "9002_reg.tiff" in reasons["9002"] and "not found" in reasons["9002"]
    assert (reasons.drop(["9001", "9002"]) == "").all()


def test_hipsc_table_reads_channels_by_name_and_ignores_fov_columns(hipsc):
    csv, written = hipsc
    cells = allencell.read_cell_table(_settings(csv, layout="hipsc_single_cell"))
    good = cells.merge(written, left_on="cell_id", right_on="CellId", suffixes=("", "_true"))
    assert len(good) == len(written)
    # name_dict: crop_raw ['dna', 'membrane', 'structure'], crop_seg ['dna_segmentation', 'membrane_segmentation', ...]
    assert set(good["channel_dna"]) == {0} and set(good["channel_membrane"]) == {1}
    assert set(good["channel_structure"]) == {2}
    assert set(good["channel_nucleus_segmentation"]) == {0} and set(good["channel_cell_segmentation"]) == {1}
    np.testing.assert_allclose(good[["spacing_z_um", "spacing_y_um", "spacing_x_um"]], real_layouts.HIPSC_VOXEL_UM)
    assert list(good["structure"]) == list(good["structure_true"])
    assert set(good["source_structure"]) <= set(real_layouts.GENES.values())
    assert list(good["mitotic_stage"]) == list(good["mitotic_stage_true"])
    assert all(Path(path).is_file() for path in good["path_image"]) and all(
        Path(path).is_file() for path in good["path_segmentation"])
    assert not {"fov_path", "fov_seg_path", "this_cell_index", "FOVId", "PlateId", "roi"} & set(cells.columns)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(good["imaging_fov"]) == list(table.set_index("CellId")["FOVId"][good["CellId"].astype(str)])
    table.drop(columns="FOVId").to_csv(csv.parent / "no_fov.csv", index=False)
    alone = allencell.read_cell_table(_settings(csv.parent / "no_fov.csv", layout="hipsc_single_cell"))
    assert "imaging_fov" not in alone  # normalization then makes each cell its own unit


def test_hipsc_cells_are_aligned_masked_and_lose_their_neighbours(hipsc, colony):
    csv, written = hipsc
    spacing, fovs = colony
    assert written["neighbour"].all()  # every raw box shows a neighbour's nucleus
    crops, table = _imported(csv, _settings(csv, layout="hipsc_single_cell"))
    accepted = table[table["crop_index"] >= 0].merge(written, left_on="source_cell_id", right_on="CellId",
                                                      suffixes=("_import", ""))
    assert len(accepted) == len(written)
    compared = 0
    for row in accepted.itertuples():
        got = _normalized(crops[row.crop_index])
        truth = _normalized(real_layouts.truth_crop(fovs[row.fov_id], row.label, spacing=spacing, settings=COMPARE)[0])
        assert _long_axis_angle(got[3] > 0) < 10
        assert abs(got[3].sum() / truth[3].sum() - 1) < 0.05 and abs(got[4].sum() / truth[4].sum() - 1) < 0.1
        if _is_round(truth[3] > 0):  # no major axis: the two crops may lie at any angle to each other
            continue
        compared += 1
        assert _iou(got[3] > 0, truth[3] > 0) > 0.85 and _iou(got[4] > 0, truth[4] > 0) > 0.8, row.CellId
        _assert_channels_land_in_place(got, truth, floors=(0.8, 0.9, 0.85), cell=row.CellId)
        assert (got[1][got[4] == 0] == 0).all()  # DNA only in this cell's nucleus: the neighbours' are gone
        assert (got[[0, 2]][:, got[3] == 0] == 0).all()  # membrane and structure only in this cell
    assert compared >= len(accepted) - 2
    bad = table.set_index("source_cell_id").at["999", "reject_reason"]
    assert bad.startswith("unusable_cell_image") and "999_raw.ome.tif" in bad


def test_hipsc_measurements_come_from_the_true_cell(hipsc, colony):
    csv, written = hipsc
    spacing, fovs = colony
    _, table = _imported(csv, _settings(csv, layout="hipsc_single_cell"))
    accepted = table[table["crop_index"] >= 0].merge(written, left_on="source_cell_id", right_on="CellId",
                                                      suffixes=("_import", ""))
    for row in accepted.itertuples():
        true_volume = fovs[row.fov_id].cells.set_index("label").at[row.label, "cell_volume_um3"]
        assert row.cell_volume_um3 == pytest.approx(true_volume, rel=0.1)


def test_missing_column_names_the_file_and_column(hipsc, tmp_path):
    csv, _ = hipsc
    broken = tmp_path / "metadata.csv"
    pd.read_csv(csv).drop(columns=["crop_seg"]).to_csv(broken, index=False)
    with pytest.raises(io.ManifestError, match=r"metadata\.csv lacks the column\(s\) crop_seg"):
        allencell.read_cell_table(_settings(broken, layout="hipsc_single_cell"))


def test_channel_name_absent_from_name_dict_is_named(hipsc, tmp_path):
    csv, _ = hipsc
    table = pd.read_csv(csv)
    table["name_dict"] = table["name_dict"].str.replace("'membrane',", "'memb',")
    broken = tmp_path / "metadata.csv"
    table.to_csv(broken, index=False)
    with pytest.raises(io.ManifestError, match="channel 'membrane' .*crop_raw"):
        allencell.read_cell_table(_settings(broken, layout="hipsc_single_cell"))
    with pytest.raises(io.ManifestError, match="channel 'cytoplasm'"):
        allencell.read_cell_table(_settings(csv, layout="hipsc_single_cell", channels={"structure": "cytoplasm"}))


def test_name_dict_is_parsed_as_a_literal_never_run(hipsc, tmp_path):
    csv, _ = hipsc
    table = pd.read_csv(csv)
    table["name_dict"] = "__import__('os').system('touch pwned')"
    broken = tmp_path / "metadata.csv"
    table.to_csv(broken, index=False)
    with pytest.raises(io.ManifestError, match="not a Python literal"):
        allencell.read_cell_table(_settings(broken, layout="hipsc_single_cell"))
    assert not Path("pwned").exists()


def test_unknown_gene_symbol_keeps_its_symbol_and_warns(hipsc, tmp_path, caplog):
    csv, _ = hipsc
    table = pd.read_csv(csv)
    table.loc[0, "structure_name"] = "NEWGENE1"
    table.loc[1, "structure_name"] = "SLC25A17"
    edited = tmp_path / "metadata.csv"
    table.to_csv(edited, index=False)
    with caplog.at_level(logging.WARNING, logger="statcell.allencell"):
        cells = allencell.read_cell_table(_settings(edited, layout="hipsc_single_cell",
                                                    structure_names={"SLC25A17": "pex_tagged"}))
    assert cells.loc[0, "structure"] == "NEWGENE1" and cells.loc[1, "structure"] == "pex_tagged"
    assert any("NEWGENE1" in record.getMessage() for record in caplog.records)
    assert not any("SLC25A17" in record.getMessage() for record in caplog.records)


def test_config_channel_overrides_must_fit_the_layout(hipsc):
    csv, _ = hipsc
    with pytest.raises(ValueError, match="allencell.channels.dna: layout hipsc_single_cell needs a channel name"):
        _settings(csv, layout="hipsc_single_cell", channels={"dna": 0})
    with pytest.raises(ValueError, match="allencell.channels.dna: layout pipeline4 needs a channel index"):
        _settings(csv, channels={"dna": "dna"})
    settings = _settings(csv, channels={"dna": 5}, voxel_size_um=0.5, columns={"image": "path"})
    assert settings.layout.channels["dna"].index == 5 and settings.layout.voxel_size_um == 0.5
    assert settings.layout.files == {"image": "path"}


def test_cell_ids_repeated_across_structures_are_told_apart(tmp_path):
    csv = tmp_path / "data_jobs_out.csv"
    rows = [("7", "Golgi"), ("7", "Control - DNA"), ("8", "Golgi")]
    pd.DataFrame([{"CellId": cell_id, "StructureDisplayName": name, "save_reg_path": f"c/{cell_id}.tiff"}
                  for cell_id, name in rows]).to_csv(csv, index=False)
    cells = allencell.read_cell_table(_settings(csv))
    assert list(cells["cell_id"]) == ["7_golgi", "7_control_dna", "8"]
    assert set(cells["mitotic_stage"]) == {"unknown"} and "is_mitotic" not in cells
    pd.DataFrame([{"CellId": 7, "StructureDisplayName": "Golgi", "save_reg_path": "c/7.tiff"}] * 2).to_csv(
        csv, index=False)
    with pytest.raises(io.ManifestError, match="cell id '7_golgi' appears more than once"):
        allencell.read_cell_table(_settings(csv))


def test_cells_without_a_known_stage_are_never_counted_as_interphase(tmp_path):
    from statcell.analysis.coupling import cell_phases

    csv = tmp_path / "data_jobs_out.csv"
    stages = ["M0", "M1/M2", "", "M6/M7 Partial", "Mitosis", " M0 "]
    pd.DataFrame({"CellId": range(len(stages)), "StructureDisplayName": "Golgi", "MitoticStateId/Name": stages,
                  "save_reg_path": [f"c/{index}.tiff" for index in range(len(stages))]}).to_csv(csv, index=False)
    cells = allencell.read_cell_table(_settings(csv))
    assert list(cells["mitotic_stage"]) == ["interphase", "prophase", "unknown", "M6/M7 Partial", "Mitosis",
                                            "interphase"]
    assert cells["is_mitotic"].tolist() == [False, True, pd.NA, True, True, False]
    assert cell_phases(cells).tolist() == ["interphase", "mitosis", "unannotated", "mitosis", "mitosis",
                                           "interphase"]


def test_renamed_file_columns_still_find_their_names_in_name_dict(hipsc, tmp_path):
    # The dataset's later release calls the file columns crop_raw_path and crop_seg_path; name_dict keeps its keys.
    csv, _ = hipsc
    renamed = tmp_path / "metadata.csv"
    pd.read_csv(csv).rename(columns={"crop_raw": "crop_raw_path", "crop_seg": "crop_seg_path"}).to_csv(
        renamed, index=False)
    cells = allencell.read_cell_table(_settings(renamed, layout="hipsc_single_cell",
                                                columns={"image": "crop_raw_path", "segmentation": "crop_seg_path"}))
    expected = allencell.read_cell_table(_settings(csv, layout="hipsc_single_cell"))
    pd.testing.assert_frame_equal(cells.filter(like="channel_"), expected.filter(like="channel_"))


def test_a_cell_without_id_or_structure_stops_the_table_naming_the_row(tmp_path):
    csv = tmp_path / "data_jobs_out.csv"
    for column in ("CellId", "StructureDisplayName"):
        table = pd.DataFrame({"CellId": ["1", "2", "3"], "StructureDisplayName": "Golgi",
                              "save_reg_path": ["c/1.tiff", "c/2.tiff", "c/3.tiff"]})
        table.loc[1, column] = " "
        table.to_csv(csv, index=False)
        with pytest.raises(io.ManifestError, match=rf"data_jobs_out\.csv, row 3: column {column} is empty"):
            allencell.read_cell_table(_settings(csv))


def test_the_table_may_be_parquet_and_anything_else_is_named(hipsc, tmp_path):
    csv, _ = hipsc
    parquet = csv.with_suffix(".parquet")  # beside the CSV, so that the relative paths point at the same files
    pd.read_csv(csv).to_parquet(parquet)  # CellId and FOVId as integers, as a Parquet export keeps them
    from_parquet = allencell.read_cell_table(_settings(parquet, layout="hipsc_single_cell"))
    pd.testing.assert_frame_equal(from_parquet, allencell.read_cell_table(_settings(csv, layout="hipsc_single_cell")))
    wrong = tmp_path / "metadata.csv"
    wrong.write_bytes(parquet.read_bytes())  # a Parquet file under a CSV's name
    with pytest.raises(io.ManifestError, match=r"metadata\.csv cannot be read as a CSV"):
        allencell.read_cell_table(_settings(wrong, layout="hipsc_single_cell"))


def test_an_import_job_reads_its_own_chunk_as_the_whole_table_has_it(hipsc):
    csv, _ = hipsc
    settings = dataclasses.replace(_settings(csv, layout="hipsc_single_cell"), chunk_size=3)
    whole = allencell.read_cell_table(settings)
    assert whole["chunk"].nunique() > 1
    for chunk, cells in whole.groupby("chunk"):
        pd.testing.assert_frame_equal(allencell.read_cell_table(settings, chunk=chunk), cells)


def test_read_stack_trusts_stated_axes_and_else_the_declared_ones(tmp_path):
    import tifffile

    czyx = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    tifffile.imwrite(tmp_path / "plain.tiff", czyx, photometric="minisblack")  # a plain TIFF states only its shape
    np.testing.assert_array_equal(io.read_stack(tmp_path / "plain.tiff", axes="CZYX"), czyx)
    np.testing.assert_array_equal(io.read_stack(tmp_path / "plain.tiff", axes="ZCYX"), czyx.swapaxes(0, 1))
    tifffile.imwrite(tmp_path / "zcyx.ome.tif", czyx.swapaxes(0, 1), ome=True, photometric="minisblack",
                     metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(io.read_stack(tmp_path / "zcyx.ome.tif", axes="CZYX"), czyx)  # stated: ZCYX
    with pytest.raises(ValueError, match="3-D array"):
        tifffile.imwrite(tmp_path / "flat.tiff", czyx[0], photometric="minisblack")
        io.read_stack(tmp_path / "flat.tiff", axes="CZYX")


def test_relative_entries_are_taken_from_image_root(tmp_path):
    root = tmp_path / "download"
    assert io.resolve_path("crop_raw/1.ome.tif", folder=tmp_path, image_root=str(root), depth=2) == (
        root / "crop_raw" / "1.ome.tif")
    assert io.resolve_path("/a/b/c/crop_raw/1.ome.tif", folder=tmp_path, image_root=None, depth=2) == (
        Path("/a/b/c/crop_raw/1.ome.tif"))
    assert io.resolve_path("../images/1.ome.tif", folder=tmp_path / "tables") == tmp_path / "images" / "1.ome.tif"


# ----------------------------------------------------------------------------------------------------------------------
# End to end: the real snakemake on tiny data
# ----------------------------------------------------------------------------------------------------------------------

#: test_workflow's tiny training and analyses, on crops the size of the tiny colony's
TINY_ALLEN = {**{key: TINY[key] for key in ("training", "analysis", "beta_sweep", "normalize", "figures")},
              "crop": {"voxel_size_um": 0.8, "shape": {"z": 16, "y": 16, "x": 24}}}
E2E_STRUCTURES = ("nucleoli", "mitochondria", "tight_junctions")


def _workflow(folder: Path, allen: dict, **data) -> Path:
    copy_workflow(folder)
    (folder / "tiny.yaml").write_text(yaml.safe_dump({**TINY_ALLEN, "data": {"source": "allencell", **data},
                                                      "allencell": allen}))
    return folder


def _drug_manifest(folder: Path) -> Path:
    """A lab's drug-treated FOVs of a structure of the Allen colony (a tiny synthetic drug set), as a FOV manifest."""
    from statcell import synth
    from statcell.cli import main
    from tests.conftest import TINY_SYNTHETIC

    settings = {**TINY_SYNTHETIC, "structures": ["tight_junctions"], "drug_structures": ["tight_junctions"],
                "drug_treatments": ["vehicle", "paclitaxel"], "drug_fovs_per_condition": 2}
    assert main(["synthesize", "--settings", json.dumps(settings), "--outdir", str(folder)]) == 0
    return synth.manifest_path(folder, "drugs")


@pytest.fixture(scope="module")
def e2e_colony():
    settings, fovs = real_layouts.synthetic_colony(E2E_STRUCTURES, fov_um=48.0, seed=3)
    return settings.pixel_size_um, fovs


@pytest.mark.slow
def test_workflow_from_a_pipeline4_package_to_every_supported_figure(tmp_path, e2e_colony):
    spacing, fovs = e2e_colony
    csv, written = real_layouts.write_pipeline4(tmp_path / "package", fovs, spacing=spacing)
    work = _workflow(tmp_path / "work", {"csv": str(csv), "image_root": str(csv.parent), "chunk_size": 40})
    run = snakemake(work, "results/main/cells.parquet", timeout=900)
    assert "preprocess_fovs" not in run.stdout + run.stderr
    cells = pd.read_parquet(work / "results" / "main" / "cells.parquet")
    built = cells.get("control_source_cell_id", pd.Series("", index=cells.index)).fillna("") != ""
    cells = cells[~built]  # controls normalization may build (the package has its own)
    assert sorted(cells["cell_id"]) == sorted(f"main/{cell_id}" for cell_id in written["CellId"])
    assert set(cells["structure"]) == set(written["structure"])
    assert cells["is_mitotic"].dtype == bool and cells["is_mitotic"].any()
    rejects = pd.read_parquet(work / "results" / "main" / "rejects.parquet")
    assert sorted(rejects["source_cell_id"]) == ["9001", "9002"]
    fovs = set(pd.read_csv(csv, dtype=str)["FOVId"])
    assert set(cells["imaging_fov"]) <= fovs and cells["imaging_fov"].nunique() > 1  # the package's FOVId
    run = snakemake(work, timeout=900)  # the default target: every figure this dataset supports (no drug set)
    figures = {path.name for path in (work / "results" / "figures").glob("*.png")}
    assert {"latent_scatter.png", "coupling_structures.png", "generated_cells.png", "structures_in_one_cell.png",
            "beta_features.png"} <= figures, run.stderr[-3000:]
    assert not any(name.startswith("drug_") for name in figures)


def test_an_allen_training_set_takes_a_labs_drug_set_of_fovs(tmp_path, e2e_colony):
    spacing, fovs = e2e_colony
    csv, _ = real_layouts.write_pipeline4(tmp_path / "package", fovs, spacing=spacing)
    drugs = _drug_manifest(tmp_path / "lab")
    work = _workflow(tmp_path / "work", {"csv": str(csv), "image_root": str(csv.parent)}, drug_manifest=str(drugs))
    planned = snakemake(work, "-n").stdout
    segmented = set(re.findall(r"results/drugs/segmentation/([^,\s]+)\.ome\.tiff", planned))
    assert segmented == set(pd.read_csv(drugs)["fov_id"])
    assert "rule preprocess_fovs_drugs_000" in planned
    assert "rule import_allencell" in planned and "rule drug_shifts" in planned
    assert "results/main/segmentation/" not in planned  # the training cells come pre-cropped


@pytest.mark.slow
def test_workflow_from_the_hipsc_dataset_to_every_supported_figure(tmp_path, e2e_colony):
    spacing, fovs = e2e_colony
    csv, written = real_layouts.write_hipsc(tmp_path / "dataset", fovs, spacing=spacing, voxel_um=0.3)
    work = _workflow(tmp_path / "work", {"layout": "hipsc_single_cell", "csv": str(csv), "chunk_size": 40})
    snakemake(work, "results/main/cells.parquet", timeout=900)
    cells = pd.read_parquet(work / "results" / "main" / "cells.parquet")
    built = cells.get("control_source_cell_id", pd.Series("", index=cells.index)).fillna("") != ""
    cells = cells[~built]  # controls normalization builds from the imported cells
    assert sorted(cells["cell_id"]) == sorted(f"main/{cell_id}" for cell_id in written["CellId"])
    assert set(cells["structure"]) == set(written["structure"]) and "nucleoli_dfc" in set(cells["structure"])
    assert list(pd.read_parquet(work / "results" / "main" / "rejects.parquet")["source_cell_id"]) == ["999"]
    run = snakemake(work, timeout=900)  # the default target: every figure this dataset supports
    figures = {path.name for path in (work / "results" / "figures").glob("*.png")}
    assert {"latent_scatter.png", "coupling_structures.png", "generated_cells.png"} <= figures, run.stderr[-3000:]
