"""Surface meshes of cells for simulators: real cells, their reconstructions, generated and representative cells.

Each cell gives up to three closed surfaces, at physical scale: the **cell**, the **nucleus** and the tagged
**structure**'s iso-surface. Every surface is :func:`statcell.geometry.mask_surface` of a mask (the
one-voxel-smoothed mask's iso-surface at the level that keeps the mask's volume), cleaned with trimesh (duplicate
vertices merged, normals pointing out of the mask, into any cavity), remeshed into near-equilateral triangles
(:func:`remesh_isotropic`: marching cubes leaves slivers, triangles with angles under 1°, which a simulator's
volume mesher or solver handles badly) and written as ``.obj``, ``.stl`` and ``.ply``.
Vertices are ``(x, y, z)`` in µm, from the centre of the crop's first voxel: the cell's long axis along x, its nucleus
at the crop's centre (the frame of ``cells.zarr``).

The masks come from where each kind of cell has them:

- **real**: test cells of the training dataset, one per tagged structure first (controls last); the cell and nucleus
  masks of the store (the segmentation stage's), the structure above Otsu's threshold of its cell
  (:func:`statcell.analysis.features.segment_structure`);
- **reconstruction**: the same cells decoded from their posterior means (membrane and DNA by the reference model,
  the structure by the target model: ``test_cells.npz`` of the generation step), segmented from the images the way
  the 14 features are (:func:`~statcell.analysis.features.segment_cell`, ``segment_nucleus``, ``segment_structure``);
- **generated**: cells drawn from the reference model's prior (``prior.npz``), cell and nucleus;
- **representative**: the latent walks' cells (``walks.npz``) at the mean (every dimension at 0) and at ±``walk
  range`` standard deviations along each of the top reference dimensions, cell and nucleus.

The quality table has one row per surface: vertices, faces, watertight, consistent winding, Euler number, bodies, the
mesh's volume and area against the voxel measurements (the mask's voxel volume; for real cells the area the cropping
stage measured on the whole aligned cell, so a ratio below 1 flags a cell the crop cuts), the fraction of the
surface's vertices inside the cell's surface (nucleus and structure), how many of its connected surfaces were
remeshed, the triangles' smallest and median angles and the median edge length. A second table is the histogram of
every triangle angle per kind and part.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from statcell.analysis.features import segment_cell, segment_nucleus, segment_structure
from statcell.geometry import Surface, mask_surface, points_inside
from statcell.vocabulary import showcase_order

if TYPE_CHECKING:
    import trimesh

log = logging.getLogger(__name__)

#: Mesh file formats trimesh writes without extra packages, in the order written.
MESH_FORMATS: tuple[str, ...] = ("obj", "stl", "ply")
#: The kinds of cells meshed, in table order.
MESH_KINDS: tuple[str, ...] = ("real", "reconstruction", "generated", "representative")
#: The surfaces of a cell, in table order.
MESH_PARTS: tuple[str, ...] = ("cell", "nucleus", "structure")
#: Width of the triangle-angle histogram's bins, degrees.
ANGLE_BIN_DEG: int = 5
#: Cell-store channels of the real cells: the structure and the two masks.
_STRUCTURE_CHANNEL, _CELL_MASK_CHANNEL, _NUCLEUS_MASK_CHANNEL = 2, 3, 4

QUALITY_COLUMNS: tuple[str, ...] = (
    "kind", "name", "cell_id", "structure", "part", "path", "note", "vertices", "faces", "watertight",
    "winding_consistent", "euler_number", "bodies", "mesh_volume_um3", "voxel_volume_um3", "volume_ratio",
    "mesh_area_um2", "measured_area_um2", "area_ratio", "inside_cell_fraction", "remeshed_surfaces", "min_angle_deg",
    "median_angle_deg", "median_edge_um",
)
#: Iterations of the isotropic remeshing (split, collapse, flip, relax and project, each iteration).
REMESH_ITERATIONS: int = 10
#: Largest relative change of the enclosed volume, or of the area, that a remeshed surface may show against the traced
#: one; beyond it (or where the topology changed) the traced surface is written. A one-voxel-wide line, as a
#: microtubule is at 0.8 µm, loses 1.6% of its area at 0.8 µm edges.
REMESH_TOLERANCE: float = 0.02
#: A remeshed surface whose smallest triangle angle is below this and below the traced surface's is not kept.
GOOD_ANGLE_DEG: float = 20.0
#: Offsets along the vertex normals that give a remeshed surface back the traced surface's volume.
_VOLUME_STEPS: int = 3
#: Largest offset of one such step, in edge lengths.
_MAX_OFFSET_EDGES: float = 0.25
#: Surfaces whose reason to stay as traced a note lists.
_REASONS_SHOWN: int = 3


@dataclass(frozen=True)
class MeshSettings:
    """The ``meshes`` section of the configuration.

    Attributes
    ----------
    cells : int
        Real test cells meshed (and their reconstructions), one per structure first.
    generated : int
        Cells from the reference prior meshed.
    dimensions : int
        Top reference dimensions whose representative cells (±range) are meshed.
    formats : tuple of str
        File formats written, from :data:`MESH_FORMATS`.
    edge_length_um : float or None
        Target edge length of the remeshed surfaces, µm; ``None``: the voxel size (the smallest side); ``0``: the
        marching-cubes surfaces are written as traced.
    """

    cells: int
    generated: int
    dimensions: int
    formats: tuple[str, ...]
    edge_length_um: float | None = None

    @classmethod
    def from_section(cls, section: Mapping) -> MeshSettings:
        """Settings from the validated ``meshes`` section (``edge_length_um``: ``auto``, a length, or 0 for none)."""
        edge = section.get("edge_length_um", "auto")
        return cls(cells=int(section["cells"]), generated=int(section["generated"]),
                   dimensions=int(section["dimensions"]), formats=tuple(section["formats"]),
                   edge_length_um=None if edge == "auto" else float(edge))

    def edge_length(self, spacing: tuple[float, float, float]) -> float:
        """The remeshing's target edge length in µm for voxels of ``spacing`` (0: no remeshing)."""
        return float(min(spacing)) if self.edge_length_um is None else self.edge_length_um


