"""The configuration schema: complete, documented, and strict with clear messages."""

from __future__ import annotations

import re

import pytest
import yaml

from statcell.config import DEFAULT_CONFIG_PATH, ConfigError, check_workflow_config, load_config, load_schema, \
    model_training_section, section_settings, validate_config
from statcell.train import TrainSettings


def _walk(schema: dict, path: str = ""):
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}{name}", sub
        yield from _walk(sub, f"{path}{name}.")


def test_every_key_has_description_type_and_default():
    for key, sub in _walk(load_schema()):
        assert sub.get("description"), f"{key} has no description"
        alternatives = sub.get("oneOf", [])
        assert "type" in sub or (alternatives and all("type" in option for option in alternatives)), \
            f"{key} has no type"
        assert "default" in sub, f"{key} has no default"


def test_embedded_config_spells_out_the_schema_defaults():
    assert load_config(DEFAULT_CONFIG_PATH) == validate_config({})


def test_defaults_are_filled_without_touching_the_input():
    partial = {"synthetic": {"seed": 3}}
    completed = validate_config(partial)
    assert partial == {"synthetic": {"seed": 3}}
    assert completed["synthetic"]["seed"] == 3
    assert completed["synthetic"]["pixel_size_um"] == {"z": 0.29, "y": 0.216, "x": 0.216}
    assert completed["data"]["source"] == "synthetic"


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'synthetic\.fovs_per_structure': 'four' is not of type integer"):
        validate_config({"synthetic": {"fovs_per_structure": "four"}})
    with pytest.raises(ConfigError, match=r"'data\.fovs_per_job': 0 is less than the minimum of 1"):
        validate_config({"data": {"fovs_per_job": 0}})


@pytest.mark.parametrize(("beta", "message"), [
    (2, r"'training\.beta': 2 is greater than the maximum of 1"),
    ({"reference": 0.3}, r"'training\.beta': 'target' is a required property"),
    ({"reference": "high", "target": 0.1}, r"'training\.beta\.reference': 'high' is not of type number"),
    ("high", r"'training\.beta': 'high' is not of type number or object"),
])
def test_a_value_of_several_forms_is_described_in_the_form_it_has(beta, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"training": {"beta": beta}})


def test_beta_is_one_number_or_one_per_model():
    assert model_training_section(validate_config({"training": {"beta": 0.3}})["training"], "target")["beta"] == 0.3
    per_model = validate_config({"training": {"beta": {"reference": 0.3, "target": 0.05}}})["training"]
    assert [model_training_section(per_model, kind)["beta"] for kind in ("reference", "target")] == [0.3, 0.05]
    with pytest.raises(ValueError, match="per model"):
        TrainSettings.from_config(per_model)


def test_epochs_are_one_number_or_one_per_model():
    default = validate_config({})["training"]
    assert [TrainSettings.from_config(default, kind).epochs for kind in ("reference", "target")] == [48, 80]
    one = validate_config({"training": {"epochs": 7, "beta": 0.3}})["training"]
    assert [TrainSettings.from_config(one, kind).epochs for kind in ("reference", "target")] == [7, 7]
    assert TrainSettings.from_config(one).epochs == 7
    with pytest.raises(ValueError, match="training.epochs is set per model"):
        TrainSettings.from_config({**default, "beta": 0.3})
    with pytest.raises(ConfigError, match="epochs"):
        validate_config({"training": {"epochs": {"target": 96}}})


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"unknown config key 'synthetic\.fov_size_um\.w'"):
        validate_config({"synthetic": {"fov_size_um": {"w": 3}}})
    with pytest.raises(ConfigError, match=r"unknown config key 'trainig'"):
        validate_config({"trainig": {}})


