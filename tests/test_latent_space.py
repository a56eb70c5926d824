"""Latent-space tables and figures (statcell.analysis.latent_space) and their commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from statcell import cli
from statcell.analysis import embed, latent_space
from statcell.plots import latent_space as latent_plots


def _constructed(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embeddings of 4 dimensions and cells where mu_2 follows height, mu_0 falls with volume, mu_1/mu_3 are noise."""
    rng = np.random.default_rng(seed)
    height = rng.uniform(4, 12, n)
    volume = rng.uniform(500, 2000, n)
    means = np.stack([-np.log(volume) * 0.3, rng.normal(size=n) * 2.5, (height - 8) / 2,
                      rng.normal(size=n) * 0.05], axis=1)
    ids = [f"main/fov/{i}" for i in range(n)]
    embeddings = pd.DataFrame(means, columns=embed.mean_columns(4)).assign(
        **dict(zip(embed.log_var_columns(4), np.full((4, n), -1.0))))
    embeddings.insert(0, "cell_id", ids)
    embeddings.insert(1, "split", "test")
    embeddings.insert(2, "structure", np.where(np.arange(n) % 2, "golgi", "nucleoli"))
    cells = pd.DataFrame({"cell_id": ids, "split": "test", "cell_height_um": height, "cell_volume_um3": volume,
                          "nucleus_volume_um3": volume * 0.3 + rng.normal(size=n),
                          "cell_sphericity": np.full(n, 0.8), "store_index": np.arange(n),
                          "mitotic_stage": np.where(np.arange(n) % 7 == 0, "prophase", "interphase")})
    return embeddings, cells


def test_correlations_find_the_dimensions_that_carry_height_and_volume():
    embeddings, cells = _constructed()
    dimensions = embed.rank_dimensions(embeddings)
    assert latent_space.measurement_columns(cells) == ["cell_height_um", "cell_volume_um3", "nucleus_volume_um3",
                                                       "cell_sphericity"]
    correlations = latent_space.feature_correlations(embeddings, cells, dimensions=dimensions, count=3)
    assert set(correlations["rank"]) == {1, 2, 3} and 3 not in set(correlations["dimension"])  # mu_3 ranks last
    by_pair = correlations.set_index(["dimension", "feature"])["spearman"]
    assert by_pair[2, "cell_height_um"] == pytest.approx(1.0)
    assert by_pair[0, "cell_volume_um3"] == pytest.approx(-1.0)
    assert np.isnan(by_pair[2, "cell_sphericity"])  # constant measurement
    recovery = latent_space.measurement_recovery(correlations).set_index("measurement")
    assert recovery.loc["cell_height_um", "dimension"] == 2
    assert recovery.loc["cell_volume_um3", "dimension"] == 0
    assert recovery.loc["cell_volume_um3", "abs_spearman"] == pytest.approx(1.0)
    assert (recovery["dimensions_searched"] == 3).all()


def test_feature_pca_and_dimension_correlations():
    embeddings, cells = _constructed()
    pca = latent_space.feature_pca(cells)
    assert len(pca) == 3  # the constant sphericity is left out
    assert pca["cumulative"].iloc[-1] == pytest.approx(1.0)
    assert pca["explained_variance_ratio"].is_monotonic_decreasing
    assert pca["explained_variance_ratio"].iloc[0] > 0.6  # cell and nucleus volume move together
    pairs = latent_space.dimension_correlations(embeddings, dimensions=embed.rank_dimensions(embeddings), count=3)
    square = pairs.pivot(index="rank_a", columns="rank_b", values="pearson").to_numpy()
    np.testing.assert_allclose(np.diag(square), 1.0)
    np.testing.assert_allclose(square, square.T)


def test_ranked_kl_per_model_and_structure():
    embeddings, _ = _constructed()
    kl = latent_space.ranked_kl({"reference": embeddings, "target": embeddings})
    assert set(kl.loc[kl["model"] == "reference", "structure"]) == {"all"}
    assert set(kl.loc[kl["model"] == "target", "structure"]) == {"all", "golgi", "nucleoli"}
    for _, group in kl.groupby(["model", "structure"]):
        assert group["kl"].is_monotonic_decreasing
        assert group["kl_rank"].tolist() == [1, 2, 3, 4]
    golgi = kl[kl["structure"] == "golgi"]
    assert (golgi["n_cells"] == 30).all()
    expected = embed.rank_dimensions(embeddings[embeddings["structure"] == "golgi"]).set_index("dimension")["kl"]
    np.testing.assert_allclose(golgi.set_index("dimension")["kl"].sort_index(), expected.sort_index())


