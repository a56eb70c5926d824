"""Generated cells and the feature comparison, on the tiny trained models (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from statcell import io
from statcell.analysis import generation
from statcell.analysis.localization import LOCALIZATION_REGIONS
from statcell.plots.style import REFERENCE_CONTEXT, views
from statcell.analysis.features import FEATURE_NAMES, feature_table, measure_features
from statcell.train import load_model


def _generate(models: dict, *, seed: int = 0, **overrides) -> generation.Generation:
    reference, _ = load_model(models["reference"])
    target, hparams = load_model(models["target"])
    settings = {"generated_cells": 5, "per_structure": 2, "examples": 3, "elbo_samples": 2, "batch_size": 4,
                "seed": seed, **overrides}
    return generation.generate_cells(models["store"], pd.read_parquet(models["cells"]), reference_model=reference,
                                     target_model=target, structures=list(hparams["structures"]), **settings)


@pytest.fixture(scope="module")
def generated(tiny_models) -> generation.Generation:
    return _generate(tiny_models)


def test_shapes_and_manifest(generated, tiny_models):
    cells = pd.read_parquet(tiny_models["cells"])
    test = cells[cells["split"] == "test"]
    shape = generated.test_cells["real"].shape[2:]
    assert generated.prior.shape == (5, 2, *shape)
    for key in ("real", "reconstruction", "sample"):
        assert generated.test_cells[key].shape == (len(test), 3, *shape)
    structures = generated.structures_in_one_cell["structures"].tolist()
    assert generated.structures_in_one_cell["images"].shape == (len(structures), 2, 3, *shape)
    assert generated.structure_examples["images"].shape == (len(structures), 3, 3, *shape)
    counts = generated.manifest.groupby(["array", "source"]).size()
    assert counts[("prior", "prior")] == 5 and counts[("test_cells", "real")] == len(test)
    assert counts[("structures_in_one_cell", "generated")] == 2 * len(structures)
    for images in (generated.prior, generated.test_cells["reconstruction"], generated.structures_in_one_cell["images"]):
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_truncated_rows_keep_the_top_dimensions_and_end_with_the_full_prior(generated, tiny_models):
    """Row k decodes the first prior draws with only the k most informative dimensions; the last row, with every
    dimension, is the prior itself; with no dimension kept every draw decodes to the same cell."""
    reference, _ = load_model(tiny_models["reference"])
    truncated = generated.truncated
    latent_dim = reference.config.latent_dim
    assert truncated["kept"].tolist() == generation.truncation_counts(latent_dim) == [1, 2, 4, 6]
    assert sorted(truncated["order"].tolist()) == list(range(latent_dim))
    assert truncated["images"].shape == (4, 5, *generated.prior.shape[1:])  # 5 drawn cells, fewer than 8
    np.testing.assert_allclose(truncated["images"][-1], generated.prior, atol=1e-6)
    z = torch.randn(3, latent_dim, generator=torch.Generator().manual_seed(1))
    rows = generation.truncated_prior(reference, z, order=list(truncated["order"]), counts=[0, 1], batch_size=2)
    np.testing.assert_allclose(rows[0], np.repeat(rows[0][:1], 3, axis=0), atol=1e-6)  # z = 0 for every draw
    top = int(truncated["order"][0])
    alone = z * torch.nn.functional.one_hot(torch.tensor(top), latent_dim)
    np.testing.assert_allclose(rows[1], reference.decode(alone).clamp(0, 1).detach().numpy(), atol=1e-5)


def test_real_images_come_from_the_store_and_generation_keeps_the_real_reference(generated, tiny_models):
    manifest = generated.manifest
    stored = io.read_cells(tiny_models["store"], generated.test_cells["store_index"])
    np.testing.assert_array_equal(generated.test_cells["real"], stored)
    np.testing.assert_array_equal(generated.test_cells["sample"][:, :2], stored[:, :2])
    host = generated.structures_in_one_cell["host"]
    assert int(generated.structures_in_one_cell["host_store_index"]) in set(generated.test_cells["store_index"])
    np.testing.assert_array_equal(generated.structures_in_one_cell["images"][:, :, :2],
                                  np.broadcast_to(host[:2], generated.structures_in_one_cell["images"][:, :, :2].shape))
    # generated structures differ between draws and between labels
    structure = generated.structures_in_one_cell["images"][:, :, 2]
    assert not np.allclose(structure[0, 0], structure[0, 1])
    assert not np.allclose(structure[0, 0], structure[1, 0])
    # real examples are cells of the structure of their row
    cells = pd.read_parquet(tiny_models["cells"]).set_index("store_index")
    examples = manifest[manifest["array"] == "structure_examples"]
    for row, name in enumerate(generated.structure_examples["structures"]):
        picked = examples[examples["structure"] == name]
        assert (cells.loc[picked["store_index"], "structure"] == name).all()
        np.testing.assert_array_equal(generated.structure_examples["images"][row, :len(picked)],
                                      io.read_cells(tiny_models["store"], picked["store_index"].to_numpy()))


def test_expected_structures_average_prior_draws_in_a_host_that_fits_its_crop(generated, tiny_models):
    """The expected image of each class is the mean of its prior draws in the host (one draw: that draw), the host
    lies wholly inside its crop when a test cell does, and its masks are the store's."""
    in_one_cell = generated.structures_in_one_cell
    structures = in_one_cell["structures"].tolist()
    expected = in_one_cell["expected"]
    assert expected.shape == (len(structures), *generated.test_cells["real"].shape[2:])
    assert int(in_one_cell["expected_draws"]) == 32 and 0 <= expected.min() and expected.max() <= 1
    assert not np.allclose(expected[0], expected[1])
    host_index = int(in_one_cell["host_store_index"])
    masks = io.read_cells(tiny_models["store"], [host_index], channels=generation.MASK_CHANNELS)[0] > 0.5
    np.testing.assert_array_equal(in_one_cell["host_masks"], masks)
    test_masks = io.read_cells(tiny_models["store"], generated.test_cells["store_index"],
                               channels=generation.MASK_CHANNELS)[:, 0] > 0.5
    if (~generation.touches_crop_border(test_masks)).any():
        assert not generation.touches_crop_border(masks[None, 0])[0]
    reference, _ = load_model(tiny_models["reference"])
    target, _ = load_model(tiny_models["target"])
    host = torch.from_numpy(in_one_cell["host"][:2])
    single = generation.host_expectation(target, host, len(structures), draws=1, batch_size=4, seed=0)
    z = torch.randn(1, target.config.latent_dim, generator=generation._generator(0, "expected in one cell"))
    with torch.no_grad():
        decoded = target.decode(z, host[None], torch.tensor([1])).clamp(0, 1)[0, 0].numpy()
    np.testing.assert_allclose(single[1], decoded, atol=1e-5)
    with pytest.raises(ValueError, match="expected_draws"):
        _generate(tiny_models, expected_draws=0)


