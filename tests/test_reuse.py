"""Reusing trained models: the weights-only export, the loader that never executes pickles, the checks of a model
against the data, and a workflow run that embeds an extra dataset with given models and trains none."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr

from statcell import __version__, cli, io, train
from statcell.analysis import embed
from statcell.config import ConfigError, validate_config
from statcell.models import export
from statcell.models.blocks import memory_format
from statcell.vocabulary import CONTROLS


def _export(tiny_models, kind: str) -> Path:
    return tiny_models[kind].with_suffix(".pt")


class _Marker:
    """A pickled object whose unpickling creates a file: it shows whether a loader executed the pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _copy_export(source: Path, folder: Path, name: str = "model") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / f"{name}.pt")
    shutil.copy(source.with_suffix(".json"), folder / f"{name}.json")
    return folder / f"{name}.pt"


def _rewrite_card(weights: Path, **changes) -> None:
    card = json.loads(weights.with_suffix(".json").read_text())
    card.update(changes)
    weights.with_suffix(".json").write_text(json.dumps(card))


# The export


@pytest.mark.parametrize("kind", ["reference", "target"])
def test_training_writes_an_export_that_gives_the_trained_models_outputs(tiny_models, kind):
    """The .pt export, the weights-only read of the .ckpt and Lightning's own (unpickling) load agree exactly."""
    from statcell.train import _lightning_module

    exported, card = train.load_model(_export(tiny_models, kind))
    from_checkpoint, _ = train.load_model(tiny_models[kind])
    lightning = _lightning_module().load_from_checkpoint(tiny_models[kind], map_location="cpu").model.eval()
    lightning.to(memory_format=memory_format(3))  # the layout load_model gives 3D networks: the same arithmetic
    assert all(parameter.is_contiguous(memory_format=memory_format(3))
               for parameter in exported.parameters() if parameter.dim() == 5)
    images = torch.from_numpy(io.read_cells(tiny_models["store"], range(6), channels=None))
    if kind == "reference":
        inputs = (images[:, :2],)
    else:
        inputs = (images[:, 2:3], images[:, :2], torch.tensor([0, 1, 2, 0, 1, 2]))
    with torch.inference_mode():
        outputs = [network.encode(*inputs).mean for network in (exported, from_checkpoint, lightning)]
        decoded = [network.decode(outputs[0], *inputs[1:]) for network in (exported, lightning)]
    assert outputs[0].abs().sum() > 0
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.testing.assert_close(outputs[0], outputs[2], rtol=0, atol=0)
    torch.testing.assert_close(decoded[0], decoded[1], rtol=0, atol=0)
    # the card holds what rebuilding and checking the model needs
    assert card["kind"] == kind and card["format"] == export.CARD_FORMAT
    assert card["crop_shape"] == [8, 8, 16] and card["voxel_size_um"] == [1.0, 1.0, 1.0]
    assert card["structures"] == ["control_dna", "control_membrane", "nucleoli"]
    assert card["config"]["latent_dim"] == 6 and card["training"]["widths"] == [8, 16]
    assert card["dataset"]["name"] == "main" and card["dataset"]["n_cells"] == 48
    assert card["statcell_version"] == __version__
    assert card["weights_sha256"] == export.file_sha256(_export(tiny_models, kind))
    state = torch.load(_export(tiny_models, kind), weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())  # tensors and nothing else


