"""The workflow on real-data style input: a user's manifest, with bad FOVs among good ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from statcell import io, normalize, synth
from statcell.analysis.coupling import CALIBRATION_CONTROLS
from statcell.vocabulary import CONTROLS, DRUG_DATASET, MAIN_DATASET
from statcell.cli import main
from tests.conftest import TINY_SYNTHETIC
from tests.conftest import snakemake_cpu_options
from tests.test_workflow import TINY, copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]
# A lab's colony: two structures, two FOVs each (enough held-out imaged cells for the latent-space correlations),
# and a drug set of microtubules, one FOV untreated and one under paclitaxel.
LAB_COLONY = {**TINY["synthetic"], "structures": ["nucleoli", "microtubules"], "fovs_per_structure": 2}
# The tiny run's models and analyses (tests/test_workflow.py).
LAB_SETTINGS = {section: TINY[section] for section in ("training", "analysis", "beta_sweep")}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory) -> Path:
    """A folder laid out as a user's: images/, with the two good FOVs as the two stage positions (scenes) of one
    file and the first again as an OME-Zarr folder, and manifest.csv naming them (by scene) and three bad FOVs
    (missing, truncated, and the two-scene file without a scene), separated by semicolons with decimal commas."""
    import tifffile

    folder = tmp_path_factory.mktemp("user")
    settings = {**TINY_SYNTHETIC, "structures": ["golgi"], "fovs_per_structure": 2, "drug_treatments": []}
    assert main(["synthesize", "--settings", json.dumps(settings), "--outdir", str(folder / "generated")]) == 0
    (folder / "images").mkdir()
    with tifffile.TiffWriter(folder / "images" / "positions.ome.tiff", ome=True) as positions:
        for fov in ("golgi_00", "golgi_01"):
            positions.write(io.read_image(synth.raw_image_path(folder / "generated", fov)).data,
                            metadata={"axes": "CZYX"})
    _write_ome_zarr(folder / "images" / "golgi_00.ome.zarr",
                    io.read_image(synth.raw_image_path(folder / "generated", "golgi_00")))
    truncated = folder / "images" / "broken.ome.tiff"
    truncated.write_bytes(synth.raw_image_path(folder / "generated", "golgi_00").read_bytes()[:5000])
    manifest = pd.read_csv(synth.manifest_path(folder / "generated", "main"))
    manifest["path"] = "images/positions.ome.tiff"
    manifest["scene"] = [int(fov[-2:]) for fov in manifest["fov_id"]]
    as_zarr = {**manifest.iloc[0].to_dict(), "fov_id": "golgi_zarr", "path": "images/golgi_00.ome.zarr", "scene": None}
    bad = [{**manifest.iloc[0].to_dict(), "fov_id": "missing_fov", "path": "images/not_there.ome.tiff"},
           {**manifest.iloc[0].to_dict(), "fov_id": "broken_fov", "path": "images/broken.ome.tiff"},
           {**manifest.iloc[0].to_dict(), "fov_id": "unsaid_scene", "scene": None}]
    # written as a spreadsheet exports it where the comma is the decimal mark: semicolons, 0,29
    pd.concat([manifest, pd.DataFrame([as_zarr, *bad])]).to_csv(folder / "manifest.csv", index=False, sep=";",
                                                                 decimal=",")
    return folder


def _write_ome_zarr(path: Path, image: io.Image) -> None:
    """An OME-Zarr image (NGFF 0.5, one resolution level) of a FOV, as a pipeline writing OME-Zarr stores it."""
    from bioio_ome_zarr.writers import Channel, OMEZarrWriter

    writer = OMEZarrWriter(path, level_shapes=image.data.shape, dtype=image.data.dtype,
                           axes_names=["c", "z", "y", "x"], axes_types=["channel", "space", "space", "space"],
                           axes_units=[None, "micrometer", "micrometer", "micrometer"],
                           physical_pixel_size=[1.0, *image.spacing],
                           channels=[Channel(label=name, color="FFFFFF") for name in image.channel_names])
    writer.write_full_volume(image.data)


@pytest.mark.slow
def test_bad_fovs_become_rejects_and_the_good_ones_reach_the_store(tmp_path, user_data):
    for name in ("Snakefile", "rules", "config", "workflow", "envs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "manifest", "manifest": str(user_data / "manifest.csv")}}))
    run = subprocess.run([sys.executable, "-m", "snakemake", "results/main/cells.parquet",
                          *snakemake_cpu_options(), "--configfile", "user.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    cells = pd.read_parquet(tmp_path / "results" / "main" / "cells.parquet")
    assert set(cells["fov_id"]) == {"golgi_00", "golgi_01", "golgi_zarr"} and len(cells) >= 4
    counts = cells["fov_id"].value_counts()
    assert counts["golgi_zarr"] == counts["golgi_00"]  # the same FOV, read from its OME-Zarr copy
    assert "mitotic_stage" not in cells  # real data: no ground truth to join
    rejects = pd.read_parquet(tmp_path / "results" / "main" / "rejects.parquet")
    unusable = rejects[rejects["reject_reason"].str.startswith("unusable_fov")].set_index("fov_id")["reject_reason"]
    assert "not_there.ome.tiff" in unusable["missing_fov"] and "image file not found" in unusable["missing_fov"]
    assert "broken.ome.tiff" in unusable["broken_fov"] and "cannot read" in unusable["broken_fov"]
    assert "positions.ome.tiff holds 2 scenes" in unusable["unsaid_scene"] and "'scene'" in unusable["unsaid_scene"]
    logs = "".join(path.read_text() for path in (tmp_path / "logs" / "preprocess_fovs" / "main").glob("*.log"))
    assert "missing_fov: image file not found" in logs and "not_there.ome.tiff" in logs


def test_segmentations_named_in_the_manifest_are_used_as_given(tmp_path, user_data):
    truth = synth.label_image_path(user_data / "generated", "golgi_00")
    record = io.read_manifest(user_data / "manifest.csv").iloc[0].to_dict()
    record.update(cell_segmentation=str(truth), nucleus_segmentation=str(truth))
    output, crops, table = tmp_path / "labels.ome.tiff", tmp_path / "crops.npz", tmp_path / "cells.parquet"
    assert main(["preprocess-fov", "--fov-record", json.dumps(record), "--labels", str(output), "--crops", str(crops),
                 "--table", str(table)]) == 0
    given = io.read_image(truth).data
    written = io.read_image(output).data
    np.testing.assert_array_equal(written[0], given[0])
    cropped = pd.read_parquet(table)
    assert set(cropped["label"]) <= set(np.unique(given[0])) - {0} and len(cropped) == len(np.unique(given[0])) - 1


def test_several_fovs_in_one_call_write_what_a_call_per_fov_writes(tmp_path, user_data, caplog):
    """What a preprocessing job of several FOVs runs: the same files as one call per FOV, a bad FOV among them."""
    fovs = ["golgi_00", "missing_fov", "golgi_01"]

    def preprocess(folder: Path, group: list[str]) -> int:
        arguments = ["preprocess-fov", "--manifest", str(user_data / "manifest.csv")]
        for fov in group:
            arguments += ["--fov", fov, "--labels", str(folder / f"{fov}.ome.tiff"),
                          "--crops", str(folder / f"{fov}.npz"), "--table", str(folder / f"{fov}.parquet")]
        return main(arguments)

    for folder in ("together", "alone"):
        (tmp_path / folder).mkdir()
    assert preprocess(tmp_path / "together", fovs) == 0
    assert all(preprocess(tmp_path / "alone", [fov]) == 0 for fov in fovs)
    for fov in fovs:
        together, alone = (tmp_path / "together" / fov, tmp_path / "alone" / fov)
        np.testing.assert_array_equal(io.read_image(f"{together}.ome.tiff").data,
                                      io.read_image(f"{alone}.ome.tiff").data)
        np.testing.assert_array_equal(np.load(f"{together}.npz")["crops"], np.load(f"{alone}.npz")["crops"])
        pd.testing.assert_frame_equal(pd.read_parquet(f"{together}.parquet"), pd.read_parquet(f"{alone}.parquet"))
    assert len(pd.read_parquet(tmp_path / "together" / "golgi_01.parquet")) > 1
    assert pd.read_parquet(tmp_path / "together" / "missing_fov.parquet")["reject_reason"].str.startswith(
        "unusable_fov").all()
    # an output option given fewer times than the FOVs: nothing is written, and the message names the option
    caplog.clear()
    arguments = ["preprocess-fov", "--manifest", str(user_data / "manifest.csv"), "--fov", "golgi_00", "--fov",
                 "golgi_01", "--labels", "a.ome.tiff", "--labels", "b.ome.tiff", "--crops", "a.npz", "--table",
                 "a.parquet", "--table", "b.parquet"]
    assert main(arguments) == 2
    assert "2 FOV(s) given but --crops 1 time(s)" in caplog.text
    caplog.clear()
    assert main(["preprocess-fov", "--fov-record", '{"path": "a.tiff"}', "--labels", "a.ome.tiff", "--crops", "a.npz",
                 "--table", "a.parquet"]) == 2
    assert "--fov-record '{\"path\": \"a.tiff\"}' is not a manifest row as JSON (KeyError: 'fov_id')" in caplog.text


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory) -> Path:
    """A lab's own FOVs, written as the README tells a user to: images/, manifest.csv (no drug column: nothing is
    treated) and drugs.csv whose untreated FOV has an empty drug and concentration; no mitotic annotation anywhere.
    The images are a tiny synthetic colony's, so the structures are known."""
    folder = tmp_path_factory.mktemp("lab")
    assert main(["synthesize", "--settings", json.dumps(LAB_COLONY), "--outdir", str(folder / "generated")]) == 0
    (folder / "images").mkdir()
    for dataset, name in ((MAIN_DATASET, "manifest.csv"), (DRUG_DATASET, "drugs.csv")):
        manifest = pd.read_csv(synth.manifest_path(folder / "generated", dataset), keep_default_na=False)
        generated = list(manifest["fov_id"])
        manifest["fov_id"] = manifest["fov_id"].str.replace("vehicle_", "untreated_")
        for source, fov in zip(generated, manifest["fov_id"], strict=True):
            shutil.copy(synth.raw_image_path(folder / "generated", source), folder / "images" / f"{fov}.ome.tiff")
        manifest["path"] = [f"images/{fov}.ome.tiff" for fov in manifest["fov_id"]]
        if dataset == MAIN_DATASET:
            manifest = manifest.drop(columns=["drug", "concentration_um"])
        else:
            untreated = manifest["drug"] == "vehicle"
            manifest["drug"] = manifest["drug"].mask(untreated, "")
            manifest["concentration_um"] = manifest["concentration_um"].astype(object).mask(untreated, "")
        manifest.to_csv(folder / name, index=False)
    drugs = pd.read_csv(folder / "drugs.csv", keep_default_na=False)
    assert sorted(drugs["drug"]) == ["", "paclitaxel"] and "vehicle" not in (folder / "drugs.csv").read_text()
    return folder


