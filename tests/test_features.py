"""The 14 cell features: known answers on constructed shapes and intensities, in 2D and 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest

from statcell.analysis.features import (
    FEATURE_NAMES, cell_features, feature_table, intensity_entropy, segment_cell, segment_nucleus, shape_features,
)


def _ball(shape: tuple[int, ...], radius: float, centre: tuple[float, ...] | None = None) -> np.ndarray:
    centre = centre or tuple((n - 1) / 2 for n in shape)
    grids = np.meshgrid(*(np.arange(n) - c for n, c in zip(shape, centre)), indexing="ij")
    return sum(g**2 for g in grids) <= radius**2


def _shell(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def _cell_image(shape: tuple[int, ...], *, cell_radius: float, nucleus_radius: float, rng) -> np.ndarray:
    """Membrane shell of a ball (with a gap) around a textured nucleus ball, light noise: (2, *shape) in [0, 1]."""
    membrane = _shell(_ball(shape, cell_radius)).astype(np.float32)
    membrane[tuple(n // 2 for n in shape[:-1]) + (slice(None),)] = 0.0  # a gap through the shell
    dna = _ball(shape, nucleus_radius) * rng.uniform(0.5, 1.0, shape)
    noise = rng.uniform(0, 0.03, (2, *shape))
    return np.clip(np.stack([membrane, dna]) + noise, 0, 1).astype(np.float32)


def test_sphere_volume_surface_and_sphericity():
    radius, step = 10.0, 0.5
    mask = _ball((25, 25, 25), radius)
    volume, surface, sphericity = shape_features(mask, spacing=(step,) * 3)
    r_um = radius * step
    assert volume == pytest.approx(4 / 3 * math.pi * r_um**3, rel=0.02)
    assert surface == pytest.approx(4 * math.pi * r_um**2, rel=0.03)
    assert 0.97 < sphericity <= 1.0


def test_elongated_shapes_are_less_round_and_anisotropic_spacing_counts():
    cube = np.zeros((30, 30, 30), bool)
    cube[5:25, 5:25, 5:25] = True  # 20 voxels a side: the one-voxel smoothing rounds a smaller cube's edges much
    rod = np.zeros((10, 10, 60), bool)
    rod[3:7, 3:7, 5:55] = True
    assert shape_features(rod, spacing=(1.0,) * 3)[2] < shape_features(cube, spacing=(1.0,) * 3)[2] < 0.9
    # a ball sampled twice as finely in z keeps its physical volume and roundness when the spacing says so
    z, y, x = np.meshgrid(np.arange(41) * 0.5 - 10, np.arange(21) - 10.0, np.arange(21) - 10.0, indexing="ij")
    ellipsoid = z**2 + y**2 + x**2 <= 64  # radius 8 µm with 0.5 µm z-steps
    volume, _, sphericity = shape_features(ellipsoid, spacing=(0.5, 1.0, 1.0))
    assert volume == pytest.approx(4 / 3 * math.pi * 8**3, rel=0.03)
    assert sphericity > 0.95


def test_disc_area_perimeter_and_circularity():
    mask = _ball((60, 60), 20.0)
    area, perimeter, circularity = shape_features(mask, spacing=(0.25, 0.25))
    assert area == pytest.approx(math.pi * 5.0**2, rel=0.01)
    assert perimeter == pytest.approx(2 * math.pi * 5.0, rel=0.03)
    assert 0.95 < circularity <= 1.0
    square = np.zeros((60, 60), bool)
    square[10:50, 10:50] = True
    assert shape_features(square, spacing=(1.0, 1.0))[2] == pytest.approx(math.pi / 4, rel=0.06)


def test_entropy_of_constant_and_uniform_intensities():
    assert intensity_entropy(np.full(1000, 0.42)) == 0.0
    uniform = (np.arange(256 * 40) % 256 + 0.5) / 256
    assert intensity_entropy(uniform) == pytest.approx(8.0)
    assert intensity_entropy(np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert math.isnan(intensity_entropy(np.array([])))


@pytest.mark.parametrize("shape, spacing", [((24, 40, 40), (0.8, 0.8, 0.8)), ((48, 48), (0.8, 0.8))])
def test_cell_and_nucleus_found_from_the_image_alone(shape, spacing):
    rng = np.random.default_rng(0)
    image = _cell_image(shape, cell_radius=min(shape) / 2 - 2, nucleus_radius=min(shape) / 5, rng=rng)
    cell = segment_cell(image[0], spacing=spacing)
    nucleus = segment_nucleus(image[1], spacing=spacing)
    true_cell = _ball(shape, min(shape) / 2 - 2)
    true_nucleus = _ball(shape, min(shape) / 5)
    for found, truth in ((cell, true_cell), (nucleus, true_nucleus)):
        assert (found & truth).sum() / (found | truth).sum() > 0.95  # a one-voxel (0.8 µm) shell with a gap
    features = cell_features(image, spacing=spacing)
    assert list(features) == list(FEATURE_NAMES) and len(features) == 14
    unit = float(np.prod(spacing))
    assert features["cell_volume"] == pytest.approx(true_cell.sum() * unit, rel=0.1)
    assert features["nucleus_volume"] == pytest.approx(true_nucleus.sum() * unit, rel=0.15)
    assert features["nucleus_sphericity"] > 0.9
    # nucleus intensities: uniform in [0.5, 1] plus a little noise
    assert features["nucleus_median"] == pytest.approx(0.765, abs=0.03)
    assert features["nucleus_std"] == pytest.approx(0.5 / math.sqrt(12), rel=0.15)
    assert 4.0 < features["nucleus_entropy"] < 8.0  # ~128 of 256 bins occupied by the uniform texture
    assert features["cell_mean"] < features["nucleus_mean"]


def test_brightness_does_not_change_shape_and_blank_images_give_nan():
    rng = np.random.default_rng(1)
    image = _cell_image((20, 32, 32), cell_radius=13, nucleus_radius=6, rng=rng)
    bright, dim = cell_features(image, spacing=(1.0,) * 3), cell_features(image * 0.3, spacing=(1.0,) * 3)
    for name in ("cell_volume", "nucleus_volume", "cell_sphericity", "nucleus_surface"):
        assert dim[name] == pytest.approx(bright[name], rel=1e-6)
    assert dim["nucleus_mean"] == pytest.approx(0.3 * bright["nucleus_mean"], rel=1e-5)
    blank = cell_features(np.zeros((2, 8, 8, 8), np.float32), spacing=(1.0,) * 3)
    assert all(math.isnan(value) for value in blank.values())


def test_feature_table_rows_follow_the_batch_and_bad_shapes_fail():
    rng = np.random.default_rng(2)
    small = _cell_image((32, 32), cell_radius=12, nucleus_radius=4, rng=rng)
    large = _cell_image((32, 32), cell_radius=15, nucleus_radius=7, rng=rng)
    table = feature_table(np.stack([small, large]), spacing=(1.0, 1.0))
    assert list(table.columns) == list(FEATURE_NAMES) and len(table) == 2
    assert table.loc[0, "cell_volume"] < table.loc[1, "cell_volume"]
    assert table.loc[0, "nucleus_volume"] < table.loc[1, "nucleus_volume"]
    with pytest.raises(ValueError):
        cell_features(small[0], spacing=(1.0, 1.0))
    with pytest.raises(ValueError):
        cell_features(small, spacing=(1.0, 1.0, 1.0))
