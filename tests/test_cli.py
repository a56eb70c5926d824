"""The statcell command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from statcell import io, synth
from statcell.cli import main
from tests.conftest import TINY_SYNTHETIC


def test_synthesize_writes_images_manifests_and_ground_truth(tmp_path):
    settings = {**TINY_SYNTHETIC, "structures": ["golgi", "control_dna"], "drug_structures": ["golgi"],
                "drug_treatments": ["vehicle", "brefeldin_a"]}
    assert main(["synthesize", "--settings", json.dumps(settings), "--outdir", str(tmp_path), "--threads", "2"]) == 0
    main_manifest = io.read_manifest(synth.manifest_path(tmp_path, "main"))
    drug_manifest = io.read_manifest(synth.manifest_path(tmp_path, "drugs"))
    assert list(main_manifest["fov_id"]) == ["golgi_00", "control_dna_00"]
    assert list(drug_manifest["drug"]) == ["vehicle", "brefeldin_a"]
    assert list(drug_manifest["concentration_um"]) == [0.0, 5.0]
    for path in pd.concat([main_manifest, drug_manifest])["path"]:
        image = io.read_image(path)
        assert image.data.shape[0] == 3
        assert image.spacing == (0.29, 0.216, 0.216)
    truth = pd.read_parquet(synth.ground_truth_table_path(tmp_path))
    assert set(truth["fov_id"]) == {"golgi_00", "control_dna_00", "vehicle_golgi_00", "brefeldin_a_golgi_00"}
    assert {"fov_id", "label", "structure", "mitotic_stage", "cell_volume_um3", "height_um", "drug"} <= set(truth)


def test_bad_settings_exit_2_naming_the_key(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "statcell", "synthesize", "--settings", '{"seed": "x"}', "--outdir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert run.returncode == 2
    assert "config key 'synthetic.seed'" in run.stderr
    assert not any(tmp_path.iterdir())


def test_help_lists_one_subcommand_per_rule():
    run = subprocess.run([sys.executable, "-m", "statcell", "--help"], capture_output=True, text=True, check=True)
    assert "synthesize" in run.stdout


def test_each_handler_is_beside_its_parser_and_every_name_is_literal():
    """cli.py reads as a list of subcommands: each handler ``_x`` is followed by ``_add_x``, which names the
    subcommand literally and sets that handler."""
    import ast
    import re
    from pathlib import Path

    from statcell import cli

    source = Path(cli.__file__).read_text()
    assert not re.search(r"add_parser\(f[\"']", source)
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    names = [node.name for node in functions]
    adders = [node for node in functions if node.name.startswith("_add_") and "set_defaults" in ast.unparse(node)]
    assert len(adders) > 15
    for node in adders:
        handler = re.search(r"set_defaults\(handler=(\w+)", ast.unparse(node)).group(1)
        if handler in ("_train", "_plot"):  # one handler for several literal subcommands (train-*, plot-*)
            continue
        assert names.index(node.name) == names.index(handler) + 1, f"{handler} is not just before {node.name}"
    run = subprocess.run([sys.executable, "-m", "statcell", "--help"], capture_output=True, text=True, check=True)
    # figures' subcommands are named in the registry
    from statcell.plots import registry

    sources = source + Path(registry.__file__).read_text()
    for name in re.findall(r"^    ([a-z][a-z-]+)", run.stdout, re.MULTILINE):
        assert f'"{name}"' in sources, name


def test_a_preprocessing_job_imports_no_table_or_plotting_library():
    """Every rule starts `python -m statcell`; a segmentation job (124 in the default run) needs numpy, SciPy and
    scikit-image only, and pandas alone would add 0.17 s to its ~0.9 s."""
    code = ("import sys; from statcell import cli, io, segment; cli._build_parser(); "
            "print(sorted(name for name in ('pandas', 'matplotlib', 'torch', 'zarr') if name in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_a_missing_input_is_named_as_missing(tmp_path, caplog):
    """pandas says no more than the path of a file it cannot find; the command says what is wrong with it."""
    missing = tmp_path / "cells.parquet"
    assert main(["make-thumbnails", "--store", str(tmp_path / "cells.zarr"), "--cells", str(missing),
                 "--output", str(tmp_path / "thumbnails.parquet")]) == 1
    assert f"file not found: {missing}" in caplog.text
    assert main(["screenshot-explorer", "--page", str(tmp_path / "main.html"), "--output", str(tmp_path / "a.png"),
                 "--browser", "chromium"]) == 1
    assert "explorer page not found" in caplog.text and not (tmp_path / "a.png").exists()


def test_a_truncated_or_empty_input_is_named(tmp_path, caplog):
    """numpy and zipfile say what is wrong with a broken archive, not which one it is; the command names it."""
    empty, truncated, garbage = tmp_path / "empty.npz", tmp_path / "truncated.npz", tmp_path / "garbage.npz"
    empty.write_bytes(b"")
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    garbage.write_text("not an archive\n")  # numpy takes it for pickled objects, which it refuses to load
    for broken, error in ((empty, "EOFError"), (truncated, "BadZipFile"), (garbage, "ValueError")):
        assert main(["plot-truncated-prior", "--truncated", str(broken), "--output", str(tmp_path / "x.png")]) == 1
        assert f"{error}: " in caplog.text and f"inputs ({broken}" in caplog.text and "corrupt file" in caplog.text
