"""Figure helpers."""

from __future__ import annotations

import numpy as np

from statcell import figures


def test_composite_adds_channel_colours_and_clips():
    ones = np.ones((2, 3), dtype=np.float32)
    rgb = figures.composite({"membrane": ones, "structure": ones})
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_allclose(rgb[0, 0], np.clip(np.add(figures.CHANNEL_COLOURS["membrane"],
                                                         figures.CHANNEL_COLOURS["structure"]), 0, 1))
    assert figures.composite({"dna": 0 * ones}).max() == 0


def test_display_range_maps_percentiles_to_unit_interval():
    values = np.arange(1001, dtype=float)
    scaled = figures.display_range(values, low=10, high=90)
    assert scaled.min() == 0 and scaled.max() == 1
    assert abs(scaled[500] - 0.5) < 1e-6
