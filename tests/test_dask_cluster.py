"""Normalization on an existing Dask cluster: a scheduler and worker processes started apart from the job, on loopback.

The workers run in another working directory, as they would on other nodes of a cluster, so relative paths handed to
``normalize_cells`` must reach them resolved. The store they write must equal the local run's, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from statcell import normalize
from tests.test_normalize import _write_fov

#: A wait, not a speed check: beside the ground-truth run a worker gets about a tenth of a core (tests/conftest.py).
STARTUP_TIMEOUT_S = 300


def _stop(process: subprocess.Popen) -> None:
    """Stop a process group started by this module (SIGTERM, then SIGKILL)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A ``dask scheduler`` on 127.0.0.1 (free port) and two single-threaded ``dask worker`` processes, each
    started in a folder of its own; yields the scheduler's address."""
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    dask = [str(Path(sys.executable).with_name("dask"))]
    processes = []
    try:
        processes.append(subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=(folder / "scheduler.log").open("w"),
            start_new_session=True))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not scheduler_file.is_file():
            pytest.fail(f"the Dask scheduler did not start:\n{(folder / 'scheduler.log').read_text()}")
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = folder / "workers"
        workers.mkdir()
        processes.append(subprocess.Popen(
            [*dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1", "--local-directory", str(workers)],
            cwd=workers, stdout=subprocess.DEVNULL, stderr=(folder / "workers.log").open("w"),
            start_new_session=True))
        from distributed import Client

        with Client(address, timeout=STARTUP_TIMEOUT_S) as client:
            client.wait_for_workers(2, timeout=STARTUP_TIMEOUT_S)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def _store_files(store: Path) -> dict[str, bytes]:
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*")) if path.is_file()}


def test_normalization_on_a_separate_cluster_writes_the_local_store_byte_for_byte(tmp_path, monkeypatch, cluster,
                                                                                    caplog):
    rng = np.random.default_rng(5)
    names = ["fov_a", "fov_b", "fov_c", "fov_d"]
    for name, count in zip(names, (3, 0, 4, 2)):
        _write_fov(tmp_path, name, count, rng)
    monkeypatch.chdir(tmp_path)  # relative paths, as a Snakemake rule passes them; the workers run elsewhere
    stores = {}
    for run, address in (("local", None), ("cluster", cluster)):
        settings = normalize.NormalizeSettings(scheduler_address=address)
        caplog.clear()
        with caplog.at_level("INFO"):
            normalize.normalize_cells([f"{n}.npz" for n in names], [f"{n}.parquet" for n in names],
                                      store=f"{run}/cells.zarr", cells_table=f"{run}/cells.parquet",
                                      rejects_table=f"{run}/rejects.parquet", dataset="main", voxel_um=0.5,
                                      settings=settings, threads=2)
        if address:
            assert f"using the Dask scheduler at {address} (2 workers)" in caplog.text
        stores[run] = _store_files(tmp_path / run / "cells.zarr")
        assert not (tmp_path / run / "cells.zarr.partial").exists()
    assert len(stores["local"]) == 1 + 1 + 9  # group and array metadata, one chunk per cell
    assert stores["cluster"] == stores["local"]
    for table in ("cells.parquet", "rejects.parquet"):
        assert (tmp_path / "cluster" / table).read_bytes() == (tmp_path / "local" / table).read_bytes()

    from distributed import Client

    with Client(cluster) as client:  # the work ran on the workers, not in this process
        done = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert len(done) == 2 and all(count > 0 for count in done.values())