def surface_mesh(surface: Surface) -> trimesh.Trimesh:
    """A trimesh of a :class:`~statcell.geometry.Surface`, in ``(x, y, z)`` µm with normals pointing out of the mask.

    Duplicate vertices are merged; the faces are wound so that every normal points out of the mask (into a cavity).
    """
    import trimesh

    # (z, y, x) -> (x, y, z) mirrors the surface, so the winding is reversed too. Marching cubes winds every face
    # the same way round the inside, so a cavity's faces already point into it; orienting each body on its own
    # (trimesh's fix_normals) would turn a cavity inside out and add its volume.
    mesh = trimesh.Trimesh(vertices=surface.vertices[:, ::-1], faces=surface.faces[:, ::-1], process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _remesh_surface(surface: trimesh.Trimesh, *, edge_length_um: float, iterations: int,
                    tolerance: float) -> tuple[trimesh.Trimesh, str]:
    """One connected closed surface remeshed (:func:`remesh_isotropic`), or itself and why it was kept."""
    import trimesh

    with warnings.catch_warnings():  # its package imports numpy.core and scipy.ndimage.filters, both deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from gpytoolbox import remesh_botsch

    vertices, faces = remesh_botsch(np.asarray(surface.vertices, dtype=np.float64),
                                    np.asarray(surface.faces, dtype=np.int32), i=iterations, h=float(edge_length_um),
                                    project=True)
    remeshed = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    if np.sign(remeshed.volume) != np.sign(surface.volume):  # a cavity's surface encloses a negative volume
        remeshed.invert()
    for _ in range(_VOLUME_STEPS if remeshed.is_watertight and remeshed.area > 0 else 0):
        offset = (surface.volume - remeshed.volume) / remeshed.area  # dV = area × offset along the normals
        # a surface that remeshing shrank to a sliver would need an offset beyond its size: it fails the volume check
        offset = float(np.clip(offset, -_MAX_OFFSET_EDGES * edge_length_um, _MAX_OFFSET_EDGES * edge_length_um))
        remeshed = trimesh.Trimesh(vertices=remeshed.vertices + offset * remeshed.vertex_normals,
                                   faces=remeshed.faces, process=False)
    if not (remeshed.is_watertight and remeshed.is_winding_consistent):
        return surface, "not closed"
    if abs(remeshed.volume) <= 1e-3 * abs(surface.volume):
        return surface, "collapsed flat (a body a few edges across)"
    moved = float(np.abs(remeshed.bounds - surface.bounds).max())
    if moved > edge_length_um:
        return surface, f"its extent moved by {moved:.2g} µm, more than an edge"
    if (remeshed.body_count, remeshed.euler_number) != (surface.body_count, surface.euler_number):
        return surface, f"Euler number {remeshed.euler_number} instead of {surface.euler_number}"
    changes = [f"{name} {after / before - 1:+.1%}" for name, before, after in
               (("volume", surface.volume, remeshed.volume), ("area", surface.area, remeshed.area))
               if abs(after / before - 1) > tolerance]
    traced_angle, angle = float(triangle_angles(surface).min()), float(triangle_angles(remeshed).min())
    if angle < min(traced_angle, GOOD_ANGLE_DEG):  # a sheet about one edge thick: the offset folds its triangles
        changes.append(f"smallest angle {angle:.1f}° where traced {traced_angle:.1f}°")
    return (surface, ", ".join(changes)) if changes else (remeshed, "")


def remesh_isotropic(mesh: trimesh.Trimesh, *, edge_length_um: float, iterations: int = REMESH_ITERATIONS,
                     tolerance: float = REMESH_TOLERANCE) -> tuple[trimesh.Trimesh, int, str]:
    """The surface remeshed into near-equilateral triangles of one edge length, keeping its shape and volume.

    Each connected surface (a body, or the wall of a cavity) is remeshed on its own, at ``edge_length_um`` or, where
    that changes it, at half of it, by Botsch and Kobbelt's isotropic remeshing (gpytoolbox's ``remesh_botsch``: long
    edges split, short ones collapsed, edges flipped towards valence 6, vertices relaxed in the tangent plane and
    projected back onto the traced surface, ``iterations`` times). Its flat triangles cut the chords of a curved
    surface and lose volume (0.5% on a 5 × 7 × 12 µm ellipsoid, 16% on a blob of 15 voxels, at 0.8 µm edges), so every
    vertex is then moved along its normal by the one offset that gives back the traced volume. A surface is remeshed
    only where the result is still closed, its winding consistent, its Euler number the traced one's, its extent
    within an edge of the traced one's, its volume and area within ``tolerance`` of the traced ones and its smallest
    triangle angle no smaller than the traced one's or :data:`GOOD_ANGLE_DEG`, whichever is smaller; otherwise it is
    written as traced, and the note says how many and why. A remesh whose smallest angle is under
    :data:`GOOD_ANGLE_DEG` is tried again at half the edge (a decoded nucleus with a handle kept one 11° triangle at
    the voxel's edge, 29° at half of it); where neither reaches it, the one with the wider smallest angle is kept.
    Surfaces that remeshing changes: sheets about one edge thick (a plasma membrane one voxel thick loses 5-10% of its
    area, its triangles folded) and bodies of a few edges across.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        A closed surface (:func:`surface_mesh`), normals pointing out of the mask.
    edge_length_um : float
        Target edge length, µm (> 0).
    iterations : int
        Remeshing iterations.
    tolerance : float
        Largest relative change of a surface's volume or area accepted.

    Returns
    -------
    mesh : trimesh.Trimesh
        The surfaces, remeshed where they could be (``mesh`` itself where none could).
    remeshed : int
        How many of its connected surfaces were remeshed.
    note : str
        Empty where every one was, else how many were written as traced and why.

    Raises
    ------
    ValueError
        If ``edge_length_um`` is not positive.

    Examples
    --------
    >>> import trimesh
    >>> ball = trimesh.creation.icosphere(subdivisions=4, radius=5.0)
    >>> remeshed, count, note = remesh_isotropic(ball, edge_length_um=1.0)
    >>> count, note, remeshed.is_watertight, round(float(remeshed.volume / ball.volume), 3)
    (1, '', True, 1.0)
    """
    import trimesh

    if not edge_length_um > 0:
        raise ValueError(f"the remeshing's edge length must be > 0 µm, got {edge_length_um}")
    surfaces = mesh.split(only_watertight=False) if mesh.body_count > 1 else [mesh]
    results = []
    for surface in surfaces:
        best: tuple[float, tuple[trimesh.Trimesh, str]] | None = None  # the widest-angled remesh under the bar
        for edge in (edge_length_um, edge_length_um / 2):
            result = _remesh_surface(surface, edge_length_um=edge, iterations=iterations, tolerance=tolerance)
            if result[1]:
                continue
            angle = float(triangle_angles(result[0]).min())
            if angle >= GOOD_ANGLE_DEG:
                break
            if best is None or angle > best[0]:
                best = (angle, result)
        else:  # no remesh reached the bar: the one with the widest smallest angle, or the surface as traced
            result = best[1] if best is not None else result
        results.append(result)
    kept = [reason for _, reason in results if reason]
    remeshed = len(results) - len(kept)
    note = ""
    if kept:
        shown = "; ".join(kept[:_REASONS_SHOWN]) + (f"; {len(kept) - _REASONS_SHOWN} more" if len(kept) >
                                                    _REASONS_SHOWN else "")
        note = (f"{len(kept)} of {len(results)} surfaces written as traced, as remeshing changed them (at "
                f"{edge_length_um / 2:g} µm edges, after {edge_length_um:g}): {shown}")
    if not remeshed:
        return mesh, 0, note
    merged = trimesh.util.concatenate([surface for surface, _ in results]) if len(results) > 1 else results[0][0]
    return merged, remeshed, note


def triangle_angles(mesh: trimesh.Trimesh) -> np.ndarray:
    """The three inner angles of every triangle, degrees, ``(F, 3)``."""
    return np.degrees(mesh.face_angles)


def mesh_quality(mesh: trimesh.Trimesh, *, voxel_volume_um3: float, measured_area_um2: float = float("nan"),
                 inside_cell_fraction: float = float("nan")) -> dict[str, object]:
    """Topology, size and triangle shape of one mesh (the quality columns of :data:`QUALITY_COLUMNS`).

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The mesh (:func:`surface_mesh`).
    voxel_volume_um3 : float
        Volume of the mask it was traced around.
    measured_area_um2 : float
        An area measured elsewhere to compare with (NaN: none).
    inside_cell_fraction : float
        Fraction of its vertices inside the cell's surface (NaN: not asked).
    """
    angles = triangle_angles(mesh)
    volume, area = float(mesh.volume), float(mesh.area)
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight),
            "winding_consistent": bool(mesh.is_winding_consistent), "euler_number": int(mesh.euler_number),
            "bodies": int(mesh.body_count), "mesh_volume_um3": volume, "voxel_volume_um3": voxel_volume_um3,
            "volume_ratio": volume / voxel_volume_um3 if voxel_volume_um3 > 0 else float("nan"),
            "mesh_area_um2": area, "measured_area_um2": measured_area_um2,
            "area_ratio": area / measured_area_um2 if measured_area_um2 > 0 else float("nan"),
            "inside_cell_fraction": inside_cell_fraction,
            "min_angle_deg": float(angles.min()) if angles.size else float("nan"),
            "median_angle_deg": float(np.median(angles)) if angles.size else float("nan"),
            "median_edge_um": float(np.median(mesh.edges_unique_length)) if angles.size else float("nan")}


