"""The 14 interpretable features of a cell image (paper Fig 3D, S7, S8): shape and intensity of cell and nucleus.

Real and generated images are measured the same way: the cell and the nucleus are segmented from the image itself
(no masks needed, so a decoded image is measured exactly like a real one), then for each of the two regions three
shape features (volume, surface area, sphericity; in 2D area, perimeter, circularity) and four intensity features
(median, mean, standard deviation and entropy of its channel inside the region) are computed. The cell is read from
the membrane channel, the nucleus from the DNA channel.

Segmentation (the paper thresholded its 2D images adaptively with a 199-pixel mean filter, wider than the crops, so
in effect one threshold per image): each channel is smoothed by a Gaussian of ``smoothing_um`` (0.4 µm by default,
half a default voxel: enough to join a speckled signal, too little to inflate the region) and thresholded at Otsu's
value of the smoothed image. Otsu's threshold depends only on the shape of the histogram, so it follows the overall
brightness of each cell (dye uptake varies, and a decoder reproduces it only roughly) with no tuning per channel. The
nucleus is the largest component of the DNA mask with its holes filled. The membrane marks only the cell's surface,
and at coarse voxels that shell has gaps a hole filling leaks through, so the cell is the convex hull of the membrane
mask (its components of at least a tenth of the largest, so stray specks do not stretch it); hiPSCs in a monolayer are
close to convex. On the first 40 cells of the default store this agrees with the cell and nucleus masks of the
segmentation stage at a median IoU of 0.97 and 0.88 (volume ratios 1.02 and 1.01).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import find_contours
from skimage.morphology import convex_hull_image

from statcell.geometry import enclosed_volume, mask_surface, surface_area

#: The 14 features with their units (3D unit / 2D unit), in table order.
FEATURE_NAMES: dict[str, str] = {
    f"{region}_{name}": unit for region in ("cell", "nucleus") for name, unit in (
        ("volume", "µm³ (2D: area, µm²)"),
        ("surface", "µm² (2D: perimeter, µm)"),
        ("sphericity", "1 (2D: circularity 4πA/P²)"),
        ("median", "intensity in [0, 1]"),
        ("mean", "intensity in [0, 1]"),
        ("std", "intensity in [0, 1]"),
        ("entropy", "bits (256 bins on [0, 1])"),
    )
}

#: Histogram bins of the entropy: the 8-bit range the paper scaled images to.
ENTROPY_BINS: int = 256


def intensity_entropy(values: np.ndarray, *, bins: int = ENTROPY_BINS) -> float:
    """Shannon entropy (bits) of intensities in [0, 1], histogrammed into ``bins`` equal bins.

    Parameters
    ----------
    values : ndarray
        Intensities in [0, 1] (any shape; values outside are clipped).
    bins : int
        Number of bins; the entropy lies in ``[0, log2(bins)]``.

    Returns
    -------
    float
        Entropy in bits; NaN for no values.

    Examples
    --------
    >>> intensity_entropy(np.full(100, 0.3))
    0.0
    >>> intensity_entropy(np.array([0.1, 0.9]))
    1.0
    """
    if values.size == 0:
        return math.nan
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    p = counts[counts > 0] / values.size
    return float(abs(-(p * np.log2(p)).sum()))


def _components(mask: np.ndarray, *, min_fraction: float) -> np.ndarray:
    """The connected components of a mask of at least ``min_fraction`` of the largest one's size (1: the largest)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return sizes[labels] >= max(min_fraction * sizes.max(), 1)


def _smoothed(channel: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float) -> np.ndarray:
    """The channel as float32, smoothed by a Gaussian of ``smoothing_um`` µm."""
    if len(spacing) != channel.ndim:
        raise ValueError(f"spacing {spacing} does not match an image of {channel.ndim} dimensions")
    smooth = channel.astype(np.float32)
    if smoothing_um > 0:
        smooth = ndimage.gaussian_filter(smooth, [smoothing_um / step for step in spacing])
    return smooth


def _foreground(channel: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float) -> np.ndarray:
    """Otsu mask of the Gaussian-smoothed channel; all False for a constant channel."""
    smooth = _smoothed(channel, spacing=spacing, smoothing_um=smoothing_um)
    if float(smooth.max() - smooth.min()) < 1e-6:
        return np.zeros(channel.shape, dtype=bool)
    return smooth > threshold_otsu(smooth)