def test_localization_compares_real_reconstructed_and_sampled_structures_in_the_test_cells(generated):
    table = generated.localization
    structures = generated.structures_in_one_cell["structures"].tolist()
    assert set(table["source"]) == {"real", "reconstruction", "sample"}
    assert sorted(table["structure"].unique()) == sorted(set(structures) & set(table["structure"]))
    real = table[table["source"] == "real"].set_index("structure")
    measured = real[real["cells"] > 0]
    np.testing.assert_allclose(measured[list(LOCALIZATION_REGIONS)].sum(axis=1), 1.0, atol=1e-6)
    assert (table["cells"] <= table["structure"].map(generated.manifest.query("array == 'test_cells' and "
                                                                             "source == 'real'")["structure"]
                                                      .value_counts())).all()


def test_deterministic_from_the_seed_and_independent_of_batching(generated, tiny_models):
    again = _generate(tiny_models, batch_size=3)
    np.testing.assert_allclose(again.prior, generated.prior, atol=1e-5)
    np.testing.assert_allclose(again.structures_in_one_cell["images"], generated.structures_in_one_cell["images"],
                               atol=1e-5)
    np.testing.assert_allclose(again.structures_in_one_cell["expected"], generated.structures_in_one_cell["expected"],
                               atol=1e-5)
    pd.testing.assert_frame_equal(again.manifest, generated.manifest)
    pd.testing.assert_frame_equal(again.localization, generated.localization, atol=1e-5)
    other = _generate(tiny_models, seed=1)
    assert not np.allclose(other.prior, generated.prior)


