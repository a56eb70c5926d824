"""The real Snakemake workflow on a tiny configuration: dry run, lint, a full run, stale-only reruns, determinism and
config errors.

One tiny full run (synthesis to the last figure) is made once per test session (:func:`tiny_full_run`) and shared
with ``tests/test_faults.py``; tests that change anything work on a copy of it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from statcell import io
from statcell.analysis.meshes import GOOD_ANGLE_DEG
from statcell.config import validate_config
from tests.conftest import snakemake_cpu_options

ROOT = Path(__file__).resolve().parents[1]
# Three structures (one FOV each; the drug set's among them, so the target model embeds the drug set) and a
# two-condition drug set: ~45 training-set cells, at least 5 in validation; tiny networks trained for 3 epochs (so a
# killed training has a checkpoint to resume from). Two FOVs per preprocessing job: the training set's three FOVs are
# two jobs, one of them a single FOV.
TINY = {
    "data": {"fovs_per_job": 2},
    "synthetic": {
        "seed": 3,
        "structures": ["nucleoli", "control_membrane", "microtubules"],
        "fovs_per_structure": 1,
        "drug_structures": ["microtubules"],
        "drug_treatments": ["vehicle", "paclitaxel"],
        "drug_fovs_per_condition": 1,
        "fov_size_um": {"z": 14.0, "y": 48.0, "x": 48.0},
    },
    "training": {"epochs": 3, "widths": [4, 8], "latent_dim": 4, "batch_size": 4},
    "analysis": {"elbo_samples": 2, "top_dimensions": 2, "walk_steps": 3, "walk_dimensions": 1,
                 "generated_per_structure": 1, "examples_per_structure": 1, "generated_cells": 4, "coupling_copies": 2,
                 "resampling_iterations": 100, "permutations": 100, "trajectory_steps": 2},
    "beta_sweep": {"count": 2, "epochs": 1},
    # 3 cells per built control class (auto takes the median class, ~15): the controls are built, and cheaply
    "normalize": {"control_cells": 3},
    # whether a browser is installed must not change the tiny runs' jobs (test_explorer installs one mid-session)
    "figures": {"explorer": {"screenshot": False}},
}
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "envs")
PREPROCESSING = {"synthesize", "preprocess_fovs", "normalize_cells", "project_colony", "plot_colony_overview"}


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 2400,
              longest: bool = False) -> subprocess.CompletedProcess:
    """Run ``snakemake *args`` in a workflow copy (cores and threads: :func:`tests.conftest.snakemake_cpu_options`,
    of the ``longest`` test's run if so), with ``tiny.yaml`` unless other config files are given."""
    # Targets come first: everything after --configfile is read as a config file.
    configfiles = () if "--configfile" in args else ("--configfile", "tiny.yaml")
    command = [sys.executable, "-m", "snakemake", *args, *snakemake_cpu_options(longest=longest), *configfiles]
    started = time.time()
    run = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
                             f"{_job_logs_since(workdir, started)}")
    return run


def _job_logs_since(workdir: Path, started: float, characters: int = 4000) -> str:
    """The end of every job log written since ``started``: what a failed job printed, for the failure message."""
    logs = sorted(log for log in (workdir / "logs").rglob("*.log") if log.stat().st_mtime >= started)
    return "".join(f"\n--- {log.relative_to(workdir)} (end) ---\n{log.read_text(errors='replace')[-characters:]}"
                   for log in logs)


def copy_workflow(folder: Path) -> Path:
    """A fresh copy of the workflow with ``tiny.yaml`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return folder


def tiny_full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workflow run to completion (default target), made once per test session; do not modify it."""
    base = tmp_path_factory.getbasetemp()
    folder, done, failed = base / "tiny_full_run", base / "tiny_full_run.done", base / "tiny_full_run.failed"
    if failed.exists():  # tried once this session: report that failure again rather than run again
        raise AssertionError(failed.read_text())
    if not done.exists():
        try:
            snakemake(copy_workflow(folder))
        except (AssertionError, subprocess.TimeoutExpired) as error:
            failed.write_text(str(error))
            raise
        done.touch()
    return folder


def copy_run(source: Path, folder: Path) -> Path:
    """A copy of a workflow folder, outputs, modification times and Snakemake's records included."""
    shutil.copytree(source, folder, symlinks=True)
    return folder


