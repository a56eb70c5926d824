"""The figure layer (statcell.plots): palette and helpers, drawing without torch or zarr, and one registry that the
CLI, the rules and the schema agree with."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from statcell import cli
from statcell.config import ConfigError, load_schema
from statcell.plots import registry, style
from statcell.plots.overview import plot_colony_overview

ROOT = Path(__file__).resolve().parents[1]
PLOTS = sorted((ROOT / "statcell" / "plots").glob("*.py"))


def test_composite_adds_channel_colours_and_clips():
    ones = np.ones((2, 3), dtype=np.float32)
    rgb = style.composite({"membrane": ones, "structure": ones})
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_allclose(rgb[0, 0], np.clip(np.add(style.CHANNEL_COLOURS["membrane"],
                                                         style.CHANNEL_COLOURS["structure"]), 0, 1))
    assert style.composite({"dna": 0 * ones}).max() == 0


def test_display_range_maps_percentiles_to_unit_interval():
    values = np.arange(1001, dtype=float)
    scaled = style.display_range(values, low=10, high=90)
    assert scaled.min() == 0 and scaled.max() == 1
    assert abs(scaled[500] - 0.5) < 1e-6


def _imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a file, function-local ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_figure_module_imports_torch_or_zarr():
    for path in PLOTS:
        assert not _imported_packages(path) & {"torch", "lightning", "zarr"}, path.name


def test_every_figure_module_imports_and_draws_with_torch_and_zarr_blocked(tmp_path):
    """Import each plots module, and draw the colony overview, in a Python where torch and zarr cannot be imported."""
    modules = [f"statcell.plots.{path.stem}" for path in PLOTS if path.stem != "__init__"]
    script = f"""
import importlib, sys
import numpy as np

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"torch", "zarr", "lightning"}}:
            raise ImportError(f"blocked: {{name}}")

sys.meta_path.insert(0, Blocker())
for module in {modules!r}:
    importlib.import_module(module)
from statcell.plots import registry
for figure in registry.FIGURES:
    figure.draw_function
from statcell.plots.overview import plot_colony_overview
fovs = {{"fov_id": np.array(["a"]), "structure": np.array(["golgi"]), "drug": np.array([""]),
        "concentration_um": np.zeros(1), "spacing": np.array([[0.3, 0.2, 0.2]]),
        "projection_0": np.random.default_rng(0).random((3, 40, 50)),
        "section_0": np.random.default_rng(1).random((3, 10, 50))}}
plot_colony_overview(fovs, {str(tmp_path / "overview.png")!r}, dpi=30)
assert not {{"torch", "zarr"}} & set(sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "overview.png").stat().st_size > 1000


def test_a_figure_writes_exactly_its_png_and_svg(tmp_path):
    rng = np.random.default_rng(0)
    fovs = {"fov_id": np.array(["a", "b"]), "structure": np.array(["golgi", "golgi"]),
            "drug": np.array(["", "paclitaxel"]), "concentration_um": np.array([0.0, 5.0]),
            "spacing": np.array([[0.29, 0.216, 0.216]] * 2)}
    for k in range(2):
        fovs[f"projection_{k}"], fovs[f"section_{k}"] = rng.random((3, 60, 80)), rng.random((3, 12, 80))
    shown = plot_colony_overview(fovs, tmp_path / "out" / "colony_overview.png", dpi=30)
    assert shown["drug"].tolist() == ["", "paclitaxel"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["colony_overview.png",
                                                                         "colony_overview.svg"]


def test_registry_names_are_literal_and_unique():
    names = [figure.name for figure in registry.FIGURES]
    assert len(set(names)) == len(names)
    for figure in registry.FIGURES:
        assert figure.command == "plot-" + figure.name.replace("_", "-")
        assert (ROOT / figure.caption).exists(), figure.caption
        assert set(figure.section_settings.values()) <= {(s, k) for s, k in figure.section_settings.values()
                                                         if s in registry.SECTION_OPTIONS}
        assert figure.needs in ("", "fovs", "drug_set")
    # the literal command names are in the registry's source, so grep finds them
    source = (ROOT / "statcell" / "plots" / "registry.py").read_text()
    for figure in registry.FIGURES:
        assert f'"{figure.command}"' in source and f'"{figure.name}"' in source


def test_every_figure_setting_has_a_schema_entry_with_description_and_default():
    figures = load_schema()["properties"]["figures"]
    for figure in registry.FIGURES:
        entry = figures["properties"][figure.settings]
        assert entry.get("description") and "default" in entry, figure.settings
        for key, setting in entry.get("properties", {}).items():
            assert setting.get("description") and "default" in setting, f"figures.{figure.settings}.{key}"
    draws = {figure.settings: set() for figure in registry.FIGURES}
    import inspect

    for figure in registry.FIGURES:
        draws[figure.settings] |= set(inspect.signature(figure.draw_function).parameters)
    for key, parameters in draws.items():  # every setting of an entry is a parameter of a figure reading it
        assert set(figures["properties"][key].get("properties", {})) <= parameters, key
    for figure in registry.FIGURES:  # and every other config setting a figure reads exists
        for section, key in figure.section_settings.values():
            assert key in load_schema()["properties"][section]["properties"]


def test_figure_settings_are_validated_and_an_unknown_key_is_named():
    settings = style.figure_settings("latent_space", inline_json=json.dumps({"dpi": 70,
                                                                             "latent_space": {"point_size": 3}}))
    assert settings == {"dpi": 70, "point_size": 3, "colormap": "viridis"}
    assert style.figure_settings("colony_overview", inline_json="{}")["dpi"] == 60  # a gallery's own dpi
    with pytest.raises(ConfigError, match="markers"):
        style.figure_settings("latent_space", inline_json=json.dumps({"latent_space": {"markers": 3}}))


def _rule_blocks(path: Path) -> dict[str, str]:
    blocks = re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.MULTILINE)
    return {re.match(r"rule (\w+):", block).group(1): block for block in blocks if block.startswith("rule ")}


