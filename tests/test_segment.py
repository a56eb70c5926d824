"""Segmentation: known answers on constructed images, and accuracy against the synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from statcell import segment, vocabulary

SPACING = (0.29, 0.216, 0.216)


def _ball(shape, centre_um, radius_um):
    z, y, x = np.indices(shape)
    return ((z + 0.5) * SPACING[0] - centre_um[0]) ** 2 + ((y + 0.5) * SPACING[1] - centre_um[1]) ** 2 + \
        ((x + 0.5) * SPACING[2] - centre_um[2]) ** 2 <= radius_um**2


def test_touching_nuclei_are_split_and_a_lone_one_is_not():
    shape = (30, 60, 90)
    touching = _ball(shape, (4.3, 6.5, 6.0), 3.0) | _ball(shape, (4.3, 6.5, 12.0), 3.0)
    lone = _ball(shape, (4.3, 6.5, 17.0), 0.9)  # smaller than the split depth: still one nucleus
    rng = np.random.default_rng(0)
    dna = 100 + 300 * (touching | lone) + rng.normal(0, 5, shape)
    labels = segment.segment_nuclei(dna, spacing=SPACING, settings=segment.SegmentationSettings(
        nucleus_min_volume_um3=1.0))
    assert labels.max() == 3
    assert len(np.unique(labels[_ball(shape, (4.3, 6.5, 6.0), 2.0)])) == 1
    left, right = labels[_ball(shape, (4.3, 6.5, 6.0), 2.0)], labels[_ball(shape, (4.3, 6.5, 12.0), 2.0)]
    assert np.unique(left) != np.unique(right)


def test_cells_grow_from_their_nuclei_up_to_the_membrane():
    shape = (24, 40, 80)
    cells = np.zeros(shape, dtype=int)
    cells[2:20, 2:38, 2:40] = 1
    cells[2:20, 2:38, 40:78] = 2
    membrane = 100 + 400 * ((cells > 0) & ~ndimage.binary_erosion(cells > 0)) + 400 * (
        np.isin(np.arange(shape[2]), [39, 40])[None, None] & (cells > 0))
    nuclei = np.zeros(shape, dtype=np.int32)
    nuclei[8:14, 15:25, 15:25] = 1
    nuclei[8:14, 15:25, 55:65] = 2
    labels = segment.segment_cells(membrane.astype(float), nuclei, spacing=SPACING)
    table = segment.match_labels(cells, labels)
    assert (table["matched"] == [1, 2]).all()
    for label in (1, 2):  # every voxel inside the membrane shell goes to the right cell; the shell itself is shared
        interior = ndimage.binary_erosion(cells == label)
        assert (labels[interior] == label).all()
    assert table["iou"].min() > 0.85
    assert labels[0].max() == 0 and labels[-1].max() == 0  # background above and below


def test_a_stack_that_starts_inside_its_cells_keeps_their_cut_faces_and_the_medium_beside_them_stays_background():
    """The first slice cuts through two cells (their lateral membranes, no basal one) beside a strip of medium: only
    the medium, open to the FOV's side, seeds the background there; each cell keeps its cut face and its inside."""
    shape = (24, 40, 100)
    cells = np.zeros(shape, dtype=int)
    cells[:20, 2:38, 2:40] = 1
    cells[:20, 2:38, 40:78] = 2  # x 78 on: medium beside the colony
    below = np.concatenate([cells[:1].repeat(3, axis=0), cells])  # the cells go on below the stack's first slice
    shell = (below > 0) & ~ndimage.binary_erosion(below > 0)
    membrane = 100 + 400 * shell[3:] + 400 * (np.isin(np.arange(shape[2]), [39, 40])[None, None] & (cells > 0))
    nuclei = np.zeros(shape, dtype=np.int32)
    nuclei[8:14, 15:25, 15:25] = 1
    nuclei[8:14, 15:25, 55:65] = 2
    labels = segment.segment_cells(membrane.astype(float), nuclei, spacing=SPACING)
    for label in (1, 2):
        interior = ndimage.binary_erosion(cells == label, border_value=1)  # the cut face is inside, not a surface
        assert interior[0].any() and (labels[interior] == label).all()
    assert labels[:, :, 80:].max() == 0 and labels[-1].max() == 0  # the medium beside and above the cells
    assert segment.match_labels(cells, labels)["iou"].min() > 0.9