@dataclass(frozen=True)
class Job:
    """One job of a dry run."""

    rule: str
    wildcards: str
    reason: str

    @property
    def stage(self) -> str:
        """The rule, the generated preprocessing rules (``preprocess_fovs_<dataset>_<group>``) as one."""
        return "preprocess_fovs" if self.rule.startswith("preprocess_fovs_") else self.rule


def scheduled_jobs(dry_run: str) -> set[Job]:
    """The jobs a ``snakemake -n`` output lists (the aggregating ``all`` job left out)."""
    jobs = set()
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", dry_run, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", block, flags=re.MULTILINE))
        if rule != "all":
            jobs.add(Job(rule, fields.get("wildcards", ""), fields.get("reason", "")))
    return jobs


def result_files(folder: Path, *, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files under ``results/`` ending in one of ``suffixes``, by path relative to ``folder``; Zarr stores are
    listed file by file."""
    return {str(path.relative_to(folder)): path for path in sorted((folder / "results").rglob("*"))
            if path.is_file() and (path.name.endswith(suffixes) or ".zarr/" in str(path))}


def keep_as_second_run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the results of another complete tiny run (e.g. test_slurm's) for the determinism check, sparing it a run."""
    shutil.copytree(folder / "results", tmp_path_factory.getbasetemp() / "tiny_second_run" / "results")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    return tiny_full_run(tmp_path_factory)


#: With pytest-xdist, the tests that share the tiny run (here, test_faults') or compare with test_slurm's run go to
#: one worker, in file order, so the run is made once and test_slurm's is there when the determinism test looks.
on_tiny_runs = pytest.mark.xdist_group("tiny_runs")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A copy of the workflow, nothing run."""
    return copy_workflow(tmp_path_factory.mktemp("fresh"))


@pytest.mark.slow
def test_dry_run_and_lint_are_clean(fresh):
    dry = snakemake(fresh, "-n")
    for rule in ("synthesize", "preprocess_fovs_main_000", "preprocess_fovs_main_001", "preprocess_fovs_drugs_000",
                 "normalize_cells", "train_reference", "train_target"):
        assert f"rule {rule}:" in dry.stdout
    lint = snakemake(fresh, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr


def _preprocessing_resources(dry_run: str) -> dict[str, str]:
    """Each preprocessing group's ``resources:`` line in a dry run, by rule."""
    return {match.group(1): match.group(2) for match in re.finditer(
        r"^(?:local)?rule (preprocess_fovs_\w+):\n(?:\s+\w+: .*\n)*?\s+resources: (.*)$", dry_run, re.MULTILINE)}


@pytest.mark.slow
def test_set_resources_for_the_preprocessing_stage_reaches_every_group(fresh):
    """Each group is a rule of its own: `set-resources` under the stage's name, `preprocess_fovs`, sets them all."""
    default = _preprocessing_resources(snakemake(fresh, "-n").stdout)
    assert set(default) == {"preprocess_fovs_main_000", "preprocess_fovs_main_001", "preprocess_fovs_drugs_000"}
    assert "runtime=60, mem_mb=3000" in default["preprocess_fovs_main_000"]  # 30 min per FOV, 2 FOVs
    assert "runtime=30, mem_mb=3000" in default["preprocess_fovs_main_001"]
    dry = snakemake(fresh, "-n", "--set-resources", "preprocess_fovs:mem_mb=8000", "preprocess_fovs:runtime=2h")
    assert all("runtime=120, mem_mb=8000" in line for line in _preprocessing_resources(dry.stdout).values())
    assert "mem_mb=8000" not in dry.stdout.split("rule normalize_cells:")[1].split("\n\n")[0]


@pytest.mark.slow
def test_a_colony_without_a_drug_set_plans_no_drug_jobs(fresh):
    """``synthetic.drug_structures: []`` (a colony with no drug set, as config/gpu_check.yaml has) is a valid run: the
    drug set's FOVs, stores and analyses are left out, everything else is planned."""
    (fresh / "no_drugs.yaml").write_text(yaml.safe_dump({"synthetic": {"drug_structures": []}}))
    dry = snakemake(fresh, "-n", "--configfile", "tiny.yaml", "no_drugs.yaml")
    jobs = scheduled_jobs(dry.stdout)
    assert {"preprocess_fovs_main_000", "train_target", "measure_coupling"} <= {job.rule for job in jobs}
    assert not [job for job in jobs if "drugs" in job.wildcards or "drug" in job.rule]
    # a drug figure named as the target: refused before any job, saying why
    named = snakemake(fresh, "-n", "results/figures/drug_trajectory.png", "--configfile", "tiny.yaml", "no_drugs.yaml",
                      check=False)
    assert named.returncode != 0
    assert "the run has no FOVs of the dataset 'drugs' (no drug set" in named.stdout + named.stderr


@pytest.mark.slow
def test_parsing_the_workflow_imports_neither_torch_nor_the_imaging_stack(fresh):
    """Every Snakemake start parses the workflow (a no-op rerun, and each cluster job twice): torch's import, 2-4 s, is
    left to the jobs that train or embed, and the imaging stack's (scipy.ndimage, scipy.spatial, scikit-image; 0.2-0.3
    s) to the jobs that segment, crop or draw cells."""
    parse = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--configfile", "tiny.yaml"],
                           cwd=fresh, capture_output=True, text=True, timeout=300)
    assert parse.returncode == 0, parse.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in parse.stderr.splitlines() if line.startswith("import time:")}
    assert "snakemake.workflow" in imported and "statcell.config" in imported
    assert not {name for name in imported if name.split(".")[0] in ("torch", "lightning", "skimage")}
    assert not {name for name in imported if name.startswith(("scipy.ndimage", "scipy.spatial"))}


