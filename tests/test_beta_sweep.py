"""The β sweep: grid, training settings, the train-only fits, evaluation and the analysis on tiny 2D models."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from statcell import cli, io, train
from statcell.analysis import beta_sweep
from statcell.plots import beta_sweep as beta_plots
from statcell.analysis.features import FEATURE_NAMES, feature_table
from statcell.config import validate_config
from statcell.models.loss import kl_per_dimension


def test_beta_grid_is_index_over_count_minus_one():
    assert beta_sweep.beta_values(5).tolist() == pytest.approx([0.01, 0.255, 0.5, 0.745, 0.99])
    assert beta_sweep.beta_values(2).tolist() == pytest.approx([0.01, 0.99])
    assert beta_sweep.beta_values(25)[7] == pytest.approx(0.01 + 7 * 0.98 / 24)
    assert beta_sweep.beta_values(3, lowest=0.2, highest=0.6).tolist() == pytest.approx([0.2, 0.4, 0.6])
    for lowest, highest in ((0.0, 0.5), (0.5, 1.0), (0.6, 0.4)):
        with pytest.raises(ValueError, match="inside"):
            beta_sweep.beta_values(3, lowest=lowest, highest=highest)
    with pytest.raises(ValueError, match="at least 2"):
        beta_sweep.beta_values(1)


def test_training_section_overrides_ndim_beta_and_epochs_only():
    config = validate_config({"beta_sweep": {"count": 3, "epochs": 7}})
    section = beta_sweep.training_section(config["training"], sweep=config["beta_sweep"], index=1)
    assert (section["ndim"], section["beta"], section["epochs"]) == (2, pytest.approx(0.5), 7)
    unchanged = {key: value for key, value in config["training"].items() if key not in ("ndim", "beta", "epochs")}
    assert {key: section[key] for key in unchanged} == unchanged
    assert validate_config({"training": section})["training"] == section  # a valid training section
    assert config["training"]["ndim"] == 3  # the input is not modified
    with pytest.raises(ValueError, match="outside"):
        beta_sweep.training_section(config["training"], sweep=config["beta_sweep"], index=3)


def test_ranked_kl_and_important_dimensions():
    kl = np.array([[0.1, 3.0, 0.5, 0.9], [0.3, 1.0, 0.9, 0.5]])
    ranking = beta_sweep.ranked_kl(kl)
    assert ranking["dimension"].tolist() == [1, 2, 3, 0]  # ties keep the dimensions' order
    assert np.allclose(ranking["kl"], [2.0, 0.7, 0.7, 0.2])
    assert ranking["rank"].tolist() == [0, 1, 2, 3]
    assert beta_sweep.important_dimensions(kl, threshold=0.6).tolist() == [1, 2, 3]
    assert beta_sweep.important_dimensions(kl, threshold=5.0).size == 0


def test_regression_fit_ignores_the_scored_rows():
    rng = np.random.default_rng(0)
    latent_fit, latent_eval = rng.normal(size=(60, 3)), rng.normal(size=(20, 3))
    weights = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
    scores_fit = latent_fit @ weights + 0.3 * rng.normal(size=(60, 2))
    scores_eval = latent_eval @ weights + 0.3 * rng.normal(size=(20, 2))
    fit = beta_sweep.fit_regression(latent_fit, scores_fit, latent_eval, scores_eval)
    perturbed = beta_sweep.fit_regression(latent_fit, scores_fit, latent_eval + 5.0, scores_eval * -3.0 + 7.0)
    np.testing.assert_array_equal(fit.coefficients, perturbed.coefficients)
    np.testing.assert_array_equal(fit.intercepts, perturbed.intercepts)
    assert fit.coefficients.shape == (2, 3) and np.allclose(fit.coefficients, weights.T, atol=0.15)
    # R² is measured on the scored rows alone
    predicted = latent_eval @ fit.coefficients.T + fit.intercepts
    manual = 1 - ((scores_eval - predicted) ** 2).sum(0) / ((scores_eval - scores_eval.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(fit.r2, manual)
    assert not np.allclose(perturbed.r2, fit.r2)


def test_regression_without_dimensions_predicts_the_fit_mean():
    scores_fit, scores_eval = np.array([[1.0], [3.0]]), np.array([[0.0], [4.0], [5.0]])
    fit = beta_sweep.fit_regression(np.empty((2, 0)), scores_fit, np.empty((3, 0)), scores_eval)
    assert fit.coefficients.shape == (1, 0)
    np.testing.assert_allclose(fit.intercepts, [2.0])
    expected = 1 - ((scores_eval - 2.0) ** 2).sum() / ((scores_eval - scores_eval.mean()) ** 2).sum()
    np.testing.assert_allclose(fit.r2, [expected])
    assert expected < 0


def test_feature_pca_is_z_scored_and_orthonormal():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 5)) * [1.0, 10.0, 100.0, 0.1, 1.0] + [0, 5, -3, 1, 2]
    features[:, 4] = 2 * features[:, 0] + 0.01 * rng.normal(size=200)
    pca = beta_sweep.fit_feature_pca(features, components=3)
    assert pca.components.shape == (3, 5)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(3), atol=1e-10)
    assert pca.explained_variance_ratio[0] > 0.35  # columns 0 and 4 are one direction once z-scored
    assert np.all(np.diff(pca.explained_variance_ratio) <= 0) and pca.explained_variance_ratio.sum() <= 1
    scores = pca.transform(features)
    np.testing.assert_allclose(scores.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(pca.transform(features * 1.0), scores)  # transform is a pure function
    assert beta_sweep.fit_feature_pca(features[:4], components=10).components.shape == (4, 5)


@pytest.fixture(scope="module")
def sweep_models(tiny_models, tmp_path_factory):
    """Two tiny 2D reference models of the tiny store, at β = 0.01 and β = 0.99 (seconds)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = validate_config({"training": {"widths": [8, 16], "latent_dim": 6, "batch_size": 8},
                              "beta_sweep": {"count": 2, "epochs": 2}})
    paths = []
    for index in range(2):
        section = beta_sweep.training_section(config["training"], sweep=config["beta_sweep"], index=index)
        settings = train.TrainSettings.from_config(section)
        path = folder / f"beta_{index}.ckpt"
        train.train_model("reference", store=tiny_models["store"], cells=tiny_models["cells"], settings=settings,
                          checkpoint=path, metrics=folder / f"beta_{index}_metrics.csv", workdir=folder / "work")
        paths.append(path)
    return {"checkpoints": paths, "folder": folder, **{k: tiny_models[k] for k in ("store", "cells")}}


