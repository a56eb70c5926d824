"""The ``statcell`` command: one subcommand per workflow rule, so every stage also runs by hand.

Each subcommand reads its settings either from a config file (``--config``, validated against the schema; the
default is the embedded ``config/config.yaml``) or, as the Snakemake rules do, from its config section as inline JSON
(``--settings``). Each subcommand's handler is followed by the function that declares its parser; the ``plot-*``
subcommands come from the figure registry (:mod:`statcell.plots.registry`), one per figure of the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from statcell import memory, vocabulary
from statcell.config import ConfigError, section_settings
from statcell.plots import registry

if TYPE_CHECKING:  # each subcommand imports what it needs when it runs (a job pays only its own imports)
    import numpy as np

    from statcell import crop, io, segment

log = logging.getLogger("statcell")


def _add_settings_options(parser: argparse.ArgumentParser, *,
                          settings: str = "this stage's config section as JSON (used by the rules)") -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="YAML", help="workflow config file (default: the embedded config)")
    source.add_argument("--settings", metavar="JSON", help=settings)


def _add_fov_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fov-record", metavar="JSON", action="append", default=[],
                        help="a FOV's manifest row as JSON (used by the rules); once per FOV")
    parser.add_argument("--manifest", help="FOV manifest CSV (with --fov, by hand)")
    parser.add_argument("--fov", action="append", default=[], help="FOV id in the manifest; once per FOV")


def _add_trained_models_options(parser: argparse.ArgumentParser) -> None:
    """Both trained models and the dataset they were trained on."""
    parser.add_argument("--reference", required=True, help="reference model: NAME.pt with NAME.json (or a .ckpt)")
    parser.add_argument("--target", required=True, help="target model: NAME.pt with NAME.json (or a .ckpt)")
    parser.add_argument("--store", required=True, help="cells.zarr the models were trained on")
    parser.add_argument("--cells", required=True, help="cells.parquet of the store")


def _channel_argument(text: str) -> int | str:
    """A channel option's value: a 0-based index or a channel name (:func:`statcell.io.channel_selector`)."""
    from statcell import io

    try:
        return io.channel_selector(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def _fov_records(args: argparse.Namespace) -> list[io.FovRecord]:
    """The FOVs to work on, in order: inline JSON of each one's manifest row (the rules), or a manifest and FOV ids
    (by hand)."""
    from statcell import io

    if args.fov_record:
        records = []
        for record in args.fov_record:
            try:
                records.append(io.FovRecord.from_row(json.loads(record)))
            except (json.JSONDecodeError, KeyError) as error:
                raise ConfigError(f"--fov-record {record[:200]!r} is not a manifest row as JSON "
                                  f"({type(error).__name__}: {error})") from error
        return records
    if not (args.manifest and args.fov):
        raise ConfigError("give --fov-record JSON, or --manifest CSV with --fov ID (each option once per FOV)")
    table = io.read_manifest(args.manifest).set_index("fov_id", drop=False)
    missing = [fov for fov in args.fov if fov not in table.index]
    if missing:
        raise ConfigError(f"FOV {missing[0]!r} is not in {args.manifest}")
    return [io.FovRecord.from_row(table.loc[fov].to_dict()) for fov in args.fov]


# Preprocessing
def _synthesize(args: argparse.Namespace) -> None:
    from statcell import synth

    settings = synth.SynthSettings.from_config(
        section_settings("synthetic", config_path=args.config, inline_json=args.settings)
    )
    plans = synth.plan_fovs(settings)
    log.info("generating %d FOVs of %s voxels (Z, Y, X) into %s with %d worker(s)",
             len(plans), settings.fov_shape, args.outdir, args.threads)
    cells = synth.synthesize(settings, args.outdir, workers=args.threads)
    log.info("wrote %d FOVs holding %d cells (%d not touching the border)",
             len(plans), len(cells), int((~cells["touches_border"]).sum()))


def _add_synthesize(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synthesize",
        help="generate the embedded synthetic hiPSC colony (raw FOVs, manifests, ground truth)",
        description="Generate the synthetic colony: raw/{fov}.ome.tiff, ground_truth/{fov}_labels.ome.tiff, "
        "ground_truth/cells.parquet, main_manifest.csv and drugs_manifest.csv under OUTDIR.",
    )
    _add_settings_options(parser)
    parser.add_argument("--outdir", required=True, help="output folder, e.g. results/synthetic")
    parser.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    parser.set_defaults(handler=_synthesize)


def _fov_labels(record: io.FovRecord, channels: np.ndarray, settings: segment.SegmentationSettings) -> np.ndarray:
    """The FOV's cell and nucleus labels, ``(2, Z, Y, X)`` uint16 (uint32 where an id needs it, so that given ids are
    kept): the manifest's segmentations where it names them
    (an unreadable one raises :class:`statcell.io.FovError`), else those segmented from ``channels`` (membrane, DNA,
    structure)."""
    import numpy as np

    from statcell import io, segment

    if record.cell_segmentation:
        given = []
        for kind, path in (("cell", record.cell_segmentation), ("nucleus", record.nucleus_segmentation)):
            try:
                given.append(io.read_image(path).data)
            except Exception as error:  # noqa: BLE001 - any reader failure means the file cannot be used; say which
                raise io.FovError(f"FOV {record.fov_id}: cannot read its {kind} segmentation {path}: "
                                  f"{type(error).__name__}: {error}") from error
        cells, nuclei = io.label_images(*given, same_file=record.cell_segmentation == record.nucleus_segmentation,
                                        what=f"FOV {record.fov_id}: segmentation {record.cell_segmentation}")
        log.info("%s: using the given segmentations (%d cells)", record.fov_id, len(np.unique(cells)) - 1)
    else:
        nuclei = segment.segment_nuclei(channels[1], spacing=record.spacing, settings=settings)
        cells = segment.segment_cells(channels[0], nuclei, spacing=record.spacing, settings=settings)
        log.info("%s: %d nuclei, %d cells", record.fov_id, nuclei.max(), len(np.unique(cells)) - 1)
    labels = np.stack([cells, nuclei])
    return labels.astype(np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32)


def _preprocess_one_fov(record: io.FovRecord, *, segmentation: segment.SegmentationSettings,
                        settings: crop.CropSettings, truth_labels: str | None, labels_path: str, crops_path: str,
                        table_path: str) -> None:
    """Segment one FOV, then crop and measure its cells; an unusable FOV is written as empty labels and one
    rejected table row."""
    import numpy as np
    import pandas as pd

    from statcell import crop, io

    try:
        channels = io.read_fov(record)
        labels = _fov_labels(record, channels, segmentation)
        if labels.shape[1:] != channels.shape[1:]:
            raise io.FovError(f"FOV {record.fov_id}: segmentation {record.cell_segmentation} has shape "
                              f"{labels.shape[1:]}, the image {record.path} {channels.shape[1:]}")
    except io.FovError as error:
        log.error("%s; writing empty labels", error)
        labels = np.zeros((2, 1, 1, 1), np.uint16)
        crops = np.zeros((0, len(crop.CROP_CHANNELS), *settings.shape), dtype=np.uint16)
        table = pd.DataFrame([{"label": 0, "nucleus_label": 0, "reject_reason": f"unusable_fov: {error}",
                               "crop_index": -1}])
    else:
        truth = io.read_image(truth_labels).data[0] if truth_labels else None
        crops, table = crop.crop_cells(channels, labels[0], labels[1], spacing=record.spacing, settings=settings,
                                       truth_labels=truth)
    io.write_ome_tiff(labels_path, labels, channel_names=["cell_labels", "nucleus_labels"], spacing=record.spacing)
    table.insert(0, "fov_id", record.fov_id)
    for column in ("structure", "drug", "concentration_um"):
        table[column] = getattr(record, column)
    io.write_crops(crops_path, crops)
    io.write_table(table, table_path)
    counts = table["reject_reason"].replace("", "accepted").value_counts().to_dict()
    log.info("%s: %s", record.fov_id, ", ".join(f"{count} {reason}" for reason, count in counts.items()))
    accepted = table["reject_reason"] == ""
    cut = int((accepted & table.get("touches_z_end", False)).sum())
    if cut:
        log.warning("%s: %d of %d accepted cells reach the first or last of the %d z-slices of %s: a stack that "
                    "ends inside cells cuts them (column touches_z_end)", record.fov_id, cut, int(accepted.sum()),
                    labels.shape[1], record.path)
    if accepted.any() and record.spacing[0] > settings.voxel_size_um:
        log.warning("%s: the z-step of %s, %.2f µm, is coarser than the crops' voxel (%.2f µm): the crops interpolate "
                    "between its slices, and a cell's top and bottom may fall between two slices, where the "
                    "segmentation cannot place them (README, Preprocessing; bench/bench_z_sampling.py)", record.fov_id,
                    record.path, record.spacing[0], settings.voxel_size_um)


def _preprocess_fov(args: argparse.Namespace) -> None:
    from statcell import crop, segment

    records = _fov_records(args)
    outputs = {"--labels": args.labels, "--crops": args.crops, "--table": args.table}
    if args.truth_labels:
        outputs["--truth-labels"] = args.truth_labels
    for option, paths in outputs.items():
        if len(paths) != len(records):
            raise ConfigError(f"{len(records)} FOV(s) given but {option} {len(paths)} time(s): give {option} once "
                              "per FOV, in the same order")
    segmentation = segment.SegmentationSettings.from_config(
        section_settings("segmentation", config_path=args.config, inline_json=args.settings))
    settings = crop.CropSettings.from_config(
        section_settings("crop", config_path=args.config, inline_json=args.crop_settings))
    if len(records) > 1:
        log.info("preprocessing %d FOVs in turn: %s", len(records), ", ".join(record.fov_id for record in records))
    truths = args.truth_labels or [None] * len(records)
    for record, labels, crops, table, truth in zip(records, args.labels, args.crops, args.table, truths, strict=True):
        _preprocess_one_fov(record, segmentation=segmentation, settings=settings, truth_labels=truth,
                            labels_path=labels, crops_path=crops, table_path=table)


def _add_preprocess_fov(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "preprocess-fov", help="segment FOVs, then quality-control, crop, align and measure their cells",
        description="Label nuclei (DNA channel) and cells (membrane channel, seeded by the nuclei) of a FOV, or "
        "take the segmentations the manifest names, and write them as a 2-channel label OME-TIFF (cells, nuclei). "
        "Then crop every cell to isotropic voxels, aligned and centred on its nucleus; every dropped cell is a table "
        "row with its reason, and an unreadable FOV is one rejected row. Several FOVs are done in turn when each "
        "FOV option and each output option is given once per FOV, in the same order: one process imports the "
        "imaging stack once for all of them.")
    _add_settings_options(parser, settings="the segmentation config section as JSON (used by the rules)")
    parser.add_argument("--crop-settings", metavar="JSON", help="the crop config section as JSON (used by the rules)")
    _add_fov_options(parser)
    parser.add_argument("--truth-labels", action="append", default=[],
                        help="ground-truth label image, to match cells to true cells; none, or once per FOV")
    parser.add_argument("--labels", action="append", required=True,
                        help="label image to write (.ome.tiff); once per FOV")
    parser.add_argument("--crops", action="append", required=True, help="crops to write (.npz); once per FOV")
    parser.add_argument("--table", action="append", required=True,
                        help="per-cell table to write (.parquet); once per FOV")
    parser.set_defaults(handler=_preprocess_fov)


def _import_allencell(args: argparse.Namespace) -> None:
    from statcell import allencell, crop, io

    settings = allencell.AllenCellSettings.from_config(
        section_settings("allencell", config_path=args.config, inline_json=args.settings))
    crop_settings = crop.CropSettings.from_config(
        section_settings("crop", config_path=args.config, inline_json=args.crop_settings))
    chunk = allencell.read_cell_table(settings, chunk=args.chunk)
    if chunk.empty:
        raise ConfigError(f"chunk {args.chunk!r} holds no cells of {settings.csv}")
    crops, table = allencell.import_chunk(chunk, settings=settings, crop_settings=crop_settings)
    io.write_crops(args.crops, crops)
    io.write_table(table, args.table)
    log.info("%s: imported %d of %d cells", args.chunk, len(crops), len(chunk))


def _add_import_allencell(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-allencell", help="turn one chunk of a pre-cropped Allen single-cell dataset into crops",
        description="Read the cells of one chunk of the CSV named by allencell.csv, in the layout allencell.layout "
        "(pipeline4: registered TIFFs; hipsc_single_cell: raw and mask OME-TIFFs) and write them as crops and a "
        "table in the format of crop-cells.")
    _add_settings_options(parser)
    parser.add_argument("--crop-settings", metavar="JSON", help="the crop config section as JSON")
    parser.add_argument("--chunk", required=True, help="chunk name, e.g. allencell_00000")
    parser.add_argument("--crops", required=True, help="crops to write (.npz)")
    parser.add_argument("--table", required=True, help="per-cell table to write (.parquet)")
    parser.set_defaults(handler=_import_allencell)


def _normalize_cells(args: argparse.Namespace) -> None:
    import pandas as pd

    from statcell import normalize

    settings = normalize.NormalizeSettings.from_config(
        section_settings("normalize", config_path=args.config, inline_json=args.settings))
    if len(args.crops) != len(args.tables):
        raise ConfigError(f"{len(args.crops)} crop archives but {len(args.tables)} tables")
    annotations = None
    if args.annotations:
        truth = pd.read_parquet(args.annotations).rename(columns={"label": "truth_label"})
        keep = ["fov_id", "truth_label", "mitotic_stage", "is_mitotic", "drug_responder", "golgi_unlinked",
                "junction_pool", "height_um"]
        annotations = truth[keep].rename(columns={"height_um": "true_height_um"})
    elif args.cell_annotations:
        annotations = normalize.read_cell_annotations(args.cell_annotations)
    cells = normalize.normalize_cells(args.crops, args.tables, store=args.store, cells_table=args.cells,
                                      rejects_table=args.rejects, dataset=args.dataset, voxel_um=args.voxel_um,
                                      settings=settings, threads=args.threads, annotations=annotations,
                                      build_controls=args.build_controls,
                                      control_classes=args.control_classes or vocabulary.CONTROLS)
    log.info("wrote %d cells to %s (%s)", len(cells), args.store,
             ", ".join(f"{n} {split}" for split, n in cells["split"].value_counts().items()))


def _add_normalize_cells(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "normalize-cells", help="normalize all crops of a dataset into cells.zarr and cells.parquet",
        description="Normalize every crop (background subtracted, [0, 1]) into one chunked Zarr store with Dask, "
        "and write the per-cell table (ids, splits, store indices) and the rejects.")
    _add_settings_options(parser)
    parser.add_argument("--crops", nargs="+", required=True, help="per-FOV crop archives (.npz)")
    parser.add_argument("--tables", nargs="+", required=True, help="per-FOV tables (.parquet), same order")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. main")
    parser.add_argument("--voxel-um", type=float, required=True, help="voxel edge of the crops (µm)")
    parser.add_argument("--annotations", help="ground-truth cells.parquet to join on the matched cells")
    parser.add_argument("--store", required=True, help="Zarr store to write")
    parser.add_argument("--cells", required=True, help="cells.parquet to write")
    parser.add_argument("--rejects", required=True, help="rejects.parquet to write")
    parser.add_argument("--threads", type=int, default=1, help="local Dask threads (default 1)")
    parser.add_argument("--cell-annotations", metavar="CSV", help="per-cell annotations (fov_id, label, "
                        "mitotic_stage) to join on the cells (data.cell_annotations)")
    parser.add_argument("--build-controls", action="store_true", help="add the five control classes built "
                        "from the dataset's cells (the rules pass it for the training dataset; "
                        "normalize.controls: false turns it off)")
    parser.add_argument("--control-classes", nargs="+", choices=vocabulary.CONTROLS, metavar="CLASS",
                        help=f"build only these control classes (default: all, {', '.join(vocabulary.CONTROLS)})")
    parser.set_defaults(handler=_normalize_cells)


def _project_colony(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from statcell.analysis import overview

    projections = overview.colony_projections(args.manifests)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **projections)
    log.info("projected %d FOVs (one per structure and treatment) into %s", len(projections["fov_id"]), args.output)


def _add_project_colony(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "project-colony", help="projections of the first FOV of every structure and treatment",
        description="Read the first FOV of every (structure, treatment) of the manifests and write its max "
        "projections and central xz section (membrane, DNA, structure) for the colony overview.")
    parser.add_argument("manifests", nargs="+", help="FOV manifest CSV files")
    parser.add_argument("--output", required=True, help=".npz to write")
    parser.set_defaults(handler=_project_colony)


# Models
def _train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from statcell import train

    settings = train.TrainSettings.from_config(
        section_settings("training", config_path=args.config, inline_json=args.settings), args.model)
    train.train_model(args.model, store=args.store, cells=args.cells, settings=settings,
                      checkpoint=Path(args.checkpoint).with_suffix(".ckpt"), metrics=args.metrics,
                      workdir=args.workdir)


def _add_train(commands: argparse._SubParsersAction, name: str, *, model: str) -> None:
    parser = commands.add_parser(
        name, help=f"train the {model} model on a dataset's training split",
        description=f"Train the {model} β-VAE from cells.zarr, validate every epoch, keep the checkpoint with "
        "the best validation ELBO; a rerun with the same settings resumes from WORKDIR.")
    _add_settings_options(parser)
    parser.add_argument("--store", required=True, help="cells.zarr of the training dataset")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--checkpoint", required=True,
                        help="model to write, NAME.pt or NAME.ckpt: the best Lightning checkpoint NAME.ckpt, "
                        "its weights-only export NAME.pt and its card NAME.json")
    parser.add_argument("--metrics", required=True, help="per-epoch metrics to write (.csv)")
    parser.add_argument("--workdir", required=True, help="folder of the running checkpoints (kept on failure)")
    parser.set_defaults(handler=_train, model=model)


