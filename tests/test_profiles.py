"""The workflow profiles take effect with the README's commands.

Snakemake 9 looks for a workflow profile only at ``profiles/<name>`` beside the Snakefile or the working directory
(``--workflow-profile <name>``; ``default`` when none is given), or at a path given in full. The profiles live in
``workflow/profiles/`` (the project's layout); ``profiles`` at the repository root is a link to that folder, so
``snakemake --cores all`` applies ``default`` and ``--workflow-profile slurm`` finds ``slurm``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "envs")
TARGET = "results/synthetic/main_manifest.csv"  # one job: the dry run stays fast


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """The workflow as a fresh clone has it, the root ``profiles`` link included."""
    folder = tmp_path_factory.mktemp("profiles")
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    os.symlink(os.readlink(ROOT / "profiles"), folder / "profiles")
    return folder


def _dry_run(folder: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args, TARGET], cwd=folder, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def _settings(folder: Path, argv: list[str], monkeypatch) -> dict:
    """The command-line settings Snakemake derives from ``argv`` in ``folder``, profiles applied."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(folder)
    _, args = parse_args(argv)
    return vars(args)


def test_the_root_profiles_folder_is_the_workflow_profiles_folder():
    assert (ROOT / "profiles").is_symlink() and not os.path.isabs(os.readlink(ROOT / "profiles"))
    assert (ROOT / "profiles").resolve() == (ROOT / "workflow" / "profiles").resolve()
    assert {path.name for path in (ROOT / "profiles").iterdir()} >= {"default", "slurm"}


def test_plain_snakemake_applies_the_default_profile(workflow_copy, monkeypatch):
    output = _dry_run(workflow_copy, "--cores", "all")
    assert "Using workflow specific profile profiles/default" in output
    assert "Shell command: python -m statcell synthesize" in output  # the profile's printshellcmds
    profile = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    settings = _settings(workflow_copy, ["--cores", "all"], monkeypatch)
    for key in ("printshellcmds", "rerun-incomplete", "show-failed-logs"):
        assert profile[key] is True and settings[key.replace("-", "_")] is True, key


def test_without_the_profile_nothing_is_applied(workflow_copy, monkeypatch):
    output = _dry_run(workflow_copy, "--cores", "1", "--workflow-profile", "none")
    assert "Using workflow specific profile" not in output and "Shell command:" not in output
    assert not _settings(workflow_copy, ["--cores", "1", "--workflow-profile", "none"], monkeypatch)["rerun_incomplete"]


@pytest.mark.parametrize("given", ["slurm", "workflow/profiles/slurm"])
def test_the_slurm_profile_is_found_by_name_or_path(workflow_copy, monkeypatch, given):
    output = _dry_run(workflow_copy, "--workflow-profile", given)
    assert f"Using workflow specific profile {'profiles/' if given == 'slurm' else ''}{given}" in output
    settings = _settings(workflow_copy, ["--workflow-profile", given], monkeypatch)
    assert settings["executor"] == "slurm" and settings["retries"] == 1 and settings["latency_wait"] == 60
