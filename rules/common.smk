"""Shared wiring: where outputs live, which FOVs exist, and each rule's settings. No science here."""

import json
import os
import shlex
from functools import cache
from pathlib import Path

import pandas as pd

from statcell import io, synth, vocabulary
from statcell.config import ConfigError, check_structures_known, model_training_section
from statcell.analysis import beta_sweep, perturbation
from statcell.plots import explorer, registry
from snakemake.logging import logger

SYNTHETIC_DIR = "results/synthetic"

# Rules run the CLI as `python -m statcell`, the same program as `statcell`: run from the repository root, Python
# finds the library there, so a job works in the project's venv and in a per-rule conda env (--sdm conda) alike.
STATCELL = "python -m statcell"
DATASETS = list(vocabulary.DATASETS)
# Extra datasets embedded with the trained models (`data.embed`: name -> FOV manifest), preprocessed like the drug set.
EMBED_DATASETS = list(config["data"]["embed"])


# The order in which ready jobs take free cores (Snakemake's `priority`, higher first; without one it prefers the jobs
# with the largest inputs). The two trainings are the run's longest jobs and independent, so both start the moment the
# training store exists, side by side, and end together; a store is built as soon as its crops are there (the drug
# set's embedding waits for it); every job that runs the trained models, and the few that wait on them, go before the
# figures, so that the run ends on many small figure jobs side by side rather than on a chain of analyses (the
# default run's last 16 s had used one core); the β sweep's small models among them, filling the gaps between the
# two-thread analyses. `python bench/bench_run.py` prints the cores in use over time.
PRIORITY = {"training": 3, "store": 2, "after_training": 1}  # the figures: 0, Snakemake's default


def drop_idle_rescheduling(scheduler):
    """Stop Snakemake's job-rate limiter from re-running the scheduler while jobs wait for cores, on local runs.

    With its default limit (`--max-jobs-per-timespan 100/1s`), every pass of Snakemake's (9.27) scheduler that leaves
    a ready job waiting starts a timer for another pass a second later, and each finished job starts one more such
    chain: after the 248 preprocessing jobs of the default run (then two per FOV), ~250 passes a second ran through the whole training
    (the scheduler took 30% of a core, and each training's epochs 3.0 s instead of 2.5). A local run needs no rate
    limit (cores limit it), so the default limit is dropped there; a limit the user set, and any cluster run, keep it.
    Returns whether it was dropped.
    """
    limiter = getattr(scheduler, "job_rate_limiter", None)
    default_limit = limiter is not None and (limiter.max_jobs, limiter.timespan) == (100, 1)
    if not (workflow.local_exec and default_limit):
        return False
    scheduler.job_rate_limiter = None
    logger.info("statcell: Snakemake's default job-rate limit dropped for this local run (no rescheduling timers)")
    return True


onstart:
    drop_idle_rescheduling(getattr(workflow, "scheduler", None))


wildcard_constraints:
    dataset="|".join(DATASETS + EMBED_DATASETS),


def section_json(section):
    """A config section as JSON for a rule's params: the job reruns when, and only when, these settings change."""
    return json.dumps(config[section], sort_keys=True)


