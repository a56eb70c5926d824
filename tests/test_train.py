"""The β-ELBO objective and training from the Zarr store: known answers, determinism, resumption."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from statcell import io, train
from statcell.config import validate_config
from statcell.models.blocks import memory_format, runs_faster_channels_last
from statcell.models.loss import beta_elbo, elbo_estimate, kl_per_dimension

TINY = dataclasses.replace(train.TrainSettings.from_config(validate_config({})["training"], "target"), widths=(4, 8),
                           latent_dim=4, batch_size=4, epochs=2, cache_in_memory=False)


def test_beta_elbo_known_answers():
    x = torch.zeros(3, 1, 2, 2)
    mean, log_var = torch.zeros(3, 5), torch.zeros(3, 5)
    perfect = beta_elbo(x, x, mean, log_var, beta=0.5)
    assert perfect.loss == 0 and perfect.elbo == 0 and perfect.kl_per_dim.shape == (5,)
    off = beta_elbo(x, x + 1.0, mean + 2.0, log_var, beta=0.25)
    assert off.reconstruction == pytest.approx(4.0)  # 4 voxels, error 1 each, per image
    assert off.kl == pytest.approx(5 * 0.5 * 4.0)  # 0.5 * mean**2 per dimension
    assert off.loss == pytest.approx(0.75 * 4.0 + 0.25 * 10.0)
    assert off.elbo == pytest.approx(-14.0)
    with pytest.raises(ValueError, match="beta"):
        beta_elbo(x, x, mean, log_var, beta=1.5)


def test_kl_is_zero_only_at_the_prior():
    assert kl_per_dimension(torch.tensor([[0.0]]), torch.tensor([[0.0]])).item() == 0
    assert kl_per_dimension(torch.tensor([[0.1]]), torch.tensor([[0.3]])).item() > 0


def test_elbo_estimate_averages_the_error_over_samples():
    x = torch.ones(2, 1, 3)
    elbo, reconstruction, kl = elbo_estimate(lambda: (torch.zeros(2, 2), torch.full((2, 2), -30.0)),
                                             lambda z: torch.zeros(2, 1, 3), x, samples=4)
    np.testing.assert_allclose(reconstruction, [3.0, 3.0])
    np.testing.assert_allclose(elbo, -(reconstruction + kl))


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A store of 24 random 'cells' (8 x 8 x 16) of two structures, with a table and splits."""
    folder = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    cells = rng.random((24, 5, 8, 8, 16), dtype=np.float32)
    zarr.create_array(folder / "cells.zarr" / "0", data=cells, chunks=(1, 5, 8, 8, 16))
    table = pd.DataFrame({"cell_id": [f"t/f/{i}" for i in range(24)], "store_index": range(24),
                          "structure": ["golgi", "nucleoli"] * 12,
                          "split": ["train"] * 16 + ["val"] * 4 + ["test"] * 4})
    io.write_table(table, folder / "cells.parquet")
    return folder


def test_structure_weights_give_each_class_the_mean_energy(tmp_path):
    """Constant structure channels of 0.4, 0.2 and 0 (energies 0.16 V, 0.04 V, 0): weights Ē / E_c, the blank 1."""
    values = [0.4, 0.2, 0.0, 0.4]
    cells = np.zeros((4, 5, 2, 2, 2), dtype=np.float32)
    for index, value in enumerate(values):
        cells[index, 2] = value
    zarr.create_array(tmp_path / "cells.zarr" / "0", data=cells, chunks=(1, 5, 2, 2, 2))
    labels = np.array([0, 1, 2, 0])
    mean_energy = np.mean(np.square(values)) * 8
    weights = train.structure_weights(tmp_path / "cells.zarr", np.arange(4), labels, 3, weighting="energy")
    np.testing.assert_allclose(weights, [mean_energy / (0.16 * 8), mean_energy / (0.04 * 8), 1.0], rtol=1e-6)
    # each class's weighted energy is the mean energy: dim classes count as much as bright ones
    np.testing.assert_allclose(weights[:2] * np.array([0.16, 0.04]) * 8, mean_energy, rtol=1e-6)
    np.testing.assert_array_equal(train.structure_weights(tmp_path / "cells.zarr", np.arange(4), labels, 3,
                                                          weighting="none"), np.ones(3))
    with pytest.raises(ValueError, match="structure_weighting"):
        train.structure_weights(tmp_path / "cells.zarr", np.arange(4), labels, 3, weighting="brightness")


