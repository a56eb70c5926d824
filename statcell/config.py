"""The workflow configuration: one YAML file validated by one JSON schema.

The schema (``workflow/schemas/config.schema.yaml``) gives every key a description, a type and a default. The
Snakefile and every ``statcell`` subcommand validate through :func:`validate_config`, so a bad value fails before any
job runs, with a message naming the key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
#: The shortest edge of the remeshed meshes (``meshes.edge_length_um``) accepted, as a fraction of the crop's voxel.
MIN_MESH_EDGE_VOXELS: float = 0.1


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


def _parse_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` through libyaml where PyYAML has it: parsing the schema is part of every job's start-up
    (about ten times faster than the pure-Python parser)."""
    return yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def load_schema() -> dict[str, Any]:
    """Return the configuration JSON schema (parsed once).

    Returns
    -------
    dict
        The schema of ``workflow/schemas/config.schema.yaml``.
    """
    if not SCHEMA_PATH.is_file():
        raise FileNotFoundError(
            f"config schema not found at {SCHEMA_PATH}; install statcell from its repository with `pip install -e .`"
        )
    with SCHEMA_PATH.open() as handle:
        return _parse_yaml(handle)


def _extend_with_defaults(validator_class: type) -> type:
    """Return a validator class that fills in schema defaults while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001 - jsonschema's callback signature
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # JSON Schema counts 4.0 as an integer; a count or a size written so would reach range() or torch as a float
    strict_integers = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool))
    return validators.extend(validator_class, {"properties": set_defaults}, type_checker=strict_integers)


_DefaultFillingValidator = _extend_with_defaults(Draft202012Validator)


def _key_path(error: ValidationError) -> str:
    """Dotted path of the key an error is about, e.g. ``synthetic.pixel_size_um.z``."""
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def _describe(error: ValidationError) -> str:
    """One readable line per validation error, naming the offending key."""
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        prefix = f"{where}." if error.absolute_path else ""
        names = ", ".join(f"'{prefix}{name}'" for name in unknown)
        return f"unknown config key {names}; allowed keys here: {', '.join(allowed)}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key '{where}': {error.instance!r} is not of type {expected}{_type_hint(error.instance)}"
    if error.validator == "oneOf" and error.context:
        return _describe_alternatives(error)
    return f"config key '{where}': {error.message}"


def _type_hint(value: Any) -> str:
    """Why a value that looks like a number was not taken as one, where YAML or a float explains it.

    Examples
    --------
    >>> _type_hint("1e-3")
    ' (YAML reads 1e-3 as text: write 1.0e-3)'
    >>> _type_hint(4.0)
    ' (write 4, without the decimal point)'
    """
    if isinstance(value, float) and value.is_integer():
        return f" (write {int(value)}, without the decimal point)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if "e" in value.lower() and "." not in value.lower().split("e")[0]:
            mantissa, exponent = value.lower().split("e")
            exponent = exponent if exponent.startswith(("-", "+")) else f"+{exponent}"
            return f" (YAML reads {value} as text: write {mantissa}.0e{exponent})"
        return " (quoted, so read as text: write it without quotes)"
    return ""


def _describe_alternatives(error: ValidationError) -> str:
    """A value that fits none of a ``oneOf``: what is wrong with it under the alternative of its own type."""
    by_alternative: dict[int, list[ValidationError]] = {}
    for sub_error in error.context:
        by_alternative.setdefault(sub_error.schema_path[0], []).append(sub_error)
    for sub_errors in by_alternative.values():
        if not any(sub.validator == "type" and not sub.relative_path for sub in sub_errors):
            return "; ".join(_describe(sub) for sub in sub_errors)
    kinds = " or ".join(str(alternative.get("type")) for alternative in error.validator_value)
    return f"config key '{_key_path(error)}': {error.instance!r} is not of type {kinds}{_type_hint(error.instance)}"


def _iter_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    return iter(sorted(_DefaultFillingValidator(schema).iter_errors(config), key=lambda e: list(e.absolute_path)))


#: The input file each data source cannot run without: ``data.source`` value -> (section, key).
SOURCE_INPUTS: dict[str, tuple[str, str]] = {
    "manifest": ("data", "manifest"),
    "allencell": ("allencell", "csv"),
}


def _missing_source_inputs(config: Mapping[str, Any]) -> list[str]:
    """Problems of a schema-valid configuration whose data source lacks its input file (one line each).

    Examples
    --------
    >>> _missing_source_inputs({"data": {"source": "manifest", "manifest": None}})
    ["config key 'data.manifest': required when data.source is 'manifest' (the path of the FOV manifest CSV)"]
    """
    source = config.get("data", {}).get("source")
    if source not in SOURCE_INPUTS:
        return []
    section, key = SOURCE_INPUTS[source]
    if config.get(section, {}).get(key):
        return []
    what = {"manifest": "the path of the FOV manifest CSV", "allencell": "the path of the single-cell CSV"}[source]
    return [f"config key '{section}.{key}': required when data.source is '{source}' ({what})"]


#: Data keys each source does not read: set there, they would be silently ignored.
_UNREAD_DATA_KEYS: dict[str, tuple[str, ...]] = {
    "synthetic": ("manifest", "drug_manifest", "cell_annotations"),  # it makes its own FOVs, drug set and truth
    "allencell": ("manifest", "cell_annotations"),  # the CSV is the training set, with its own annotation
}


def _unread_data_keys(config: Mapping[str, Any]) -> list[str]:
    """Problems of a configuration that sets a data key its source does not read (one line each).

    Examples
    --------
    >>> _unread_data_keys({"data": {"source": "synthetic", "drug_manifest": "drugs.csv"}})
    ["config key 'data.drug_manifest' is set, but data.source is 'synthetic', which does not read it (set \
data.source to 'allencell' or 'manifest' to use it)"]
    """
    data = config.get("data", {})
    source = data.get("source")
    problems = []
    for key in _UNREAD_DATA_KEYS.get(source, ()):
        if data.get(key):
            readers = [name for name in ("allencell", "manifest") if key not in _UNREAD_DATA_KEYS.get(name, ())]
            problems.append(f"config key 'data.{key}' is set, but data.source is '{source}', which does not read it "
                            f"(set data.source to {' or '.join(map(repr, readers))} to use it)")
    return problems


def check_workflow_config(config: Mapping[str, Any]) -> None:
    """Check what the whole workflow needs of a validated configuration, beyond each section's own keys.

    A section validated alone (:func:`section_settings`, a job's settings) may hold what the workflow does not run
    with: ``training.ndim`` 2 is how the β sweep trains its 2D models, but the workflow's main models are 3D. And
    sections depend on each other: each of the networks' ``len(training.widths)`` blocks halves the crop, so every
    side of ``crop.shape`` must be divisible by ``2 ** len(training.widths)`` (checked here, not hours later when
    training starts on the preprocessed cells), and the meshes' edge must not be under
    :data:`MIN_MESH_EDGE_VOXELS` of the crop's voxel (a typo that would make the last job of a run hang on meshes of
    millions of triangles). Bounds given as pairs must be in order: ``crop.min_cell_volume_um3`` below
    ``crop.max_cell_volume_um3`` (else every cell is rejected and the run stops only at training), and
    ``beta_sweep.lowest`` below ``beta_sweep.highest``; something to predict in (``predict``); an odd
    ``analysis.walk_steps`` (the middle of a walk is the mean cell); and a colormap Matplotlib knows, checked here
    rather than by the figure's job at the end of a run.

    Parameters
    ----------
    config : mapping
        A configuration returned by :func:`validate_config`.

    Raises
    ------
    ConfigError
        Naming the key and why.

    Examples
    --------
    >>> check_workflow_config({"training": {"ndim": 3, "widths": [8, 16]}, "crop": {"shape": {"z": 18, "y": 16}}})
    Traceback (most recent call last):
    ...
    statcell.config.ConfigError: invalid configuration: config key 'crop.shape' (z 18, y 16) must be divisible by 4 ...
    >>> check_workflow_config({"training": {"ndim": 2, "widths": [8]}, "crop": {"shape": {"z": 16}}})
    Traceback (most recent call last):
    ...
    statcell.config.ConfigError: invalid configuration: config key 'training.ndim' is 2, but the workflow's ...
    """
    factor = 2 ** len(config["training"]["widths"])
    shape = config["crop"]["shape"]
    if any(side % factor for side in shape.values()):
        sides = ", ".join(f"{axis} {shape[axis]}" for axis in "zyx" if axis in shape)
        raise ConfigError(
            f"invalid configuration: config key 'crop.shape' ({sides}) "
            f"must be divisible by {factor} on every side: the networks' {len(config['training']['widths'])} blocks "
            f"(config key 'training.widths') each halve it")
    if config["training"]["ndim"] != 3:
        raise ConfigError(
            f"invalid configuration: config key 'training.ndim' is {config['training']['ndim']}, but the workflow's "
            "models are 3D (as the paper's full model: the coupling, generation, features, meshes and predictions "
            "read 3D cells); 2D models on maximum projections are the β sweep's (section 'beta_sweep', which trains "
            "this section's networks in 2D)")
    smallest, largest = (config["crop"].get(f"{end}_cell_volume_um3") for end in ("min", "max"))
    if smallest is not None and largest is not None and smallest >= largest:
        raise ConfigError(
            f"invalid configuration: config key 'crop.min_cell_volume_um3' ({smallest:g}) is not below "
            f"'crop.max_cell_volume_um3' ({largest:g}): every cell would be rejected")
    sweep = config.get("beta_sweep", {})
    if sweep.get("lowest", 0) >= sweep.get("highest", 1):
        raise ConfigError(
            f"invalid configuration: config key 'beta_sweep.lowest' ({sweep['lowest']:g}) is not below "
            f"'beta_sweep.highest' ({sweep['highest']:g})")
    predict = config.get("predict", {})
    if predict and not predict.get("cells") and predict.get("count") == 0 and predict.get("generated") == 0:
        raise ConfigError("invalid configuration: config keys 'predict.count' and 'predict.generated' are both 0 and "
                          "'predict.cells' is empty: the run would predict in no cell; set one of them")
    steps = config.get("analysis", {}).get("walk_steps")
    if steps is not None and steps % 2 == 0:
        raise ConfigError(f"invalid configuration: config key 'analysis.walk_steps' is {steps}: give an odd number, so "
                          "that a walk's middle image is the mean cell (the meshes' mean cell, the walks' centre)")
    colormap = config.get("figures", {}).get("latent_space", {}).get("colormap", "viridis")
    if colormap != "viridis":  # matplotlib's import is paid only for a colormap other than the default
        import matplotlib

        if colormap not in matplotlib.colormaps:
            raise ConfigError(f"invalid configuration: config key 'figures.latent_space.colormap': {colormap!r} is "
                              "not a Matplotlib colormap (e.g. viridis, magma, cividis)")
    edge, voxel = config.get("meshes", {}).get("edge_length_um", "auto"), config["crop"].get("voxel_size_um")
    if edge != "auto" and voxel and 0 < round(edge / voxel, 9) < MIN_MESH_EDGE_VOXELS:
        raise ConfigError(
            f"invalid configuration: config key 'meshes.edge_length_um' is {edge:g} µm, under "
            f"{MIN_MESH_EDGE_VOXELS:g} of the crop's voxel (config key 'crop.voxel_size_um', {voxel:g} µm): each mesh "
            f"would get {(voxel / edge) ** 2:.0f} times the triangles it has at the voxel size; set it to at least "
            f"{MIN_MESH_EDGE_VOXELS * voxel:g}, or to auto")


def check_structures_known(known: Iterable[str], datasets: Mapping[str, Iterable[str]], *, model: str) -> None:
    """Check that the target model has a label for every structure of the datasets it embeds, before any job.

    The target model is conditioned on the structure's label: a cell of a structure it was not trained on cannot be
    embedded, and the drug set or a ``data.embed`` dataset holding one would otherwise fail at its embedding job,
    after all of its preprocessing.

    Parameters
    ----------
    known : iterable of str
        The structures the target model knows (those of its training set and the control classes built, or a given
        model's card).
    datasets : mapping
        Each dataset's structures, by how to name the dataset in a message (its config key and file).
    model : str
        How to name the target model in a message.

    Raises
    ------
    ConfigError
        Naming each dataset with unknown structures, those structures and the known ones.

    Examples
    --------
    >>> check_structures_known(["golgi"], {"the drug set": ["golgi", "actin"]}, model="the model")
    Traceback (most recent call last):
    ...
    statcell.config.ConfigError: invalid configuration: the drug set holds the structure(s) 'actin', which the model ...
    """
    known = sorted(set(known))
    problems = []
    for name, structures in datasets.items():
        unknown = sorted(set(structures) - set(known))
        if unknown:
            problems.append(f"{name} holds the structure(s) {', '.join(map(repr, unknown))}, which {model} has no "
                            f"label for (it knows: {', '.join(known) or 'none'}); leave those FOVs out, or add the "
                            "structure to the training set")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a configuration against the schema and fill in the defaults.

    Parameters
    ----------
    config : mapping
        A parsed configuration (possibly partial: missing keys take their defaults). Not modified.

    Returns
    -------
    dict
        A new, complete configuration.

    Raises
    ------
    ConfigError
        If a key is unknown or a value has the wrong type or range, or the data source lacks its input file
        (``data.manifest`` for ``manifest``, ``allencell.csv`` for ``allencell``); the message names every offending
        key.
    """
    completed = json.loads(json.dumps(dict(config)))  # a deep, plain copy (also turns tuples into lists)
    problems = [_describe(error) for error in _iter_errors(completed, load_schema())]
    if not problems:  # keys that depend on each other, once every key has a valid type
        problems = _missing_source_inputs(completed) + _unread_data_keys(completed)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return _expand_home(_resolve_automatic(completed))


def _resolve_automatic(config: dict[str, Any]) -> dict[str, Any]:
    """Replace the ``auto`` values that follow from other keys by numbers, so every rule sees plain settings.

    ``segmentation.working_voxel_um: auto`` is half ``crop.voxel_size_um``: segmenting on a grid finer than that
    gains nothing the crops can show, and a coarser one would move cell boundaries by more than half a crop voxel.

    Examples
    --------
    >>> _resolve_automatic({"segmentation": {"working_voxel_um": "auto"}, "crop": {"voxel_size_um": 0.8}})
    {'segmentation': {'working_voxel_um': 0.4}, 'crop': {'voxel_size_um': 0.8}}
    """
    segmentation = config.get("segmentation", {})
    if segmentation.get("working_voxel_um") == "auto":
        segmentation["working_voxel_um"] = config["crop"]["voxel_size_um"] / 2
    return config


#: Keys that name files or folders (``data.embed`` maps names to files).
PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("data", "manifest"), ("data", "drug_manifest"), ("data", "cell_annotations"), ("allencell", "csv"),
    ("allencell", "image_root"), ("models", "reference"), ("models", "target"))