def angle_histogram(angles: np.ndarray) -> np.ndarray:
    """Counts of triangle angles (degrees) in :data:`ANGLE_BIN_DEG`-degree bins from 0 to 180."""
    return np.histogram(angles, bins=np.arange(0, 180 + ANGLE_BIN_DEG, ANGLE_BIN_DEG))[0]


def _file_stem(text: str) -> str:
    """A file-name-safe version of an id (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "cell"


@dataclass(frozen=True)
class CellMasks:
    """The masks of one cell to mesh, and what the table says about it."""

    kind: str
    name: str
    masks: dict[str, np.ndarray]
    cell_id: str = ""
    structure: str = ""
    measured_areas: Mapping[str, float] | None = None


def _decoded_masks(image: np.ndarray, *, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Cell, nucleus (and structure, for a 3-channel image) segmented from a decoded ``(C, Z, Y, X)`` image."""
    cell = segment_cell(image[0], spacing=spacing)
    masks = {"cell": cell, "nucleus": segment_nucleus(image[1], spacing=spacing)}
    if image.shape[0] > 2:
        masks["structure"] = segment_structure(image[2], cell, spacing=spacing)
    return masks


def choose_real_cells(manifest: pd.DataFrame, count: int) -> pd.DataFrame:
    """The test cells to mesh: one of each tagged structure first, then the next cells, controls last.

    Parameters
    ----------
    manifest : DataFrame
        The generation step's ``manifest.parquet``; its ``test_cells`` / ``real`` rows are the candidates, taken in
        their ``position`` order within each rank.
    count : int
        Cells wanted.

    Returns
    -------
    DataFrame
        Up to ``count`` rows of the manifest (``position`` in ``test_cells.npz``, ``cell_id``, ``store_index``,
        ``structure``).

    Examples
    --------
    >>> rows = pd.DataFrame({"array": "test_cells", "source": "real", "position": range(5), "cell_id": list("abcde"),
    ...                      "structure": ["control_blank", "golgi", "golgi", "nucleoli", "golgi"]})
    >>> choose_real_cells(rows, 4)["cell_id"].tolist()
    ['b', 'd', 'c', 'e']
    """
    real = manifest[(manifest["array"] == "test_cells") & (manifest["source"] == "real")].sort_values("position")
    return real.iloc[showcase_order(real["structure"].astype(str).tolist())[:count]].reset_index(drop=True)