def test_a_pickle_bearing_file_is_refused_without_running_it(tiny_models, tmp_path):
    marker = tmp_path / "pickle_ran"
    # the marker works: an unrestricted load runs the pickle
    torch.save({"payload": _Marker(marker)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    # an export whose tensors come with a pickled object, its card's checksum updated to match
    weights = _copy_export(_export(tiny_models, "reference"), tmp_path / "bad")
    state = torch.load(weights, weights_only=True)
    torch.save({**state, "extra": _Marker(marker)}, weights)
    _rewrite_card(weights, weights_sha256=export.file_sha256(weights))
    with pytest.raises(export.ModelFileError, match="refusing to load .*model.pt: it holds pickled objects"):
        train.load_model(weights)
    assert not marker.exists()

    # the same in a Lightning-style checkpoint
    checkpoint = torch.load(tiny_models["reference"], weights_only=True)
    checkpoint["hyper_parameters"]["note"] = _Marker(marker)
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(export.ModelFileError, match="refusing to load"):
        train.load_model(tmp_path / "bad.ckpt")
    assert not marker.exists()

    # and through the command that imports a given model
    status = cli.main(["import-model", "--kind", "reference", "--weights", str(weights), "--store",
                       str(tiny_models["store"]), "--cells", str(tiny_models["cells"]), "--output",
                       str(tmp_path / "out" / "reference.pt")])
    assert status == 1 and not marker.exists() and not (tmp_path / "out" / "reference.pt").exists()


def test_an_export_that_does_not_match_its_card_is_refused(tiny_models, tmp_path):
    weights = _copy_export(_export(tiny_models, "target"), tmp_path / "a")
    other = torch.load(_export(tiny_models, "reference"), weights_only=True)
    torch.save(other, weights)  # the other model's tensors under this card
    with pytest.raises(export.ModelFileError, match="does not match its card .*SHA-256"):
        train.load_model(weights)
    _rewrite_card(weights, weights_sha256=export.file_sha256(weights))
    with pytest.raises(export.ModelFileError, match="do not fit the network its card describes"):
        train.load_model(weights)

    weights = _copy_export(_export(tiny_models, "target"), tmp_path / "b")
    weights.with_suffix(".json").unlink()
    with pytest.raises(export.ModelFileError, match=r"model card .*model.json is missing"):
        train.load_model(weights)
    weights.with_suffix(".json").write_text(json.dumps({"kind": "target", "format": "other/9", "config": {},
                                                        "structures": [], "beta": 0.1}))
    with pytest.raises(export.ModelFileError, match="format 'other/9'"):
        train.load_model(weights)


# Checks of a model against the data


def test_mismatches_name_each_differing_field():
    card = export.ModelCard(kind="target", config={}, structures=["golgi", "nucleoli"], beta=0.1,
                            crop_shape=[16, 16, 24], voxel_size_um=[0.8, 0.8, 0.8],
                            channels=["membrane", "dna", "structure", "cell_mask", "nucleus_mask"])
    fits = {"crop_shape": (16, 16, 24), "voxel_size_um": (0.8, 0.8, 0.8), "structures": ["golgi"],
            "channels": ["membrane", "dna", "structure", "cell_mask", "nucleus_mask"]}
    assert export.mismatches(card, **fits) == []
    assert export.mismatches(card, crop_shape=None, voxel_size_um=None, channels=None, structures=None) == []
    cases = {
        "crop_shape": ((32, 32, 48), r"crop shape: the model was trained on \(16, 16, 24\) voxels .* \(32, 32, 48\)"),
        "voxel_size_um": ((0.317, 0.317, 0.317), "voxel size: .*0.8 x 0.8 x 0.8 µm .*0.317 x 0.317 x 0.317 µm"),
        "channels": (["dna", "membrane", "structure", "cell_mask", "nucleus_mask"], "channels: .*'dna', 'membrane'"),
        "structures": (["golgi", "actin", "tubulin"], "structures: the data holds 'actin', 'tubulin', which the "
                                                      "target model does not know"),
    }
    for field, (value, message) in cases.items():
        problems = export.mismatches(card, **{**fits, field: value})
        assert len(problems) == 1 and re.search(message, problems[0]), problems
    reference = export.ModelCard(kind="reference", config={}, structures=["golgi"], beta=0.1)
    assert export.mismatches(reference, structures=["actin"]) == []  # the reference model has no labels
    with pytest.raises(export.ModelMismatchError) as error:
        export.check_fits(card, model="m.pt", data="d.zarr", crop_shape=(8, 8, 8), structures=["actin"])
    assert "the target model m.pt does not fit the data d.zarr" in str(error.value)
    assert "crop shape" in str(error.value) and "'actin'" in str(error.value)


def _store_like(source: Path, folder: Path, *, shape: tuple[int, ...], voxel: float) -> Path:
    """A store of random cells of another crop shape and voxel size, with channel names."""
    root = zarr.open_group(folder / "cells.zarr", mode="w", zarr_format=3)
    root.attrs.update({"ome": {"multiscales": [{"datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, voxel, voxel, voxel]}]}]}]},
        "statcell": {"channels": ["membrane", "dna", "structure", "cell_mask", "nucleus_mask"]}})
    root.create_array("0", data=np.random.default_rng(0).random((4, 5, *shape), dtype=np.float32))
    io.write_table(pd.read_parquet(source).head(4).assign(store_index=range(4)), folder / "cells.parquet")
    return folder


def test_embedding_stops_naming_what_differs(tiny_models, tmp_path):
    other = _store_like(tiny_models["cells"], tmp_path, shape=(16, 16, 32), voxel=0.5)
    cells = pd.read_parquet(other / "cells.parquet").assign(structure=["nucleoli", "golgi", "golgi", "nucleoli"])
    io.write_table(cells, other / "cells.parquet")
    status = cli.main(["embed-cells", "--settings", '{"elbo_samples": 1}', "--checkpoint",
                       str(_export(tiny_models, "target")), "--store", str(other / "cells.zarr"), "--cells",
                       str(other / "cells.parquet"), "--embeddings", str(tmp_path / "e.parquet"),
                       "--dimensions", str(tmp_path / "d.csv")])
    assert status == 1 and not (tmp_path / "e.parquet").exists()
    model, card = train.load_model(_export(tiny_models, "target"))
    with pytest.raises(export.ModelMismatchError) as error:
        embed.embed_cells(other / "cells.zarr", cells, model=model, hparams=card, samples=1, batch_size=4, seed=0)
    message = str(error.value)
    for field in ("crop shape", "voxel size", "structures: the data holds 'golgi'"):
        assert field in message, message


def test_import_model_checks_kind_and_data_and_copies_tensors_only(tiny_models, tmp_path):
    out = tmp_path / "models" / "target.pt"
    args = ["--weights", str(_export(tiny_models, "target")), "--store", str(tiny_models["store"]), "--cells",
            str(tiny_models["cells"]), "--output", str(out)]
    assert cli.main(["import-model", "--kind", "reference", *args]) == 2 and not out.exists()  # the wrong model
    assert cli.main(["import-model", "--kind", "target", *args]) == 0
    imported, card = train.load_model(out)
    original, _ = train.load_model(_export(tiny_models, "target"))
    for (name, a), (_, b) in zip(imported.state_dict().items(), original.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert card["imported_from"] == str(_export(tiny_models, "target").resolve())
    # data the model does not know stops the import
    other = _store_like(tiny_models["cells"], tmp_path / "other", shape=(8, 8, 16), voxel=2.0)
    status = cli.main(["import-model", "--kind", "target", "--weights", str(_export(tiny_models, "target")),
                       "--store", str(other / "cells.zarr"), "--cells", str(other / "cells.parquet"), "--output",
                       str(tmp_path / "x.pt")])
    assert status == 1 and not (tmp_path / "x.pt").exists()


def test_a_given_model_that_cannot_serve_the_crop_settings_stops_the_run(tiny_models, tmp_path):
    crop = validate_config({"crop": {"shape": {"z": 8, "y": 8, "x": 16}, "voxel_size_um": 1.0}})["crop"]
    weights = _export(tiny_models, "target")
    train.check_given_model(weights, kind="target", crop=crop)  # fits: nothing raised
    with pytest.raises(ConfigError, match=r"models\.reference: .*holds a target model, not a reference model"):
        train.check_given_model(weights, kind="reference", crop=crop)
    with pytest.raises(ConfigError, match=r"models\.target: .*does not fit the `crop` settings.*\n  - crop shape: "
                       r"the model was trained on \(8, 8, 16\).*\(16, 16, 24\)\n  - voxel size"):
        train.check_given_model(weights, kind="target", crop=validate_config({})["crop"])
    with pytest.raises(ConfigError, match=r"models\.target: .*missing\.pt does not exist"):
        train.check_given_model(tmp_path / "missing.pt", kind="target", crop=crop)
    lone = _copy_export(weights, tmp_path)
    lone.with_suffix(".json").unlink()
    with pytest.raises(ConfigError, match=r"models\.target: .*model card .*model\.json is missing"):
        train.check_given_model(lone, kind="target", crop=crop)


def test_a_given_target_model_gets_only_the_control_classes_it_was_trained_with(tiny_models, tmp_path):
    """The training dataset's built controls are there to be embedded by the target model: a given model without
    some control classes (trained elsewhere, perhaps with none) gets only those it has labels for."""
    from tests.test_workflow import TINY, copy_workflow, snakemake

    run = copy_workflow(tmp_path / "run")
    weights = _copy_export(_export(tiny_models, "target"), run / "lab_models", "target")
    known = [name for name in json.loads(weights.with_suffix(".json").read_text())["structures"]
             if name not in ("control_blank", "control_noise")]
    _rewrite_card(weights, structures=known)
    expected = [kind for kind in CONTROLS if kind in known]
    assert expected and len(expected) < len(CONTROLS)
    crop = {"shape": {"z": 8, "y": 8, "x": 16}, "voxel_size_um": 1.0}  # the tiny models' crops
    colony = {**TINY["synthetic"], "structures": ["nucleoli", "control_membrane"], "drug_structures": ["nucleoli"]}
    (run / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "synthetic": colony, "crop": crop,
                                                   "models": {"target": "lab_models/target.pt"}}))
    planned = snakemake(run, "-n", "-p", "results/main/cells.parquet", "results/drugs/cells.parquet")
    commands = [line for line in planned.stdout.splitlines() if "normalize-cells" in line]
    main = next(line for line in commands if "--dataset main" in line)
    assert f"--build-controls --control-classes {' '.join(expected)} " in main
    drugs = next(line for line in commands if "--dataset drugs" in line)
    assert "--build-controls" not in drugs


def test_config_keys_for_reuse_are_validated():
    config = validate_config({"models": {"reference": "/lab/reference.pt"}, "data": {"embed": {"plate_7": "m.csv"}}})
    assert config["models"] == {"reference": "/lab/reference.pt", "target": None}
    assert config["data"]["embed"] == {"plate_7": "m.csv"}
    assert validate_config({})["data"]["embed"] == {} and validate_config({})["models"]["target"] is None
    for bad, key in [({"models": {"target": "t.ckpt"}}, "models.target"),
                     ({"data": {"embed": {"drugs": "m.csv"}}}, "data.embed"),
                     ({"data": {"embed": {"my set": "m.csv"}}}, "data.embed")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(bad)


# The workflow


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_runs")
def test_workflow_embeds_an_extra_dataset_with_given_models_and_trains_none(tmp_path_factory, tmp_path):
    from tests.test_workflow import TINY, copy_workflow, scheduled_jobs, snakemake, tiny_full_run

    trained = tiny_full_run(tmp_path_factory)
    started = time.monotonic()
    run = copy_workflow(tmp_path / "run")
    # the lab's own dataset, already preprocessed (the tiny run's images and store, their times kept, so that the run
    # takes them as they are), models trained elsewhere (the tiny run's exports) and a new experiment: the tiny run's
    # drug FOVs as a manifest
    for folder in ("synthetic", "main"):
        shutil.copytree(trained / "results" / folder, run / "results" / folder,
                        ignore=shutil.ignore_patterns("embeddings"))
    for kind in ("reference", "target"):
        _copy_export(trained / "results" / "models" / f"{kind}.pt", run / "lab_models", kind)
    manifest = io.read_manifest(trained / "results" / "synthetic" / "drugs_manifest.csv")
    (run / "plate_7").mkdir()
    for path in manifest["path"]:
        shutil.copy(path, run / "plate_7" / Path(path).name)
    manifest["path"] = [f"{Path(path).name}" for path in manifest["path"]]
    manifest.to_csv(run / "plate_7" / "manifest.csv", index=False)
    reuse = {**TINY, "models": {"reference": "lab_models/reference.pt", "target": "lab_models/target.pt"},
             "data": {"embed": {"plate_7": "plate_7/manifest.csv"}}}
    (run / "tiny.yaml").write_text(yaml.safe_dump(reuse))

    jobs = scheduled_jobs(snakemake(run, "-n").stdout)
    rules = {job.rule for job in jobs}
    assert not rules & {"train_reference", "train_target", "synthesize"}, rules
    preprocessed = {job.rule for job in jobs if job.stage == "preprocess_fovs"}
    assert "preprocess_fovs_plate_7_000" in preprocessed, preprocessed
    assert not any(rule.startswith("preprocess_fovs_main_") for rule in preprocessed), preprocessed
    normalized = {job.wildcards for job in jobs if job.rule == "normalize_cells"}
    assert "dataset=plate_7" in normalized and "dataset=main" not in normalized, normalized
    assert {job.wildcards for job in jobs if job.rule == "import_model"} == {"model=reference", "model=target"}
    assert {"dataset=plate_7, model=reference", "dataset=plate_7, model=target"} <= {
        job.wildcards for job in jobs if job.rule == "embed_cells"}

    targets = [f"results/{dataset}/embeddings/{kind}.parquet" for dataset in ("main", "plate_7")
               for kind in ("reference", "target")]
    snakemake(run, *targets)
    assert not (run / "logs" / "train_reference.log").exists()
    assert not (run / "results" / "models" / "training").exists()
    for kind in ("reference", "target"):
        _, card = train.load_model(run / "results" / "models" / f"{kind}.pt")
        assert card["imported_from"] == str((run / "lab_models" / f"{kind}.pt").resolve())
        # the same images through the same models: the new experiment's cells embed as the tiny run's drug cells did
        new = pd.read_parquet(run / "results" / "plate_7" / "embeddings" / f"{kind}.parquet")
        before = pd.read_parquet(trained / "results" / "drugs" / "embeddings" / f"{kind}.parquet")
        assert len(new) == len(before) > 5 and new["cell_id"].str.startswith("plate_7/").all()
        assert new["structure"].tolist() == before["structure"].tolist() and "microtubules" in set(new["structure"])
        mu = embed.mean_columns(card["config"]["latent_dim"])
        assert np.isfinite(new[[*mu, "elbo"]].to_numpy()).all() and new[mu].to_numpy().std(axis=0).max() > 0
        np.testing.assert_allclose(new[mu].to_numpy(), before[mu].to_numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new["elbo"], before["elbo"], rtol=1e-5)

    # An experiment of a structure the given target model has no label for stops the run before any job.
    manifest.loc[0, "structure"] = "actin"
    manifest.to_csv(run / "plate_7" / "actin.csv", index=False)
    (run / "actin.yaml").write_text(yaml.safe_dump({"data": {"embed": {"plate_7": "plate_7/actin.csv"}}}))
    refused = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "tiny.yaml", "actin.yaml"],
                             cwd=run, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert ("data.embed.plate_7 (plate_7/actin.csv) holds the structure(s) 'actin', which the target model "
            "models.target (lab_models/target.pt) has no label for") in refused.stdout + refused.stderr
    print(f"reuse workflow: {time.monotonic() - started:.0f} s after the tiny run")
