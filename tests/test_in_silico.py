"""In-silico perturbation: localization features on known shapes, and control cells moved along a drug's shift."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from statcell import cli
from statcell.analysis import embed, in_silico
from statcell.models import export

SPACING = (1.0, 1.0, 1.0)


def test_localization_features_on_known_shapes():
    cell = np.zeros((11, 21, 21), bool)
    cell[1:10, 1:20, 1:20] = True
    rim = cell & ~ndimage.binary_erosion(cell)  # the cell's outer voxel layer
    centre = np.zeros(cell.shape)
    centre[5, 10, 10] = 1.0
    pair = np.zeros(cell.shape)
    pair[5, 10, 4] = pair[5, 10, 16] = 1.0
    haze = cell.astype(float)
    assert in_silico.structure_localization(rim.astype(float), cell, spacing=SPACING,
                                            cortex_um=1.0)["cortical_fraction"] == 1.0
    central = in_silico.structure_localization(centre, cell, spacing=SPACING, cortex_um=1.0)
    assert central == {"spread_um": 0.0, "cortical_fraction": 0.0, "concentration": 1.0}
    assert in_silico.structure_localization(pair, cell, spacing=(1.0, 1.0, 0.5), cortex_um=1.0)["spread_um"] == 3.0
    assert in_silico.structure_localization(haze, cell, spacing=SPACING, cortex_um=1.0)["concentration"] == \
        pytest.approx(0.1, abs=0.01)
    # intensity outside the cell does not count; a cell without any is NaN
    outside = np.zeros(cell.shape)
    outside[0, 0, 0] = 5.0
    assert np.isnan(in_silico.structure_localization(outside, cell, spacing=SPACING, cortex_um=1.0)["spread_um"])


@pytest.fixture(scope="module")
def drug_inputs(tiny_models, tmp_path_factory):
    """The tiny drug set's target embeddings and the target model's dimension table on the training set."""
    folder = tmp_path_factory.mktemp("in_silico")
    model, card = export.load_model(tiny_models["target"].with_suffix(".pt"))
    hparams = card.to_dict()
    drug_cells = pd.read_parquet(tiny_models["drug_cells"])
    embeddings = embed.embed_cells(tiny_models["drug_store"], drug_cells, model=model, hparams=hparams, samples=2,
                                   batch_size=16, seed=0)
    main = embed.embed_cells(tiny_models["store"], pd.read_parquet(tiny_models["cells"]), model=model,
                             hparams=hparams, samples=2, batch_size=16, seed=0)
    embeddings.to_parquet(folder / "target.parquet")
    main.to_parquet(folder / "main_target.parquet")
    embed.rank_dimensions(main).to_csv(folder / "target_dimensions.csv", index=False)
    return {"folder": folder, "embeddings": folder / "target.parquet", "dimensions": folder / "target_dimensions.csv",
            "model": tiny_models["target"].with_suffix(".pt"), "main_embeddings": folder / "main_target.parquet"}


def test_control_cells_move_along_the_shift_from_their_own_posterior_mean(tiny_models, drug_inputs):
    model, card = export.load_model(drug_inputs["model"])
    settings = in_silico.InSilicoSettings(cells=3, steps=3, extent=1.0, cortex_um=1.0)
    embeddings, cells = pd.read_parquet(drug_inputs["embeddings"]), pd.read_parquet(tiny_models["drug_cells"])
    dimensions = pd.read_csv(drug_inputs["dimensions"])
    features, images = in_silico.perturb_cells(
        model, store=str(tiny_models["drug_store"]), embeddings=embeddings, cells=cells, dimensions=dimensions,
        structures=card.structures, settings=settings, min_kl=0.0, control="auto", spacing=SPACING)
    counts = features.groupby("source").size().to_dict()
    treated = int((cells["drug"] == "drug_a").sum())
    assert counts == {"decoded": 3 * 3, "real control": treated, "real treated": treated}  # 12 cells per treatment
    assert set(features["drug"]) == {"drug_a"} and set(features["structure"]) == {"nucleoli"}
    assert sorted(features.loc[features["source"] == "decoded", "alpha"].unique()) == [0.0, 0.5, 1.0]
    assert images["images"].shape == (1, 3 + 1, 3, *images["images"].shape[-3:])
    assert images["pairs"].tolist() == [["nucleoli", "drug_a"]] and str(images["control"]) == "vehicle"

    # α = 0 is the first control cell decoded at its own posterior mean; α = 1 moved by the whole centroid shift
    table, active, shifts = in_silico.latent_shifts(embeddings, cells, dimensions, min_kl=0.0, control="vehicle")
    first = table[(table["drug"] == "vehicle")].iloc[0]
    mean = torch.tensor(first[embed.mean_columns(embed.latent_dim_of(table))].to_numpy(np.float32))[None]
    label = torch.tensor([card.structures.index("nucleoli")])
    reference = torch.from_numpy(images["images"][0, 0, :2][None].copy())
    moved = mean.clone()
    moved[0, active] += torch.tensor(shifts[("nucleoli", "drug_a")], dtype=torch.float32)
    with torch.no_grad():
        for step, z in ((0, mean), (2, moved)):
            decoded = model.decode(z, reference, label).clamp(0, 1)[0, 0].numpy()
            np.testing.assert_allclose(images["images"][0, step, 2], decoded, atol=1e-5)
    summary = in_silico.summarize(features)
    assert list(summary["feature"]) == list(in_silico.LOCALIZATION_FEATURES) and (summary["cells"] == 3).all()


def test_perturb_cells_command_writes_the_tables_and_the_figure_draws(tiny_models, drug_inputs, tmp_path, caplog):
    out = tmp_path / "in_silico"

    def perturb(model, cells=tiny_models["drug_cells"], store=tiny_models["drug_store"],
                embeddings=drug_inputs["embeddings"]):
        return cli.main([
            "perturb-cells", "--settings", json.dumps({"cells": 2, "steps": 2, "extent": 1.5, "cortex_um": 1.0}),
            "--analysis-settings", json.dumps({"active_kl_nats": 0.0}), "--target", str(model),
            "--embeddings", str(embeddings), "--dimensions", str(drug_inputs["dimensions"]),
            "--cells", str(cells), "--store", str(store),
            "--features", str(out / "features.csv"), "--summary", str(out / "summary.csv"),
            "--images", str(out / "steps.npz")])

    # a model on another grid than the store's, or another dataset's table: refused before any cell is moved
    network, card = export.load_model(drug_inputs["model"])
    export.save_model(network, dataclasses.replace(card, voxel_size_um=[0.4] * 3), tmp_path / "coarse.pt")
    assert perturb(tmp_path / "coarse.pt") == 1 and "does not fit the data" in caplog.text
    assert perturb(drug_inputs["model"], cells=tiny_models["cells"]) == 1
    assert "does not list the cells of the store" in caplog.text and not out.exists()
    # a dataset without drugs: nothing to move, and the log says why the tables are empty
    assert perturb(drug_inputs["model"], cells=tiny_models["cells"], store=tiny_models["store"],
                   embeddings=drug_inputs["main_embeddings"]) == 0
    assert "no structure has both control cells (analysis.control_treatment 'auto') and treated cells" in caplog.text
    assert pd.read_csv(out / "summary.csv").empty
    assert perturb(drug_inputs["model"]) == 0
    features = pd.read_csv(out / "features.csv")
    assert sorted(features.loc[features["source"] == "decoded", "alpha"].unique()) == [0.0, 1.5]
    assert len(pd.read_csv(out / "summary.csv")) == len(in_silico.LOCALIZATION_FEATURES)
    assert cli.main(["plot-in-silico-perturbation", "--steps", str(out / "steps.npz"), "--output",
                     str(tmp_path / "in_silico.png")]) == 0
    assert (tmp_path / "in_silico.svg").exists()