#: Cells per built control class (auto would take the median class, ~28): a shorter training, and still enough that
#: every class has held-out cells for the coupling analysis (3 left four classes with none).
LAB_CONTROL_CELLS = 10


def _lab_config(lab_data: Path, **data) -> dict:
    return {"data": {"source": "manifest", "manifest": str(lab_data / "manifest.csv"), **data},
            **LAB_SETTINGS, "normalize": {"control_cells": LAB_CONTROL_CELLS}}


@pytest.mark.slow
def test_a_labs_manifest_reaches_every_analysis(tmp_path, lab_data):
    """Empty drug for untreated cells and no mitotic annotation: the default target runs to the last figure, the
    drug shifts are measured against the untreated cells, controls are built for the coupling analysis, and the
    mitosis test says why it was skipped."""
    folder = copy_workflow(tmp_path / "run")
    (folder / "lab.yaml").write_text(yaml.safe_dump(_lab_config(lab_data, drug_manifest=str(lab_data /
                                                                                            "drugs.csv"))))
    run = snakemake(folder, "--configfile", "lab.yaml", timeout=900)
    results = folder / "results"
    for figure in ("coupling_cells", "coupling_structures", "drug_reference_latents", "drug_target_latents",
                   "drug_trajectory", "latent_scatter", "feature_violins", "beta_regression"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 10_000, figure
    assert not (results / "analysis" / "ground_truth_recovery.csv").exists()  # no planted answers in a lab's data
    assert "no drug set" not in run.stdout + run.stderr

    shifts = pd.read_csv(results / "analysis" / "perturbation" / "shifts.csv", keep_default_na=False)
    assert len(shifts) == 2 and set(shifts["space"]) == {"target", "reference"}
    assert (shifts["structure"] == "microtubules").all() and (shifts["drug"] == "paclitaxel").all()
    assert (shifts["control"] == "untreated").all()
    # tested against the untreated cells, but one FOV a side allows no p-value below 1: the note says so
    assert shifts["note"].str.startswith("untestable: 1 control and 1 treated FOVs allow 2 relabelings").all()
    assert (shifts["n_control"] > 0).all() and (shifts["n_treated"] > 0).all()
    assert pd.to_numeric(shifts["p_value"]).between(0, 1).all()
    trajectory = pd.read_csv(results / "analysis" / "perturbation" / "trajectory.csv")
    assert set(trajectory["cell_drug"]) <= {"untreated", "paclitaxel"} and len(trajectory) == 2

    cells = pd.read_parquet(results / "main" / "cells.parquet")
    built = cells[cells[normalize.CONTROL_SOURCE_COLUMN] != ""]
    assert built["structure"].value_counts().to_dict() == {kind: LAB_CONTROL_CELLS for kind in CONTROLS}
    assert all(cell_id.startswith(f"main/{structure}/") for cell_id, structure in zip(built["cell_id"],
                                                                                      built["structure"]))
    assert set(cells.loc[cells[normalize.CONTROL_SOURCE_COLUMN] == "", "structure"]) == {"nucleoli", "microtubules"}
    assert not {"mitotic_stage", "is_mitotic"} & set(cells.columns)
    drug_cells = pd.read_parquet(results / "drugs" / "cells.parquet")
    assert not set(drug_cells["structure"]) & set(CONTROLS)  # controls: training set only

    structures = pd.read_csv(results / "analysis" / "coupling" / "structures.csv")
    assert set(structures["phase"]) == {"unannotated"}
    assert set(CONTROLS) <= set(structures.loc[structures["n_cells"] > 0, "structure"])  # each class has held-out cells
    calibration = pd.read_csv(results / "analysis" / "coupling" / "calibration.csv")
    assert sorted(calibration["check"]) == sorted(f"{kind} couples to" for kind in CALIBRATION_CONTROLS)
    assert calibration["observed"].str.contains("FOVs").all()  # checked on the unannotated cells' calls
    said = (folder / "logs" / "measure_coupling.log").read_text()
    assert all(f"{kind} couples to" in said for kind in CALIBRATION_CONTROLS)  # each call logged, passed or not
    mitosis = pd.read_csv(results / "analysis" / "coupling" / "mitosis_test.csv")
    assert len(mitosis) and mitosis["note"].str.contains("no mitotic annotation").all()
    assert mitosis["p_value"].isna().all()
    assert "no cell has a mitotic annotation" in (folder / "logs" / "measure_coupling.log").read_text()
    assert "no mitotic annotation" in (folder / "logs" / "plot_latent_scatter.log").read_text()


def _dry_run(folder: Path, config: dict) -> subprocess.CompletedProcess:
    (folder / "user.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "user.yaml"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_dataset_without_a_drug_set_or_control_skips_the_drug_analyses_saying_why(tmp_path, lab_data):
    folder = copy_workflow(tmp_path / "run")
    without = _dry_run(folder, _lab_config(lab_data))
    assert without.returncode == 0, without.stdout + without.stderr
    assert "no drug set (data.drug_manifest is not set" in without.stdout + without.stderr
    assert "rule drug_shifts" not in without.stdout and "rule measure_coupling" in without.stdout
    assert "rule plot_coupling_structures" in without.stdout and "rule plot_latent_scatter" in without.stdout

    drugs = pd.read_csv(lab_data / "drugs.csv", keep_default_na=False)
    drugs[drugs["drug"] == "paclitaxel"].to_csv(tmp_path / "treated_only.csv", index=False)
    no_control = _dry_run(folder, _lab_config(lab_data, drug_manifest=str(tmp_path / "treated_only.csv")))
    assert no_control.returncode == 0, no_control.stdout + no_control.stderr
    said = no_control.stdout + no_control.stderr
    assert "no control cells: no 'vehicle' and no untreated cells" in said
    assert "skipping the drug analyses" in said and "rule drug_shifts" not in no_control.stdout
    assert "rule embed_cells" in no_control.stdout  # the drug set is still embedded

    drugs[drugs["drug"] == ""].to_csv(tmp_path / "control_only.csv", index=False)  # its untreated FOVs alone
    control_only = _dry_run(folder, _lab_config(lab_data, drug_manifest=str(tmp_path / "control_only.csv")))
    assert control_only.returncode == 0, control_only.stdout + control_only.stderr
    assert "the drug set holds only its control (untreated), no treatment to compare with it: skipping the drug " \
        "analyses" in control_only.stdout + control_only.stderr
    assert "rule drug_shifts" not in control_only.stdout and "rule perturb_cells" not in control_only.stdout

    with_control = _dry_run(folder, _lab_config(lab_data, drug_manifest=str(lab_data / "drugs.csv")))
    assert with_control.returncode == 0 and "rule drug_shifts" in with_control.stdout
    assert "skipping" not in with_control.stdout + with_control.stderr


@pytest.mark.slow
def test_a_drug_set_structure_the_training_set_lacks_stops_the_run_before_any_job(tmp_path, lab_data):
    drugs = pd.read_csv(lab_data / "drugs.csv", keep_default_na=False)
    drugs.loc[drugs.index[-1], "structure"] = "TOMM20 (mitochondria)"
    drugs.to_csv(tmp_path / "new_structure.csv", index=False)
    refused = _dry_run(copy_workflow(tmp_path / "run"),
                       _lab_config(lab_data, drug_manifest=str(tmp_path / "new_structure.csv")))
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "rule " not in refused.stdout
    assert (f"data.drug_manifest ({tmp_path / 'new_structure.csv'}) holds the structure(s) 'TOMM20 (mitochondria)', "
            f"which the target model trained on data.manifest ({lab_data / 'manifest.csv'}) has no label for "
            "(it knows: control_blank, ") in said


@pytest.mark.slow
@pytest.mark.parametrize(("config", "message"), [
    ({"data": {"source": "manifest"}}, "config key 'data.manifest': required when data.source is 'manifest'"),
    ({"data": {"source": "allencell"}}, "config key 'allencell.csv': required when data.source is 'allencell'"),
])
def test_a_source_without_its_input_stops_before_any_job_naming_the_key(tmp_path, config, message):
    run = _dry_run(copy_workflow(tmp_path / "run"), config)
    assert run.returncode != 0 and message in run.stdout + run.stderr
    assert "TypeError" not in run.stdout + run.stderr and "rule " not in run.stdout


@pytest.mark.slow
def test_a_manifest_without_a_fov_stops_before_any_job_naming_it(tmp_path, lab_data):
    header = pd.read_csv(lab_data / "drugs.csv", nrows=0)
    header.to_csv(tmp_path / "no_fovs.csv", index=False)
    run = _dry_run(copy_workflow(tmp_path / "run"), _lab_config(lab_data, drug_manifest=str(tmp_path / "no_fovs.csv")))
    assert run.returncode != 0 and "rule " not in run.stdout
    assert f"manifest {tmp_path / 'no_fovs.csv'} lists no FOV (it has a header and no row)" in run.stdout + run.stderr


@pytest.mark.slow
def test_a_named_control_the_drug_set_lacks_stops_before_any_job(tmp_path, lab_data):
    config = _lab_config(lab_data, drug_manifest=str(lab_data / "drugs.csv"))
    config["analysis"] = {**config["analysis"], "control_treatment": "DMSO"}
    run = _dry_run(copy_workflow(tmp_path / "run"), config)
    assert run.returncode != 0 and "rule " not in run.stdout
    assert "analysis.control_treatment is 'DMSO', but the drug set has no such cells" in run.stdout + run.stderr
