"""Image and manifest I/O."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from statcell import io


def test_ome_tiff_round_trip_keeps_pixels_channel_names_and_pixel_sizes(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(3, 5, 16, 20), dtype=np.uint16)
    path = tmp_path / "fov.ome.tiff"
    io.write_ome_tiff(path, image, channel_names=["membrane", "dna", "golgi"], spacing=(0.29, 0.108, 0.108))
    read = io.read_image(path)
    np.testing.assert_array_equal(read.data, image)
    assert read.channel_names == ("membrane", "dna", "golgi")
    np.testing.assert_allclose(read.spacing, (0.29, 0.108, 0.108))
    assert not list(tmp_path.glob("*.partial*"))


def test_ome_tiff_is_deflated_at_the_level_asked_and_reads_back_the_same(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    image = (100 + rng.poisson(20.0, size=(2, 6, 48, 48)) * np.linspace(0, 1, 48)).astype(np.uint16)
    sizes = {}
    for level in sorted({1, io.OME_TIFF_DEFLATE_LEVEL, 9, None}, key=lambda level: level or 0):
        path = tmp_path / f"level{level}.ome.tiff"
        chosen = {} if level is None else {"deflate_level": level}
        io.write_ome_tiff(path, image, channel_names=["a", "b"], spacing=(1, 1, 1), image_name="fov", **chosen)
        np.testing.assert_array_equal(io.read_image(path).data, image)
        with tifffile.TiffFile(path) as tiff:
            assert tiff.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        sizes[level] = path.stat().st_size
    assert sizes[9] < sizes[1] < image.nbytes
    assert sizes[None] == sizes[io.OME_TIFF_DEFLATE_LEVEL], "written at the default level unless told otherwise"


def test_write_rejects_mismatched_channel_names(tmp_path):
    with pytest.raises(ValueError, match="2 channel names for 3 channels"):
        io.write_ome_tiff(tmp_path / "x.ome.tiff", np.zeros((3, 2, 4, 4), np.uint16), channel_names=["a", "b"],
                          spacing=(1, 1, 1))


def test_read_missing_image_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.ome.tiff"):
        io.read_image(tmp_path / "nothere.ome.tiff")


def _manifest(tmp_path, **overrides) -> pd.DataFrame:
    row = {"fov_id": "fov_a", "path": "images/a.ome.tiff", "membrane_channel": 0, "dna_channel": 1,
           "structure_channel": 2, "structure": "golgi", "pixel_size_z_um": 0.29, "pixel_size_y_um": 0.108,
           "pixel_size_x_um": 0.108}
    row.update(overrides)
    return pd.DataFrame([row, {**row, "fov_id": "fov_b", "path": "/abs/b.tiff"}])


def test_manifest_paths_resolve_against_its_folder(tmp_path):
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path).to_csv(path, index=False)
    table = io.read_manifest(path)
    assert table.loc[0, "path"] == str(tmp_path / "images" / "a.ome.tiff")
    assert table.loc[1, "path"] == "/abs/b.tiff"
    assert list(table["drug"]) == ["", ""] and list(table["concentration_um"]) == [0.0, 0.0]


def test_manifest_values_lose_the_spaces_around_them(tmp_path):
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path, structure=" golgi ", drug="taxol ", fov_id=" fov_a").to_csv(path, index=False)
    table = io.read_manifest(path)
    assert list(table["structure"]) == ["golgi", "golgi"] and list(table["drug"]) == ["taxol", "taxol"]
    assert table.loc[0, "fov_id"] == "fov_a"


@pytest.mark.parametrize("separator, decimal", [(";", ","), (";", "."), ("\t", "."), (", ", ".")])
def test_a_manifest_exported_by_a_spreadsheet_reads_as_the_comma_separated_one(tmp_path, separator, decimal):
    header = ["fov_id", "path", "membrane_channel", "dna_channel", "structure_channel", "structure",
              "pixel_size_z_um", "pixel_size_y_um", "pixel_size_x_um"]
    row = ["007", "images/a.ome.tiff", "0", "1", "2", "golgi", "0.29", "0.108", "0.1085"]
    text = "\n".join(separator.join(line) for line in (header, row)).replace(".", decimal).replace(
        f"a{decimal}ome{decimal}tiff", "a.ome.tiff") + "\n"
    (tmp_path / "manifest.csv").write_text("\ufeff" + text, encoding="utf-8")  # with the BOM a spreadsheet writes
    table = io.read_manifest(tmp_path / "manifest.csv")
    assert table.loc[0, "fov_id"] == "007" and table.loc[0, "path"] == str(tmp_path / "images" / "a.ome.tiff")
    assert table.loc[0, ["membrane_channel", "dna_channel", "structure_channel"]].tolist() == [0, 1, 2]
    assert table.loc[0, ["pixel_size_z_um", "pixel_size_y_um", "pixel_size_x_um"]].tolist() == pytest.approx(
        [0.29, 0.108, 0.1085])


def test_a_path_from_home_is_expanded_in_a_manifest_and_in_the_config(tmp_path, monkeypatch):
    from statcell.config import validate_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path, path="~/images/a.ome.tiff").to_csv(path, index=False)
    assert io.read_manifest(path).loc[0, "path"] == str(tmp_path / "home" / "images" / "a.ome.tiff")
    config = validate_config({"data": {"source": "manifest", "manifest": "~/lab/m.csv", "embed": {"p7": "~/p7.csv"}}})
    assert config["data"]["manifest"] == str(tmp_path / "home" / "lab" / "m.csv")
    assert config["data"]["embed"] == {"p7": str(tmp_path / "home" / "p7.csv")}


def test_manifest_missing_column_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path).drop(columns="dna_channel").to_csv(path, index=False)
    with pytest.raises(io.ManifestError, match=r"manifest.csv lacks the column\(s\): dna_channel"):
        io.read_manifest(path)


def test_manifest_duplicate_fov_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    table = _manifest(tmp_path)
    table.loc[1, "fov_id"] = "fov_a"
    table.to_csv(path, index=False)
    with pytest.raises(io.ManifestError, match="fov_id 'fov_a' appears more than once"):
        io.read_manifest(path)


@pytest.mark.parametrize("column, value, message", [
    ("structure_channel", -2, "column 'structure_channel': a channel index must be 0, 1, ..., got -2"),
    ("dna_channel", 1.5, "column 'dna_channel': a channel index must be 0, 1, ..., got 1.5"),
    ("pixel_size_z_um", -0.3, "column 'pixel_size_z_um' must be a positive number"),
    ("membrane_channel", 1, "row 2: membrane_channel and dna_channel are both 1"),
    ("pixel_size_y_um", 108, r"column 'pixel_size_y_um' is 108, outside the 0.001-20 µm .*\(not nanometres"),
    ("pixel_size_x_um", 1.08e-7, r"column 'pixel_size_x_um' is 1.08e-07, outside"),
    ("fov_id", "a/b", "may hold only letters"),
    ("scene", -1, "column 'scene' must be a 0-based index"),
    ("timepoint", 1.5, "column 'timepoint' must be a 0-based index"),
])
def test_manifest_bad_values_name_row_and_column(tmp_path, column, value, message):
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path, **{column: value}).to_csv(path, index=False)
    with pytest.raises(io.ManifestError, match=message):
        io.read_manifest(path)


def test_channels_named_in_the_manifest_are_found_by_their_names_in_the_file(tmp_path):
    image = np.random.default_rng(5).integers(90, 400, size=(4, 3, 12, 10), dtype=np.uint16)
    io.write_ome_tiff(tmp_path / "fov.ome.tiff", image, channel_names=["Bright", "EGFP", "CMDRP", "H3342"],
                      spacing=(0.29, 0.108, 0.108))
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path, path=str(tmp_path / "fov.ome.tiff"), membrane_channel="CMDRP", dna_channel=" H3342",
              structure_channel="1").to_csv(path, index=False)
    row = io.read_manifest(path).iloc[0].to_dict()
    record = io.FovRecord.from_row(json.loads(json.dumps(row, default=str)))  # as the rules pass it
    assert (record.membrane_channel, record.dna_channel, record.structure_channel) == ("CMDRP", "H3342", 1)
    np.testing.assert_array_equal(io.read_fov(record), image[[2, 3, 1]].astype(np.float32))
    with pytest.raises(io.FovError, match=r"fov.ome.tiff has no channel named 'DAPI'; its channels are \['Bright'"):
        io.read_fov(replace(record, dna_channel="DAPI"))
    with pytest.raises(io.FovError, match="membrane_channel 'CMDRP' and dna_channel 2 are both channel 2"):
        io.read_fov(replace(record, dna_channel=2))


def test_an_ome_zarr_fov_reads_with_its_channels_and_voxel_size(tmp_path):
    from tests.test_manifest_workflow import _write_ome_zarr

    pixels = np.random.default_rng(4).integers(0, 4000, size=(3, 5, 12, 10), dtype=np.uint16)
    _write_ome_zarr(tmp_path / "fov.ome.zarr", io.Image(pixels, ("m", "d", "s"), (0.29, 0.108, 0.108)))
    read = io.read_image(tmp_path / "fov.ome.zarr")
    np.testing.assert_array_equal(read.data, pixels)
    assert read.channel_names == ("m", "d", "s") and read.spacing == pytest.approx((0.29, 0.108, 0.108))
    with pytest.raises(FileNotFoundError, match="image file not found"):
        io.read_image(tmp_path / "other.ome.zarr")


def test_an_ome_zarr_field_of_a_plate_reads_whatever_its_folders_name_and_its_units_count(tmp_path):
    import json as json_module

    from tests.test_manifest_workflow import _write_ome_zarr

    pixels = np.random.default_rng(4).integers(0, 4000, size=(3, 5, 12, 10), dtype=np.uint16)
    plate = tmp_path / "plate.ome.zarr"
    _write_ome_zarr(plate / "A" / "1" / "0", io.Image(pixels, ("m", "d", "s"), (0.29, 0.108, 0.108)))
    (plate / "zarr.json").write_text(json_module.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "ome": {"version": "0.5", "plate": {"rows": [{"name": "A"}], "columns": [{"name": "1"}]}}}}))
    field = io.read_image(plate / "A" / "1" / "0")  # a folder named "0": not a .zarr suffix
    np.testing.assert_array_equal(field.data, pixels)
    assert field.spacing == pytest.approx((0.29, 0.108, 0.108))
    with pytest.raises(ValueError, match=r"plate\.ome\.zarr is an OME-Zarr plate.*A/1/0"):
        io.read_image(plate)
    metadata = plate / "A" / "1" / "0" / "zarr.json"  # the same image with its scale in nanometres
    group = json_module.loads(metadata.read_text())
    multiscale = group["attributes"]["ome"]["multiscales"][0]
    for axis in multiscale["axes"][1:]:
        axis["unit"] = "nanometer"
    for dataset in multiscale["datasets"]:
        dataset["coordinateTransformations"][0]["scale"][1:] = [290.0, 108.0, 108.0]
    metadata.write_text(json_module.dumps(group))
    assert io.read_image(plate / "A" / "1" / "0").spacing == pytest.approx((0.29, 0.108, 0.108))


def test_an_ome_zarr_of_more_channels_than_slices_reads_its_named_axes(tmp_path):
    from tests.test_manifest_workflow import _write_ome_zarr

    pixels = np.random.default_rng(0).integers(0, 100, size=(5, 3, 8, 8), dtype=np.uint16)
    _write_ome_zarr(tmp_path / "f.ome.zarr", io.Image(pixels, tuple("abcde"), (0.29, 0.1, 0.1)))
    np.testing.assert_array_equal(io.read_image(tmp_path / "f.ome.zarr").data, pixels)  # only a plain TIFF is refused


def test_an_ome_tiffs_voxel_size_in_nanometres_is_read_in_micrometres(tmp_path):
    import tifffile

    pixels = np.zeros((3, 4, 6, 5), np.uint16)
    tifffile.imwrite(tmp_path / "nm.ome.tif", pixels, metadata={
        "axes": "CZYX", "PhysicalSizeZ": 290, "PhysicalSizeZUnit": "nm", "PhysicalSizeY": 108,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 0.108, "PhysicalSizeXUnit": "µm"})
    assert io.read_image(tmp_path / "nm.ome.tif").spacing == pytest.approx((0.29, 0.108, 0.108))


def test_a_voxel_size_the_files_metadata_contradicts_is_named_and_the_manifests_used(tmp_path, caplog):
    image = np.random.default_rng(3).integers(90, 400, size=(3, 4, 12, 10), dtype=np.uint16)
    io.write_ome_tiff(tmp_path / "fov.ome.tiff", image, channel_names=["m", "d", "s"], spacing=(0.29, 0.108, 0.108))
    row = {"fov_id": "a", "path": str(tmp_path / "fov.ome.tiff"), "membrane_channel": 0, "dna_channel": 1,
           "structure_channel": 2, "structure": "golgi", "pixel_size_z_um": 0.29, "pixel_size_y_um": 0.216,
           "pixel_size_x_um": 0.216}
    with caplog.at_level("WARNING", logger="statcell"):
        io.read_fov(io.FovRecord.from_row(row))
    assert ("FOV a: the voxel size of the manifest (z, y, x 0.29, 0.216, 0.216 µm) differs from "
            f"{tmp_path / 'fov.ome.tiff'}'s metadata (y 0.108 µm, x 0.108 µm); the manifest's is used") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="statcell"):
        io.read_fov(io.FovRecord.from_row({**row, "pixel_size_y_um": 0.1085, "pixel_size_x_um": 0.108}))
    assert "differs" not in caplog.text  # within the tolerance
    io.write_ome_tiff(tmp_path / "ome_named_plain.tif", image, channel_names=["m", "d", "s"],
                      spacing=(0.29, 0.108, 0.108))
    with caplog.at_level("WARNING", logger="statcell"):  # OME-XML inside: its voxel size is a statement
        io.read_fov(io.FovRecord.from_row({**row, "fov_id": "b", "path": str(tmp_path / "ome_named_plain.tif")}))
    assert "FOV b: the voxel size of the manifest" in caplog.text
    caplog.clear()
    import tifffile  # a plain TIFF's resolution tags say 1 per unit when a writer leaves them out: not a statement

    tifffile.imwrite(tmp_path / "plain.tif", image.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"},
                     resolution=(1.0, 1.0))
    with caplog.at_level("WARNING", logger="statcell"):
        io.read_fov(io.FovRecord.from_row({**row, "path": str(tmp_path / "plain.tif")}))
    assert "differs" not in caplog.text


def test_a_fov_segmented_and_cropped_warns_of_its_voxel_size_once(tmp_path, caplog):
    from tests.test_bad_input import _record, _segment_and_crop

    image = np.random.default_rng(3).integers(90, 400, size=(3, 6, 20, 20), dtype=np.uint16)
    io.write_ome_tiff(tmp_path / "fov.ome.tiff", image, channel_names=["m", "d", "s"], spacing=(0.29, 0.108, 0.108))
    with caplog.at_level("WARNING", logger="statcell"):
        _segment_and_crop(_record(tmp_path / "fov.ome.tiff"), tmp_path)  # the record says 0.216 µm
    assert caplog.text.count("the voxel size of the manifest") == 1


@pytest.mark.parametrize("axes", ["ZYXS", "CZYXS", "TZYXS"])
def test_channels_stored_as_the_samples_of_a_pixel_are_read_as_channels(tmp_path, axes):
    import tifffile

    rng = np.random.default_rng(7)
    channels = rng.integers(90, 400, size=(6, 6, 20, 20), dtype=np.uint16)  # C, Z, Y, X
    if axes == "ZYXS":  # three channels interleaved, as an RGB-like export stores them
        stored, expected = channels[:3].transpose(1, 2, 3, 0), channels[:3]
    elif axes == "CZYXS":  # two channels of three samples each: six channels, a channel's samples together
        stored, expected = channels.reshape(2, 3, 6, 20, 20).transpose(0, 2, 3, 4, 1), channels
    else:  # a time-lapse of interleaved channels; time point 1 read
        stored = np.stack([channels[3:], channels[:3]]).transpose(0, 2, 3, 4, 1)
        expected = channels[:3]
    tifffile.imwrite(tmp_path / "fov.ome.tiff", stored, ome=True, metadata={"axes": axes, "PhysicalSizeZ": 0.29})
    image = io.read_image(tmp_path / "fov.ome.tiff", timepoint=1 if axes.startswith("T") else 0)
    np.testing.assert_array_equal(image.data, expected)
    assert image.spacing[0] == pytest.approx(0.29) and len(image.channel_names) == len(expected)


def _multi_scene_ome_tiff(path, scenes: list[np.ndarray], steps: list[float]) -> None:
    """An OME-TIFF holding one image (series) per scene, as a microscope's multi-position export is."""
    import tifffile

    with tifffile.TiffWriter(path, ome=True) as tiff:
        for index, (image, step) in enumerate(zip(scenes, steps, strict=True)):
            tiff.write(image, metadata={"axes": "CZYX", "PhysicalSizeZ": 0.29, "PhysicalSizeY": step,
                                        "PhysicalSizeX": step, "Channel": {"Name": [f"{c}{index}" for c in "mds"]}})


