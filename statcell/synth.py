"""Synthetic hiPSC colony: raw 3-channel 3D fields of view with ground truth.

Each field of view (FOV) is a packed monolayer of columnar cells imaged like spinning-disk confocal data: channel 0 is
a membrane dye, channel 1 a DNA dye, channel 2 one tagged structure (one cell line per FOV, as in the Allen Cell
Collection). The generator works in physical units on a canvas one cell spacing larger than the FOV on every side, so
cells at the FOV's border are cut as a microscope cuts them.

Geometry
    Cell footprints are a power (weighted Voronoi) diagram of jittered hexagonal-lattice centres, so neighbours touch
    and areas vary. Each cell is a column from the coverslip up to a domed apical surface; smaller cells are taller.
    Nuclei are irregular ellipsoids aligned with the footprint's major axis. Mitotic cells (prophase to telophase,
    the paper's four annotation classes) round up and grow taller, their DNA condenses, the nuclear envelope and
    the nucleoli disperse; anaphase/telophase cells are small newborn daughters with compact nuclei.

Structures
    Each follows its localization rule: plasma membrane (cell surface), nuclear envelope (shell of the nucleus),
    nucleoli (blobs inside the nucleus over a dim nucleoplasmic pool, gone in mitosis), mitochondria (cytoplasmic
    tubes, never in the nucleus), microtubules (fibres from the centrosome through the cytoplasm; a spindle in
    mitosis), Golgi (compact, apical to the nucleus; unlinked into scattered stacks in late G2 and in mitosis),
    tight junctions (apical ring on the lateral walls), matrix
    adhesions (basal puncta) and the five controls of the paper. Paclitaxel bundles microtubules into bright
    cortical rings; brefeldin A disperses the Golgi of most cells; neither changes cell shape or tight junctions.

Optics and camera
    Clean signals are blurred by an anisotropic Gaussian PSF, converted to photons with per-FOV brightness, given
    Poisson shot noise, a background, a camera offset and read noise, and stored as uint16.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy  # scipy.ndimage loads on first use: the workflow's parse plans FOVs and draws none

from statcell import io
from statcell.seeding import numpy_stream
from statcell.vocabulary import DRUG_DATASET, MAIN_DATASET, REAL_STRUCTURES

log = logging.getLogger(__name__)

_MITOTIC_STAGE_WEIGHTS = {"prophase": 0.3, "early_prometaphase": 0.15, "prometaphase_metaphase": 0.3,
                          "anaphase_telophase": 0.25}
#: Brightness of the nucleolar marker's nucleoplasmic pool, relative to the nucleoli before blurring.
NUCLEOLAR_POOL = 0.35
#: Fraction of interphase cells in late G2, whose Golgi ribbon has unlinked into stacks scattered through the cytoplasm
#: (the "Golgi mitotic checkpoint"): natural Golgi dispersal that owes nothing to the cell's shape.
GOLGI_G2_UNLINKED = 0.15
CHANNEL_NAMES: tuple[str, str] = ("membrane", "dna")
LABEL_CHANNEL_NAMES: tuple[str, str] = ("cell_labels", "nucleus_labels")

#: Thickness (µm) of the apical band that holds tight junctions.
TIGHT_JUNCTION_BAND_UM = 1.0
#: Range of the brightness of the junction marker's cytoplasmic pool, relative to the junctions. Untreated cells vary
#: within it, nearly all close to its middle (normal, SD :data:`TIGHT_JUNCTION_POOL_SD`) and a few
#: (:data:`TIGHT_JUNCTION_POOL_EVEN`) evenly over all of it, so the models see the whole range in the colony; paclitaxel
#: puts each cell's pool at either end of the range (within :data:`TIGHT_JUNCTION_POOL_ENDS` of it): the same mean,
#: about 4 times the spread (a drug effect on the spread alone, which the covariance-spectrum test must find and the
#: centroid test must not).
TIGHT_JUNCTION_POOL = (0.0, 0.15)
TIGHT_JUNCTION_POOL_SD = 0.0075
TIGHT_JUNCTION_POOL_EVEN = 0.1
TIGHT_JUNCTION_POOL_ENDS = 0.1
#: Height (µm) above the coverslip that holds matrix adhesions.
ADHESION_BAND_UM = 0.8


# ----------------------------------------------------------------------------------------------------------------------
# Settings and plan
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSettings:
    """The ``synthetic`` section of the configuration (see the schema for each field's meaning)."""

    seed: int
    structures: tuple[str, ...]
    fovs_per_structure: int
    drug_structures: tuple[str, ...]
    drug_treatments: tuple[str, ...]
    drug_concentration_um: float
    drug_fovs_per_condition: int
    brefeldin_responder_fraction: float
    fov_size_um: tuple[float, float, float]
    pixel_size_um: tuple[float, float, float]
    cell_spacing_um: float
    cell_height_um: float
    mitotic_fraction: float
    psf_sigma_um: tuple[float, float]
    offset_adu: float
    background_photons: float
    peak_photons: float
    read_noise_adu: float

    @classmethod
    def from_config(cls, section: dict) -> SynthSettings:
        """Build settings from a validated ``synthetic`` config section.

        Parameters
        ----------
        section : dict
            ``config["synthetic"]`` after :func:`statcell.config.validate_config`.
        """
        size, pixel, psf, camera = (section[key] for key in ("fov_size_um", "pixel_size_um", "psf_sigma_um", "camera"))
        return cls(
            seed=section["seed"],
            structures=tuple(section["structures"]),
            fovs_per_structure=section["fovs_per_structure"],
            drug_structures=tuple(section["drug_structures"]),
            drug_treatments=tuple(section["drug_treatments"]),
            drug_concentration_um=section["drug_concentration_um"],
            drug_fovs_per_condition=section["drug_fovs_per_condition"],
            brefeldin_responder_fraction=section["brefeldin_responder_fraction"],
            fov_size_um=(size["z"], size["y"], size["x"]),
            pixel_size_um=(pixel["z"], pixel["y"], pixel["x"]),
            cell_spacing_um=section["cell_spacing_um"],
            cell_height_um=section["cell_height_um"],
            mitotic_fraction=section["mitotic_fraction"],
            psf_sigma_um=(psf["z"], psf["xy"]),
            offset_adu=camera["offset_adu"],
            background_photons=camera["background_photons"],
            peak_photons=camera["peak_photons"],
            read_noise_adu=camera["read_noise_adu"],
        )

    @property
    def fov_shape(self) -> tuple[int, int, int]:
        """FOV size in voxels ``(Z, Y, X)``."""
        return tuple(max(1, round(s / p)) for s, p in zip(self.fov_size_um, self.pixel_size_um))  # type: ignore


@dataclass(frozen=True)
class FovPlan:
    """What one synthetic FOV shows.

    Attributes
    ----------
    fov_id : str
        Unique name, e.g. ``golgi_02`` or ``paclitaxel_microtubules_00``.
    dataset : str
        ``"main"`` (training colony) or ``"drugs"`` (perturbation set).
    structure : str
        The tagged structure or control.
    drug : str
        ``""`` for the training colony, else the treatment.
    concentration_um : float
        Drug concentration (0 for vehicle and untreated).
    """

    fov_id: str
    dataset: str
    structure: str
    drug: str = ""
    concentration_um: float = 0.0


def plan_fovs(settings: SynthSettings) -> list[FovPlan]:
    """List the FOVs a configuration generates, without generating them.

    Parameters
    ----------
    settings : SynthSettings
        The synthetic-colony settings.

    Returns
    -------
    list of FovPlan
        Training FOVs first, then the drug set.
    """
    plans = [
        FovPlan(f"{structure}_{index:02d}", MAIN_DATASET, structure)
        for structure in settings.structures
        for index in range(settings.fovs_per_structure)
    ]
    for treatment in settings.drug_treatments:
        concentration = 0.0 if treatment == "vehicle" else settings.drug_concentration_um
        plans += [
            FovPlan(f"{treatment}_{structure}_{index:02d}", DRUG_DATASET, structure, treatment, concentration)
            for structure in settings.drug_structures
            for index in range(settings.drug_fovs_per_condition)
        ]
    return plans


def fov_rng(seed: int, fov_id: str) -> np.random.Generator:
    """Random generator of one FOV, fixed by the seed and the FOV's name (independent of the other FOVs).

    Parameters
    ----------
    seed : int
        The configuration's seed.
    fov_id : str
        The FOV's name.
    """
    return numpy_stream(seed, fov_id)


# ----------------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Cell:
    label: int
    stage: str
    footprint: tuple[slice, slice]  # (y, x) bounding box on the canvas
    height_um: float = 0.0
    dome: float = 0.0
    centre_yx_um: np.ndarray = field(default_factory=lambda: np.zeros(2))
    major_axis_yx: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    radius_um: float = 0.0
    nucleus_centre_um: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nucleus_semi_axes_um: np.ndarray = field(default_factory=lambda: np.ones(3))

    @property
    def is_mitotic(self) -> bool:
        return self.stage != "interphase"

    @property
    def is_rounded(self) -> bool:
        return self.stage in ("early_prometaphase", "prometaphase_metaphase")

    @property
    def has_nuclear_envelope(self) -> bool:
        return self.stage in ("interphase", "prophase", "anaphase_telophase")


@dataclass
class _Colony:
    """Geometry of a canvas: 2D footprints, apical surface, 3D cell and nucleus labels (canvas voxels)."""

    spacing: tuple[float, float, float]
    base_um: float
    labels2d: np.ndarray  # (Y, X) int32
    radial: np.ndarray  # (Y, X) 0 at a cell's centre, 1 at its wall
    wall2d: np.ndarray  # (Y, X) bool, pixels next to another cell or a gap
    top_um: np.ndarray  # (Y, X) apical surface height (µm); 0 outside cells
    cells3d: np.ndarray  # (Z, Y, X) int32
    nuclei3d: np.ndarray  # (Z, Y, X) int32
    nucleoli3d: np.ndarray  # (Z, Y, X) bool
    cells: dict[int, _Cell]

    @property
    def z_um(self) -> np.ndarray:
        """Centre height (µm) of every z-slice."""
        return (np.arange(self.cells3d.shape[0]) + 0.5) * self.spacing[0]

    @functools.cached_property
    def cytoplasm(self) -> np.ndarray:
        """Voxels inside a cell and outside its nucleus (computed once; do not modify)."""
        return (self.cells3d > 0) & (self.nuclei3d == 0)

    def per_cell(self, values: dict[int, float], labels: np.ndarray) -> np.ndarray:
        """Map a per-cell value onto a label image (0 where there is no cell)."""
        lookup = np.zeros(int(labels.max()) + 1, dtype=np.float32)
        for label, value in values.items():
            if label < lookup.size:
                lookup[label] = value
        return lookup[labels]


def _hex_centres(extent_um: tuple[float, float], spacing_um: float, rng: np.random.Generator) -> np.ndarray:
    """Jittered hexagonal lattice covering a ``(height, width)`` area (µm); returns ``(N, 2)`` y, x."""
    row_step = spacing_um * math.sqrt(3) / 2
    rows = np.arange(-0.5, extent_um[0] / row_step + 1.0) * row_step
    centres = []
    for index, y in enumerate(rows):
        xs = np.arange(-0.5, extent_um[1] / spacing_um + 1.0) * spacing_um + (spacing_um / 2) * (index % 2)
        centres.append(np.column_stack([np.full_like(xs, y), xs]))
    points = np.concatenate(centres)
    return points + rng.uniform(-0.22, 0.22, size=points.shape) * spacing_um


def _power_diagram(
    centres_um: np.ndarray, weights_um2: np.ndarray, shape: tuple[int, int], spacing_yx: tuple[float, float]
) -> np.ndarray:
    """Label each pixel with 1 + the index of the centre of least power distance ``|p - c|^2 - w``."""
    ys = (np.arange(shape[0]) + 0.5) * spacing_yx[0]
    xs = (np.arange(shape[1]) + 0.5) * spacing_yx[1]
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for index, ((cy, cx), weight) in enumerate(zip(centres_um, weights_um2)):
        power = ((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2 - weight).astype(np.float32)
        closer = power < best
        best[closer] = power[closer]
        labels[closer] = index + 1
    return labels


def _walls(labels2d: np.ndarray) -> np.ndarray:
    """Pixels of a cell with a 4-neighbour of another label (another cell, a gap or the canvas edge)."""
    padded = np.pad(labels2d, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    wall = np.zeros(labels2d.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        wall |= padded[dy : dy + labels2d.shape[0], dx : dx + labels2d.shape[1]] != centre
    return wall & (labels2d > 0)


def _surfaces(labels: np.ndarray) -> np.ndarray:
    """Voxels of a labelled object with a 6-neighbour of another label (its surface, one voxel thick)."""
    surface = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        lower, upper = (slice(None),) * axis + (slice(None, -1),), (slice(None),) * axis + (slice(1, None),)
        step = labels[upper] != labels[lower]  # between each voxel and its next neighbour along the axis
        surface[lower] |= step
        surface[upper] |= step
    return surface & (labels > 0)


def _radial_coordinate(labels2d: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: distance (µm) to its cell's wall and the radial coordinate r = d_centre / (d_centre + d_wall)."""
    wall = _walls(labels2d) | (labels2d == 0)
    to_wall = scipy.ndimage.distance_transform_edt(~wall, sampling=spacing_yx).astype(np.float32)
    index = np.arange(1, labels2d.max() + 1)
    centroids = np.array(scipy.ndimage.center_of_mass(np.ones_like(labels2d), labels2d, index)).reshape(-1, 2)
    centroids = np.nan_to_num(centroids) * np.asarray(spacing_yx)
    yy, xx = np.indices(labels2d.shape, dtype=np.float32)
    yy = (yy + 0.5) * spacing_yx[0]
    xx = (xx + 0.5) * spacing_yx[1]
    own = np.maximum(labels2d - 1, 0)
    to_centre = np.hypot(yy - centroids[own, 0] - 0.5 * spacing_yx[0], xx - centroids[own, 1] - 0.5 * spacing_yx[1])
    radial = np.where(labels2d > 0, to_centre / np.maximum(to_centre + to_wall, 1e-6), 0).astype(np.float32)
    return to_wall, radial


def _build_colony(settings: SynthSettings, canvas_shape: tuple[int, int, int], rng: np.random.Generator) -> _Colony:
    """Lay out cells, their apical surfaces, nuclei and nucleoli on a canvas."""
    spacing = settings.pixel_size_um
    spacing_yx = spacing[1:]
    extent = (canvas_shape[1] * spacing[1], canvas_shape[2] * spacing[2])
    centres = _hex_centres(extent, settings.cell_spacing_um, rng)
    count = len(centres)
    mitotic = rng.random(count) < settings.mitotic_fraction
    stage_names = list(_MITOTIC_STAGE_WEIGHTS)
    stage_p = np.array(list(_MITOTIC_STAGE_WEIGHTS.values()))
    stages = [str(rng.choice(stage_names, p=stage_p / stage_p.sum())) if m else "interphase" for m in mitotic]
    weights = rng.normal(0.0, 0.12, count) * settings.cell_spacing_um**2
    weights[np.array(stages) == "anaphase_telophase"] -= 0.3 * settings.cell_spacing_um**2  # small daughters
    labels2d = _power_diagram(centres, weights, canvas_shape[1:], spacing_yx)
    areas = np.bincount(labels2d.ravel(), minlength=count + 1)[1:] * spacing_yx[0] * spacing_yx[1]
    keep = areas >= 0.35 * settings.cell_spacing_um**2
    if not keep.all():  # a centre squeezed by heavier neighbours leaves a sliver: remove it, let them fill in
        centres, weights, stages = centres[keep], weights[keep], [s for s, k in zip(stages, keep) if k]
        count = len(centres)
        labels2d = _power_diagram(centres, weights, canvas_shape[1:], spacing_yx)

    # Rounded mitotic cells shrink to a disk around the centre of their inscribed circle.
    to_wall, _ = _radial_coordinate(labels2d, spacing_yx)
    for label in np.unique(labels2d[labels2d > 0]):
        if stages[label - 1] in ("early_prometaphase", "prometaphase_metaphase"):
            inside = labels2d == label
            inscribed = np.unravel_index(np.argmax(np.where(inside, to_wall, -1)), inside.shape)
            radius = 0.95 * to_wall[inscribed]
            yy, xx = np.indices(inside.shape)
            far = np.hypot((yy - inscribed[0]) * spacing_yx[0], (xx - inscribed[1]) * spacing_yx[1]) > radius
            labels2d[inside & far] = 0
    to_wall, radial = _radial_coordinate(labels2d, spacing_yx)

    base_um = 0.8
    stack_top = canvas_shape[0] * spacing[0] - 0.4
    boxes = scipy.ndimage.find_objects(labels2d)
    areas = np.bincount(labels2d.ravel(), minlength=count + 1)[1:] * spacing_yx[0] * spacing_yx[1]
    mean_area = float(np.mean(areas[areas > 0]))
    cells: dict[int, _Cell] = {}
    top_um = np.zeros(labels2d.shape, dtype=np.float32)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        label = index + 1
        cell = _Cell(label=label, stage=stages[index], footprint=box)
        inside = labels2d[box] == label
        stretch = {"interphase": 1.0, "prophase": 1.08, "early_prometaphase": 1.35, "prometaphase_metaphase": 1.4,
                   "anaphase_telophase": 1.05}[cell.stage]
        height = settings.cell_height_um * (mean_area / areas[index]) ** 0.35 * rng.lognormal(0.0, 0.08) * stretch
        cell.height_um = float(min(height, stack_top - base_um))
        cell.dome = 0.9 if cell.is_rounded else float(rng.uniform(0.25, 0.45))
        r = radial[box][inside]
        top_um[box][inside] = base_um + cell.height_um * ((1 - cell.dome) + cell.dome * np.sqrt(1 - r**2))

        yy, xx = np.nonzero(inside)
        coords = np.column_stack([(yy + box[0].start + 0.5) * spacing_yx[0], (xx + box[1].start + 0.5) * spacing_yx[1]])
        cell.centre_yx_um = coords.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(coords.T) + 1e-9 * np.eye(2))
        cell.major_axis_yx = eigenvectors[:, 1]
        cell.radius_um = math.sqrt(areas[index] / math.pi)
        elongation = (eigenvalues[1] / max(eigenvalues[0], 1e-9)) ** 0.25
        scale = 0.62 * cell.radius_um * rng.lognormal(0.0, 0.06)
        semi = np.array([0.3 * cell.height_um, scale * elongation, scale / elongation])  # z, major, minor
        centre_z = base_um + 0.42 * cell.height_um
        if cell.stage == "prophase":
            semi[1:] = semi[1:].mean()
        elif cell.stage == "early_prometaphase":
            semi *= 0.72
        elif cell.stage == "prometaphase_metaphase":  # metaphase plate across the major axis
            semi = np.array([0.5 * cell.radius_um, 1.0, 0.6 * cell.radius_um])
            centre_z = base_um + 0.5 * cell.height_um
        elif cell.stage == "anaphase_telophase":
            semi *= 0.8
        offset = rng.normal(0.0, 0.25, 2)
        cell.nucleus_centre_um = np.array([centre_z, *(cell.centre_yx_um + offset)])
        cell.nucleus_semi_axes_um = semi
        cells[label] = cell

    z_um = (np.arange(canvas_shape[0]) + 0.5) * spacing[0]
    in_column = (z_um[:, None, None] >= base_um) & (z_um[:, None, None] < top_um[None])
    cells3d = np.where(in_column, labels2d[None], 0).astype(np.int32)
    roughness = _smooth_noise(canvas_shape, spacing, 1.2, rng)
    roughness_max = float(roughness.max())
    nuclei3d = np.zeros(canvas_shape, dtype=np.int32)
    nucleoli3d = np.zeros(canvas_shape, dtype=bool)
    for cell in cells.values():
        _place_nucleus(cell, cells3d, nuclei3d, nucleoli3d, to_wall, top_um, roughness, roughness_max, spacing, base_um,
                       rng)
    return _Colony(spacing, base_um, labels2d, radial, _walls(labels2d), top_um, cells3d, nuclei3d, nucleoli3d, cells)


def _smooth_noise(shape: tuple[int, ...], spacing: tuple[float, ...], scale_um: float, rng: np.random.Generator,
                  ) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length about ``scale_um``.

    Drawn on a grid of ``scale_um / 2`` cells and upsampled linearly, which costs far less than filtering white noise
    at full resolution.
    """
    step = [max(1, int(scale_um / 2 / s)) for s in spacing]
    coarse_shape = [math.ceil(n / k) + 1 for n, k in zip(shape, step)]
    coarse = scipy.ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32),
                                           [scale_um / (s * k) for s, k in zip(spacing, step)])
    for axis in reversed(range(len(shape))):  # the last axis first, while the array is small
        coarse = _upsample_linear(coarse, axis, shape[axis], step[axis])
    return (coarse - coarse.mean()) / max(float(coarse.std()), 1e-6)


def _upsample_linear(values: np.ndarray, axis: int, size: int, factor: int) -> np.ndarray:
    """First ``size`` samples along ``axis`` of the linear interpolation of ``values`` at ``1 / factor`` steps."""
    before = (slice(None),) * axis
    if factor > 1:
        lower = np.expand_dims(values[before + (slice(None, -1),)], axis + 1)
        upper = np.expand_dims(values[before + (slice(1, None),)], axis + 1)
        fraction = (np.arange(factor) / factor).astype(values.dtype).reshape((-1,) + (1,) * (values.ndim - axis - 1))
        fine = lower + (upper - lower) * fraction  # sample j between coarse samples i and i + 1: (i, j)
        values = fine.reshape(values.shape[:axis] + (-1,) + values.shape[axis + 1:])
    return values[before + (slice(0, size),)]


def _box_coordinates(box: tuple[slice, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Physical centre coordinates (µm) of the voxels of a box, as broadcastable open grids."""
    grids = np.ogrid[tuple(slice(s.start, s.stop) for s in box)]
    return [(grid + 0.5) * step for grid, step in zip(grids, spacing)]


def _place_nucleus(
    cell: _Cell,
    cells3d: np.ndarray,
    nuclei3d: np.ndarray,
    nucleoli3d: np.ndarray,
    to_wall: np.ndarray,
    top_um: np.ndarray,
    roughness: np.ndarray,
    roughness_max: float,
    spacing: tuple[float, float, float],
    base_um: float,
    rng: np.random.Generator,
) -> None:
    """Draw one cell's nucleus (an irregular ellipsoid kept ≥0.7 µm inside the cell) and its nucleoli."""
    wobble = 0.35 if cell.stage == "early_prometaphase" else 0.12
    # Work in the box of the ellipsoid grown to the largest quadric the roughness allows: it holds every nucleus voxel.
    box = _ellipsoid_box(cell, math.sqrt(1.0 + wobble * max(roughness_max, 0.0)), cells3d.shape[0], spacing)
    z, y, x = _box_coordinates(box, spacing)
    dz, dy, dx = z - cell.nucleus_centre_um[0], y - cell.nucleus_centre_um[1], x - cell.nucleus_centre_um[2]
    major, minor = cell.major_axis_yx, np.array([-cell.major_axis_yx[1], cell.major_axis_yx[0]])
    along, across = dy * major[0] + dx * major[1], dy * minor[0] + dx * minor[1]
    semi = cell.nucleus_semi_axes_um
    quadric = (dz / semi[0]) ** 2 + (along / semi[1]) ** 2 + (across / semi[2]) ** 2
    inside_cell = cells3d[box] == cell.label
    margin_ok = (to_wall[box[1:]][None] >= 0.7) & (z >= base_um + 0.5) & (z <= top_um[box[1:]][None] - 0.7)
    nucleus = (quadric <= 1.0 + wobble * roughness[box]) & inside_cell & margin_ok
    nucleus = scipy.ndimage.binary_opening(nucleus, iterations=1) if nucleus.sum() > 50 else nucleus
    nucleus = _largest_component(nucleus)
    nuclei3d[box][nucleus] = cell.label
    if cell.is_mitotic or not nucleus.any():
        return
    # Nucleoli: 2-4 blobs kept >= 0.5 µm inside the nucleus.
    inner = scipy.ndimage.find_objects(nucleus.astype(np.int8))[0]
    nucleus_box = tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner))
    depth = scipy.ndimage.distance_transform_edt(nucleus[inner], sampling=spacing)
    z, y, x = _box_coordinates(nucleus_box, spacing)
    candidates = np.argwhere(depth > 1.1)
    offset = np.array([b.start for b in nucleus_box])
    for _ in range(int(rng.integers(2, 5)) if len(candidates) else 0):
        centre = _voxel_centres(candidates[rng.integers(len(candidates))] + offset, spacing)
        radius = rng.uniform(0.45, 0.8)
        blob = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
        nucleoli3d[nucleus_box] |= blob & (depth >= 0.5)


def _ellipsoid_box(cell: _Cell, reach: float, depth: int, spacing: tuple[float, float, float],
                   ) -> tuple[slice, ...]:
    """Voxel box of the cell's columns (``depth`` slices) that holds its nucleus ellipsoid scaled by ``reach``."""
    semi, major = cell.nucleus_semi_axes_um, cell.major_axis_yx
    half = reach * np.array([semi[0], math.hypot(semi[1] * major[0], semi[2] * major[1]),
                             math.hypot(semi[1] * major[1], semi[2] * major[0])])
    first = np.floor((cell.nucleus_centre_um - half) / np.asarray(spacing) - 0.5).astype(int)
    last = np.ceil((cell.nucleus_centre_um + half) / np.asarray(spacing) - 0.5).astype(int)
    low = np.array([0, cell.footprint[0].start, cell.footprint[1].start])
    high = np.array([depth, cell.footprint[0].stop, cell.footprint[1].stop])
    start = np.clip(first, low, high)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, np.clip(last + 1, start, high)))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = scipy.ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