def test_a_training_loss_that_is_not_finite_stops_the_run_naming_the_model_and_epoch(tmp_path, tiny_store,
                                                                                     caplog):
    """One training cell holds a NaN (as bf16 convolution gradients on some CPUs make the weights): the run stops at
    the end of epoch 1 with a reason, instead of training on and failing later on an all-NaN history."""
    store = tmp_path / "cells.zarr"
    cells = zarr.open_array(tiny_store / "cells.zarr" / "0")[:]
    cells[3, 0, 2, 2, 2] = np.nan
    zarr.create_array(store / "0", data=cells, chunks=(1, 5, 8, 8, 16))
    with pytest.raises(FloatingPointError, match="reference model: the training loss is not finite in epoch 1 .*"
                                                 "look for NaN or infinite values in the training cells"):
        train.train_model("reference", store=store, cells=tiny_store / "cells.parquet", settings=TINY,
                          checkpoint=tmp_path / "best.ckpt", metrics=tmp_path / "metrics.csv",
                          workdir=tmp_path / "work")
    # the job as a rule runs it: a one-line error in its log and a failed exit, no traceback
    from statcell.cli import main

    settings = json.dumps({**dataclasses.asdict(TINY), "widths": list(TINY.widths)})
    with caplog.at_level(logging.ERROR, logger="statcell"):
        assert main(["train-reference", "--settings", settings, "--store", str(store), "--cells",
                     str(tiny_store / "cells.parquet"), "--checkpoint", str(tmp_path / "cli.pt"), "--metrics",
                     str(tmp_path / "cli.csv"), "--workdir", str(tmp_path / "cli")]) == 1
    assert "the training loss is not finite in epoch 1" in caplog.text


@pytest.mark.parametrize("split, message", [
    ("test", "the test split holds no cell .*every analysis is made on held-out cells"),
    ("val", "the val split holds 0 cell"),
    ("", r"the dataset holds no cell; every FOV was rejected \(see rejects.parquet"),
])
def test_a_dataset_without_held_out_cells_stops_before_training_saying_which_split(tmp_path, tiny_store, split,
                                                                                   message):
    """A dataset so small that no cell's id hashes into a split stops at training, naming it, not in every
    analysis after."""
    table = pd.read_parquet(tiny_store / "cells.parquet")
    table.loc[table["split"] == split, "split"] = "train"
    store = tiny_store / "cells.zarr"
    if not split:  # every FOV rejected: normalization wrote an empty table and an empty store
        table, store = table.iloc[:0], tmp_path / "empty.zarr"
        zarr.create_array(store / "0", shape=(0, 5, 8, 8, 16), chunks=(1, 5, 8, 8, 16), dtype="float32")
    table.to_parquet(tmp_path / "cells.parquet")
    with pytest.raises(ValueError, match=f"cells.parquet: {message}"):
        train.train_model("reference", store=store, cells=tmp_path / "cells.parquet",
                          settings=TINY, checkpoint=tmp_path / "best.ckpt", metrics=tmp_path / "metrics.csv",
                          workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_cosine_schedule_warms_up_decays_to_zero_and_is_checkpointed(tmp_path, tiny_store):
    """16 training cells in batches of 4 for 3 epochs: 12 optimizer steps, one of warm-up; the rate ends at zero."""
    settings = dataclasses.replace(TINY, epochs=3, learning_rate_schedule="cosine")
    factors = [train.learning_rate_factor(step, 12, "cosine") for step in range(13)]
    assert factors[0] == 1.0 and factors[11] == pytest.approx(0.0, abs=1e-12)  # 5% of 12 steps: one warm-up step
    assert all(later <= earlier for earlier, later in zip(factors, factors[1:]))
    train.train_model("reference", store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet",
                      settings=settings, checkpoint=tmp_path / "best.ckpt", metrics=tmp_path / "metrics.csv",
                      workdir=tmp_path / "work")
    last = torch.load(next((tmp_path / "work").rglob("last.ckpt")), weights_only=False)
    assert last["lr_schedulers"][0]["last_epoch"] == 12
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        TINY.learning_rate * train.learning_rate_factor(12, 12, "cosine"))
    # the schedule is drawn over the epochs: another epoch count is another run, never a continuation
    assert settings.fingerprint("reference") != dataclasses.replace(settings, epochs=4).fingerprint("reference")
    constant = dataclasses.replace(TINY, learning_rate_schedule="constant")  # there more epochs continue a run
    assert constant.fingerprint("reference") == dataclasses.replace(constant, epochs=4).fingerprint("reference")
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        train.learning_rate_factor(0, 12, "linear")