def test_walks_move_one_dimension_from_minus_to_plus_k_sd(tiny_models):
    from statcell.train import load_model

    model, _ = load_model(tiny_models["reference"])
    latent_dim = model.config.latent_dim
    rng = np.random.default_rng(1)
    embeddings = pd.DataFrame(rng.normal(size=(40, latent_dim)) * np.arange(1, latent_dim + 1),
                              columns=embed.mean_columns(latent_dim))
    embeddings = embeddings.assign(**{f"log_var_{i}": np.log(0.25) for i in range(latent_dim)})
    dimensions = embed.rank_dimensions(embeddings)
    walks = latent_space.walk_latent_space(model, embeddings, dimensions=dimensions, count=2, steps=5, range_sd=2.0)
    assert walks["images"].shape == (2, 5, 2, *model.config.image_shape)
    assert walks["dimension"].tolist() == dimensions["dimension"].head(2).tolist()
    np.testing.assert_allclose(walks["sd_offsets"], [-2, -1, 0, 1, 2])
    sd = np.sqrt(embeddings[f"mu_{walks['dimension'][0]}"].var(ddof=0) + 0.25)  # aggregate posterior
    np.testing.assert_allclose(walks["latent_values"][0], sd * walks["sd_offsets"], rtol=1e-6)
    import torch

    with torch.inference_mode():
        origin = model.decode(torch.zeros(1, latent_dim)).numpy()[0]
    np.testing.assert_allclose(walks["images"][:, 2], np.stack([origin, origin]), rtol=1e-4, atol=1e-5)
    assert not np.allclose(walks["images"][0, 0], walks["images"][0, -1], atol=1e-4)


def test_commands_write_tables_and_figures(tiny_models, tmp_path):
    """embed-cells for both models, correlate-latent-space, walk-latent-space and every latent plot command."""
    settings = json.dumps({"elbo_samples": 2, "top_dimensions": 4, "walk_dimensions": 2, "walk_steps": 3})
    paths = {}
    for kind in ("reference", "target"):
        paths[kind] = tmp_path / f"{kind}.parquet"
        assert cli.main(["embed-cells", "--settings", settings, "--checkpoint", str(tiny_models[kind]), "--store",
                         str(tiny_models["store"]), "--cells", str(tiny_models["cells"]), "--embeddings",
                         str(paths[kind]), "--dimensions", str(tmp_path / f"{kind}_dimensions.csv")]) == 0
    tables = tmp_path / "latent"
    dimensions = str(tmp_path / "reference_dimensions.csv")
    assert cli.main(["correlate-latent-space", "--settings", settings, "--reference", str(paths["reference"]),
                     "--target", str(paths["target"]), "--dimensions", dimensions, "--cells",
                     str(tiny_models["cells"]), "--outdir", str(tables)]) == 0
    recovery = pd.read_csv(tables / "measurement_recovery.csv")
    assert recovery["measurement"].tolist() == ["cell_height_um", "cell_volume_um3"]
    assert recovery["dimension"].isin(pd.read_csv(dimensions)["dimension"].head(4)).all()
    assert cli.main(["walk-latent-space", "--settings", settings, "--checkpoint", str(tiny_models["reference"]),
                     "--embeddings", str(paths["reference"]), "--dimensions", dimensions, "--output",
                     str(tables / "walks.npz")]) == 0
    with np.load(tables / "walks.npz") as walks:
        assert walks["images"].shape[:3] == (2, 3, 2)
    scatter = json.dumps({"dpi": 60, "latent_space": {"point_size": 9, "colormap": "magma"}})
    plain = json.dumps({"dpi": 60})
    commands = {
        "latent_scatter": ["plot-latent-scatter", "--settings", scatter, "--embeddings", str(paths["reference"]),
                           "--dimensions", dimensions, "--cells", str(tiny_models["cells"])],
        "latent_pairs": ["plot-latent-pairs", "--settings", scatter, "--embeddings", str(paths["reference"]),
                         "--dimensions", dimensions],
        "latent_walks": ["plot-latent-walks", "--settings", plain, "--walks", str(tables / "walks.npz"),
                         "--correlations", str(tables / "feature_correlations.csv")],
        "latent_correlations": ["plot-latent-correlations", "--settings", plain, "--correlations",
                                str(tables / "feature_correlations.csv"), "--dimensions", dimensions, "--pca",
                                str(tables / "feature_pca.csv"), "--dimension-correlations",
                                str(tables / "dimension_correlations.csv")],
        "kl_per_dimension": ["plot-kl-per-dimension", "--settings", plain, "--kl", str(tables / "kl_ranked.csv")],
        "latent_examples": ["plot-latent-examples", "--settings", json.dumps({"dpi": 60, "latent_examples":
                            {"grid_size": 3}}), "--embeddings", str(paths["reference"]), "--cells",
                            str(tiny_models["cells"]), "--thumbnails", str(tmp_path / "thumbnails.parquet"),
                            "--dimensions", dimensions],
    }
    assert cli.main(["make-thumbnails", "--store", str(tiny_models["store"]), "--cells", str(tiny_models["cells"]),
                     "--output", str(tmp_path / "thumbnails.parquet")]) == 0
    for name, command in commands.items():
        output = tmp_path / "figures" / f"{name}.png"
        assert cli.main([*command, "--output", str(output)]) == 0, name
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert output.with_suffix(".svg").stat().st_size > 0
    # a setting the figures section does not know is refused, naming the key
    assert cli.main([*commands["latent_scatter"][:2], json.dumps({"dpi": 60, "latent_space": {"markers": 3}}),
                     *commands["latent_scatter"][3:], "--output", str(tmp_path / "bad.png")]) == 2


