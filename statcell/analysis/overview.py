"""The input FOVs at a glance: projections of the first usable FOV of every (structure, treatment), for the colony
overview.

:func:`colony_projections` reads the FOVs and keeps what :func:`statcell.plots.overview.plot_colony_overview`
draws, so the figure needs neither the raw images nor an image reader.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io

log = logging.getLogger(__name__)

#: Channel roles, in the order of the projections' first axis.
ROLES: tuple[str, ...] = ("membrane", "dna", "structure")


def colony_projections(manifests: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Maximum projections and a central xz section of the first usable FOV of every (structure, treatment).

    Parameters
    ----------
    manifests : sequence of path
        FOV manifests (e.g. the training and drug sets).

    Returns
    -------
    dict of str to ndarray
        Per shown FOV ``k``: ``projection_k`` ``(3, Y, X)`` (max along z) and ``section_k`` ``(3, Z, X)`` (at the
        central y) of membrane, DNA and structure, raw intensities as float32; and one entry per FOV in ``fov_id``,
        ``structure``, ``drug``, ``concentration_um`` and ``spacing`` ``(N, 3)`` (z, y, x voxel size in µm). A FOV
        that cannot be used (:func:`statcell.io.read_fov`: unreadable, empty, ...; a rejects row of the workflow) is
        passed over, with a log line, for the next of its group; a group without a usable FOV is not shown.

    Raises
    ------
    statcell.io.FovError
        If no FOV can be used, with the first FOV's reason.
    """
    table = pd.concat([io.read_manifest(path) for path in manifests], ignore_index=True)
    shown_rows: list[dict] = []
    channels_of: list[np.ndarray] = []
    errors: list[str] = []
    for _, group in table.groupby(["structure", "drug"], sort=False):
        for row in group.to_dict("records"):
            try:  # a voxel size the file contradicts is warned of by the FOV's crop job, not again here
                channels_of.append(io.read_fov(io.FovRecord.from_row(row), warn_voxel_size=False))
            except io.FovError as error:
                log.warning("colony overview: %s; trying the next FOV of its structure and treatment", error)
                errors.append(str(error))
                continue
            shown_rows.append(row)
            break
    if not shown_rows:
        raise io.FovError(f"no FOV of {', '.join(map(str, manifests))} can be used"
                          + (f"; the first: {errors[0]}" if errors else " (the manifests list none)"))
    shown = pd.DataFrame(shown_rows, columns=table.columns)
    arrays: dict[str, np.ndarray] = {
        "fov_id": shown["fov_id"].to_numpy(dtype=str),  # unicode arrays: an .npz loads them without pickle
        "structure": shown["structure"].to_numpy(dtype=str),
        "drug": shown["drug"].fillna("").to_numpy(dtype=str),
        "concentration_um": shown["concentration_um"].astype(float).to_numpy(),
        "spacing": shown[["pixel_size_z_um", "pixel_size_y_um", "pixel_size_x_um"]].astype(float).to_numpy(),
    }
    for k, channels in enumerate(channels_of):
        arrays[f"projection_{k}"] = channels.max(axis=1)
        arrays[f"section_{k}"] = channels[:, :, channels.shape[2] // 2, :]
    return arrays