def test_the_anneal_schedule_keeps_the_rate_then_falls_linearly_to_zero():
    """Over 100 steps: the full rate for the first 80, then a straight line that reaches zero at the last step."""
    factors = [train.learning_rate_factor(step, 100, "anneal") for step in range(100)]
    assert factors[:81] == [1.0] * 81
    assert factors[99] == 0.0
    steps = np.diff(factors[80:])
    assert np.allclose(steps, steps[0]) and steps[0] == pytest.approx(-1 / 19)
    settings = dataclasses.replace(TINY, learning_rate_schedule="anneal")  # drawn over the epochs: they count
    assert settings.fingerprint("target") != dataclasses.replace(settings, epochs=4).fingerprint("target")


def test_the_target_model_trains_with_its_structure_weights(tmp_path, tiny_store):
    table = pd.read_parquet(tiny_store / "cells.parquet").query("split == 'train'")
    expected = train.structure_weights(tiny_store / "cells.zarr", table["store_index"].to_numpy(),
                                       (table["structure"] == "nucleoli").to_numpy(dtype=int), 2, weighting="energy")
    assert TINY.structure_weighting == "energy"  # the default
    train.train_model("target", store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet", settings=TINY,
                      checkpoint=tmp_path / "best.ckpt", metrics=tmp_path / "metrics.csv", workdir=tmp_path / "work")
    saved = torch.load(tmp_path / "best.ckpt", weights_only=False)["hyper_parameters"]["structure_weights"]
    np.testing.assert_allclose(saved, expected, rtol=1e-6)
    assert not np.allclose(saved, 1.0)


def test_the_reference_model_learns_each_reference_once_and_the_target_model_every_control(tmp_path, tiny_store):
    """Controls built from a cell copy its membrane and DNA: the reference model leaves them out, the target model
    trains on them as classes of their own."""
    cells = pd.read_parquet(tiny_store / "cells.parquet").assign(control_source_cell_id="")
    copies = cells.assign(control_source_cell_id=cells["cell_id"], cell_id="copy/" + cells["cell_id"],
                          structure="control_dna", store_index=cells["store_index"] + len(cells))
    pd.concat([cells, copies], ignore_index=True).to_parquet(tmp_path / "cells.parquet")
    images = zarr.open_array(tiny_store / "cells.zarr" / "0", mode="r")[:]
    zarr.create_array(tmp_path / "cells.zarr" / "0", data=np.concatenate([images, images]), chunks=(1, 5, 8, 8, 16))
    trained = {}
    for kind in ("reference", "target"):
        train.train_model(kind, store=tmp_path / "cells.zarr", cells=tmp_path / "cells.parquet", settings=TINY,
                          checkpoint=tmp_path / kind / "best.ckpt", metrics=tmp_path / kind / "metrics.csv",
                          workdir=tmp_path / "work")
        trained[kind] = json.loads((tmp_path / kind / "best.json").read_text())
    assert trained["reference"]["dataset"]["n_cells"] == len(cells)
    assert trained["reference"]["structures"] == ["golgi", "nucleoli"]
    assert trained["target"]["dataset"]["n_cells"] == 2 * len(cells)
    assert trained["target"]["structures"] == ["control_dna", "golgi", "nucleoli"]