def segment_cell(membrane: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float = 0.4) -> np.ndarray:
    """Filled cell from the membrane channel: convex hull of the thresholded membrane's main components.

    Parameters
    ----------
    membrane : ndarray
        ``(Z, Y, X)`` or ``(Y, X)`` intensities.
    spacing : tuple of float
        Pixel size in µm per axis.
    smoothing_um : float
        Gaussian sigma (µm) before Otsu's threshold.

    Returns
    -------
    ndarray of bool
        The cell, same shape; all False for a constant image.
    """
    mask = _components(_foreground(membrane, spacing=spacing, smoothing_um=smoothing_um), min_fraction=0.1)
    return convex_hull_image(mask, offset_coordinates=False) if mask.any() else mask


def segment_structure(structure: np.ndarray, cell: np.ndarray, *, spacing: tuple[float, ...],
                      smoothing_um: float = 0.4) -> np.ndarray:
    """The tagged structure inside a cell: the smoothed structure channel above Otsu's threshold of its cell voxels.

    Parameters
    ----------
    structure : ndarray
        ``(Z, Y, X)`` or ``(Y, X)`` intensities.
    cell : ndarray of bool
        The cell (:func:`segment_cell`, or a segmentation mask), same shape.
    spacing : tuple of float
        Pixel size in µm per axis.
    smoothing_um : float
        Gaussian sigma (µm) before the threshold.

    Returns
    -------
    ndarray of bool
        The structure, inside the cell; all False where the channel is constant inside the cell.
    """
    smooth = _smoothed(structure, spacing=spacing, smoothing_um=smoothing_um)
    inside = smooth[cell]
    if inside.size == 0 or float(inside.max() - inside.min()) < 1e-6:
        return np.zeros(structure.shape, dtype=bool)
    return (smooth > threshold_otsu(inside)) & cell


def segment_nucleus(dna: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float = 0.4) -> np.ndarray:
    """Nucleus from the DNA channel: largest component of the thresholded DNA, holes filled.

    Parameters and result as in :func:`segment_cell`, with the DNA channel in place of the membrane.
    """
    mask = _foreground(dna, spacing=spacing, smoothing_um=smoothing_um)
    return ndimage.binary_fill_holes(_components(mask, min_fraction=1.0))


#: Gaussian sigma (pixels) applied to a 2D mask before its boundary is traced: removes the staircase of raw pixels,
#: which adds about 10% to a disc's perimeter, while shifting a 6-pixel disc's boundary by under 1%.
_BOUNDARY_SIGMA: float = 0.7


def shape_features(mask: np.ndarray, *, spacing: tuple[float, ...]) -> tuple[float, float, float]:
    """Size, boundary and roundness of a region.

    The size counts the region's pixels. In 3D the boundary is :func:`statcell.geometry.mask_surface`, which keeps the
    mask's volume; in 2D it is the 0.5 iso-contour of the mask smoothed by a Gaussian of 0.7 pixel. Roundness compares
    the boundary with the size it encloses (the volume or area inside the same surface), so by the isoperimetric
    inequality it never exceeds 1.

    Parameters
    ----------
    mask : ndarray of bool
        ``(Z, Y, X)`` or ``(Y, X)``.
    spacing : tuple of float
        Pixel size in µm per axis.

    Returns
    -------
    tuple of float
        3D: volume (µm³), surface area (µm²), sphericity π^(1/3) (6V)^(2/3) / A. 2D: area (µm²), perimeter (µm),
        circularity 4πA / P². Roundness is 1 for a ball or a disc. NaN for an empty mask (and NaN boundary and
        roundness for a single pixel).
    """
    count = int(mask.sum())
    size = count * float(np.prod(spacing)) if count else math.nan
    if count < 2:
        return size, math.nan, math.nan
    if mask.ndim == 3:
        surface = mask_surface(mask, spacing=tuple(spacing))
        boundary = surface_area(surface.vertices, surface.faces)
        enclosed = enclosed_volume(surface.vertices, surface.faces)
        return size, boundary, math.pi ** (1 / 3) * (6 * enclosed) ** (2 / 3) / boundary
    smooth = ndimage.gaussian_filter(np.pad(mask, 2).astype(np.float32), _BOUNDARY_SIGMA)
    step = np.asarray(spacing, dtype=float)
    contours = [contour * step for contour in find_contours(smooth, 0.5)]
    boundary = sum(float(np.linalg.norm(np.diff(contour, axis=0), axis=1).sum()) for contour in contours)
    enclosed = sum(abs(float(np.dot(c[:-1, 0], c[1:, 1]) - np.dot(c[1:, 0], c[:-1, 1]))) / 2 for c in contours)
    return size, boundary, 4 * math.pi * enclosed / boundary**2


