"""Where a structure lies in its cell (statcell.analysis.localization), on constructed cells with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from statcell.analysis.localization import (LOCALIZATION_REGIONS, localization_profile, localization_regions,
                                            localization_table)


def _cell(shape=(8, 12, 12)) -> tuple[np.ndarray, np.ndarray]:
    """A box-shaped cell (z 1-6, y and x 2-9) around a box-shaped nucleus (z 3-4, y and x 5-6)."""
    cell = np.zeros(shape, bool)
    cell[1:7, 2:10, 2:10] = True
    nucleus = np.zeros(shape, bool)
    nucleus[3:5, 5:7, 5:7] = True
    return cell, nucleus


def test_the_regions_partition_the_crop():
    cell, nucleus = _cell()
    regions = localization_regions(cell, nucleus)
    assert list(regions) == list(LOCALIZATION_REGIONS)
    np.testing.assert_array_equal(np.sum([region.astype(int) for region in regions.values()], axis=0), 1)
    np.testing.assert_array_equal(regions["nucleus"], nucleus)
    assert regions["cell_edge"][1, 5, 5] and regions["cell_edge"][3, 2, 5]  # bottom and side faces
    assert regions["cytoplasm"][2, 3, 3] and not regions["cytoplasm"][1, 3, 3]


@pytest.mark.parametrize(("region", "placed"), [
    ("nucleus", (slice(3, 5), slice(5, 7), slice(5, 7))),
    ("cell_edge", (slice(1, 7), 2, slice(2, 10))),
    ("cytoplasm", (slice(2, 6), slice(3, 5), slice(3, 9))),
    ("outside", (0, slice(None), slice(None))),
])
def test_a_structure_in_one_region_is_all_there(region, placed):
    cell, nucleus = _cell()
    structure = np.zeros(cell.shape)
    structure[placed] = 0.7
    profile = localization_profile(structure, cell, nucleus)
    assert profile[region] == pytest.approx(1.0)
    assert sum(profile[name] for name in LOCALIZATION_REGIONS) == pytest.approx(1.0)


def test_height_runs_from_the_cells_lowest_plane_to_its_highest():
    cell, nucleus = _cell()
    for plane, height in ((1, 0.0), (6, 1.0), (3, 0.4)):
        structure = np.zeros(cell.shape)
        structure[plane, 4, 4] = 1.0
        assert localization_profile(structure, cell, nucleus)["height"] == pytest.approx(height)
    outside_only = np.zeros(cell.shape)
    outside_only[0] = 1.0
    assert np.isnan(localization_profile(outside_only, cell, nucleus)["height"])


def test_a_blank_structure_has_no_localization():
    cell, nucleus = _cell()
    profile = localization_profile(np.zeros(cell.shape), cell, nucleus)
    assert all(np.isnan(value) for value in profile.values())


def test_the_table_averages_each_class_and_skips_blanks():
    cell, nucleus = _cell()
    in_nucleus = np.where(nucleus, 1.0, 0.0)
    at_edge = np.where(localization_regions(cell, nucleus)["cell_edge"], 0.5, 0.0)
    masks = np.stack([np.stack([cell, nucleus])] * 3)
    table = localization_table(pd.Series(["nucleoli", "nucleoli", "control_blank"]), masks, {
        "real": np.stack([in_nucleus, in_nucleus, np.zeros(cell.shape)]),
        "sample": np.stack([in_nucleus, at_edge, at_edge])})
    rows = table.set_index(["structure", "source"])
    assert rows.loc[("nucleoli", "real"), "nucleus"] == pytest.approx(1.0)
    assert rows.loc[("nucleoli", "sample"), "nucleus"] == pytest.approx(0.5)
    assert rows.loc[("nucleoli", "sample"), "cell_edge"] == pytest.approx(0.5)
    assert rows.loc[("control_blank", "real"), "cells"] == 0
    assert np.isnan(rows.loc[("control_blank", "real"), "nucleus"])
    assert rows.loc[("control_blank", "sample"), "cell_edge"] == pytest.approx(1.0)