def test_match_labels_scores_iou():
    truth = np.array([[1, 1, 1, 1, 0, 2, 2]])
    predicted = np.array([[5, 5, 0, 0, 0, 7, 7]])
    table = segment.match_labels(truth, predicted)
    assert table.to_dict("list") == {"label": [1, 2], "matched": [5, 7], "iou": [0.5, 1.0]}


@pytest.fixture(scope="module")
def accuracy(tiny_fovs, tiny_settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells, nuclei = [], []
    for fov_id, fov in tiny_fovs.items():
        if not fov_id.endswith("_00") or fov.cells["dataset"].iloc[0] != vocabulary.MAIN_DATASET:
            continue
        predicted_nuclei = segment.segment_nuclei(fov.image[1], spacing=tiny_settings.pixel_size_um)
        predicted_cells = segment.segment_cells(fov.image[0], predicted_nuclei, spacing=tiny_settings.pixel_size_um)
        interior = fov.cells.loc[~fov.cells["touches_border"], ["label", "mitotic_stage"]]
        cells.append(segment.match_labels(fov.cell_labels, predicted_cells).merge(interior, on="label"))
        nuclei.append(segment.match_labels(fov.nucleus_labels, predicted_nuclei).merge(interior, on="label"))
    return pd.concat(cells), pd.concat(nuclei)


def test_cell_segmentation_matches_ground_truth(accuracy):
    cells, _ = accuracy
    assert len(cells) >= 40
    assert cells["iou"].median() >= 0.85
    assert (cells["iou"] >= 0.5).mean() >= 0.95


def test_nucleus_segmentation_matches_ground_truth(accuracy):
    _, nuclei = accuracy
    assert nuclei["iou"].median() >= 0.90


def test_a_working_grid_segments_on_binned_voxels_and_returns_labels_on_the_fovs_grid(tiny_fovs, tiny_settings):
    """0.216 µm pixels binned 2 x 2 (0.43 µm): labels on the FOV's grid, constant over each block, nucleus k in cell
    k, and every true cell and nucleus found nearly as well as on the full grid (the boundaries are coarser)."""
    spacing = tiny_settings.pixel_size_um
    full, coarse = segment.SegmentationSettings(), segment.SegmentationSettings(working_voxel_um=0.4)
    assert segment.binning_factors(spacing, coarse.working_voxel_um) == (1, 2, 2)
    for fov_id in ("nucleoli_00", "golgi_00", "microtubules_00"):
        fov = tiny_fovs[fov_id]
        interior = fov.cells.loc[~fov.cells["touches_border"], "label"]
        scores = {}
        for name, settings in (("full", full), ("coarse", coarse)):
            nuclei = segment.segment_nuclei(fov.image[1], spacing=spacing, settings=settings)
            cells = segment.segment_cells(fov.image[0], nuclei, spacing=spacing, settings=settings)
            assert nuclei.shape == cells.shape == fov.image.shape[1:]
            for kind, truth, found in (("cells", fov.cell_labels, cells), ("nuclei", fov.nucleus_labels, nuclei)):
                scores[name, kind] = segment.match_labels(truth, found).set_index("label").loc[interior, "iou"]
        even = cells[:, : cells.shape[1] // 2 * 2, : cells.shape[2] // 2 * 2]
        assert (even[:, ::2, ::2] == even[:, 1::2, 1::2]).all()  # one label per 2 x 2 block
        inside = nuclei > 0
        assert (cells[inside] == nuclei[inside]).mean() > 0.99
        for kind in ("cells", "nuclei"):
            loss = scores["full", kind] - scores["coarse", kind]
            assert loss.max() < 0.1 and loss.median() < 0.05, (fov_id, kind, loss)
