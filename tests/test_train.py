"""The β-ELBO objective and training from the Zarr store: known answers, determinism, resumption."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from statcell import io, train
from statcell.config import validate_config
from statcell.models.loss import beta_elbo, elbo_estimate, kl_per_dimension

TINY = dataclasses.replace(train.TrainSettings.from_config(validate_config({})["training"]), widths=(4, 8),
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
                          "structure": ["golgi", "nucleoli"] * 12, "split": ["train"] * 16 + ["val"] * 4 + ["test"] * 4})
    io.write_table(table, folder / "cells.parquet")
    return folder


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
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


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


def test_a_killed_training_run_resumes_from_its_last_epoch(tmp_path, tiny_store):
    settings = dataclasses.asdict(dataclasses.replace(TINY, epochs=40))
    command = [sys.executable, "-m", "statcell", "train-reference", "--settings",
               pd.Series(settings).to_json(), "--store", str(tiny_store / "cells.zarr"), "--cells",
               str(tiny_store / "cells.parquet"), "--checkpoint", str(tmp_path / "best.ckpt"), "--metrics",
               str(tmp_path / "metrics.csv"), "--workdir", str(tmp_path / "work")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not list((tmp_path / "work").glob("*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "best.ckpt").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(next((tmp_path / "work").glob("*/checkpoints/last.ckpt")), weights_only=False)["epoch"]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming reference training" in rerun.stderr
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert list(history["epoch"]) == list(range(40))  # the epochs before the kill are kept, none run twice
    assert history["val_elbo"].notna().all() and epoch_at_kill < 39


def test_model_check_figure_and_kl_table(tmp_path, tiny_store):
    from statcell import figures

    for kind in ("reference", "target"):
        train.train_model(kind, store=tiny_store / "cells.zarr", cells=tiny_store / "cells.parquet", settings=TINY,
                          checkpoint=tmp_path / f"{kind}.ckpt", metrics=tmp_path / f"{kind}.csv",
                          workdir=tmp_path / "work")
    kl = figures.model_check(tmp_path / "reference.ckpt", tmp_path / "target.ckpt", tiny_store / "cells.zarr",
                             tiny_store / "cells.parquet", tmp_path / "check.png")
    assert (tmp_path / "check.png").read_bytes()[:4] == b"\x89PNG"
    assert list(kl.groupby("model").size()) == [TINY.latent_dim, TINY.latent_dim]
    assert (kl["kl"] >= 0).all()
    for _, values in kl.groupby("model")["kl"]:
        assert list(values) == sorted(values, reverse=True)
