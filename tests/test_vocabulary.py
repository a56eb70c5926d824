"""The project's shared names: one definition, which the schema, the simulator and the readers agree with."""

from __future__ import annotations

from statcell import allencell, synth, vocabulary
from statcell.analysis import coupling, perturbation
from statcell.config import load_schema


def test_the_config_schema_offers_exactly_the_vocabulary():
    synthetic = load_schema()["properties"]["synthetic"]["properties"]
    assert tuple(synthetic["structures"]["items"]["enum"]) == vocabulary.STRUCTURES
    assert tuple(synthetic["drug_structures"]["items"]["enum"]) == vocabulary.STRUCTURES
    assert tuple(synthetic["drug_treatments"]["items"]["enum"]) == vocabulary.TREATMENTS


def test_stages_are_interphase_then_the_mitotic_classes_the_simulator_draws():
    assert vocabulary.MITOTIC_STAGES == (vocabulary.INTERPHASE, *vocabulary.MITOTIC_CLASSES)
    assert tuple(synth._MITOTIC_STAGE_WEIGHTS) == vocabulary.MITOTIC_CLASSES


def test_real_data_layouts_and_analyses_map_onto_the_vocabulary():
    for layout in allencell.LAYOUTS.values():
        assert set(layout.mitotic_stages.values()) <= set(vocabulary.MITOTIC_STAGES), layout.name
    assert set(coupling.CALIBRATION_CONTROLS) <= set(vocabulary.CONTROLS)
    assert perturbation.CONTROL == vocabulary.VEHICLE in vocabulary.TREATMENTS
    assert vocabulary.DATASETS == (vocabulary.MAIN_DATASET, vocabulary.DRUG_DATASET)
    assert not set(vocabulary.REAL_STRUCTURES) & set(vocabulary.CONTROLS)