@pytest.mark.parametrize("kind", ["reference", "target"])
def test_training_writes_best_checkpoint_and_metrics_deterministically(tmp_path, tiny_store, kind):
    weights = []
    for run in ("a", "b"):
        history = train.train_model(kind, store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet",
                                    settings=TINY, checkpoint=tmp_path / run / "best.ckpt",
                                    metrics=tmp_path / run / "metrics.csv", workdir=tmp_path / run / "work")
        assert list(history["epoch"]) == [0, 1] and history["val_elbo"].notna().all()
        model, hparams = train.load_model(tmp_path / run / "best.ckpt")
        assert hparams["structures"] == ["golgi", "nucleoli"] and hparams["kind"] == kind
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
        # the weights-only export beside the checkpoint holds the same network, and a card of the data
        exported, card = train.load_model(tmp_path / run / "best.pt")
        torch.testing.assert_close(torch.cat([p.flatten() for p in exported.parameters()]), weights[-1], rtol=0,
                                   atol=0)
        assert card["crop_shape"] == [8, 8, 16] and card["structures"] == ["golgi", "nucleoli"]
        assert card["voxel_size_um"] is None and card["channels"] is None  # this bare store states neither
        assert card["training"]["epochs"] == TINY.epochs and card["dataset"]["n_cells"] == 24
        # trained by Adam's per-operation update on the CPU (train.adam); its state is what a resumed run loads
        saved = torch.load(tmp_path / run / "best.ckpt", map_location="cpu", weights_only=True)
        assert [group["fused"] for group in saved["optimizer_states"][0]["param_groups"]] == [None]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_the_fused_adam_steps_as_the_per_operation_one_to_rounding():
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(50, 40, generator=generator), torch.randn(7, generator=generator)]
    gradients = [[torch.randn_like(tensor) for tensor in start] for _ in range(20)]
    trained = {}
    for fused in (True, None):
        parameters = [torch.nn.Parameter(tensor.clone()) for tensor in start]
        optimizer = train.adam(parameters, learning_rate=6e-4, betas=(0.9, 0.999), device="cpu", fused=fused)
        assert optimizer.defaults["fused"] is fused  # None: the CPU's default, torch's per-operation update
        for step in gradients:
            for parameter, gradient in zip(parameters, step):
                parameter.grad = gradient.clone()
            optimizer.step()
        trained[fused] = torch.cat([parameter.detach().flatten() for parameter in parameters])
    moved = (trained[None] - torch.cat([tensor.flatten() for tensor in start])).abs()
    assert moved.mean() > 1e-3  # 20 steps of 6e-4 moved the weights by far more than the tolerance below
    torch.testing.assert_close(trained[True], trained[None], rtol=0, atol=1e-6)
    # the device's type decides: a GPU gets the fused kernel (decided here without one: the weights stay on the CPU)
    for device, fused in (("cuda", True), ("cuda:1", True), (torch.device("cpu"), None), ("meta", None)):
        weight = torch.nn.Parameter(torch.zeros(2))
        assert train.adam([weight], learning_rate=1e-3, betas=(0.9, 0.999), device=device).defaults["fused"] is fused


