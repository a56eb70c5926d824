"""The report's figures, one entry each: the single place that names a figure, its command, draw function, inputs,
settings, report category and caption.

From :data:`FIGURES` come the ``statcell plot-*`` subcommands (:mod:`statcell.cli`) and the figures of ``rule all``
(``final_targets()`` in ``rules/common.smk``). Each figure has one rule in ``rules/figures.smk``, written out (Snakemake
rules are not generated): rule ``plot_<name>`` runs ``statcell plot-<name>`` in ``envs/plots.yaml`` with the inputs
named here and writes ``results/figures/<name>.png`` (``figure``, in the report with ``workflow/report/<name>.rst``
under ``category``) and the SVG beside it (``svg``); ``tests/test_figures.py`` checks that the three agree.

A draw function takes its inputs by name (tables read as DataFrames, ``.npz`` archives as dicts of arrays), then
``output``, then keyword settings: ``dpi`` and the keys of its ``figures.<settings>`` entry it names, and the settings
of other config sections listed in ``section_settings``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the figures go; figure ``name`` is ``FIGURE_DIR/<name>.png`` with its SVG beside it.
FIGURE_DIR = "results/figures"
#: Inline-JSON option of each config section a figure may read besides ``figures`` (``Figure.section_settings``).
SECTION_OPTIONS: dict[str, str] = {"analysis": "--analysis-settings", "beta_sweep": "--sweep-settings"}


@dataclass(frozen=True)
class Figure:
    """One figure of the report.

    Attributes
    ----------
    name : str
        File stem and rule suffix, e.g. ``"latent_scatter"`` (rule ``plot_latent_scatter``).
    command : str
        Its ``statcell`` subcommand, literally ``"plot-" + name`` with dashes, e.g. ``"plot-latent-scatter"``.
    draw : str
        The drawing function, ``module:function`` (imported when drawn, so the CLI starts without matplotlib).
    inputs : tuple of (str, str)
        Input names (rule input keys; options ``--name`` with dashes) and what each file is.
    settings : str
        Its entry in the config's ``figures`` section (schema-validated).
    category : str
        Report category.
    summary : str
        One line for ``statcell --help`` and the command's description.
    section_settings : mapping of str to (str, str)
        Draw parameters taken from another config section: parameter -> (section, key).
    needs : str
        ``""`` (always drawn), ``"fovs"`` (needs fields of view: not for pre-cropped data) or ``"drug_set"`` (needs a
        drug set with a control).
    """

    name: str
    command: str
    draw: str
    inputs: tuple[tuple[str, str], ...]
    settings: str
    category: str
    summary: str
    section_settings: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    needs: str = ""

    @property
    def draw_function(self) -> Callable[..., Any]:
        """The drawing function itself."""
        module, function = self.draw.split(":")
        return getattr(importlib.import_module(module), function)

    @property
    def rule(self) -> str:
        """Name of the figure's rule in ``rules/figures.smk``."""
        return f"plot_{self.name}"

    @property
    def output(self) -> str:
        """The PNG the rule writes (its SVG beside it)."""
        return f"{FIGURE_DIR}/{self.name}.png"

    @property
    def caption(self) -> str:
        """Caption file of the report, relative to the repository root."""
        return f"workflow/report/{self.name}.rst"


_ANALYSIS_CONTROL = {"control": ("analysis", "control_treatment")}

