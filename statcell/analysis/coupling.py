"""Coupling of each structure to the cell membrane and to the nucleus, by swapping reference channels (paper Fig 5).

The target model gives each cell an ELBO, a lower bound on ``log p(structure | membrane, DNA, label)``. If a
structure's localization follows the membrane, giving the model another cell's membrane makes the structure harder
to explain and the ELBO drops; if the structure ignores the membrane, the ELBO barely moves. Per cell and reference
channel ``r`` (membrane or DNA, "nucleus") the coupling is (paper Eq 4, sign chosen so that coupled is positive)::

    c_r = log( mean_k ELBO(x with channel r from donor k) / ELBO(x) )
        = log( mean_k (-ELBO_k) ) - log( -ELBO )

ELBOs are negative (``-ELBO`` is a bound on the code length of the structure in nats), so ``c_r > 0`` means the
swapped copies cost more to explain than the cell itself: ``c_r = log 2`` means twice as many nats. The paper's Eq 4
compares the likelihood of the cell with the mean likelihood over swapped copies; the original code
(``pytorch_integrated_cell``, notebook ``4_ELBO_ablation``) plotted ``1 - ELBO / mean_k ELBO_k = 1 - exp(-c_r)``, a
monotone function of ``c_r`` that agrees with it to first order. The ``K`` donors of a cell are other cells of the
same structure (never the cell itself), drawn without replacement where the structure has enough cells; both
channels use the same donors, and every ELBO of a cell (its own and its ``2K`` copies) uses the same latent noise
draws, so the difference of ELBOs carries as little Monte-Carlo noise as possible.

Per cell, the normalized difference (Eq 5's summand) is ``d = (c_m - c_n) / (|c_m| + |c_n|)`` in ``[-1, 1]``: +1
coupled to the membrane only, -1 to the nucleus only. Where both couplings are positive this is Eq 5's
``(c_m - c_n) / (c_m + c_n)``; the absolute values keep it bounded when Monte-Carlo noise makes a coupling of an
uncoupled structure slightly negative; ``d = 0`` where both are 0. Eq 5 averages ``d`` over the cells of a structure
in one cell-cycle phase (interphase or mitosis).

The call does not test Eq 4's score: under no coupling its mean is above 0 (by Jensen's inequality, about half the
squared coefficient of variation of the swapped ELBOs), so a test of "mean above 0" finds coupling where there is
none. It tests the original code's rank statistic instead: per cell and channel, the **rank** ``q_r`` is the
fraction of the ``K`` swapped copies whose ELBO is below the cell's own (ties count one half). If the structure does
not depend on the channel and the cell is exchangeable with its donors, its own channel is just one more draw from
the same population as theirs, so its ELBO is equally likely to fall anywhere among theirs: ``q_r`` has mean 1/2,
whatever the model, the ELBO's scale or its noise. Most donors are training cells, which the cell is not quite
exchangeable with (the model was fitted to their references); on the blank control that lowers the rank a little
(the default colony's blank has mean ranks of 0.31-0.49 over three training seeds; README, *Measured*). Coupled cells
have ``q_r`` near 1.

The replicate is the field of view (:mod:`statcell.analysis.statistics`). A cell's donors come from its own FOV
(other cells of its structure there), so that a FOV effect shared by the structure and the reference (brightness,
density) cannot pass for coupling; a cell alone with its structure in its FOV (e.g. a control built from a few
sampled cells) takes donors from the other FOVs, and ``donors_in_fov`` says which. Per structure, phase and channel,
the mean of ``q_r`` over the cells is tested against 1/2 by a one-sided t-test with the FOVs as clusters
(:func:`~statcell.analysis.statistics.unit_mean_test`: cells of one FOV share donors and conditions, FOVs do not; a
FOV weighs by its cells), Holm-corrected at the family-wise level ``analysis.significance`` over every test made. A
structure *couples to* the channel whose test is significant, to *neither* when none is, and is *undetermined* in a
phase whose cells lie in fewer than three FOVs (too few replicates for a test). Where both tests are significant,
the call is the channel that dominates by Eq 5's normalized difference (its interval, from a bootstrap over FOVs at
level ``1 - significance``, excludes 0), else *both*: a rank test detects any consistent loss of ELBO, and swapping
a channel always makes some cells' references unlike any the model saw (a donor's nucleus reaching outside the
recipient's membrane), so with enough FOVs the membrane copy shows a small but consistent nucleus coupling (Eq 4
about 0.05, against 1.5 for the membrane) beside its dominant one. "Neither" is "no coupling detectable with this
many FOVs", not proof of independence. Eq 4's means are reported beside the calls as effect sizes, with intervals
from a bootstrap over FOVs.

The controls calibrate the call (:data:`CALIBRATION_CONTROLS`, as in the paper's Fig 5A): the blank must come out
uncoupled, the membrane and DNA copies coupled to their own channel only. The noise and random-structure controls
are not null controls for this call: the noise fills the cell and is brighter in the nucleus (the paper's "random
Gaussian noise in the membrane and DNA regions"), and another cell's structure is cut to this cell's mask, so both
images follow the cell's shape and a model that learns them couples them to it.

Mitosis against interphase: per structure and score, a permutation test of the difference of the phases' means, the
phase labels shuffled among the cells of each FOV (``analysis.resampling_iterations`` shuffles; FOVs differ, so
shuffling across them would mix FOV differences into the null), two-sided, Holm-corrected over the tests made.

The phases come from the cells table: ``is_mitotic`` where present (the synthetic ground truth), else
``mitotic_stage`` (``interphase`` or a mitotic stage; ``unknown`` or empty is no annotation). A cell without an
annotation is in phase ``unannotated``: on a dataset without any (a lab's own FOVs), every cell is, the couplings are
summarized over all cells, and the mitosis test is skipped with the reason in its table's ``note``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from statcell.analysis.statistics import holm, replicate_units, unit_mean_test
from statcell.io import read_cells
from statcell.seeding import numpy_stream
from statcell.vocabulary import IMAGING_FOV

if TYPE_CHECKING:  # the figure commands run without torch (envs/plots.yaml)
    import torch

log = logging.getLogger(__name__)

#: Reference channels swapped, by the name of the score, and their index in the reference image (membrane, DNA).
SWAPPED_CHANNELS: dict[str, int] = {"membrane": 0, "nucleus": 1}
PHASES: tuple[str, ...] = ("interphase", "mitosis")
#: The controls that calibrate the coupling call, and the call each must get (paper Fig 5A).
CALIBRATION_CONTROLS: dict[str, str] = {"control_membrane": "membrane", "control_dna": "nucleus",
                                        "control_blank": "neither"}
#: Mean of a cell's rank statistic when the structure does not depend on the swapped channel.
NULL_RANK = 0.5
#: Phase of cells without a mitotic annotation.
UNANNOTATED = "unannotated"
#: The call of a structure without measured cells, and how a calibration check of such a control begins.
NOT_MEASURED = "not measured"
#: ``mitotic_stage`` values that say nothing about the phase.
_UNKNOWN_STAGES = frozenset({"", "unknown"})
SCORES: tuple[str, ...] = ("membrane_coupling", "nucleus_coupling", "normalized_difference")
#: Column of the replicate unit (the imaging FOV) in the per-cell table.
UNIT = IMAGING_FOV
#: Per-cell rank statistics of the call, by channel.
RANKS: dict[str, str] = {channel: f"{channel}_rank" for channel in SWAPPED_CHANNELS}
#: Channels of ``cells.zarr`` read: membrane, DNA, structure.
_STORE_CHANNELS = [0, 1, 2]


@dataclass(frozen=True)
class CouplingSettings:
    """The settings of the ``analysis`` section that the coupling analysis uses (see the schema)."""

    elbo_samples: int
    coupling_copies: int
    batch_size: int
    resampling_iterations: int
    significance: float
    seed: int

    @classmethod
    def from_config(cls, section: dict) -> CouplingSettings:
        """Build settings from the validated ``analysis`` config section."""
        return cls(**{name: section[name] for name in cls.__dataclass_fields__})


class Donors(NamedTuple):
    """The donor cells of each measured cell."""

    indices: np.ndarray
    """``(n, K)`` store indices of the donors."""
    in_fov: np.ndarray
    """``(n,)`` bool: the donors come from the cell's own FOV (else, having no other cell of its structure there,
    from the other FOVs)."""


def draw_donors(store_index: np.ndarray, structure: np.ndarray, unit: np.ndarray, *, pool_index: np.ndarray,
                pool_structure: np.ndarray, pool_unit: np.ndarray, copies: int, seed: int) -> Donors:
    """Pick, for each cell, ``copies`` other cells of its structure, in its FOV, to take a reference channel from.

    Parameters
    ----------
    store_index, structure, unit : ndarray
        The cells' store indices, structures and FOVs (replicate units), shape ``(n,)``.
    pool_index, pool_structure, pool_unit : ndarray
        Store indices, structures and FOVs of the cells donors are drawn from, shape ``(m,)``.
    copies : int
        Donors per cell, K.
    seed : int
        With the cell's store index, fixes its donors (so they do not depend on which other cells are measured).

    Returns
    -------
    Donors
        Donors of the same structure, never the cell itself, from its FOV where it has another cell of its structure
        (else from the others); all distinct where there are more than ``copies`` candidates, else drawn with
        replacement.

    Raises
    ------
    ValueError
        If a cell has no other cell of its structure in the pool.

    Examples
    --------
    >>> donors = draw_donors(np.array([0]), np.array(["a"]), np.array(["f1"]), pool_index=np.arange(4),
    ...                      pool_structure=np.array(list("aaba")), pool_unit=np.array(["f1", "f1", "f1", "f2"]),
    ...                      copies=2, seed=0)
    >>> donors.indices.tolist(), donors.in_fov.tolist()
    ([[1, 1]], [True])
    """
    pool_index, pool_structure, pool_unit = (np.asarray(array) for array in (pool_index, pool_structure, pool_unit))
    indices = np.empty((len(store_index), copies), dtype=np.int64)
    in_fov = np.zeros(len(store_index), dtype=bool)
    for row, (index, name, fov) in enumerate(zip(np.asarray(store_index), np.asarray(structure), np.asarray(unit),
                                                 strict=True)):
        candidates = (pool_structure == name) & (pool_index != index)
        if not candidates.any():
            raise ValueError(f"cell {index} ({name}) has no other cell of its structure to swap channels with")
        in_fov[row] = (candidates & (pool_unit == fov)).any()
        chosen = pool_index[candidates & (pool_unit == fov) if in_fov[row] else candidates]
        rng = numpy_stream(seed, "coupling donors", int(index))
        indices[row] = rng.choice(chosen, size=copies, replace=len(chosen) < copies)
    return Donors(indices, in_fov)


def cell_phases(cells: pd.DataFrame) -> pd.Series:
    """Cell-cycle phase of each cell: ``interphase``, ``mitosis``, or ``unannotated`` where the table does not say.

    Parameters
    ----------
    cells : DataFrame
        Rows of ``cells.parquet``; read are ``is_mitotic`` (preferred) or ``mitotic_stage``, when present.

    Returns
    -------
    Series of str
        Same index as ``cells``.

    Examples
    --------
    >>> cell_phases(pd.DataFrame({"mitotic_stage": ["interphase", "prophase", "unknown"]})).tolist()
    ['interphase', 'mitosis', 'unannotated']
    >>> cell_phases(pd.DataFrame({"structure": ["golgi"]})).tolist()
    ['unannotated']
    """
    phases = pd.Series(UNANNOTATED, index=cells.index, dtype=object)
    if "is_mitotic" in cells:
        known = cells["is_mitotic"].notna()
        phases[known] = np.where(cells.loc[known, "is_mitotic"].astype(bool), "mitosis", "interphase")
    elif "mitotic_stage" in cells:
        stages = cells["mitotic_stage"].fillna("").astype(str)
        known = ~stages.isin(_UNKNOWN_STAGES)
        phases[known] = np.where(stages[known] == "interphase", "interphase", "mitosis")
    return phases


def _noise(store_index: np.ndarray, *, samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latent noise ``(n, samples, latent_dim)``, fixed per cell by the seed and its store index."""
    import torch

    return torch.from_numpy(np.stack([
        numpy_stream(seed, "coupling noise", int(index)).standard_normal((samples, latent_dim), dtype=np.float32)
        for index in store_index]))