def test_dataset_serves_max_projections_cached_or_streamed(tiny_store):
    cells = zarr.open_array(tiny_store / "cells.zarr" / "0", mode="r")[:]
    indices, labels = np.array([5, 2, 9]), np.array([1, 0, 1])
    streamed, cached = (train.CellDataset(tiny_store / "cells.zarr", indices, kind="target", labels=labels,
                                          cache_in_memory=cache, project=True) for cache in (False, True))
    assert streamed.crop_shape == cached.crop_shape == (8, 8, 16)
    for item, index in enumerate(indices):
        target, reference, label = streamed[item]
        assert target.shape == (1, 8, 16) and reference.shape == (2, 8, 16) and label == labels[item]
        np.testing.assert_array_equal(target[0].numpy(), cells[index, 2].max(axis=0))
        np.testing.assert_array_equal(reference.numpy(), cells[index, :2].max(axis=1))
        for streamed_part, cached_part in zip(streamed[item], cached[item], strict=True):
            torch.testing.assert_close(streamed_part, cached_part, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("project", [False, True])
def test_a_dataset_served_as_stored_decodes_on_the_device_to_the_float_values(tmp_path, dtype, project):
    from statcell.normalize import create_cell_store

    values = np.random.default_rng(4).random((6, 5, 4, 6, 8), dtype=np.float32)
    store = create_cell_store(tmp_path / "cells.zarr", values.shape, voxel_um=1.0, dtype=dtype)
    store[:] = io.encode_cells(values, dtype)
    indices, labels = np.array([4, 1, 3]), np.array([0, 1, 0])
    options = dict(kind="target", labels=labels, project=project)
    served = {(decode, cache): train.CellDataset(tmp_path / "cells.zarr", indices, decode=decode,
                                                 cache_in_memory=cache, **options)
              for decode in (True, False) for cache in (True, False)}
    for cache in (True, False):
        encoded = torch.utils.data.default_collate([served[False, cache][i] for i in range(3)])
        decoded = torch.utils.data.default_collate([served[True, cache][i] for i in range(3)])
        assert encoded[0].dtype == getattr(torch, dtype) and decoded[0].dtype == torch.float32
        for on_device, read in zip(train.decode_images(tuple(encoded)), decoded, strict=True):
            torch.testing.assert_close(on_device, read, rtol=0, atol=0)  # bit for bit


def test_model_config_projects_the_crop_for_2d_models():
    flat = dataclasses.replace(TINY, ndim=2)
    assert train.model_config("reference", flat, (8, 8, 16), 2).image_shape == (8, 16)
    assert train.model_config("target", TINY, (8, 8, 16), 2).image_shape == (8, 8, 16)
    with pytest.raises(ValueError, match="Z, Y, X"):
        train.model_config("reference", flat, (8, 16), 2)
    assert flat.fingerprint("reference") != TINY.fingerprint("reference")


@pytest.mark.parametrize("kind", ["reference", "target"])
def test_2d_models_train_on_max_projections_and_reload(tmp_path, tiny_store, kind):
    settings = dataclasses.replace(TINY, ndim=2, epochs=1, cache_in_memory=True)
    history = train.train_model(kind, store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet",
                                settings=settings, checkpoint=tmp_path / "best.ckpt", metrics=tmp_path / "metrics.csv",
                                workdir=tmp_path / "work")
    assert list(history["epoch"]) == [0] and np.isfinite(history["val_elbo"]).all()
    model, hparams = train.load_model(tmp_path / "best.ckpt")
    assert model.config.ndim == 2 and tuple(hparams["config"]["image_shape"]) == (8, 16)
    cells = train.CellDataset(tiny_store / "cells.zarr", np.arange(20, 24), kind=kind, labels=np.array([0, 1] * 2),
                              project=True)
    batch = [torch.stack(parts) for parts in zip(*(cells[i] for i in range(len(cells))), strict=True)]
    with torch.no_grad():
        output = model(*batch)
    assert output.reconstruction.shape == batch[0].shape == (4, 1 if kind == "target" else 2, 8, 16)


def test_epoch_shuffle_is_a_pure_function_of_seed_and_epoch():
    orders = {}
    for seed, epoch in ((0, 0), (0, 1), (1, 0), (0, 0)):
        sampler = train.EpochShuffle(50, seed=seed)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(50)) and len(sampler) == 50
        assert orders.setdefault((seed, epoch), order) == order
    assert len({tuple(order) for order in orders.values()}) == 3


