"""How the z-step of a stack bounds the segmented cells' volumes.

A microscope samples a cell's top and bottom only at its slices: with a coarse z-step the apical and basal membranes
may fall between two slices, and the watershed cannot place them. This bench synthesizes FOVs of the default colony at
their fine z-step (0.29 µm), keeps every k-th slice from a given first slice (as a coarser stack of the same cells
would image them: the PSF blurs before the slices are taken), segments each with the workflow's settings and compares
every true cell's segmented volume with its true volume (measured on the fine stack; cells cut by the FOV's sides
left out, as the cropping drops them)::

    python bench/bench_z_step.py --fovs 2 --steps 1 2 3 4 5 7

It prints, per z-step and first slice, the median and range of segmented / true volume and the median IoU with the
true cells resliced the same way. A FOV job warns when the FOV's z-step is coarser than the crop voxel.
"""

from __future__ import annotations

import argparse

import numpy as np

from statcell import segment, synth
from statcell.config import validate_config


def volume_ratios(fov: synth.SyntheticFov, spacing: tuple[float, float, float], step: int, first: int,
                  settings: segment.SegmentationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Segmented / true volume and IoU of each true cell of ``fov`` imaged at every ``step``-th slice from ``first``.

    Parameters
    ----------
    fov : SyntheticFov
        A synthetic FOV at its fine z-step.
    spacing : tuple of float
        The fine voxel size (z, y, x) in µm.
    step, first : int
        Keep slices ``first, first + step, ...``.
    settings : SegmentationSettings
        The segmentation's settings.

    Returns
    -------
    tuple of ndarray
        Volume ratios and IoUs of the true cells that the FOV's sides do not cut (a cell without any segmented
        match has neither).
    """
    coarse_spacing = (spacing[0] * step, *spacing[1:])
    channels = fov.image[:, first::step].astype(np.float32)
    nuclei = segment.segment_nuclei(channels[1], spacing=coarse_spacing, settings=settings)
    cells = segment.segment_cells(channels[0], nuclei, spacing=coarse_spacing, settings=settings)
    matches = segment.match_labels(fov.cell_labels[first::step], cells)
    truth = fov.cell_labels
    cut = np.unique(np.concatenate([truth[:, [0, -1]].ravel(), truth[:, :, [0, -1]].ravel()]))
    matches = matches[(matches["matched"] > 0) & ~matches["label"].isin(cut)]
    true_volumes = np.bincount(truth.ravel())[matches["label"]] * float(np.prod(spacing))
    segmented_volumes = np.bincount(cells.ravel())[matches["matched"]] * float(np.prod(coarse_spacing))
    return segmented_volumes / true_volumes, matches["iou"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fovs", type=int, default=2, help="synthetic training FOVs, spread over the colony's plan")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4, 5, 7],
                        help="keep every k-th slice of the fine stack, for each k given")
    args = parser.parse_args()
    config = validate_config({})
    colony = synth.SynthSettings.from_config(config["synthetic"])
    settings = segment.SegmentationSettings.from_config(config["segmentation"])
    plans = synth.plan_fovs(colony)
    fovs = [synth.synthesize_fov(plan, colony) for plan in plans[:: max(1, len(plans) // args.fovs)][:args.fovs]]
    spacing = colony.pixel_size_um
    print(f"{len(fovs)} FOVs of {fovs[0].image.shape[1]} slices at {spacing[0]} µm; segmentation on a "
          f"{settings.working_voxel_um} µm working grid; crop voxel {config['crop']['voxel_size_um']} µm")
    for step in args.steps:
        for first in sorted({0, step // 2}):
            ratios, ious = zip(*(volume_ratios(fov, spacing, step, first, settings) for fov in fovs))
            ratio, iou = np.concatenate(ratios), np.concatenate(ious)
            print(f"z-step {spacing[0] * step:5.2f} µm from slice {first}: {ratio.size:3d} cells, segmented / true "
                  f"volume median {np.median(ratio):.2f} (range {ratio.min():.2f}-{ratio.max():.2f}), "
                  f"median IoU {np.median(iou):.3f}")


if __name__ == "__main__":
    main()
