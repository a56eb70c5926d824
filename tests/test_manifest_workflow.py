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

from statcell import io, synth
from statcell.cli import main
from tests.conftest import TINY_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def user_data(tmp_path_factory) -> Path:
    """A folder laid out as a user's: images/, and manifest.csv naming two good FOVs and two bad ones."""
    folder = tmp_path_factory.mktemp("user")
    settings = {**TINY_SYNTHETIC, "structures": ["golgi"], "fovs_per_structure": 2, "drug_treatments": []}
    assert main(["synthesize", "--settings", json.dumps(settings), "--outdir", str(folder / "generated")]) == 0
    (folder / "images").mkdir()
    for fov in ("golgi_00", "golgi_01"):
        shutil.copy(synth.raw_image_path(folder / "generated", fov), folder / "images" / f"{fov}.ome.tiff")
    truncated = folder / "images" / "broken.ome.tiff"
    truncated.write_bytes((folder / "images" / "golgi_00.ome.tiff").read_bytes()[:5000])
    manifest = pd.read_csv(synth.manifest_path(folder / "generated", "main"))
    manifest["path"] = [f"images/{fov}.ome.tiff" for fov in manifest["fov_id"]]
    bad = [{**manifest.iloc[0].to_dict(), "fov_id": "missing_fov", "path": "images/not_there.ome.tiff"},
           {**manifest.iloc[0].to_dict(), "fov_id": "broken_fov", "path": "images/broken.ome.tiff"}]
    pd.concat([manifest, pd.DataFrame(bad)]).to_csv(folder / "manifest.csv", index=False)
    return folder


@pytest.mark.slow
def test_bad_fovs_become_rejects_and_the_good_ones_reach_the_store(tmp_path, user_data):
    for name in ("Snakefile", "rules", "config", "workflow", "envs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "manifest", "manifest": str(user_data / "manifest.csv")}}))
    run = subprocess.run([sys.executable, "-m", "snakemake", "results/main/cells.parquet", "--cores", "2",
                          "--configfile", "user.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    cells = pd.read_parquet(tmp_path / "results" / "main" / "cells.parquet")
    assert set(cells["fov_id"]) == {"golgi_00", "golgi_01"} and len(cells) >= 4
    assert "mitotic_stage" not in cells  # real data: no ground truth to join
    rejects = pd.read_parquet(tmp_path / "results" / "main" / "rejects.parquet")
    unusable = rejects[rejects["reject_reason"].str.startswith("unusable_fov")].set_index("fov_id")["reject_reason"]
    assert "not_there.ome.tiff" in unusable["missing_fov"] and "image file not found" in unusable["missing_fov"]
    assert "broken.ome.tiff" in unusable["broken_fov"] and "cannot read" in unusable["broken_fov"]
    log = (tmp_path / "logs" / "crop_cells" / "main" / "missing_fov.log").read_text()
    assert "not_there.ome.tiff" in log


def test_segmentations_named_in_the_manifest_are_used_as_given(tmp_path, user_data):
    truth = synth.label_image_path(user_data / "generated", "golgi_00")
    record = io.read_manifest(user_data / "manifest.csv").iloc[0].to_dict()
    record.update(cell_segmentation=str(truth), nucleus_segmentation=str(truth))
    output = tmp_path / "labels.ome.tiff"
    assert main(["segment-fov", "--fov-record", json.dumps(record), "--output", str(output)]) == 0
    given = io.read_image(truth).data
    written = io.read_image(output).data
    np.testing.assert_array_equal(written[0], given[0])