def _add_train_reference(commands: argparse._SubParsersAction) -> None:
    _add_train(commands, "train-reference", model="reference")


def _add_train_target(commands: argparse._SubParsersAction) -> None:
    _add_train(commands, "train-target", model="target")


def _import_model(args: argparse.Namespace) -> None:
    from dataclasses import replace
    from pathlib import Path

    from statcell import io
    from statcell.analysis import embed
    from statcell.models import export

    network, card = export.load_model(args.weights)  # weights only: nothing in the file is executed
    if card.kind != args.kind:
        raise ConfigError(f"models.{args.kind}: {args.weights} holds a {card.kind} model, not a {args.kind} model")
    cells = io.read_cell_table(args.cells, store=args.store)
    embed.check_model_fits_data(card.to_dict(), args.store, cells, model_name=args.weights)
    card = export.save_model(network, replace(card, imported_from=str(Path(args.weights).resolve())), args.output)
    log.info("imported the %s model %s (trained on %s, %d cells, statcell %s): %d structures, latent size %d",
             card.kind, args.weights, card.dataset.get("name", "?"), card.dataset.get("n_cells", 0),
             card.statcell_version or "?", len(card.structures), card.config["latent_dim"])


def _add_import_model(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-model", help="check a trained model from elsewhere and copy it into the run",
        description="Load a weights-only model (NAME.pt with its card NAME.json) without executing pickled objects, "
        "check that it is a model of KIND and fits the training dataset (crop shape, voxel size, channels, "
        "structures; a message names every difference), and write it, re-saved as tensors only, to OUTPUT.")
    parser.add_argument("--kind", choices=("reference", "target"), required=True, help="which model it must be")
    parser.add_argument("--weights", required=True, help="the exported model NAME.pt (NAME.json beside it)")
    parser.add_argument("--store", required=True, help="cells.zarr of the run's training dataset")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--output", required=True, help="NAME.pt to write (its card NAME.json beside it)")
    parser.set_defaults(handler=_import_model)