def cells_to_mesh(real: np.ndarray, cells: pd.DataFrame, *, reconstructions: np.ndarray, prior: np.ndarray,
                  walks: Mapping[str, np.ndarray], spacing: tuple[float, float, float],
                  settings: MeshSettings) -> list[CellMasks]:
    """The masks of every cell :func:`export_meshes` meshes, in table order.

    Parameters
    ----------
    real : ndarray
        ``(N, 3, Z, Y, X)`` store channels structure, cell mask and nucleus mask of the chosen real cells.
    cells : DataFrame
        Their rows (``cell_id``, ``structure``, and the cropping stage's ``cell_surface_area_um2`` and
        ``nucleus_surface_area_um2`` where present), in the order of ``real``.
    reconstructions : ndarray
        ``(N, 3, Z, Y, X)`` their reconstructions (membrane, DNA, structure).
    prior : ndarray
        ``(G, 2, Z, Y, X)`` cells from the reference prior; the first ``settings.generated`` are meshed.
    walks : mapping
        ``walks.npz`` of the latent walks: ``images`` ``(D, S, 2, Z, Y, X)``, ``dimension`` ``(D,)``,
        ``sd_offsets`` ``(S,)``.
    spacing : tuple of float
        Voxel size in µm.
    settings : MeshSettings
        How many cells of each kind.
    """
    chosen: list[CellMasks] = []
    for position, row in enumerate(cells.itertuples(index=False)):
        areas = {part: float(getattr(row, f"{part}_surface_area_um2", float("nan"))) for part in ("cell", "nucleus")}
        cell_mask = real[position, 1] > 0.5
        chosen.append(CellMasks(
            kind="real", name=str(row.cell_id), cell_id=str(row.cell_id), structure=str(row.structure),
            measured_areas=areas,
            masks={"cell": cell_mask, "nucleus": (real[position, 2] > 0.5) & cell_mask,
                   "structure": segment_structure(real[position, 0], cell_mask, spacing=spacing)}))
    for position, row in enumerate(cells.itertuples(index=False)):
        chosen.append(CellMasks(kind="reconstruction", name=str(row.cell_id), cell_id=str(row.cell_id),
                                structure=str(row.structure),
                                masks=_decoded_masks(reconstructions[position], spacing=spacing)))
    walked = np.asarray(walks["dimension"]) if np.asarray(walks["images"]).size else np.zeros(0)
    for key, asked, available, source in (("generated", settings.generated, len(prior), "analysis.generated_cells"),
                                          ("dimensions", settings.dimensions, len(walked), "analysis.walk_dimensions")):
        if asked > available:
            log.warning("meshes.%s is %d, but the run has %d (config key '%s'): meshing %d", key, asked, available,
                        source, available)
    for draw in range(min(settings.generated, len(prior))):
        chosen.append(CellMasks(kind="generated", name=f"prior_{draw:02d}",
                                masks=_decoded_masks(prior[draw], spacing=spacing)))
    images, offsets = np.asarray(walks["images"]), np.asarray(walks["sd_offsets"], dtype=float)
    if images.size:
        middle = int(np.argmin(np.abs(offsets)))
        chosen.append(CellMasks(kind="representative", name="mean",
                                masks=_decoded_masks(images[0, middle], spacing=spacing)))
        for row, dimension in enumerate(walked[:settings.dimensions]):
            for step, sign in ((0, "minus"), (len(offsets) - 1, "plus")):
                chosen.append(CellMasks(
                    kind="representative", name=f"dim{int(dimension):02d}_{sign}{abs(offsets[step]):g}sd",
                    masks=_decoded_masks(images[row, step], spacing=spacing)))
    return chosen