def _elbo(model: torch.nn.Module, target: torch.Tensor, reference: torch.Tensor, label: torch.Tensor,
          noise: torch.Tensor) -> torch.Tensor:
    """Per-image ELBO ``-(mean_k SSE_k + KL)`` of the target model with given latent noise ``(batch, K, latent)``."""
    import torch

    from statcell.models.loss import kl_per_dimension, sum_squared_error

    mean, log_var = model.encode(target, reference, label)
    errors = torch.stack([sum_squared_error(target, model.decode(mean + eps * (0.5 * log_var).exp(), reference,
                                                                 label)) for eps in noise.unbind(dim=1)])
    return -(errors.mean(dim=0) + kl_per_dimension(mean.float(), log_var.float()).sum(dim=1))


def swap_elbos(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, donor_references: np.ndarray,
               donors: np.ndarray, noise: torch.Tensor, batch_size: int) -> np.ndarray:
    """Target-model ELBOs of cells with their own reference and with one reference channel from each donor.

    Parameters
    ----------
    model : TargetVAE
        The trained target model (in eval mode).
    images : ndarray
        ``(n, 3, Z, Y, X)``: membrane, DNA, structure of each cell.
    labels : ndarray
        Structure class index of each cell, ``(n,)``.
    donor_references : ndarray
        ``(m, 2, Z, Y, X)`` membrane and DNA of the donor cells.
    donors : ndarray
        ``(n, K)`` positions in ``donor_references`` of each cell's donors.
    noise : Tensor
        ``(n, samples, latent_dim)`` standard normal draws, shared by all configurations of a cell.
    batch_size : int
        Configurations per forward pass (memory only; the result does not depend on it).

    Returns
    -------
    ndarray
        ``(n, 1 + 2K)`` float64 ELBOs: column 0 the cell as imaged, columns ``1 .. K`` with the membrane of donors
        ``1 .. K``, columns ``K + 1 .. 2K`` with their DNA.
    """
    import torch

    n, copies = donors.shape
    configurations = 1 + len(SWAPPED_CHANNELS) * copies
    cell_of = np.repeat(np.arange(n), configurations)
    slot = np.tile(np.arange(configurations), n)
    images_t, donor_t = torch.from_numpy(np.asarray(images, np.float32)), torch.from_numpy(
        np.asarray(donor_references, np.float32))
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.long)
    elbos = np.empty(n * configurations, dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(cell_of), batch_size):
            cells, slots = cell_of[start:start + batch_size], slot[start:start + batch_size]
            reference = images_t[cells, :2].clone()
            for channel, offset in zip(SWAPPED_CHANNELS.values(), range(1, configurations, copies), strict=True):
                swapped = (slots >= offset) & (slots < offset + copies)
                donor = donors[cells[swapped], slots[swapped] - offset]
                reference[torch.from_numpy(swapped), channel] = donor_t[donor, channel]
            elbos[start:start + len(cells)] = _elbo(model, images_t[cells, 2:3], reference, labels_t[cells],
                                                    noise[cells]).double().numpy()
    return elbos.reshape(n, configurations)


