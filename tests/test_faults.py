"""Killed runs: Snakemake stopped by SIGINT (Ctrl-C) or SIGKILL during normalization or training, then rerun.

Each test works on a copy of the session's tiny full run (``tests/test_workflow.py``) with one stage's outputs
removed, kills Snakemake's whole process group (Snakemake and its running job) in the middle of that stage, checks
that nothing half-written passes for finished, reruns plainly and compares with the uninterrupted run: the same Zarr
store, byte for byte, and the same model weights.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from statcell import train
from tests.conftest import snakemake_cpu_options
from tests.test_workflow import TINY, copy_run, result_files, scheduled_jobs, snakemake, tiny_full_run

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGKILL, id="SIGKILL")]
pytestmark = pytest.mark.xdist_group("tiny_runs")  # see tests/test_workflow.py


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    return tiny_full_run(tmp_path_factory)


def _kill_when(workdir: Path, target: str, ready: Callable[[], bool], sig: signal.Signals) -> None:
    """Start ``snakemake target``, send ``sig`` to its process group as soon as ``ready()`` holds, and after a
    SIGKILL remove the lock the killed Snakemake left (``snakemake --unlock``)."""
    with (workdir / "killed_run.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "snakemake", target, *snakemake_cpu_options(),
                                    "--configfile", "tiny.yaml"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 600
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(f"the run ended before it could be killed:\n{(workdir / 'killed_run.log').read_text()}")
            time.sleep(0.005)
        os.killpg(process.pid, sig)
        code = process.wait(timeout=600)  # on SIGINT Snakemake stops gracefully: running jobs may still finish
        assert sig != signal.SIGKILL or code != 0
    if sig == signal.SIGKILL:  # a killed Snakemake cannot release its lock on the outputs: the user unlocks
        snakemake(workdir, "--unlock", target)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_a_run_killed_during_normalization_reruns_to_the_same_store(full_run, tmp_path, sig):
    work = copy_run(full_run, tmp_path / "run")
    dataset = work / "results" / "main"
    shutil.rmtree(dataset / "cells.zarr")
    for table in ("cells.parquet", "rejects.parquet"):
        (dataset / table).unlink()
    partial = dataset / "cells.zarr.partial"
    _kill_when(work, "results/main/cells.parquet", lambda: (partial / "0" / "zarr.json").exists(), sig)

    # SIGKILL leaves a half-written store, which never passes for the finished one: normalization is scheduled
    # again. On SIGINT Snakemake stops gracefully and may let the running job finish.
    finished = (dataset / "cells.parquet").exists()
    assert not (sig == signal.SIGKILL and finished)
    if not finished:
        assert not (dataset / "cells.zarr").exists()
        dry = scheduled_jobs(snakemake(work, "-n", "results/main/cells.parquet").stdout)
        assert {(job.rule, job.wildcards) for job in dry} == {("normalize_cells", "dataset=main")}
    snakemake(work, "results/main/cells.parquet")
    assert not partial.exists()
    again, uninterrupted = (result_files(folder, suffixes=(".parquet",)) for folder in (work, full_run))
    store = {name for name in uninterrupted if name.startswith("results/main/cells.zarr/")}
    assert len(store) > 2 and store <= again.keys()
    for name in [*store, "results/main/cells.parquet", "results/main/rejects.parquet"]:
        assert again[name].read_bytes() == uninterrupted[name].read_bytes(), name


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    model, _ = train.load_model(checkpoint)
    return model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_training_killed_midway_resumes_to_the_same_weights(full_run, tmp_path, sig):
    work = copy_run(full_run, tmp_path / "run")
    models = work / "results" / "models"
    for output in ("reference.ckpt", "reference_metrics.csv"):
        (models / output).unlink()
    for folder in (models / "training").glob("reference-*"):
        shutil.rmtree(folder)
    running = models / "training"

    def first_epoch_saved() -> bool:
        return any(running.glob("reference-*/checkpoints/last.ckpt"))

    _kill_when(work, "results/models/reference.ckpt", first_epoch_saved, sig)
    # SIGKILL stops the job mid-training; on SIGINT Snakemake lets a running job finish (a graceful stop)
    finished = (models / "reference.ckpt").exists()
    assert not (sig == signal.SIGKILL and finished)
    if not finished:
        checkpoint = next(running.glob("reference-*/checkpoints/last.ckpt"))
        assert torch.load(checkpoint, weights_only=False)["epoch"] < TINY["training"]["epochs"] - 1  # epochs left

    snakemake(work, "results/models/reference.ckpt")
    if not finished:
        assert "resuming reference training" in (work / "logs" / "train_reference.log").read_text()
    resumed, uninterrupted = (_weights(folder / "results" / "models" / "reference.ckpt") for folder in (work, full_run))
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    # Validation metrics of every epoch match; the training metrics of the epoch whose checkpoint was the last one
    # written before the kill may be missing (Lightning logs them after that checkpoint).
    metrics = [pd.read_csv(folder / "results" / "models" / "reference_metrics.csv") for folder in (work, full_run)]
    validation = [table[["epoch", *sorted(c for c in table.columns if c.startswith("val_"))]] for table in metrics]
    pd.testing.assert_frame_equal(*validation, check_exact=True)
