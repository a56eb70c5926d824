"""The integrated cell: every structure predicted in chosen cells, new images and generated cells."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from bioio import BioImage

from statcell import cli, io
from statcell.analysis import prediction
from statcell.models import export
from tests.conftest import TINY_CELL_SHAPE, TINY_STRUCTURES, TINY_VOXEL_UM, fov_of


def test_cells_are_chosen_by_id_in_order_or_one_of_each_structure_first():
    cells = pd.DataFrame({"cell_id": ["d", "c", "b", "a", "e"], "split": ["test", "test", "train", "test", "test"],
                          "structure": ["golgi", "control_dna", "golgi", "golgi", "nucleoli"],
                          "store_index": range(5)})
    assert prediction.choose_cells(cells, ids=["b", "e"], count=9)["store_index"].tolist() == [2, 4]
    assert prediction.choose_cells(cells, ids=[], count=3)["cell_id"].tolist() == ["a", "e", "d"]
    with pytest.raises(ValueError, match="cell ids not in main: x, y"):
        prediction.choose_cells(cells, ids=["a", "x", "y"], count=1, dataset="main")


def test_predictions_are_the_decoder_at_the_mean_and_do_not_depend_on_batch_or_other_cells(tiny_models):
    target, card = export.load_model(tiny_models["target"])
    references = io.read_cells(tiny_models["store"], [0, 20, 40], channels=prediction.REFERENCE_CHANNELS)
    keys = ["cell a", "cell b", "cell c"]
    mean, draws = prediction.predict_structures(references, keys, target_model=target, samples=2, seed=3,
                                                batch_size=2)
    structures = len(card.structures)
    assert mean.shape == (3, structures, *TINY_CELL_SHAPE) and draws.shape == (3, structures, 2, *TINY_CELL_SHAPE)
    assert 0 <= mean.min() and mean.max() <= 1
    with torch.no_grad():
        expected = target.decode(torch.zeros(structures, target.config.latent_dim),
                                 torch.from_numpy(references[1]).expand(structures, *references.shape[1:]),
                                 torch.arange(structures)).clamp(0, 1).numpy()[:, 0]
    np.testing.assert_allclose(mean[1], expected, atol=1e-5)
    assert not np.allclose(draws[:, :, 0], draws[:, :, 1])  # independent samples
    alone_mean, alone_draws = prediction.predict_structures(references[1:2], ["cell b"], target_model=target,
                                                            samples=2, seed=3, batch_size=64)
    np.testing.assert_allclose(alone_mean[0], mean[1], atol=1e-5)
    np.testing.assert_allclose(alone_draws[0], draws[1], atol=1e-5)
    other_seed = prediction.predict_structures(references[1:2], ["cell b"], target_model=target, samples=2, seed=4)
    assert not np.allclose(other_seed[1][0], draws[1])


def _main(*arguments: str) -> int:
    return cli.main([str(argument) for argument in arguments])


def test_predict_cells_writes_one_ome_tiff_per_cell_that_bioio_reads(tiny_models, tmp_path):
    cells = pd.read_parquet(tiny_models["cells"])
    chosen = cells[cells["split"] == "test"]["cell_id"].iloc[[0, 3]].tolist()
    settings = {"dataset": "main", "cells": [], "count": 2, "samples": 2, "generated": 1}
    status = _main("predict-cells", "--settings", json.dumps(settings), "--reference", tiny_models["reference"],
                   "--target", tiny_models["target"], "--store", tiny_models["store"], "--cells",
                   tiny_models["cells"], "--cell-id", chosen[0], "--cell-id", chosen[1], "--outdir", tmp_path)
    assert status == 0
    table = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert table["cell_id"].tolist() == [*chosen, "generated_00"]
    assert table["source"].tolist() == ["store", "store", "generated"]
    _, card = export.load_model(tiny_models["target"])
    image = BioImage(tmp_path / table["file"].iloc[1])
    names = [str(name) for name in image.channel_names]
    assert names[:2 + len(card.structures)] == ["membrane", "dna", *card.structures]
    assert names[-1] == f"{card.structures[-1]} sample 2" and len(names) == 2 + 3 * len(card.structures)
    assert tuple(image.physical_pixel_sizes) == (TINY_VOXEL_UM,) * 3
    pixels = image.get_image_data("CZYX")
    store_index = int(cells.set_index("cell_id").loc[chosen[1], "store_index"])
    np.testing.assert_allclose(pixels[:2], io.read_cells(tiny_models["store"], [store_index], channels=(0, 1))[0])
    with np.load(tmp_path / "predictions.npz") as archive:
        assert archive["images"].shape == (3, len(card.structures), 3, *TINY_CELL_SHAPE)
        assert archive["imaged"].tolist() == [*cells.set_index("cell_id").loc[chosen, "structure"], ""]
    assert _main("plot-predicted-cells", "--predictions", tmp_path / "predictions.npz", "--output",
                 tmp_path / "predicted_cells.png") == 0
    assert (tmp_path / "predicted_cells.svg").exists()

    assert _main("predict-cells", "--settings", json.dumps(settings), "--reference", tiny_models["reference"],
                 "--target", tiny_models["target"], "--store", tiny_models["store"], "--cells", tiny_models["cells"],
                 "--cell-id", "main/nope/1", "--outdir", tmp_path / "bad") == 1
    # another dataset's store under this table would predict in other cells under these ids
    assert _main("predict-cells", "--settings", json.dumps(settings), "--reference", tiny_models["reference"],
                 "--target", tiny_models["target"], "--store", tiny_models["drug_store"], "--cells",
                 tiny_models["cells"], "--cell-id", chosen[0], "--outdir", tmp_path / "mixed") == 1
    assert not (tmp_path / "mixed").exists()


def _models_on_the_tiny_grid(tiny_models, folder, **changes) -> dict:
    """The tiny models exported with cards stating the tiny store's grid (and any other ``changes`` to the cards)."""
    models = {}
    for kind in ("reference", "target"):
        network, card = export.load_model(tiny_models[kind])
        card = dataclasses.replace(card, crop_shape=list(TINY_CELL_SHAPE), voxel_size_um=[TINY_VOXEL_UM] * 3,
                                   channels=["membrane", "dna", "structure", "cell_mask", "nucleus_mask"])
        models[kind] = folder / f"{kind}.pt"
        export.save_model(network, dataclasses.replace(card, **changes.get(kind, {})), models[kind])
    return models


