"""Shared fixtures: a tiny synthetic colony that every test can afford."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from statcell import synth
from statcell.config import validate_config


def worker_cores() -> int:
    """This test process's share of the machine's cores: all of them divided among the pytest-xdist workers.

    Torch in the test process uses this many threads, and so does every job of a ``snakemake`` a test starts
    (:func:`snakemake_cpu_options`): two workers that each ran torch on both cores of a 2-core machine would
    oversubscribe it, and torch's OpenMP threads, which spin while they wait, then run a training step 2-4 times
    slower (``bench/bench_threads.py``).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def snakemake_cpu_options() -> list[str]:
    """``snakemake`` options for a test's run: every core for jobs side by side, each job at most
    :func:`worker_cores` threads. Single-threaded jobs share a busy machine fairly; it is multi-threaded torch
    jobs that lose far more than their share (see :func:`worker_cores`). So a run that ends up alone still uses
    every core: the ground-truth run trains its two models side by side."""
    return ["--cores", str(os.cpu_count() or 1), "--max-threads", str(worker_cores())]


def pytest_configure(config: pytest.Config) -> None:
    """Give torch in this process, and in the processes it starts, its share of the cores (``snakemake`` sets each
    job's own from ``--max-threads``). Torch's results depend on its thread count, so a training run a test kills
    and one it resumes in-process must have the same."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(worker_cores())
    torch.set_num_threads(worker_cores())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``longest`` test first, then the fast tests, then the other end-to-end (``slow``) tests: those that mostly
    wait (``waits``) first, then the rest, each in file order.

    pytest-xdist's ``loadgroup`` hands out work units (a test, or every test of one ``xdist_group``) largest group
    first, then in this order, and gives a worker its next unit while its current one runs. So one worker takes the
    tiny runs' group and the other the longest test, which alone lasts about as long as everything else together;
    the unit queued behind it is a fast test. A suite that queued the longest test behind two other end-to-end tests
    started its run 4.4 minutes late and ended with it (README, *Measured*). Within the tiny runs' group the tests
    that wait go first: they wait while the longest test generates and preprocesses its colony, and the tests that
    compute then take the cycles its training leaves.
    """
    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("longest") is not None:
            return 0, 0
        if item.get_closest_marker("slow") is None:
            return 1, 0
        return 2, 0 if item.get_closest_marker("waits") is not None else 1

    items.sort(key=rank)