def paired_threads(wildcards):
    """Threads of a job that runs the networks (training, or an analysis of the trained models): half the local
    cores, so that two such jobs run side by side; 2 where Snakemake is given no core count (a cluster). Torch uses
    its threads less well than processes use cores: on 2 cores the two models' training steps took 8.0 s at 1 thread
    each, side by side, against 8.6 s one after the other at 2 threads (`python bench/bench_threads.py --batch 32`),
    and an embedding of the drug set 12.7 s on 1 thread against 9.0 s on 2 (18 core-seconds). A job of all the cores
    would also wait for every one of them to be free while one-thread jobs take turns on them."""
    cores = workflow.resource_settings.cores
    return max(1, cores // 2) if cores else 2


def training_json(kind):
    """The `training` section as model `kind` trains with it (its own β) as JSON: a change to the other model's β
    does not retrain this one."""
    return json.dumps(model_training_section(config["training"], kind), sort_keys=True)


def figure_settings(name):
    """A figure's drawing settings as JSON for its rule's params: `figures.dpi` and the entry `figures.<name>` only,
    so a change to one figure's entry redraws that figure alone (read by statcell.plots.style.figure_settings)."""
    section = config["figures"]
    return json.dumps({"dpi": section["dpi"], name: section.get(name, {})}, sort_keys=True)


def analysis_json():
    """The `analysis` section as JSON for the params of analysis rules."""
    return section_json("analysis")


def synthetic_fov_ids():
    """Names of the FOVs the synthetic colony holds, known from the config before anything is generated."""
    settings = synth.SynthSettings.from_config(config["synthetic"])
    return [plan.fov_id for plan in synth.plan_fovs(settings)]


def input_manifests(wildcards=None):
    """The FOV manifests of the run: written by `synthesize`, or the user's (training set, then the drug set)."""
    if config["data"]["source"] == "synthetic":
        return rules.synthesize.output.manifests
    return [path for path in (config["data"]["manifest"], config["data"]["drug_manifest"]) if path]


@cache
def fov_table(dataset):
    """The manifest rows of a dataset: from the user's manifest, or planned for the synthetic colony. A user's
    manifest without a row stops the run here, before any job."""
    if dataset in EMBED_DATASETS:
        return user_manifest(config["data"]["embed"][dataset])
    if config["data"]["source"] == "synthetic":
        settings = synth.SynthSettings.from_config(config["synthetic"])
        plans = [plan for plan in synth.plan_fovs(settings) if plan.dataset == dataset]
        table = synth.manifest_rows(plans, settings)
        table["path"] = [str(synth.raw_image_path(SYNTHETIC_DIR, fov)) for fov in table["fov_id"]]
        for column in ("cell_segmentation", "nucleus_segmentation"):
            table[column] = ""
        return table
    if imported_from_allencell(dataset):
        return pd.DataFrame(columns=list(io.MANIFEST_COLUMNS))  # no FOVs: the cells come pre-cropped
    return user_manifest(config["data"]["manifest" if dataset == vocabulary.MAIN_DATASET else "drug_manifest"])


def user_manifest(path):
    """A user's FOV manifest (`io.read_manifest`), which must list at least one FOV."""
    table = io.read_manifest(path)
    if table.empty:
        raise io.ManifestError(f"manifest {path} lists no FOV (it has a header and no row)")
    return table


def imported_from_allencell(dataset):
    """Whether a dataset's cells come pre-cropped from an Allen dataset (the training set of `data.source:
    allencell`; its drug set and `data.embed` datasets are FOV manifests)."""
    return config["data"]["source"] == "allencell" and dataset == vocabulary.MAIN_DATASET


@cache
def allencell_cells():
    """The cells of a pre-cropped Allen dataset, one row each (`allencell.read_cell_table`)."""
    # Imported here: statcell.allencell brings in the imaging stack (scipy.ndimage, scikit-image), 0.2 s that every
    # parse of the workflow (each cluster job parses it twice) would pay for a source it rarely uses.
    from statcell import allencell

    return allencell.read_cell_table(allencell.AllenCellSettings.from_config(config["allencell"]))


def allencell_chunks():
    """Import jobs of a pre-cropped Allen dataset (each handles `allencell.chunk_size` cells of the CSV)."""
    return sorted(allencell_cells()["chunk"].unique())


def dataset_name(dataset):
    """How a message names a dataset: the config key (and file) it comes from."""
    if dataset in EMBED_DATASETS:
        return f"data.embed.{dataset} ({config['data']['embed'][dataset]})"
    if config["data"]["source"] == "synthetic":
        return "synthetic.structures" if dataset == vocabulary.MAIN_DATASET else "synthetic.drug_structures"
    if imported_from_allencell(dataset):
        return f"allencell.csv ({config['allencell']['csv']})"
    key = "manifest" if dataset == vocabulary.MAIN_DATASET else "drug_manifest"
    return f"data.{key} ({config['data'][key]})"


def dataset_structures(dataset):
    """The structures of a dataset's FOVs (of its cells, for a pre-cropped Allen dataset)."""
    if imported_from_allencell(dataset):
        return set(allencell_cells()["structure"])
    return set(fov_table(dataset)["structure"])


def check_embedded_structures():
    """Stop the run before any job when the target model has no label for a structure of a dataset it embeds:
    with a given model, every dataset; with one trained here, the drug set and the `data.embed` datasets against the
    training set's structures and the control classes built."""
    if config["models"]["target"]:
        from statcell.models import export  # here, not at the top: it imports torch, 2-4 s of every workflow parse

        known = export.read_card(config["models"]["target"]).structures
        model, embedded = f"the target model models.target ({config['models']['target']})", datasets()
    else:
        known = dataset_structures(vocabulary.MAIN_DATASET)
        if config["normalize"]["controls"]:
            known |= set(vocabulary.CONTROLS)
        model = f"the target model trained on {dataset_name(vocabulary.MAIN_DATASET)}"
        embedded = [dataset for dataset in datasets() if dataset != vocabulary.MAIN_DATASET]
    check_structures_known(known, {dataset_name(dataset): dataset_structures(dataset) for dataset in embedded},
                           model=model)


def datasets():
    """The datasets of the run: the training colony, the drug set if there is one, and the `data.embed` datasets."""
    if config["data"]["source"] == "synthetic":
        return [dataset for dataset in DATASETS if len(fov_table(dataset))] + EMBED_DATASETS
    return (DATASETS if config["data"]["drug_manifest"] else [vocabulary.MAIN_DATASET]) + EMBED_DATASETS


def from_synthetic_colony(dataset):
    """Whether a dataset's FOVs are the synthetic colony's (a `data.embed` dataset's never are)."""
    return config["data"]["source"] == "synthetic" and dataset not in EMBED_DATASETS


def given_models():
    """The models named in `models` (imported, not trained)."""
    return [kind for kind in ("reference", "target") if config["models"][kind]]


def control_options(wildcards):
    """normalize-cells' control options: the training dataset gets the control classes (they calibrate the coupling
    analysis), all five, or, with a given target model, those it was trained with (it has no label for another)."""
    if wildcards.dataset != vocabulary.MAIN_DATASET:
        return ""
    if not config["models"]["target"]:
        return "--build-controls"
    from statcell.models import export  # here, not at the top: it imports torch, 2-4 s of every workflow parse

    known = set(export.read_card(config["models"]["target"]).structures)
    classes = [kind for kind in vocabulary.CONTROLS if kind in known]
    if len(classes) < len(vocabulary.CONTROLS):
        logger.info(f"statcell: the given target model ({config['models']['target']}) knows the control classes "
                    f"{', '.join(classes) or 'none'}: only those are built")
    return f"--build-controls --control-classes {' '.join(classes)}" if classes else ""


def model_file(kind):
    """The weights-only model every analysis loads (`results/models/{kind}.pt`, card `.json` beside it), written by
    its training rule or, when `models.<kind>` names one, by import_model. A plain path, not
    `rules.train_<kind>.output`, which would tie it to the training rule."""
    return f"results/models/{kind}.pt"


def fov_ids(dataset):
    return list(fov_table(dataset)["fov_id"])


@cache
def fov_rows(dataset):
    """Each FOV's manifest row as a dict, by FOV id (built once: a per-job table filter cost a no-op rerun of the
    ground-truth run about half its time)."""
    return {row["fov_id"]: row for row in fov_table(dataset).to_dict("records")}


#: What preprocessing writes for each FOV of a dataset.
FOV_OUTPUTS = {
    "labels": "results/{dataset}/segmentation/{fov}.ome.tiff",
    "crops": "results/{dataset}/crops/{fov}.npz",
    "table": "results/{dataset}/crops/{fov}.parquet",
}


def fov_output(kind, dataset, fov):
    """The file of `kind` (a key of FOV_OUTPUTS) that preprocessing writes for one FOV."""
    return FOV_OUTPUTS[kind].format(dataset=dataset, fov=fov)


def preprocessed_datasets():
    """The run's datasets that are segmented and cropped from FOVs (not imported pre-cropped)."""
    return [dataset for dataset in datasets() if not imported_from_allencell(dataset)]


def fov_groups(dataset):
    """The dataset's FOVs in the groups that one preprocessing job each does in turn (`data.fovs_per_job` FOVs,
    in manifest order): a FOV added at the end of a manifest reruns only the last group."""
    fovs, size = fov_ids(dataset), config["data"]["fovs_per_job"]
    return [fovs[start:start + size] for start in range(0, len(fovs), size)]


def raw_image(dataset, fov):
    """A FOV's image as a job input; a missing real file is left out so the job records it as rejected."""
    path = fov_rows(dataset)[fov]["path"]
    return [path] if from_synthetic_colony(dataset) or Path(path).exists() else []


def truth_labels(dataset, fov):
    """Ground-truth labels of a synthetic FOV (to match segmented cells to true cells), else nothing."""
    return [str(synth.label_image_path(SYNTHETIC_DIR, fov))] if from_synthetic_colony(dataset) else []


def stage_resources(stage, **defaults):
    """Resources of the rules generated for one stage (`preprocess_fovs_<dataset>_<group>`): `defaults`, with what
    `set-resources` (a profile's, or `--set-resources`) gives the stage's own name, which no single rule has."""
    given = workflow.resource_settings.overwrite_resources
    overrides = given[stage] if stage in given else {}
    return {**defaults, **{name: getattr(value, "value", value) for name, value in overrides.items()}}


def preprocess_arguments(dataset, fovs):
    """`statcell preprocess-fov`'s per-FOV options for a group of FOVs: each FOV's manifest row as JSON (the job
    reruns if a row changes), its ground truth where there is one, and its three outputs."""
    arguments = []
    for fov in fovs:
        record = json.dumps(fov_rows(dataset)[fov], sort_keys=True, default=str)
        arguments += ["--fov-record", record]
        for path in truth_labels(dataset, fov):
            arguments += ["--truth-labels", path]
        for kind in FOV_OUTPUTS:
            arguments += [f"--{kind}", fov_output(kind, dataset, fov)]
    return shlex.join(arguments)


def ground_truth_table(wildcards):
    return rules.synthesize.output.ground_truth if from_synthetic_colony(wildcards.dataset) else []


def cell_annotations(wildcards):
    """The training manifest's per-cell annotations (`data.cell_annotations`), when given."""
    path = config["data"]["cell_annotations"]
    is_training_manifest = config["data"]["source"] == "manifest" and wildcards.dataset == vocabulary.MAIN_DATASET
    return path if path and is_training_manifest else []


def dataset_crops(wildcards):
    if imported_from_allencell(wildcards.dataset):
        return expand(rules.import_allencell.output.crops, dataset=wildcards.dataset, chunk=allencell_chunks())
    fovs = fov_ids(wildcards.dataset)
    if not fovs:  # a target that needs the dataset was named (a drug figure in a run without a drug set)
        missing = (" (no drug set: data.drug_manifest is not set, or the synthetic colony has no drug FOVs)"
                   if wildcards.dataset == vocabulary.DRUG_DATASET else "")
        raise ConfigError(f"a target asked for needs results/{wildcards.dataset}/, but the run has no FOVs of the "
                          f"dataset '{wildcards.dataset}'{missing}")
    return [fov_output("crops", wildcards.dataset, fov) for fov in fovs]


def dataset_tables(wildcards):
    if imported_from_allencell(wildcards.dataset):
        return expand(rules.import_allencell.output.table, dataset=wildcards.dataset, chunk=allencell_chunks())
    return [fov_output("table", wildcards.dataset, fov) for fov in fov_ids(wildcards.dataset)]


def beta_sweep_training_json(wildcards):
    """Settings of sweep model `index`: the `training` section with ndim 2, β = index / (count - 1) and the sweep's
    epochs, as JSON for the rule's params."""
    section = beta_sweep.training_section(config["training"], sweep=config["beta_sweep"], index=int(wildcards.index))
    return json.dumps(section, sort_keys=True)

def beta_sweep_checkpoints(wildcards=None):
    return expand(rules.train_beta_sweep.output.checkpoint, index=range(config["beta_sweep"]["count"]))

def drug_embeddings(model):
    """The drug set's embeddings under a trained model (written by embed_cells)."""
    return f"results/{vocabulary.DRUG_DATASET}/embeddings/{model}.parquet"

def model_dimensions(model):
    """A model's latent dimensions ranked on the training dataset's test cells (written by embed_cells)."""
    return f"results/{vocabulary.MAIN_DATASET}/embeddings/{model}_dimensions.csv"

@cache
def drug_control():
    """The drug set's control treatment (`analysis.control_treatment` resolved on its FOVs' treatments, "" for the
    untreated cells), or None when there is nothing to compare: the reason is logged once and the drug analyses are
    left out of the run. A named control the drug set lacks stops the run here, before any job."""
    if vocabulary.DRUG_DATASET not in datasets():
        logger.warning("statcell: no drug set (data.drug_manifest is not set, or the synthetic colony has no drug "
                       "FOVs): skipping the drug analyses (drug_shifts, drug_trajectory and their figures)")
        return None
    requested = config["analysis"]["control_treatment"]
    treatments = perturbation.conditions(fov_table(vocabulary.DRUG_DATASET))
    try:
        control = perturbation.resolve_control(treatments, requested)
    except perturbation.NoControlError as error:
        if requested != perturbation.AUTO_CONTROL:
            raise ConfigError(f"invalid configuration: {error}") from None
        logger.warning(f"statcell: {error}: skipping the drug analyses (drug_shifts, drug_trajectory and their "
                       "figures)")
        return None
    if set(treatments) <= {control}:
        logger.warning(f"statcell: the drug set holds only its control ({perturbation.treatment_label(control)}), "
                       "no treatment to compare with it: skipping the drug analyses (drug_shifts, drug_trajectory "
                       "and their figures)")
        return None
    return control


def drug_shift_table(wildcards):
    """The drug-shift tests, when the run has a drug set with a control."""
    return rules.drug_shifts.output[0] if drug_control() is not None else []


def figure_wanted(figure):
    """Whether the run draws a figure of the registry: FOV figures need fields of view (not pre-cropped cells), drug
    figures a drug set with a control (the reason is logged once)."""
    if figure.needs == "fovs":
        return config["data"]["source"] != "allencell"
    if figure.needs == "drug_set":
        return drug_control() is not None
    return True


def explorer_screenshots():
    """PNGs of the explorer pages, where `figures.explorer.screenshot` asks for them (`auto`: where a Chromium-family
    browser is on the PATH; no conda package has one)."""
    wanted = config["figures"]["explorer"]["screenshot"]
    if wanted == "auto":
        wanted = explorer.find_browser() is not None
        if not wanted:
            logger.info(f"statcell: no browser ({', '.join(explorer.BROWSERS)}) on the PATH: the explorer pages are "
                        "written without their screenshots (figures.explorer.screenshot)")
    return expand(rules.screenshot_explorer.output[0], dataset=datasets()) if wanted else []


def final_targets():
    """What `snakemake` builds by default: every figure of the registry the run can draw, and the tables no figure
    reads."""
    if config["data"]["source"] == "allencell":  # pre-cropped cells: no FOVs to show
        logger.warning("statcell: data.source is allencell (pre-cropped single cells, no fields of view): skipping "
                       "plot_colony_overview")
    targets = [getattr(rules, figure.rule).output.figure for figure in registry.FIGURES if figure_wanted(figure)]
    targets += expand(rules.normalize_cells.output.cells, dataset=datasets())
    targets += expand(rules.embed_cells.output.dimensions, dataset=datasets(), model=["reference", "target"])
    targets += [rules.correlate_latent_space.output.recovery, rules.measure_coupling.output.mitosis]
    targets += [rules.export_meshes.output.quality]  # surface meshes for simulators
    targets += expand(rules.plot_explorer.output[0], dataset=datasets())  # the interactive page of each dataset
    targets += explorer_screenshots()
    if config["data"]["source"] == "synthetic":  # the answers the synthetic colony was built to contain
        targets += [rules.check_ground_truth.output[0]]
    return targets


def predict_dataset():
    """The dataset `predict_cells` predicts in (`predict.dataset`); a dataset the run does not have stops it here,
    before any job, naming the key and the run's datasets."""
    dataset = config["predict"]["dataset"]
    if dataset not in datasets():
        raise ConfigError(f"invalid configuration: predict.dataset is {dataset!r}, which this run does not have "
                          f"(its datasets: {', '.join(datasets())})")
    return dataset