def test_feature_table_of_real_and_generated_cells(generated, tiny_models):
    ids = [f"cell/{k}" for k in range(len(generated.test_cells["real"]))]
    table = measure_features(generated.test_cells["real"], generated.test_cells["reconstruction"], generated.prior,
                             cell_ids=ids, spacing=(1.0, 1.0, 1.0))
    assert list(table.columns) == ["cell_id", "source", *FEATURE_NAMES]
    assert table["source"].value_counts().to_dict() == {"real": len(ids), "reconstruction": len(ids), "prior": 5}
    real = table[table["source"] == "real"].reset_index(drop=True)
    direct = feature_table(generated.test_cells["real"][:, :2], spacing=(1.0, 1.0, 1.0))
    pd.testing.assert_frame_equal(real[list(FEATURE_NAMES)], direct)
    # the constructed cells' nuclei are found: volumes within the cell's
    assert (real["nucleus_volume"] < real["cell_volume"]).all()
    with pytest.raises(ValueError):
        measure_features(generated.test_cells["real"], generated.test_cells["reconstruction"][:1], generated.prior,
                         cell_ids=ids, spacing=(1.0, 1.0, 1.0))


def test_commands_write_images_tables_and_figures(tiny_models, tmp_path):
    from statcell.cli import main

    settings = ('{"generated_cells": 4, "generated_per_structure": 2, "examples_per_structure": 2, '
                '"elbo_samples": 2, "batch_size": 8, "seed": 0}')
    outdir = tmp_path / "generation"
    assert main(["generate-cells", "--settings", settings, "--reference", str(tiny_models["reference"]),
                 "--target", str(tiny_models["target"]), "--store", str(tiny_models["store"]),
                 "--cells", str(tiny_models["cells"]), "--outdir", str(outdir)]) == 0
    localization = pd.read_csv(outdir / "localization.csv")
    assert list(localization.columns) == ["structure", "source", "cells", *LOCALIZATION_REGIONS, "height"]
    with np.load(outdir / "prior.npz") as prior:
        assert prior["images"].shape[0] == 4
        np.testing.assert_allclose(prior["spacing"], io.store_spacing(tiny_models["store"]))
    features = tmp_path / "features.parquet"
    assert main(["measure-features", "--test-cells", str(outdir / "test_cells.npz"), "--prior",
                 str(outdir / "prior.npz"), "--manifest", str(outdir / "manifest.parquet"), "--store",
                 str(tiny_models["store"]), "--output", str(features)]) == 0
    table = pd.read_parquet(features)
    assert set(table["source"]) == {"real", "reconstruction", "prior"}
    assert table.loc[table["source"] == "real", "cell_id"].str.startswith("main/").all()
    commands = {  # the figures read only the archives (pixels and voxel size), never the store
        "plot-generated-cells": ["--prior", str(outdir / "prior.npz"), "--test-cells", str(outdir / "test_cells.npz")],
        "plot-structures-in-one-cell": ["--in-one-cell", str(outdir / "structures_in_one_cell.npz"), "--examples",
                                        str(outdir / "structure_examples.npz"), "--localization",
                                        str(outdir / "localization.csv")],
        "plot-structure-examples": ["--examples", str(outdir / "structure_examples.npz")],
        "plot-feature-violins": ["--features", str(features)],
        "plot-truncated-prior": ["--truncated", str(outdir / "truncated.npz")],
    }
    for command, arguments in commands.items():
        output = tmp_path / f"{command}.png"
        assert main([command, "--settings", '{"dpi": 60}', *arguments, "--output", str(output)]) == 0
        assert output.stat().st_size > 5_000
        assert output.with_suffix(".svg").stat().st_size > 0


