"""The SLURM profile against a real single-node SLURM on localhost (tests/slurm/cluster.py).

The tiny workflow's default target runs to the end with every job submitted through ``sbatch`` and asking for the
threads, memory and GPUs its rule declares; a job that fails is reported as failed. Skipped, with the reason,
where SLURM cannot be installed or started (not root, no apt, daemons that do not come up).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.slurm.cluster import LocalSlurm, NodeSize, SlurmUnavailable, local_slurm
from tests.conftest import worker_cores
from tests.test_workflow import copy_workflow, keep_as_second_run

PROFILE = "workflow/profiles/slurm"
# Status checks every 2 s through squeue (the cluster has no slurmdbd for sacct; MinJobAge keeps finished jobs in
# squeue for an hour).
FAST_STATUS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
               "--seconds-between-status-checks", "2")
RUN_TIMEOUT_S = 1200
# Both tests mostly wait on SLURM's status checks: they go first among the tiny runs' tests (tests/conftest.py).
pytestmark = [pytest.mark.xdist_group("tiny_runs"), pytest.mark.waits]  # groups: see tests/test_workflow.py


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> LocalSlurm:
    """A running single-node cluster, stopped after the module.

    It declares 8 CPUs, 32 GB and 4 GPUs (more than a CI machine has): every rule's request fits, the tiny
    trainings (~0.6 GB each, 6 GB asked) run side by side, and jobs that mostly wait (on imports, on status checks)
    overlap.
    """
    node = NodeSize(cpus=max(os.cpu_count() or 1, 8), memory_mb=32000, gpus=4)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(local_slurm(tmp_path_factory.mktemp("slurm"), node=node))
        except SlurmUnavailable as error:
            pytest.skip(f"SLURM cannot start here: {error}")
        yield cluster


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow with the tiny config beside it."""
    return copy_workflow(tmp_path_factory.mktemp("slurm_workflow"))


def _snakemake(cluster: LocalSlurm, workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    """Run the real snakemake with the SLURM profile; killed, with everything it started, after RUN_TIMEOUT_S."""
    # Targets come first: everything after --configfile is read as a config file.
    # Jobs take the local runs' threads (tests/conftest.py:worker_cores): torch's results depend on its thread count,
    # and test_workflow compares this run's tables with a local run's, value for value.
    command = [sys.executable, "-m", "snakemake", *targets, "--workflow-profile", PROFILE, *FAST_STATUS,
               "--max-threads", str(worker_cores()), "--configfile", "tiny.yaml"]
    process = subprocess.Popen(command, cwd=workdir, env=cluster.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"snakemake on SLURM ran past {RUN_TIMEOUT_S} s and was killed:\n{output[-6000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def _submitted(output: str) -> dict[str, dict]:
    """SLURM job id -> the Snakemake job it ran (rule, threads, resources), from snakemake's log.

    Jobs are matched by Snakemake's job id ("jobid: N" in a job's block, "Job N has been submitted with SLURM jobid
    M" wherever the plugin prints it), since the messages of jobs submitted together may interleave."""
    blocks: dict[str, dict] = {}
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", output):
        rule = re.search(r"^(local)?rule (\w+):", block, re.MULTILINE)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, re.MULTILINE)
        if rule and jobid:
            resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
            threads = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
            blocks[jobid.group(1)] = {
                "rule": rule.group(2),
                "threads": int(threads.group(1)) if threads else 1,
                "resources": dict(re.findall(r"(\w+)=([^,\s]+)", resources.group(1))) if resources else {},
            }
    return {slurm_id: blocks[jobid]
            for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)}


def _megabytes(size: str) -> float:
    """A SLURM memory size (``6000M``, ``2G``) in megabytes."""
    return float(size[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[size[-1]]


def _run_id(output: str) -> str:
    return re.search(r"SLURM run ID: (\S+)", output).group(1)


@pytest.mark.slow
def test_tiny_workflow_runs_to_the_end_with_every_job_through_slurm(cluster, workdir, tmp_path_factory):
    """test_workflow's tiny run, through SLURM; its tables are kept for test_workflow's determinism check."""
    run = _snakemake(cluster, workdir)
    assert run.returncode == 0, run.stdout[-6000:]
    keep_as_second_run(workdir, tmp_path_factory)
    total = int(re.search(r"^total\s+(\d+)$", run.stdout, re.MULTILINE).group(1))
    local = re.findall(r"^localrule (\w+):", run.stdout, re.MULTILINE)
    assert local == ["all"], f"jobs run outside SLURM: {local}"

    submitted = _submitted(run.stdout)
    ran = {slurm_id: job for slurm_id, job in cluster.jobs().items() if job["JobName"] == _run_id(run.stdout)}
    assert len(submitted) == total - len(local) > 10
    assert set(submitted) == set(ran), "every submitted job, and nothing else, ran on the cluster"
    for slurm_id, job in submitted.items():
        record = ran[slurm_id]
        assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", (job, record)
        assert re.fullmatch(rf"rule_{job['rule']}(_wildcards_.+)?", record["Comment"]), (job, record)
        assert record["NodeList"] == "localhost"
        # The rule's portable resources reached SLURM: --mem, --cpus-per-task (or per GPU), --gpus.
        assert _megabytes(record["MinMemoryNode"]) == int(job["resources"]["mem_mb"]), (job, record)
        assert int(record["NumCPUs"]) == job["threads"], (job, record)
        gpus = int(job["resources"].get("gpu", 0))
        assert record.get("TresPerJob", "") == (f"gres:gpu:{gpus}" if gpus else ""), (job, record)
    assert any("TresPerJob" in record for record in ran.values()), "training asks for a GPU"

    nothing = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "tiny.yaml"], cwd=workdir,
                             capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    assert (workdir / "results" / "figures" / "model_check.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_failing_job_is_reported_as_failed(cluster, workdir):
    """A corrupt manifest makes the colony overview fail on the cluster: SLURM records FAILED, snakemake exits 1."""
    manifest = workdir / "results" / "synthetic" / "main_manifest.csv"
    figure = workdir / "results" / "figures" / "colony_overview.png"
    if not manifest.exists():  # this test alone: make the manifest first, on the cluster too
        made = _snakemake(cluster, workdir, str(manifest.relative_to(workdir)))
        assert made.returncode == 0, made.stdout[-6000:]
    manifest.write_text("fov_id,path\nnot,a manifest\n")

    run = _snakemake(cluster, workdir, str(figure.relative_to(workdir)), "--force")
    assert run.returncode != 0
    failed = [job for job in cluster.jobs().values() if job["JobName"] == _run_id(run.stdout)]
    retries = yaml.safe_load((workdir / PROFILE / "config.yaml").read_text()).get("retries", 0)
    assert len(failed) == 1 + retries, "the profile's retries resubmit the job"
    for record in failed:
        assert record["JobState"] == "FAILED" and record["ExitCode"] != "0:0", record
        assert f"SLURM-job '{record['JobId']}' failed, SLURM status is: 'FAILED'" in run.stdout
    assert "Error in rule" in run.stdout
