"""Training of the reference and target models with Lightning, streaming cells from the Zarr store.

The reference model reads the membrane and DNA channels; the target model reads the structure channel, the two
reference channels it is conditioned on, and the structure label. Adam (lr 2e-4, betas 0.9/0.999), batch 32, the
validation ELBO every epoch, and the checkpoint with the best validation ELBO kept (paper section 4.4). Checkpoints
live in a work folder that Snakemake does not delete when a job fails, so a rerun resumes from the last epoch. Beside
the best Lightning checkpoint ``<name>.ckpt`` each run writes the weights-only export ``<name>.pt`` and its model card
``<name>.json`` (:mod:`statcell.models.export`), the files a model is reused from; every model is loaded through
:func:`load_model`, which never executes pickled objects.
With ``training.ndim: 2`` the same models are 2D networks trained on maximum-intensity projections along z (the
paper's 2D models, section 2.3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import statcell
from statcell import io
from statcell.config import PER_MODEL_TRAINING_KEYS, ConfigError, model_training_section
from statcell.models import ReferenceVAE, TargetVAE, VAEConfig
from statcell.models import export
from statcell.models.blocks import memory_format, runs_faster_channels_last
from statcell.models.loss import beta_elbo
from statcell.models.precision import resolved_precision
from statcell.normalize import imaged_cells
from statcell.seeding import integer_seed

log = logging.getLogger(__name__)
#: The terms of the β-ELBO logged per epoch, as ``train_<term>`` and ``val_<term>``.
ELBO_PARTS: tuple[str, ...] = ("loss", "elbo", "reconstruction", "kl")

ModelKind = Literal["reference", "target"]
REFERENCE_CHANNELS = (0, 1)  # membrane, DNA in cells.zarr
STRUCTURE_CHANNEL = 2
_CACHE_BLOCK = 256  # cells read per block when caching a dataset


@dataclass(frozen=True)
class TrainSettings:
    """The ``training`` section of the configuration (see the schema for each field)."""

    widths: tuple[int, ...]
    latent_dim: int
    ndim: int
    beta: float
    epochs: int
    batch_size: int
    learning_rate: float
    adam_betas: tuple[float, float]
    seed: int
    num_workers: int
    cache_in_memory: bool
    accelerator: str
    devices: int
    precision: str
    structure_weighting: str = "none"
    learning_rate_schedule: str = "constant"

    @classmethod
    def from_config(cls, section: Mapping, kind: ModelKind | None = None) -> TrainSettings:
        """Build settings from the validated ``training`` config section, for the model ``kind`` where ``beta`` or
        ``epochs`` is set per model (see :func:`model_training_section`)."""
        if kind is not None:
            section = model_training_section(section, kind)
        for key in PER_MODEL_TRAINING_KEYS:
            if isinstance(section.get(key), Mapping):
                raise ValueError(f"training.{key} is set per model ({dict(section[key])}): say which model the "
                                 "settings are for")
        values = {name: section[name] for name in cls.__dataclass_fields__}
        values["widths"], values["adam_betas"] = tuple(values["widths"]), tuple(values["adam_betas"])
        return cls(**values)

    def fingerprint(self, kind: ModelKind, data: str = "") -> str:
        """Short hash of the settings, and of the dataset's digest ``data``: checkpoints of other settings or other
        data are never resumed. At a constant learning rate the epoch count is left out, so raising ``epochs``
        continues a finished run; another schedule is drawn over the epochs, so there they count too."""
        values = {name: value for name, value in asdict(self).items()
                  if name != "epochs" or self.learning_rate_schedule != "constant"}
        return hashlib.sha256(json.dumps([kind, values, data], sort_keys=True).encode()).hexdigest()[:10]


#: ``anneal``: the share of the optimizer steps, at the end, over which the learning rate falls linearly to zero.
ANNEAL_FRACTION = 0.2
LEARNING_RATE_SCHEDULES = ("constant", "cosine", "anneal")


def learning_rate_factor(step: int, total_steps: int, schedule: str) -> float:
    """The learning rate at optimizer step ``step`` of ``total_steps``, as a fraction of ``training.learning_rate``.

    ``constant`` keeps the rate (the paper's). ``cosine`` warms up linearly over the first 5% of the steps, then
    decays along a half cosine to zero at the last step: large steps while the loss falls fast, small ones to settle
    at the end, so fewer epochs reach a given ELBO. ``anneal`` keeps the rate, then decays it linearly to zero over
    the last :data:`ANNEAL_FRACTION` of the steps: the constant rate's progress, and a settled end.

    Examples
    --------
    >>> [round(learning_rate_factor(step, 100, "cosine"), 3) for step in (0, 4, 5, 52, 99)]
    [0.2, 1.0, 1.0, 0.5, 0.0]
    >>> [round(learning_rate_factor(step, 100, "anneal"), 3) for step in (0, 79, 80, 90, 99)]
    [1.0, 1.0, 1.0, 0.474, 0.0]
    >>> learning_rate_factor(50, 100, "constant")
    1.0
    """
    if schedule not in LEARNING_RATE_SCHEDULES:
        raise ValueError(f"training.learning_rate_schedule must be one of {', '.join(LEARNING_RATE_SCHEDULES)}, "
                         f"got {schedule!r}")
    if schedule == "constant":
        return 1.0
    if schedule == "anneal":
        start = round((1.0 - ANNEAL_FRACTION) * total_steps)
        return 1.0 if step < start else max(0.0, (total_steps - 1 - step) / max(1, total_steps - 1 - start))
    warmup = max(1, round(0.05 * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def structure_weights(store: str | Path, indices: np.ndarray, labels: np.ndarray, n_classes: int, *,
                      weighting: str) -> np.ndarray:
    """Weight of each structure class's reconstruction error in the target model's loss.

    The reconstruction error sums squared errors over voxels, so a dim, sparse structure (the Golgi, microtubules,
    tight junctions: a few percent of the cell's voxels, far below the brightest) weighs little against a bright,
    dense one, and the model learns it last. ``energy`` weighs class ``c`` by ``Ē / E_c``, where ``E_c`` is the mean
    sum of squares of the structure channel over the class's cells and ``Ē`` that mean over all cells: every class
    then counts in the loss as much as it would at the average brightness. Equivalently, each class has its own β
    (lower for dim classes). A class without signal (the blank control) keeps 1.

    Parameters
    ----------
    store : path
        ``cells.zarr``.
    indices, labels : ndarray
        Store indices of the training cells and their structure classes (``0 .. n_classes - 1``).
    n_classes : int
        Number of structure classes.
    weighting : {"none", "energy"}
        ``training.structure_weighting``.

    Returns
    -------
    ndarray
        ``(n_classes,)`` float32 weights; all 1 for ``none``.
    """
    if weighting == "none":
        return np.ones(n_classes, dtype=np.float32)
    if weighting != "energy":
        raise ValueError(f"training.structure_weighting must be 'none' or 'energy', got {weighting!r}")
    indices, labels = np.asarray(indices), np.asarray(labels)
    energy = np.zeros(n_classes)
    for start in range(0, len(indices), _CACHE_BLOCK):
        cells = io.read_cells(store, indices[start:start + _CACHE_BLOCK], channels=[STRUCTURE_CHANNEL])
        squares = np.square(cells, dtype=np.float64).reshape(len(cells), -1).sum(axis=1)
        energy += np.bincount(labels[start:start + _CACHE_BLOCK], weights=squares, minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    mean_energy = energy.sum() / max(counts.sum(), 1)
    class_energy = np.divide(energy, counts, out=np.zeros(n_classes), where=counts > 0)
    weights = np.divide(mean_energy, class_energy, out=np.ones(n_classes), where=class_energy > 0)
    return weights.astype(np.float32)


def table_digest(table: pd.DataFrame) -> str:
    """Content hash of a cell table: it changes whenever the cells, their splits or their measurements change.

    Examples
    --------
    >>> cells = pd.DataFrame({"cell_id": ["a", "b"], "split": ["train", "val"]})
    >>> table_digest(cells) == table_digest(cells.copy()), table_digest(cells) == table_digest(cells.iloc[::-1])
    (True, False)
    """
    rows = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.sha256(rows.tobytes() + ",".join(map(str, table.columns)).encode()).hexdigest()[:16]


def max_projection(cells: np.ndarray) -> np.ndarray:
    """Maximum-intensity projection along z of channel-first cells.

    Parameters
    ----------
    cells : ndarray
        One cell ``(C, Z, Y, X)`` or a batch ``(N, C, Z, Y, X)``.

    Returns
    -------
    ndarray
        ``(C, Y, X)`` or ``(N, C, Y, X)``, same dtype.

    Examples
    --------
    >>> max_projection(np.arange(8.0).reshape(1, 2, 2, 2))[0]
    array([[4., 5.],
           [6., 7.]])
    """
    return np.max(cells, axis=-3)


class CellDataset(Dataset):
    """Cells of the store as tensors: ``(image,)`` for the reference model, ``(target, reference, label)`` else.

    Images are ``(C, Z, Y, X)``, or ``(C, Y, X)`` maximum-intensity projections along z with ``project=True``.

    Parameters
    ----------
    store : path
        ``cells.zarr`` (array ``0`` of shape ``(N, C, Z, Y, X)``).
    indices : sequence of int
        Store indices of the cells to serve.
    kind : {"reference", "target"}
        Which model the batches feed.
    labels : sequence of int, optional
        Structure class of each served cell (required for the target model).
    cache_in_memory : bool
        Read the served cells once into memory (projected, with ``project``); otherwise each item is read from the
        store when needed (the store is opened lazily in each loader worker).
    project : bool
        Serve maximum-intensity projections along z (for 2D models) instead of the 3D cells.
    decode : bool
        Serve float32 images; False serves them as the store holds them (uint8 by default: a quarter of the bytes to
        read, cache, collate and copy to the device), for :func:`decode_images` to decode once they are there.
    """

    def __init__(self, store: str | Path, indices: np.ndarray, *, kind: ModelKind, labels: np.ndarray | None = None,
                 cache_in_memory: bool = False, project: bool = False, decode: bool = True) -> None:
        if kind == "target" and labels is None:
            raise ValueError("the target model's dataset needs structure labels")
        self.store, self.indices, self.kind = str(store), np.asarray(indices, dtype=np.int64), kind
        self.labels = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)
        self._channels = list(REFERENCE_CHANNELS) + ([STRUCTURE_CHANNEL] if kind == "target" else [])
        self.project, self.decode = project, decode
        self._array = None
        self._cache = None
        if cache_in_memory and len(self.indices):
            order = np.argsort(self.indices)
            spatial = self.crop_shape[1:] if project else self.crop_shape
            dtype = np.float32 if decode else self._open().dtype
            cache = np.empty((len(self.indices), len(self._channels), *spatial), dtype=dtype)
            for start in range(0, len(order), _CACHE_BLOCK):  # bounded memory while projecting
                block = order[start:start + _CACHE_BLOCK]
                cells = io.read_cells(self._open(), self.indices[block], channels=self._channels, decode=decode)
                cache[block] = max_projection(cells) if project else cells
            self._cache = torch.from_numpy(cache)

    def _open(self):
        if self._array is None:
            self._array = io.open_cells(self.store)
        return self._array

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """``(Z, Y, X)`` of the store's cells (before any projection)."""
        return tuple(int(s) for s in self._open().shape[2:])

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:  # loader workers open their own handle
        return {**self.__dict__, "_array": None}

    def __getitem__(self, item: int) -> tuple[torch.Tensor, ...]:
        if self._cache is not None:
            cell = self._cache[item]
        else:
            cell = io.read_cells(self._open(), [self.indices[item]], channels=self._channels, decode=self.decode)[0]
            cell = torch.from_numpy(max_projection(cell) if self.project else cell)
        if self.kind == "reference":
            return (cell,)
        return cell[2:3], cell[:2], self.labels[item]


class EpochShuffle(Sampler[int]):
    """Every index once per epoch, in an order that is a pure function of ``(seed, epoch)``.

    The trainer sets the epoch (``set_epoch``) before each epoch, also after resuming from a checkpoint, so a resumed
    run visits the cells in the same order as an uninterrupted one.

    Parameters
    ----------
    size : int
        Number of items.
    seed : int
        Seed of the permutations.

    Examples
    --------
    >>> sampler = EpochShuffle(5, seed=0)
    >>> sampler.set_epoch(3)
    >>> order = list(sampler)
    >>> sorted(order), order == list(sampler)
    ([0, 1, 2, 3, 4], True)
    """

    def __init__(self, size: int, *, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(integer_seed(self.seed, "batch order", self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _rng_states() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The torch random states of this process (CPU, and every CUDA device once CUDA is in use)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, torch.Tensor | list[torch.Tensor]]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def decode_images(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A batch served encoded (``CellDataset(decode=False)``) with its images decoded to float32, where it lies (on
    the device: the bytes copied there are the store's). Labels and images already float are left as they are.

    The values equal :func:`statcell.io.decode_cells`' bit for bit (``stored * float32(1 / max)``).

    Examples
    --------
    >>> images, labels = decode_images((torch.tensor([0, 51, 255], dtype=torch.uint8), torch.tensor([3])))
    >>> [round(value, 6) for value in images.tolist()], images.dtype, labels.tolist()
    ([0.0, 0.2, 1.0], torch.float32, [3])
    """
    return tuple(tensor.float() * np.float32(1.0 / torch.iinfo(tensor.dtype).max) if _is_encoded(tensor) else tensor
                 for tensor in batch)


def _is_encoded(tensor: torch.Tensor) -> bool:
    """An image as a store holds it: an unsigned integer tensor (labels are int64, images float32 once decoded)."""
    return not tensor.dtype.is_floating_point and not tensor.dtype.is_signed and tensor.dtype != torch.bool


def to_channels_last(batch: tuple[torch.Tensor, ...], *, ndim: int) -> tuple[torch.Tensor, ...]:
    """A batch with its images ``(N, C, *spatial)`` in channels-last memory (faster convolutions on GPUs, and for 3D
    images on the CPU).

    Parameters
    ----------
    batch : tuple of torch.Tensor
        Images of ``ndim`` spatial dimensions, and possibly other tensors (labels), left as they are.
    ndim : {2, 3}
        Spatial dimensions of the images.

    Returns
    -------
    tuple of torch.Tensor
        Same values and shapes.
    """
    layout = memory_format(ndim)
    return tuple(t.contiguous(memory_format=layout) if t.dim() == ndim + 2 else t for t in batch)


def _read_history(path: Path) -> pd.DataFrame:
    """Metrics logged so far (empty when a run was killed before its logger wrote a line).

    A run stopped while Lightning's CSV logger was widening its header (new metric names) can leave rows with more
    fields than the header: their values cannot be named, so they are skipped with a warning (the training metrics
    of the epoch being written; validation metrics come first).
    """
    if not (path.exists() and path.stat().st_size):
        return pd.DataFrame()
    skipped: list[list[str]] = []
    table = pd.read_csv(path, engine="python", on_bad_lines=lambda fields: skipped.append(fields))
    if skipped:
        log.warning("%s: skipped %d row(s) with more fields than its header (a run stopped while its logger "
                    "rewrote the header)", path, len(skipped))
    return table


def structure_classes(cells: pd.DataFrame) -> list[str]:
    """The structure classes of a training table, in the order that defines the target model's label indices."""
    return sorted(cells["structure"].unique())


def model_config(kind: ModelKind, settings: TrainSettings, crop_shape: tuple[int, ...], n_classes: int) -> VAEConfig:
    """The network shape of one model for the crops of a store.

    Parameters
    ----------
    kind : {"reference", "target"}
        Which model.
    settings : TrainSettings
        Widths, latent size and ``ndim`` (2: a 2D network on maximum projections along z).
    crop_shape : tuple of int
        ``(Z, Y, X)`` voxels of the store's cells.
    n_classes : int
        Structure classes the target model is conditioned on.

    Returns
    -------
    VAEConfig
        3D on ``(Z, Y, X)`` or 2D on ``(Y, X)``.
    """
    if len(crop_shape) != 3:
        raise ValueError(f"crop_shape must be (Z, Y, X), got {crop_shape}")
    image_shape = tuple(crop_shape) if settings.ndim == 3 else tuple(crop_shape[1:])
    if kind == "reference":
        return VAEConfig(image_shape=image_shape, channels=len(REFERENCE_CHANNELS), widths=settings.widths,
                         latent_dim=settings.latent_dim)
    return VAEConfig(image_shape=image_shape, channels=1, widths=settings.widths, latent_dim=settings.latent_dim,
                     reference_channels=len(REFERENCE_CHANNELS), n_classes=n_classes)


def atomic_checkpoint_io():
    """Lightning's checkpoint writer, made atomic: each checkpoint is written to a hidden file beside its path and
    renamed into place, so a job killed mid-write leaves the previous checkpoint, never a truncated one.

    (Lightning writes through an fsspec transaction whose temporary file lies in the system's temporary folder; where
    that is another file system than the work folder, the final move is a copy, which a kill can cut short.)
    """
    import os

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
            if storage_options is not None:
                raise TypeError("the atomic checkpoint writer takes no storage_options")
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            try:
                torch.save(checkpoint, partial)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

    return AtomicCheckpointIO()


#: Devices on which training runs Adam's update as torch's one fused kernel over all parameters.
FUSED_ADAM_DEVICES = ("cuda",)


def adam(parameters: Iterable[torch.nn.Parameter], *, learning_rate: float, betas: tuple[float, float],
         device: torch.device | str, fused: bool | None = None) -> torch.optim.Adam:
    """The training's Adam: torch's fused kernel on a GPU, its per-operation (``foreach``) update on the CPU.

    The fused update reads and writes each parameter and its two moments once per step, in one kernel; the
    ``foreach`` update makes a pass, and on a GPU a kernel launch per group, for each arithmetic operation. On the CPU
    the fused kernel changed a default network's bf16 step by between +4% and -5% and saved 3-10% of a paper3d step
    in bf16 (README, *Measured*), and it rounds differently: with it the default run's Golgi reconstruction came
    out at r 0.38 instead of 0.43, inside that 4-cell median's spread over training seeds (0.33-0.47) but across
    the 0.4 bar. So the CPU keeps the per-operation update, and the default run its models bit for bit.

    Parameters
    ----------
    parameters : iterable of torch.nn.Parameter
        The parameters to optimize, all on ``device``.
    learning_rate : float
        Adam's step size.
    betas : tuple of float
        Adam's moment decay rates.
    device : torch.device or str
        The device of the parameters.
    fused : bool, optional
        Force the fused kernel on or off (``bench/bench_train.py --adam``); by default on where the device's type is
        in ``FUSED_ADAM_DEVICES``.

    Returns
    -------
    torch.optim.Adam
        The optimizer.

    Examples
    --------
    >>> weight = torch.nn.Parameter(torch.zeros(3))
    >>> adam([weight], learning_rate=2e-4, betas=(0.9, 0.999), device="cpu").defaults["fused"] is None
    True
    >>> adam([weight], learning_rate=2e-4, betas=(0.9, 0.999), device="cpu", fused=True).defaults["fused"]
    True
    """
    if fused is None:
        fused = torch.device(device).type in FUSED_ADAM_DEVICES
    return torch.optim.Adam(parameters, lr=learning_rate, betas=betas, fused=fused or None)


def _lightning_module():
    import lightning as L

    class StatisticalCellModule(L.LightningModule):
        """One Statistical Cell model with its β-ELBO objective and Adam."""

        def __init__(self, kind: ModelKind, config: dict, structures: list[str], beta: float,
                     learning_rate: float, adam_betas: tuple[float, float],
                     structure_weights: list[float] | None = None,
                     learning_rate_schedule: str = "constant") -> None:
            super().__init__()
            self.save_hyperparameters()
            vae_config = VAEConfig(**config)
            self.model = ReferenceVAE(vae_config) if kind == "reference" else TargetVAE(vae_config)
            self._resumed_rng_states = None
            self._channels_last = False
            self._train_sums: dict[str, torch.Tensor] = {}
            self._train_cells = torch.zeros(())
            self._epoch_started = self._training_seconds = 0.0
            # each structure class's reconstruction weight (target model), made a tensor once, not at every step
            self._class_weights = None if structure_weights is None else torch.tensor(structure_weights)

        def on_save_checkpoint(self, checkpoint: dict) -> None:
            # the latent noise draws from the global generator: a resumed run continues its stream
            checkpoint["rng_states"] = _rng_states()
            # the loggers flush at training steps only: write this epoch's validation metrics before the checkpoint
            # that a killed run resumes from exists, or the resumed history lacks them
            for logger in self.trainer.loggers:
                logger.save()

        def on_load_checkpoint(self, checkpoint: dict) -> None:
            self._resumed_rng_states = checkpoint.get("rng_states")

        def setup(self, stage: str) -> None:
            # converted before the strategy moves the model to its device (which keeps the layout) and wraps it for
            # DDP (bench/bench_train.py: the default 3D models train 19% and 60% faster on the CPU)
            ndim = self.model.config.ndim
            self._channels_last = runs_faster_channels_last(ndim, self.trainer.strategy.root_device.type)
            if self._channels_last:
                self.model.to(memory_format=memory_format(ndim))

        def on_after_batch_transfer(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int):
            batch = decode_images(tuple(batch))  # served as stored (uint8): decoded here, on the device
            if self._channels_last:
                return to_channels_last(batch, ndim=self.model.config.ndim)
            return batch

        def on_train_start(self) -> None:
            # restored here, after everything else is loaded, right where the saved run went on
            if self._resumed_rng_states is not None:
                _set_rng_states(self._resumed_rng_states)
                self._resumed_rng_states = None

        def forward(self, *batch: torch.Tensor):
            return self.model(*batch)

        def _step(self, batch: tuple[torch.Tensor, ...]):
            output = self.model(*batch)
            weights = None
            if self._class_weights is not None:  # the target model: batch is (target, reference, label)
                self._class_weights = self._class_weights.to(batch[2].device)  # a no-op once there
                weights = self._class_weights[batch[2]]
            return beta_elbo(batch[0], output.reconstruction, output.mean, output.log_var, beta=self.hparams.beta,
                             weights=weights)

        def on_train_epoch_start(self) -> None:
            self._train_sums = {name: torch.zeros((), device=self.device) for name in ELBO_PARTS}
            self._train_cells = torch.zeros((), device=self.device)
            self._epoch_started = time.perf_counter()

        def on_validation_epoch_start(self) -> None:
            # the end of the epoch's training steps (validation follows them), for the progress line
            self._training_seconds = time.perf_counter() - self._epoch_started

        def training_step(self, batch: tuple[torch.Tensor, ...], batch_index: int) -> torch.Tensor:
            parts = self._step(batch)
            size = batch[0].shape[0]
            for name in ELBO_PARTS:
                self._train_sums[name] += getattr(parts, name).detach() * size
            self._train_cells += size
            return parts.loss

        def validation_step(self, batch: tuple[torch.Tensor, ...], batch_index: int) -> torch.Tensor:
            parts = self._step(batch)
            for name in ELBO_PARTS:
                self.log(f"val_{name}", getattr(parts, name), on_epoch=True, on_step=False,
                         batch_size=batch[0].shape[0], sync_dist=True)  # averaged over DDP ranks
            return parts.loss

        def on_validation_epoch_end(self) -> None:
            # The epoch's training means are logged here, with its validation metrics, so that both are written
            # before the checkpoint that a killed run resumes from: Lightning's own epoch-end logging of training
            # metrics comes after that checkpoint, and a kill in between lost them. Sums over all DDP ranks.
            if not self._train_cells:  # no training epoch has run (validation alone)
                return
            cells = self.trainer.strategy.reduce(self._train_cells.clone(), reduce_op="sum")
            means = {name: self.trainer.strategy.reduce(total.clone(), reduce_op="sum") / cells
                     for name, total in self._train_sums.items()}
            if not all(torch.isfinite(mean) for mean in means.values()):
                # stop here, naming the cause, rather than train on NaN weights and fail later without a reason
                hint = "look for NaN or infinite values in the training cells, or lower training.learning_rate"
                if self.device.type == "cpu" and "bf16" in str(self.trainer.precision):
                    hint += ", or train at training.precision 32-true (README: bf16 convolution gradients on a CPU)"
                raise FloatingPointError(
                    f"{self.hparams.kind} model: the training loss is not finite in epoch {self.current_epoch + 1} "
                    f"(precision {self.trainer.precision}); {hint}")
            for name, mean in means.items():
                self.log(f"train_{name}", mean)
            if self.trainer.is_global_zero:  # progress in the job's log (not in the metrics table: times vary)
                log.info("%s epoch %d of %d: %d training cells in %.1f s (%.1f cells/s)", self.hparams.kind,
                         self.current_epoch + 1, self.trainer.max_epochs, int(cells), self._training_seconds,
                         int(cells) / max(self._training_seconds, 1e-9))

        def configure_optimizers(self):
            optimizer = adam(self.parameters(), learning_rate=self.hparams.learning_rate,
                             betas=self.hparams.adam_betas, device=self.device)
            schedule = self.hparams.get("learning_rate_schedule", "constant")
            if schedule == "constant":
                return optimizer
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: learning_rate_factor(step, total, schedule))
            # stepped after every optimizer step; its state is checkpointed, so a resumed run continues the schedule
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return StatisticalCellModule


def load_model(checkpoint: str | Path, kind: ModelKind | None = None) -> tuple[torch.nn.Module, dict]:
    """The trained network of a model file (in eval mode, on the CPU) and its settings, without executing pickles.

    Parameters
    ----------
    checkpoint : path
        A weights-only export ``<name>.pt`` (with its card ``<name>.json``) or a Lightning checkpoint ``<name>.ckpt``
        of statcell's training; both are read with ``torch.load(..., weights_only=True)``
        (:func:`statcell.models.export.load_model`).
    kind : {"reference", "target"}, optional
        The kind of model the caller needs; another kind raises :class:`statcell.config.ConfigError`.

    Returns
    -------
    tuple
        The network and its card as a dict: ``kind``, ``config`` (network shape), ``structures`` (label order),
        ``beta``, and, for an export, ``crop_shape``, ``voxel_size_um``, ``channels``, ``training``, ``dataset``,
        ``statcell_version``.

    Raises
    ------
    statcell.models.export.ModelFileError
        If the file holds pickled objects other than tensors or does not match its card.
    statcell.config.ConfigError
        If the model is not of ``kind``.
    """
    network, card = export.load_model(checkpoint, kind)
    return network, card.to_dict()


def check_given_model(weights: str | Path, *, kind: ModelKind, crop: Mapping) -> None:
    """Stop a run before any job when a model named in ``models.<kind>`` cannot serve it.

    Reads only the model's card (``<name>.json``): the model must be a ``kind`` model trained on cells of the
    ``crop`` settings' shape and voxel size. The data's channels and structures are checked later, against the
    stores (``import-model``, ``embed-cells``).

    Parameters
    ----------
    weights : path
        The exported model ``<name>.pt``.
    kind : {"reference", "target"}
        The ``models`` key it is given under.
    crop : mapping
        The validated ``crop`` config section (``shape`` {z, y, x}, ``voxel_size_um``).

    Raises
    ------
    statcell.config.ConfigError
        Naming the key ``models.<kind>``, the file and every difference.
    """
    key = f"models.{kind}"
    if not Path(weights).is_file():
        raise ConfigError(f"invalid configuration: {key}: {weights} does not exist")
    try:
        card = export.read_card(weights)
    except export.ModelFileError as error:
        raise ConfigError(f"invalid configuration: {key}: {error}") from None
    if card.kind != kind:
        raise ConfigError(f"invalid configuration: {key}: {weights} holds a {card.kind} model, not a {kind} model")
    shape = [int(crop["shape"][axis]) for axis in "zyx"]
    problems = export.mismatches(card, crop_shape=shape, voxel_size_um=[float(crop["voxel_size_um"])] * 3)
    if problems:
        raise ConfigError(f"invalid configuration: {key}: the model {weights} does not fit the `crop` settings "
                          "(set crop.shape and crop.voxel_size_um as the model was trained):\n  - "
                          + "\n  - ".join(problems))


def data_facts(store: str | Path) -> dict:
    """What a model must agree with about a cell store: ``crop_shape`` ``(Z, Y, X)``, ``voxel_size_um``
    ``(z, y, x)`` and ``channels`` (names, in order); a value the store's metadata does not state is None."""
    metadata = io.store_metadata(store)
    return {"crop_shape": [int(s) for s in io.open_cells(store).shape[2:]],
            "voxel_size_um": None if metadata.spacing is None else list(metadata.spacing),
            "channels": None if metadata.channels is None else list(metadata.channels)}


def export_trained_model(checkpoint: str | Path, *, store: str | Path, table: pd.DataFrame,
                         settings: TrainSettings) -> export.ModelCard:
    """Write the weights-only export of a trained checkpoint: ``<name>.pt`` (tensors) and ``<name>.json`` (card).

    Parameters
    ----------
    checkpoint : path
        The Lightning checkpoint ``<name>.ckpt`` of :func:`train_model`.
    store : path
        ``cells.zarr`` the model was trained on (crop shape, voxel size and channel names of the card).
    table : DataFrame
        Its ``cells.parquet`` (dataset name, cell count and content digest of the card).
    settings : TrainSettings
        The training settings.

    Returns
    -------
    ModelCard
        The card written.
    """
    network, card = export.load_model(checkpoint)
    dataset = {"name": str(table["dataset"].iloc[0]) if "dataset" in table and len(table) else Path(store).parent.name,
               "n_cells": int(len(table)), "digest": table_digest(table), "store": str(store)}
    card = export.ModelCard(kind=card.kind, config=card.config, structures=card.structures, beta=card.beta,
                            training=asdict(settings), dataset=dataset, statcell_version=statcell.__version__,
                            **data_facts(store))
    return export.save_model(network, card, Path(checkpoint).with_suffix(".pt"))


def train_model(kind: ModelKind, *, store: str | Path, cells: str | Path, settings: TrainSettings,
                checkpoint: str | Path, metrics: str | Path, workdir: str | Path) -> pd.DataFrame:
    """Train one model on the training split, validating every epoch, and keep its best checkpoint.

    Parameters
    ----------
    kind : {"reference", "target"}
        Which model.
    store, cells : path
        ``cells.zarr`` and ``cells.parquet`` of the training dataset.
    settings : TrainSettings
        Network shape, objective and optimizer.
    checkpoint, metrics : path
        Where the best checkpoint (by validation ELBO, a Lightning ``<name>.ckpt``) and the per-epoch metrics CSV
        are copied at the end; the weights-only export ``<name>.pt`` and its card ``<name>.json`` are written
        beside the checkpoint (:func:`export_trained_model`).
    workdir : path
        Folder of the running checkpoints and logs, one subfolder per model, settings and cell table; a rerun with
        the same settings (but possibly more epochs) on the same cells resumes from its ``last.ckpt``.

    Returns
    -------
    DataFrame
        Per-epoch metrics; empty in the other processes of a DDP run (``devices`` > 1), where only the first
        process writes files.

    Raises
    ------
    statcell.config.ConfigError
        If ``training.accelerator`` asks for a GPU that torch cannot use here.

    Notes
    -----
    With DDP every process takes ``batch_size`` cells per step, so a step sees ``devices * batch_size`` cells.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    if Path(checkpoint).suffix != ".ckpt":
        raise ValueError(f"{checkpoint}: the Lightning checkpoint ends in .ckpt (the export is written beside it)")
    table = io.read_cell_table(cells, store=store)
    if kind == "reference":  # a built control's membrane and DNA are its source cell's: learn each image once
        table = imaged_cells(table)
    structures = structure_classes(table)
    label_of = {name: index for index, name in enumerate(structures)}
    loaders = {}
    if table.empty:
        raise ValueError(f"{cells}: the dataset holds no cell; every FOV was rejected (see rejects.parquet beside it "
                         "for why)")
    held_out = int((table["split"] == "test").sum())
    if held_out == 0:  # fail here, not in every analysis after the training
        raise ValueError(f"{cells}: the test split holds no cell (it takes 10% of each FOV's cells, by a hash of "
                         f"their ids, and {len(table)} cells gave none); every analysis is made on held-out cells, so "
                         "the dataset needs more cells")
    for split in ("train", "val"):
        rows = table[table["split"] == split]
        if len(rows) < 2:
            raise ValueError(f"{cells}: the {split} split holds {len(rows)} cell(s); at least 2 are needed")
        labels = rows["structure"].map(label_of).to_numpy()
        dataset = CellDataset(store, rows["store_index"].to_numpy(), kind=kind, labels=labels,
                              cache_in_memory=settings.cache_in_memory, project=settings.ndim == 2, decode=False)
        sampler = EpochShuffle(len(dataset), seed=settings.seed) if split == "train" else None
        # a loader draws a seed for its workers at every epoch, from its generator or else from the global stream,
        # which the latent noise uses and checkpoints restore: keep it off that stream so resumption replays it
        worker_seeds = torch.Generator().manual_seed(integer_seed(settings.seed, "loader workers"))
        loaders[split] = DataLoader(dataset, batch_size=min(settings.batch_size, len(dataset)), sampler=sampler,
                                    drop_last=split == "train", generator=worker_seeds,
                                    num_workers=settings.num_workers, persistent_workers=settings.num_workers > 0)
    config = model_config(kind, settings, loaders["train"].dataset.crop_shape, len(structures))

    L.seed_everything(integer_seed(settings.seed, "weights", kind, bits=32), workers=True, verbose=False)
    weights = None
    if kind == "target":
        rows = table[table["split"] == "train"]
        weights = structure_weights(store, rows["store_index"].to_numpy(), rows["structure"].map(label_of).to_numpy(),
                                    len(structures), weighting=settings.structure_weighting)
        log.info("target model: reconstruction weights (training.structure_weighting %s): %s",
                 settings.structure_weighting,
                 ", ".join(f"{name} {weight:.2f}" for name, weight in zip(structures, weights, strict=True)))
        weights = [float(weight) for weight in weights]
    module = _lightning_module()(kind, asdict(config), structures, settings.beta, settings.learning_rate,
                                 settings.adam_betas, structure_weights=weights,
                                 learning_rate_schedule=settings.learning_rate_schedule)
    # the table changes with the data (its measurements come from the images), so new data never resumes old weights
    workdir = Path(workdir) / f"{kind}-{settings.fingerprint(kind, table_digest(table))}"
    workdir.mkdir(parents=True, exist_ok=True)
    saver = ModelCheckpoint(dirpath=workdir / "checkpoints", filename="best", monitor="val_elbo", mode="max")
    # The checkpoint a killed or extended run resumes from, written after every epoch. Not `save_last=True`: Lightning
    # then writes `last.ckpt` only in epochs whose validation ELBO is a new best, so a run resumed from it would redo
    # the epochs since (and a finished run's `last.ckpt` would hold its best epoch, not its last).
    every_epoch = ModelCheckpoint(dirpath=workdir / "checkpoints", filename="last", enable_version_counter=False)
    if settings.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'training.accelerator' is {settings.accelerator}, but this machine has no GPU "
                          "that torch can use (torch.cuda.is_available() is False): use auto or cpu, or run the "
                          "training job where a GPU is")
    on_gpu = torch.cuda.is_available() and settings.accelerator in ("auto", "gpu", "cuda")
    precision = resolved_precision(settings.precision, on_gpu=on_gpu)
    log.info("%s model: training at precision %s (training.precision %s)", kind, precision, settings.precision)
    # Every crop has one shape, so cuDNN's autotuning (benchmark) pays for its first step: the paper3d networks at
    # batch 32 in bf16 on an H200 went from 152 / 137 to 233 / 198 images/s with it (README, Measured).
    trainer = L.Trainer(
        max_epochs=settings.epochs, accelerator=settings.accelerator, devices=settings.devices, precision=precision,
        strategy="ddp" if settings.devices > 1 else "auto", deterministic=not on_gpu, benchmark=on_gpu,
        callbacks=[saver, every_epoch],
        logger=CSVLogger(workdir, name="", version="logs", flush_logs_every_n_steps=1), enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=1, plugins=[atomic_checkpoint_io()],
    )
    last, log_file = workdir / "checkpoints" / "last.ckpt", workdir / "logs" / "metrics.csv"
    earlier = pd.DataFrame()
    if last.exists():
        log.info("resuming %s training from %s", kind, last)
        earlier = _read_history(log_file)  # the logger starts a new file
    trainer.fit(module, loaders["train"], loaders["val"], ckpt_path=str(last) if last.exists() else None)
    if trainer.interrupted:  # Lightning turns Ctrl-C / SIGINT into a graceful stop: write no outputs, fail the job
        raise KeyboardInterrupt(f"{kind} training stopped at epoch {trainer.current_epoch}; rerun it to resume "
                                f"from {last}")
    if not trainer.is_global_zero:
        return pd.DataFrame()

    # a rerun of a finished run trains no epoch, and the logger leaves no new file
    latest = _read_history(log_file)
    history = pd.concat([earlier, latest], ignore_index=True)
    history = history[["epoch", "step", *sorted(set(history.columns) - {"epoch", "step"})]]  # same order on resume
    history.to_csv(log_file, index=False)  # the next resumption finds every epoch so far
    history = history.groupby("epoch", as_index=False).last()
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(saver.best_model_path or workdir / "checkpoints" / "best.ckpt", checkpoint)
    export_trained_model(checkpoint, store=store, table=table, settings=settings)
    history.to_csv(metrics, index=False)
    best = history["val_elbo"].max()
    log.info("%s model: best validation ELBO %.1f at epoch %d of %d", kind, best,
             int(history.loc[history["val_elbo"].idxmax(), "epoch"]) + 1, len(history))
    return history
