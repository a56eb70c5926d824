"""Embeddings of cells under the trained models (statcell.analysis.embed) and the embed-cells command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from statcell import cli
from statcell.analysis import embed
from statcell.config import ConfigError
from statcell.models.export import ModelMismatchError
from statcell.models.loss import sum_squared_error
from statcell.train import CellDataset, load_model


@pytest.fixture(scope="module")
def models(tiny_models):
    """Both models from their weights-only exports (written by training beside each checkpoint)."""
    return {kind: load_model(tiny_models[kind].with_suffix(".pt")) for kind in ("reference", "target")}


@pytest.fixture(scope="module")
def main_cells(tiny_models) -> pd.DataFrame:
    return pd.read_parquet(tiny_models["cells"])


def test_a_model_of_the_other_kind_is_named_rather_than_run(tiny_models):
    for path in (tiny_models["target"], tiny_models["target"].with_suffix(".pt")):  # checkpoint and export
        with pytest.raises(ConfigError, match=r"holds a target model where the reference model is needed"):
            load_model(path, "reference")
    assert load_model(tiny_models["target"], "target")[1]["kind"] == "target"


def _embed(tiny_models, models, kind, cells, *, batch_size=64, seed=0, samples=3):
    model, hparams = models[kind]
    return embed.embed_cells(tiny_models["store"], cells, model=model, hparams=hparams, samples=samples,
                             batch_size=batch_size, seed=seed)


@pytest.mark.parametrize("kind", ["reference", "target"])
def test_embedding_table_holds_posterior_and_consistent_elbo(tiny_models, models, main_cells, kind):
    table = _embed(tiny_models, models, kind, main_cells)
    latent_dim = models[kind][1]["config"]["latent_dim"]
    expected = ["cell_id", "split", "structure", *embed.mean_columns(latent_dim), *embed.log_var_columns(latent_dim),
                "elbo", "reconstruction", "kl"]
    assert list(table.columns) == expected
    assert table["cell_id"].tolist() == main_cells["cell_id"].tolist()
    assert np.isfinite(table[expected[3:]].to_numpy()).all()
    np.testing.assert_allclose(table["elbo"], -(table["reconstruction"] + table["kl"]), rtol=1e-5)
    assert (table["reconstruction"] > 0).all() and (table["kl"] >= 0).all()
    # the means are the encoder's, for the cells in table order
    model, hparams = models[kind]
    labels = embed.structure_labels(main_cells["structure"], hparams["structures"]) if kind == "target" else None
    dataset = CellDataset(tiny_models["store"], main_cells["store_index"].to_numpy(), kind=kind, labels=labels)
    batch = [torch.stack(parts) for parts in zip(*(dataset[i] for i in range(5)))]
    with torch.inference_mode():
        mean = model.encode(*batch).mean.numpy()
    np.testing.assert_allclose(table[embed.mean_columns(latent_dim)].to_numpy()[:5], mean, rtol=1e-4, atol=1e-5)


def test_elbo_does_not_depend_on_batch_size_or_on_other_cells_but_on_seed(tiny_models, models, main_cells):
    cells = main_cells.iloc[::3]  # every structure and split
    whole = _embed(tiny_models, models, "target", cells, batch_size=64)
    small_batches = _embed(tiny_models, models, "target", cells, batch_size=5)
    alone = _embed(tiny_models, models, "target", cells.iloc[[10, 1, 6]], batch_size=2)
    numeric = whole.columns[3:]
    np.testing.assert_allclose(small_batches[numeric], whole[numeric], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(alone[numeric], whole.iloc[[10, 1, 6]][numeric], rtol=1e-4, atol=1e-4)
    reseeded = _embed(tiny_models, models, "target", cells, seed=1)
    np.testing.assert_allclose(reseeded["kl"], whole["kl"], rtol=1e-5)  # exact part
    assert not np.allclose(reseeded["reconstruction"], whole["reconstruction"])  # sampled part


def test_embed_batch_without_noise_scores_the_posterior_mean_reconstruction(tiny_models, models, main_cells):
    model, _ = models["reference"]
    dataset = CellDataset(tiny_models["store"], main_cells["store_index"].to_numpy()[:4], kind="reference")
    images = torch.stack([dataset[i][0] for i in range(4)])
    latent_dim = model.config.latent_dim
    with torch.inference_mode():
        values = embed.embed_batch(model, (images,), noise=torch.zeros(4, 2, latent_dim))
        expected = sum_squared_error(images, model.decode(model.encode(images).mean))
    np.testing.assert_allclose(values["reconstruction"], expected, rtol=1e-5)


def test_unknown_structure_raises_naming_it(tiny_models, models, main_cells):
    cells = main_cells.head(4).copy()
    cells.loc[cells.index[1], "structure"] = "golgi"
    with pytest.raises(ModelMismatchError, match="structures: the data holds 'golgi', which the target model does "
                       "not know"):
        _embed(tiny_models, models, "target", cells)
    with pytest.raises(ValueError, match="'golgi'.*unknown to the target model"):
        embed.structure_labels(cells["structure"], models["target"][1]["structures"])
    assert len(_embed(tiny_models, models, "reference", cells)) == 4  # the reference model ignores structures


def test_rank_dimensions_orders_by_mean_absolute_deviation():
    rng = np.random.default_rng(0)
    scales = np.array([0.1, 3.0, 1.0, 0.01])
    means = rng.normal(size=(200, 4)) * scales
    log_vars = np.full((200, 4), -0.5)
    table = pd.DataFrame(np.hstack([means, log_vars]), columns=embed.mean_columns(4) + embed.log_var_columns(4))
    ranked = embed.rank_dimensions(table)
    assert ranked["dimension"].tolist() == [1, 2, 0, 3]
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(ranked.set_index("dimension").loc[range(4), "mad"], np.abs(means).mean(axis=0))
    expected_kl = 0.5 * (means**2 + np.exp(log_vars) - 1 - log_vars).mean(axis=0)
    np.testing.assert_allclose(ranked.set_index("dimension").loc[range(4), "kl"], expected_kl)
    with pytest.raises(ValueError, match="no 'test' cells"):
        embed.ranking_cells(table.assign(split="train"), split="test")


def test_embed_cells_command_writes_both_tables(tiny_models, tmp_path):
    out = tmp_path / "drugs"
    status = cli.main(["embed-cells", "--settings", '{"elbo_samples": 2, "batch_size": 7}', "--checkpoint",
                       str(tiny_models["target"].with_suffix(".pt")), "--store", str(tiny_models["drug_store"]), "--cells",
                       str(tiny_models["drug_cells"]), "--rank-on", "all", "--embeddings", str(out / "target.parquet"),
                       "--dimensions", str(out / "target_dimensions.csv")])
    assert status == 0
    embeddings = pd.read_parquet(out / "target.parquet")
    dimensions = pd.read_csv(out / "target_dimensions.csv")
    assert len(embeddings) == len(pd.read_parquet(tiny_models["drug_cells"]))
    assert list(dimensions.columns) == ["dimension", "kl", "mad", "rank"]
    assert sorted(dimensions["dimension"]) == list(range(embed.latent_dim_of(embeddings)))
    np.testing.assert_allclose(dimensions["mad"], embed.rank_dimensions(embeddings)["mad"])
    assert dimensions["mad"].is_monotonic_decreasing