# ----------------------------------------------------------------------------------------------------------------------
# Signals (clean, before optics; unit ~ brightest feature)
# ----------------------------------------------------------------------------------------------------------------------


def _cell_factors(colony: _Colony, rng: np.random.Generator, sigma: float) -> dict[int, float]:
    """Per-cell brightness (dye uptake or expression level), log-normal around 1."""
    return {label: float(rng.lognormal(0.0, sigma)) for label in colony.cells}


def _membrane_signal(colony: _Colony, rng: np.random.Generator, *, vesicles: bool) -> np.ndarray:
    """Cell surfaces (lateral and apical 1.0, basal 0.5), times a per-cell dye uptake; optional endocytic vesicles."""
    surface = _surfaces(colony.cells3d)
    basal = colony.z_um < colony.base_um + colony.spacing[0]
    signal = surface * colony.per_cell(_cell_factors(colony, rng, 0.22), colony.cells3d)
    signal[basal] *= 0.5
    if vesicles:
        signal += np.float32(0.03) * (colony.cells3d > 0)
        points = _random_points(colony.cytoplasm & ~surface, 6 * len(colony.cells), rng)
        signal += 0.5 * _splat(points, colony.cells3d.shape, colony.spacing, 0.2) * colony.cytoplasm
    return signal.astype(np.float32)


