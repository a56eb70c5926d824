"""Shared fixtures: a tiny synthetic colony that every test can afford."""

from __future__ import annotations

import copy

import pytest

from statcell import synth
from statcell.config import validate_config

TINY_SYNTHETIC = {
    "seed": 7,
    "fovs_per_structure": 1,
    "drug_fovs_per_condition": 1,
    "fov_size_um": {"z": 14.0, "y": 30.0, "x": 30.0},
    "mitotic_fraction": 0.3,
}


@pytest.fixture(scope="session")
def tiny_section() -> dict:
    """The ``synthetic`` config section of a tiny colony (all structures, one FOV each, small FOVs)."""
    return validate_config({"synthetic": copy.deepcopy(TINY_SYNTHETIC)})["synthetic"]


@pytest.fixture(scope="session")
def tiny_settings(tiny_section: dict) -> synth.SynthSettings:
    return synth.SynthSettings.from_config(tiny_section)


@pytest.fixture(scope="session")
def tiny_fovs(tiny_settings: synth.SynthSettings) -> dict[str, synth.SyntheticFov]:
    """Every planned FOV of the tiny colony, generated once per test session, by FOV id."""
    return {plan.fov_id: synth.synthesize_fov(plan, tiny_settings) for plan in synth.plan_fovs(tiny_settings)}


def fov_of(fovs: dict[str, synth.SyntheticFov], structure: str, drug: str = "") -> synth.SyntheticFov:
    """The first FOV of a structure (and treatment)."""
    name = f"{drug}_{structure}_00" if drug else f"{structure}_00"
    return fovs[name]