@pytest.mark.slow
def test_the_jobs_that_run_the_networks_take_half_the_cores(fresh):
    """The two trainings, and the analyses of the trained models, run side by side (rules/common.smk)."""
    networks = ("train_reference", "train_target", "embed_cells", "measure_coupling", "generate_cells")

    def threads_of(cores: int) -> dict[str, set[int]]:
        targets = ["train_reference", "train_target", "measure_coupling", "generate_cells",
                   "results/main/embeddings/target.parquet"]
        dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", *targets, "--cores", str(cores),
                              "--workflow-profile", "none", "--configfile", "tiny.yaml"], cwd=fresh,
                             capture_output=True, text=True, check=True).stdout
        threads: dict[str, set[int]] = {}
        for block in re.split(r"^(?=rule \w+:$)", dry, flags=re.MULTILINE)[1:]:
            rule = re.match(r"rule (\w+):", block).group(1)
            found = re.search(r"^\s+threads: (\d+)$", block, flags=re.MULTILINE)
            threads.setdefault(rule, set()).add(int(found.group(1)) if found else 1)  # printed above 1 only
        return {rule: threads[rule] for rule in networks}

    assert threads_of(8) == {rule: {4} for rule in networks}
    assert threads_of(2) == {rule: {1} for rule in networks}


@pytest.mark.slow
def test_a_local_run_drops_only_snakemakes_default_job_rate_limit(tmp_path):
    """Snakemake's default limit re-runs its scheduler in growing numbers while jobs wait for cores (rules/common.smk,
    ``drop_idle_rescheduling``); a limit the user sets is kept."""
    folder = copy_workflow(tmp_path / "run")
    dropped = "default job-rate limit dropped"
    target = "results/synthetic/main_manifest.csv"
    assert dropped in snakemake(folder, target).stderr
    assert dropped not in snakemake(folder, target, "--forcerun", "synthesize",
                                    "--max-jobs-per-timespan", "50/1s").stderr