def _final_weights(workdir) -> dict[str, torch.Tensor]:
    return torch.load(next(workdir.glob("*/checkpoints/last.ckpt")), weights_only=False)["state_dict"]


def test_a_killed_training_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, tiny_store, caplog):
    """SIGKILL a training process mid-run; rerunning resumes and ends at the uninterrupted run's weights, exactly.

    The reruns happen in this process (each new Python process costs ~9 s of CPU importing torch and Lightning).
    """
    settings = dataclasses.replace(TINY, epochs=5)
    paths = {run: {"checkpoint": tmp_path / run / "best.ckpt", "metrics": tmp_path / run / "metrics.csv",
                   "workdir": tmp_path / run / "work"} for run in ("killed", "whole")}
    command = [sys.executable, "-m", "statcell", "train-reference", "--settings",
               pd.Series(dataclasses.asdict(settings)).to_json(), "--store", str(tiny_store / "cells.zarr"),
               "--cells", str(tiny_store / "cells.parquet"),
               *(f"--{name}={path}" for name, path in paths["killed"].items())]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # a wait, not a speed check: beside the ground-truth run a worker gets about a tenth of a core (tests/conftest.py)
    deadline = time.time() + 600
    while not list(paths["killed"]["workdir"].glob("*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not paths["killed"]["checkpoint"].exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(next(paths["killed"]["workdir"].glob("*/checkpoints/last.ckpt")),
                               weights_only=False)["epoch"]  # epochs completed before the kill
    assert epoch_at_kill < settings.epochs - 1

    histories = {}
    for run in ("killed", "whole"):
        caplog.clear()
        with caplog.at_level("INFO", logger="statcell.train"):
            histories[run] = train.train_model("reference", store=tiny_store / "cells.zarr",
                                               cells=tiny_store / "cells.parquet", settings=settings, **paths[run])
        assert ("resuming reference training" in caplog.text) == (run == "killed")
    history = pd.read_csv(paths["killed"]["metrics"])
    assert list(history["epoch"]) == list(range(settings.epochs))  # the epochs before the kill kept, none run twice
    assert history[["train_elbo", "val_elbo"]].notna().all(axis=None)  # both written before each checkpoint
    pd.testing.assert_frame_equal(history, pd.read_csv(paths["whole"]["metrics"]), check_exact=True,
                                  check_like=True)
    # the validation ELBO peaks before the last epoch here, and last.ckpt still holds the last epoch of both runs
    assert history["val_elbo"].idxmax() < settings.epochs - 1
    for run in ("killed", "whole"):
        last = next(paths[run]["workdir"].glob("*/checkpoints/last.ckpt"))
        assert torch.load(last, weights_only=False)["global_step"] == settings.epochs * 16 // settings.batch_size
    resumed, whole = (_final_weights(paths[run]["workdir"]) for run in ("killed", "whole"))
    assert resumed.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_the_best_checkpoint_and_metrics(tmp_path, tiny_store):
    """``devices: 2`` on the CPU: two gloo DDP processes (Lightning relaunches the CLI), each on half the cells."""
    settings = dataclasses.replace(TINY, epochs=1, devices=2, accelerator="cpu")
    command = [sys.executable, "-m", "statcell", "train-target", "--settings",
               pd.Series(dataclasses.asdict(settings)).to_json(), "--store", str(tiny_store / "cells.zarr"),
               "--cells", str(tiny_store / "cells.parquet"), "--checkpoint", str(tmp_path / "best.ckpt"),
               "--metrics", str(tmp_path / "metrics.csv"), "--workdir", str(tmp_path / "work")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    assert "MEMBER: 2/2" in run.stderr  # Lightning's "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2"
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert list(history["epoch"]) == [0] and np.isfinite(history[["train_loss", "val_elbo"]]).all(axis=None)
    checkpoint = torch.load(tmp_path / "best.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 16 // (2 * TINY.batch_size)  # 16 training cells split over 2 processes
    model, hparams = train.load_model(tmp_path / "best.ckpt")
    assert hparams["kind"] == "target" and model.config.n_classes == 2


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", ["reference", "target"])
def test_channels_last_models_compute_what_contiguous_ones_do(kind, ndim):
    """The GPU path's memory-format conversion (model and batch), run on the CPU: same outputs and gradients."""
    import copy

    from statcell.models import ReferenceVAE, TargetVAE

    config = train.model_config(kind, dataclasses.replace(TINY, ndim=ndim), (8, 8, 16), 3)
    torch.manual_seed(0)
    model = ReferenceVAE(config) if kind == "reference" else TargetVAE(config)
    converted = copy.deepcopy(model).to(memory_format=memory_format(ndim))
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, *config.image_shape, generator=generator)
    batch = (images[:, :2],) if kind == "reference" else (images[:, 2:], images[:, :2], torch.tensor([0, 1, 2, 1]))
    moved = train.to_channels_last(batch, ndim=ndim)
    layout = memory_format(ndim)
    membrane_dna = moved[0] if kind == "reference" else moved[1]
    assert membrane_dna.is_contiguous(memory_format=layout) and not membrane_dna.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(moved, batch, strict=True))
    weight = converted.encoder.blocks[1].residual[0].parametrizations.weight.original
    assert weight.is_contiguous(memory_format=layout) and not weight.is_contiguous()

    outputs = []
    for network, inputs in ((model, batch), (converted, moved)):
        output = network(*inputs, generator=torch.Generator().manual_seed(2))
        output.reconstruction.square().mean().backward()
        gradient = network.encoder.blocks[1].residual[0].parametrizations.weight.original.grad
        outputs.append((output.reconstruction.detach(), output.mean.detach(), gradient.contiguous()))
    for expected, actual in zip(*outputs, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_memory_format_is_for_2d_or_3d_images():
    assert memory_format(3) is torch.channels_last_3d and memory_format(2) is torch.channels_last
    with pytest.raises(ValueError, match="2 or 3"):
        memory_format(1)


def test_channels_last_where_it_is_faster_on_gpus_and_for_3d_networks_on_the_cpu():
    assert runs_faster_channels_last(3, "cpu") and not runs_faster_channels_last(2, "cpu")
    assert runs_faster_channels_last(2, "cuda") and runs_faster_channels_last(3, "cuda")


def test_model_check_figure_and_kl_table(tmp_path, tiny_store):
    from statcell.analysis.model_check import check_models
    from statcell.plots.models import plot_model_check

    for kind in ("reference", "target"):
        train.train_model(kind, store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet", settings=TINY,
                          checkpoint=tmp_path / f"{kind}.ckpt", metrics=tmp_path / f"{kind}.csv",
                          workdir=tmp_path / "work")
    cells = pd.read_parquet(tiny_store / "cells.parquet")
    kl, images, reconstruction = check_models(tmp_path / "reference.ckpt", tmp_path / "target.ckpt",
                                              store=tiny_store / "cells.zarr", cells=cells)
    test = cells[cells["split"] == "test"]
    reference_rows = reconstruction[reconstruction["model"] == "reference"]
    assert list(reference_rows["channel"]) == ["dna", "membrane"] and set(reference_rows["structure"]) == {"all"}
    assert (reference_rows["cells"] == len(test)).all()
    target_rows = reconstruction[reconstruction["model"] == "target"].set_index("structure")
    assert target_rows["cells"].to_dict() == test["structure"].value_counts().to_dict()
    assert reconstruction["median_pearson"].dropna().between(-1, 1).all()
    shown = len(images["structure"])
    assert images["real"].shape[:2] == (shown, 3) and images["reference"].shape[:2] == (shown, 2)
    assert images["target"].shape[:2] == (shown, 1) and 0 <= images["real"].min() <= images["real"].max() <= 1
    plot_model_check(kl, images, tmp_path / "check.png")
    assert (tmp_path / "check.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "check.svg").exists()
    assert list(kl.groupby("model").size()) == [TINY.latent_dim, TINY.latent_dim]
    assert (kl["kl"] >= 0).all()
    for _, values in kl.groupby("model")["kl"]:
        assert list(values) == sorted(values, reverse=True)

    # copies of the test cells' membrane and DNA (as built controls hold) enter the target model's rows only
    copies = test.assign(control_source_cell_id=test["cell_id"], cell_id="copy/" + test["cell_id"])
    with_copies = pd.concat([cells.assign(control_source_cell_id=""), copies], ignore_index=True)
    _, _, reconstruction = check_models(tmp_path / "reference.ckpt", tmp_path / "target.ckpt",
                                        store=tiny_store / "cells.zarr", cells=with_copies)
    assert (reconstruction.loc[reconstruction["model"] == "reference", "cells"] == len(test)).all()
    assert reconstruction.loc[reconstruction["model"] == "target", "cells"].sum() == 2 * len(test)


def test_rerunning_a_finished_run_trains_nothing_and_keeps_its_history(tmp_path, tiny_store):
    arguments = {"store": tiny_store / "cells.zarr", "cells": tiny_store / "cells.parquet", "settings": TINY,
                 "workdir": tmp_path / "work"}
    first = train.train_model("reference", checkpoint=tmp_path / "a.ckpt", metrics=tmp_path / "a.csv", **arguments)
    again = train.train_model("reference", checkpoint=tmp_path / "b.ckpt", metrics=tmp_path / "b.csv", **arguments)
    pd.testing.assert_frame_equal(first, again)
    assert (tmp_path / "a.ckpt").read_bytes() == (tmp_path / "b.ckpt").read_bytes()


def test_new_cells_start_a_fresh_run_instead_of_resuming_the_old_one(tmp_path, tiny_store, caplog):
    arguments = {"store": tiny_store / "cells.zarr", "settings": TINY, "workdir": tmp_path / "work"}
    train.train_model("reference", cells=tiny_store / "cells.parquet", checkpoint=tmp_path / "a.ckpt",
                      metrics=tmp_path / "a.csv", **arguments)
    remeasured = pd.read_parquet(tiny_store / "cells.parquet")
    remeasured.loc[0, "split"] = "test" if remeasured.loc[0, "split"] != "test" else "train"  # other cells to train on
    remeasured.to_parquet(tmp_path / "cells.parquet")
    with caplog.at_level("INFO", logger="statcell.train"):
        train.train_model("reference", cells=tmp_path / "cells.parquet", checkpoint=tmp_path / "b.ckpt",
                          metrics=tmp_path / "b.csv", **arguments)
    assert "resuming" not in caplog.text
    assert len(list((tmp_path / "work").glob("reference-*"))) == 2


def test_a_checkpoint_write_cut_short_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """The checkpoint writer renames a complete file into place: a failure mid-write keeps the old checkpoint."""
    writer = train.atomic_checkpoint_io()
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer.save_checkpoint({"epoch": 1}, path)
    assert torch.load(path, weights_only=False) == {"epoch": 1}

    def cut_short(obj, target):
        Path(target).write_bytes(b"PK\x03\x04 truncated")
        raise OSError("killed")

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(OSError, match="killed"):
        writer.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left


def test_history_skips_rows_wider_than_a_header_left_by_a_stopped_run(tmp_path, caplog):
    log_file = tmp_path / "metrics.csv"
    log_file.write_text("epoch,step,val_elbo\n0,9,-5.0\n0,9,-7.0,1.0,2.0\n1,19,-4.0\n")
    history = train._read_history(log_file)
    assert history.to_dict("list") == {"epoch": [0, 1], "step": [9, 19], "val_elbo": [-5.0, -4.0]}
    assert "skipped 1 row(s)" in caplog.text