def read_cells_to_mesh(*, store: str | Path, cells: str | Path, test_cells: str | Path, prior: str | Path,
                       manifest: str | Path, walks: str | Path, settings: MeshSettings
                       ) -> tuple[list[CellMasks], tuple[float, float, float]]:
    """The cells :func:`export_meshes` meshes, read from a run's files, and the store's voxel size.

    Parameters
    ----------
    store, cells : path
        ``cells.zarr`` of the training dataset and its ``cells.parquet``.
    test_cells, prior, manifest : path
        ``test_cells.npz``, ``prior.npz`` and ``manifest.parquet`` of the generation step.
    walks : path
        ``walks.npz`` of the latent walks.
    settings : MeshSettings
        How many cells of each kind.

    Returns
    -------
    chosen : list of CellMasks
        :func:`cells_to_mesh`.
    spacing : tuple of float
        The store's voxel size, µm.
    """
    from statcell import io

    spacing = io.store_spacing(store)
    chosen = choose_real_cells(pd.read_parquet(manifest), settings.cells)
    table = io.read_cell_table(cells, store=store).set_index("cell_id").loc[chosen["cell_id"]].reset_index()
    real = io.read_cells(store, table["store_index"].to_numpy(), channels=(2, 3, 4))
    with np.load(test_cells) as decoded, np.load(prior) as drawn, np.load(walks) as walked:
        reconstructions = decoded["reconstruction"][chosen["position"].to_numpy()]
        return cells_to_mesh(real, table, reconstructions=reconstructions, prior=drawn["images"], walks=dict(walked),
                             spacing=spacing, settings=settings), spacing