FIGURES: tuple[Figure, ...] = (
    Figure("colony_overview", "plot-colony-overview", "statcell.plots.overview:plot_colony_overview",
           (("fovs", "projections.npz of project-colony"),), "colony_overview", "Input data",
           "the first FOV of every structure and treatment: max projections and an xz section", needs="fovs"),
    Figure("model_check", "plot-model-check", "statcell.plots.models:plot_model_check",
           (("kl", "kl_per_dimension.csv of check-models"), ("images", "model_check.npz of check-models")),
           "model_check", "Models", "test cells beside their reconstructions, and the KL per latent dimension"),
    Figure("latent_scatter", "plot-latent-scatter", "statcell.plots.latent_space:plot_latent_scatter",
           (("embeddings", "reference embeddings (.parquet)"), ("dimensions", "reference ranked dimensions (.csv)"),
            ("cells", "cells.parquet of the dataset")), "latent_space", "Latent space",
           "top two reference dimensions by mitotic stage and cell height (Fig 2A/C)"),
    Figure("latent_examples", "plot-latent-examples", "statcell.plots.latent_space:plot_latent_examples",
           (("embeddings", "reference embeddings (.parquet)"), ("cells", "cells.parquet of the dataset"),
            ("thumbnails", "thumbnails.parquet of make-thumbnails"),
            ("dimensions", "reference ranked dimensions (.csv)")),
           "latent_examples", "Latent space", "real cells in place on the top two reference dimensions (Fig 2B/D)"),
    Figure("latent_pairs", "plot-latent-pairs", "statcell.plots.latent_space:plot_latent_pairs",
           (("embeddings", "reference embeddings (.parquet)"), ("dimensions", "reference ranked dimensions (.csv)")),
           "latent_space", "Latent space", "pairwise plots of the top four reference dimensions (S1 Fig)"),
    Figure("latent_walks", "plot-latent-walks", "statcell.plots.latent_space:plot_latent_walks",
           (("walks", "walks.npz of walk-latent-space"), ("correlations", "feature_correlations.csv")),
           "latent_walks", "Latent space", "latent walks of the reference model (Fig 2E/F, S2 Fig)"),
    Figure("latent_correlations", "plot-latent-correlations", "statcell.plots.latent_space:plot_latent_correlations",
           (("correlations", "feature_correlations.csv"), ("dimensions", "reference ranked dimensions (.csv)"),
            ("pca", "feature_pca.csv"), ("dimension_correlations", "dimension_correlations.csv")),
           "latent_correlations", "Latent space", "latent dimensions against cell measurements (S3 Fig)"),
    Figure("kl_per_dimension", "plot-kl-per-dimension", "statcell.plots.latent_space:plot_kl_per_dimension",
           (("kl", "kl_ranked.csv of correlate-latent-space"),), "kl_per_dimension", "Latent space",
           "ranked KL per latent dimension of both models (S6 Fig)"),
    Figure("generated_cells", "plot-generated-cells", "statcell.plots.generation:plot_generated_cells",
           (("prior", "prior.npz of generate-cells"), ("test_cells", "test_cells.npz of generate-cells")),
           "generated_cells", "Generation", "real test cells beside cells from the reference prior (Fig 4A)"),
    Figure("structures_in_one_cell", "plot-structures-in-one-cell",
           "statcell.plots.generation:plot_structures_in_one_cell",
           (("in_one_cell", "structures_in_one_cell.npz of generate-cells"),
            ("examples", "structure_examples.npz of generate-cells"),
            ("localization", "localization.csv of generate-cells")), "structures_in_one_cell", "Generation",
           "every structure generated inside one real cell, and where it lies (Fig 4B, S5)"),
    Figure("predicted_cells", "plot-predicted-cells", "statcell.plots.generation:plot_predicted_cells",
           (("predictions", "predictions.npz of predict-cells"),), "predicted_cells", "Generation",
           "every structure predicted in chosen cells from their membrane and DNA (the integrated cell)"),
    Figure("in_silico_perturbation", "plot-in-silico-perturbation",
           "statcell.plots.generation:plot_in_silico_perturbation",
           (("steps", "steps.npz of perturb-cells"),), "in_silico_perturbation", "Drug perturbations",
           "control cells moved along each drug's latent shift, beside real treated cells (in-silico perturbation)",
           needs="drug_set"),
    Figure("structure_examples", "plot-structure-examples", "statcell.plots.generation:plot_structure_examples",
           (("examples", "structure_examples.npz of generate-cells"),), "structure_examples", "Generation",
           "real example cells of every structure (S4)"),
    Figure("truncated_prior", "plot-truncated-prior", "statcell.plots.generation:plot_truncated_prior",
           (("truncated", "truncated.npz of generate-cells"),), "truncated_prior", "Generation",
           "prior draws decoded with only the top-k reference dimensions (latent-space truncation)"),
    Figure("feature_violins", "plot-feature-violins", "statcell.plots.features:plot_feature_violins",
           (("features", "features.parquet of measure-features"),), "feature_violins", "Generation",
           "violin plots of the 14 features, real against generated (Fig 3D, S7)"),
    Figure("beta_rate_distortion", "plot-beta-rate-distortion", "statcell.plots.beta_sweep:plot_rate_distortion",
           (("rate_distortion", "rate_distortion.csv of analyze-beta-sweep"),), "beta_rate_distortion", "β sweep",
           "rate and distortion against β (Fig 3A)"),
    Figure("beta_generated", "plot-beta-generated", "statcell.plots.beta_sweep:plot_generated",
           (("generated", "generated.npz of analyze-beta-sweep"),
            ("rate_distortion", "rate_distortion.csv of analyze-beta-sweep")), "beta_generated", "β sweep",
           "cells generated at each β (Fig 3B/C)"),
    Figure("beta_kl", "plot-beta-kl", "statcell.plots.beta_sweep:plot_kl",
           (("kl", "kl_per_dimension.csv of analyze-beta-sweep"),), "beta_kl", "β sweep",
           "mean KL per latent dimension across β (S6a/b)"),
    Figure("beta_features", "plot-beta-features", "statcell.plots.beta_sweep:plot_generated_features",
           (("generated_features", "generated_features.parquet of analyze-beta-sweep"),
            ("features", "features.parquet of analyze-beta-sweep")), "beta_features", "β sweep",
           "the 14 features of generated cells against β, each cell followed across β (Fig 3D, S7)"),
    Figure("beta_regression", "plot-beta-regression", "statcell.plots.beta_sweep:plot_regression",
           (("kl", "kl_per_dimension.csv of analyze-beta-sweep"), ("regression", "regression.csv"),
            ("feature_pcs", "feature_pcs.csv")), "beta_regression", "β sweep",
           "important dimensions, feature PCA and R² per PC across β (S8)",
           section_settings={"threshold": ("beta_sweep", "important_kl_nats")}),
    Figure("coupling_cells", "plot-coupling-cells", "statcell.plots.coupling:plot_coupling_cells",
           (("per_cell", "cells.parquet of measure-coupling"),), "coupling_cells", "Coupling",
           "membrane against nucleus coupling of every measured cell, coloured by structure (Fig 5A)"),
    Figure("coupling_structures", "plot-coupling-structures", "statcell.plots.coupling:plot_coupling_structures",
           (("summary", "structures.csv of measure-coupling"),), "coupling_structures", "Coupling",
           "normalized difference of membrane and nucleus coupling per structure and phase (Fig 5B)"),
    Figure("drug_reference_latents", "plot-drug-reference-latents",
           "statcell.plots.perturbation:plot_drug_reference_latents",
           (("embeddings", "drug-set embeddings of the reference model (.parquet)"),
            ("dimensions", "the reference model's dimension table (.csv)"), ("cells", "cells.parquet of the drug set"),
            ("shifts", "shifts.csv of drug-shifts")), "drug_reference_latents", "Drug perturbations",
           "drug-set cells in the top two reference dimensions, coloured by treatment (Fig 6C)",
           section_settings=_ANALYSIS_CONTROL, needs="drug_set"),
    Figure("drug_target_latents", "plot-drug-target-latents", "statcell.plots.perturbation:plot_drug_target_latents",
           (("embeddings", "drug-set embeddings of the target model (.parquet)"),
            ("dimensions", "the target model's dimension table (.csv)"), ("cells", "cells.parquet of the drug set"),
            ("shifts", "shifts.csv of drug-shifts")), "drug_target_latents", "Drug perturbations",
           "per structure, two target dimensions with control-to-treated arrows (Fig 6D–F)",
           section_settings={**_ANALYSIS_CONTROL, "min_kl": ("analysis", "active_kl_nats")}, needs="drug_set"),
    Figure("drug_trajectory", "plot-drug-trajectory", "statcell.plots.perturbation:plot_drug_trajectory",
           (("trajectory", "trajectory.csv of drug-trajectory"), ("images", "trajectory.npz of drug-trajectory"),
            ("shifts", "shifts.csv of drug-shifts")), "drug_trajectory", "Drug perturbations",
           "the trajectory's cells as xy and yz max projections (Fig 6G)", needs="drug_set"),
)
#: The figures by subcommand.
BY_COMMAND: dict[str, Figure] = {figure.command: figure for figure in FIGURES}
#: The figures by name.
BY_NAME: dict[str, Figure] = {figure.name: figure for figure in FIGURES}


