"""The whole run, timed: a workflow's wall time and each rule's share, from Snakemake's ``benchmarks/`` tables.

Every rule writes ``benchmarks/<rule>[/<wildcards>].tsv`` (Snakemake's ``benchmark:`` directive: seconds, peak RSS,
CPU time of the job). This script either runs a config from nothing in a fresh copy of the workflow and times it,
or reads the tables of a finished run, and prints one row per rule: jobs, job-seconds (the sum over its jobs),
the longest job, CPU seconds and the largest peak RSS, longest first.

    python bench/bench_run.py --out bench/results/default_run                    # the default run, from nothing
    python bench/bench_run.py --out bench/results/gt --configfile config/ground_truth_small.yaml \\
        --target results/analysis/ground_truth_recovery.csv
    python bench/bench_run.py --existing PATH/TO/A/FINISHED/RUN                   # summarize, run nothing
    python bench/bench_run.py --existing RUN --noop 3 --configfile ...           # and time 3 no-op reruns of it

A no-op rerun (``--noop N``) runs ``snakemake`` on the finished run as a user would after changing nothing: it must
schedule no job, and its wall time is the cost of every Snakemake start (parsing the workflow, building the DAG,
checking the files); the median of N is printed.

Job-seconds add up to more than the wall time where jobs ran side by side. The README's run times come from it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "envs")
COLUMNS = ["rule", "jobs", "job_s", "longest_job_s", "cpu_s", "peak_rss_mib"]


def rule_times(run: Path) -> pd.DataFrame:
    """One row per rule of a finished run, from its ``benchmarks/`` tables, longest first.

    Parameters
    ----------
    run : Path
        The workflow folder (``benchmarks/`` in it).

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`: the rule (the table's first path component), its jobs, the sum and the maximum of
        their wall seconds, the sum of their CPU seconds and the largest peak RSS (MiB).
    """
    folder = run / "benchmarks"
    tables = sorted(folder.rglob("*.tsv"))
    if not tables:
        raise FileNotFoundError(f"no benchmark tables under {folder}: is {run} a finished workflow run?")
    rows = []
    for table in tables:
        timing = pd.read_csv(table, sep="\t")
        rule = table.relative_to(folder).parts[0].removesuffix(".tsv")
        rows.append({"rule": rule, "s": float(timing["s"].iloc[-1]),
                     "cpu_time": float(pd.to_numeric(timing.get("cpu_time", pd.Series([0.0]))).iloc[-1]),
                     "max_rss": float(pd.to_numeric(timing["max_rss"], errors="coerce").iloc[-1])})
    jobs = pd.DataFrame(rows)
    summary = jobs.groupby("rule").agg(jobs=("s", "size"), job_s=("s", "sum"), longest_job_s=("s", "max"),
                                       cpu_s=("cpu_time", "sum"), peak_rss_mib=("max_rss", "max")).reset_index()
    return summary.sort_values("job_s", ascending=False, ignore_index=True)[COLUMNS]


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule ([\w-]+):$")  # a generated rule may name a dataset with a hyphen
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
THREADS = re.compile(r"^\s+threads: (\d+)$")
BENCHMARK = re.compile(r"^\s+benchmark: benchmarks/([^/]+?)(?:\.tsv)?(?:/.*)?$")
FINISHED = re.compile(r"^Finished jobid: (\d+) ")


def job_timeline(log: Path) -> pd.DataFrame:
    """Each job's start and end (seconds after the first job started) from a Snakemake log.

    Snakemake stamps every event to the second (``[Fri Dec  4 18:37:02 2026]``), then names the rule and its
    ``jobid`` when a job starts, and ``Finished jobid: N`` when it ends; ``threads:`` appears only above one. A job
    is named as in :func:`rule_times`, by its benchmark table's first path component: the generated rules of one
    stage (``preprocess_fovs_<dataset>_<group>``) share theirs.

    Parameters
    ----------
    log : Path
        One ``.snakemake/log/*.snakemake.log`` of the run.

    Returns
    -------
    DataFrame
        Columns ``rule``, ``threads``, ``start``, ``end``; one row per finished job.
    """
    stamp, jobs, job, ends = None, {}, None, {}
    for line in log.read_text().splitlines():
        if match := STAMP.match(line):
            stamp = pd.Timestamp(match.group(1)).timestamp()
        elif match := STARTED.match(line):
            job = {"rule": match.group(1), "threads": 1, "start": stamp}
        elif (match := JOB_ID.match(line)) and job is not None:
            jobs[int(match.group(1))] = job
        elif (match := THREADS.match(line)) and job is not None:
            job["threads"] = int(match.group(1))
        elif (match := BENCHMARK.match(line)) and job is not None:
            job["rule"] = match.group(1)
        elif match := FINISHED.match(line):
            ends[int(match.group(1))] = stamp
            job = None
    rows = [dict(job, end=ends[jobid]) for jobid, job in jobs.items() if jobid in ends]
    if not rows:
        raise ValueError(f"no finished job in {log}: is it a Snakemake log?")
    timeline = pd.DataFrame(rows)
    first = timeline["start"].min()
    timeline[["start", "end"]] -= first
    return timeline.sort_values("start", ignore_index=True)


def busy_threads(timeline: pd.DataFrame, *, cores: int, bin_s: float = 30.0) -> pd.DataFrame:
    """The threads the run kept busy in each interval, and the rule that held most of them.

    Parameters
    ----------
    timeline : DataFrame
        :func:`job_timeline`'s table.
    cores : int
        The cores the run was given (a job's threads are capped to it, as Snakemake does).
    bin_s : float
        Interval length in seconds.

    Returns
    -------
    DataFrame
        Columns ``from_s``, ``busy`` (mean threads in use, at most ``cores``) and ``mostly`` (the rule with the most
        thread-seconds in the interval).
    """
    rows = []
    end = timeline["end"].max()
    for left in range(0, int(end) + 1, int(bin_s)):
        right = left + bin_s
        overlap = (timeline["end"].clip(upper=right) - timeline["start"].clip(lower=left)).clip(lower=0)
        thread_s = overlap * timeline["threads"].clip(upper=cores)
        by_rule = thread_s.groupby(timeline["rule"]).sum()
        rows.append({"from_s": left, "busy": min(thread_s.sum() / bin_s, cores),
                     "mostly": by_rule.idxmax() if by_rule.max() > 0 else "-"})
    return pd.DataFrame(rows)


def copy_workflow(source: Path, folder: Path) -> None:
    """Copy the workflow's files (:data:`WORKFLOW_FILES`) of the checkout ``source`` into the new folder ``folder``."""
    folder.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        (shutil.copytree if (source / name).is_dir() else shutil.copy)(source / name, folder / name)


def timed_run(command: list[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``command`` (in ``cwd``, with this process's environment updated by ``env``), capturing its output; its
    wall seconds and the finished process."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)
    return time.perf_counter() - start, done


def run_workflow(folder: Path, *, cores: int, configfiles: list[str], targets: list[str]) -> float:
    """Run the workflow from nothing in a fresh copy in ``folder``; its wall time in seconds."""
    if folder.exists():
        shutil.rmtree(folder)
    copy_workflow(ROOT, folder)
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", str(cores)]
    if configfiles:
        command += ["--configfile", *configfiles]
    print(" ".join(command), flush=True)
    seconds, done = timed_run(command, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake failed (logs under {folder}/logs):\n{done.stderr[-3000:]}")
    return seconds


def noop_rerun_seconds(folder: Path, *, cores: int, configfiles: list[str], targets: list[str]) -> float:
    """Wall seconds of one rerun of a finished run that must do nothing (it fails if it scheduled a job)."""
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", str(cores)]
    command += ["--configfile", *configfiles] if configfiles else []
    seconds, run = timed_run(command, cwd=folder)
    said = run.stdout + run.stderr
    if run.returncode != 0 or "Nothing to be done" not in said:
        raise RuntimeError(f"the rerun in {folder} was no no-op:\n{said[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--existing", type=Path, help="a finished run to summarize (nothing is run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "run",
                        help="folder of the run (emptied first)")
    parser.add_argument("--configfile", nargs="*", default=[], help="config files, as snakemake takes them")
    parser.add_argument("--target", nargs="*", default=[], help="targets (default: the default target)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--noop", type=int, default=0, metavar="N", help="then time N no-op reruns of the run")
    args = parser.parse_args()
    if args.existing:
        folder, wall = args.existing, None
    else:
        folder = args.out
        wall = run_workflow(folder, cores=args.cores, configfiles=args.configfile, targets=args.target)
    table = rule_times(folder)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    total = table["job_s"].sum()
    print(f"\n{int(table['jobs'].sum())} jobs, {total / 60:.1f} job-minutes", end="")
    print(f"; wall {wall / 60:.1f} min on {args.cores} cores" if wall is not None else "")
    # the run's own log is the longest (a no-op rerun writes a short one)
    logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda path: path.stat().st_size)
    if logs:
        profile = busy_threads(job_timeline(logs[-1]), cores=args.cores)
        print(f"\nthreads in use per 30 s (of {args.cores}), from {logs[-1].name}:")
        print(profile.to_string(index=False, float_format=lambda value: f"{value:.2f}"))
        print(f"mean {profile['busy'].mean():.2f} of {args.cores}")
    if args.noop:
        seconds = [noop_rerun_seconds(folder, cores=args.cores, configfiles=args.configfile, targets=args.target)
                   for _ in range(args.noop)]
        print(f"no-op rerun: {', '.join(f'{value:.1f}' for value in seconds)} s (median "
              f"{sorted(seconds)[len(seconds) // 2]:.1f} s)")


if __name__ == "__main__":
    main()