def mesh_cell(cell: CellMasks, *, spacing: tuple[float, float, float], edge_length_um: float = 0.0
              ) -> tuple[list[dict[str, object]], dict[str, trimesh.Trimesh]]:
    """Mesh the parts of one cell: a quality row per part (without ``path``), and the meshes by part.

    ``edge_length_um`` > 0 remeshes each surface (:func:`remesh_isotropic`); 0 keeps the traced surfaces.
    """
    rows, meshes = [], {}
    cell_surface = None
    voxel_volume = float(np.prod(spacing))
    for part in MESH_PARTS:
        if part not in cell.masks:
            continue
        mask = cell.masks[part]
        row: dict[str, object] = {"kind": cell.kind, "name": cell.name, "cell_id": cell.cell_id,
                                  "structure": cell.structure, "part": part, "note": ""}
        if not mask.any():
            row["note"] = f"empty {part} mask: nothing to mesh"
            rows.append(row)
            continue
        surface = mask_surface(mask, spacing=spacing)
        mesh = surface_mesh(surface)
        remeshed = 0
        if edge_length_um > 0:
            mesh, remeshed, row["note"] = remesh_isotropic(mesh, edge_length_um=edge_length_um)
        inside = float("nan")
        if part == "cell":
            cell_surface = surface
        elif cell_surface is not None:  # the mesh's (x, y, z) vertices against the cell's traced surface
            inside = float(points_inside(np.asarray(mesh.vertices)[:, ::-1], cell.masks["cell"], cell_surface,
                                         spacing=spacing).mean())
            if inside < 1.0:  # a simulator meshing the cell's volume would find the part cut by its wall
                outside = f"{1 - inside:.1%} of its vertices outside the cell's surface"
                row["note"] = "; ".join(filter(None, (row["note"], outside)))
        measured = (cell.measured_areas or {}).get(part, float("nan"))
        row.update(mesh_quality(mesh, voxel_volume_um3=float(mask.sum()) * voxel_volume,
                                measured_area_um2=measured, inside_cell_fraction=inside), remeshed_surfaces=remeshed)
        rows.append(row)
        meshes[part] = mesh
    return rows, meshes