def test_out_of_range_and_enum_values_are_rejected():
    with pytest.raises(ConfigError, match=r"'synthetic\.mitotic_fraction'"):
        validate_config({"synthetic": {"mitotic_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"'synthetic\.structures\.0'.*not one of"):
        validate_config({"synthetic": {"structures": ["golgi_apparatus"]}})
    with pytest.raises(ConfigError, match=r"'data\.source'"):
        validate_config({"data": {"source": "s3"}})


@pytest.mark.parametrize(("config", "message"), [
    ({"synthetic": {"fovs_per_structure": 2.0}}, "'synthetic.fovs_per_structure': 2.0 is not of type integer (write 2,"),
    ({"crop": {"shape": {"z": 16.0}}}, "'crop.shape.z': 16.0 is not of type integer"),
    ({"training": {"learning_rate": "1e-3"}}, "'1e-3' is not of type number (YAML reads 1e-3 as text: write 1.0e-3)"),
    ({"training": {"latent_dim": 2}}, "'training.latent_dim': 2 is less than the minimum of 4"),
])
def test_a_value_that_would_fail_deep_in_a_run_is_refused_with_a_hint(config, message):
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    assert message in str(raised.value)


@pytest.mark.parametrize(("config", "message"), [
    ({"crop": {"min_cell_volume_um3": 5000.0, "max_cell_volume_um3": 4000.0}},
     "'crop.min_cell_volume_um3' (5000) is not below 'crop.max_cell_volume_um3' (4000): every cell would be rejected"),
    ({"beta_sweep": {"lowest": 0.5, "highest": 0.5}}, "'beta_sweep.lowest' (0.5) is not below 'beta_sweep.highest'"),
    ({"predict": {"count": 0, "generated": 0}}, "'predict.count' and 'predict.generated' are both 0"),
    ({"figures": {"latent_space": {"colormap": "notacmap"}}}, "'notacmap' is not a Matplotlib colormap"),
    ({"analysis": {"walk_steps": 4}}, "'analysis.walk_steps' is 4: give an odd number"),
])
def test_bounds_out_of_order_stop_the_workflow_naming_both_keys(config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_workflow_config(validate_config(config))


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as raised:
        validate_config({"synthetic": {"seed": -1, "cell_spacing_um": "ten"}})
    assert "synthetic.seed" in str(raised.value) and "synthetic.cell_spacing_um" in str(raised.value)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synthetic": {"seed": "zero"}}))
    with pytest.raises(ConfigError, match=rf"(?s){bad}.*synthetic\.seed"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_section_settings_from_inline_json():
    assert section_settings("synthetic", inline_json='{"seed": 5}')["seed"] == 5
    with pytest.raises(ConfigError, match="not valid JSON"):
        section_settings("synthetic", inline_json="{seed: 5")


def test_paper3d_preset_builds_the_paper_networks():
    """The preset's crops and widths give the models whose parameter count the paper states (122,627,829)."""
    import torch

    from statcell.config import load_config
    from statcell.models import ReferenceVAE, TargetVAE
    from statcell.train import model_config

    config = load_config(DEFAULT_CONFIG_PATH.parent / "paper3d.yaml")
    settings = TrainSettings.from_config(config["training"])
    shape = tuple(config["crop"]["shape"][axis] for axis in "zyx")
    with torch.device("meta"):
        reference = ReferenceVAE(model_config("reference", settings, shape, 24))
        target = TargetVAE(model_config("target", settings, shape, 24))
    assert sum(p.numel() for model in (reference, target) for p in model.parameters()) == 122_627_829


@pytest.mark.parametrize(("config", "key"), [
    ({"data": {"source": "manifest"}}, "data.manifest"),
    ({"data": {"source": "manifest", "manifest": ""}}, "data.manifest"),
    ({"data": {"source": "allencell"}}, "allencell.csv"),
])
def test_a_data_source_without_its_input_file_names_the_key(config, key):
    source = config["data"]["source"]
    with pytest.raises(ConfigError, match=rf"config key '{key}': required when data\.source is '{source}'"):
        validate_config(config)


@pytest.mark.parametrize(("data", "key", "readers"), [
    ({"drug_manifest": "drugs.csv"}, "drug_manifest", "'allencell' or 'manifest'"),
    ({"manifest": "fovs.csv"}, "manifest", "'manifest'"),
    ({"cell_annotations": "notes.csv"}, "cell_annotations", "'manifest'"),
    ({"source": "allencell", "manifest": "fovs.csv"}, "manifest", "'manifest'"),
    ({"source": "allencell", "cell_annotations": "notes.csv"}, "cell_annotations", "'manifest'"),
])
def test_a_data_key_the_source_does_not_read_is_named_not_ignored(data, key, readers):
    source = data.get("source", "synthetic")
    with pytest.raises(ConfigError, match=rf"'data\.{key}' is set, but data\.source is '{source}', which does not "
                                          rf"read it \(set data\.source to {readers} to use it\)"):
        validate_config({"data": data, "allencell": {"csv": "c.csv"}})
    assert validate_config({"data": {"source": "allencell", "drug_manifest": "drugs.csv"},
                            "allencell": {"csv": "c.csv"}})["data"]["drug_manifest"] == "drugs.csv"


def test_a_data_source_with_its_input_file_is_valid():
    assert validate_config({"data": {"source": "manifest", "manifest": "m.csv"}})["data"]["manifest"] == "m.csv"
    assert validate_config({"data": {"source": "allencell"}, "allencell": {"csv": "c.csv"}})["allencell"]["csv"] == \
        "c.csv"


def test_control_settings_defaults_and_forms():
    completed = validate_config({})
    assert completed["normalize"]["controls"] is True and completed["normalize"]["control_cells"] == "auto"
    assert completed["analysis"]["control_treatment"] == "auto"
    assert validate_config({"normalize": {"control_cells": 40}})["normalize"]["control_cells"] == 40
    with pytest.raises(ConfigError, match=r"'normalize\.control_cells': 0 is less than the minimum of 1"):
        validate_config({"normalize": {"control_cells": 0}})
    with pytest.raises(ConfigError, match=r"'normalize\.controls': 'yes' is not of type boolean"):
        validate_config({"normalize": {"controls": "yes"}})


def test_automatic_working_voxel_is_half_the_crop_voxel_and_a_number_is_kept():
    assert validate_config({})["segmentation"]["working_voxel_um"] == 0.4
    assert validate_config({"crop": {"voxel_size_um": 0.29}})["segmentation"]["working_voxel_um"] == 0.145
    assert validate_config({"segmentation": {"working_voxel_um": 0}})["segmentation"]["working_voxel_um"] == 0
    with pytest.raises(ConfigError, match="segmentation.working_voxel_um"):
        validate_config({"segmentation": {"working_voxel_um": "fine"}})


def test_no_extra_dataset_may_take_the_name_of_a_results_folder_of_the_run():
    import re

    root = DEFAULT_CONFIG_PATH.parents[1]
    written = {name for path in [root / "Snakefile", *(root / "rules").glob("*.smk")]
               for name in re.findall(r"results/([a-z_]+)/", path.read_text())}
    embed = load_schema()["properties"]["data"]["properties"]["embed"]["propertyNames"]
    assert written and written <= set(embed["not"]["enum"])
    for name in written:
        with pytest.raises(ConfigError, match="data.embed"):
            validate_config({"data": {"embed": {name: "m.csv"}}})
