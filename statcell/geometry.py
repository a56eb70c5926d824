"""Surfaces of voxel masks: the one iso-surface behind every area measurement and every exported mesh.

A voxel mask's own faces form a staircase whose area is ~8% above the smooth surface it samples, whatever the
resolution. Tracing the 0.5 iso-surface of the mask smoothed by a Gaussian removes the staircase but moves the surface
inwards where it curves (by about σ²/R on a ball of radius R: 9% of the volume of a 5 µm ellipsoid at 0.8 µm voxels).
:func:`mask_surface` does both right: it smooths by one voxel and then picks the iso-level at which the enclosed volume
equals the mask's voxel volume. On ellipsoids of 2.5 to 12 µm semi-axes at 0.4 and 0.8 µm voxels, the surface's area
is then within 0.7% (1.8% for the smallest, 2 × 2.5 × 3 µm at 0.8 µm) of the analytic area, and its volume is that of
the voxels (see ``tests/test_meshes.py``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes

#: Gaussian sigma, in voxels, of the smoothing before the surface is traced.
SMOOTHING_VOXELS: float = 1.0
#: Relative tolerance on the enclosed volume when the iso-level is searched.
VOLUME_TOLERANCE: float = 1e-3
_MAX_ITERATIONS: int = 40


class Surface(NamedTuple):
    """A closed triangle surface traced around a mask.

    Attributes
    ----------
    vertices : ndarray
        float ``(V, 3)``, ``(z, y, x)`` in µm from the mask's first voxel centre.
    faces : ndarray
        int ``(F, 3)`` vertex indices.
    level : float
        The iso-level of the smoothed mask that the surface traces.
    """

    vertices: np.ndarray
    faces: np.ndarray
    level: float


def enclosed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume inside a closed triangle surface (divergence theorem), in the cube of the vertices' unit.

    Examples
    --------
    >>> corners = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    >>> round(enclosed_volume(corners, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])), 6)  # a tetrahedron
    0.166667
    """
    triangles = vertices[faces]
    return abs(float(np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])).sum())) / 6


def _trace(field: np.ndarray, level: float, spacing: tuple[float, float, float], *,
           allow_degenerate: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    vertices, faces, _, _ = marching_cubes(field, level, spacing=spacing, allow_degenerate=allow_degenerate)
    return vertices, faces, enclosed_volume(vertices, faces)


def mask_surface(mask: np.ndarray, *, spacing: tuple[float, float, float],
                 smoothing_voxels: float = SMOOTHING_VOXELS) -> Surface:
    """The closed surface around a 3D mask that keeps the mask's volume.

    The mask is smoothed by a Gaussian of ``smoothing_voxels`` and its iso-surface traced by marching cubes at the
    level (found by regula falsi) where the enclosed volume equals the mask's voxel count times the voxel volume. The
    mask is padded first, so the surface is closed even where the mask touches its array's border.

    Parameters
    ----------
    mask : ndarray of bool
        ``(Z, Y, X)``; at least one voxel set.
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm.
    smoothing_voxels : float
        Gaussian sigma in voxels.

    Returns
    -------
    Surface
        Vertices in µm from the centre of the mask's voxel ``(0, 0, 0)``.

    Raises
    ------
    ValueError
        If the mask is not 3D or is empty.
    """
    if mask.ndim != 3:
        raise ValueError(f"a surface needs a 3D (Z, Y, X) mask, got shape {mask.shape}")
    voxels = int(np.count_nonzero(mask))
    if voxels == 0:
        raise ValueError("the mask is empty: there is no surface to trace")
    pad = int(math.ceil(4 * smoothing_voxels)) + 2  # the blur's reach (scipy truncates it at 4 sigma) and a margin
    box = tuple(slice(max(int(where.min()) - pad, 0), int(where.max()) + pad + 1)
                for where in np.nonzero(mask))  # the mask's bounding box with room for the blur
    local = np.pad(np.asarray(mask[box], dtype=np.float32), pad)
    field = ndimage.gaussian_filter(local, smoothing_voxels, mode="constant") if smoothing_voxels > 0 else local
    target = voxels * float(np.prod(spacing))
    # The enclosed volume falls from the blur's whole support to 0 as the level rises to the field's peak.
    low, high = 0.01 * float(field.max()), 0.999 * float(field.max())
    volume_low, volume_high = _trace(field, low, spacing)[2] - target, _trace(field, high, spacing)[2] - target
    level, side = (low if volume_low <= 0 else high), 0  # used as is if the root lies outside the bracket
    for _ in range(_MAX_ITERATIONS if volume_low > 0 > volume_high else 0):
        level = (low * volume_high - high * volume_low) / (volume_high - volume_low)
        error = _trace(field, level, spacing)[2] - target
        if abs(error) <= VOLUME_TOLERANCE * target:
            break
        if error > 0:  # too much volume: the level must rise
            low, volume_low = level, error
            if side == 1:  # Illinois step: halve the stale end's weight so the bracket closes from both sides
                volume_high /= 2
            side = 1
        else:
            high, volume_high = level, error
            if side == -1:
                volume_low /= 2
            side = -1
    vertices, faces, _ = _trace(field, level, spacing, allow_degenerate=False)
    offset = np.array([(piece.start - pad) * step for piece, step in zip(box, spacing)])
    return Surface(vertices=vertices + offset, faces=faces, level=float(level))


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total area of a triangle surface, in the square of the vertices' unit."""
    triangles = vertices[faces]
    return 0.5 * float(np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0],
                                               triangles[:, 2] - triangles[:, 0]), axis=1).sum())


def mask_surface_area(mask: np.ndarray, *, spacing: tuple[float, float, float]) -> float:
    """Area (µm²) of :func:`mask_surface` around a 3D mask; 0 for an empty mask."""
    if not np.any(mask):
        return 0.0
    surface = mask_surface(mask, spacing=spacing)
    return surface_area(surface.vertices, surface.faces)


def points_inside(points: np.ndarray, mask: np.ndarray, surface: Surface, *, spacing: tuple[float, float, float],
                  smoothing_voxels: float = SMOOTHING_VOXELS) -> np.ndarray:
    """Whether points lie inside (or on) the surface :func:`mask_surface` traced around ``mask``.

    The test is the surface's own: the smoothed mask, interpolated at each point, against the surface's level.

    Parameters
    ----------
    points : ndarray
        ``(P, 3)`` positions ``(z, y, x)`` in µm, in the frame of :func:`mask_surface`.
    mask : ndarray of bool
        The ``(Z, Y, X)`` mask the surface was traced around.
    surface : Surface
        Its surface.
    spacing : tuple of float
        Voxel size in µm.
    smoothing_voxels : float
        The smoothing the surface was traced with.

    Returns
    -------
    ndarray of bool
        ``(P,)``.
    """
    field = np.asarray(mask, dtype=np.float32)
    if smoothing_voxels > 0:
        field = ndimage.gaussian_filter(field, smoothing_voxels, mode="constant")
    coordinates = (np.asarray(points, dtype=float) / np.asarray(spacing)).T
    # Within the trilinear interpolation's error of the surface, a point on it counts as inside.
    return ndimage.map_coordinates(field, coordinates, order=1, mode="constant", cval=0.0) >= surface.level - 1e-3