def export_meshes(chosen: list[CellMasks], *, spacing: tuple[float, float, float], formats: tuple[str, ...],
                  outdir: str | Path, edge_length_um: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mesh every chosen cell, write the meshes and return the quality table and the triangle-angle histogram.

    Parameters
    ----------
    chosen : list of CellMasks
        :func:`cells_to_mesh`.
    spacing : tuple of float
        Voxel size in µm.
    formats : tuple of str
        File formats, from :data:`MESH_FORMATS`.
    outdir : path
        Folder written: ``KIND/NAME_PART.FORMAT``.
    edge_length_um : float
        Edge length of the remeshed surfaces, µm (:meth:`MeshSettings.edge_length`); 0 writes the traced surfaces.

    Returns
    -------
    quality : DataFrame
        :data:`QUALITY_COLUMNS`; ``path`` is the mesh's path in ``outdir`` without its format suffix.
    angles : DataFrame
        ``kind``, ``part``, ``bin_start_deg``, ``bin_end_deg``, ``triangle_angles`` (count).
    """
    from statcell.io import write_mesh

    unknown = sorted(set(formats) - set(MESH_FORMATS))
    if unknown:
        raise ValueError(f"unknown mesh formats {unknown}: choose from {list(MESH_FORMATS)}")
    outdir = Path(outdir)
    rows, histograms = [], {}
    for number, cell in enumerate(chosen, start=1):
        cell_rows, meshes = mesh_cell(cell, spacing=spacing, edge_length_um=edge_length_um)
        for row in cell_rows:
            part = str(row["part"])
            if part in meshes:
                stem = Path(cell.kind) / f"{_file_stem(cell.name)}_{part}"
                for suffix in formats:
                    write_mesh(meshes[part], outdir / stem.with_suffix(f".{suffix}"))
                row["path"] = stem.as_posix()
                key = (cell.kind, part)
                histograms[key] = histograms.get(key, 0) + angle_histogram(triangle_angles(meshes[part]).ravel())
            rows.append(row)
        log.info("meshed %s %s (%d of %d)", cell.kind, cell.name, number, len(chosen))
    quality = pd.DataFrame(rows).reindex(columns=list(QUALITY_COLUMNS))
    quality["path"] = quality["path"].fillna("")
    edges = np.arange(0, 180, ANGLE_BIN_DEG)
    angles = pd.DataFrame([{"kind": kind, "part": part, "bin_start_deg": start, "bin_end_deg": start + ANGLE_BIN_DEG,
                            "triangle_angles": int(count)}
                           for (kind, part), counts in histograms.items() for start, count in zip(edges, counts)],
                          columns=["kind", "part", "bin_start_deg", "bin_end_deg", "triangle_angles"])
    return quality, angles