#: How much a worker lowers its CPU priority (its niceness, inherited by what it starts) once it runs a test other
#: than the ``longest`` one. Under Linux's scheduler a process at niceness 10 gets about a tenth of the share of one
#: at 0, so the longest test, the suite's critical path, gets the cores it can use first, and the other tests take
#: the cycles it leaves (one core while its colony is generated, the gaps between its jobs).
YIELDING_NICENESS = 10


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test's fixtures: a pytest-xdist worker that runs anything but the ``longest`` test yields the CPU to
    it, from then on. The worker that takes the longest test starts with it and yields only after it."""
    if "PYTEST_XDIST_WORKER" not in os.environ or item.get_closest_marker("longest") is not None:
        return
    # Linux keeps a niceness per thread: set it on every thread of the worker (torch's included)
    for thread in Path("/proc/self/task").iterdir() if Path("/proc/self/task").is_dir() else ():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, int(thread.name)) < YIELDING_NICENESS:
                os.setpriority(os.PRIO_PROCESS, int(thread.name), YIELDING_NICENESS)


TINY_SYNTHETIC = {
    "seed": 7,
    "fovs_per_structure": 1,
    "drug_fovs_per_condition": 1,
    "fov_size_um": {"z": 14.0, "y": 30.0, "x": 30.0},
    "mitotic_fraction": 0.3,
}


@pytest.fixture(scope="session")
def tiny_section() -> dict:
    """The ``synthetic`` config section of a tiny colony (all structures, one FOV each, small FOVs)."""
    return validate_config({"synthetic": copy.deepcopy(TINY_SYNTHETIC)})["synthetic"]


@pytest.fixture(scope="session")
def tiny_settings(tiny_section: dict) -> synth.SynthSettings:
    return synth.SynthSettings.from_config(tiny_section)


@pytest.fixture(scope="session")
def tiny_fovs(tiny_settings: synth.SynthSettings) -> dict[str, synth.SyntheticFov]:
    """Every planned FOV of the tiny colony, generated once per test session, by FOV id."""
    return {plan.fov_id: synth.synthesize_fov(plan, tiny_settings) for plan in synth.plan_fovs(tiny_settings)}


def fov_of(fovs: dict[str, synth.SyntheticFov], structure: str, drug: str = "") -> synth.SyntheticFov:
    """The first FOV of a structure (and treatment)."""
    name = f"{drug}_{structure}_00" if drug else f"{structure}_00"
    return fovs[name]


TINY_CELL_SHAPE = (8, 8, 16)  # (Z, Y, X) voxels
TINY_STRUCTURES = ("control_dna", "control_membrane", "nucleoli")
TINY_VOXEL_UM = 1.0


def _tiny_cell(rng, *, structure: str, mitotic: bool) -> tuple[np.ndarray, dict]:
    """One constructed cell (membrane shell, nucleus, structure, masks) of shape ``(5, 8, 8, 16)`` and its measures."""
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in TINY_CELL_SHAPE), indexing="ij")
    height, width = rng.uniform(2.5, 3.8), rng.uniform(4.5, 7.5)
    cell = (z / height) ** 2 + (y / 3.5) ** 2 + (x / width) ** 2 <= 1
    radius = rng.uniform(1.5, 2.5) * (0.7 if mitotic else 1.0)
    shift = rng.uniform(-1.0, 1.0)
    nucleus = (z / radius) ** 2 + (y / radius) ** 2 + ((x - shift) / (radius * 1.3)) ** 2 <= 1
    from scipy import ndimage

    membrane = (cell & ~ndimage.binary_erosion(cell)).astype(np.float32)
    dna = nucleus.astype(np.float32) * (1.0 if not mitotic else 1.5)
    structure_image = {"control_dna": dna, "control_membrane": membrane,
                       "nucleoli": (((z / 0.8) ** 2 + (y / 0.8) ** 2 + ((x - shift) / 0.8) ** 2) <= 1)}[structure]
    image = np.stack([membrane, dna, structure_image.astype(np.float32), cell, nucleus]).astype(np.float32)
    image[:3] = np.clip(image[:3] + rng.normal(0, 0.02, image[:3].shape), 0, None)
    image[:3] /= image[:3].max(axis=(1, 2, 3), keepdims=True)
    measures = {"cell_volume_um3": float(cell.sum()), "nucleus_volume_um3": float(nucleus.sum()),
                "cell_height_um": float(2 * height), "nucleus_height_um": float(2 * radius)}
    return image, measures


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Constructed stores of a tiny training set and drug set, and tiny trained reference and target models.

    The training set holds 16 cells of each of three structures (a DNA copy, a membrane copy, a sphere at the
    nucleus centre) in 4 FOVs each, 12% mitotic, split 12/2/2 per structure; the drug set 12 cells of ``nucleoli``
    per treatment (``vehicle``, ``drug_a``) in 3 FOVs each. The models train for 3 epochs (seconds): enough to test
    the analyses' plumbing, not their science.

    Returns
    -------
    dict
        Paths ``store``, ``cells`` (training set), ``drug_store``, ``drug_cells``, ``reference``, ``target``
        (checkpoints), ``folder``.
    """
    import dataclasses

    import zarr

    from statcell import io, train

    folder = tmp_path_factory.mktemp("tiny_models")
    rng = np.random.default_rng(11)

    def write_dataset(name: str, plan: list[tuple[str, str, str]], fovs: int) -> None:
        images, rows = [], []
        for index, (structure, drug, split) in enumerate(plan):
            mitotic = rng.random() < 0.12
            image, measures = _tiny_cell(rng, structure=structure, mitotic=mitotic)
            images.append(image)
            fov_id = f"{drug + '_' if drug else ''}{structure}_{index % fovs:02d}"
            rows.append({"cell_id": f"{name}/{structure}_{drug or 'none'}/{index}", "dataset": name, "split": split,
                         "store_index": index, "fov_id": fov_id,
                         "structure": structure, "drug": drug, "is_mitotic": mitotic,
                         "mitotic_stage": "prometaphase" if mitotic else "interphase", **measures})
        root = zarr.open_group(folder / f"{name}.zarr", mode="w", zarr_format=3)
        root.attrs.update({"ome": {"multiscales": [{"datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, TINY_VOXEL_UM, TINY_VOXEL_UM, TINY_VOXEL_UM]}]}]}]}})
        root.create_array("0", data=np.stack(images), chunks=(1, 5, *TINY_CELL_SHAPE))
        io.write_table(pd.DataFrame(rows), folder / f"{name}.parquet")

    splits = ["train"] * 12 + ["val"] * 2 + ["test"] * 2
    write_dataset("main", [(structure, "", split) for structure in TINY_STRUCTURES for split in splits], fovs=4)
    write_dataset("drugs", [("nucleoli", drug, "test") for drug in ("vehicle", "drug_a") for _ in range(12)], fovs=3)
    for kind in ("reference", "target"):
        settings = dataclasses.replace(train.TrainSettings.from_config(validate_config({})["training"], kind),
                                       widths=(8, 16), latent_dim=6, batch_size=8, epochs=3)
        train.train_model(kind, store=folder / "main.zarr", cells=folder / "main.parquet", settings=settings,
                          checkpoint=folder / f"{kind}.ckpt", metrics=folder / f"{kind}_metrics.csv",
                          workdir=folder / "work")
    return {"folder": folder, "store": folder / "main.zarr", "cells": folder / "main.parquet",
            "drug_store": folder / "drugs.zarr", "drug_cells": folder / "drugs.parquet",
            "reference": folder / "reference.ckpt", "target": folder / "target.ckpt"}
