"""The input FOVs at a glance: projections of the first FOV of every (structure, treatment), for the colony overview.

:func:`colony_projections` reads the FOVs and keeps what :func:`statcell.plots.overview.plot_colony_overview`
draws, so the figure needs neither the raw images nor an image reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io

#: Channel roles, in the order of the projections' first axis.
ROLES: tuple[str, ...] = ("membrane", "dna", "structure")


def colony_projections(manifests: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Maximum projections and a central xz section of the first FOV of every (structure, treatment).

    Parameters
    ----------
    manifests : sequence of path
        FOV manifests (e.g. the training and drug sets).

    Returns
    -------
    dict of str to ndarray
        Per shown FOV ``k``: ``projection_k`` ``(3, Y, X)`` (max along z) and ``section_k`` ``(3, Z, X)`` (at the
        central y) of membrane, DNA and structure, raw intensities as float32; and one entry per FOV in ``fov_id``,
        ``structure``, ``drug``, ``concentration_um`` and ``spacing`` ``(N, 3)`` (z, y, x voxel size in µm).
    """
    table = pd.concat([io.read_manifest(path) for path in manifests], ignore_index=True)
    shown = table.groupby(["structure", "drug"], sort=False).head(1).reset_index(drop=True)
    arrays: dict[str, np.ndarray] = {
        "fov_id": shown["fov_id"].to_numpy(dtype=str),  # unicode arrays: an .npz loads them without pickle
        "structure": shown["structure"].to_numpy(dtype=str),
        "drug": shown["drug"].fillna("").to_numpy(dtype=str),
        "concentration_um": shown["concentration_um"].astype(float).to_numpy(),
        "spacing": shown[["pixel_size_z_um", "pixel_size_y_um", "pixel_size_x_um"]].astype(float).to_numpy(),
    }
    for k, fov in enumerate(shown.itertuples()):
        image = io.read_image(fov.path).data.astype(np.float32)
        channels = image[[fov.membrane_channel, fov.dna_channel, fov.structure_channel]]
        arrays[f"projection_{k}"] = channels.max(axis=1)
        arrays[f"section_{k}"] = channels[:, :, channels.shape[2] // 2, :]
    return arrays
