"""Single-cell crops: quality control, isotropic rescaling, alignment, centring, flipping, measurements.

Each accepted cell of a field of view becomes a ``(5, Z, Y, X)`` crop of isotropic voxels (membrane, DNA, structure,
cell mask, nucleus mask), masked as in the paper (DNA by the nucleus, membrane and structure by the cell; see
:func:`mask_channels`), the cell's major axis (of its xy footprint) along x, its nucleus' centre of mass at the
crop's centre and its shape skewed towards +x and +y. Intensities are stored above their background: each channel's
most populous intensity inside the cell (the paper's choice) or where the FOV has no cell (:func:`fov_backgrounds`,
which keeps a structure's cell-filling diffuse part), per channel as configured (``crop.background``). Every dropped
cell is a row with its reason, never a silent loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from statcell.geometry import mask_surface_area
from statcell.segment import match_labels
from statcell.vocabulary import CROP_CHANNELS

INTENSITY_CHANNELS: tuple[str, ...] = CROP_CHANNELS[:3]
#: Where a channel's background may be measured: ``cell`` inside the cell itself, ``fov`` where the FOV has no cell.
BACKGROUND_REGIONS: tuple[str, ...] = ("cell", "fov")
#: Columns of a crop table with the background subtracted from each intensity channel of the cell (camera units).
BACKGROUND_COLUMNS: tuple[str, ...] = tuple(f"{name}_background" for name in INTENSITY_CHANNELS)
MEASUREMENTS: tuple[str, ...] = (
    "cell_volume_um3", "nucleus_volume_um3", "cell_height_um", "nucleus_height_um", "cell_surface_area_um2",
    "nucleus_surface_area_um2", "cell_sphericity", "nucleus_sphericity", "membrane_integrated_intensity",
    "dna_integrated_intensity", "structure_integrated_intensity",
)


@dataclass(frozen=True)
class CropSettings:
    """The ``crop`` section of the configuration.

    Attributes
    ----------
    voxel_size_um : float
        Edge of the isotropic voxels of the crops.
    shape : tuple of int
        Crop shape ``(Z, Y, X)`` in voxels.
    min_cell_volume_um3, max_cell_volume_um3 : float
        Cells outside this range are dropped.
    min_nucleus_inside : float
        Least fraction of a nucleus' voxels that must lie inside its cell.
    background : tuple of str
        Where the background of membrane, DNA and structure is measured (:data:`BACKGROUND_REGIONS`,
        :func:`cell_backgrounds`).
    """

    voxel_size_um: float
    shape: tuple[int, int, int]
    min_cell_volume_um3: float
    max_cell_volume_um3: float
    min_nucleus_inside: float
    background: tuple[str, str, str] = ("cell", "cell", "fov")

    @classmethod
    def from_config(cls, section: dict) -> CropSettings:
        """Build settings from the validated ``crop`` config section."""
        shape = section["shape"]
        return cls(voxel_size_um=section["voxel_size_um"], shape=(shape["z"], shape["y"], shape["x"]),
                   min_cell_volume_um3=section["min_cell_volume_um3"],
                   max_cell_volume_um3=section["max_cell_volume_um3"],
                   min_nucleus_inside=section["min_nucleus_inside"],
                   background=tuple(section["background"][name] for name in INTENSITY_CHANNELS))


#: Above this intensity, :func:`most_populous_intensity` counts distinct values instead of every integer up to the
#: largest (whose counts would take 8 bytes each: 2**32 of them, 32 GiB, for one hot pixel of a 32-bit image).
_BINCOUNT_LIMIT = 2**20


def most_populous_intensity(values: np.ndarray) -> float:
    """The mode of non-negative integer-valued intensities (the background of a fluorescence image).

    Parameters
    ----------
    values : ndarray
        Intensities; rounded to integers.

    Returns
    -------
    float
        The most frequent value (the smallest one on ties); 0 for an empty array.

    Examples
    --------
    >>> most_populous_intensity(np.array([3, 7, 7, 100]))
    7.0
    >>> most_populous_intensity(np.array([3, 7, 7, 3_000_000_000]))
    7.0
    """
    integers = np.clip(np.rint(np.ravel(values)), 0, None).astype(np.int64)
    if integers.size and integers.max() > _BINCOUNT_LIMIT:  # a hot pixel far above the rest: count what is there
        found, counts = np.unique(integers, return_counts=True)
        return float(found[np.argmax(counts)])
    counts = np.bincount(integers)
    return float(np.argmax(counts)) if counts.size else 0.0


def quality_control(cell_labels: np.ndarray, nucleus_labels: np.ndarray, *, spacing: tuple[float, float, float],
                    settings: CropSettings) -> pd.DataFrame:
    """Decide which cells of a FOV to keep.

    Parameters
    ----------
    cell_labels, nucleus_labels : ndarray
        Label images ``(Z, Y, X)``; a cell's nucleus is the nucleus label covering most of the cell's nuclear voxels.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm.
    settings : CropSettings
        Volume limits and the nucleus-inside fraction.

    Returns
    -------
    DataFrame
        One row per cell: ``label``, ``nucleus_label`` (0 if none), ``reject_reason`` (``""`` if kept; else one of
        ``touches_fov_border``, ``too_small``, ``too_large``, ``no_nucleus``, ``nucleus_outside_cell``) and
        ``touches_z_end``: the cell reaches the stack's first or last slice, so the stack may cut it (kept: a stack
        that starts at the coverslip holds whole cells that touch its first slice; the FOV's job log warns).
    """
    voxel = float(np.prod(spacing))
    cell_sizes = np.bincount(cell_labels.ravel())
    nucleus_sizes = np.bincount(nucleus_labels.ravel())
    border = np.unique(np.concatenate([cell_labels[:, 0].ravel(), cell_labels[:, -1].ravel(),
                                       cell_labels[:, :, 0].ravel(), cell_labels[:, :, -1].ravel()]))
    z_ends = np.unique(np.concatenate([cell_labels[0].ravel(), cell_labels[-1].ravel()]))
    pairs = pd.DataFrame({"label": cell_labels.ravel(), "nucleus_label": nucleus_labels.ravel()})
    pairs = pairs[(pairs.label > 0) & (pairs.nucleus_label > 0)].value_counts().rename("overlap").reset_index()
    best = pairs.sort_values("overlap", ascending=False).drop_duplicates("label").set_index("label")
    rows = []
    for label in np.flatnonzero(cell_sizes)[np.flatnonzero(cell_sizes) > 0]:
        volume = cell_sizes[label] * voxel
        nucleus = int(best.at[label, "nucleus_label"]) if label in best.index else 0
        if label in border:
            reason = "touches_fov_border"
        elif volume < settings.min_cell_volume_um3:
            reason = "too_small"
        elif volume > settings.max_cell_volume_um3:
            reason = "too_large"
        elif nucleus == 0:
            reason = "no_nucleus"
        elif best.at[label, "overlap"] < settings.min_nucleus_inside * nucleus_sizes[nucleus]:
            reason = "nucleus_outside_cell"
        else:
            reason = ""
        rows.append({"label": int(label), "nucleus_label": nucleus, "reject_reason": reason,
                     "touches_z_end": bool(label in z_ends)})
    return pd.DataFrame(rows, columns=["label", "nucleus_label", "reject_reason", "touches_z_end"])


def _major_axis_angle(footprint: np.ndarray) -> float:
    """Angle (degrees, counter-clockwise from +x with y pointing down the rows) of a 2D mask's major axis."""
    coords = np.argwhere(footprint).astype(float)
    if len(coords) < 3:
        return 0.0
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(coords.T))
    dy, dx = eigenvectors[:, np.argmax(eigenvalues)]
    return math.degrees(math.atan2(dy, dx))