def test_each_scene_and_time_point_of_a_file_reads_with_its_own_metadata(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 4000, size=(3, 4, 12, 10), dtype=np.uint16) for _ in range(3)]
    _multi_scene_ome_tiff(tmp_path / "positions.ome.tiff", scenes, [0.1, 0.2, 0.3])
    for index, pixels in enumerate(scenes):
        read = io.read_image(tmp_path / "positions.ome.tiff", scene=index)
        np.testing.assert_array_equal(read.data, pixels)
        assert (read.scenes, read.timepoints) == (3, 1)
        assert read.channel_names == (f"m{index}", f"d{index}", f"s{index}")
        np.testing.assert_allclose(read.spacing, (0.29, 0.1 * (index + 1), 0.1 * (index + 1)))
    with pytest.raises(ValueError, match=r"positions.ome.tiff holds 3 scene\(s\), numbered from 0; scene 3 was"):
        io.read_image(tmp_path / "positions.ome.tiff", scene=3)

    movie = rng.integers(0, 4000, size=(5, 3, 4, 12, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "movie.ome.tiff", movie, ome=True, metadata={"axes": "TCZYX"})
    read = io.read_image(tmp_path / "movie.ome.tiff", timepoint=4)
    np.testing.assert_array_equal(read.data, movie[4])
    assert (read.scenes, read.timepoints) == (1, 5)
    with pytest.raises(ValueError, match=r"holds 5 time point\(s\)"):
        io.read_image(tmp_path / "movie.ome.tiff", timepoint=5)


@pytest.mark.parametrize("axes", ["TCZYX", "CTZYX", "ZTCYX", "TZYX"])
def test_a_time_point_is_read_alone_whatever_the_movies_axis_order(tmp_path, axes, monkeypatch):
    import tifffile

    sizes = {"T": 4, "C": 3, "Z": 5, "Y": 12, "X": 10}
    movie = np.random.default_rng(2).integers(0, 4000, size=[sizes[axis] for axis in axes], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "movie.ome.tiff", movie, ome=True, compression="zlib", metadata={"axes": axes})

    def whole_series(*args, **kwargs):
        raise AssertionError("the whole movie was read for one time point")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", whole_series)
    read = io.read_image(tmp_path / "movie.ome.tiff", timepoint=2)
    frame = np.take(movie, 2, axis=axes.index("T"))
    kept = axes.replace("T", "")
    if "C" not in kept:
        frame, kept = frame[np.newaxis], "C" + kept
    np.testing.assert_array_equal(read.data, np.moveaxis(frame, [kept.index(axis) for axis in "CZYX"], range(4)))
    assert read.timepoints == 4


def test_a_time_point_of_a_pyramidal_movie_is_read_at_full_resolution(tmp_path):
    import tifffile

    movie = np.random.default_rng(5).integers(0, 4000, size=(3, 2, 4, 32, 32), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tiff", ome=True) as tiff:
        tiff.write(movie, subifds=1, metadata={"axes": "TCZYX"})
        tiff.write(movie[..., ::2, ::2], subfiletype=1)  # the half-resolution level
    np.testing.assert_array_equal(io.read_image(tmp_path / "pyramid.ome.tiff", timepoint=1).data, movie[1])


def test_a_fov_of_a_file_with_several_scenes_or_time_points_must_say_which(tmp_path):
    rng = np.random.default_rng(1)
    scenes = [rng.integers(90, 400, size=(3, 4, 12, 10), dtype=np.uint16) for _ in range(2)]
    path = tmp_path / "positions.ome.tiff"
    _multi_scene_ome_tiff(path, scenes, [0.1, 0.1])
    manifest = _manifest(tmp_path, path=str(path))
    manifest["scene"] = [1, None]  # the second row names none
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    table = io.read_manifest(tmp_path / "manifest.csv")
    assert table["scene"].tolist() == [1, None]
    records = [io.FovRecord.from_row(row) for row in table.to_dict("records")]
    assert (records[0].scene, records[0].timepoint, records[1].scene) == (1, None, None)
    np.testing.assert_array_equal(io.read_fov(records[0]), scenes[1].astype(np.float32))
    with pytest.raises(io.FovError, match=r"fov_a: .*positions.ome.tiff holds 2 scenes \(stage positions\); say which "
                                          r"one is this FOV in the manifest's 'scene' column"):
        io.read_fov(io.FovRecord.from_row({**table.to_dict("records")[0], "scene": None}))
    with pytest.raises(io.FovError, match="cannot read .*holds 2 scene"):
        io.read_fov(io.FovRecord.from_row({**table.to_dict("records")[0], "scene": 2}))


def test_written_ome_tiff_reads_back_through_bioio(tmp_path):
    from bioio import BioImage

    image = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    path = tmp_path / "fov.ome.tiff"
    io.write_ome_tiff(path, image, channel_names=["membrane", "dna"], spacing=(0.5, 0.25, 0.125))
    reader = BioImage(path)
    np.testing.assert_array_equal(reader.get_image_data("CZYX", T=0), image)
    assert list(reader.channel_names) == ["membrane", "dna"]
    assert tuple(reader.physical_pixel_sizes) == (0.5, 0.25, 0.125)


def test_bioio_written_ome_tiff_and_plain_tiff_are_read(tmp_path):
    import tifffile
    from bioio_base.types import PhysicalPixelSizes
    from bioio_ome_tiff.writers import OmeTiffWriter

    image = np.arange(3 * 2 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5)
    OmeTiffWriter.save(image, tmp_path / "b.ome.tiff", dim_order="CZYX", channel_names=["a", "b", "c"],
                       physical_pixel_sizes=PhysicalPixelSizes(0.29, 0.108, 0.108))
    read = io.read_image(tmp_path / "b.ome.tiff")
    np.testing.assert_array_equal(read.data, image)
    assert read.channel_names == ("a", "b", "c") and read.spacing == (0.29, 0.108, 0.108)
    tifffile.imwrite(tmp_path / "plain.tif", image[:, 0], photometric="minisblack")  # not OME: read by bioio
    assert io.read_image(tmp_path / "plain.tif").data.size == image[:, 0].size


def test_a_plain_imagej_tiff_is_read_with_its_axes_and_no_failed_reader_warning(tmp_path, caplog):
    import tifffile

    image = np.arange(3 * 4 * 6 * 5, dtype=np.uint16).reshape(3, 4, 6, 5)  # C, Z, Y, X
    tifffile.imwrite(tmp_path / "hyperstack.tif", image.transpose(1, 0, 2, 3), imagej=True,
                     metadata={"axes": "ZCYX", "spacing": 0.29, "unit": "um"}, resolution=(1 / 0.216, 1 / 0.216))
    with caplog.at_level("WARNING"):
        read = io.read_image(tmp_path / "hyperstack.tif")
    np.testing.assert_array_equal(read.data, image)
    np.testing.assert_allclose(read.spacing, (0.29, 0.216, 0.216))
    assert not [record for record in caplog.records if record.levelname == "WARNING"], caplog.text
    io.write_ome_tiff(tmp_path / "named_plain.tif", image, channel_names=["m", "d", "s"], spacing=(0.3, 0.2, 0.2))
    named_plain = io.read_image(tmp_path / "named_plain.tif")  # OME-XML inside: read as an OME-TIFF
    assert named_plain.channel_names == ("m", "d", "s") and named_plain.spacing == (0.3, 0.2, 0.2)


def test_an_rgb_stack_is_read_with_its_samples_as_channels_and_an_unnamed_one_is_refused(tmp_path):
    import tifffile

    image = np.arange(3 * 4 * 6 * 5, dtype=np.uint8).reshape(3, 4, 6, 5)  # C, Z, Y, X
    tifffile.imwrite(tmp_path / "rgb.tif", image.transpose(1, 2, 3, 0), imagej=True, photometric="rgb",
                     metadata={"axes": "ZYXS"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resolution unit in the file: a NaN voxel size, without bioio's warning
        read = io.read_image(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(read.data, image)  # not the first colour alone, as bioio reads CZYX of ZYXS
    assert all(math.isnan(side) for side in read.spacing)
    assert read.channel_names == ("channel_0", "channel_1", "channel_2")
    tifffile.imwrite(tmp_path / "rgb_planes.tif", image.transpose(1, 2, 3, 0), photometric="rgb")  # QYXS
    with pytest.raises(ValueError, match=r"rgb_planes\.tif holds 4 planes of 3 samples"):
        io.read_image(tmp_path / "rgb_planes.tif")


def test_store_metadata_reads_old_stores_and_bare_arrays(tmp_path):
    import zarr

    old = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=3)  # the project's keys inside `ome`
    old.attrs.update({"ome": {"multiscales": [{"datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 0.3, 0.2, 0.2]}]}]}],
        "statcell": {"channels": ["a", "b"], "n_cells": 2}}})
    assert io.store_metadata(tmp_path / "old.zarr") == io.StoreMetadata(spacing=(0.3, 0.2, 0.2), channels=("a", "b"),
                                                                        n_cells=2)
    labelled = zarr.open_group(tmp_path / "labelled.zarr", mode="w", zarr_format=3)  # written by another tool
    labelled.attrs.update({"ome": {"omero": {"channels": [{"label": "membrane"}, {"label": "dna"}]}}})
    assert io.store_metadata(tmp_path / "labelled.zarr") == io.StoreMetadata(spacing=None,
                                                                             channels=("membrane", "dna"), n_cells=None)
    zarr.create_array(tmp_path / "bare.zarr" / "0", shape=(2, 5, 4, 4, 4), dtype="float32")
    assert io.store_metadata(tmp_path / "bare.zarr") == io.StoreMetadata(spacing=None, channels=None, n_cells=None)
    with pytest.raises(ValueError, match="does not state its voxel size"):
        io.store_spacing(tmp_path / "bare.zarr")


@pytest.fixture
def cell_store(tmp_path):
    """A ``cells.zarr`` of 4 cells, 5 channels, 2 × 3 × 4 voxels, whose every voxel is ``10 * cell + channel``."""
    from statcell.normalize import create_cell_store

    array = create_cell_store(tmp_path / "cells.zarr", (4, 5, 2, 3, 4), voxel_um=0.8, dtype="float32")
    values = 10 * np.arange(4)[:, None] + np.arange(5)[None, :]
    array[:] = np.broadcast_to(values[:, :, None, None, None], array.shape).astype(np.float32)
    return tmp_path / "cells.zarr"


def test_read_cells_reads_long_runs_gaps_and_repeats_in_the_order_asked(tmp_path):
    import zarr

    values = np.random.default_rng(2).random((80, 5, 2, 3, 4), dtype=np.float32)
    zarr.create_array(tmp_path / "bare.zarr" / "0", data=values, chunks=(1, 5, 2, 3, 4))
    indices = np.r_[79, 0:70, 75, 3, 78, 77]  # a run longer than two slices, gaps, a repeat, any order
    np.testing.assert_array_equal(io.read_cells(tmp_path / "bare.zarr", indices, channels=[4, 1]),
                                  values[indices][:, [4, 1]])


def test_read_cells_follows_the_order_of_the_indices_repeats_included(cell_store):
    cells = io.read_cells(cell_store, [3, 0, 3, 1])
    assert cells.shape == (4, 3, 2, 3, 4) and cells.dtype == np.float32
    np.testing.assert_array_equal(cells[:, :, 0, 0, 0], [[30, 31, 32], [0, 1, 2], [30, 31, 32], [10, 11, 12]])
    assert (cells == cells[:, :, :1, :1, :1]).all()


def test_read_cells_reads_the_channels_asked_for_in_their_order(cell_store):
    np.testing.assert_array_equal(io.read_cells(cell_store, np.array([2]), channels=[4, 0])[0, :, 1, 2, 3], [24, 20])
    everything = io.read_cells(cell_store, [1], channels=None)
    np.testing.assert_array_equal(everything[0, :, 0, 0, 0], [10, 11, 12, 13, 14])


def test_read_cells_of_no_index_is_empty_with_the_store_shape(cell_store):
    assert io.read_cells(cell_store, []).shape == (0, 3, 2, 3, 4)
    assert io.read_cells(cell_store, np.array([], np.int64), channels=[1]).shape == (0, 1, 2, 3, 4)


def test_read_cells_from_an_opened_array_equals_reading_from_the_path(cell_store):
    array = io.open_cells(cell_store)
    assert array.shape == (4, 5, 2, 3, 4)
    np.testing.assert_array_equal(io.read_cells(array, [2, 1]), io.read_cells(cell_store, [2, 1]))


@pytest.mark.parametrize("index", [-1, 4])
def test_read_cells_rejects_an_index_outside_the_store(cell_store, index):
    with pytest.raises(IndexError, match=f"cell index {index} outside the 4 cells"):
        io.read_cells(cell_store, [0, index])


def test_a_plain_tiff_of_more_channels_than_slices_is_refused_as_stored_z_by_z(tmp_path):
    import tifffile

    image = np.arange(3 * 8 * 6 * 5, dtype=np.uint16).reshape(3, 8, 6, 5)  # C, Z, Y, X
    tifffile.imwrite(tmp_path / "czyx.tif", image, photometric="minisblack")  # no axis names: read as C, Z, Y, X
    np.testing.assert_array_equal(io.read_image(tmp_path / "czyx.tif").data, image)
    tifffile.imwrite(tmp_path / "zcyx.tif", image.transpose(1, 0, 2, 3), photometric="minisblack")
    with pytest.raises(ValueError, match=r"zcyx\.tif is a plain TIFF .* 8 channels of 3 z-slices"):
        io.read_image(tmp_path / "zcyx.tif")
    tifffile.imwrite(tmp_path / "zcyx_imagej.tif", image.transpose(1, 0, 2, 3), imagej=True,
                     metadata={"axes": "ZCYX"})  # the same, with its axes named: read
    np.testing.assert_array_equal(io.read_image(tmp_path / "zcyx_imagej.tif").data, image)


def test_a_multi_file_ome_tiff_missing_one_of_its_files_is_named_not_read_as_zeros(tmp_path):
    import tifffile

    image = np.arange(1, 1 + 3 * 4 * 6 * 5, dtype=np.uint16).reshape(3, 4, 6, 5)
    names = [f"fov_C{channel}.ome.tif" for channel in range(3)]
    ids = [f"urn:uuid:0000000{channel}-0000-0000-0000-000000000000" for channel in range(3)]
    planes = "".join(f'<TiffData FirstC="{channel}" FirstZ="0" FirstT="0" IFD="0" PlaneCount="4"><UUID '
                     f'FileName="{name}">{uuid}</UUID></TiffData>' for channel, (name, uuid) in enumerate(zip(names, ids)))
    for channel, name in enumerate(names):  # one file per channel, each with the whole set's OME-XML
        xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
               f'UUID="{ids[channel]}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" '
               'Type="uint16" SizeX="5" SizeY="6" SizeZ="4" SizeC="3" SizeT="1">'
               + "".join(f'<Channel ID="Channel:0:{c}" SamplesPerPixel="1"/>' for c in range(3))
               + f"{planes}</Pixels></Image></OME>")
        with tifffile.TiffWriter(tmp_path / name) as tiff:
            for z in range(4):
                tiff.write(image[channel, z], photometric="minisblack", description=xml if z == 0 else None,
                           metadata=None, contiguous=False)
    np.testing.assert_array_equal(io.read_image(tmp_path / names[0]).data, image)
    (tmp_path / names[2]).unlink()
    with pytest.raises(ValueError, match=r"fov_C0\.ome\.tif is one file of a multi-file OME-TIFF whose other "
                                         r"file\(s\) fov_C2\.ome\.tif are not found"):
        io.read_image(tmp_path / names[0])


def test_a_floating_point_fov_is_mapped_onto_the_crops_range_not_rounded_away(tmp_path):
    image = np.random.default_rng(4).uniform(0.05, 0.9, size=(3, 4, 12, 10)).astype(np.float32)
    io.write_ome_tiff(tmp_path / "fov.ome.tiff", image, channel_names=["m", "d", "s"], spacing=(0.29, 0.108, 0.108))
    record = io.FovRecord.from_row({**_manifest(tmp_path).iloc[0].to_dict(), "path": str(tmp_path / "fov.ome.tiff")})
    channels = io.read_fov(record)
    np.testing.assert_allclose(channels.max(axis=(1, 2, 3)), 65535, rtol=1e-6)
    for mapped, original in zip(channels, image[:3]):  # proportional: each channel times its own factor
        np.testing.assert_allclose(mapped / original, mapped.max() / original.max(), rtol=1e-5)
    integers = (image * 1000).astype(np.uint16)
    io.write_ome_tiff(tmp_path / "fov.ome.tiff", integers, channel_names=["m", "d", "s"], spacing=(0.29, 0.1, 0.1))
    np.testing.assert_array_equal(io.read_fov(record), integers.astype(np.float32))  # camera units stay as they are


def test_label_images_split_statcells_two_channel_file_and_refuse_other_counts():
    cells = np.zeros((1, 2, 3, 3), np.uint32)
    cells[0, :, :2, :2] = 70_000  # an id beyond 16 bits is kept
    both = np.concatenate([cells, (cells > 0).astype(np.uint32)])
    got_cells, got_nuclei = io.label_images(both, both, same_file=True, what="FOV a")
    assert got_cells.max() == 70_000 and got_nuclei.max() == 1
    got_cells, got_nuclei = io.label_images(cells, both[1:], same_file=False, what="FOV a")
    np.testing.assert_array_equal(got_nuclei, both[1])
    with pytest.raises(io.FovError, match="FOV a: the label image.* hold 2 and 1 channel"):
        io.label_images(both, both[1:], same_file=False, what="FOV a")
    with pytest.raises(io.FovError, match="FOV a: labels must be non-negative whole numbers"):
        io.label_images(cells - 0.5, both[1:], same_file=False, what="FOV a")


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_a_manifest_saved_by_a_windows_spreadsheet_is_read_with_its_encoding(tmp_path, encoding, caplog):
    path = tmp_path / "manifest.csv"
    _manifest(tmp_path, path="images/plaque µ.ome.tiff", structure="Golgi à").to_csv(
        path, index=False, encoding=encoding, sep="\t" if encoding == "utf-16" else ",")
    with caplog.at_level("WARNING", logger="statcell.io"):
        table = io.read_manifest(path)
    assert table.loc[0, "path"] == str(tmp_path / "images" / "plaque µ.ome.tiff")
    assert table.loc[0, "structure"] == "Golgi à"
    assert ("Windows-1252" in caplog.text) == (encoding == "cp1252")


def test_the_same_image_listed_twice_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    table = _manifest(tmp_path)
    table.loc[1, "path"] = "images/a.ome.tiff"
    table.to_csv(path, index=False)
    with pytest.raises(io.ManifestError, match=r"rows 2 and 3: the same image .*a\.ome\.tiff.* 'fov_a' and 'fov_b'"):
        io.read_manifest(path)
    table.loc[1, "structure_channel"] = 3  # another tagged structure of the same image is another FOV
    table.to_csv(path, index=False)
    assert len(io.read_manifest(path)) == 2
