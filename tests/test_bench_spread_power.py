"""bench/bench_spread_power.py: a constructed widening of the treated arm, found by the spectrum test only."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_spread_power", Path(__file__).resolve().parents[1] / "bench" / "bench_spread_power.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def _drug_set(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two arms of 7 FOVs x 12 cells from one distribution (elongated along the first axis): no drug effect."""
    rng = np.random.default_rng(seed)
    units = np.repeat(np.arange(14), 12).astype(str)
    treated = np.repeat(np.arange(14) >= 7, 12)
    latents = rng.normal(size=(len(units), 4)) * np.array([3.0, 1.5, 1.0, 0.5])
    return latents, treated, units


def test_widening_scales_the_treated_spread_along_the_axis_and_keeps_its_mean():
    latents, treated, _ = _drug_set()
    axis = np.array([0.0, 0.6, 0.8, 0.0])
    widened = bench.widen(latents, treated, axis=axis, factor=2.5)
    assert np.array_equal(widened[~treated], latents[~treated])
    assert np.allclose(widened[treated].mean(axis=0), latents[treated].mean(axis=0))
    assert np.isclose((widened[treated] @ axis).std(), 2.5 * (latents[treated] @ axis).std())
    across = np.array([1.0, 0.0, 0.0, 0.0])  # orthogonal to the axis: untouched
    assert np.allclose(widened[treated] @ across, latents[treated] @ across)


def test_a_fov_subset_keeps_whole_fovs_of_each_arm():
    _, treated, units = _drug_set()
    keep = bench.fov_subset(units, treated, per_arm=3, rng=np.random.default_rng(0))
    assert len(np.unique(units[keep & treated])) == len(np.unique(units[keep & ~treated])) == 3
    assert all(keep[units == unit].all() for unit in np.unique(units[keep]))
    assert bench.fov_subset(units, treated, per_arm=9, rng=np.random.default_rng(0)).all()


def test_the_power_table_finds_a_wide_spread_by_its_spectrum_only():
    latents, treated, units = _drug_set()
    table = bench.power_table(latents, treated, units, axes=[0], factors=[1.0, 3.0], fovs_per_arm=[7], draws=1,
                              permutations=1000, spectrum_components=3, bar=0.01, seed=0).set_index("sd_factor")
    assert table.loc[1.0, "spectrum_found"] == 0 and table.loc[1.0, "spectrum_p"] > 0.05
    assert table.loc[3.0, "spectrum_found"] == 1 and table.loc[3.0, "dEIG"] > 1.0
    assert (table["centroid_found"] == 0).all()
    assert list(table["fovs_per_arm"]) == [7, 7] and list(table["draws"]) == [1, 1]


def test_pairs_are_read_as_structure_and_drug_or_named_as_wrong():
    assert bench.pair("tight_junctions:paclitaxel") == ("tight_junctions", "paclitaxel")
    with pytest.raises(argparse.ArgumentTypeError, match="structure:drug"):
        bench.pair("golgi")
