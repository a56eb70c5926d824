"""``cells.zarr`` is a valid OME-Zarr 0.5 image, checked with a maintained validator (``ome-zarr-models``).

The store holds one array ``(N, C, Z, Y, X)``: its first axis, ``cell``, has a custom type, which OME-Zarr allows for
one axis besides time, channel and space; the project's own metadata is the group attribute ``statcell``, outside the
``ome`` namespace the specification owns.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pydantic
import pytest
import zarr

from statcell import io, normalize
from statcell.vocabulary import CROP_CHANNELS
from tests.test_normalize import _write_fov

ome_zarr_models = pytest.importorskip("ome_zarr_models")  # a test dependency (pyproject's `test` extra)
from ome_zarr_models.common.omero import Omero
from ome_zarr_models.v05.image import Image, ImageAttrs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store written by the normalizer: two FOVs, 5 cells of 8 x 10 x 12 voxels of 0.5 µm."""
    folder = tmp_path_factory.mktemp("ome_zarr")
    rng = np.random.default_rng(4)
    names = ["fov_a", "fov_b"]
    for name, count in zip(names, (3, 2)):
        _write_fov(folder, name, count, rng)
    normalize.normalize_cells([folder / f"{name}.npz" for name in names],
                              [folder / f"{name}.parquet" for name in names], store=folder / "cells.zarr",
                              cells_table=folder / "cells.parquet", rejects_table=folder / "rejects.parquet",
                              dataset="main", voxel_um=0.5, settings=normalize.NormalizeSettings())
    return folder / "cells.zarr"


def test_the_cell_store_validates_as_an_ome_zarr_image(store):
    image = ome_zarr_models.open_ome_zarr(store)
    assert isinstance(image, Image) and image.ome_attributes.version == "0.5"
    multiscale = image.ome_attributes.multiscales[0]
    assert [(axis.name, axis.type) for axis in multiscale.axes] == [
        ("cell", "cell"), ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")]
    assert {axis.unit for axis in multiscale.axes[2:]} == {"micrometer"}
    assert multiscale.datasets[0].coordinateTransformations[0].scale == [1.0, 1.0, 0.5, 0.5, 0.5]
    array = image.members["0"]
    assert array.shape == (5, len(CROP_CHANNELS), 8, 10, 12) and array.dimension_names == ("cell", "c", "z", "y", "x")
    # `omero` (channel labels, colours, display windows) is the specification's transitional metadata, which the
    # Image model passes through: validated on its own
    omero = Omero.model_validate(dict(zarr.open_group(store, mode="r").attrs)["ome"]["omero"])
    assert [channel.model_dump()["label"] for channel in omero.channels] == list(CROP_CHANNELS)


def test_the_projects_metadata_is_outside_the_ome_namespace(store):
    attributes = dict(zarr.open_group(store, mode="r").attrs)
    assert set(attributes) == {"ome", io.STORE_ATTRIBUTE}
    assert set(attributes["ome"]) <= {*ImageAttrs.model_fields, "omero"}  # only what the specification defines
    digest = io.cell_ids_digest(pd.read_parquet(store.parent / "cells.parquet"))
    assert attributes[io.STORE_ATTRIBUTE] == {"n_cells": 5, "channels": list(CROP_CHANNELS), "encoding": {
        "dtype": "uint8", "scale": 1 / 255, "meaning": "value = stored * scale"}, "cell_ids_sha256": digest}
    assert io.store_metadata(store) == io.StoreMetadata(spacing=(0.5, 0.5, 0.5), channels=tuple(CROP_CHANNELS),
                                                        n_cells=5, cell_ids_sha256=digest)


@pytest.mark.parametrize("change", ["scale_of_4_axes", "cell_axis_after_space", "second_custom_axis"])
def test_the_validator_rejects_a_broken_store(store, tmp_path, change):
    """The validator does check what the test relies on: it is not a test that cannot fail."""
    broken = shutil.copytree(store, tmp_path / "cells.zarr")
    group = zarr.open_group(broken, mode="r+")
    ome = dict(group.attrs)["ome"]
    multiscale = ome["multiscales"][0]
    if change == "scale_of_4_axes":
        multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 0.5, 0.5, 0.5]
    elif change == "cell_axis_after_space":
        multiscale["axes"] = [*multiscale["axes"][1:], multiscale["axes"][0]]
    else:
        multiscale["axes"][1] = {"name": "c", "type": "stain"}
    group.attrs["ome"] = ome
    with pytest.raises(pydantic.ValidationError):
        Image.from_zarr(zarr.open_group(broken, mode="r"))