def _dna_signal(colony: _Colony, rng: np.random.Generator) -> np.ndarray:
    """Chromatin: textured nucleoplasm, darker nucleoli, condensed and brighter in mitosis."""
    # One field for the whole canvas, as before: drawing it per nucleus would be faster but would change every random
    # draw after it (the structure channels), not only the texture.
    texture = _smooth_noise(colony.cells3d.shape, colony.spacing, 0.45, rng)
    signal = colony.cytoplasm * np.float32(0.015)
    density = _cell_factors(colony, rng, 0.12)
    for label, box in enumerate(scipy.ndimage.find_objects(colony.nuclei3d), start=1):
        if box is None:
            continue
        stage = colony.cells[label].stage
        condensed = 1.0 if stage in ("interphase", "anaphase_telophase") else 1.25 if stage == "prophase" else 1.8
        contrast = 0.2 if stage == "interphase" else 0.45
        nucleus = colony.nuclei3d[box] == label
        chromatin = np.float32(0.6 * density[label] * condensed) * np.clip(1 + contrast * texture[box], 0.2, None)
        chromatin[colony.nucleoli3d[box]] *= 0.35
        signal[box][nucleus] = chromatin[nucleus]
    return signal


def _random_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` voxel indices drawn uniformly from a mask (``(count, 3)``)."""
    candidates = np.flatnonzero(mask)
    if count <= 0 or candidates.size == 0:
        return np.empty((0, 3), dtype=int)
    return np.column_stack(np.unravel_index(rng.choice(candidates, size=count), mask.shape))


def _splat(points: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, ...], sigma_um: float) -> np.ndarray:
    """Gaussian blobs (peak ≈ 1) of width ``sigma_um`` at voxel positions.

    Each point adds a copy of the kernel that ``ndimage.gaussian_filter`` would use (truncated at 4 sigma), which for
    the sparse points here costs far less than filtering an impulse volume; mass beyond the volume's edge is dropped.
    """
    sigmas = [sigma_um / s for s in spacing]
    radius = [int(4.0 * s + 0.5) for s in sigmas]
    padded = tuple(n + 2 * r for n, r in zip(shape, radius))
    blobs = np.zeros(math.prod(padded), dtype=np.float32)
    if len(points):
        profiles = [np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2) for s, r in zip(sigmas, radius)]
        peak = math.prod(1 / (math.sqrt(2 * math.pi) * s) if s > 0.5 else 1.0 for s in sigmas)
        kernel = functools.reduce(np.multiply.outer, [profile / profile.sum() for profile in profiles]) / peak
        corners = np.ravel_multi_index(tuple(points.T), padded)  # the kernel of point p spans p .. p + 2r (padded)
        offsets = np.ravel_multi_index(np.indices(kernel.shape).reshape(len(shape), -1), padded)
        np.add.at(blobs, (corners[:, None] + offsets).ravel(), np.tile(kernel.ravel().astype(np.float32), len(points)))
    return blobs.reshape(padded)[tuple(slice(r, r + n) for r, n in zip(radius, shape))]


def _segments(starts_um: np.ndarray, ends_um: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, ...],
              ) -> np.ndarray:
    """Voxel indices along straight segments (``(N, 3)`` µm endpoints), sampled every half voxel, inside the shape."""
    if len(starts_um) == 0:
        return np.empty((0, 3), dtype=int)
    lengths = np.linalg.norm(ends_um - starts_um, axis=1)
    counts = np.maximum(2, (lengths / (0.5 * min(spacing))).astype(int) + 1)
    segment = np.repeat(np.arange(len(counts)), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) / (counts[segment] - 1)
    points_um = starts_um[segment] + t[:, None] * (ends_um - starts_um)[segment]
    points = np.floor(points_um / np.asarray(spacing)).astype(int)
    points = points[np.all((points >= 0) & (points < np.asarray(shape)), axis=1)]
    flat = np.unique(np.ravel_multi_index(tuple(points.T), shape))
    return np.column_stack(np.unravel_index(flat, shape))


def _random_directions(count: int, rng: np.random.Generator, z_scale: float = 1.0) -> np.ndarray:
    vectors = rng.standard_normal((count, 3)) * np.array([z_scale, 1.0, 1.0])
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _cell_mask(colony: _Colony, label: int) -> tuple[tuple[slice, ...], np.ndarray]:
    cell = colony.cells[label]
    box = (slice(0, colony.cells3d.shape[0]), *cell.footprint)
    return box, colony.cells3d[box] == label


def _voxel_centres(points: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    return (points + 0.5) * np.asarray(spacing)


def _nucleus_top_um(colony: _Colony, label: int) -> float:
    box, _ = _cell_mask(colony, label)
    zs = np.nonzero((colony.nuclei3d[box] == label).any(axis=(1, 2)))[0]
    cell = colony.cells[label]
    return float((zs.max() + 1) * colony.spacing[0]) if zs.size else cell.nucleus_centre_um[0]


def _plasma_membrane(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    return _membrane_signal(colony, rng, vesicles=False)


def _nuclear_envelope(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    expression = colony.per_cell(_cell_factors(colony, rng, 0.2), colony.cells3d)
    intact = {label: float(cell.has_nuclear_envelope) for label, cell in colony.cells.items()}
    shell = _surfaces(colony.nuclei3d) * colony.per_cell(intact, colony.nuclei3d)
    dispersed = colony.per_cell({k: 1.0 - v for k, v in intact.items()}, colony.cells3d)
    signal = shell + np.float32(0.04) * (colony.nuclei3d > 0) + 0.15 * dispersed * (colony.cells3d > 0)
    return (signal * expression).astype(np.float32)


def _nucleoli(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    expression = colony.per_cell(_cell_factors(colony, rng, 0.2), colony.cells3d)
    mitotic = colony.per_cell({label: float(cell.is_mitotic) for label, cell in colony.cells.items()}, colony.cells3d)
    # nucleolar proteins also keep a nucleoplasmic pool (as nucleophosmin, the hiPSC nucleolar marker, does): a dim
    # copy of the interphase nucleus around the bright nucleoli; in mitosis they spread through the cell
    pool = np.float32(NUCLEOLAR_POOL) * (colony.nuclei3d > 0) * (1 - mitotic)
    signal = colony.nucleoli3d + pool + 0.05 * mitotic * (colony.cells3d > 0)
    return (signal * expression).astype(np.float32)


def _mitochondria(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    cytoplasm = colony.cytoplasm
    volume = cytoplasm.sum() * float(np.prod(colony.spacing))
    starts = _voxel_centres(_random_points(cytoplasm, int(0.25 * volume), rng), colony.spacing)
    ends = starts + _random_directions(len(starts), rng, 0.4) * rng.uniform(0.3, 2.0, (len(starts), 1))
    tubes = _segments(starts, ends, cytoplasm.shape, colony.spacing)
    signal = _splat(tubes, cytoplasm.shape, colony.spacing, 0.12) * colony.per_cell(
        _cell_factors(colony, rng, 0.2), colony.cells3d)
    return (np.clip(signal, 0, 1.5) * cytoplasm).astype(np.float32)


def _microtubules(colony: _Colony, rng: np.random.Generator, *, drug: str = "", **_: object) -> np.ndarray:
    shape, spacing = colony.cells3d.shape, colony.spacing
    cytoplasm = colony.cytoplasm
    starts, ends = [], []
    for label, cell in colony.cells.items():
        box, inside = _cell_mask(colony, label)
        offset = np.array([b.start for b in box])
        local_cyto = inside & (colony.nuclei3d[box] == 0)
        if cell.is_rounded:  # spindle: two poles along the major axis, fibres to the chromosomes and astral fibres
            poles = [cell.nucleus_centre_um + np.array([0.0, *(side * 0.55 * cell.radius_um * cell.major_axis_yx)])
                     for side in (-1, 1)]
            chromosomes = _voxel_centres(_random_points(colony.nuclei3d[box] == label, 30, rng) + offset, spacing)
            astral = _voxel_centres(_random_points(local_cyto, 16, rng) + offset, spacing)
            for pole in poles:
                starts += [pole] * (len(chromosomes) + len(astral))
                ends += list(chromosomes) + list(astral)
        else:  # interphase array: fibres from the centrosome, above the nucleus, out to the cortex
            centrosome = np.array([min(_nucleus_top_um(colony, label) + 0.6, colony.base_um + cell.height_um - 0.8),
                                   *cell.centre_yx_um])
            targets = _voxel_centres(_random_points(local_cyto, 45, rng) + offset, spacing)
            starts += [centrosome] * len(targets)
            ends += list(centrosome + 1.4 * (targets - centrosome))
    fibres = _segments(np.array(starts), np.array(ends), shape, spacing)
    cells = colony.cells3d > 0
    if drug == "paclitaxel":
        # Stabilized, bundled microtubules: bright cortical rings and a few long chords, little free tubulin.
        rings = np.zeros(shape, dtype=bool)
        z_um = colony.z_um[:, None, None]
        for label, cell in colony.cells.items():
            box, inside = _cell_mask(colony, label)
            radial = colony.radial[cell.footprint][None]
            for _ in range(int(rng.integers(3, 6))):
                r0 = rng.uniform(0.6, 0.9)
                z0 = colony.base_um + rng.uniform(0.25, 0.7) * cell.height_um
                rings[box] |= inside & (np.abs(radial - r0) < 0.05) & (np.abs(z_um[box[0]] - z0) < 0.4)
        bundles = rings & cytoplasm
        signal = np.float32(2.2) * bundles + 0.35 * _splat(fibres, shape, spacing, 0.08) + np.float32(0.04) * cytoplasm
        signal = scipy.ndimage.grey_dilation(signal, size=(1, 2, 2))
    else:
        signal = 0.6 * _splat(fibres, shape, spacing, 0.08) + np.float32(0.12) * cytoplasm
    return (np.clip(signal, 0, 3.0) * cells * (cytoplasm | _rounded_cells(colony))).astype(np.float32)


def _rounded_cells(colony: _Colony) -> np.ndarray:
    """Voxels of cells whose nuclear envelope has broken down (the spindle may cross the former nucleus)."""
    rounded = {label: float(cell.is_rounded) for label, cell in colony.cells.items()}
    return colony.per_cell(rounded, colony.cells3d) > 0


def _golgi(colony: _Colony, rng: np.random.Generator, *, drug: str = "", responders: set[int] | None = None,
           unlinked: set[int] | None = None, **_: object) -> np.ndarray:
    shape, spacing = colony.cells3d.shape, colony.spacing
    cytoplasm = colony.cytoplasm
    starts, ends, haze = [], [], np.zeros(shape, dtype=np.float32)
    scattered = []
    for label, cell in colony.cells.items():
        box, inside = _cell_mask(colony, label)
        offset = np.array([b.start for b in box])
        dispersed = cell.is_mitotic or (drug == "brefeldin_a" and responders is not None and label in responders)
        if dispersed or (unlinked is not None and label in unlinked):  # fragments through the cytoplasm
            scattered.append(_random_points(inside & (colony.nuclei3d[box] == 0), 40, rng) + offset)
            if dispersed:  # plus an ER-like haze: in mitosis, and where brefeldin A has merged the Golgi into the ER
                haze[box] += 0.18 * inside
            continue
        ribbon = np.array([min(_nucleus_top_um(colony, label) + 0.7, colony.base_um + cell.height_um - 0.9),
                           *(cell.nucleus_centre_um[1:] + rng.normal(0.0, 0.8, 2))])
        centres = ribbon + rng.normal(0.0, 1.0, (int(rng.integers(6, 11)), 3)) * np.array([0.35, 1.0, 1.0])
        starts += list(centres)
        ends += list(centres + _random_directions(len(centres), rng, 0.3) * rng.uniform(0.4, 1.1, (len(centres), 1)))
    stacks = _splat(_segments(np.array(starts), np.array(ends), shape, spacing), shape, spacing, 0.18)
    points = np.concatenate(scattered) if scattered else np.empty((0, 3), dtype=int)
    fragments = 0.5 * _splat(points, shape, spacing, 0.15)
    expression = colony.per_cell(_cell_factors(colony, rng, 0.2), colony.cells3d)
    return (np.clip(stacks + fragments + haze, 0, 1.5) * expression * cytoplasm).astype(np.float32)


def tight_junction_pools(labels: Iterable[int], rng: np.random.Generator, *, drug: str = "") -> dict[int, float]:
    """Each cell's brightness of the junction marker's cytoplasmic pool, relative to its junctions.

    Parameters
    ----------
    labels : iterable of int
        The cells' labels.
    rng : numpy.random.Generator
        Random stream of the FOV.
    drug : str
        ``"paclitaxel"`` puts every pool at either end of the range (within :data:`TIGHT_JUNCTION_POOL_ENDS` of it),
        with equal chance; any other value draws the untreated distribution: a normal around the range's middle
        (:data:`TIGHT_JUNCTION_POOL_SD`, clipped to the range), and for :data:`TIGHT_JUNCTION_POOL_EVEN` of the cells an
        even draw over the whole range.

    Returns
    -------
    dict of int to float
        Pool brightness per label, within :data:`TIGHT_JUNCTION_POOL`. Both distributions have the range's middle as
        their mean.

    Examples
    --------
    >>> draws = {drug: np.array(list(tight_junction_pools(range(4000), np.random.default_rng(0), drug=drug).values()))
    ...          for drug in ("vehicle", "paclitaxel")}
    >>> [round(float(draws[drug].mean()), 3) for drug in draws]
    [0.075, 0.075]
    >>> round(float(draws["paclitaxel"].std() / draws["vehicle"].std()), 1)
    4.3
    """
    low, high = TIGHT_JUNCTION_POOL
    end = TIGHT_JUNCTION_POOL_ENDS * (high - low)
    pools = {}
    for label in labels:
        if drug == "paclitaxel":
            offset = rng.uniform(0.0, end)
            pools[label] = low + offset if rng.random() < 0.5 else high - offset
        elif rng.random() < TIGHT_JUNCTION_POOL_EVEN:
            pools[label] = rng.uniform(low, high)
        else:
            pools[label] = float(np.clip(rng.normal(0.5 * (low + high), TIGHT_JUNCTION_POOL_SD), low, high))
    return pools


def _tight_junctions(colony: _Colony, rng: np.random.Generator, *, pools: dict[int, float] | None = None,
                     **_: object) -> np.ndarray:
    """The junction rings over each cell's cytoplasmic pool (``pools``: :func:`tight_junction_pools`, drawn
    untreated here when not given)."""
    z_um, top_um = colony.z_um[:, None, None], colony.top_um[None]
    ring = (colony.cells3d > 0) & colony.wall2d[None] & (z_um >= top_um - TIGHT_JUNCTION_BAND_UM) & (z_um < top_um)
    pool = colony.per_cell(tight_junction_pools(colony.cells, rng) if pools is None else pools, colony.cells3d)
    expression = colony.per_cell(_cell_factors(colony, rng, 0.2), colony.cells3d)
    return (np.maximum(ring, pool * colony.cytoplasm) * expression).astype(np.float32)


def _matrix_adhesions(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    z_um = colony.z_um[:, None, None]
    basal = (colony.cells3d > 0) & (z_um < colony.base_um + ADHESION_BAND_UM)
    periphery = basal & (colony.radial[None] > 0.45)
    area = (colony.labels2d > 0).sum() * colony.spacing[1] * colony.spacing[2]
    starts = _voxel_centres(_random_points(periphery, int(0.08 * area), rng), colony.spacing)
    starts[:, 0] = colony.base_um + 0.2
    directions = _random_directions(len(starts), rng, 0.0)
    points = _segments(starts, starts + 0.7 * directions, basal.shape, colony.spacing)
    signal = _splat(points, basal.shape, colony.spacing, 0.12) * colony.per_cell(
        _cell_factors(colony, rng, 0.2), colony.cells3d)
    return (np.clip(signal, 0, 1.5) * basal).astype(np.float32)


def _noise_control(colony: _Colony, rng: np.random.Generator, **_: object) -> np.ndarray:
    cell = (colony.cells3d > 0) & (colony.nuclei3d == 0)
    nucleus = colony.nuclei3d > 0
    noise = rng.normal(0.3, 0.1, cell.shape) * cell + rng.normal(0.6, 0.15, cell.shape) * nucleus
    return np.clip(noise, 0, None).astype(np.float32)


_RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "plasma_membrane": _plasma_membrane,
    "nuclear_envelope": _nuclear_envelope,
    "nucleoli": _nucleoli,
    "mitochondria": _mitochondria,
    "microtubules": _microtubules,
    "golgi": _golgi,
    "tight_junctions": _tight_junctions,
    "matrix_adhesions": _matrix_adhesions,
    "control_noise": _noise_control,
}


def _random_structure_control(colony: _Colony, rng: np.random.Generator) -> tuple[np.ndarray, dict[int, tuple]]:
    """Each cell gets a real structure's signal from another cell, moved so the two nuclei coincide."""
    labels = sorted(colony.cells)
    donors = {label: int(rng.choice([other for other in labels if other != label])) if len(labels) > 1 else label
              for label in labels}
    kinds = {label: str(rng.choice(REAL_STRUCTURES)) for label in labels}
    rendered = {kind: _RENDERERS[kind](colony, rng) for kind in sorted(set(kinds.values()))}
    signal = np.zeros(colony.cells3d.shape, dtype=np.float32)
    shape = np.asarray(signal.shape)
    for label in labels:
        donor = colony.cells[donors[label]]
        box, inside = _cell_mask(colony, donor.label)
        source = np.where(inside, rendered[kinds[label]][box], 0)
        shift = np.round((colony.cells[label].nucleus_centre_um[1:] - donor.nucleus_centre_um[1:])
                         / np.asarray(colony.spacing[1:])).astype(int)
        start = np.array([0, box[1].start + shift[0], box[2].start + shift[1]])
        lo = np.maximum(start, 0)
        hi = np.minimum(start + np.asarray(source.shape), shape)
        if np.any(hi <= lo):
            continue
        target = tuple(slice(a, b) for a, b in zip(lo, hi))
        cut = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        signal[target] = np.maximum(signal[target], source[cut])
    return signal, {label: (kinds[label], donors[label]) for label in labels}


# ----------------------------------------------------------------------------------------------------------------------
# One FOV
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFov:
    """One generated field of view.

    Attributes
    ----------
    image : ndarray
        uint16 ``(3, Z, Y, X)``: membrane dye, DNA dye, structure.
    cell_labels, nucleus_labels : ndarray
        uint16 ``(Z, Y, X)`` ground-truth segmentations; nucleus ``k`` belongs to cell ``k``.
    clean : ndarray
        float32 ``(3, Z, Y, X)`` signals before optics and noise, for checking localization rules.
    cells : DataFrame
        One row per cell visible in the FOV (ground truth).
    """

    image: np.ndarray
    cell_labels: np.ndarray
    nucleus_labels: np.ndarray
    clean: np.ndarray
    cells: pd.DataFrame


def synthesize_fov(plan: FovPlan, settings: SynthSettings) -> SyntheticFov:
    """Generate one FOV and its ground truth.

    Parameters
    ----------
    plan : FovPlan
        Which FOV (its name seeds the random generator).
    settings : SynthSettings
        The synthetic-colony settings.

    Returns
    -------
    SyntheticFov
        Image, labels, clean signals and the per-cell table.
    """
    rng = fov_rng(settings.seed, plan.fov_id)
    spacing = settings.pixel_size_um
    fov_shape = settings.fov_shape
    pad = math.ceil(0.6 * settings.cell_spacing_um / min(spacing[1:]))  # room for the cells cut by the FOV edge
    canvas_shape = (fov_shape[0], fov_shape[1] + 2 * pad, fov_shape[2] + 2 * pad)
    colony = _build_colony(settings, canvas_shape, rng)

    responders: set[int] = set()
    if plan.drug == "brefeldin_a":
        responders = {label for label in colony.cells if rng.random() < settings.brefeldin_responder_fraction}
    unlinked: set[int] = set()
    if plan.structure == "golgi":  # late-G2 cells, told apart by their Golgi alone
        unlinked = {label for label, cell in colony.cells.items()
                    if not cell.is_mitotic and rng.random() < GOLGI_G2_UNLINKED}
    membrane = _membrane_signal(colony, rng, vesicles=True)
    dna = _dna_signal(colony, rng)
    pools: dict[int, float] = {}
    if plan.structure == "tight_junctions":
        pools = tight_junction_pools(colony.cells, rng, drug=plan.drug)
    donors: dict[int, tuple] = {}
    if plan.structure in _RENDERERS:
        structure = _RENDERERS[plan.structure](colony, rng, drug=plan.drug, responders=responders,
                                               unlinked=unlinked, pools=pools)
    elif plan.structure == "control_random_structure":
        structure, donors = _random_structure_control(colony, rng)
    else:  # blank, or a copy of a reference channel (made after the camera so it is an exact copy)
        structure = np.zeros_like(membrane)

    crop = (slice(None), slice(pad, pad + fov_shape[1]), slice(pad, pad + fov_shape[2]))
    margin = min(pad, math.ceil(4 * settings.psf_sigma_um[1] / min(spacing[1:])) + 1)
    around = (slice(None), slice(pad - margin, pad + fov_shape[1] + margin),
              slice(pad - margin, pad + fov_shape[2] + margin))
    blurred = _optics(np.stack([channel[around] for channel in (membrane, dna, structure)]), settings)
    image = _camera(blurred[:, :, margin:margin + fov_shape[1], margin:margin + fov_shape[2]], settings, rng)
    clean = np.stack([channel[crop] for channel in (membrane, dna, structure)])
    copied = {"control_membrane": 0, "control_dna": 1}.get(plan.structure)
    if copied is not None:  # an exact copy of the reference channel's image, noise included
        image[2], clean[2] = image[copied], clean[copied]
    if plan.structure == "control_blank":  # an artificial empty channel, like the copies: no photons, no noise
        image[2] = np.uint16(round(settings.offset_adu))

    cells3d, nuclei3d = colony.cells3d[crop], colony.nuclei3d[crop]
    visible_sizes = np.bincount(cells3d.ravel(), minlength=int(colony.labels2d.max()) + 1)
    visible = np.flatnonzero(visible_sizes[1:]) + 1
    relabel = np.zeros(visible_sizes.size, dtype=np.uint16)
    relabel[visible] = np.arange(1, len(visible) + 1)
    table = _ground_truth_table(plan, colony, visible_sizes, relabel, crop, pad, responders, unlinked, pools, donors)
    return SyntheticFov(image, relabel[cells3d], relabel[nuclei3d], clean, table)


def _optics(clean: np.ndarray, settings: SynthSettings) -> np.ndarray:
    """Blur every channel of a ``(C, Z, Y, X)`` signal by the anisotropic Gaussian PSF."""
    spacing = settings.pixel_size_um
    sigma = (0.0, settings.psf_sigma_um[0] / spacing[0], settings.psf_sigma_um[1] / spacing[1],
             settings.psf_sigma_um[1] / spacing[2])
    return scipy.ndimage.gaussian_filter(clean, sigma) if any(s > 0 for s in sigma) else clean


def _camera(blurred: np.ndarray, settings: SynthSettings, rng: np.random.Generator) -> np.ndarray:
    """Per-channel brightness, shot noise on signal plus background, camera offset and read noise.

    Shot noise uses the normal approximation of the Poisson law (mean = variance = photons), accurate at the photon
    counts here and several times faster to draw.
    """
    image = np.empty(blurred.shape, dtype=np.uint16)
    for channel, signal in enumerate(blurred):
        photons = np.clip(signal, 0, None)
        photons *= np.float32(settings.peak_photons * rng.lognormal(0.0, 0.1))
        photons += np.float32(settings.background_photons)
        spread = np.sqrt(photons + np.float32(settings.read_noise_adu**2))
        spread *= rng.standard_normal(photons.shape, dtype=np.float32)
        adu = np.add(photons, np.float32(settings.offset_adu), out=photons)
        adu += spread
        np.clip(np.round(adu, out=adu), 0, np.iinfo(np.uint16).max, out=adu)
        image[channel] = adu
    return image


def _ground_truth_table(plan: FovPlan, colony: _Colony, visible_sizes: np.ndarray, relabel: np.ndarray,
                        crop: tuple[slice, ...], pad: int, responders: set[int], unlinked: set[int],
                        pools: dict[int, float], donors: dict[int, tuple]) -> pd.DataFrame:
    """One row per cell visible in the FOV; ``visible_sizes`` counts each label's voxels inside the FOV."""
    spacing = colony.spacing
    voxel_volume = float(np.prod(spacing))
    visible = np.flatnonzero(relabel)
    cell_sizes = np.bincount(colony.cells3d.ravel(), minlength=relabel.size)
    nucleus_sizes = np.bincount(colony.nuclei3d.ravel(), minlength=relabel.size)
    fov_labels2d = colony.labels2d[crop[1:]]
    border = set(np.unique(np.concatenate([fov_labels2d[0], fov_labels2d[-1], fov_labels2d[:, 0],
                                           fov_labels2d[:, -1]])))
    rows = []
    for old in visible:
        cell = colony.cells[int(old)]
        kind, donor = donors.get(int(old), ("", 0))
        rows.append({
            "fov_id": plan.fov_id,
            "dataset": plan.dataset,
            "label": int(relabel[old]),
            "structure": plan.structure,
            "mitotic_stage": cell.stage,
            "is_mitotic": cell.is_mitotic,
            "drug": plan.drug,
            "concentration_um": plan.concentration_um,
            "drug_responder": int(old) in responders,
            "golgi_unlinked": int(old) in unlinked,
            "junction_pool": pools.get(int(old), math.nan),
            "cell_volume_um3": cell_sizes[old] * voxel_volume,
            "nucleus_volume_um3": nucleus_sizes[old] * voxel_volume,
            "visible_fraction": visible_sizes[old] / max(cell_sizes[old], 1),
            "height_um": float(colony.top_um[cell.footprint][colony.labels2d[cell.footprint] == old].max())
            - colony.base_um,
            "touches_border": int(old) in border,
            "centroid_y_um": cell.centre_yx_um[0] - pad * spacing[1],
            "centroid_x_um": cell.centre_yx_um[1] - pad * spacing[2],
            "control_source_structure": kind,
            "control_source_label": int(relabel[donor]) if donor else 0,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------------
# Whole colony on disk
# ----------------------------------------------------------------------------------------------------------------------


def raw_image_path(outdir: str | Path, fov_id: str) -> Path:
    """Where the raw image of a synthetic FOV is written."""
    return Path(outdir) / "raw" / f"{fov_id}.ome.tiff"


def label_image_path(outdir: str | Path, fov_id: str) -> Path:
    """Where the ground-truth cell and nucleus labels of a synthetic FOV are written."""
    return Path(outdir) / "ground_truth" / f"{fov_id}_labels.ome.tiff"


def manifest_path(outdir: str | Path, dataset: str) -> Path:
    """Where the FOV manifest of a synthetic dataset (``main`` or ``drugs``) is written."""
    return Path(outdir) / f"{dataset}_manifest.csv"


def ground_truth_table_path(outdir: str | Path) -> Path:
    """Where the per-cell ground-truth table of the whole synthetic colony is written."""
    return Path(outdir) / "ground_truth" / "cells.parquet"


def _write_fov(plan: FovPlan, settings: SynthSettings, outdir: Path) -> pd.DataFrame:
    fov = synthesize_fov(plan, settings)
    io.write_ome_tiff(raw_image_path(outdir, plan.fov_id), fov.image,
                      channel_names=[*CHANNEL_NAMES, plan.structure], spacing=settings.pixel_size_um)
    io.write_ome_tiff(label_image_path(outdir, plan.fov_id), np.stack([fov.cell_labels, fov.nucleus_labels]),
                      channel_names=list(LABEL_CHANNEL_NAMES), spacing=settings.pixel_size_um)
    return fov.cells


def manifest_rows(plans: Iterable[FovPlan], settings: SynthSettings) -> pd.DataFrame:
    """The FOV manifest of generated FOVs, in the format a user writes for real data (paths relative to it).

    Parameters
    ----------
    plans : iterable of FovPlan
        FOVs of one dataset.
    settings : SynthSettings
        Settings (for the pixel sizes).
    """
    z, y, x = settings.pixel_size_um
    rows = [{"fov_id": plan.fov_id, "path": f"raw/{plan.fov_id}.ome.tiff", "membrane_channel": 0, "dna_channel": 1,
             "structure_channel": 2, "structure": plan.structure, "pixel_size_z_um": z, "pixel_size_y_um": y,
             "pixel_size_x_um": x, "drug": plan.drug, "concentration_um": plan.concentration_um} for plan in plans]
    # the manifest's columns also when there is no FOV (a colony without a drug set)
    return pd.DataFrame(rows, columns=[*io.MANIFEST_COLUMNS, "drug", "concentration_um"])


def synthesize(settings: SynthSettings, outdir: str | Path, *, workers: int = 1) -> pd.DataFrame:
    """Generate the whole synthetic colony: raw FOVs, label images, manifests and the ground-truth table.

    Parameters
    ----------
    settings : SynthSettings
        The synthetic-colony settings.
    outdir : str or Path
        Output folder (``raw/``, ``ground_truth/``, ``main_manifest.csv``, ``drugs_manifest.csv``).
    workers : int
        Processes generating FOVs in parallel; the output does not depend on it.

    Returns
    -------
    DataFrame
        The ground-truth table of every cell.
    """
    outdir = Path(outdir)
    plans = plan_fovs(settings)
    tables: list[pd.DataFrame] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_fov, plan, settings, outdir) for plan in plans]
            for done, (plan, future) in enumerate(zip(plans, futures), start=1):
                tables.append(future.result())
                log.info("synthesized FOV %d/%d: %s (%d cells)", done, len(plans), plan.fov_id, len(tables[-1]))
    else:
        for done, plan in enumerate(plans, start=1):
            tables.append(_write_fov(plan, settings, outdir))
            log.info("synthesized FOV %d/%d: %s (%d cells)", done, len(plans), plan.fov_id, len(tables[-1]))
    for dataset in (MAIN_DATASET, DRUG_DATASET):
        io.write_table(manifest_rows([p for p in plans if p.dataset == dataset], settings),
                       manifest_path(outdir, dataset))
    cells = pd.concat(tables, ignore_index=True)
    io.write_table(cells, ground_truth_table_path(outdir))
    return cells