def test_models_are_2d_with_their_beta(sweep_models):
    for path, beta in zip(sweep_models["checkpoints"], (0.01, 0.99)):
        model, hparams = train.load_model(path)
        assert hparams["beta"] == pytest.approx(beta) and model.config.ndim == 2
        assert tuple(hparams["config"]["image_shape"]) == (8, 16)


def test_evaluate_matches_the_loss_helpers(sweep_models):
    model, _ = train.load_model(sweep_models["checkpoints"][0])
    cells = pd.read_parquet(sweep_models["cells"])
    images = beta_sweep.reference_images(sweep_models["store"], cells["store_index"].to_numpy()[:10], ndim=2)
    assert images.shape == (10, 2, 8, 16)
    stored = io.read_cells(sweep_models["store"], cells["store_index"].to_numpy()[:10], channels=None)
    np.testing.assert_array_equal(images.numpy(), stored[:, :2].max(axis=2))  # projected along z as in training
    result = beta_sweep.evaluate(model, images, samples=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert result.mean.shape == result.kl.shape == (10, 6) and result.distortion.shape == (10,)
    with torch.no_grad():
        code = model.encode(images)
        exact = kl_per_dimension(code.mean, code.log_var).numpy()
        decoded = ((model.decode(code.mean) - images) ** 2).flatten(1).sum(1).numpy()
    np.testing.assert_allclose(result.kl, exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.mean, code.mean.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(result.distortion > 0)
    # with the posterior's spread the mean error over draws stays near the error of the mean (β = 0.01 model)
    assert np.median(result.distortion / decoded) < 3
    encoded = beta_sweep.evaluate(model, images, samples=0, batch_size=3)  # encoding only
    np.testing.assert_allclose(encoded.kl, result.kl, rtol=1e-5, atol=1e-6)
    assert np.isnan(encoded.distortion).all() and encoded.distortion.shape == (10,)


def _analyze(sweep_models, cells):
    settings = beta_sweep.BetaSweepSettings.from_config(validate_config({})["beta_sweep"])
    return beta_sweep.analyze_beta_sweep(sweep_models["checkpoints"][::-1], store=sweep_models["store"], cells=cells,
                                         settings=settings, samples=2, batch_size=16, generated=5, seed=0)


def test_analysis_tables(sweep_models):
    cells = pd.read_parquet(sweep_models["cells"])
    result = _analyze(sweep_models, cells)
    n_train, n_test = (cells["split"] == "train").sum(), (cells["split"] == "test").sum()
    table = result.rate_distortion
    assert table["beta"].tolist() == pytest.approx([0.01, 0.99])  # sorted by β although given in reverse
    assert np.allclose(table["elbo"], -(table["rate"] + table["distortion"]))
    assert (table["rate"] >= 0).all() and (table["distortion"] > 0).all()
    assert (table["test_cells"] == n_test).all() and (table["important_dims"] <= table["latent_dim"]).all()
    kl = result.kl_per_dimension
    assert len(kl) == 2 * 2 * 6 and set(kl["split"]) == {"train", "test"}
    for (beta, split), rows in kl.groupby(["beta", "split"]):
        assert sorted(rows["dimension"]) == list(range(6)) and rows["kl"].is_monotonic_decreasing
        if split == "test":
            count = table.loc[table["beta"] == beta, "important_dims"].item()
            assert count == (rows["kl"] > 0.6).sum()
    regression = result.regression
    n_pcs = len(result.feature_pcs["pc"].unique())
    assert n_pcs == 5 and len(result.feature_pcs) == 5 * len(FEATURE_NAMES)
    assert len(regression) == 2 * (n_pcs + 1)
    complete = result.features[[f"pc_{k}" for k in range(1, 6)]].notna().all(axis=1)
    assert (regression["fit_cells"] == (complete & (result.features["split"] == "train")).sum()).all()
    assert (regression["scored_cells"] == (complete & (result.features["split"] == "test")).sum()).all()
    assert regression["fit_cells"].iloc[0] > 0.8 * n_train and regression["scored_cells"].iloc[0] > 0.5 * n_test
    for beta, rows in regression.groupby("beta"):
        per_pc = rows[rows["pc"] > 0]
        assert np.isclose(rows.loc[rows["pc"] == 0, "r2"].item(),
                          (per_pc["r2"] * per_pc["explained_variance_ratio"]).sum())
    assert result.generated.shape == (2, 5, 2, 8, 16) and np.all(result.generated >= 0)
    assert len(result.features) == n_train + n_test
    measured = result.generated_features
    assert list(measured.columns) == ["beta", "cell", *FEATURE_NAMES]
    assert measured.groupby("beta")["cell"].apply(list).tolist() == [list(range(5))] * 2  # each draw at each β
    again = feature_table(result.generated[1], spacing=io.store_spacing(sweep_models["store"])[1:])
    pd.testing.assert_frame_equal(measured[measured["beta"] == table["beta"].iloc[1]][list(FEATURE_NAMES)]
                                  .reset_index(drop=True), again[list(FEATURE_NAMES)])


def test_fits_use_training_cells_only(sweep_models):
    """Replacing the test cells by other cells changes the test numbers but none of the fits."""
    cells = pd.read_parquet(sweep_models["cells"])
    swapped = cells.copy()
    test, val = swapped.index[swapped["split"] == "test"], swapped.index[swapped["split"] == "val"]
    swapped.loc[test, "store_index"] = swapped.loc[val, "store_index"].to_numpy()
    original, changed = _analyze(sweep_models, cells), _analyze(sweep_models, swapped)
    pd.testing.assert_frame_equal(original.feature_pcs, changed.feature_pcs)
    train_kl = [result.kl_per_dimension.query("split == 'train'").reset_index(drop=True)
                for result in (original, changed)]
    pd.testing.assert_frame_equal(*train_kl)
    assert not np.allclose(original.rate_distortion["distortion"], changed.rate_distortion["distortion"])
    assert not np.allclose(original.regression["r2"], changed.regression["r2"])


def test_cli_writes_tables_and_figures(sweep_models, tmp_path):
    out = tmp_path / "sweep"
    analysis = json.dumps({"elbo_samples": 2, "generated_cells": 6})
    args = ["analyze-beta-sweep", "--settings", analysis, "--sweep-settings", json.dumps({"count": 2}),
            "--checkpoints", *map(str, sweep_models["checkpoints"]), "--store", str(sweep_models["store"]),
            "--cells", str(sweep_models["cells"])]
    names = {"rate-distortion": "rate_distortion.csv", "kl": "kl_per_dimension.csv", "regression": "regression.csv",
             "feature-pcs": "feature_pcs.csv", "features": "features.parquet", "generated": "generated.npz",
             "generated-features": "generated_features.parquet"}
    for option, name in names.items():
        args += [f"--{option}", str(out / name)]
    assert cli.main(args) == 0
    assert pd.read_csv(out / "rate_distortion.csv")["beta"].tolist() == pytest.approx([0.01, 0.99])
    with np.load(out / "generated.npz") as archive:  # the figure's pixels: generated and observed cells
        assert archive["generated"].shape == (2, 6, 2, 8, 16)
        assert archive["observed"].shape[1:] == (2, 8, 16) and len(archive["spacing"]) == 3
    figures = tmp_path / "figures"
    dpi = ["--settings", json.dumps({"dpi": 60, "beta_generated": {"columns": 4}})]
    commands = {
        "plot-beta-rate-distortion": ["--rate-distortion", out / "rate_distortion.csv"],
        "plot-beta-generated": ["--generated", out / "generated.npz", "--rate-distortion",
                                out / "rate_distortion.csv"],
        "plot-beta-kl": ["--kl", out / "kl_per_dimension.csv"],
        "plot-beta-features": ["--generated-features", out / "generated_features.parquet", "--features",
                               out / "features.parquet"],
        "plot-beta-regression": ["--kl", out / "kl_per_dimension.csv", "--regression", out / "regression.csv",
                                 "--feature-pcs", out / "feature_pcs.csv"],
    }
    for command, options in commands.items():
        png = figures / f"{command}.png"
        assert cli.main([command, *dpi, *map(str, options), "--output", str(png)]) == 0
        assert png.stat().st_size > 5000
        assert png.with_suffix(".svg").exists()


def test_generated_figure_needs_one_beta_per_row(tmp_path):
    with pytest.raises(ValueError, match="β values"):
        beta_plots.plot_generated({"generated": np.zeros((2, 3, 2, 8, 16)), "observed": np.zeros((3, 2, 8, 16)),
                                   "spacing": np.ones(3)}, pd.DataFrame({"beta": [0.0]}), tmp_path / "x.png", dpi=50)


def test_settings_from_config():
    settings = beta_sweep.BetaSweepSettings.from_config(validate_config({})["beta_sweep"])
    assert dataclasses.asdict(settings) == {"count": 5, "epochs": 20, "important_kl_nats": 0.6, "feature_pcs": 5}
