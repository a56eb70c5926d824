"""Trained models as portable files that load without running code: weights-only tensors plus settings in JSON.

A training run writes, beside its Lightning checkpoint ``<name>.ckpt``:

- ``<name>.pt``: the network's ``state_dict`` and nothing else (tensors, written by ``torch.save``);
- ``<name>.json``: the model card, everything needed to rebuild and check the model: its kind, network shape
  (``config``), β, the structure labels in label order, the crop shape, voxel size and channel names of the cells it
  was trained on, the training settings, the dataset (name, cell count, content digest), the statcell version and the
  SHA-256 of the ``.pt`` file.

A model file from elsewhere is untrusted input: a pickle can run code when it is loaded. :func:`load_model` therefore
reads the settings from JSON and the tensors with ``torch.load(..., weights_only=True)``, whose unpickler builds only
tensors and plain containers and refuses anything else; it never calls Lightning's ``load_from_checkpoint``. A
Lightning ``.ckpt`` is read the same way (weights only; its card is then the checkpoint's hyperparameters, without
crop shape, voxel size or channels).

:func:`mismatches` compares a card with the data a model is about to see and names every field that differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from statcell.config import ConfigError
from statcell.models.blocks import memory_format, runs_faster_channels_last
from statcell.models.vae import ReferenceVAE, TargetVAE, VAEConfig

#: The ``format`` field of a model card; a card of another format is refused.
CARD_FORMAT = "statcell-model/1"
_KINDS = ("reference", "target")


class ModelFileError(ValueError):
    """A model file cannot be used: unreadable, not weights-only, inconsistent with its card, or of another format."""


class ModelMismatchError(ValueError):
    """A model does not fit the data it is given (crop shape, voxel size, channels or structures differ)."""


@dataclass(frozen=True)
class ModelCard:
    """What a weights-only model file needs beside its tensors: how to rebuild the network, and what data it fits.

    Parameters
    ----------
    kind : {"reference", "target"}
        Which model.
    config : dict
        The network shape, the fields of :class:`statcell.models.VAEConfig` (``image_shape``, ``channels``,
        ``widths``, ``latent_dim``, ``reference_channels``, ``n_classes``).
    structures : list of str
        Structure labels in label order (the target model's classes; the training set's structures for the
        reference model).
    beta : float
        β of the training objective.
    crop_shape : list of int or None
        ``(Z, Y, X)`` voxels of the training cells (before any projection of a 2D model); None when unknown.
    voxel_size_um : list of float or None
        Voxel size ``(z, y, x)`` of the training cells in µm; None when the store did not state it.
    channels : list of str or None
        Channel names of the training store, in order (the model reads them by position); None when unknown.
    training : dict
        The training settings (:class:`statcell.train.TrainSettings` fields).
    dataset : dict
        The training data: ``name``, ``n_cells``, ``digest`` (content hash of its cell table) and ``store``.
    statcell_version : str
        Version of statcell that trained the model.
    weights_sha256 : str
        SHA-256 of the ``.pt`` file the card describes.
    format : str
        :data:`CARD_FORMAT`.
    imported_from : str or None
        Where an imported model came from (written by ``statcell import-model``).
    """

    kind: str
    config: dict
    structures: list[str]
    beta: float
    crop_shape: list[int] | None = None
    voxel_size_um: list[float] | None = None
    channels: list[str] | None = None
    training: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    statcell_version: str = ""
    weights_sha256: str = ""
    format: str = CARD_FORMAT
    imported_from: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "the model card") -> ModelCard:
        """A card from its JSON fields; unknown or missing fields and a foreign ``format`` are refused."""
        names = set(cls.__dataclass_fields__)
        unknown, missing = sorted(set(values) - names), sorted({"kind", "config", "structures", "beta"} - set(values))
        if unknown or missing:
            parts = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
            parts += [f"missing {', '.join(missing)}"] if missing else []
            raise ModelFileError(f"{source}: not a statcell model card ({'; '.join(parts)})")
        if values.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise ModelFileError(f"{source}: format {values['format']!r}, expected {CARD_FORMAT!r}")
        if values["kind"] not in _KINDS:
            raise ModelFileError(f"{source}: kind {values['kind']!r} is neither 'reference' nor 'target'")
        return cls(**dict(values))

    def vae_config(self) -> VAEConfig:
        """The network shape as a :class:`VAEConfig`."""
        return VAEConfig(**self.config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def build_network(card: ModelCard) -> nn.Module:
    """A fresh (untrained) network of the card's kind and shape."""
    config = card.vae_config()
    return ReferenceVAE(config) if card.kind == "reference" else TargetVAE(config)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights: str | Path) -> Path:
    """The card of a weights file: ``<name>.json`` beside ``<name>.pt``."""
    return Path(weights).with_suffix(".json")


