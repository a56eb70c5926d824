"""The real Snakemake workflow on a tiny configuration: dry run, lint, a real run, reruns and config errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from statcell import io

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synthetic": {
        "seed": 3,
        "structures": ["nucleoli", "control_membrane"],
        "fovs_per_structure": 1,
        "drug_structures": ["microtubules"],
        "drug_treatments": ["vehicle", "paclitaxel"],
        "drug_fovs_per_condition": 1,
        "fov_size_um": {"z": 14.0, "y": 30.0, "x": 30.0},
    }
}


def _snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # Targets come first: everything after --configfile is read as a config file.
    configfiles = () if "--configfile" in args else ("--configfile", "tiny.yaml")
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2", *configfiles]
    run = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    if check and run.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow with a tiny config beside it."""
    root = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "rules", "config", "workflow", "envs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


@pytest.mark.slow
def test_dry_run_and_lint_are_clean(workdir):
    dry = _snakemake(workdir, "-n")
    for rule in ("synthesize", "segment_fov", "crop_cells", "normalize_cells", "train_reference", "train_target"):
        assert rule in dry.stdout
    lint = _snakemake(workdir, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr


# The tiny colony is too small for a validation split, so the real run stops before training; tests/test_train.py
# trains (and kills and resumes) through the same CLI on a store of its own.
BEFORE_TRAINING = ("results/main/cells.parquet", "results/drugs/cells.parquet", "results/figures/colony_overview.png")


@pytest.mark.slow
def test_real_run_builds_the_synthetic_colony_and_reruns_only_what_changed(workdir):
    _snakemake(workdir, *BEFORE_TRAINING)
    outdir = workdir / "results" / "synthetic"
    manifest = io.read_manifest(outdir / "main_manifest.csv")
    drugs = io.read_manifest(outdir / "drugs_manifest.csv")
    assert list(manifest["fov_id"]) == ["nucleoli_00", "control_membrane_00"]
    assert list(drugs["fov_id"]) == ["vehicle_microtubules_00", "paclitaxel_microtubules_00"]
    image = io.read_image(manifest.loc[0, "path"])
    assert image.data.shape == (3, 48, 139, 139)
    assert image.channel_names == ("membrane", "dna", "nucleoli")
    truth = pd.read_parquet(outdir / "ground_truth" / "cells.parquet")
    assert set(truth["fov_id"]) == set(manifest["fov_id"]) | set(drugs["fov_id"])
    assert (workdir / "logs" / "synthesize.log").read_text().count("synthesized FOV") == 4
    assert (workdir / "benchmarks" / "synthesize.tsv").is_file()
    figure = workdir / "results" / "figures" / "colony_overview.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _snakemake(workdir, *BEFORE_TRAINING, "--report", "report.html")
    assert "colony_overview.png" in (workdir / "report.html").read_text(errors="ignore")

    # The single-cell dataset: a store and a table that agree, annotations joined from the ground truth.
    import zarr

    for dataset in ("main", "drugs"):
        cells = pd.read_parquet(workdir / "results" / dataset / "cells.parquet")
        store = zarr.open_array(workdir / "results" / dataset / "cells.zarr" / "0", mode="r")
        assert len(cells) > 0 and store.shape == (len(cells), 5, 16, 16, 24)
        assert list(cells["store_index"]) == list(range(len(cells)))
        assert cells["mitotic_stage"].notna().all() and (cells["truth_iou"] > 0.7).all()
        first = store[0]
        assert 0 <= first[:3].min() and first[:3].max() <= 1 and first[3].sum() > 0
        rejects = pd.read_parquet(workdir / "results" / dataset / "rejects.parquet")
        assert "touches_fov_border" in set(rejects["reject_reason"])
    drugs = pd.read_parquet(workdir / "results" / "drugs" / "cells.parquet")
    assert set(drugs["drug"]) == {"vehicle", "paclitaxel"}

    assert "Nothing to be done" in _snakemake(workdir, "-n", *BEFORE_TRAINING).stdout
    # Touching one FOV reruns that FOV's segmentation and cropping, and its dataset's normalization, only.
    (workdir / "results" / "synthetic" / "raw" / "nucleoli_00.ome.tiff").touch()
    stale = _snakemake(workdir, "-n", *BEFORE_TRAINING).stdout
    assert re.search(r"segment_fov\s+1\b", stale) and re.search(r"crop_cells\s+1\b", stale)
    assert re.search(r"normalize_cells\s+1\b", stale) and "synthesize" not in stale
    _snakemake(workdir, "--touch", *BEFORE_TRAINING)
    (workdir / "reseed.yaml").write_text(yaml.safe_dump({"synthetic": {**TINY["synthetic"], "seed": 4}}))
    changed = _snakemake(workdir, "-n", *BEFORE_TRAINING, "--configfile", "tiny.yaml", "reseed.yaml")
    assert "synthesize" in changed.stdout and "params" in changed.stdout.lower()


@pytest.mark.slow
@pytest.mark.parametrize("bad, key", [
    ({"synthetic": {"fovs_per_structure": "two"}}, "synthetic.fovs_per_structure"),
    ({"synthetic": {"seeed": 1}}, "synthetic.seeed"),
])
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, workdir, bad, key):
    (workdir / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "bad.yaml"], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert key in run.stdout + run.stderr
    assert "rule synthesize" not in run.stdout
