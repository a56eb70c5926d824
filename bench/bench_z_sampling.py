"""How a stack's z-sampling bounds the segmented cells' volumes: its z-step, and where it starts and ends.

A microscope samples a cell's top and bottom only at its slices. With a coarse z-step the apical and basal membranes
may fall between two slices, and the watershed cannot place them; a stack that starts or ends inside the cells cuts
them, and its first and last slices, which seed the background, lie partly inside cells. This bench synthesizes FOVs
of the default colony at their fine z-step (0.29 µm), keeps every k-th slice (as a coarser stack of the same cells
would image them: the PSF blurs before the slices are taken) or a stack cut short at either end, segments each with
the workflow's settings and compares every true cell's segmented volume with its true volume within the stack (cells
cut by the FOV's sides left out, as the cropping drops them)::

    python bench/bench_z_sampling.py --fovs 2 --steps 1 2 3 4 5 7 --cuts 5 8 12

It prints, per z-sampling, the median and range of segmented / true volume and the median IoU with the true cells
sampled the same way. A FOV job warns when its z-step is coarser than the crop voxel, or when accepted cells reach
its first or last slice.
"""

from __future__ import annotations

import argparse

import numpy as np

from statcell import segment, synth
from statcell.config import validate_config


def volume_ratios(fov: synth.SyntheticFov, spacing: tuple[float, float, float], slices: slice,
                  settings: segment.SegmentationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Segmented / true volume and IoU of each true cell of ``fov`` imaged at the slices ``slices`` only.

    Parameters
    ----------
    fov : SyntheticFov
        A synthetic FOV at its fine z-step.
    spacing : tuple of float
        The fine voxel size (z, y, x) in µm.
    slices : slice
        The slices of the fine stack kept (a step keeps every ``step``-th slice).
    settings : SegmentationSettings
        The segmentation's settings.

    Returns
    -------
    tuple of ndarray
        Volume ratios (true volume within the kept stack) and IoUs of the true cells that the FOV's sides do not
        cut (a cell without any segmented match has neither).
    """
    sampled_spacing = (spacing[0] * (slices.step or 1), *spacing[1:])
    channels = fov.image[:, slices].astype(np.float32)
    truth = fov.cell_labels[slices]
    nuclei = segment.segment_nuclei(channels[1], spacing=sampled_spacing, settings=settings)
    cells = segment.segment_cells(channels[0], nuclei, spacing=sampled_spacing, settings=settings)
    matches = segment.match_labels(truth, cells)
    cut = np.unique(np.concatenate([truth[:, [0, -1]].ravel(), truth[:, :, [0, -1]].ravel()]))
    matches = matches[(matches["matched"] > 0) & ~matches["label"].isin(cut)]
    if (slices.step or 1) == 1:  # the true volume within the stack, on the stack's own grid
        true_volumes = np.bincount(truth.ravel())[matches["label"]] * float(np.prod(spacing))
    else:  # the whole cell, measured on the fine stack
        true_volumes = np.bincount(fov.cell_labels.ravel())[matches["label"]] * float(np.prod(spacing))
    segmented_volumes = np.bincount(cells.ravel())[matches["matched"]] * float(np.prod(sampled_spacing))
    return segmented_volumes / true_volumes, matches["iou"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fovs", type=int, default=2, help="synthetic training FOVs, spread over the colony's plan")
    parser.add_argument("--steps", type=int, nargs="*", default=[1, 2, 3, 4, 5, 7],
                        help="keep every k-th slice of the fine stack, for each k given (from slice 0 and k // 2)")
    parser.add_argument("--cuts", type=int, nargs="*", default=[5, 8, 12],
                        help="stacks that lose this many slices at the bottom, at the top, and at both ends")
    args = parser.parse_args()
    config = validate_config({})
    colony = synth.SynthSettings.from_config(config["synthetic"])
    settings = segment.SegmentationSettings.from_config(config["segmentation"])
    plans = synth.plan_fovs(colony)
    fovs = [synth.synthesize_fov(plan, colony) for plan in plans[:: max(1, len(plans) // args.fovs)][:args.fovs]]
    spacing = colony.pixel_size_um
    occupied = np.flatnonzero(np.any([fov.cell_labels.any(axis=(1, 2)) for fov in fovs], axis=0))
    print(f"{len(fovs)} FOVs of {fovs[0].image.shape[1]} slices at {spacing[0]} µm, cells in slices {occupied[0]} to "
          f"{occupied[-1]}; segmentation on a {settings.working_voxel_um} µm working grid; crop voxel "
          f"{config['crop']['voxel_size_um']} µm")
    samplings = [(f"z-step {spacing[0] * step:4.2f} µm from slice {first}", slice(first, None, step))
                 for step in args.steps for first in sorted({0, step // 2})]
    depth = len(fovs[0].image[0])
    for cut in args.cuts:
        samplings += [(f"slices {cut}-{depth - 1} (bottom cut)", slice(cut, None)),
                      (f"slices 0-{depth - 1 - cut} (top cut)", slice(0, depth - cut)),
                      (f"slices {cut}-{depth - 1 - cut} (both cut)", slice(cut, depth - cut))]
    for name, slices in samplings:
        ratios, ious = zip(*(volume_ratios(fov, spacing, slices, settings) for fov in fovs))
        ratio, iou = np.concatenate(ratios), np.concatenate(ious)
        print(f"{name:>36}: {ratio.size:3d} cells, segmented / true volume median {np.median(ratio):.2f} (range "
              f"{ratio.min():.2f}-{ratio.max():.2f}), median IoU {np.median(iou):.3f}")


if __name__ == "__main__":
    main()
