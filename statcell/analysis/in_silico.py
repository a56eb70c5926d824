"""In-silico perturbation: a digital twin's "what if this cell were treated?" (latent arithmetic, after Phenexplain).

For every (structure, drug) of the drug set with a control, the **shift** is the treated centroid minus the control
centroid of the target model's posterior means, in the active latent dimensions (as in the drug analysis,
:mod:`statcell.analysis.perturbation`; the other dimensions are left as they are). Control cells of that structure keep
their own membrane and DNA; their structure latent is moved from their own posterior mean along the shift, by
``α`` from 0 (the cell as it is) to ``extent`` (1: by the whole measured shift), and decoded at each step.

Each decoded structure, and each real control and treated cell, is measured by :func:`structure_localization` inside
the cell's mask: the **spread** of the structure (intensity-weighted RMS distance from its centroid, µm) and its
**cortical fraction** (share of the intensity within ``cortex_um`` of the cell's surface). The synthetic drug set
plants three answers: brefeldin A disperses the Golgi into fragments and a haze (its spread grows), paclitaxel
bundles microtubules into rings under the cortex (their cortical fraction grows), and neither drug touches the tight
junctions. :func:`summarize` sets the decoded change beside the real one for every feature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from statcell.analysis.embed import latent_dim_of, mean_columns, structure_labels
from statcell.analysis.perturbation import (active_dimensions, comparisons, conditions, latent_means, resolve_control,
                                            treatment_label, treatments)
from statcell.io import open_cells, read_cells

log = logging.getLogger(__name__)

#: Localization features measured on decoded and real structures, with their units.
LOCALIZATION_FEATURES: dict[str, str] = {"spread_um": "µm", "cortical_fraction": "fraction of the intensity",
                                         "concentration": "fraction of the intensity"}
#: The brightest share of a cell's voxels whose intensity :func:`structure_localization` calls concentrated.
BRIGHTEST_FRACTION: float = 0.1


@dataclass(frozen=True)
class InSilicoSettings:
    """The ``in_silico`` section of the configuration.

    Attributes
    ----------
    cells : int
        Control cells of each structure moved along each shift.
    steps : int
        Decoded steps from α = 0 to α = ``extent``.
    extent : float
        Largest α, in units of the measured shift.
    cortex_um : float
        Depth under the cell's surface that counts as cortex.
    """

    cells: int
    steps: int
    extent: float
    cortex_um: float

    @classmethod
    def from_section(cls, section: dict) -> InSilicoSettings:
        """Settings from the validated ``in_silico`` section."""
        return cls(cells=int(section["cells"]), steps=int(section["steps"]), extent=float(section["extent"]),
                   cortex_um=float(section["cortex_um"]))


def structure_localization(structure: np.ndarray, cell: np.ndarray, *, spacing: tuple[float, float, float],
                           cortex_um: float) -> dict[str, float]:
    """Where a structure sits in its cell, and how concentrated it is.

    Parameters
    ----------
    structure : ndarray
        ``(Z, Y, X)`` intensities (non-negative).
    cell : ndarray of bool
        The cell's mask, same shape.
    spacing : tuple of float
        Voxel size in µm.
    cortex_um : float
        Depth under the cell's surface (distance to the nearest voxel outside the cell) that counts as cortex.

    Returns
    -------
    dict
        ``spread_um`` (intensity-weighted RMS distance from the intensity centroid), ``cortical_fraction`` and
        ``concentration`` (the share of the intensity in the brightest :data:`BRIGHTEST_FRACTION` of the cell's
        voxels: bundled or clustered signal is concentrated, a haze is not); NaN for a structure with no intensity
        in the cell.

    Examples
    --------
    >>> cell = np.ones((5, 9, 9), bool)
    >>> dot = np.zeros((5, 9, 9)); dot[2, 4, 4] = 1.0
    >>> structure_localization(dot, cell, spacing=(1.0, 1.0, 1.0), cortex_um=1.5)
    {'spread_um': 0.0, 'cortical_fraction': 0.0, 'concentration': 1.0}
    """
    weights = np.where(cell, np.clip(structure, 0, None), 0.0).astype(np.float64)
    total = float(weights.sum())
    if total <= 0:
        return dict.fromkeys(LOCALIZATION_FEATURES, float("nan"))
    grids = np.meshgrid(*[np.arange(n) * step for n, step in zip(structure.shape, spacing)], indexing="ij")
    centre = [float((grid * weights).sum() / total) for grid in grids]
    squared = sum((grid - c) ** 2 for grid, c in zip(grids, centre))
    depth = ndimage.distance_transform_edt(np.pad(cell, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    inside = np.sort(weights[cell])[::-1]
    brightest = max(1, int(round(BRIGHTEST_FRACTION * inside.size)))
    return {"spread_um": float(np.sqrt((squared * weights).sum() / total)),
            "cortical_fraction": float(weights[depth <= cortex_um].sum() / total),
            "concentration": float(inside[:brightest].sum() / total)}


def latent_shifts(embeddings: pd.DataFrame, cells: pd.DataFrame, dimensions: pd.DataFrame, *, min_kl: float,
                  control: str) -> tuple[pd.DataFrame, list[int], dict[tuple[str, str], np.ndarray]]:
    """Each (structure, drug)'s centroid shift from its control cells, in the active dimensions.

    Returns
    -------
    table : DataFrame
        The drug set's embeddings with treatments (:func:`~statcell.analysis.perturbation.treatments`).
    active : list of int
        The active dimensions.
    shifts : dict
        ``(structure, drug)`` to the shift vector over ``active``.
    """
    table = treatments(embeddings, cells)
    active = active_dimensions(dimensions, min_kl=min_kl)
    shifts = {}
    for structure, drug in comparisons(table, control=control):
        of_structure = table[table["structure"] == structure]
        treated = latent_means(of_structure[of_structure["drug"] == drug], dimensions=active).mean(axis=0)
        untreated = latent_means(of_structure[of_structure["drug"] == control], dimensions=active).mean(axis=0)
        shifts[(structure, drug)] = treated - untreated
    return table, active, shifts


@torch.no_grad()
def perturb_cells(target_model: torch.nn.Module, *, store: str, embeddings: pd.DataFrame, cells: pd.DataFrame,
                  dimensions: pd.DataFrame, structures: Sequence[str], settings: InSilicoSettings, min_kl: float,
                  control: str, spacing: tuple[float, float, float]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Move control cells along each drug's latent shift, decode every step and measure it, beside all real cells.

    Parameters
    ----------
    target_model : TargetVAE
        The trained target model.
    store : path
        The drug set's ``cells.zarr``.
    embeddings : DataFrame
        The drug set's target embeddings (``embed-cells``).
    cells : DataFrame
        The drug set's ``cells.parquet``.
    dimensions : DataFrame
        The target model's dimension table on the training dataset (for the active dimensions).
    structures : sequence of str
        The target model's structure labels, in order.
    settings : InSilicoSettings
        Cells, steps, extent and cortex depth.
    min_kl : float
        Mean KL (nats) above which a dimension is active.
    control : str
        The control treatment, or ``auto``.
    spacing : tuple of float
        The store's voxel size (µm).

    Returns
    -------
    features : DataFrame
        One row per measured image: ``structure``, ``drug``, ``source`` (``decoded``, ``real control``, ``real
        treated``), ``alpha`` (decoded steps; NaN for real cells), ``cell_id``, and the
        :data:`LOCALIZATION_FEATURES`.
    images : dict of str to ndarray
        For the figure: ``images`` ``(P, steps + 1, 3, Z, Y, X)``, per (structure, drug) pair the first control
        cell's decoded steps and a real treated cell; ``pairs`` ``(P, 2)`` names; ``alphas`` ``(steps,)``;
        ``spacing``.
    """
    control = resolve_control(conditions(cells).tolist(), control)
    table, active, shifts = latent_shifts(embeddings, cells, dimensions, min_kl=min_kl, control=control)
    alphas = np.linspace(0.0, settings.extent, settings.steps)
    like = next(target_model.parameters())
    rows, figure_images, pairs = [], [], []
    for (structure, drug), shift in shifts.items():
        of_structure = table[table["structure"] == structure]
        controls = of_structure[of_structure["drug"] == control]
        moved = controls.head(settings.cells)
        treated = of_structure[of_structure["drug"] == drug]
        real_controls = read_cells(store, controls["store_index"].to_numpy(), channels=(0, 1, 2, 3))
        real_moved = real_controls[:len(moved)]
        real_treated = read_cells(store, treated["store_index"].to_numpy(), channels=(0, 1, 2, 3))
        means = torch.tensor(moved[mean_columns(latent_dim_of(moved))].to_numpy(np.float32))
        label = torch.tensor(structure_labels(moved["structure"], list(structures)))
        decoded_steps = []
        for alpha in alphas:
            z = means.clone()
            z[:, active] += torch.tensor(alpha * shift, dtype=z.dtype)
            decoded = target_model.decode(z.to(like.device, like.dtype),
                                          torch.from_numpy(real_moved[:, :2]).to(like.device, like.dtype),
                                          label.to(like.device)).clamp(0, 1).float().cpu().numpy()[:, 0]
            decoded_steps.append(decoded)
            for index, cell_id in enumerate(moved["cell_id"]):
                rows.append({"structure": structure, "drug": drug, "source": "decoded", "alpha": float(alpha),
                             "cell_id": cell_id, **structure_localization(
                                 decoded[index], real_moved[index, 3] > 0.5, spacing=spacing,
                                 cortex_um=settings.cortex_um)})
        for source, group, images in (("real control", controls, real_controls),
                                      ("real treated", treated, real_treated)):
            for index, cell_id in enumerate(group["cell_id"]):
                rows.append({"structure": structure, "drug": drug, "source": source, "alpha": float("nan"),
                             "cell_id": cell_id, **structure_localization(
                                 images[index, 2], images[index, 3] > 0.5, spacing=spacing,
                                 cortex_um=settings.cortex_um)})
        if len(moved) and len(treated):
            panels = [np.concatenate([real_moved[0, :2], step[:1]]) for step in decoded_steps]
            figure_images.append(np.stack([*panels, real_treated[0, :3]]))
            pairs.append((structure, drug))
        log.info("%s, %s: %d %s cells moved along the shift (%.2f latent units) in %d steps", structure,
                 treatment_label(drug), len(moved), treatment_label(control), float(np.linalg.norm(shift)),
                 len(alphas))
    features = pd.DataFrame(rows, columns=["structure", "drug", "source", "alpha", "cell_id",
                                           *LOCALIZATION_FEATURES])
    empty = np.zeros((0, len(alphas) + 1, 3, *open_cells(store).shape[2:]), np.float32)
    images = {"images": np.stack(figure_images).astype(np.float32) if figure_images else empty,
              "pairs": np.array(pairs, dtype=str).reshape(-1, 2), "alphas": alphas,
              "control": np.array(treatment_label(control)), "spacing": np.asarray(spacing, dtype=float)}
    return features, images