def save_model(model: nn.Module, card: ModelCard, weights: str | Path) -> ModelCard:
    """Write a model as ``weights`` (its ``state_dict``, tensors only) and its card beside it (``.json``).

    Parameters
    ----------
    model : ReferenceVAE or TargetVAE
        The network; its tensors are copied to the CPU and made contiguous.
    card : ModelCard
        Its settings; ``weights_sha256`` is filled in here.
    weights : path
        ``<name>.pt`` to write; the card goes to ``<name>.json``. Both are written atomically.

    Returns
    -------
    ModelCard
        The card as written.
    """
    weights = Path(weights)
    if weights.suffix != ".pt":
        raise ValueError(f"{weights}: a weights-only model file ends in .pt")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    partial = weights.with_name(weights.name + ".partial")
    torch.save(state, partial)
    card = ModelCard(**{**asdict(card), "weights_sha256": file_sha256(partial)})
    partial_card = card_path(weights).with_name(card_path(weights).name + ".partial")
    partial_card.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    partial.replace(weights)
    partial_card.replace(card_path(weights))
    return card


def read_tensors(path: str | Path) -> dict[str, Any]:
    """The contents of a torch file, read without running any pickled code (``weights_only=True``).

    Raises
    ------
    ModelFileError
        If the file holds anything but tensors and plain containers (e.g. a pickled object with a ``__reduce__``),
        or cannot be read; the message names the file. Nothing in the file is executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelFileError(f"refusing to load {path}: it holds pickled objects other than tensors, which could run "
                             f"code when loaded ({str(error).splitlines()[0]}); only weights-only files are "
                             "loaded") from error
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise ModelFileError(f"cannot read {path}: {type(error).__name__}: {error}") from error


def _load_state(network: nn.Module, state: Any, *, source: Path) -> None:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{source}: expected a state_dict of tensors")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:  # names the missing, unexpected or mis-shaped tensors
        raise ModelFileError(f"{source}: the tensors do not fit the network its card describes: {error}") from error


def read_card(weights: str | Path) -> ModelCard:
    """The card of a weights-only model ``<name>.pt``, read from ``<name>.json`` (the tensors are not read).

    Raises
    ------
    ModelFileError
        If the card is missing, not JSON, or not a statcell model card; the message names the file.
    """
    card_file = card_path(weights)
    if not card_file.is_file():
        raise ModelFileError(f"{weights}: its model card {card_file} is missing (a weights-only model is the .pt "
                             "file and the .json card written beside it)")
    try:
        values = json.loads(card_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelFileError(f"cannot read the model card {card_file}: {error}") from error
    if not isinstance(values, Mapping):
        raise ModelFileError(f"{card_file}: not a statcell model card (not a JSON object)")
    return ModelCard.from_dict(values, source=str(card_file))


def load_model(path: str | Path, kind: str | None = None) -> tuple[nn.Module, ModelCard]:
    """A trained network (eval mode, on the CPU) and its card, loaded without executing pickled objects.

    Parameters
    ----------
    path : path
        A weights-only export ``<name>.pt`` with its card ``<name>.json`` beside it, or a Lightning checkpoint
        ``<name>.ckpt`` written by statcell's training (read weights-only too; its card, from the checkpoint's
        hyperparameters, lacks crop shape, voxel size and channels).
    kind : {"reference", "target"}, optional
        The kind of model the caller needs; another kind raises :class:`statcell.config.ConfigError` naming both.

    Returns
    -------
    tuple
        The network and its :class:`ModelCard`. A 3D network's tensors are in channels-last memory, as in training:
        its convolutions then run 1.2-1.5x faster on the CPU (``bench/bench_inference.py``), and an input in either
        layout gives the same output.

    Raises
    ------
    ModelFileError
        If a file holds pickled objects other than tensors, the tensors do not match the card (checksum, names or
        shapes), or the card is not a statcell model card. The message names the file.
    statcell.config.ConfigError
        If the model is not of ``kind`` (models given the other way round).
    """
    path = Path(path)
    if path.suffix == ".ckpt":
        checkpoint = read_tensors(path)
        if not isinstance(checkpoint, Mapping) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
            raise ModelFileError(f"{path}: not a statcell Lightning checkpoint (no state_dict and hyper_parameters)")
        hparams = dict(checkpoint["hyper_parameters"])
        card = ModelCard(kind=hparams["kind"], config=dict(hparams["config"]), structures=list(hparams["structures"]),
                         beta=float(hparams["beta"]))
        state = {name.removeprefix("model."): tensor for name, tensor in checkpoint["state_dict"].items()}
    else:
        card = read_card(path)
        if card.weights_sha256 and file_sha256(path) != card.weights_sha256:
            raise ModelFileError(f"{path} does not match its card {card_path(path)} (SHA-256 differs): the weights "
                                 "were changed or belong to another model")
        state = read_tensors(path)
    if kind is not None and card.kind != kind:
        raise ConfigError(f"{path} holds a {card.kind} model where the {kind} model is needed (are the reference "
                          "and target models given the other way round?)")
    try:
        network = build_network(card)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: its card describes no valid network: {error}") from error
    _load_state(network, state, source=path)
    if runs_faster_channels_last(network.config.ndim, "cpu"):
        network.to(memory_format=memory_format(network.config.ndim))
    return network.eval(), card


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _microns(values: Sequence[float]) -> str:
    return " x ".join(f"{value:g}" for value in values) + " µm"


def mismatches(card: ModelCard, *, crop_shape: Sequence[int] | None = None,
               voxel_size_um: Sequence[float] | None = None,
               channels: Sequence[str] | None = None, structures: Sequence[str] | None = None) -> list[str]:
    """Every way in which a model does not fit some data; empty when it fits.

    A field unknown on either side (None) is not compared.

    Parameters
    ----------
    card : ModelCard
        The model.
    crop_shape : sequence of int, optional
        ``(Z, Y, X)`` voxels of the data's cells.
    voxel_size_um : sequence of float, optional
        Voxel size ``(z, y, x)`` of the data's cells (µm).
    channels : sequence of str, optional
        Channel names of the data's store, in order.
    structures : sequence of str, optional
        Structures of the data's cells (for the target model, each must be one of its labels).

    Returns
    -------
    list of str
        One sentence per differing field, naming it and both values.

    Examples
    --------
    >>> card = ModelCard(kind="target", config={}, structures=["golgi"], beta=0.1, crop_shape=[16, 16, 24])
    >>> mismatches(card, crop_shape=(16, 16, 24), structures=["golgi", "actin"])
    ["structures: the data holds 'actin', which the target model does not know (it knows: golgi)"]
    """
    problems = []
    if crop_shape is not None and card.crop_shape is not None and tuple(crop_shape) != tuple(card.crop_shape):
        problems.append(f"crop shape: the model was trained on {tuple(card.crop_shape)} voxels (Z, Y, X), the data "
                        f"has {tuple(crop_shape)}")
    if voxel_size_um is not None and card.voxel_size_um is not None and (
            len(voxel_size_um) != len(card.voxel_size_um)
            or not all(_close(a, b) for a, b in zip(voxel_size_um, card.voxel_size_um))):
        problems.append(f"voxel size: the model was trained on voxels of {_microns(card.voxel_size_um)} (z, y, x), "
                        f"the data has {_microns(voxel_size_um)}")
    if channels is not None and card.channels is not None and list(channels) != list(card.channels):
        problems.append(f"channels: the model was trained on channels {list(card.channels)}, the data has "
                        f"{list(channels)}")
    if structures is not None and card.kind == "target":
        unknown = sorted(set(structures) - set(card.structures))
        if unknown:
            problems.append(f"structures: the data holds {', '.join(map(repr, unknown))}, which the target model "
                            f"does not know (it knows: {', '.join(card.structures)})")
    return problems


def check_fits(card: ModelCard, *, model: str, data: str, **facts: Any) -> None:
    """Raise :class:`ModelMismatchError` naming every differing field when a model does not fit the data.

    Parameters
    ----------
    card : ModelCard
        The model.
    model, data : str
        How to name the model file and the data in the message.
    **facts
        Keyword arguments of :func:`mismatches`.
    """
    problems = mismatches(card, **facts)
    if problems:
        raise ModelMismatchError(f"the {card.kind} model {model} does not fit the data {data}:\n  - "
                                 + "\n  - ".join(problems))