def _check_models(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from statcell import io
    from statcell.analysis import model_check
    from statcell.models.precision import evaluation_precision

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    with evaluation_precision(settings["precision"]):
        kl, images, reconstruction = model_check.check_models(
            args.reference, args.target, store=args.store, cells=io.read_cell_table(args.cells, store=args.store),
            count=args.count)
    io.write_table(kl, args.kl)
    Path(args.images).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.images, **images)
    for model, values in kl.groupby("model")["kl"]:
        log.info("%s model: %d of %d latent dimensions carry more than 0.6 nats", model, int((values > 0.6).sum()),
                 len(values))
    for row in reconstruction[reconstruction["cells"] == 0].itertuples():
        log.warning("target model, %s: no test cells, so its reconstruction is not measured", row.structure)
    for row in reconstruction[reconstruction["cells"] > 0].itertuples():
        log.info("%s model, %s%s: median reconstruction r %.2f over %d of %d test cells", row.model, row.channel,
                 "" if row.structure == "all" else f" of {row.structure}", row.median_pearson,
                 row.cells_with_signal, row.cells)
    if args.reconstruction:
        io.write_table(reconstruction, args.reconstruction)


def _add_check_models(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check-models", help="each model's KL per latent dimension, and test cells with their reconstructions",
        description="Run both models on the test cells: write each model's mean KL per latent dimension, how well "
        "each channel and structure is reconstructed and, for the first test cell of each structure, max projections "
        "of the cell and its reconstructions.")
    _add_settings_options(parser, settings="the analysis section as JSON (used by the rules): its precision")
    _add_trained_models_options(parser)
    parser.add_argument("--count", type=int, default=6, help="test cells shown (default 6)")
    parser.add_argument("--kl", required=True, help="KL-per-dimension table to write (.csv)")
    parser.add_argument("--images", required=True, help="projections to write (.npz)")
    parser.add_argument("--reconstruction", help="table to write (.csv): median correlation of test cells with their "
                        "reconstructions, per channel and structure")
    parser.set_defaults(handler=_check_models)


# Embed and latent space
def _embed_cells(args: argparse.Namespace) -> None:
    from statcell import io
    from statcell.analysis import embed
    from statcell.models.precision import evaluation_precision
    from statcell.train import load_model

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    model, hparams = load_model(args.checkpoint)
    cells = io.read_cell_table(args.cells, store=args.store)
    embed.check_model_fits_data(hparams, args.store, cells, model_name=args.checkpoint)
    with evaluation_precision(settings["precision"]):
        embeddings = embed.embed_cells(args.store, cells, model=model, hparams=hparams,
                                       samples=settings["elbo_samples"], batch_size=settings["batch_size"],
                                       seed=settings["seed"])
    ranked = embed.rank_dimensions(embed.ranking_cells(embeddings, split=None if args.rank_on == "all" else "test"))
    io.write_table(embeddings, args.embeddings)
    io.write_table(ranked, args.dimensions)
    log.info("%s model: %d cells, mean ELBO %.1f; top dimensions by MAD on %s cells: %s", hparams["kind"],
             len(embeddings), embeddings["elbo"].mean(), args.rank_on, ranked["dimension"].head(4).tolist())


def _add_embed_cells(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "embed-cells", help="latent means, log-variances and K-sample ELBO of every cell under one model",
        description="Embed every cell of a dataset with a trained model (reference or target, from the checkpoint) "
        "and rank the latent dimensions by mean absolute deviation (with their mean KL).")
    _add_settings_options(parser)
    parser.add_argument("--checkpoint", required=True,
                        help="trained model: weights-only NAME.pt with NAME.json beside it (or a .ckpt)")
    parser.add_argument("--store", required=True, help="cells.zarr of the dataset")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--rank-on", choices=("test", "all"), default="test",
                        help="cells the dimensions are ranked on: the test split (default) or all cells")
    parser.add_argument("--embeddings", required=True, help="per-cell table to write (.parquet)")
    parser.add_argument("--dimensions", required=True, help="ranked dimensions to write (.csv)")
    parser.set_defaults(handler=_embed_cells)