@pytest.mark.slow
@on_tiny_runs
def test_full_run_builds_the_colony_the_stores_and_the_models(full_run, tmp_path):
    outdir = full_run / "results" / "synthetic"
    manifest = io.read_manifest(outdir / "main_manifest.csv")
    drugs = io.read_manifest(outdir / "drugs_manifest.csv")
    assert list(manifest["fov_id"]) == ["nucleoli_00", "control_membrane_00", "microtubules_00"]
    assert list(drugs["fov_id"]) == ["vehicle_microtubules_00", "paclitaxel_microtubules_00"]
    image = io.read_image(manifest.loc[0, "path"])
    assert image.data.shape == (3, 48, 222, 222)
    assert image.channel_names == ("membrane", "dna", "nucleoli")
    truth = pd.read_parquet(outdir / "ground_truth" / "cells.parquet")
    assert set(truth["fov_id"]) == set(manifest["fov_id"]) | set(drugs["fov_id"])
    assert (full_run / "logs" / "synthesize.log").read_text().count("synthesized FOV") == 5
    assert (full_run / "benchmarks" / "synthesize.tsv").is_file()
    for figure in ("colony_overview.png", "model_check.png"):
        assert (full_run / "results" / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The single-cell dataset: a store and a table that agree, annotations joined from the ground truth.
    import zarr

    for dataset in ("main", "drugs"):
        cells = pd.read_parquet(full_run / "results" / dataset / "cells.parquet")
        store = zarr.open_array(full_run / "results" / dataset / "cells.zarr" / "0", mode="r")
        assert len(cells) > 0 and store.shape == (len(cells), 5, 16, 16, 24) and store.dtype == "uint8"
        assert list(cells["store_index"]) == list(range(len(cells)))
        assert cells["mitotic_stage"].notna().all() and (cells["truth_iou"] > 0.7).all()
        first = io.read_cells(store, [0], channels=None)[0]
        assert 0 <= first[:3].min() and first[:3].max() <= 1 and first[3].sum() > 0
        rejects = pd.read_parquet(full_run / "results" / dataset / "rejects.parquet")
        assert "touches_fov_border" in set(rejects["reject_reason"])
    drugs = pd.read_parquet(full_run / "results" / "drugs" / "cells.parquet")
    assert set(drugs["drug"]) == {"vehicle", "paclitaxel"}

    from statcell import train

    for kind in ("reference", "target"):
        _, hparams = train.load_model(full_run / "results" / "models" / f"{kind}.ckpt")
        assert hparams["kind"] == kind and hparams["config"]["latent_dim"] == TINY["training"]["latent_dim"]
        metrics = pd.read_csv(full_run / "results" / "models" / f"{kind}_metrics.csv")
        assert list(metrics["epoch"]) == list(range(TINY["training"]["epochs"]))
    reconstruction = pd.read_csv(full_run / "results" / "models" / "reconstruction.csv")
    test_cells = pd.read_parquet(full_run / "results" / "main" / "cells.parquet").query("split == 'test'")
    structures = train.load_model(full_run / "results" / "models" / "target.ckpt")[1]["structures"]
    assert set(zip(reconstruction["model"], reconstruction["structure"])) == (
        {("reference", "all")} | {("target", structure) for structure in structures})  # every one, tested or not
    tested = reconstruction.set_index("structure").loc[list(structures), "cells"]
    assert (tested > 0).to_dict() == {structure: structure in set(test_cells["structure"]) for structure in structures}
    assert "median reconstruction r" in (full_run / "logs" / "check_models.log").read_text()
    meshes = pd.read_csv(full_run / "results" / "meshes" / "quality.csv", keep_default_na=False, na_values=[""])
    assert set(meshes["kind"]) == {"real", "reconstruction", "generated", "representative"}
    written = meshes[meshes["path"].notna()]
    assert written["watertight"].all() and len(written) >= 10
    assert written["volume_ratio"].between(0.99, 1.01).all()
    remeshed = written[written["remeshed_surfaces"] == written["bodies"]]  # a tiny cell's part may stay as traced
    assert (remeshed["part"] == "cell").any() and (remeshed["min_angle_deg"] > GOOD_ANGLE_DEG).all()
    for path in written["path"]:
        assert all((full_run / "results" / "meshes" / f"{path}.{suffix}").stat().st_size > 0
                   for suffix in ("obj", "stl", "ply"))
    predictions = pd.read_csv(full_run / "results" / "predictions" / "predictions.csv", keep_default_na=False)
    assert predictions["source"].iloc[-1] == "generated" and (predictions["source"] == "store").sum() >= 1
    assert all((full_run / "results" / "predictions" / file).stat().st_size > 0 for file in predictions["file"])
    in_silico = pd.read_csv(full_run / "results" / "analysis" / "in_silico" / "summary.csv")
    assert set(in_silico["drug"]) == {"paclitaxel"} and in_silico["decoded_change"].notna().all()

    report = copy_run(full_run, tmp_path / "run")  # the report is written into the folder: use a copy
    snakemake(report, "--report", "report.html")
    html = (report / "report.html").read_text(errors="ignore")
    assert "colony_overview.png" in html and "reconstruction.csv" in html and "quality.csv" in html


@pytest.mark.slow
@on_tiny_runs
def test_the_run_benchmark_sums_each_rules_jobs(full_run):
    """``bench/bench_run.py --existing``: one row per rule that ran, its jobs counted from ``benchmarks/``."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "bench_run.py")
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    table = bench_run.rule_times(full_run).set_index("rule")
    assert table.loc["preprocess_fovs", "jobs"] == 3 and table.loc["synthesize", "jobs"] == 1  # 2 + 1 + 2 FOVs
    assert table.loc["train_target", "job_s"] == table.loc["train_target", "longest_job_s"] > 0
    assert list(table["job_s"]) == sorted(table["job_s"], reverse=True)
    assert (table["peak_rss_mib"] > 0).all()
    shown = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_run.py"), "--existing", str(full_run)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "train_target" in shown.stdout and "job-minutes" in shown.stdout
    assert "threads in use per 30 s" in shown.stdout
    # the timeline from the run's Snakemake log holds the same jobs as the benchmark tables
    log = max((full_run / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda path: path.stat().st_size)
    timeline = bench_run.job_timeline(log)
    jobs = timeline["rule"].value_counts()
    assert all(jobs[rule] == count for rule, count in table["jobs"].items())
    assert (timeline["end"] >= timeline["start"]).all() and timeline["start"].min() == 0
    busy = bench_run.busy_threads(timeline, cores=2)
    assert busy["busy"].between(0, 2).all() and busy["from_s"].iloc[-1] <= timeline["end"].max()
    with pytest.raises(FileNotFoundError, match="no benchmark tables"):
        bench_run.rule_times(full_run / "results")


@pytest.mark.slow
@on_tiny_runs
def test_a_rerun_after_a_full_run_does_nothing(full_run, tmp_path):
    assert "Nothing to be done" in snakemake(full_run, "-n").stdout
    work = copy_run(full_run, tmp_path / "run")
    before = {path: os.stat(path).st_mtime_ns for path in result_files(work, suffixes=("",)).values()}
    start = time.monotonic()
    run = snakemake(work)
    elapsed = time.monotonic() - start
    assert "Nothing to be done" in run.stdout + run.stderr
    assert {path: os.stat(path).st_mtime_ns for path in before} == before
    assert elapsed < 120, f"a no-op rerun took {elapsed:.0f} s"


@pytest.mark.slow
@on_tiny_runs
def test_touching_one_fov_reruns_only_its_preprocessing_job_and_what_depends_on_it(full_run, tmp_path):
    work = copy_run(full_run, tmp_path / "run")
    # What depends on one FOV's segmentation: that job and everything downstream of it, as Snakemake sees it.
    downstream = scheduled_jobs(snakemake(work, "-n", "--forcerun",
                                          "results/main/segmentation/nucleoli_00.ome.tiff").stdout)
    (work / "results" / "synthetic" / "raw" / "nucleoli_00.ome.tiff").touch()
    stale = scheduled_jobs(snakemake(work, "-n").stdout)
    assert {(job.rule, job.wildcards) for job in stale} == {(job.rule, job.wildcards) for job in downstream}
    # the FOV's preprocessing job (it shares it with the next FOV) and not the training set's other one
    assert {job.rule for job in stale if job.stage == "preprocess_fovs"} == {"preprocess_fovs_main_000"}
    assert {job.wildcards for job in stale if job.rule == "normalize_cells"} == {"dataset=main"}
    assert {"train_reference", "train_target", "plot_model_check"} <= {job.rule for job in stale}
    assert not {"synthesize", "plot_colony_overview"} & {job.rule for job in stale}


@pytest.mark.slow
@on_tiny_runs
def test_changing_beta_reruns_training_and_analyses_but_not_preprocessing(full_run, tmp_path):
    def changed_by(beta) -> set[str]:
        path = tmp_path / "beta.yaml"
        path.write_text(yaml.safe_dump({"training": {**TINY["training"], "beta": beta}}))
        return {job.stage for job in scheduled_jobs(snakemake(full_run, "-n", "--configfile", "tiny.yaml",
                                                              str(path)).stdout)}

    both = changed_by(0.5)
    reference_only = changed_by({**validate_config({})["training"]["beta"], "reference": 0.5})
    retrained = scheduled_jobs(snakemake(full_run, "-n", "--forcerun", "train_reference", "train_target").stdout)
    assert {"train_reference", "train_target", "plot_model_check"} <= both
    # Everything downstream of the models reruns, and nothing upstream of them.
    assert {job.rule for job in retrained} <= both
    assert not PREPROCESSING & both
    # Each model trains at its own β: a change to the reference's leaves the target model as it is.
    assert "train_reference" in reference_only and "train_target" not in reference_only
    assert not PREPROCESSING & reference_only


def _rules_reading(entry: str) -> set[str]:
    """Rules whose params read ``figure_settings(entry)``, found in the rule files."""
    rules = set()
    for path in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+)", path.read_text(), flags=re.MULTILINE):
            if f'figure_settings("{entry}")' in block:
                rules.add(re.match(r"rule (\w+)", block).group(1))
    return rules


@pytest.mark.slow
@on_tiny_runs
def test_changing_a_plot_parameter_redraws_only_the_figures_reading_it(full_run, tmp_path):
    figures = {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["figures"], **TINY["figures"]}
    figures["latent_space"] = {**figures["latent_space"], "point_size": figures["latent_space"]["point_size"] + 5}
    (tmp_path / "point_size.yaml").write_text(yaml.safe_dump({"figures": figures}))
    point_size = str(tmp_path / "point_size.yaml")
    changed = scheduled_jobs(snakemake(full_run, "-n", "--configfile", "tiny.yaml", point_size).stdout)
    assert {job.rule for job in changed} == _rules_reading("latent_space")
    for job in changed:  # each redrawn because its own settings changed, and nothing after it
        assert job.rule.startswith("plot_") and "Params have changed" in job.reason, job


@pytest.mark.slow
@on_tiny_runs
def test_two_runs_with_the_same_seed_give_identical_tables(full_run, tmp_path, tmp_path_factory):
    """The second run is test_slurm's (every job through SLURM) where this session made one, else a local one."""
    second = tmp_path_factory.getbasetemp() / "tiny_second_run"
    if not second.exists():
        second = copy_workflow(tmp_path / "second")
        snakemake(second)
    tables = result_files(full_run, suffixes=(".parquet", ".csv"))
    assert result_files(second, suffixes=(".parquet", ".csv")).keys() == tables.keys()
    assert sum(".zarr/" in name for name in tables) > 2 and sum(name.endswith(".parquet") for name in tables) > 10
    for name, path in tables.items():
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(second / name), pd.read_parquet(path), check_exact=True)
        elif path.suffix == ".csv":
            pd.testing.assert_frame_equal(pd.read_csv(second / name), pd.read_csv(path), check_exact=True)
        else:  # Zarr store files
            assert (second / name).read_bytes() == path.read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("bad, key", [
    ({"synthetic": {"fovs_per_structure": "two"}}, "synthetic.fovs_per_structure"),
    ({"synthetic": {"seeed": 1}}, "synthetic.seeed"),
    ({"predict": {"dataset": "elsewhere"}}, "predict.dataset"),
    ({"training": {"ndim": 2}}, "training.ndim' is 2, but the workflow's models are 3D"),
    ({"crop": {"shape": {"z": 18, "y": 16, "x": 24}}}, "'crop.shape' (z 18, y 16, x 24) must be divisible by 8"),
    ({"meshes": {"edge_length_um": 0.05}}, "'meshes.edge_length_um' is 0.05 µm, under 0.1 of the crop's voxel"),
    ({"synthetic": {"structures": ["golgi", "nucleoli"]}},
     "synthetic.drug_structures holds the structure(s) 'microtubules', 'tight_junctions', which the target model"),
])
def test_bad_config_fails_before_any_job_naming_the_key(fresh, bad, key):
    (fresh / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "bad.yaml"], cwd=fresh,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert key in run.stdout + run.stderr
    assert "rule synthesize" not in run.stdout