def cell_features(image: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float = 0.4) -> dict[str, float]:
    """The 14 features of one cell image, segmenting cell (membrane) and nucleus (DNA) from the image itself.

    Parameters
    ----------
    image : ndarray
        ``(2, Z, Y, X)`` or ``(2, Y, X)``: membrane and DNA, intensities in [0, 1] (further channels are ignored).
    spacing : tuple of float
        Pixel size in µm per spatial axis, ``(z, y, x)`` or ``(y, x)``.
    smoothing_um : float
        Gaussian sigma (µm) before thresholding (see the module's notes).

    Returns
    -------
    dict of str to float
        The values of :data:`FEATURE_NAMES`; a region that is not found gives NaN features.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :40]
    >>> disc = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 100).astype(float)
    >>> features = cell_features(np.stack([disc, disc * 0.5]), spacing=(1.0, 1.0), smoothing_um=0)
    >>> round(features["cell_volume"]), round(features["cell_sphericity"], 2), features["nucleus_mean"]
    (317, 0.96, 0.5)
    """
    if image.ndim not in (3, 4) or image.shape[0] < 2:
        raise ValueError(f"expected (2, [Z,] Y, X), got shape {image.shape}")
    features: dict[str, float] = {}
    for region, channel, segment in (("cell", image[0], segment_cell), ("nucleus", image[1], segment_nucleus)):
        mask = segment(channel, spacing=spacing, smoothing_um=smoothing_um)
        values = channel[mask]
        size, boundary, roundness = shape_features(mask, spacing=spacing)
        empty = values.size == 0
        features.update({
            f"{region}_volume": size, f"{region}_surface": boundary, f"{region}_sphericity": roundness,
            f"{region}_median": math.nan if empty else float(np.median(values)),
            f"{region}_mean": math.nan if empty else float(values.mean()),
            f"{region}_std": math.nan if empty else float(values.std()),
            f"{region}_entropy": intensity_entropy(values),
        })
    return {name: features[name] for name in FEATURE_NAMES}


def feature_table(images: np.ndarray, *, spacing: tuple[float, ...], smoothing_um: float = 0.4) -> pd.DataFrame:
    """:func:`cell_features` of every image of a batch.

    Parameters
    ----------
    images : ndarray
        ``(N, 2, [Z,] Y, X)`` membrane and DNA.
    spacing, smoothing_um
        As in :func:`cell_features`.

    Returns
    -------
    DataFrame
        One row per image (in batch order), one column per feature of :data:`FEATURE_NAMES`.
    """
    rows = [cell_features(image, spacing=spacing, smoothing_um=smoothing_um) for image in images]
    return pd.DataFrame(rows, columns=list(FEATURE_NAMES), dtype=float)


#: Colours of the violins: real cells red (as in the paper), generated cells in blues.
def measure_features(real: np.ndarray, reconstruction: np.ndarray, prior: np.ndarray, *, cell_ids: list[str],
                     spacing: tuple[float, ...]) -> pd.DataFrame:
    """Features of real test cells, of their reconstructions and of cells drawn from the prior.

    Parameters
    ----------
    real, reconstruction : ndarray
        ``(N, C, [Z,] Y, X)`` real cells and their reconstructions (same order; the first two channels are used).
    prior : ndarray
        ``(M, C, [Z,] Y, X)`` cells decoded from the prior.
    cell_ids : list of str
        The N real cells' ids; prior samples are named ``prior/<k>``.
    spacing : tuple of float
        Pixel size in µm per spatial axis.

    Returns
    -------
    DataFrame
        Columns ``cell_id``, ``source`` (real, reconstruction, prior) and the features of :data:`FEATURE_NAMES`.
    """
    if len(real) != len(reconstruction) or len(real) != len(cell_ids):
        raise ValueError("real cells, reconstructions and cell ids must correspond one to one")
    parts = []
    for source, images, ids in (("real", real, list(cell_ids)), ("reconstruction", reconstruction, list(cell_ids)),
                                ("prior", prior, [f"prior/{k}" for k in range(len(prior))])):
        table = feature_table(images[:, :2], spacing=spacing)
        parts.append(pd.concat([pd.DataFrame({"cell_id": ids, "source": source}), table], axis=1))
    return pd.concat(parts, ignore_index=True)