def read_input(path: str | Path) -> Any:
    """A figure's input: a table (``.parquet``, ``.csv``) as a DataFrame, an ``.npz`` archive as a dict of arrays."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: a figure input must be .parquet, .csv or .npz")


def draw(figure: Figure, inputs: Mapping[str, str | Path], output: str | Path, *, settings: Mapping[str, Any],
         sections: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """Read a figure's inputs and draw it.

    Parameters
    ----------
    figure : Figure
        The figure.
    inputs : mapping of str to path
        One file per name of ``figure.inputs``.
    output : path
        PNG to write (the SVG is written beside it).
    settings : mapping
        ``dpi`` and the figure's ``figures.<settings>`` entry (:func:`statcell.plots.style.figure_settings`); an
        entry shared by several figures passes each the keys its draw function names.
    sections : mapping of str to mapping, optional
        Other validated config sections, for ``figure.section_settings``.

    Returns
    -------
    object
        What the draw function returns (e.g. what it showed), for the log.

    Raises
    ------
    ValueError
        If an input is missing, or the draw function asks for a column that none of the input tables has (a table
        from an older version of the rule that writes it); the message names the tables and their writers.
    """
    missing = [name for name, _ in figure.inputs if name not in inputs]
    if missing:
        raise ValueError(f"{figure.command}: missing inputs {missing}")
    function = figure.draw_function
    parameters = inspect.signature(function).parameters
    keywords = {key: value for key, value in settings.items() if key in parameters}
    for parameter, (section, key) in figure.section_settings.items():
        keywords[parameter] = (sections or {})[section][key]
    data = {name: read_input(inputs[name]) for name, _ in figure.inputs}
    try:
        return function(**data, output=output, **keywords)
    except KeyError as error:
        column = error.args[0] if error.args else None
        tables = [name for name, value in data.items() if hasattr(value, "columns")]
        if not isinstance(column, str) or not tables or any(column in data[name].columns for name in tables):
            raise
        described = dict(figure.inputs)
        listed = "; ".join(f"{inputs[name]} ({described[name]})" for name in tables)
        raise ValueError(f"{figure.command}: no input table has column {column!r}: {listed}. A table written by an "
                         "older statcell lacks it: rerun the rule that writes it (snakemake --forcerun RULE)"
                         ) from error