def test_grid_examples_take_the_nearest_free_cell_at_each_node():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, 400), rng.uniform(0, 1, 400)
    grid = latent_space.grid_examples(x, y, size=4)
    assert len(grid) == 16 and grid["cell"].is_unique
    step = (np.percentile(x, 98) - np.percentile(x, 2)) / 3
    assert (np.abs(x[grid["cell"]] - grid["node_x"]) <= step / 2 + 1e-9).all()
    assert grid.loc[grid["row"] == 0, "node_y"].gt(grid.loc[grid["row"] == 3, "node_y"].max()).all()  # row 0 on top
    gap = latent_space.grid_examples(np.r_[x[x < 0.3], 0.95], np.r_[y[x < 0.3], 0.5], size=4, coverage=1.0)
    assert len(gap) < 16  # nodes over the empty middle show no cell


def test_scatter_without_mitotic_annotation_colours_by_structure(tmp_path):
    """A lab's own cells carry no mitotic stage: the first panel shows the structures, and the figure is drawn."""
    embeddings, cells = _constructed()
    dimensions = embed.rank_dimensions(embeddings)
    for name, table, coloured_by in (("stages", cells, "mitotic_stage"),
                                     ("none", cells.drop(columns="mitotic_stage"), "structure"),
                                     ("unknown", cells.assign(mitotic_stage="unknown"), "structure")):
        assert latent_plots.plot_latent_scatter(embeddings, table, tmp_path / f"{name}.png", dimensions=dimensions,
                                                point_size=6, colormap="viridis", dpi=40) == coloured_by
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000


def test_reference_space_tables_leave_out_the_controls_built_from_imaged_cells():
    embeddings, cells = _constructed()
    copies = embeddings.iloc[:10].assign(cell_id=[f"main/control_dna/fov/{i}" for i in range(10)],
                                         structure="control_dna")
    copied_cells = cells.iloc[:10].assign(cell_id=copies["cell_id"].to_numpy(), control_source_cell_id=cells[
        "cell_id"].iloc[:10].to_numpy())
    every = pd.concat([embeddings, copies], ignore_index=True)
    table = pd.concat([cells.assign(control_source_cell_id=""), copied_cells], ignore_index=True)
    assert latent_space.imaged(every, table)["cell_id"].tolist() == embeddings["cell_id"].tolist()
    dimensions = embed.rank_dimensions(embeddings)
    alone = latent_space.correlate_latent_space(embeddings, embeddings, cells, dimensions=dimensions, count=4)
    both = latent_space.correlate_latent_space(every, every, table, dimensions=dimensions, count=4)
    pd.testing.assert_frame_equal(both["feature_correlations"], alone["feature_correlations"])
