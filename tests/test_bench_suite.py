"""bench/bench_suite.py: the busy cores from /proc/stat samples, each test's span from timed pytest-xdist lines."""

from __future__ import annotations

import doctest
import importlib.util
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_suite", Path(__file__).resolve().parents[1] / "bench" / "bench_suite.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_the_examples_in_its_docstrings_hold():
    assert doctest.testmod(bench).failed == 0


def test_busy_cores_per_bucket_from_cumulative_jiffies():
    # 2 cores, 100 jiffies per core-second: the first minute both cores busy (a quarter of it niced), the second idle
    samples = pd.DataFrame({"t": [0.0, 30.0, 60.0, 90.0, 120.0],
                            "busy": [0, 6000, 12000, 12000, 12000],
                            "nice": [0, 1500, 3000, 3000, 3000],
                            "total": [0, 6000, 12000, 18000, 24000]})
    usage = bench.busy_cores(samples, cores=2)
    assert usage["from_s"].tolist() == [0.0, 60.0, 120.0]
    assert usage["busy_cores"].tolist() == [2.0, 1.0, 0.0]  # the 60 s bucket averages 30-60 (busy) and 60-90 (idle)
    assert usage["niced_cores"].tolist() == [0.5, 0.25, 0.0]


def test_each_test_gets_its_worker_outcome_and_the_times_of_its_lines():
    lines = [(0.0, "tests/a.py::slow "), (0.5, "tests/b.py::fast[x y] "),
             (1.0, "[gw1] [ 33%] PASSED tests/b.py::fast[x y] "),
             (9.0, "[gw0] [ 66%] FAILED tests/a.py::slow "),
             (9.0, "[gw1] [100%] PASSED tests/c.py::unseen_start "),
             (9.5, "12.00s call     tests/a.py::slow")]  # the durations section is no start
    spans = bench.timed_tests(lines).set_index("test")
    assert spans.loc["tests/a.py::slow", ["worker", "outcome", "start_s", "seconds"]].tolist() == ["gw0", "FAILED",
                                                                                                  0.0, 9.0]
    assert spans.loc["tests/b.py::fast[x y]", "seconds"] == pytest.approx(0.5)
    assert spans.loc["tests/c.py::unseen_start", "seconds"] == 0.0
    assert len(spans) == 3


def test_a_line_is_timed_when_its_first_characters_arrive():
    read, write = os.pipe()
    lines: list[tuple[float, str]] = []
    began = time.monotonic()

    class Log:
        text = ""

        def write(self, text):
            Log.text += text

        def flush(self):
            pass

    with os.fdopen(read, "rb") as stream:
        reader = threading.Thread(target=bench._timed_lines, args=(stream, began, Log(), lines))
        reader.start()
        os.write(write, b"tests/a.py::one ")  # a worker starts the test: no newline yet
        time.sleep(0.5)
        os.write(write, b"\n[gw0] [100%] PASSED tests/a.py::one \n")
        os.close(write)
        reader.join(timeout=10)
    (started, first), (ended, second) = lines
    assert first == "tests/a.py::one " and second.startswith("[gw0]")
    assert ended - started >= 0.4
    assert Log.text.endswith("PASSED tests/a.py::one \n")


def test_the_command_times_a_pytest_run_and_writes_its_tables(tmp_path, capsys):
    code = bench.main(["--out", str(tmp_path), "--interval", "0.2", "--", "-n", "2",
                       "tests/test_bench_suite.py::test_busy_cores_per_bucket_from_cumulative_jiffies",
                       "tests/test_bench_suite.py::test_each_test_gets_its_worker_outcome_and_the_times_of_its_lines"])
    assert code == 0
    spans = pd.read_csv(tmp_path / "tests.csv")
    assert len(spans) == 2 and set(spans["outcome"]) == {"PASSED"} and spans["worker"].str.match(r"gw\d").all()
    assert (pd.read_csv(tmp_path / "busy_cores.csv")["busy_cores"] <= os.cpu_count()).all()
    printed = capsys.readouterr().out
    assert "core-s" in printed and "longest tests (2 in all)" in printed