def _skew(mask: np.ndarray, axis: int) -> float:
    """Third central moment of a mask's voxel coordinates along an axis."""
    coords = np.nonzero(mask)[axis].astype(float)
    return float(((coords - coords.mean()) ** 3).mean()) if coords.size else 0.0


def place_at_centre(volume: np.ndarray, centre: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Crop or zero-pad a ``(C, Z, Y, X)`` volume to ``shape`` so that voxel ``centre`` lands at the middle.

    Parameters
    ----------
    volume : ndarray
        ``(C, Z, Y, X)``.
    centre : array-like
        ``(z, y, x)`` voxel coordinates (may be fractional) to put at the centre.
    shape : tuple of int
        Output ``(Z, Y, X)``.

    Returns
    -------
    ndarray
        ``(C, *shape)``, zero where the volume does not reach.
    """
    out = np.zeros((volume.shape[0], *shape), dtype=volume.dtype)
    start = np.round(np.asarray(centre) - np.asarray(shape) / 2).astype(int)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.asarray(shape), volume.shape[1:])
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    source = (slice(None), *(slice(a, b) for a, b in zip(src_lo, src_hi)))
    target = (slice(None), *(slice(a, a + b - c) for a, b, c in zip(dst_lo, src_hi, src_lo)))
    out[target] = volume[source]
    return out


def resample(intensities: np.ndarray, masks: np.ndarray, *, zoom: float | list[float],
             threshold: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rescale channels linearly and masks by thresholding their linear interpolation at 0.5.

    Voxels are treated as extents: output voxel ``i`` samples the input at ``(i + 0.5) / zoom - 0.5``, so an object
    keeps its physical size exactly. (``scipy.ndimage.zoom`` rounds the output shape and stretches the image to fill
    it, which changes the voxel size by up to half a voxel over the box: 2-5% of a cell's height at 0.8 µm.)

    Parameters
    ----------
    intensities : ndarray
        ``(C, Z, Y, X)`` channels.
    masks : ndarray
        ``(M, Z, Y, X)`` boolean masks; mask 1 onwards is kept inside mask 0 (a nucleus inside its cell).
    zoom : float or list of float
        Output voxels per input voxel along (z, y, x).
    threshold : bool
        False: return each mask's interpolated fraction (float32 in [0, 1]) unthresholded, for a caller that
        interpolates it again (a rotation) and thresholds once at the end.

    Returns
    -------
    tuple of ndarray
        float32 channels and boolean masks (or mask fractions) on the new grid, ``ceil(n * zoom)`` voxels along an
        axis of ``n``.

    Examples
    --------
    >>> line = np.zeros((1, 1, 1, 10), np.float32)
    >>> line[..., 2:8] = 1  # 6 voxels of 0.3 µm: 1.8 µm
    >>> _, mask = resample(line, line > 0, zoom=[1.0, 1.0, 0.3 / 0.6])
    >>> mask.shape, int(mask.sum())  # 3 voxels of 0.6 µm: still 1.8 µm
    ((1, 1, 1, 5), 3)
    """
    factors = np.broadcast_to(np.asarray(zoom, dtype=float), (intensities.ndim - 1,))
    shape = tuple(int(math.ceil(n * factor - 1e-6)) for n, factor in zip(intensities.shape[1:], factors))
    options = {"matrix": 1 / factors, "offset": 0.5 / factors - 0.5, "output_shape": shape, "order": 1,
               "mode": "grid-constant"}
    rescaled = np.stack([ndimage.affine_transform(channel.astype(np.float32), **options) for channel in intensities])
    fractions = np.stack([ndimage.affine_transform(mask.astype(np.float32), **options) for mask in masks])
    if not threshold:
        return rescaled, fractions
    binary = fractions > 0.5
    binary[1:] &= binary[0]
    return rescaled, binary


def fov_backgrounds(channels: np.ndarray, cell_labels: np.ndarray) -> tuple[float, ...]:
    """Each channel's background in one FOV: its most populous intensity where there is no cell.

    Measured outside every segmented cell (the medium around and above the monolayer), so a structure's diffuse part
    that fills its cell (a cytosolic pool, free tubulin) stays signal; a FOV whose cells leave no voxel free falls
    back to the whole FOV's most populous intensity.

    Parameters
    ----------
    channels : ndarray
        ``(C, Z, Y, X)`` intensities.
    cell_labels : ndarray
        ``(Z, Y, X)`` cell segmentation, 0 where there is no cell.

    Returns
    -------
    tuple of float
        One background per channel.

    Examples
    --------
    >>> labels = np.array([[[0, 0, 1, 1]]])
    >>> fov_backgrounds(np.array([[[[5, 5, 9, 9]]]]), labels)
    (5.0,)
    """
    outside = cell_labels == 0
    region = outside if outside.any() else np.ones_like(outside)
    return tuple(most_populous_intensity(channel[region]) for channel in channels)


def cell_backgrounds(channels: np.ndarray, cell_mask: np.ndarray, *, regions: tuple[str, ...],
                     fov: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """Each channel's background for one cell, measured where ``regions`` says.

    Parameters
    ----------
    channels : ndarray
        ``(C, Z, Y, X)`` intensities of the cell's box.
    cell_mask : ndarray
        bool ``(Z, Y, X)``, the cell in that box.
    regions : tuple of str
        Per channel, :data:`BACKGROUND_REGIONS`: ``cell`` takes the most populous intensity inside the cell (the
        paper's choice: a signal that fills the cell goes with it); ``fov`` takes the channel's entry of ``fov``.
    fov : tuple of float, optional
        The FOV's backgrounds (:func:`fov_backgrounds`); needed where a region is ``fov``.

    Returns
    -------
    tuple of float
        This cell's background of each channel, in the order of ``channels``.

    Examples
    --------
    >>> box = np.array([[[[5, 9, 9]]], [[[5, 9, 9]]]]); cell = np.array([[[False, True, True]]])
    >>> cell_backgrounds(box, cell, regions=("cell", "fov"), fov=(5.0, 5.0))
    (9.0, 5.0)
    """
    unknown = sorted(set(regions) - set(BACKGROUND_REGIONS))
    if unknown:
        raise ValueError(f"background region {unknown[0]!r}: expected one of {', '.join(BACKGROUND_REGIONS)}")
    if "fov" in regions and fov is None:
        raise ValueError("a channel's background is measured over the FOV, but no FOV backgrounds were given")
    return tuple(fov[index] if region == "fov" else
                 (most_populous_intensity(channel[cell_mask]) if cell_mask.any() else 0.0)
                 for index, (channel, region) in enumerate(zip(channels, regions)))


def subtract_background(intensities: np.ndarray, backgrounds: tuple[float, ...]) -> np.ndarray:
    """Intensities above each channel's background, negatives clipped to 0 (float32, ``(C, Z, Y, X)``)."""
    offsets = np.asarray(backgrounds, dtype=np.float32).reshape(-1, *([1] * (intensities.ndim - 1)))
    return np.clip(intensities.astype(np.float32) - offsets, 0, None)


def mask_channels(signal: np.ndarray, cell_mask: np.ndarray, nucleus_mask: np.ndarray) -> np.ndarray:
    """Mask membrane, DNA and structure as the paper does: DNA by the nucleus, membrane and structure by the cell.

    Parameters
    ----------
    signal : ndarray
        ``(3, Z, Y, X)`` membrane, DNA, structure, background already subtracted (:func:`subtract_background`), so
        the nucleus does not stand on a pedestal of camera offset.
    cell_mask, nucleus_mask : ndarray
        bool ``(Z, Y, X)``.

    Returns
    -------
    ndarray
        float32 ``(3, Z, Y, X)``; zero outside the cell, and the DNA zero outside the nucleus.

    Examples
    --------
    >>> cell = np.zeros((1, 1, 4), bool); cell[..., :3] = True
    >>> nucleus = np.zeros((1, 1, 4), bool); nucleus[..., 0] = True
    >>> mask_channels(np.full((3, 1, 1, 4), 5.0) + [[[[9, 0, 0, 0]]]], cell, nucleus)[:, 0, 0]
    array([[14.,  5.,  5.,  0.],
           [14.,  0.,  0.,  0.],
           [14.,  5.,  5.,  0.]], dtype=float32)
    """
    out = signal.astype(np.float32) * cell_mask
    out[1] *= nucleus_mask
    return out


def align_cell(channels: np.ndarray, cell_mask: np.ndarray, nucleus_mask: np.ndarray, *,
               spacing: tuple[float, float, float], settings: CropSettings) -> tuple[np.ndarray, dict]:
    """Turn one cell's box of a FOV into an aligned, centred crop of isotropic voxels.

    Parameters
    ----------
    channels : ndarray
        ``(3, Z, Y, X)`` membrane, DNA, structure around the cell (with some margin), above their background
        (:func:`subtract_background`).
    cell_mask, nucleus_mask : ndarray
        bool ``(Z, Y, X)`` masks of the cell and its nucleus in that box.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm of the box.
    settings : CropSettings
        Output voxel size and shape.

    Returns
    -------
    crop : ndarray
        float32 ``(5, Z, Y, X)`` (channels of :data:`CROP_CHANNELS`), masked as the paper does
        (:func:`mask_channels`: DNA by the nucleus, membrane and structure by the cell).
    info : dict
        ``angle_deg`` (rotation applied), ``flip_y``, ``flip_x``, ``fraction_outside_crop`` of the cell's voxels, and
        the aligned full-size arrays ``aligned`` (``(5, ...)``) for measuring: there every intensity is masked to
        the cell, so integrated intensities stay those of the whole cell.
    """
    intensities, fractions = resample(channels, np.stack([cell_mask, nucleus_mask]),
                                      zoom=[step / settings.voxel_size_um for step in spacing], threshold=False)
    angle = _major_axis_angle(fractions[0].max(axis=0) > 0.5)
    # Rotating the (y, x) plane by +angle brings an axis at `angle` (rows pointing down) onto +x. The masks are
    # rotated as fractions and thresholded once (thresholding before and after the rotation lost 2-7% of a cell).
    intensities = ndimage.rotate(intensities, angle, axes=(2, 3), order=1, reshape=True)
    masks = ndimage.rotate(fractions, angle, axes=(2, 3), order=1, reshape=True) > 0.5
    masks[1] &= masks[0]
    measured = np.concatenate([intensities * masks[0], masks.astype(np.float32)])
    volume = np.concatenate([mask_channels(intensities, masks[0], masks[1]), measured[3:]])
    flips = {"flip_y": _skew(masks[0], 1) < 0, "flip_x": _skew(masks[0], 2) < 0}
    for axis, flip in zip((2, 3), flips.values()):
        if flip:
            volume, measured = np.flip(volume, axis=axis), np.flip(measured, axis=axis)
    centre = np.array(ndimage.center_of_mass(volume[4])) if volume[4].any() else np.array(volume.shape[1:]) / 2
    crop = place_at_centre(volume, centre, settings.shape)
    inside = crop[3].sum() / max(float(volume[3].sum()), 1.0)
    return crop, {"angle_deg": angle, **flips, "fraction_outside_crop": 1.0 - inside, "aligned": measured}


def _height(mask: np.ndarray, step_um: float) -> float:
    """Extent (µm) along z of a mask: (last - first + 1) slices times the z-step."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    return float((slices[-1] - slices[0] + 1) * step_um) if slices.size else 0.0


def measure_cell(aligned: np.ndarray, *, voxel_um: float) -> dict[str, float]:
    """Shape and intensity measurements of one aligned cell (isotropic voxels).

    Parameters
    ----------
    aligned : ndarray
        ``(5, Z, Y, X)`` as in :data:`CROP_CHANNELS`, the whole cell (not cut to the crop shape), intensities above
        their background.
    voxel_um : float
        Voxel edge in µm.

    Returns
    -------
    dict
        The values of :data:`MEASUREMENTS` (µm, µm², µm³; intensities in camera units × voxels).
    """
    cell, nucleus = aligned[3] > 0.5, aligned[4] > 0.5
    values: dict[str, float] = {}
    for name, mask in (("cell", cell), ("nucleus", nucleus)):
        volume = float(mask.sum()) * voxel_um**3
        area = mask_surface_area(mask, spacing=(voxel_um,) * 3)
        values[f"{name}_volume_um3"] = volume
        values[f"{name}_height_um"] = _height(mask, voxel_um)
        values[f"{name}_surface_area_um2"] = area
        values[f"{name}_sphericity"] = math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area if area > 0 else 0.0
    for index, name in enumerate(INTENSITY_CHANNELS):
        values[f"{name}_integrated_intensity"] = float(aligned[index][cell].sum())
    return {key: values[key] for key in MEASUREMENTS}


def crop_cells(channels: np.ndarray, cell_labels: np.ndarray, nucleus_labels: np.ndarray, *,
               spacing: tuple[float, float, float], settings: CropSettings,
               truth_labels: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Quality-control, crop, align and measure every cell of one FOV.

    Parameters
    ----------
    channels : ndarray
        float32 ``(3, Z, Y, X)``: membrane, DNA, structure.
    cell_labels, nucleus_labels : ndarray
        Segmentations ``(Z, Y, X)``.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm.
    settings : CropSettings
        Crop voxel size, shape and QC limits.
    truth_labels : ndarray, optional
        Ground-truth cell labels; each cell is then matched to its true cell (``truth_label``, ``truth_iou``).

    Returns
    -------
    crops : ndarray
        uint16 ``(N, 5, Z, Y, X)`` of the accepted cells, in table order.
    table : DataFrame
        One row per cell (accepted or not): QC columns, ``crop_index`` (-1 if rejected), alignment, measurements
        and the backgrounds subtracted (:data:`BACKGROUND_COLUMNS`, measured where ``settings.background`` says).
    """
    table = quality_control(cell_labels, nucleus_labels, spacing=spacing, settings=settings)
    if truth_labels is not None:
        matches = match_labels(cell_labels, truth_labels).rename(columns={"matched": "truth_label",
                                                                          "iou": "truth_iou"})
        table = table.merge(matches, on="label", how="left")
    fov = fov_backgrounds(channels, cell_labels) if "fov" in settings.background else None
    margin = [math.ceil(2 / step) for step in spacing]
    boxes = ndimage.find_objects(cell_labels)
    crops, extra = [], []
    for row in table.itertuples():
        if row.reject_reason:
            extra.append({"crop_index": -1})
            continue
        box = tuple(slice(max(s.start - m, 0), min(s.stop + m, n))
                    for s, m, n in zip(boxes[row.label - 1], margin, cell_labels.shape))
        cell_mask, around = cell_labels[box] == row.label, channels[(slice(None), *box)]
        backgrounds = cell_backgrounds(around, cell_mask, regions=settings.background, fov=fov)
        crop, info = align_cell(subtract_background(around, backgrounds), cell_mask,
                                nucleus_labels[box] == row.nucleus_label, spacing=spacing, settings=settings)
        aligned = info.pop("aligned")
        crops.append(np.clip(np.rint(crop), 0, np.iinfo(np.uint16).max).astype(np.uint16))
        values = measure_cell(aligned, voxel_um=settings.voxel_size_um)
        native = {"cell": cell_mask, "nucleus": nucleus_labels[box] == row.nucleus_label}
        for name, mask in native.items():  # heights from the native z-steps, finer than the crop's voxels
            values[f"{name}_height_um"] = _height(mask, spacing[0])
        extra.append({"crop_index": len(crops) - 1, **info, **values, **dict(zip(BACKGROUND_COLUMNS, backgrounds))})
    table = pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1)
    if table.empty:  # a FOV without cells stays on record as a reject, never silently dropped
        table = pd.DataFrame([{"label": 0, "nucleus_label": 0, "reject_reason": "no_cells_found", "crop_index": -1}])
    stack = np.stack(crops) if crops else np.zeros((0, len(CROP_CHANNELS), *settings.shape), dtype=np.uint16)
    return stack, table