def test_rules_registry_and_cli_agree():
    """One rule per registry figure, running its subcommand with every input, writing the PNG and its SVG, in the
    report with its caption and category, in the plots environment; one subcommand per figure with those options."""
    rules = _rule_blocks(ROOT / "rules" / "figures.smk")
    assert set(rules) == {figure.rule for figure in registry.FIGURES}
    subcommands = cli._build_parser()._subparsers._group_actions[0].choices
    # every plot-* subcommand is a figure of the registry, but the explorer (an HTML page per dataset)
    assert {name for name in subcommands if name.startswith("plot-")} - {"plot-explorer"} == set(registry.BY_COMMAND)
    for figure in registry.FIGURES:
        block = rules[figure.rule]
        inputs = re.search(r"\n    input:\n(.*?)\n    output:", block, re.DOTALL).group(1)
        assert re.findall(r"^\s+(\w+)=", inputs, re.MULTILINE) == [name for name, _ in figure.inputs], figure.rule
        assert f'"{figure.output}"' in block and f'caption="../{figure.caption}"' in block, figure.rule
        assert f'category="{figure.category}"' in block and "figure=report(" in block, figure.rule
        assert f'svg="{figure.output[:-4]}.svg"' in block, figure.rule
        assert f'figure_settings("{figure.settings}")' in block, figure.rule
        assert '"../envs/plots.yaml"' in block and f'"logs/{figure.rule}.log"' in block, figure.rule
        shell = block[block.index("shell:"):]
        assert f" {figure.command} " in shell and "--output {output.figure}" in shell, figure.rule
        for name, _ in figure.inputs:
            assert f"--{name.replace('_', '-')} {{input.{name}}}" in shell, (figure.rule, name)
        for section, _ in figure.section_settings.values():
            assert registry.SECTION_OPTIONS[section] in shell, (figure.rule, section)
        options = {option for action in subcommands[figure.command]._actions for option in action.option_strings}
        assert {f"--{name.replace('_', '-')}" for name, _ in figure.inputs} | {"--output", "--settings"} <= options


def test_cli_has_no_run_time_subcommand_names():
    """Every subcommand name is a literal in the source (cli.py, the registry, the explorer's modules): grep finds
    them."""
    source = "".join(path.read_text() for path in (ROOT / "statcell").rglob("*.py"))
    assert not re.search(r"add_parser\(f[\"']", source)
    for name in cli._build_parser()._subparsers._group_actions[0].choices:
        assert f'"{name}"' in source, name


def test_plot_command_reads_the_inputs_it_names(tmp_path):
    """A plot-* subcommand end to end, from tables: rate and distortion against β."""
    table = pd.DataFrame({"beta": [0.0, 0.5, 1.0], "rate": [9.0, 3.0, 1.0], "distortion": [1.0, 2.0, 5.0],
                          "elbo": [-10.0, -5.0, -6.0], "test_cells": 20})
    table.to_csv(tmp_path / "rate_distortion.csv", index=False)
    output = tmp_path / "figures" / "beta_rate_distortion.png"
    assert cli.main(["plot-beta-rate-distortion", "--settings", '{"dpi": 50}', "--rate-distortion",
                     str(tmp_path / "rate_distortion.csv"), "--output", str(output)]) == 0
    assert output.read_bytes()[:4] == b"\x89PNG" and output.with_suffix(".svg").exists()
    assert cli.main(["plot-beta-rate-distortion", "--settings", '{"dpi": 10}', "--rate-distortion",
                     str(tmp_path / "rate_distortion.csv"), "--output", str(output)]) == 2  # dpi below the minimum