def test_a_new_image_is_segmented_cropped_on_the_models_grid_and_predicted(tiny_models, tiny_fovs, tiny_settings,
                                                                          tmp_path, caplog):
    """A raw FOV file, as a user would pass it: its cells are found and cropped at the model's crop shape and voxel."""
    models = _models_on_the_tiny_grid(tiny_models, tmp_path)
    fov = fov_of(tiny_fovs, "golgi")
    path = tmp_path / "my_cells.ome.tiff"
    io.write_ome_tiff(path, fov.image[:2], channel_names=["CellMask", "Hoechst"], spacing=tiny_settings.pixel_size_um)
    settings = {"dataset": "main", "cells": [], "count": 2, "samples": 1, "generated": 0}
    status = _main("predict-cells", "--settings", json.dumps(settings), "--reference", models["reference"],
                   "--target", models["target"], "--image", path, "--outdir", tmp_path / "out")
    assert status == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert len(table) >= 2 and table["cell_id"].str.startswith("my_cells/").all()  # the FOV's inner cells
    assert (table["source"] == "image").all()
    image = BioImage(tmp_path / "out" / table["file"].iloc[0])
    assert (image.dims.Z, image.dims.Y, image.dims.X) == TINY_CELL_SHAPE
    assert tuple(image.physical_pixel_sizes) == (TINY_VOXEL_UM,) * 3
    pixels = image.get_image_data("CZYX")
    assert pixels[0].max() == pytest.approx(1.0) and pixels[1].max() == pytest.approx(1.0)  # normalized membrane, DNA
    assert len(image.channel_names) == 2 + 2 * len(TINY_STRUCTURES)
    # a file without its voxel size needs --pixel-size
    bare = tmp_path / "bare.tiff"
    import tifffile

    tifffile.imwrite(bare, fov.image[:2])
    assert _main("predict-cells", "--settings", json.dumps(settings), "--reference", models["reference"],
                 "--target", models["target"], "--image", bare, "--outdir", tmp_path / "bare_out") == 2
    # a time-lapse needs --timepoint, and then predicts in the frame named
    movie = tmp_path / "movie.ome.tiff"
    tifffile.imwrite(movie, np.stack([np.zeros_like(fov.image[:2]), fov.image[:2]]), ome=True,
                     metadata={"axes": "TCZYX", "PhysicalSizeZ": tiny_settings.pixel_size_um[0],
                               "PhysicalSizeY": tiny_settings.pixel_size_um[1],
                               "PhysicalSizeX": tiny_settings.pixel_size_um[2]})
    caplog.clear()
    assert _main("predict-cells", "--settings", json.dumps(settings), "--reference", models["reference"],
                 "--target", models["target"], "--image", movie, "--outdir", tmp_path / "movie_out") == 2
    assert "movie.ome.tiff holds 2 time points: give --timepoint (0-based)" in caplog.text
    assert _main("predict-cells", "--settings", json.dumps(settings), "--reference", models["reference"],
                 "--target", models["target"], "--image", movie, "--timepoint", "1",
                 "--outdir", tmp_path / "movie_out") == 0
    assert pd.read_csv(tmp_path / "movie_out" / "predictions.csv")["cell_id"].tolist() == table["cell_id"].str.replace(
        "my_cells/", "movie/").tolist()


