"""Surface meshes: known answers on ellipsoids, the synthetic colony's true volumes, and the files a simulator reads."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import trimesh

from statcell import crop, geometry
from statcell.analysis import meshes
from statcell.config import ConfigError, check_workflow_config, validate_config

DEFAULT_CROP = crop.CropSettings.from_config(validate_config({})["crop"])


def _ellipsoid(semi_axes_um: tuple[float, float, float], voxel_um: float, *,
               centre_um: tuple[float, float, float] | None = None,
               shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Mask ``(Z, Y, X)`` of an ellipsoid with semi-axes ``(z, y, x)`` µm, off the voxel grid by a fraction."""
    if shape is None:
        shape = tuple(int(2 * semi / voxel_um) + 6 for semi in semi_axes_um)
    if centre_um is None:
        centre_um = tuple((n - 1) / 2 * voxel_um + 0.13 * voxel_um for n in shape)
    grids = np.meshgrid(*[np.arange(n) * voxel_um for n in shape], indexing="ij")
    return sum(((grid - centre) / semi) ** 2 for grid, centre, semi in zip(grids, centre_um, semi_axes_um)) <= 1


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Knud Thomsen's approximation of an ellipsoid's area (error under 1.1%, exact for a sphere)."""
    p = 1.6075
    return 4 * math.pi * ((a**p * b**p + a**p * c**p + b**p * c**p) / 3) ** (1 / p)


@pytest.mark.parametrize(("semi_axes_um", "voxel_um"), [((4.0, 5.0, 6.0), 0.8), ((5.0, 7.0, 10.0), 0.8),
                                                        ((6.0, 8.0, 12.0), 0.4), ((2.5, 3.0, 4.0), 0.8)])
def test_an_ellipsoids_mesh_has_its_volume_and_area_within_2_percent(semi_axes_um, voxel_um):
    mask = _ellipsoid(semi_axes_um, voxel_um)
    mesh = meshes.surface_mesh(geometry.mask_surface(mask, spacing=(voxel_um,) * 3))
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
    assert mesh.volume > 0  # normals point out
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * np.prod(semi_axes_um), rel=0.02)
    assert mesh.area == pytest.approx(_ellipsoid_area(*semi_axes_um), rel=0.02)
    # the mesh's frame is (x, y, z) µm: its extent along x is the long axis
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert extent == pytest.approx(2 * np.array(semi_axes_um[::-1]), abs=1.5 * voxel_um)


def test_the_surface_keeps_the_voxel_volume_where_the_plain_half_level_shrinks_it():
    mask = _ellipsoid((2.5, 3.0, 4.0), 0.8)
    surface = geometry.mask_surface(mask, spacing=(0.8,) * 3)
    voxel_volume = mask.sum() * 0.8**3
    assert geometry.enclosed_volume(surface.vertices, surface.faces) == pytest.approx(voxel_volume, rel=2e-3)
    assert surface.level < 0.45  # a small curved body needs a level below the half of a plain smoothing


def test_a_mask_touching_its_border_still_gives_a_closed_surface_and_thin_masks_keep_their_volume():
    full = np.ones((6, 8, 10), bool)
    mesh = meshes.surface_mesh(geometry.mask_surface(full, spacing=(1.0, 1.0, 1.0)))
    assert mesh.is_watertight and mesh.volume == pytest.approx(480, rel=2e-3)
    line = np.zeros((5, 5, 20), bool)
    line[2, 2, 3:17] = True  # one voxel wide, like a microtubule at 0.8 µm voxels
    surface = geometry.mask_surface(line, spacing=(0.8,) * 3)
    assert geometry.enclosed_volume(surface.vertices, surface.faces) == pytest.approx(14 * 0.8**3, rel=2e-3)
    with pytest.raises(ValueError, match="empty"):
        geometry.mask_surface(np.zeros((4, 4, 4), bool), spacing=(1.0,) * 3)


def test_a_ring_has_euler_number_0_and_two_balls_are_two_bodies():
    z, y, x = np.meshgrid(np.arange(16) - 7.5, np.arange(40) - 19.5, np.arange(40) - 19.5, indexing="ij")
    ring = (np.hypot(y, x) - 12) ** 2 + z**2 <= 16
    ring_mesh = meshes.surface_mesh(geometry.mask_surface(ring, spacing=(1.0,) * 3))
    assert ring_mesh.is_watertight and ring_mesh.euler_number == 0
    balls = (y**2 + (x - 10) ** 2 + z**2 <= 25) | (y**2 + (x + 10) ** 2 + z**2 <= 25)
    quality = meshes.mesh_quality(meshes.surface_mesh(geometry.mask_surface(balls, spacing=(1.0,) * 3)),
                                  voxel_volume_um3=float(balls.sum()))
    assert quality["bodies"] == 2 and quality["euler_number"] == 4 and quality["watertight"]
    assert quality["volume_ratio"] == pytest.approx(1.0, abs=2e-3)
    shell = (y**2 + x**2 + z**2 <= 49) & (y**2 + x**2 + z**2 > 16)  # a hollow ball: the cavity is not filled
    quality = meshes.mesh_quality(meshes.surface_mesh(geometry.mask_surface(shell, spacing=(1.0,) * 3)),
                                  voxel_volume_um3=float(shell.sum()))
    assert quality["bodies"] == 2 and quality["euler_number"] == 4 and quality["watertight"]
    assert quality["volume_ratio"] == pytest.approx(1.0, abs=2e-3)


def _shapes_to_remesh() -> dict[str, tuple[np.ndarray, float]]:
    """Masks with slivers in their traced surfaces, and their voxel size: curved, holed, several, hollow, thin."""
    z, y, x = np.meshgrid(np.arange(16) - 7.5, np.arange(40) - 19.5, np.arange(40) - 19.5, indexing="ij")
    line = np.zeros((5, 5, 20), bool)
    line[2, 2, 3:17] = True
    return {"ellipsoid": (_ellipsoid((5.0, 7.0, 12.0), 0.8), 0.8),
            "ring": ((np.hypot(y, x) - 12) ** 2 + z**2 <= 16, 1.0),
            "two balls": ((y**2 + (x - 10) ** 2 + z**2 <= 25) | (y**2 + (x + 10) ** 2 + z**2 <= 25), 1.0),
            "hollow ball": ((y**2 + x**2 + z**2 <= 49) & (y**2 + x**2 + z**2 > 16), 1.0),
            "one-voxel line": (line, 0.8)}


@pytest.mark.parametrize("name", list(_shapes_to_remesh()))
def test_remeshing_leaves_no_sliver_and_keeps_each_surfaces_topology_volume_and_area(name):
    mask, voxel_um = _shapes_to_remesh()[name]
    traced = meshes.surface_mesh(geometry.mask_surface(mask, spacing=(voxel_um,) * 3))
    assert meshes.triangle_angles(traced).min() < 10  # marching cubes' slivers
    remeshed, count, note = meshes.remesh_isotropic(traced, edge_length_um=voxel_um)
    assert note == "" and count == traced.body_count
    assert meshes.triangle_angles(remeshed).min() > 25
    assert remeshed.is_watertight and remeshed.is_winding_consistent
    assert (remeshed.body_count, remeshed.euler_number) == (traced.body_count, traced.euler_number)
    assert remeshed.volume == pytest.approx(traced.volume, rel=0.01)
    assert remeshed.area == pytest.approx(traced.area, rel=meshes.REMESH_TOLERANCE)
    # within a fifth of a voxel of the traced extent; a one-voxel-wide line's rounded ends come in by half a voxel
    assert remeshed.bounds == pytest.approx(traced.bounds, abs=(0.6 if name == "one-voxel line" else 0.2) * voxel_um)
    assert np.median(remeshed.edges_unique_length) == pytest.approx(voxel_um, rel=0.3)


def test_a_surface_that_remeshing_would_change_is_written_as_traced_and_the_note_says_why():
    mask, voxel_um = _shapes_to_remesh()["two balls"]
    traced = meshes.surface_mesh(geometry.mask_surface(mask, spacing=(voxel_um,) * 3))
    kept, count, note = meshes.remesh_isotropic(traced, edge_length_um=12.0)  # edges of the balls' diameter
    assert kept is traced and count == 0
    assert note.startswith("2 of 2 surfaces written as traced, as remeshing changed them (at 6 µm edges, after 12): "
                           "area +")
    with pytest.raises(ValueError, match="edge length must be > 0"):
        meshes.remesh_isotropic(traced, edge_length_um=0.0)


def _sliver_ball(angle_deg: float) -> trimesh.Trimesh:
    """A closed ball whose smallest triangle angle is about ``angle_deg`` (one vertex pushed towards its neighbour)."""
    ball = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    if angle_deg >= meshes.triangle_angles(ball).min():
        return ball
    vertices = ball.vertices.copy()
    neighbour = ball.vertex_neighbors[0][0]
    for fraction in np.linspace(0.0, 0.95, 400):
        vertices[0] = ball.vertices[0] + fraction * (ball.vertices[neighbour] - ball.vertices[0])
        moved = trimesh.Trimesh(vertices=vertices, faces=ball.faces, process=False)
        if meshes.triangle_angles(moved).min() <= angle_deg:
            return moved
    raise AssertionError("no sliver made")


@pytest.mark.parametrize(("full_edge_angle", "half_edge_angle", "kept_edge"),
                         [(11.0, 29.0, "half"), (35.0, 29.0, "full"), (15.0, 11.0, "full"), (11.0, 15.0, "half")])
def test_a_remesh_under_the_angle_bar_is_tried_at_half_the_edge_and_the_wider_angled_one_kept(
        monkeypatch, full_edge_angle, half_edge_angle, kept_edge):
    traced = trimesh.creation.icosphere(subdivisions=3, radius=3.0)
    remeshes = {1.0: _sliver_ball(full_edge_angle), 0.5: _sliver_ball(half_edge_angle)}
    tried = []

    def remesh(surface, *, edge_length_um, iterations, tolerance):
        tried.append(edge_length_um)
        return remeshes[edge_length_um], ""

    monkeypatch.setattr(meshes, "_remesh_surface", remesh)
    remeshed, count, note = meshes.remesh_isotropic(traced, edge_length_um=1.0)
    assert remeshed is remeshes[1.0 if kept_edge == "full" else 0.5] and count == 1 and note == ""
    assert tried == ([1.0] if full_edge_angle >= meshes.GOOD_ANGLE_DEG else [1.0, 0.5])


def test_the_remeshing_edge_is_the_voxel_size_unless_set_and_0_turns_it_off():
    section = validate_config({})["meshes"]
    assert section["edge_length_um"] == "auto"
    assert meshes.MeshSettings.from_section(section).edge_length((0.29, 0.108, 0.108)) == 0.108
    assert meshes.MeshSettings.from_section({**section, "edge_length_um": 0.5}).edge_length((0.8,) * 3) == 0.5
    assert meshes.MeshSettings.from_section({**section, "edge_length_um": 0}).edge_length((0.8,) * 3) == 0.0
    check_workflow_config(validate_config({"meshes": {"edge_length_um": 0.08}}))
    with pytest.raises(ConfigError, match="'meshes.edge_length_um' is 0.05 µm, under 0.1 of the crop's voxel .*"
                                          "'crop.voxel_size_um', 0.8 µm.*256 times.*at least 0.08, or to auto"):
        check_workflow_config(validate_config({"meshes": {"edge_length_um": 0.05}}))


def test_the_nucleus_mesh_lies_inside_the_cell_mesh_and_one_poking_out_does_not():
    shape = (24, 30, 40)
    cell = _ellipsoid((8.0, 10.0, 14.0), 0.8, shape=shape, centre_um=(9.5, 12.0, 16.0))
    inner = _ellipsoid((4.0, 5.0, 6.0), 0.8, shape=shape, centre_um=(9.5, 12.0, 16.0))
    outer = _ellipsoid((4.0, 5.0, 6.0), 0.8, shape=shape, centre_um=(9.5, 12.0, 27.0))  # past the cell's x end
    spacing = (0.8,) * 3
    cell_surface = geometry.mask_surface(cell, spacing=spacing)
    inside = geometry.points_inside(geometry.mask_surface(inner, spacing=spacing).vertices, cell, cell_surface,
                                    spacing=spacing)
    assert inside.all()
    poking = geometry.points_inside(geometry.mask_surface(outer, spacing=spacing).vertices, cell, cell_surface,
                                    spacing=spacing)
    assert 0.2 < poking.mean() < 0.9
    # exported, the part poking out says so in its quality row; the one inside says nothing
    masks = {"cell": cell, "nucleus": outer, "structure": inner}
    rows, _ = meshes.mesh_cell(meshes.CellMasks(kind="generated", name="c", masks=masks), spacing=spacing,
                               edge_length_um=0.0)
    notes = {row["part"]: row["note"] for row in rows}
    assert notes["cell"] == notes["structure"] == ""
    assert re.fullmatch(r"\d+\.\d% of its vertices outside the cell's surface", notes["nucleus"])


def test_synthetic_cells_meshes_have_their_true_volumes_within_5_percent(tiny_fovs, tiny_settings):
    """The true cell and nucleus masks, cropped by the pipeline's code (resampled, turned, centred) at 0.4 µm voxels,
    then meshed. (At the default 0.8 µm a tiny colony's nucleus is 20 to 200 voxels, and resampling it alone moves
    its volume by up to 10%.)"""
    settings = dataclasses.replace(DEFAULT_CROP, voxel_size_um=DEFAULT_CROP.voxel_size_um / 2,
                                   shape=tuple(2 * n for n in DEFAULT_CROP.shape))
    rows = []
    for fov_id in ("golgi_00", "nucleoli_00"):
        fov = tiny_fovs[fov_id]
        crops, table = crop.crop_cells(fov.image.astype(np.float32), fov.cell_labels.astype(np.int32),
                                       fov.nucleus_labels.astype(np.int32), spacing=tiny_settings.pixel_size_um,
                                       settings=settings, truth_labels=fov.cell_labels)
        accepted = table[(table["reject_reason"] == "") & (table["fraction_outside_crop"] < 0.005)]
        truth = fov.cells.set_index("label")
        for row in accepted.itertuples():
            voxel = (settings.voxel_size_um,) * 3
            for part, channel in (("cell", 3), ("nucleus", 4)):
                mesh = meshes.surface_mesh(geometry.mask_surface(crops[row.crop_index, channel] > 0, spacing=voxel))
                assert mesh.is_watertight
                rows.append({"part": part, "mesh": mesh.volume, "stage": truth.loc[row.truth_label, "mitotic_stage"],
                             "truth": truth.loc[row.truth_label, f"{part}_volume_um3"]})
    volumes = pd.DataFrame(rows)
    assert len(volumes) >= 10
    volumes["error"] = (volumes["mesh"] / volumes["truth"] - 1).abs()
    # A metaphase plate is about 1 µm thick: resampled to 0.4 µm it keeps its volume only within 10%.
    plates = (volumes["part"] == "nucleus") & (volumes["stage"] == "prometaphase_metaphase")
    assert volumes.loc[~plates, "error"].max() < 0.05, volumes.sort_values("error").to_string()
    assert volumes.loc[plates, "error"].max() < 0.1, volumes.sort_values("error").to_string()


def _walks(images: np.ndarray) -> dict[str, np.ndarray]:
    return {"images": images, "dimension": np.array([7, 3]), "sd_offsets": np.array([-2.0, 0.0, 2.0])}


def test_export_writes_every_kind_in_each_format_at_physical_scale(tmp_path):
    spacing = (0.8, 0.8, 0.8)
    shape = (20, 24, 32)
    centre = (7.6, 9.2, 12.4)
    cell = _ellipsoid((6.0, 7.0, 10.0), 0.8, shape=shape, centre_um=centre).astype(np.float32)
    nucleus = _ellipsoid((3.0, 3.5, 4.0), 0.8, shape=shape, centre_um=centre).astype(np.float32)
    structure = _ellipsoid((1.5, 1.5, 2.0), 0.8, shape=shape, centre_um=(11.0, 9.2, 12.4)).astype(np.float32)
    membrane = cell - _ellipsoid((5.2, 6.2, 9.2), 0.8, shape=shape, centre_um=centre)  # a shell, as a decoder's
    decoded = np.stack([membrane, nucleus, structure])
    real = np.stack([structure, cell, nucleus])[None]
    cells = pd.DataFrame({"cell_id": ["main/golgi_00/4"], "structure": ["golgi"],
                          "cell_surface_area_um2": [_ellipsoid_area(6.0, 7.0, 10.0)],
                          "nucleus_surface_area_um2": [_ellipsoid_area(3.0, 3.5, 4.0)]})
    settings = meshes.MeshSettings(cells=1, generated=1, dimensions=1, formats=("obj", "stl", "ply"))
    chosen = meshes.cells_to_mesh(real, cells, reconstructions=decoded[None], prior=decoded[None, :2].repeat(2, 0),
                                  walks=_walks(np.repeat(decoded[None, None, :2], 2, 0).repeat(3, 1)),
                                  spacing=spacing, settings=settings)
    assert [(cell.kind, cell.name) for cell in chosen] == [
        ("real", "main/golgi_00/4"), ("reconstruction", "main/golgi_00/4"), ("generated", "prior_00"),
        ("representative", "mean"), ("representative", "dim07_minus2sd"), ("representative", "dim07_plus2sd")]
    quality, angles = meshes.export_meshes(chosen, spacing=spacing, formats=settings.formats, outdir=tmp_path,
                                           edge_length_um=settings.edge_length(spacing))

    assert list(quality.columns) == list(meshes.QUALITY_COLUMNS)
    assert len(quality) == 3 + 3 + 2 * 4 and (quality["note"] == "").all()
    assert quality["watertight"].all() and (quality["euler_number"] == 2).all()
    assert (quality["remeshed_surfaces"] == quality["bodies"]).all() and (quality["min_angle_deg"] > 25).all()
    assert quality["volume_ratio"].to_numpy() == pytest.approx(1.0, abs=5e-3)
    real_rows = quality[quality["kind"] == "real"].set_index("part")
    # against the analytic areas standing in for the cropping stage's measurements (the nucleus is 4 to 5 voxels)
    assert real_rows.loc[["cell", "nucleus"], "area_ratio"].to_numpy() == pytest.approx(1.0, abs=0.03)
    assert (quality.loc[quality["part"] != "cell", "inside_cell_fraction"] == 1.0).all()
    assert (angles.groupby(["kind", "part"])["triangle_angles"].sum()
            == 3 * quality.groupby(["kind", "part"])["faces"].sum()).all()

    # the files open in trimesh as a user's simulator script would, in µm
    for path in quality["path"]:
        loaded = [trimesh.load(tmp_path / f"{path}.{suffix}", force="mesh") for suffix in settings.formats]
        assert all(mesh.is_watertight for mesh in loaded)
        assert loaded[0].volume == pytest.approx(loaded[1].volume, rel=1e-4) == pytest.approx(loaded[2].volume,
                                                                                              rel=1e-4)
    cell_mesh = trimesh.load(tmp_path / "real" / "main-golgi_00-4_cell.stl")
    assert cell_mesh.bounds.mean(axis=0) == pytest.approx(np.array(centre[::-1]), abs=0.5)  # (x, y, z) µm
    assert cell_mesh.bounds[1] - cell_mesh.bounds[0] == pytest.approx([20.0, 14.0, 12.0], abs=1.2)


def test_asking_for_more_meshes_than_the_run_has_meshes_what_it_has_and_says_which_key_limits_it(caplog):
    cell = _ellipsoid((4.0, 4.0, 5.0), 0.8, shape=(12, 12, 16)).astype(np.float32)
    decoded = np.stack([cell, cell * 0.5])
    settings = meshes.MeshSettings(cells=0, generated=5, dimensions=3, formats=("ply",))
    chosen = meshes.cells_to_mesh(np.zeros((0, 3, 12, 12, 16)), pd.DataFrame({"cell_id": [], "structure": []}),
                                  reconstructions=np.zeros((0, 3, 12, 12, 16)), prior=decoded[None].repeat(2, 0),
                                  walks=_walks(decoded[None, None].repeat(2, 0).repeat(3, 1)),
                                  spacing=(0.8,) * 3, settings=settings)
    assert [cell.kind for cell in chosen].count("generated") == 2
    assert [cell.kind for cell in chosen].count("representative") == 1 + 2 * 2
    assert "meshes.generated is 5, but the run has 2 (config key 'analysis.generated_cells'): meshing 2" in caplog.text
    assert "meshes.dimensions is 3, but the run has 2 (config key 'analysis.walk_dimensions'): meshing 2" in caplog.text


def test_export_names_an_empty_part_and_rejects_an_unknown_format(tmp_path):
    blank = meshes.CellMasks(kind="real", name="c1", masks={"cell": _ellipsoid((3.0, 3.0, 3.0), 1.0),
                                                            "nucleus": np.zeros((12, 12, 12), bool)})
    quality, _ = meshes.export_meshes([blank], spacing=(1.0,) * 3, formats=("ply",), outdir=tmp_path)
    assert quality.set_index("part").loc["nucleus", "note"] == "empty nucleus mask: nothing to mesh"
    assert quality.set_index("part").loc["nucleus", "path"] == ""
    assert sorted(path.name for path in (tmp_path / "real").iterdir()) == ["c1_cell.ply"]
    assert quality.set_index("part").loc["cell", "remeshed_surfaces"] == 0  # edge_length_um 0: as traced
    with pytest.raises(ValueError, match="unknown mesh formats \\['vtk'\\]"):
        meshes.export_meshes([blank], spacing=(1.0,) * 3, formats=("vtk",), outdir=tmp_path)
