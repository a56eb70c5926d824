"""The test suite, timed: wall time, the machine's busy cores over time, and when each test ran.

CI's time limit is the suite's wall time on 2 cores. ``/usr/bin/time pytest`` counts only pytest and its children, so
it misses work done for the suite by other processes (the SLURM test's jobs run under ``slurmd``). This script runs
``pytest`` (``-v --durations=0``, two workers by the project's settings), and samples ``/proc/stat`` meanwhile, so
it reports both: the CPU seconds of pytest's processes and the busy core-seconds of the whole machine. Every test's
start and end come from the times its ``-v`` lines arrived.

    python bench/bench_suite.py --out DIR                  # the whole suite; DIR gets the log and two tables
    python bench/bench_suite.py --out DIR -- -m "not slow"

It prints the busy cores per minute (with the share at a raised niceness: the workers that yield to the longest
test, ``tests/conftest.py``) and the tests that took longest, with their worker and start. Nothing else should run on
the machine meanwhile. Linux only (``/proc/stat``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S.*?)\s*$")
START = re.compile(r"^((?:tests|statcell|bench)/\S*::.*?)\s*$")


def cpu_jiffies(stat: str) -> tuple[int, int, int]:
    """Busy, niced and total jiffies of all cores from the text of ``/proc/stat``.

    Busy counts user, nice, system, irq and softirq time; total adds idle and iowait.

    Examples
    --------
    >>> cpu_jiffies("cpu  100 20 30 400 5 1 2 0 0 0\\ncpu0 50 10 15 200 2 0 1 0 0 0\\n")
    (153, 20, 558)
    """
    fields = [int(value) for value in stat.splitlines()[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = fields
    busy = user + nice + system + irq + softirq
    return busy, nice, busy + idle + iowait


def busy_cores(samples: pd.DataFrame, cores: int, bucket_s: float = 60.0) -> pd.DataFrame:
    """Mean busy and niced cores per ``bucket_s`` from cumulative jiffy samples.

    Parameters
    ----------
    samples : DataFrame
        Columns ``t`` (seconds since the start), ``busy``, ``nice`` and ``total`` (cumulative jiffies, as
        :func:`cpu_jiffies` reads them).
    cores : int
        Cores of the machine: a fully busy interval counts ``cores``.
    bucket_s : float
        Width of a row, in seconds.

    Returns
    -------
    DataFrame
        ``from_s``, ``busy_cores`` and ``niced_cores``, one row per bucket that holds a sample interval.
    """
    steps = samples.diff().iloc[1:]
    share = cores / steps["total"].where(steps["total"] > 0)
    intervals = pd.DataFrame({"from_s": (samples["t"].iloc[1:] // bucket_s * bucket_s).to_numpy(),
                              "busy_cores": (steps["busy"] * share).to_numpy(),
                              "niced_cores": (steps["nice"] * share).to_numpy()})
    return intervals.groupby("from_s", as_index=False).mean().round(2)


def timed_tests(lines: list[tuple[float, str]]) -> pd.DataFrame:
    """Each test's worker, outcome, start and end from timed ``pytest -v`` lines of pytest-xdist.

    A test's line appears when a worker starts it; its result line (``[gw0] [ 5%] PASSED tests/...``) when it ends.

    Examples
    --------
    >>> timed_tests([(0.0, "tests/a.py::one "), (2.5, "[gw1] [ 50%] PASSED tests/a.py::one ")]).to_dict("records")
    [{'test': 'tests/a.py::one', 'worker': 'gw1', 'outcome': 'PASSED', 'start_s': 0.0, 'end_s': 2.5, 'seconds': 2.5}]
    """
    started: dict[str, float] = {}
    rows = []
    for at, line in lines:
        result = RESULT.match(line)
        if result:
            worker, outcome, test = result.groups()
            start = started.pop(test, at)
            rows.append({"test": test, "worker": worker, "outcome": outcome, "start_s": start, "end_s": at,
                         "seconds": at - start})
            continue
        begun = START.match(line)
        if begun:
            started.setdefault(begun.group(1), at)
    return pd.DataFrame(rows, columns=["test", "worker", "outcome", "start_s", "end_s", "seconds"])


def _timed_lines(stream, began: float, log, lines: list[tuple[float, str]]) -> None:
    """Read ``stream`` as it comes (pytest-xdist prints a test's name without a newline when the test starts), and
    append each line with the time its first characters arrived."""
    pending, pending_at = "", None
    while chunk := os.read(stream.fileno(), 65536):
        text = chunk.decode(errors="replace")
        log.write(text)
        log.flush()
        now = time.monotonic() - began
        for piece in text.splitlines(keepends=True):
            if pending_at is None:
                pending_at = now
            pending += piece
            if pending.endswith("\n"):
                lines.append((pending_at, pending.rstrip("\n")))
                pending, pending_at = "", None
    if pending:
        lines.append((pending_at, pending))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the log, the tables and pytest's tmp")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between /proc/stat samples")
    parser.add_argument("--top", type=int, default=15, help="longest tests to print")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-v", "--durations=0", "-p", "no:cacheprovider",
               f"--basetemp={args.out / 'tmp'}", *args.pytest_args]
    print(" ".join(command), flush=True)
    stat = Path("/proc/stat")
    began = time.monotonic()
    samples = [(0.0, *cpu_jiffies(stat.read_text()))]
    lines: list[tuple[float, str]] = []
    with open(args.out / "pytest.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = threading.Thread(target=_timed_lines, args=(process.stdout, began, log, lines))
        reader.start()
        while process.poll() is None:
            time.sleep(args.interval)
            samples.append((time.monotonic() - began, *cpu_jiffies(stat.read_text())))
        reader.join()
    wall = time.monotonic() - began
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = os.cpu_count() or 1
    usage = busy_cores(pd.DataFrame(samples, columns=["t", "busy", "nice", "total"]), cores)
    spans = timed_tests(lines).sort_values("seconds", ascending=False)
    usage.to_csv(args.out / "busy_cores.csv", index=False)
    spans.to_csv(args.out / "tests.csv", index=False)
    first, last = samples[0], samples[-1]
    machine = (last[1] - first[1]) / max(last[3] - first[3], 1) * cores * wall
    print(f"\npytest exit {process.returncode}; wall {wall / 60:.1f} min on {cores} cores")
    print(f"CPU of pytest and its children: {children.ru_utime + children.ru_stime:,.0f} core-s; the machine was "
          f"busy {machine:,.0f} core-s ({machine / wall:.2f} cores on average)\n")
    print(usage.to_string(index=False))
    print(f"\nlongest tests ({len(spans)} in all):")
    print(spans.head(args.top).round(1).to_string(index=False))
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