def test_napari_opens_a_predicted_cell_at_its_voxel_size(tmp_path):
    """As a user would: napari with the bioio reader plugin, headless (napari's viewer model needs no display)."""
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    rng = np.random.default_rng(0)
    image, names = prediction.integrated_cell(rng.random((2, 4, 5, 6)), rng.random((3, 4, 5, 6)),
                                              rng.random((3, 2, 4, 5, 6)), structures=["golgi", "nucleoli", "actin"])
    path = tmp_path / "cell.ome.tiff"
    io.write_ome_tiff(path, image, channel_names=names, spacing=(0.8, 0.4, 0.4))
    _initialize_plugins()
    layers = ViewerModel().open(str(path), plugin="napari-bioio-reader")
    assert len(layers) == 1 and layers[0].data.shape[-4:] == image.shape
    assert list(layers[0].scale[-3:]) == pytest.approx([0.8, 0.4, 0.4])
    np.testing.assert_allclose(np.asarray(layers[0].data).reshape(image.shape), image, rtol=1e-6)


def test_a_new_image_is_read_as_the_workflow_reads_a_fov_whatever_its_pixel_type_or_channel_order(
        tiny_models, tiny_fovs, tiny_settings, tmp_path, caplog):
    """A floating-point export scaled to [0, 1], its channels in another order and named: the same cells as the
    camera's 16-bit file; bad channel options, a voxel size other than the file's and an image without a usable
    cell are named; a reference model on another grid than the target model is refused."""
    models = _models_on_the_tiny_grid(tiny_models, tmp_path)
    fov = fov_of(tiny_fovs, "golgi")
    settings = json.dumps({"dataset": "main", "cells": [], "count": 2, "samples": 1, "generated": 0})
    spacing = tiny_settings.pixel_size_um

    def predict(path, *options, outdir):
        return _main("predict-cells", "--settings", settings, "--reference", models["reference"], "--target",
                     models["target"], "--image", path, *options, "--outdir", tmp_path / outdir)

    camera = tmp_path / "camera.ome.tiff"
    io.write_ome_tiff(camera, fov.image[:2], channel_names=["CellMask", "Hoechst"], spacing=spacing)
    exported = tmp_path / "camera.float.ome.tiff"
    scaled = fov.image[[1, 0]].astype(np.float32) / fov.image.max()
    io.write_ome_tiff(exported, scaled, channel_names=["Hoechst", "CellMask"], spacing=spacing)
    assert predict(camera, outdir="camera") == 0
    assert predict(exported, "--membrane-channel", "CellMask", "--dna-channel", "Hoechst", outdir="float") == 0
    tables = [pd.read_csv(tmp_path / name / "predictions.csv") for name in ("camera", "float")]
    assert len(tables[0]) >= 2 and tables[0]["cell_id"].tolist() == tables[1]["cell_id"].str.replace(
        "camera.float/", "camera/").tolist()
    with np.load(tmp_path / "camera" / "predictions.npz") as first, np.load(tmp_path / "float" / "predictions.npz") \
            as second:
        references = first["images"][:, 0, :2].ravel(), second["images"][:, 0, :2].ravel()
    assert np.corrcoef(*references)[0, 1] > 0.99

    caplog.clear()
    assert predict(camera, "--dna-channel", "5", outdir="bad") == 1
    assert "has 2 channel(s) (0 to 1) but --membrane-channel 0, --dna-channel 5 ask for channels (0, 5)" in caplog.text
    assert predict(camera, "--dna-channel", "Hoechst", "--membrane-channel", "Hoechst", outdir="bad") == 1
    assert "--membrane-channel 'Hoechst' and --dna-channel 'Hoechst' are both channel 1" in caplog.text
    with pytest.raises(SystemExit):
        predict(camera, "--membrane-channel", "-1", outdir="bad")
    assert predict(camera, "--pixel-size", spacing[0], spacing[1] / 2, spacing[2] / 2, outdir="halved") == 0
    assert f"differs from {camera}'s metadata (y {spacing[1]:g} µm, x {spacing[2]:g} µm)" in caplog.text

    caplog.clear()
    flat = tmp_path / "flat.ome.tiff"
    io.write_ome_tiff(flat, np.random.default_rng(0).normal(100, 2, (2, 12, 40, 40)).clip(0).astype(np.uint16),
                      channel_names=["CellMask", "Hoechst"], spacing=spacing)
    assert predict(flat, outdir="flat") == 0
    assert f"{flat}: no cell to predict in (1 " in caplog.text  # with the reasons the crops table gives

    (tmp_path / "elsewhere").mkdir()
    elsewhere = _models_on_the_tiny_grid(tiny_models, tmp_path / "elsewhere", reference={"voxel_size_um": [0.4] * 3})
    caplog.clear()
    assert _main("predict-cells", "--settings", settings, "--reference", elsewhere["reference"], "--target",
                 models["target"], "--image", camera, "--outdir", tmp_path / "mixed") == 1
    assert f"the reference model {elsewhere['reference']} does not fit the data of the target model" in caplog.text