def _correlate_latent_space(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd

    from statcell import io
    from statcell.analysis import latent_space

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    tables = latent_space.correlate_latent_space(
        pd.read_parquet(args.reference), pd.read_parquet(args.target), pd.read_parquet(args.cells),
        dimensions=pd.read_csv(args.dimensions), count=settings["top_dimensions"])
    for name, table in tables.items():
        io.write_table(table, Path(args.outdir) / f"{name}.csv")
    for row in tables["measurement_recovery"].itertuples():
        log.info("%s: best top dimension μ%d (rank %d), Spearman %.3f on %d test cells", row.measurement,
                 row.dimension, row.rank, row.spearman, row.n_cells)


def _add_correlate_latent_space(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "correlate-latent-space", help="tables of the latent-space figures (correlations, PCA, KL per dimension)",
        description="On the test cells: Spearman of the top reference dimensions with every cell measurement, the "
        "best dimension for cell height and volume, PCA of the measurements, correlation among the top "
        "dimensions and the ranked KL per dimension of both models; one CSV each under OUTDIR.")
    _add_settings_options(parser)
    parser.add_argument("--reference", required=True, help="reference embeddings (.parquet)")
    parser.add_argument("--target", required=True, help="target embeddings (.parquet)")
    parser.add_argument("--dimensions", required=True, help="reference ranked dimensions (.csv)")
    parser.add_argument("--cells", required=True, help="cells.parquet of the dataset")
    parser.add_argument("--outdir", required=True, help="folder of the tables")
    parser.set_defaults(handler=_correlate_latent_space)


def _walk_latent_space(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from statcell.analysis import latent_space
    from statcell.models.precision import evaluation_precision
    from statcell.train import load_model

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    model, _ = load_model(args.checkpoint, "reference")
    embeddings = pd.read_parquet(args.embeddings)
    with evaluation_precision(settings["precision"]):
        walks = latent_space.walk_latent_space(model, embeddings[embeddings["split"] == "test"],
                                               dimensions=pd.read_csv(args.dimensions),
                                               count=settings["walk_dimensions"], steps=settings["walk_steps"],
                                               range_sd=settings["walk_range_sd"])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **walks)
    log.info("decoded %d walks of %d steps along dimensions %s", *walks["images"].shape[:2],
             walks["dimension"].tolist())


def _add_walk_latent_space(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "walk-latent-space", help="reference images decoded along the top latent dimensions",
        description="Decode reference images along each top dimension from -k to +k standard deviations of its "
        "aggregate posterior on the test cells, all other dimensions at 0; writes an .npz (images, dimension, "
        "rank, sd, sd_offsets).")
    _add_settings_options(parser)
    parser.add_argument("--checkpoint", required=True, help="reference model: NAME.pt with NAME.json (or a .ckpt)")
    parser.add_argument("--embeddings", required=True, help="reference embeddings (.parquet)")
    parser.add_argument("--dimensions", required=True, help="reference ranked dimensions (.csv)")
    parser.add_argument("--output", required=True, help=".npz to write")
    parser.set_defaults(handler=_walk_latent_space)


# Generation and features
def _generate_cells(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from statcell import io
    from statcell.analysis import generation
    from statcell.models.precision import evaluation_precision
    from statcell.train import load_model

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    reference, _ = load_model(args.reference, "reference")
    target, target_hparams = load_model(args.target, "target")
    with evaluation_precision(settings["precision"]):
        result = generation.generate_cells(
            args.store, io.read_cell_table(args.cells, store=args.store), reference_model=reference,
            target_model=target, structures=list(target_hparams["structures"]),
            generated_cells=settings["generated_cells"],
            per_structure=settings["generated_per_structure"], examples=settings["examples_per_structure"],
            elbo_samples=settings["elbo_samples"], batch_size=settings["batch_size"], seed=settings["seed"],
            expected_draws=settings["expected_draws"])
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    spacing = np.asarray(io.store_spacing(args.store), dtype=float)  # the figures' scale bars
    np.savez_compressed(outdir / "prior.npz", images=result.prior, spacing=spacing)
    for name in ("test_cells", "structures_in_one_cell", "structure_examples", "truncated"):
        np.savez_compressed(outdir / f"{name}.npz", **getattr(result, name), spacing=spacing)
    io.write_table(result.manifest, outdir / "manifest.parquet")
    result.localization.to_csv(outdir / "localization.csv", index=False)
    host = result.manifest[result.manifest["array"] == "structures_in_one_cell"]["cell_id"].iloc[0]
    log.info("%d prior cells, %d test cells with reconstructions and samples, %d structures x %d inside %s",
             len(result.prior), len(result.test_cells["real"]), *result.structures_in_one_cell["images"].shape[:2],
             host)


def _add_generate_cells(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate-cells", help="generated cells: reference prior, test-cell counterparts, structures in one cell",
        description="Decode cells from the reference prior, the test cells' reconstructions and structure samples, "
        "every structure generated in one real test cell (median reference ELBO), real examples per structure, "
        "and prior draws decoded with only the top-k reference dimensions (--settings: the analysis section); writes "
        "prior.npz, test_cells.npz, structures_in_one_cell.npz, structure_examples.npz, truncated.npz (each with the "
        "store's voxel size, spacing), localization.csv (where each structure lies in the test cells: real, "
        "reconstructed, sampled) and manifest.parquet under OUTDIR.")
    _add_settings_options(parser)
    _add_trained_models_options(parser)
    parser.add_argument("--outdir", required=True, help="folder to write, e.g. results/analysis/generation")
    parser.set_defaults(handler=_generate_cells)


def _measure_features(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from statcell import io
    from statcell.analysis import features
    from statcell.io import store_spacing

    with np.load(args.test_cells) as test, np.load(args.prior) as prior:
        manifest = pd.read_parquet(args.manifest)
        real = manifest[(manifest["array"] == "test_cells") & (manifest["source"] == "real")].sort_values("position")
        if "imaged" in real:  # the cell and nucleus of a built control are its source cell's: measured once
            real = real[real["imaged"].astype(bool)]
        positions = real["position"].to_numpy()
        table = features.measure_features(test["real"][positions], test["reconstruction"][positions],
                                          prior["images"], cell_ids=real["cell_id"].tolist(),
                                          spacing=store_spacing(args.store))
    io.write_table(table, args.output)
    medians = table.groupby("source")[list(features.FEATURE_NAMES)].median()
    for name in features.FEATURE_NAMES:
        log.info("median %s: %s", name, ", ".join(f"{source} {value:.4g}" for source, value in medians[name].items()))


def _add_measure_features(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-features", help="the 14 features of real test cells and generated cells",
        description="Segment cell (membrane) and nucleus (DNA) in real test cells, their reconstructions and prior "
        "cells, and measure 3 shape and 4 intensity features of each; writes one row per image and source.")
    parser.add_argument("--test-cells", required=True, help="test_cells.npz from generate-cells")
    parser.add_argument("--prior", required=True, help="prior.npz from generate-cells")
    parser.add_argument("--manifest", required=True, help="manifest.parquet from generate-cells")
    parser.add_argument("--store", required=True, help="cells.zarr (its voxel size)")
    parser.add_argument("--output", required=True, help="features table to write (.parquet)")
    parser.set_defaults(handler=_measure_features)


def _export_meshes(args: argparse.Namespace) -> None:
    from pathlib import Path

    from statcell import io
    from statcell.analysis import meshes

    settings = meshes.MeshSettings.from_section(
        section_settings("meshes", config_path=args.config, inline_json=args.settings))
    to_mesh, spacing = meshes.read_cells_to_mesh(store=args.store, cells=args.cells, test_cells=args.test_cells,
                                                 prior=args.prior, manifest=args.manifest, walks=args.walks,
                                                 settings=settings)
    quality, angles = meshes.export_meshes(to_mesh, spacing=spacing, formats=settings.formats,
                                           outdir=Path(args.quality).parent,
                                           edge_length_um=settings.edge_length(spacing))
    io.write_table(quality, args.quality)
    io.write_table(angles, args.angles)
    written = quality[quality["path"] != ""]
    edge = settings.edge_length(spacing)
    remeshed = (f"{int(written['remeshed_surfaces'].sum())} of {int(written['bodies'].sum())} connected surfaces "
                f"remeshed at {edge:g} µm edges" if edge > 0 else "as traced (meshes.edge_length_um 0)")
    log.info("%d meshes (%s) of %d cells: %d watertight; %s; volume / voxel volume %.3f to %.3f; smallest triangle "
             "angle %.1f°", len(written), ", ".join(settings.formats), len(to_mesh), int(written["watertight"].sum()),
             remeshed, written["volume_ratio"].min(), written["volume_ratio"].max(), written["min_angle_deg"].min())
    for row in quality[quality["note"] != ""].itertuples():
        log.warning("%s %s: %s", row.kind, row.name, row.note)


def _add_export_meshes(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-meshes", help="surface meshes (cell, nucleus, structure) for simulators, with a quality table",
        description="Mesh real test cells, their reconstructions, cells from the prior and the representative cells of "
        "the latent walks (--settings: the meshes section): one closed surface per cell, nucleus and structure, in "
        "micrometres, remeshed into near-equilateral triangles (meshes.edge_length_um), written as OBJ, STL and PLY "
        "under the folder of --quality as KIND/NAME_PART.FORMAT.")
    _add_settings_options(parser)
    parser.add_argument("--store", required=True, help="cells.zarr of the training dataset")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--test-cells", required=True, help="test_cells.npz of generate-cells")
    parser.add_argument("--prior", required=True, help="prior.npz of generate-cells")
    parser.add_argument("--manifest", required=True, help="manifest.parquet of generate-cells")
    parser.add_argument("--walks", required=True, help="walks.npz of walk-latent-space")
    parser.add_argument("--quality", required=True, help="quality table to write (.csv), one row per mesh; the "
                        "meshes are written beside it")
    parser.add_argument("--angles", required=True, help="histogram of the triangles' angles to write (.csv)")
    parser.set_defaults(handler=_export_meshes)


def _predict_cells(args: argparse.Namespace) -> None:
    import math
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from statcell import io
    from statcell.analysis import prediction
    from statcell.config import DEFAULT_CONFIG_PATH, load_config
    from statcell.models import export
    from statcell.models.precision import evaluation_precision

    settings = prediction.PredictSettings.from_section(
        section_settings("predict", config_path=args.config, inline_json=args.settings))
    analysis = section_settings("analysis", config_path=args.config, inline_json=args.analysis_settings)
    reference_model, reference_card = export.load_model(args.reference, "reference")
    target_model, card = export.load_model(args.target, "target")
    # the two models predict together: the reference model's generated cells go through the target model
    export.check_fits(reference_card, model=str(args.reference), data=f"of the target model {args.target}",
                      voxel_size_um=card.voxel_size_um, crop_shape=card.crop_shape)
    if args.image:
        image = io.read_image(args.image, scene=args.scene or 0, timepoint=args.timepoint or 0)
        holds, unsaid = io.unnamed_selection(image, scene=args.scene, timepoint=args.timepoint)
        if unsaid:
            raise ConfigError(f"{args.image} holds {holds}: give {' and '.join(f'--{name}' for name in unsaid)} "
                              "(0-based)")
        spacing = tuple(args.pixel_size) if args.pixel_size else image.spacing
        if any(math.isnan(step) for step in spacing):
            raise ConfigError(f"{args.image} does not state its voxel size: give --pixel-size Z Y X (µm)")
        differing = io.differing_voxel_size(spacing, image, args.image) if args.pixel_size else []
        if differing:
            log.warning("--pixel-size %s µm differs from %s's metadata (%s); --pixel-size is used",
                        " ".join(f"{side:g}" for side in spacing), args.image, ", ".join(differing))
        if card.crop_shape is None or card.voxel_size_um is None:
            raise ConfigError(f"{args.target} does not state the crop shape and voxel size it was trained on (a "
                              "Lightning checkpoint): give its weights-only export NAME.pt with NAME.json")
        # the grid the model was trained on, before validation: a working grid set to auto follows it
        config = load_config(args.config or DEFAULT_CONFIG_PATH, overrides={"crop": {
            "shape": dict(zip("zyx", card.crop_shape)), "voxel_size_um": float(card.voxel_size_um[0])}})
        channels = io.usable_channels(image, (args.membrane_channel, args.dna_channel), path=args.image,
                                      what="predict-cells --image", given=("--membrane-channel", "--dna-channel"))
        crops, table = prediction.cells_from_image(channels, spacing=spacing, segmentation=config["segmentation"],
                                                   crop=config["crop"], normalize=config["normalize"],
                                                   name=prediction.image_name(args.image))
        accepted = table[table["reject_reason"] == ""].sort_values("crop_index")
        log.info("%s: %d cells found, %d cropped", args.image, len(table), len(accepted))
        if accepted.empty:
            reasons = table["reject_reason"].value_counts()
            log.warning("%s: no cell to predict in (%s)", args.image,
                        ", ".join(f"{count} {reason}" for reason, count in reasons.items()) or "no cell found")
        chosen = pd.DataFrame({"cell_id": accepted["cell_id"], "source": "image", "imaged_structure": ""})
        references, voxel = crops[:, :2], tuple(float(step) for step in card.voxel_size_um)
    else:
        if not (args.store and args.cells):
            raise ConfigError("give --store and --cells (cells of a dataset), or --image (a new image)")
        cells = io.read_cell_table(args.cells, store=args.store)
        voxel = io.store_spacing(args.store)
        export.check_fits(card, model=str(args.target), data=str(args.store), voxel_size_um=voxel,
                          crop_shape=io.open_cells(args.store).shape[2:])
        picked = prediction.choose_cells(cells, ids=args.cell_id or settings.cells, count=settings.count,
                                         dataset=str(args.cells))
        references = io.read_cells(args.store, picked["store_index"].to_numpy(), channels=prediction.REFERENCE_CHANNELS)
        chosen = pd.DataFrame({"cell_id": picked["cell_id"], "source": "store",
                               "imaged_structure": picked["structure"]})
    chosen = pd.concat([chosen, pd.DataFrame({"cell_id": [f"generated_{k:02d}" for k in range(settings.generated)],
                                              "source": "generated", "imaged_structure": ""})], ignore_index=True)
    with evaluation_precision(analysis["precision"]):
        generated = prediction.generate_references(reference_model, settings.generated, seed=analysis["seed"])
        references = np.concatenate([references, generated]).astype(np.float32)
        mean, draws = prediction.predict_structures(references, chosen["cell_id"].tolist(),
                                                    target_model=target_model, samples=settings.samples,
                                                    seed=analysis["seed"])
    outdir = Path(args.outdir)
    files = []
    for index, cell_id in enumerate(chosen["cell_id"]):
        image, names = prediction.integrated_cell(references[index], mean[index], draws[index],
                                                  structures=card.structures)
        path = outdir / "cells" / f"{cell_id.replace('/', '-')}.ome.tiff"
        io.write_ome_tiff(path, image, channel_names=names, spacing=voxel, image_name=cell_id)
        files.append(path.relative_to(outdir).as_posix())
        log.info("%s: %d structures, %d samples each -> %s", cell_id, len(card.structures), settings.samples, path)
    chosen["file"] = files
    io.write_table(chosen, outdir / "predictions.csv")
    composite = np.concatenate([np.repeat(references[:, None], mean.shape[1], axis=1), mean[:, :, None]], axis=2)
    np.savez_compressed(outdir / "predictions.npz", images=composite, structures=np.array(card.structures),
                        cells=chosen["cell_id"].to_numpy(dtype=str),
                        imaged=chosen["imaged_structure"].fillna("").to_numpy(dtype=str),
                        spacing=np.asarray(voxel, dtype=float))


def _add_predict_cells(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict-cells", help="every structure predicted in chosen cells, a new image's cells or generated cells",
        description="Predict every structure the target model knows in cells from their membrane and DNA (the "
        "integrated cell): cells of a dataset (--store, --cells; by --cell-id, else the predict section's cells or "
        "a few test cells), or the cells of a new image (--image; segmented, cropped and normalized by the "
        "pipeline's code on the model's grid, with the config's segmentation, crop and normalize sections), plus "
        "predict.generated cells whose reference is drawn from the prior. Writes one OME-TIFF per cell under "
        "OUTDIR/cells (membrane, DNA, each structure's mean prediction, then its samples), predictions.csv and "
        "predictions.npz (for the figure).")
    _add_settings_options(parser, settings="the predict section as JSON (used by the rules)")
    parser.add_argument("--analysis-settings", metavar="JSON", help="the analysis section as JSON (its seed)")
    parser.add_argument("--reference", required=True, help="reference model: NAME.pt with NAME.json")
    parser.add_argument("--target", required=True, help="target model: NAME.pt with NAME.json")
    parser.add_argument("--store", help="cells.zarr of the dataset whose cells to predict in")
    parser.add_argument("--cells", help="cells.parquet beside it")
    parser.add_argument("--cell-id", action="append", help="a cell to predict in (repeat for more)")
    parser.add_argument("--image", help="a new image (OME-TIFF or TIFF) to segment and predict in instead")
    parser.add_argument("--membrane-channel", type=_channel_argument, default=0,
                        help="--image's membrane channel: 0-based index or the file's channel name (default 0)")
    parser.add_argument("--dna-channel", type=_channel_argument, default=1,
                        help="--image's DNA channel: 0-based index or the file's channel name (default 1)")
    parser.add_argument("--pixel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="--image's voxel size in µm, where the file does not state it")
    parser.add_argument("--scene", type=int, help="--image's scene (0-based), where the file holds several")
    parser.add_argument("--timepoint", type=int, help="--image's time point (0-based), where the file holds several")
    parser.add_argument("--outdir", required=True, help="folder to write, e.g. results/predictions")
    parser.set_defaults(handler=_predict_cells)


def _perturb_cells(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from statcell import io
    from statcell.analysis import embed, in_silico
    from statcell.models import export
    from statcell.models.precision import evaluation_precision

    settings = in_silico.InSilicoSettings.from_section(
        section_settings("in_silico", config_path=args.config, inline_json=args.settings))
    analysis = section_settings("analysis", config_path=args.config, inline_json=args.analysis_settings)
    model, card = export.load_model(args.target, "target")
    cells = io.read_cell_table(args.cells, store=args.store)
    embed.check_model_fits_data(card.to_dict(), args.store, cells, model_name=str(args.target))
    with evaluation_precision(analysis["precision"]):
        features, images = in_silico.perturb_cells(
            model, store=args.store, embeddings=pd.read_parquet(args.embeddings), cells=cells,
            dimensions=pd.read_csv(args.dimensions), structures=card.structures, settings=settings,
            min_kl=analysis["active_kl_nats"], control=analysis["control_treatment"],
            spacing=io.store_spacing(args.store))
    summary = in_silico.summarize(features)
    if summary.empty:
        log.warning("%s: no structure has both control cells (analysis.control_treatment %r) and treated cells: no "
                    "cell moved, the tables are empty", args.cells, analysis["control_treatment"])
    io.write_table(features, args.features)
    io.write_table(summary, args.summary)
    Path(args.images).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.images, **images)
    for row in summary.itertuples():
        log.info("%s, %s: %s %.3f -> %.3f decoded (%+.3f); real %+.3f", row.structure, row.drug, row.feature,
                 row.decoded_start, row.decoded_end, row.decoded_change, row.real_change)


def _add_perturb_cells(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "perturb-cells", help="in-silico perturbation: control cells moved along each drug's latent shift",
        description="For every structure and drug of the drug set, move in_silico.cells control cells from their own "
        "target posterior mean along the drug's centroid shift (active dimensions), decode the steps in each "
        "cell's own membrane and DNA, and measure the structure's spread, cortical fraction and concentration on "
        "the decoded and on all real control and treated cells; writes the feature table, its summary and the "
        "first cell's steps beside a real treated cell (.npz).")
    _add_settings_options(parser, settings="the in_silico section as JSON (used by the rules)")
    parser.add_argument("--analysis-settings", metavar="JSON",
                        help="the analysis section as JSON (active_kl_nats, control_treatment)")
    parser.add_argument("--target", required=True, help="target model: NAME.pt with NAME.json")
    parser.add_argument("--embeddings", required=True, help="drug-set embeddings of the target model")
    parser.add_argument("--dimensions", required=True, help="the target model's dimension table (.csv)")
    parser.add_argument("--cells", required=True, help="cells.parquet of the drug set")
    parser.add_argument("--store", required=True, help="cells.zarr of the drug set")
    parser.add_argument("--features", required=True, help="feature table to write (.csv)")
    parser.add_argument("--summary", required=True, help="summary to write (.csv): decoded against real changes")
    parser.add_argument("--images", required=True, help="decoded steps to write (.npz)")
    parser.set_defaults(handler=_perturb_cells)


# Beta sweep
def _sweep_settings(args: argparse.Namespace):
    from statcell.analysis import beta_sweep

    return beta_sweep.BetaSweepSettings.from_config(
        section_settings("beta_sweep", config_path=args.config, inline_json=args.sweep_settings))


def _analyze_beta_sweep(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from statcell import io
    from statcell.analysis import beta_sweep
    from statcell.models.precision import evaluation_precision

    analysis = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    cells = io.read_cell_table(args.cells, store=args.store)
    with evaluation_precision(analysis["precision"]):
        result = beta_sweep.analyze_beta_sweep(
            args.checkpoints, store=args.store, cells=cells, settings=_sweep_settings(args),
            samples=analysis["elbo_samples"], batch_size=analysis["batch_size"],
            generated=analysis["generated_cells"], seed=analysis["seed"])
    for table, path in ((result.rate_distortion, args.rate_distortion), (result.kl_per_dimension, args.kl),
                        (result.regression, args.regression), (result.feature_pcs, args.feature_pcs),
                        (result.features, args.features), (result.generated_features, args.generated_features)):
        io.write_table(table, path)
    test = cells[cells["split"] == beta_sweep.EVAL_SPLIT].sort_values("store_index").head(result.generated.shape[1])
    observed = beta_sweep.reference_images(args.store, test["store_index"].to_numpy(),
                                           ndim=result.generated.ndim - 3).numpy()
    Path(args.generated).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.generated, generated=result.generated, observed=observed,
                        spacing=np.asarray(io.store_spacing(args.store), dtype=float))
    totals = result.regression[result.regression["pc"] == 0].set_index("beta")
    for row in result.rate_distortion.itertuples():
        log.info("β %.2f: rate %.1f nats, distortion %.1f, %d important dimensions, total R² %.3f", row.beta,
                 row.rate, row.distortion, row.important_dims, totals.loc[row.beta, "r2"])


def _add_analyze_beta_sweep(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analyze-beta-sweep", help="rate, distortion, KL per dimension and feature regression of the β sweep",
        description="Evaluate the 2D reference models of a β sweep on the test cells' projections (rate, K-sample "
        "distortion, ranked KL per dimension, prior samples) and regress the top PCs of the 14 features on the "
        "important dimensions (--settings: the analysis section; fitted on training cells, R² on test cells).")
    _add_settings_options(parser)
    parser.add_argument("--sweep-settings", metavar="JSON", help="the beta_sweep config section as JSON")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="the sweep's model checkpoints")
    parser.add_argument("--store", required=True, help="cells.zarr the models were trained on")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--rate-distortion", required=True, help="per-model rate and distortion to write (.csv)")
    parser.add_argument("--kl", required=True, help="ranked KL per dimension to write (.csv)")
    parser.add_argument("--regression", required=True, help="R² per model and PC to write (.csv)")
    parser.add_argument("--feature-pcs", required=True, help="PCA loadings of the features to write (.csv)")
    parser.add_argument("--features", required=True, help="features and PC scores per cell to write (.parquet)")
    parser.add_argument("--generated-features", required=True,
                        help="the 14 features of every generated cell at every β to write (.parquet)")
    parser.add_argument("--generated", required=True, help="prior samples (models, n, 2, Y, X), the observed test "
                        "cells they are shown beside, and the voxel size to write (.npz)")
    parser.set_defaults(handler=_analyze_beta_sweep)


# Coupling
def _measure_coupling(args: argparse.Namespace) -> None:
    from statcell import io
    from statcell.analysis import coupling, recovery
    from statcell.models.precision import evaluation_precision
    from statcell.train import load_model

    analysis = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    settings = coupling.CouplingSettings.from_config(analysis)
    model, hparams = load_model(args.model, "target")
    with evaluation_precision(analysis["precision"]):
        per_cell = coupling.measure_coupling(model, io.read_cell_table(args.cells, store=args.store),
                                             structures=list(hparams["structures"]), store=args.store,
                                             settings=settings, splits=tuple(args.splits))
    summary = coupling.summarize_structures(per_cell, settings=settings, structures=list(hparams["structures"]))
    io.write_table(per_cell, args.output_cells)
    io.write_table(summary, args.output_structures)
    io.write_table(coupling.mitosis_test(per_cell, settings=settings), args.output_mitosis)
    for row in summary[summary["n_cells"] == 0].itertuples():
        log.warning("%s: %s", row.structure, row.note)
    for row in summary[summary["n_cells"] > 0].itertuples():
        log.info("%s, %s (%d cells): membrane %.4f, nucleus %.4f, normalized difference %+.3f -> %s", row.structure,
                 row.phase, row.n_cells, row.membrane_coupling, row.nucleus_coupling, row.normalized_difference,
                 row.couples_to)
    calibration = recovery.calibration_checks(summary)
    io.write_table(calibration, args.output_calibration)
    for check in calibration.itertuples():
        if check.passed:
            log.info("calibration: %s %s, as it must: %s", check.check, check.expected, check.observed)
        elif check.observed.startswith(recovery.NOT_MEASURED):
            log.warning("calibration: %s %s not checked, %s; the coupling calls lack this control's calibration",
                        check.check, check.expected, check.observed)
        else:
            log.warning("calibration failed: %s %s, but came out %s; the coupling calls of this run are not "
                        "calibrated (more held-out cells or FOVs, or a better-trained target model)", check.check,
                        check.expected, check.observed)


def _add_measure_coupling(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-coupling", help="coupling of each structure to the membrane and the nucleus (Fig 5 tables)",
        description="Per measured cell, the target-model ELBO with its own reference and with K copies whose "
        "membrane (DNA) is another cell's of the same structure (Eq 4), the normalized difference (Eq 5); per "
        "structure and phase the means, intervals and coupling calls; per structure the mitosis resampling test.")
    _add_settings_options(parser)
    parser.add_argument("--model", required=True, help="target model checkpoint")
    parser.add_argument("--store", required=True, help="cells.zarr")
    parser.add_argument("--cells", required=True, help="cells.parquet")
    parser.add_argument("--splits", nargs="+", default=["test", "val"],
                        help="splits whose cells are measured (default: test val)")
    parser.add_argument("--output-cells", required=True, help="per-cell table to write (.parquet)")
    parser.add_argument("--output-structures", required=True, help="per-structure table (.csv)")
    parser.add_argument("--output-mitosis", required=True, help="mitosis test table (.csv)")
    parser.add_argument("--output-calibration", required=True,
                        help="the calibration controls' calls against the call each must get (.csv)")
    parser.set_defaults(handler=_measure_coupling)


# Perturbation
def _control(args: argparse.Namespace, settings: dict) -> str:
    """The control treatment: ``--control`` where given, else ``analysis.control_treatment`` of the settings."""
    return settings["control_treatment"] if args.control is None else args.control


def _add_drug_inputs(parser: argparse.ArgumentParser) -> None:
    """The drug set's cells and the control (the analysis settings give the KL of an active dimension)."""
    parser.add_argument("--cells", required=True, help="cells.parquet of the drug set")
    parser.add_argument("--control", help="treatment the drugs are compared with (default: analysis.control_treatment "
                        "of the settings; '' for the untreated cells, auto: vehicle if present, else the untreated "
                        "cells)")


def _drug_shifts(args: argparse.Namespace) -> None:
    import pandas as pd

    from statcell import io
    from statcell.analysis import perturbation

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    embeddings = {"target": pd.read_parquet(args.target_embeddings),
                  "reference": pd.read_parquet(args.reference_embeddings)}
    dimensions = {"target": pd.read_csv(args.target_dimensions), "reference": pd.read_csv(args.reference_dimensions)}
    shifts = perturbation.drug_shifts(embeddings, pd.read_parquet(args.cells), dimensions,
                                      min_kl=settings["active_kl_nats"],
                                      permutations=settings["permutations"], seed=settings["seed"],
                                      significance=settings["significance"],
                                      spectrum_components=settings["spectrum_components"],
                                      control=_control(args, settings))
    io.write_table(shifts, args.output)
    for row in shifts.itertuples():
        if row.note:
            log.warning("%s space, %s under %s: %s", row.space, row.structure, row.drug, row.note)
            continue
        log.info("%s space, %s under %s vs %s (%d vs %d cells in %d vs %d FOVs, %d dims): distance %.3f (d %.2f, "
                 "relabeled mean %.3f), p %.2g, corrected %.2g%s; energy p %.2g; spectrum dEIG %.2f, p %.2g "
                 "(%d relabelings)", row.space, row.structure, row.drug, row.control, row.n_treated, row.n_control,
                 row.fovs_treated, row.fovs_control, row.dimensions, row.distance, row.effect_size, row.null_mean,
                 row.p_value, row.p_adjusted, " *" if row.significant else "", row.energy_p_value,
                 row.spectrum_distance, row.spectrum_p_value, row.relabelings)
    if shifts["p_value"].isna().all():  # an untestable shift was still tested: its note says why it cannot reject
        log.warning("no structure of the drug set has both control and treated cells: no test made")


def _add_drug_shifts(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "drug-shifts", help="FOV-level permutation tests of the drug-induced changes in both latent spaces",
        description="For every structure and drug of the drug set, in the active latent dimensions (mean KL above "
        "analysis.active_kl_nats): the distance between the treated and control centroids and its effect size, the "
        "energy distance between the two distributions and the change of the covariance spectrum (dEIG_k, "
        "analysis.spectrum_components), each with a p-value from relabeling whole FOVs (at most "
        "analysis.permutations) and Holm-corrected over all tests.")
    _add_settings_options(parser)
    _add_drug_inputs(parser)
    parser.add_argument("--target-embeddings", required=True, help="drug-set embeddings of the target model (.parquet)")
    parser.add_argument("--target-dimensions", required=True,
                        help="the target model's dimension table on the training dataset (.csv)")
    parser.add_argument("--reference-embeddings", required=True,
                        help="drug-set embeddings of the reference model (.parquet)")
    parser.add_argument("--reference-dimensions", required=True,
                        help="the reference model's dimension table on the training dataset (.csv)")
    parser.add_argument("--output", required=True, help="shift table to write (.csv)")
    parser.set_defaults(handler=_drug_shifts)


def _drug_trajectory(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from statcell import io
    from statcell.analysis import perturbation

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    trajectory = perturbation.drug_trajectory(pd.read_parquet(args.embeddings),
                                              io.read_cell_table(args.cells, store=args.store),
                                              pd.read_csv(args.dimensions), steps=settings["trajectory_steps"],
                                              min_kl=settings["active_kl_nats"],
                                              control=_control(args, settings))
    io.write_table(trajectory, args.output)
    images = io.read_cells(args.store, trajectory["store_index"].to_numpy())
    np.savez_compressed(args.images, images=images, spacing=np.asarray(io.store_spacing(args.store), dtype=float))
    for (structure, drug), rows in trajectory.groupby(["structure", "drug"]):
        log.info("%s, %s: treatments along the line %s", structure, drug, rows["cell_drug"].tolist())


def _add_drug_trajectory(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "drug-trajectory", help="real cells at even steps from the untreated to the treated centroid",
        description="For every structure and drug, the cells whose projection on the line from the control to the "
        "treated centroid (target latent space, active dimensions) is nearest to analysis.trajectory_steps even "
        "steps; writes the table and the cells' images (membrane, DNA, structure) with the store's voxel size.")
    _add_settings_options(parser)
    _add_drug_inputs(parser)
    parser.add_argument("--embeddings", required=True, help="drug-set embeddings of the target model")
    parser.add_argument("--dimensions", required=True, help="the target model's dimension table (.csv)")
    parser.add_argument("--store", required=True, help="cells.zarr of the drug set")
    parser.add_argument("--output", required=True, help="trajectory table to write (.csv)")
    parser.add_argument("--images", required=True, help="the trajectory cells' images to write (.npz)")
    parser.set_defaults(handler=_drug_trajectory)


# Ground truth
def _check_ground_truth(args: argparse.Namespace) -> None:
    from statcell import io
    from statcell.analysis import recovery

    settings = section_settings("analysis", config_path=args.config, inline_json=args.settings)
    checks = recovery.check_ground_truth(coupling=args.coupling, shifts=args.shifts or None,
                                         measurements=args.measurements, significance=settings["significance"])
    io.write_table(checks, args.output)
    for row in checks.itertuples():
        log.info("%s %s: expected %s, observed %s", "PASS" if row.passed else "FAIL", row.check, row.expected,
                 row.observed)
    log.info("%d of %d ground-truth checks pass", int(checks["passed"].sum()), len(checks))


def _add_check_ground_truth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check-ground-truth", help="check the analyses against the synthetic colony's planted answers",
        description="One row per planted answer (coupling partners, drug shifts, latent dimensions following height "
        "and volume), with what was observed and whether it passed.")
    _add_settings_options(parser)
    parser.add_argument("--coupling", required=True, help="coupling/structures.csv")
    parser.add_argument("--measurements", required=True, help="latent_space/measurement_recovery.csv")
    parser.add_argument("--shifts", nargs="?", default="", help="perturbation/shifts.csv (if a drug set)")
    parser.add_argument("--output", required=True, help="table to write (.csv)")
    parser.set_defaults(handler=_check_ground_truth)


# The explorer of the cells (not a figure of the report's registry)
def _make_thumbnails(args: argparse.Namespace) -> None:
    from statcell import io
    from statcell.analysis import thumbnails

    cells = io.read_cell_table(args.cells, store=args.store)
    table = thumbnails.make_thumbnails(args.store, cells, size=args.size)
    io.write_table(table, args.output)
    per_cell = (table["xy_png"].map(len) + table["xz_png"].map(len)).mean() if len(table) else 0
    log.info("wrote thumbnails of %d cells (%.0f bytes of PNG per cell) to %s", len(table), per_cell, args.output)


def _add_make_thumbnails(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "make-thumbnails", help="xy and xz max projections of every cell, for the explorer",
        description="Write one row per cell of CELLS: its xy and xz maximum projections in the channel colours "
        "(membrane magenta, DNA blue, structure yellow) as small PNGs.")
    parser.add_argument("--store", required=True, help="cells.zarr of the dataset")
    parser.add_argument("--cells", required=True, help="cells.parquet beside it")
    parser.add_argument("--size", type=int, default=64, help="largest side of a view in pixels (default: 64)")
    parser.add_argument("--output", required=True, help="thumbnail table to write (.parquet)")
    parser.set_defaults(handler=_make_thumbnails)


def _plot_explorer(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd

    from statcell.plots import explorer

    cells = pd.read_parquet(args.cells)
    embeddings = {Path(path).stem: pd.read_parquet(path) for path in args.embeddings}
    thumbnails = pd.read_parquet(args.thumbnails) if args.thumbnails else None
    features = pd.read_parquet(args.features) if args.features else None
    table = explorer.explorer_table(cells, embeddings, thumbnails, features)
    output = explorer.draw_explorer(table, args.output, title=args.title)
    log.info("wrote the explorer of %d cells (%s; %.1f kB) to %s", len(table), ", ".join(embeddings) or "no latents",
             output.stat().st_size / 1024, output)


def _add_plot_explorer(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plot-explorer", help="the explorer of the cells: one self-contained interactive HTML page",
        description="Write one HTML page (no server, no network) with a scatter of every cell of CELLS: axes chosen "
        "among the latent means and measurements, colour by structure, mitotic stage, treatment or split, the "
        "cell's thumbnail on hover, its details on click, and a search by cell id.")
    parser.add_argument("--cells", required=True, help="cells.parquet of the dataset")
    parser.add_argument("--embeddings", nargs="*", default=[], metavar="PARQUET",
                        help="embedding tables (embeddings/<model>.parquet; the file name names the model)")
    parser.add_argument("--thumbnails", default="", help="thumbnails.parquet (make-thumbnails)")
    parser.add_argument("--features", default="", help="optional per-cell feature table (cell_id, numeric columns)")
    parser.add_argument("--title", default="Statistical Cell: explorer of the cells", help="page title")
    parser.add_argument("--output", required=True, help="HTML page to write")
    parser.set_defaults(handler=_plot_explorer)


def _screenshot_explorer(args: argparse.Namespace) -> None:
    from statcell.plots import explorer

    output = explorer.screenshot_page(args.page, args.output, browser=args.browser)
    log.info("wrote a screenshot of %s to %s", args.page, output)


def _add_screenshot_explorer(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "screenshot-explorer", help="a PNG of the explorer page, drawn by headless Chromium",
        description="Open the explorer page in a headless Chromium-family browser (offline) and save what it shows.")
    parser.add_argument("--page", required=True, help="the explorer's HTML page (plot-explorer)")
    parser.add_argument("--browser", default=None,
                        help="browser executable (default: the first Chromium-family browser on the PATH, "
                        "statcell.plots.explorer.BROWSERS)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.set_defaults(handler=_screenshot_explorer)


# Figures
def _plot(args: argparse.Namespace) -> None:
    from statcell.plots.style import figure_settings

    figure: registry.Figure = args.figure
    settings = figure_settings(figure.settings, inline_json=args.settings, config_path=args.config)
    sections = {section: section_settings(section, config_path=args.config, inline_json=getattr(args, section))
                for section, _ in figure.section_settings.values()}
    shown = registry.draw(figure, {name: getattr(args, name) for name, _ in figure.inputs}, args.output,
                          settings=settings, sections=sections)
    log.info("drew %s%s", args.output, "" if shown is None else f"; shown: {shown}")


def _add_plot(commands: argparse._SubParsersAction, figure: registry.Figure) -> None:
    """The subcommand of one figure of the registry: ``figure.command``, e.g. ``plot-latent-scatter``."""
    parser = commands.add_parser(figure.command, help=figure.summary,
                                 description=f"Draw {figure.summary}: a PNG and an SVG beside it.")
    _add_settings_options(parser, settings=f"the figures section's dpi and {figure.settings} entry as JSON, e.g. "
                          f"{{\"dpi\": 150, \"{figure.settings}\": {{}}}} (used by the rules)")
    for section in sorted({section for section, _ in figure.section_settings.values()}):
        parser.add_argument(registry.SECTION_OPTIONS[section], dest=section, metavar="JSON",
                            help=f"the {section} config section as JSON (used by the rules)")
    for name, about in figure.inputs:
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=about)
    parser.add_argument("--output", required=True, help="PNG to write (an SVG is written beside it)")
    parser.set_defaults(handler=_plot, figure=figure)


#: The subcommands other than the figures', in the order of the workflow (``statcell --help`` lists them so).
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synthesize, _add_preprocess_fov, _add_import_allencell, _add_normalize_cells,
    _add_project_colony, _add_train_reference, _add_train_target, _add_import_model, _add_check_models,
    _add_embed_cells, _add_correlate_latent_space, _add_walk_latent_space, _add_generate_cells, _add_measure_features,
    _add_export_meshes, _add_predict_cells, _add_perturb_cells,
    _add_analyze_beta_sweep, _add_measure_coupling, _add_drug_shifts, _add_drug_trajectory, _add_check_ground_truth,
    _add_make_thumbnails, _add_plot_explorer, _add_screenshot_explorer,
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statcell",
        description="Statistical Cell: a generative model of 3D single-cell organization, stage by stage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(commands)
    for figure in registry.FIGURES:
        _add_plot(commands, figure)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``statcell`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for a configuration error, 1 for a data error.
    """
    memory.keep_freed_memory()  # before the imaging stack and the networks allocate (statcell.memory)
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    except FileNotFoundError as error:
        # a library's error (pandas, zarr) may say no more than the path: say what is wrong with it
        said = str(error)
        bare = said in (str(error.filename), "") or (error.filename is None and not any(c.isspace() for c in said))
        if bare:
            log.error("file not found: %s", error.filename or said)
        else:
            log.error("%s", error)
        return 1
    except (EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        _log_unreadable_input(error, args)
        return 1
    except OSError as error:  # permissions, a full disk, ...: the message names the file where the system knows it
        log.error("%s: %s", type(error).__name__, error)
        return 1
    except (ValueError, FloatingPointError) as error:  # a training loss gone NaN names its cause
        if "allow_pickle" in str(error):  # numpy's refusal of an .npz that is none: any other bytes read as pickles
            _log_unreadable_input(error, args)
        else:
            log.error("%s", error)
        return 1
    return 0


def _log_unreadable_input(error: Exception, args: argparse.Namespace) -> None:
    """Log a truncated or corrupt input with the command's inputs: numpy, zipfile and zarr say what is wrong with
    the file, not which file it is."""
    log.error("%s: %s, reading one of this command's inputs (%s): a truncated or corrupt file? Rerun the rule that "
              "writes it (snakemake --forcerun RULE)", type(error).__name__, error,
              ", ".join(_existing_paths(args)) or "none found")


def _existing_paths(args: argparse.Namespace, limit: int = 6) -> list[str]:
    """The paths among a command's arguments that exist (its inputs, and outputs already written), at most
    ``limit`` of them."""
    values = [item for value in vars(args).values()
              for item in (value if isinstance(value, list) else [value]) if isinstance(item, str)]
    found = [value for value in values if len(value) < 4096 and os.path.exists(value)]
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


if __name__ == "__main__":
    sys.exit(main())