def _expand_home(config: dict[str, Any]) -> dict[str, Any]:
    """Expand a leading ``~`` of every path a configuration names, as a shell would (Snakemake and pandas do not).

    Examples
    --------
    >>> import os
    >>> _expand_home({"data": {"manifest": "~/lab/m.csv", "embed": {"p7": "~/p7.csv"}}}) == {
    ...     "data": {"manifest": os.path.expanduser("~/lab/m.csv"), "embed": {"p7": os.path.expanduser("~/p7.csv")}}}
    True
    """
    import os

    for section, key in PATH_KEYS:
        values = config.get(section, {})
        if isinstance(values.get(key), str):
            values[key] = os.path.expanduser(values[key])
    embed = config.get("data", {}).get("embed", {})
    for name, path in embed.items():
        embed[name] = os.path.expanduser(path)
    return config


def load_config(path: str | Path, *, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Read a YAML (or JSON) configuration file, validate it and fill in the defaults.

    Parameters
    ----------
    path : str or Path
        The configuration file.
    overrides : mapping, optional
        Keys that replace the file's, by section (e.g. ``{"crop": {"voxel_size_um": 0.4}}``: a model's grid), before
        validation, so that settings derived from them (``segmentation.working_voxel_um: auto``) follow them.

    Returns
    -------
    dict
        The complete, validated configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as handle:
        try:
            parsed = _parse_yaml(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(parsed, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(parsed).__name__}")
    for section, values in (overrides or {}).items():
        parsed[section] = {**(parsed.get(section) or {}), **values}
    try:
        return validate_config(parsed)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def section_settings(section: str, *, config_path: str | Path | None = None, inline_json: str | None = None) -> dict:
    """One validated section of the configuration, from a config file or from inline JSON.

    Rules pass their section as inline JSON (so Snakemake reruns a job when, and only when, its own settings change);
    a person running a subcommand by hand passes the config file.

    Parameters
    ----------
    section : str
        Top-level key, e.g. ``"synthetic"``.
    config_path : str or Path, optional
        A whole configuration file.
    inline_json : str, optional
        JSON of the section alone.

    Returns
    -------
    dict
        The section with defaults filled in.
    """
    if inline_json is not None:
        try:
            value = json.loads(inline_json)
        except json.JSONDecodeError as error:
            raise ConfigError(f"settings for '{section}' are not valid JSON: {error}") from error
        return validate_config({section: value})[section]
    return load_config(config_path if config_path is not None else DEFAULT_CONFIG_PATH)[section]


#: ``training`` keys that may be one value for both models or ``{reference: ..., target: ...}``, and their types.
PER_MODEL_TRAINING_KEYS: dict[str, type] = {"beta": float, "epochs": int}


def model_training_section(section: Mapping, kind: Literal["reference", "target"]) -> dict:
    """The ``training`` section as model ``kind`` trains with it: ``beta`` and ``epochs`` resolved to that model's.

    ``training.beta`` and ``training.epochs`` are each one value for both models, or ``{reference: ..., target:
    ...}`` (:data:`PER_MODEL_TRAINING_KEYS`). The two models are trained independently, so each may trade
    reconstruction for sparsity at its own β and train for as long as it keeps improving.

    Examples
    --------
    >>> model_training_section({"beta": {"reference": 0.25, "target": 0.1}, "epochs": 5}, "target")
    {'beta': 0.1, 'epochs': 5}
    >>> model_training_section({"beta": 0.5, "epochs": {"reference": 64, "target": 96}}, "reference")
    {'beta': 0.5, 'epochs': 64}
    """
    if kind not in ("reference", "target"):
        raise ValueError(f"model kind must be 'reference' or 'target', got {kind!r}")
    resolved = dict(section)
    for key, kind_type in PER_MODEL_TRAINING_KEYS.items():
        if key in section:
            value = section[key]
            resolved[key] = kind_type(value[kind] if isinstance(value, Mapping) else value)
    return resolved