def summarize(features: pd.DataFrame) -> pd.DataFrame:
    """Per (structure, drug) and feature: the decoded change from α = 0 to the last step beside the real change.

    Parameters
    ----------
    features : DataFrame
        :func:`perturb_cells`'s feature table.

    Returns
    -------
    DataFrame
        ``structure``, ``drug``, ``feature``, ``decoded_start`` and ``decoded_end`` (medians over the moved cells),
        ``decoded_change``, ``real_control``, ``real_treated`` (medians), ``real_change``, ``same_direction``
        (the decoded and real changes have the same sign) and ``cells``.

    Examples
    --------
    >>> rows = pd.DataFrame({"structure": "golgi", "drug": "bfa", "cell_id": "a",
    ...                      "source": ["decoded", "decoded", "real control", "real treated"],
    ...                      "alpha": [0.0, 1.0, np.nan, np.nan], "spread_um": [1.0, 2.0, 1.1, 2.5],
    ...                      "cortical_fraction": [0.2, 0.2, 0.3, 0.3], "concentration": [0.5, 0.5, 0.5, 0.5]})
    >>> summarize(rows)[["feature", "decoded_change", "real_change"]].values.tolist()[:2]
    [['spread_um', 1.0, 1.4], ['cortical_fraction', 0.0, 0.0]]
    """
    rows = []
    for (structure, drug), group in features.groupby(["structure", "drug"], sort=True):
        decoded = group[group["source"] == "decoded"]
        first, last = decoded[decoded["alpha"] == decoded["alpha"].min()], decoded[
            decoded["alpha"] == decoded["alpha"].max()]
        for feature in LOCALIZATION_FEATURES:
            start, end = float(first[feature].median()), float(last[feature].median())
            control = float(group.loc[group["source"] == "real control", feature].median())
            treated = float(group.loc[group["source"] == "real treated", feature].median())
            rows.append({"structure": structure, "drug": drug, "feature": feature, "decoded_start": start,
                         "decoded_end": end, "decoded_change": end - start, "real_control": control,
                         "real_treated": treated, "real_change": treated - control,
                         "same_direction": bool(np.sign(end - start) == np.sign(treated - control)),
                         "cells": int(first["cell_id"].nunique())})
    return pd.DataFrame(rows, columns=["structure", "drug", "feature", "decoded_start", "decoded_end",
                                       "decoded_change", "real_control", "real_treated", "real_change",
                                       "same_direction", "cells"])
