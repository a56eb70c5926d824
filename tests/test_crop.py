"""Cropping: quality control, alignment, centring, flipping and measurements, on constructed and synthetic cells."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from statcell import crop, segment
from statcell.config import validate_config

DEFAULT_CROP = crop.CropSettings.from_config(validate_config({})["crop"])

SPACING = (0.29, 0.216, 0.216)


def _ellipsoid(shape, centre_um, semi_um, angle_deg=0.0):
    z, y, x = np.indices(shape).astype(float)
    z, y, x = ((z + 0.5) * SPACING[0] - centre_um[0], (y + 0.5) * SPACING[1] - centre_um[1],
               (x + 0.5) * SPACING[2] - centre_um[2])
    a = math.radians(angle_deg)
    along, across = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    return (z / semi_um[0]) ** 2 + (along / semi_um[1]) ** 2 + (across / semi_um[2]) ** 2 <= 1


def test_quality_control_gives_every_drop_a_reason():
    shape = (20, 60, 60)
    cells = np.zeros(shape, dtype=np.int32)
    nuclei = np.zeros(shape, dtype=np.int32)
    cells[2:18, 0:20, 5:25] = 1          # touches the FOV border
    cells[2:18, 25:45, 5:25] = 2         # good
    nuclei[6:12, 30:40, 10:20] = 2
    cells[2:4, 50:53, 50:53] = 3         # too small
    cells[2:18, 25:45, 30:50] = 4        # no nucleus
    cells[2:18, 47:59, 52:58] = 5        # its nucleus lies mostly outside it
    nuclei[6:12, 47:53, 46:60] = 5
    settings = dataclasses.replace(DEFAULT_CROP, min_cell_volume_um3=5)
    table = crop.quality_control(cells, nuclei, spacing=SPACING, settings=settings)
    reasons = dict(zip(table["label"], table["reject_reason"]))
    assert reasons == {1: "touches_fov_border", 2: "", 3: "too_small", 4: "no_nucleus", 5: "nucleus_outside_cell"}
    assert not table["touches_z_end"].any()
    cut = crop.quality_control(cells[4:], nuclei[4:], spacing=SPACING, settings=settings)  # a stack that starts inside
    assert dict(zip(cut["label"], cut["reject_reason"]))[2] == ""  # kept, and flagged
    assert set(cut.loc[cut["touches_z_end"], "label"]) == {1, 2, 4, 5}


def test_align_cell_puts_major_axis_on_x_nucleus_at_centre_and_skew_positive():
    shape = (40, 90, 90)
    cell = _ellipsoid(shape, (5.5, 9.7, 9.7), (4.0, 7.0, 3.5), angle_deg=30)
    # A bulge on one side gives the cell a skew, the nucleus sits off-centre.
    bulge = _ellipsoid(shape, (5.5, 9.7 - 4.0, 9.7 - 5.5), (2.5, 2.5, 2.5))
    cell |= bulge & ndimage.binary_dilation(cell, iterations=8)
    nucleus = _ellipsoid(shape, (5.5, 9.7 + 0.5, 9.7 + 1.0), (2.0, 2.5, 2.0)) & cell
    channels = np.stack([cell * 500.0 + 100, nucleus * 800.0 + 100, np.full(shape, 110.0)]).astype(np.float32)
    settings = dataclasses.replace(DEFAULT_CROP, voxel_size_um=0.4, shape=(32, 32, 48))
    signal = crop.subtract_background(channels, (100.0, 100.0, 110.0))
    out, info = crop.align_cell(signal, cell, nucleus, spacing=SPACING, settings=settings)
    assert out.shape == (5, 32, 32, 48)
    footprint = out[3].any(axis=0)
    angle = crop._major_axis_angle(footprint)
    assert min(abs(angle), abs(abs(angle) - 180)) < 4
    centre = np.array(ndimage.center_of_mass(out[4]))
    np.testing.assert_allclose(centre, np.array(settings.shape) / 2, atol=1.0)
    assert crop._skew(out[3] > 0, 1) >= 0 and crop._skew(out[3] > 0, 2) >= 0
    assert (out[:3][:, out[3] == 0] == 0).all()  # intensities masked to the cell
    assert (out[1][out[4] == 0] == 0).all() and out[1][out[4] > 0].min() > 0  # DNA masked to the nucleus...
    assert out[1][out[4] > 0].max() == pytest.approx(800, abs=20)  # ...above its background (100)
    assert (out[0][(out[3] > 0) & (out[4] > 0)] > 0).all()  # membrane and structure keep the whole cell
    assert info["fraction_outside_crop"] < 0.01
    measured = crop.measure_cell(info["aligned"], voxel_um=0.4)
    expected = cell.sum() * float(np.prod(SPACING))
    assert abs(measured["cell_volume_um3"] - expected) / expected < 0.05
    assert 0.5 < measured["cell_sphericity"] <= 1.0


def test_mask_channels_follows_the_paper():
    z, y, x = np.indices((6, 10, 10))
    cell = (y > 0) & (y < 9) & (x > 0) & (x < 9)
    nucleus = cell & (abs(y - 4.5) < 2) & (abs(x - 4.5) < 2)
    rng = np.random.default_rng(0)
    signal = (rng.integers(0, 3, (3, *cell.shape)) + 500 * nucleus).astype(np.float32)
    masked = crop.mask_channels(signal, cell, nucleus)
    assert (masked[:, ~cell] == 0).all()
    assert (masked[1][~nucleus] == 0).all()
    np.testing.assert_array_equal(masked[[0, 2]][:, cell], signal[[0, 2]][:, cell])
    np.testing.assert_array_equal(masked[1][nucleus], signal[1][nucleus])


def test_background_is_taken_where_there_is_no_cell_so_a_cell_filling_pool_stays():
    shape = (12, 40, 40)
    labels = np.zeros(shape, np.int32)
    labels[2:10, 5:35, 5:35] = 1  # one cell; the medium around and above it is free
    rng = np.random.default_rng(0)
    camera = 100 + rng.poisson(8, (3, *shape))
    pool = np.array([0, 0, 30])[:, None, None, None] * (labels > 0)  # the structure fills its cell at 30 ADU
    channels = (camera + pool).astype(np.float32)
    backgrounds = crop.fov_backgrounds(channels, labels)
    assert all(abs(value - 108) <= 1 for value in backgrounds)
    signal = crop.subtract_background(channels, backgrounds)
    assert signal.min() == 0 and signal.dtype == np.float32
    assert np.median(signal[2][labels > 0]) == pytest.approx(30, abs=2)  # the in-cell mode would have removed it
    filled = channels[:, 2:10, 5:35, 5:35]  # a FOV the cell fills: no free voxel, so the whole FOV's mode
    assert crop.fov_backgrounds(filled, np.ones(filled.shape[1:], np.int32))[2] == pytest.approx(138, abs=1)
    inside = crop.cell_backgrounds(channels, labels > 0, regions=("fov", "cell", "cell"), fov=backgrounds)
    assert inside[0] == backgrounds[0] and inside[2] == pytest.approx(138, abs=1)  # the paper's choice: pool and all
    with pytest.raises(ValueError, match="no FOV backgrounds"):
        crop.cell_backgrounds(channels, labels > 0, regions=("fov", "cell", "cell"))
    with pytest.raises(ValueError, match="'nucleus'"):
        crop.cell_backgrounds(channels, labels > 0, regions=("nucleus", "cell", "cell"))


def test_sphere_measurements_match_geometry():
    voxel = 0.25
    z, y, x = np.indices((40, 40, 40))
    ball = ((z - 19.5) ** 2 + (y - 19.5) ** 2 + (x - 19.5) ** 2) * voxel**2 <= 4.0**2
    aligned = np.stack([ball * 10.0, ball * 2.0, ball * 0.0, ball, ball]).astype(np.float32)
    values = crop.measure_cell(aligned, voxel_um=voxel)
    assert values["cell_volume_um3"] == pytest.approx(4 / 3 * math.pi * 4**3, rel=0.03)
    assert values["cell_surface_area_um2"] == pytest.approx(4 * math.pi * 4**2, rel=0.05)
    assert values["cell_sphericity"] == pytest.approx(1.0, abs=0.06)
    assert values["cell_height_um"] == pytest.approx(8.0, abs=2 * voxel)
    assert values["dna_integrated_intensity"] == pytest.approx(2.0 * ball.sum())


def test_crops_of_synthetic_cells_measure_their_true_sizes(tiny_fovs, tiny_settings):
    rows = []
    for fov_id in ("golgi_00", "nucleoli_00", "mitochondria_00"):
        fov = tiny_fovs[fov_id]
        nuclei = segment.segment_nuclei(fov.image[1], spacing=tiny_settings.pixel_size_um)
        cells = segment.segment_cells(fov.image[0], nuclei, spacing=tiny_settings.pixel_size_um)
        crops, table = crop.crop_cells(fov.image.astype(np.float32), cells, nuclei,
                                       spacing=tiny_settings.pixel_size_um, settings=DEFAULT_CROP,
                                       truth_labels=fov.cell_labels)
        accepted = table[table["reject_reason"] == ""]
        assert crops.shape == (len(accepted), 5, *DEFAULT_CROP.shape) and crops.dtype == np.uint16
        assert (table.loc[table["reject_reason"] != "", "crop_index"] == -1).all()
        truth = fov.cells.rename(columns={"label": "truth_label"})
        rows.append(accepted.merge(truth, on="truth_label", suffixes=("", "_true")))
    cells = pd.concat(rows)
    assert len(cells) >= 8
    assert cells["truth_iou"].min() > 0.8
    assert np.corrcoef(cells["cell_volume_um3"], cells["cell_volume_um3_true"])[0, 1] > 0.9
    assert np.median(np.abs(cells["cell_volume_um3"] / cells["cell_volume_um3_true"] - 1)) < 0.1
    assert np.corrcoef(cells["cell_height_um"], cells["height_um"])[0, 1] > 0.8
    assert (cells["fraction_outside_crop"] < 0.05).mean() > 0.9
    camera = tiny_settings.offset_adu + tiny_settings.background_photons  # the synthetic camera's dark level
    assert DEFAULT_CROP.background == ("cell", "cell", "fov")
    assert (cells["structure_background"] - camera).abs().max() <= 2  # measured where there is no cell
    assert (cells["membrane_background"] >= camera - 2).all()  # inside the cell: the camera and the dye's haze


def test_empty_fov_gives_no_crops_and_one_reject_row():
    shape = (10, 20, 20)
    crops, table = crop.crop_cells(np.ones((3, *shape), np.float32), np.zeros(shape, np.int32),
                                   np.zeros(shape, np.int32), spacing=SPACING, settings=DEFAULT_CROP)
    assert crops.shape[0] == 0
    assert table[["label", "reject_reason", "crop_index"]].to_dict("records") == [
        {"label": 0, "reject_reason": "no_cells_found", "crop_index": -1}]