def coupling_score(elbo: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """Eq 4: ``log(mean_k ELBO_k / ELBO)``, positive when the swapped copies explain the structure worse.

    Parameters
    ----------
    elbo : ndarray
        ``(n,)`` negative ELBOs of the cells as imaged.
    swapped : ndarray
        ``(n, K)`` negative ELBOs of their copies with one reference channel swapped.

    Returns
    -------
    ndarray
        ``(n,)`` couplings (dimensionless log ratios).

    Examples
    --------
    >>> coupling_score(np.array([-100.0]), np.array([[-150.0, -250.0]])).round(4).tolist()
    [0.6931]
    """
    elbo, swapped = np.asarray(elbo, np.float64), np.asarray(swapped, np.float64)
    if (elbo >= 0).any() or (swapped >= 0).any():
        raise ValueError("coupling scores need negative ELBOs (an ELBO is -(error + KL) <= 0)")
    return np.log(-swapped.mean(axis=1)) - np.log(-elbo)


def swap_rank(elbo: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """The rank statistic: the fraction of swapped copies whose ELBO is below the cell's own, ties counting one half.

    Parameters
    ----------
    elbo : ndarray
        ``(n,)`` ELBOs of the cells as imaged.
    swapped : ndarray
        ``(n, K)`` ELBOs of their copies with one reference channel swapped.

    Returns
    -------
    ndarray
        ``(n,)`` in [0, 1]; mean 1/2 when the structure does not depend on the swapped channel (and the cell is
        exchangeable with its donors: see the module), near 1 when it does.

    Examples
    --------
    >>> swap_rank(np.array([-100.0, -100.0]), np.array([[-150.0, -250.0], [-90.0, -100.0]])).tolist()
    [1.0, 0.25]
    """
    elbo, swapped = np.asarray(elbo, np.float64)[:, None], np.asarray(swapped, np.float64)
    return ((swapped < elbo).sum(axis=1) + 0.5 * (swapped == elbo).sum(axis=1)) / swapped.shape[1]


def normalized_difference(membrane: np.ndarray, nucleus: np.ndarray) -> np.ndarray:
    """Eq 5's per-cell term ``(c_m - c_n) / (|c_m| + |c_n|)``: +1 membrane only, -1 nucleus only, 0 if both are 0.

    Examples
    --------
    >>> normalized_difference(np.array([0.3, 0.0, 0.2, 0.0]), np.array([0.0, 0.5, 0.2, 0.0])).tolist()
    [1.0, -1.0, 0.0, 0.0]
    """
    membrane, nucleus = np.asarray(membrane, np.float64), np.asarray(nucleus, np.float64)
    total = np.abs(membrane) + np.abs(nucleus)
    return np.divide(membrane - nucleus, total, out=np.zeros_like(total), where=total > 0)


def measure_coupling(model: torch.nn.Module, cells: pd.DataFrame, *, structures: list[str], store: str | Path,
                     settings: CouplingSettings, splits: tuple[str, ...] = ("test", "val")) -> pd.DataFrame:
    """Membrane and nucleus coupling of every cell of the given splits (Eq 4) and their normalized difference.

    Parameters
    ----------
    model : TargetVAE
        The trained target model.
    cells : DataFrame
        ``cells.parquet`` of the store: every cell (all splits) is a possible donor for cells of its structure.
    structures : list of str
        The model's structure classes, in label-index order.
    store : path
        ``cells.zarr``.
    settings : CouplingSettings
        ELBO samples, copies K, batch size and seed.
    splits : tuple of str
        Splits whose cells are measured. The default takes the validation cells as well as the test cells: neither
        was trained on (validation only picked the epoch), and twice the cells per structure make the per-structure
        tests usable.

    Returns
    -------
    DataFrame
        One row per measured cell: ``cell_id``, ``split``, ``store_index``, ``structure``, ``mitotic_stage`` and
        ``is_mitotic`` (where the cells table has them), ``phase`` (:func:`cell_phases`), ``imaging_fov`` (its
        replicate unit), ``elbo``, ``membrane_swapped_elbo`` and ``nucleus_swapped_elbo`` (means over copies),
        ``membrane_coupling``, ``nucleus_coupling`` (Eq 4), ``normalized_difference``, ``membrane_rank``,
        ``nucleus_rank`` (:func:`swap_rank`), ``donors_in_fov``, ``donor_store_indices``. Cells of a structure with
        no other cell to take a reference channel from are left out, with a log message.

    Raises
    ------
    ValueError
        If a cell's structure is not one the model was trained on, or no cell can be measured.
    """
    measured = cells[cells["split"].isin(splits)].sort_values("store_index").reset_index(drop=True)
    unknown = sorted(set(measured["structure"]) - set(structures))
    if unknown:
        raise ValueError(f"the target model was not trained on structure(s) {unknown}")
    pool_sizes = cells["structure"].value_counts()
    alone = measured["structure"].map(pool_sizes) < 2
    for structure in sorted(set(measured.loc[alone, "structure"])):
        log.warning("%s: a single cell, no other cell of its structure to swap channels with; left out", structure)
    measured = measured[~alone].reset_index(drop=True)
    if measured.empty:
        raise ValueError(f"no cell of the {'/'.join(splits)} splits to measure coupling on")
    measured[UNIT] = replicate_units(measured).to_numpy()
    drawn = draw_donors(measured["store_index"].to_numpy(), measured["structure"].to_numpy(),
                        measured[UNIT].to_numpy(), pool_index=cells["store_index"].to_numpy(),
                        pool_structure=cells["structure"].to_numpy(), pool_unit=replicate_units(cells).to_numpy(),
                        copies=settings.coupling_copies, seed=settings.seed)
    donors = drawn.indices
    donor_cells, donor_position = np.unique(donors, return_inverse=True)
    noise = _noise(measured["store_index"].to_numpy(), samples=settings.elbo_samples,
                   latent_dim=model.config.latent_dim, seed=settings.seed)
    labels = measured["structure"].map({name: i for i, name in enumerate(structures)}).to_numpy()
    images = read_cells(store, measured["store_index"].to_numpy(), channels=_STORE_CHANNELS)
    elbos = swap_elbos(model, images, labels,
                       donor_references=read_cells(store, donor_cells, channels=_STORE_CHANNELS[:2]),
                       donors=donor_position.reshape(donors.shape), noise=noise, batch_size=settings.batch_size)
    copies = settings.coupling_copies
    annotations = [column for column in ("mitotic_stage", "is_mitotic") if column in measured]
    table = measured[["cell_id", "split", "store_index", "structure", *annotations]].copy()
    table["phase"] = cell_phases(measured)
    table[UNIT] = measured[UNIT]
    table["elbo"] = elbos[:, 0]
    for number, name in enumerate(SWAPPED_CHANNELS):
        swapped = elbos[:, 1 + number * copies:1 + (number + 1) * copies]
        table[f"{name}_swapped_elbo"] = swapped.mean(axis=1)
        table[f"{name}_coupling"] = coupling_score(elbos[:, 0], swapped)
        table[RANKS[name]] = swap_rank(elbos[:, 0], swapped)
    table["normalized_difference"] = normalized_difference(table["membrane_coupling"], table["nucleus_coupling"])
    table["donors_in_fov"] = drawn.in_fov
    outside = int((~drawn.in_fov).sum())
    if outside:
        log.info("%d of %d cells have no other cell of their structure in their FOV: their donors come from the "
                 "other FOVs", outside, len(table))
    table["donor_store_indices"] = list(donors)
    return table


def bootstrap_interval(values: np.ndarray, units: np.ndarray, *, iterations: int, level: float,
                       rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of cells from a bootstrap over their FOVs (whole FOVs resampled).

    NaNs with fewer than two FOVs (nothing to resample between).

    Examples
    --------
    >>> low, high = bootstrap_interval(np.arange(10.0), np.arange(10), iterations=2000, level=0.9,
    ...                                rng=np.random.default_rng(0))
    >>> bool(low < 4.5 < high)
    True
    """
    values = np.asarray(values, np.float64)
    grouped = pd.Series(values).groupby(np.asarray(units))
    sums, counts = grouped.sum().to_numpy(), grouped.size().to_numpy()
    if len(sums) < 2:
        return float("nan"), float("nan")
    chosen = rng.integers(len(sums), size=(iterations, len(sums)))
    means = sums[chosen].sum(axis=1) / counts[chosen].sum(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def called_phase(phases: Iterable[str]) -> str:
    """The phase whose coupling calls are a structure's call: interphase, or, where the cells have no mitotic
    annotation, the calls over all (unannotated) cells.

    Examples
    --------
    >>> called_phase(["interphase", "mitosis"]), called_phase(["unannotated"])
    ('interphase', 'unannotated')
    """
    phases = set(phases)
    return "interphase" if "interphase" in phases or UNANNOTATED not in phases else UNANNOTATED


def summarize_structures(per_cell: pd.DataFrame, *, settings: CouplingSettings,
                         structures: Sequence[str] = ()) -> pd.DataFrame:
    """Per structure and phase: the FOV-level tests of the rank statistic, the call, and Eq 4/5's means.

    Parameters
    ----------
    per_cell : DataFrame
        The table of :func:`measure_coupling`.
    settings : CouplingSettings
        ``resampling_iterations`` (bootstrap), ``significance`` (family-wise level; intervals at ``1 -
        significance``) and ``seed``.
    structures : sequence of str
        Every structure of the model: one without measured cells (all of its cells in training) gets a row too,
        ``n_cells`` 0, called :data:`NOT_MEASURED`, with the reason in ``note``, so that it is not silently absent.

    Returns
    -------
    DataFrame
        One row per structure and phase (phases without cells are left out): ``structure``, ``phase``, ``n_cells``,
        ``n_fovs``; per score (:data:`SCORES`) the mean over cells and ``_ci_low``/``_ci_high`` from a bootstrap
        over FOVs; per channel the mean rank over cells ``<channel>_rank``, its one-sided p-value with FOVs as
        clusters ``_p_value`` (rank above 1/2), the t distribution's ``_degrees_of_freedom`` (Bell and McCaffrey's:
        FOVs - 1 with equal FOVs, fewer with unequal ones; NaN where no t distribution is used: fewer than three
        FOVs, or every FOV's mean the same) and the Holm-adjusted ``_p_adjusted``; ``couples_to`` in {membrane,
        nucleus, both, neither, undetermined} (both significant: the channel whose side of 0 the normalized
        difference's interval lies on, else both; :data:`NOT_MEASURED` for a structure without measured cells);
        ``ci_level`` of the intervals; ``note``, empty but where a structure was not measured.
    """
    level = 1 - settings.significance
    rows = []
    for (structure, phase), group in per_cell.groupby(["structure", "phase"], sort=True):
        units = replicate_units(group).to_numpy()
        row = {"structure": structure, "phase": phase, "n_cells": len(group), "n_fovs": len(set(units))}
        for score in SCORES:
            values = group[score].to_numpy()
            row[score] = float(values.mean())
            rng = numpy_stream(settings.seed, "coupling bootstrap", structure, phase, score)
            row[f"{score}_ci_low"], row[f"{score}_ci_high"] = bootstrap_interval(
                values, units, iterations=settings.resampling_iterations, level=level, rng=rng)
        for channel, column in RANKS.items():
            test = unit_mean_test(group[column].to_numpy(), units, null_mean=NULL_RANK)
            row[column], row[f"{channel}_p_value"] = test.mean, test.p_value
            row[f"{channel}_degrees_of_freedom"] = test.degrees_of_freedom
        rows.append(row)
    called = called_phase(per_cell["phase"])
    for structure in sorted(set(structures) - set(per_cell["structure"])):
        rows.append({"structure": structure, "phase": called, "n_cells": 0, "n_fovs": 0, "note": (
            "not measured: none of its cells is in the measured splits (all in training); give it more cells or FOVs")})
    per_score = [f"{score}{part}" for score in SCORES for part in ("", "_ci_low", "_ci_high")]
    per_channel = [name for channel, column in RANKS.items()
                   for name in (column, f"{channel}_p_value", f"{channel}_degrees_of_freedom")]
    table = pd.DataFrame(rows).reindex(columns=["structure", "phase", "n_cells", "n_fovs", *per_score, *per_channel,
                                                "note"])
    table["note"] = table["note"].fillna("")
    columns = [f"{channel}_p_value" for channel in SWAPPED_CHANNELS]
    adjusted = holm(table[columns].to_numpy().ravel()).reshape(len(table), len(columns))
    coupled = {}
    for number, channel in enumerate(SWAPPED_CHANNELS):
        table[f"{channel}_p_adjusted"] = adjusted[:, number]
        coupled[channel] = table[f"{channel}_p_adjusted"] < settings.significance
    dominant = np.where(table["normalized_difference_ci_low"] > 0, "membrane",
                        np.where(table["normalized_difference_ci_high"] < 0, "nucleus", "both"))
    calls = np.select([coupled["membrane"] & coupled["nucleus"], coupled["membrane"], coupled["nucleus"]],
                      [dominant, "membrane", "nucleus"], default="neither")
    table["couples_to"] = np.where(table["n_cells"] == 0, NOT_MEASURED,
                                   np.where(table[columns].isna().any(axis=1), "undetermined", calls))
    table["ci_level"] = level
    return table[[column for column in table.columns if column != "note"] + ["note"]]


def mitosis_test(per_cell: pd.DataFrame, *, settings: CouplingSettings) -> pd.DataFrame:
    """Per structure and score, a permutation test of mitotic against interphase cells, within FOVs.

    The statistic is the difference of the phases' means (mitosis minus interphase); its null distribution comes
    from ``resampling_iterations`` shuffles of the phase labels among the cells of each FOV (a FOV keeps its number
    of mitotic cells, so FOV differences stay out of the null); the two-sided p-value is
    ``(1 + #{|shuffled| >= |observed|}) / (1 + iterations)``, Holm-adjusted over the tests made. A structure
    whose mitotic cells share no FOV with interphase cells has no shuffle that changes anything, and p = 1.

    Cells of phase ``unannotated`` take no part.

    Returns
    -------
    DataFrame
        One row per structure and score: ``structure``, ``score``, ``n_interphase``, ``n_mitosis``,
        ``interphase_mean``, ``mitosis_mean``, ``difference``, ``iterations``, ``p_value``, ``p_adjusted``,
        ``significant`` and ``note``: empty for a test made, else why there is none (no mitotic annotation, or a
        phase without cells; NaN p-values).
    """
    iterations = settings.resampling_iterations
    rows = []
    annotated = per_cell[per_cell["phase"] != UNANNOTATED]
    if annotated.empty:
        log.warning("no cell has a mitotic annotation (is_mitotic or mitotic_stage): the test of mitosis against "
                    "interphase is skipped")
    for structure in sorted(per_cell["structure"].unique()):
        group = annotated[annotated["structure"] == structure]
        mitotic = (group["phase"] == "mitosis").to_numpy()
        units = replicate_units(group).to_numpy()
        fovs = [np.flatnonzero(units == unit) for unit in np.unique(units)]
        note = ("not tested: no mitotic annotation (is_mitotic or mitotic_stage) in the cells table"
                if annotated.empty else "not tested: no annotated cells" if group.empty
                else "not tested: no mitotic cells" if not mitotic.any()
                else "not tested: no interphase cells" if mitotic.all() else "")
        for score in SCORES:
            values = group[score].to_numpy()
            row = {"structure": structure, "score": score, "n_interphase": int((~mitotic).sum()),
                   "n_mitosis": int(mitotic.sum()), "interphase_mean": np.nan, "mitosis_mean": np.nan,
                   "difference": np.nan, "iterations": iterations, "p_value": np.nan, "note": note}
            if not note:
                observed = values[mitotic].mean() - values[~mitotic].mean()
                rng = numpy_stream(settings.seed, "mitosis test", structure, score)
                shuffled = np.empty((iterations, len(mitotic)), dtype=bool)
                for members in fovs:
                    shuffled[:, members] = rng.permuted(np.tile(mitotic[members], (iterations, 1)), axis=1)
                null = (shuffled * values).sum(1) / mitotic.sum() - (~shuffled * values).sum(1) / (~mitotic).sum()
                row.update(interphase_mean=values[~mitotic].mean(), mitosis_mean=values[mitotic].mean(),
                           difference=observed,
                           p_value=(1 + int((np.abs(null) >= abs(observed) - 1e-12).sum())) / (1 + iterations))
            rows.append(row)
    table = pd.DataFrame(rows)
    table["p_adjusted"] = holm(table["p_value"])
    table["significant"] = table["p_adjusted"] < settings.significance
    return table[[column for column in table.columns if column != "note"] + ["note"]]