def test_a_table_without_a_column_its_figure_reads_is_named_with_its_writer(tmp_path):
    """A table written by an older version of its rule (here without ``distortion``) stops the figure with a message
    that names the file and the command that writes it, not with a bare KeyError."""
    table = pd.DataFrame({"beta": [0.1, 0.5, 0.9], "rate": [9.0, 3.0, 1.0], "elbo": [-10.0, -5.0, -6.0],
                          "test_cells": 20})
    table.to_csv(tmp_path / "rate_distortion.csv", index=False)
    figure = next(figure for figure in registry.FIGURES if figure.name == "beta_rate_distortion")
    with pytest.raises(ValueError, match=r"no input table has column 'distortion': .*rate_distortion\.csv \(.*"
                                         r"analyze-beta-sweep\)\. A table written by an older statcell"):
        registry.draw(figure, {"rate_distortion": tmp_path / "rate_distortion.csv"}, tmp_path / "figure.png",
                      settings={"dpi": 50})


def test_config_figures_section_only_names_known_entries():
    figures = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["figures"]
    # besides dpi, only the registry's entries and the explorer's (rules/explorer.smk, no figure of the registry)
    assert set(figures) - {"dpi", "explorer"} <= {figure.settings for figure in registry.FIGURES}


def test_colony_overview_from_the_fovs_through_its_archive(tmp_path):
    """project-colony (reads the FOVs) writes what plot-colony-overview (reads only the archive) draws."""
    from statcell import io

    rng = np.random.default_rng(0)
    rows = []
    for fov, (structure, drug) in enumerate((("golgi", ""), ("golgi", ""), ("golgi", "paclitaxel"))):
        path = tmp_path / f"fov{fov}.ome.tiff"
        io.write_ome_tiff(path, (rng.random((3, 6, 40, 48)) * 1000).astype(np.uint16),
                          channel_names=["membrane", "dna", "structure"], spacing=(0.29, 0.216, 0.216))
        rows.append({"fov_id": f"fov{fov}", "path": str(path), "membrane_channel": 0, "dna_channel": 1,
                     "structure_channel": 2, "structure": structure, "pixel_size_z_um": 0.29,
                     "pixel_size_y_um": 0.216, "pixel_size_x_um": 0.216, "drug": drug,
                     "concentration_um": 5.0 if drug else 0.0})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    archive = tmp_path / "colony_projections.npz"
    assert cli.main(["project-colony", str(tmp_path / "manifest.csv"), "--output", str(archive)]) == 0
    with np.load(archive) as fovs:  # no pickled objects: the names are unicode arrays
        assert fovs["fov_id"].tolist() == ["fov0", "fov2"] and fovs["projection_1"].shape == (3, 40, 48)
        assert fovs["section_0"].shape == (3, 6, 48)
    output = tmp_path / "figures" / "colony_overview.png"
    assert cli.main(["plot-colony-overview", "--settings", "{}", "--fovs", str(archive), "--output", str(output)]) == 0
    assert output.stat().st_size > 5000 and output.with_suffix(".svg").exists()


def test_colony_overview_passes_over_an_unusable_fov_and_reads_the_scene_named(tmp_path, caplog):
    import tifffile

    from statcell import io
    from statcell.analysis import overview

    rng = np.random.default_rng(1)
    scenes = [(rng.random((3, 6, 40, 48)) * 1000).astype(np.uint16) for _ in range(2)]
    with tifffile.TiffWriter(tmp_path / "positions.ome.tiff", ome=True) as positions:
        for pixels in scenes:
            positions.write(pixels, metadata={"axes": "CZYX"})
    row = {"membrane_channel": 0, "dna_channel": 1, "structure_channel": 2, "structure": "golgi",
           "pixel_size_z_um": 0.29, "pixel_size_y_um": 0.216, "pixel_size_x_um": 0.216}
    pd.DataFrame([{**row, "fov_id": "gone", "path": "nowhere.ome.tiff", "scene": None},
                  {**row, "fov_id": "second", "path": "positions.ome.tiff", "scene": 1}]).to_csv(
        tmp_path / "manifest.csv", index=False)
    arrays = overview.colony_projections([tmp_path / "manifest.csv"])
    assert arrays["fov_id"].tolist() == ["second"]
    np.testing.assert_array_equal(arrays["projection_0"], scenes[1].astype(np.float32).max(axis=1))
    assert "gone: image file not found" in caplog.text
    assert io.read_manifest(tmp_path / "manifest.csv")["scene"].tolist() == [None, 1]
    pd.read_csv(tmp_path / "manifest.csv").head(1).to_csv(tmp_path / "none_usable.csv", index=False)
    with pytest.raises(io.FovError, match=r"no FOV of .*none_usable.csv can be used; the first: FOV gone: image"):
        overview.colony_projections([tmp_path / "none_usable.csv"])