def test_a_control_built_from_a_test_cell_is_not_measured_again_as_a_real_cell(tiny_models, tmp_path):
    """A built control's membrane and DNA are its source cell's: the 14 features (of cell and nucleus) and the
    reference's KL order count that cell once, as the reference model does (``normalize.imaged_cells``)."""
    from statcell.cli import main

    cells = pd.read_parquet(tiny_models["cells"]).assign(control_source_cell_id="")
    source = cells[(cells["split"] == "test") & (cells["structure"] == "nucleoli")].iloc[0]
    built = source.to_frame().T.assign(cell_id="main/control_dna/built/0", structure="control_dna",
                                       control_source_cell_id=source["cell_id"], store_index=len(cells))
    images = zarr.open_array(tiny_models["store"] / "0", mode="r")[:]
    copy = images[[source["store_index"]]].copy()
    copy[:, 2] = copy[:, 1]  # the DNA copied into the structure channel, as control_dna is built
    store = tmp_path / "cells.zarr"
    root = zarr.open_group(store, mode="w", zarr_format=3)
    root.attrs.update(dict(zarr.open_group(tiny_models["store"], mode="r").attrs))
    root.create_array("0", data=np.concatenate([images, copy]), chunks=(1, *images.shape[1:]))
    pd.concat([cells, built], ignore_index=True).astype(cells.dtypes.to_dict()).to_parquet(tmp_path / "cells.parquet")
    settings = ('{"generated_cells": 2, "generated_per_structure": 1, "examples_per_structure": 1, '
                '"elbo_samples": 2, "batch_size": 8, "seed": 0}')
    outdir = tmp_path / "generation"
    assert main(["generate-cells", "--settings", settings, "--reference", str(tiny_models["reference"]),
                 "--target", str(tiny_models["target"]), "--store", str(store), "--cells",
                 str(tmp_path / "cells.parquet"), "--outdir", str(outdir)]) == 0
    manifest = pd.read_parquet(outdir / "manifest.parquet")
    real = manifest[(manifest["array"] == "test_cells") & (manifest["source"] == "real")].set_index("cell_id")
    assert not real.loc["main/control_dna/built/0", "imaged"] and real.drop("main/control_dna/built/0")["imaged"].all()
    assert main(["measure-features", "--test-cells", str(outdir / "test_cells.npz"), "--prior",
                 str(outdir / "prior.npz"), "--manifest", str(outdir / "manifest.parquet"), "--store", str(store),
                 "--output", str(tmp_path / "features.parquet")]) == 0
    measured = pd.read_parquet(tmp_path / "features.parquet")
    for source_name in ("real", "reconstruction"):
        ids = measured.loc[measured["source"] == source_name, "cell_id"]
        assert sorted(ids) == sorted(real.index.drop("main/control_dna/built/0")), source_name


def test_views_stack_xy_over_xz_in_channel_colours():
    image = np.zeros((3, 4, 5, 6), np.float32)
    image[0, 1, 2, 3] = 1.0  # membrane voxel
    image[2, 3, 0, 0] = 1.0  # structure voxel
    panel = views(image)
    assert panel.shape == (5 + 1 + 4, 6, 3)
    context = np.array([1.0, 0.2, 1.0]) * REFERENCE_CONTEXT  # with a structure, the membrane is dimmed to context
    np.testing.assert_allclose(panel[2, 3], context, rtol=1e-6)  # xy: magenta at (y 2, x 3)
    np.testing.assert_allclose(panel[0, 0], [1.0, 0.9, 0.0])  # xy: yellow at (y 0, x 0)
    np.testing.assert_allclose(panel[6 + (3 - 1), 3], context, rtol=1e-6)  # xz, z upwards: z 1 of 4 is row 2
    np.testing.assert_allclose(views(image[:2])[2, 3], [1.0, 0.2, 1.0])  # no structure: the membrane at full
    faint = image.copy()
    faint[2, 3, 0, 0] = 0.1  # a faint structure stays faint (not stretched per panel), unless a top is given
    np.testing.assert_allclose(views(faint)[0, 0], [0.1, 0.09, 0.0], rtol=1e-6)
    np.testing.assert_allclose(views(faint, structure_top=0.1)[0, 0], [1.0, 0.9, 0.0], rtol=1e-6)


def test_localization_bars_say_when_a_class_has_no_test_cells_or_no_intensity():
    from statcell.plots import generation as plots
    from statcell.plots.style import pyplot

    figure, (empty, blank) = pyplot().subplots(1, 2)
    plots._localization_bars(empty, pd.DataFrame(columns=["structure", "source", *LOCALIZATION_REGIONS]))
    assert [text.get_text() for text in empty.texts] == ["no test cells of this class"]
    profiles = pd.DataFrame([{"structure": "control_blank", "source": source, **dict.fromkeys(LOCALIZATION_REGIONS,
                                                                                              np.nan)}
                             for source in ("real", "sample")])
    plots._localization_bars(blank, profiles)
    assert [text.get_text() for text in blank.texts] == ["no intensity", "no intensity"]
    assert [label.get_text() for label in blank.get_yticklabels()] == ["real", "generated"]
    pyplot().close(figure)
