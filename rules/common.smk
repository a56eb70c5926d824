"""Shared wiring: where outputs live, which FOVs exist, and each rule's settings. No science here."""

import json
from pathlib import Path

from statcell import synth

SYNTHETIC_DIR = "results/synthetic"

# Rules run the CLI as `python -m statcell`, the same program as `statcell`: run from the repository root, Python
# finds the library there, so a job works in the project's venv and in a per-rule conda env (--sdm conda) alike.
STATCELL = "python -m statcell"
DATASETS = [synth.MAIN_DATASET, synth.DRUG_DATASET]


def section_json(section):
    """A config section as JSON for a rule's params: the job reruns when, and only when, these settings change."""
    return json.dumps(config[section], sort_keys=True)


def synthetic_fov_ids():
    """Names of the FOVs the synthetic colony holds, known from the config before anything is generated."""
    settings = synth.SynthSettings.from_config(config["synthetic"])
    return [plan.fov_id for plan in synth.plan_fovs(settings)]


def input_manifests(wildcards=None):
    """The FOV manifests of the run: written by `synthesize`, or the user's (training set, then the drug set)."""
    if config["data"]["source"] == "synthetic":
        return rules.synthesize.output.manifests
    return [path for path in (config["data"]["manifest"], config["data"]["drug_manifest"]) if path]


def final_targets():
    """What `snakemake` builds by default; each stage adds its own."""
    targets = [rules.plot_colony_overview.output[0]]
    if config["data"]["source"] == "synthetic":
        targets.append(rules.synthesize.output.ground_truth)
    return targets
