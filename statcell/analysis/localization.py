"""Where a structure lies in its cell: the fraction of its intensity in the nucleus, the cytoplasm, the cell's edge
and outside the cell, and its height, each measured from the cell's own masks.

A structure's localization rule (nucleoli in the nucleus, the plasma membrane at the cell's edge, adhesions at its
base) shows in these numbers, for real cells and for cells the target model generates; :mod:`statcell.analysis.
generation` compares the two on the test cells (Fig 4B).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

#: The regions of :func:`localization_profile`, which partition a crop.
LOCALIZATION_REGIONS: tuple[str, ...] = ("nucleus", "cytoplasm", "cell_edge", "outside")

#: Least summed intensity of a structure whose localization is measured (a blank one has none).
_LEAST_INTENSITY = 1e-3


def localization_regions(cell_mask: np.ndarray, nucleus_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The regions of a crop that :func:`localization_profile` measures, boolean ``(Z, Y, X)`` each.

    ``cell_edge`` is the cell's outer layer outside the nucleus (cell voxels touching a voxel outside the cell, faces
    only), ``cytoplasm`` the rest of the cell outside the nucleus, ``nucleus`` the nucleus inside the cell and
    ``outside`` everything else; together they cover the crop once.

    Examples
    --------
    >>> cell = np.zeros((1, 5, 5), bool); cell[0, 1:4, 1:4] = True
    >>> nucleus = np.zeros_like(cell); nucleus[0, 2, 2] = True
    >>> {name: int(region.sum()) for name, region in localization_regions(cell, nucleus).items()}
    {'nucleus': 1, 'cytoplasm': 0, 'cell_edge': 8, 'outside': 16}
    """
    cell = np.asarray(cell_mask, bool)
    nucleus = np.asarray(nucleus_mask, bool) & cell
    outer = cell & ~ndimage.binary_erosion(cell, border_value=0)
    edge = outer & ~nucleus
    return {"nucleus": nucleus, "cytoplasm": cell & ~nucleus & ~edge, "cell_edge": edge, "outside": ~cell}


def localization_profile(structure: np.ndarray, cell_mask: np.ndarray, nucleus_mask: np.ndarray) -> dict[str, float]:
    """Where a structure's intensity lies in one cell: its fraction in each region and its height.

    Parameters
    ----------
    structure : ndarray
        ``(Z, Y, X)`` non-negative intensities (z upwards, as the store holds cells).
    cell_mask, nucleus_mask : ndarray
        ``(Z, Y, X)`` masks of the cell and its nucleus.

    Returns
    -------
    dict
        The fraction of the summed intensity in each of :data:`LOCALIZATION_REGIONS` (see
        :func:`localization_regions`; they sum to 1), and ``height``: the intensity-weighted mean z of the structure
        inside the cell, 0 at the cell's lowest plane and 1 at its highest. All NaN for a structure with no intensity
        (a blank); ``height`` NaN too where nothing lies inside the cell or the cell is one plane thick.

    Examples
    --------
    >>> cell = np.zeros((3, 4, 4), bool); cell[:, 1:3, 1:3] = True
    >>> structure = np.zeros((3, 4, 4)); structure[2, 1, 1] = 1.0
    >>> profile = localization_profile(structure, cell, np.zeros_like(cell))
    >>> profile["cell_edge"], profile["outside"], profile["height"]
    (1.0, 0.0, 1.0)
    """
    structure = np.clip(np.asarray(structure, np.float64), 0, None)
    regions = localization_regions(cell_mask, nucleus_mask)
    total = structure.sum()
    if total < _LEAST_INTENSITY:
        return dict.fromkeys((*LOCALIZATION_REGIONS, "height"), float("nan"))
    profile = {name: float(structure[region].sum() / total) for name, region in regions.items()}
    inside = np.where(regions["outside"], 0.0, structure).sum(axis=(1, 2))
    planes = np.flatnonzero(~regions["outside"].all(axis=(1, 2)))
    if inside.sum() < _LEAST_INTENSITY or len(planes) < 2:
        profile["height"] = float("nan")
    else:
        mean_z = float((inside * np.arange(len(inside))).sum() / inside.sum())
        profile["height"] = float((mean_z - planes[0]) / (planes[-1] - planes[0]))
    return profile


def localization_table(structures: pd.Series, masks: np.ndarray, images: dict[str, np.ndarray]) -> pd.DataFrame:
    """The mean :func:`localization_profile` of each structure class, for each source of its structure channel.

    Parameters
    ----------
    structures : Series
        ``(N,)`` the structure class of each cell.
    masks : ndarray
        ``(N, 2, Z, Y, X)`` each cell's cell and nucleus masks.
    images : dict of str to ndarray
        ``{source: (N, Z, Y, X)}`` structure channels measured in those cells (e.g. real, reconstruction, sample).

    Returns
    -------
    DataFrame
        One row per structure and source: ``structure``, ``source``, ``cells`` (cells with intensity to measure),
        the mean fraction in each of :data:`LOCALIZATION_REGIONS` and the mean ``height`` over those cells (NaN
        where no cell has any).
    """
    structures = pd.Series(structures).reset_index(drop=True)
    rows = []
    for source, channel in images.items():
        profiles = pd.DataFrame([localization_profile(channel[i], masks[i, 0], masks[i, 1])
                                 for i in range(len(structures))])
        profiles["structure"] = structures
        for structure, group in profiles.groupby("structure", sort=True):
            measured = group.dropna(subset=list(LOCALIZATION_REGIONS))
            rows.append({"structure": structure, "source": source, "cells": len(measured),
                         **measured[[*LOCALIZATION_REGIONS, "height"]].mean().to_dict()})
    return pd.DataFrame(rows, columns=["structure", "source", "cells", *LOCALIZATION_REGIONS, "height"])
