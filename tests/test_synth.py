"""The synthetic colony: determinism, ground truth consistent with the images, and localization rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from statcell import synth, vocabulary
from tests.conftest import fov_of


def _interior_labels(fov: synth.SyntheticFov) -> np.ndarray:
    return fov.cells.loc[~fov.cells["touches_border"], "label"].to_numpy()


def _stage_mask(fov: synth.SyntheticFov, stages: set[str]) -> np.ndarray:
    labels = fov.cells.loc[fov.cells["mitotic_stage"].isin(stages), "label"].to_numpy()
    return np.isin(fov.cell_labels, labels)


def _column_top_index(cell_labels: np.ndarray) -> np.ndarray:
    """Per (y, x): index of the highest slice inside a cell (-1 where there is none)."""
    inside = cell_labels > 0
    top = cell_labels.shape[0] - 1 - np.argmax(inside[::-1], axis=0)
    return np.where(inside.any(axis=0), top, -1)


def test_plan_names_are_unique_and_count_matches(tiny_settings):
    plans = synth.plan_fovs(tiny_settings)
    names = [plan.fov_id for plan in plans]
    assert len(names) == len(set(names))
    main = [plan for plan in plans if plan.dataset == vocabulary.MAIN_DATASET]
    drugs = [plan for plan in plans if plan.dataset == vocabulary.DRUG_DATASET]
    assert len(main) == len(tiny_settings.structures) * tiny_settings.fovs_per_structure
    assert len(drugs) == (len(tiny_settings.drug_treatments) * len(tiny_settings.drug_structures)
                          * tiny_settings.drug_fovs_per_condition)
    assert {plan.drug for plan in drugs} == {"vehicle", "paclitaxel", "brefeldin_a"}
    assert all(plan.concentration_um == 0 for plan in drugs if plan.drug == "vehicle")


def test_generator_is_deterministic(tiny_settings, tiny_fovs):
    plan = synth.plan_fovs(tiny_settings)[3]
    again = synth.synthesize_fov(plan, tiny_settings)
    first = tiny_fovs[plan.fov_id]
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.cell_labels, again.cell_labels)
    assert first.cells.equals(again.cells)
    reseeded = synth.synthesize_fov(plan, dataclasses.replace(tiny_settings, seed=tiny_settings.seed + 1))
    assert not np.array_equal(first.image, reseeded.image)


def test_image_shape_type_and_camera_background(tiny_settings, tiny_fovs):
    fov = fov_of(tiny_fovs, "nucleoli")
    assert fov.image.dtype == np.uint16
    assert fov.image.shape == (3, *tiny_settings.fov_shape)
    background = fov.image[2][fov.clean[2] == 0].astype(float)
    expected = tiny_settings.offset_adu + tiny_settings.background_photons
    assert abs(np.median(background) - expected) < 2
    assert background.std() > 1  # camera noise is there


def test_every_nucleus_lies_inside_its_own_cell(tiny_fovs):
    for fov in tiny_fovs.values():
        nucleus = fov.nucleus_labels > 0
        np.testing.assert_array_equal(fov.nucleus_labels[nucleus], fov.cell_labels[nucleus])


def test_interior_cells_have_exactly_one_connected_nucleus(tiny_fovs):
    for fov in tiny_fovs.values():
        for label in _interior_labels(fov):
            _, components = ndimage.label(fov.nucleus_labels == label)
            assert components == 1, f"{fov.cells.fov_id[0]} cell {label} has {components} nuclei"


def test_table_volumes_match_label_images(tiny_settings, tiny_fovs):
    voxel = float(np.prod(tiny_settings.pixel_size_um))
    for fov in tiny_fovs.values():
        counts = np.bincount(fov.cell_labels.ravel(), minlength=fov.cells["label"].max() + 1)
        nuclei = np.bincount(fov.nucleus_labels.ravel(), minlength=fov.cells["label"].max() + 1)
        interior = fov.cells[~fov.cells["touches_border"]]
        np.testing.assert_allclose(interior["cell_volume_um3"], counts[interior["label"]] * voxel)
        np.testing.assert_allclose(interior["nucleus_volume_um3"], nuclei[interior["label"]] * voxel)
        assert (interior["visible_fraction"] == 1).all()
        assert set(fov.cells["label"]) == set(np.unique(fov.cell_labels[fov.cell_labels > 0]))


def test_cells_are_packed_with_touching_neighbours(tiny_fovs):
    fov = fov_of(tiny_fovs, "golgi")
    footprint = fov.cell_labels.max(axis=0)
    walls = footprint[:, 1:] != footprint[:, :-1]
    touching = walls & (footprint[:, 1:] > 0) & (footprint[:, :-1] > 0)
    assert touching.sum() / walls.sum() > 0.75


def test_cell_sizes_vary_and_mitotic_cells_are_taller(tiny_fovs):
    import pandas as pd

    cells = pd.concat([fov.cells for fov in tiny_fovs.values()])
    interior = cells[~cells["touches_border"]]
    interphase = interior[interior["mitotic_stage"] == "interphase"]
    assert interphase["cell_volume_um3"].std() / interphase["cell_volume_um3"].mean() > 0.08
    assert interphase["height_um"].std() > 0.3
    rounded = interior[interior["mitotic_stage"].isin(["early_prometaphase", "prometaphase_metaphase"])]
    assert len(rounded) >= 3
    assert rounded["height_um"].mean() > interphase["height_um"].mean() + 1.5
    assert set(cells["mitotic_stage"]) <= set(vocabulary.MITOTIC_STAGES)


def test_apical_surface_is_domed(tiny_fovs):
    fov = fov_of(tiny_fovs, "golgi")
    top = _column_top_index(fov.cell_labels)
    for label in _interior_labels(fov)[:5]:
        footprint = fov.cell_labels.max(axis=0) == label
        depth = ndimage.distance_transform_edt(footprint)
        centre, rim = top[footprint & (depth >= depth.max() * 0.7)], top[footprint & (depth <= 1.5)]
        assert centre.mean() > rim.mean() + 2, f"cell {label} is not domed"


def test_mitochondria_never_in_the_nucleus(tiny_fovs):
    fov = fov_of(tiny_fovs, "mitochondria")
    structure = fov.clean[2]
    assert structure[fov.nucleus_labels > 0].max() == 0
    cytoplasm = (fov.cell_labels > 0) & (fov.nucleus_labels == 0)
    assert structure[cytoplasm].mean() > 0.02
    for label in _interior_labels(fov):  # every cell has its own mitochondria
        assert structure[cytoplasm & (fov.cell_labels == label)].max() > 0.3
    # The recorded image agrees: deep inside nuclei the structure channel is at background level.
    deep_nucleus = ndimage.binary_erosion(fov.nucleus_labels > 0, iterations=3)
    image = fov.image[2].astype(float)
    assert image[deep_nucleus].mean() < 0.25 * (image[cytoplasm].mean() - image[fov.cell_labels == 0].mean()) + \
        image[fov.cell_labels == 0].mean()


def test_tight_junctions_only_in_the_top_slices_of_each_cell(tiny_settings, tiny_fovs):
    fov = fov_of(tiny_fovs, "tight_junctions")
    # The junctions proper are each cell's brightest voxels (its cytoplasmic pool is at most a sixth of them) ...
    junctions = _relative_to_cell_maximum(fov) > 0.5
    assert junctions.sum() > 100
    assert fov.clean[2][fov.nucleus_labels > 0].max() == 0  # the pool is cytoplasmic
    z, y, x = np.nonzero(junctions)
    top = _column_top_index(fov.cell_labels)
    band_slices = synth.TIGHT_JUNCTION_BAND_UM / tiny_settings.pixel_size_um[0]
    assert np.all(z >= top[y, x] - band_slices - 1)
    # ... on the cell's periphery: every junction voxel touches another label in xy (away from the FOV edge, where the
    # neighbour lies outside the image).
    away = (y > 0) & (x > 0) & (y < fov.cell_labels.shape[1] - 1) & (x < fov.cell_labels.shape[2] - 1)
    z, y, x = z[away], y[away], x[away]
    footprint = fov.cell_labels[z, y, x]
    padded = np.pad(fov.cell_labels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    neighbours = [padded[z, y + 1 + dy, x + 1 + dx] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    assert np.all(np.any([n != footprint for n in neighbours], axis=0))


def test_matrix_adhesions_only_at_the_base(tiny_settings, tiny_fovs):
    fov = fov_of(tiny_fovs, "matrix_adhesions")
    z = np.nonzero(fov.clean[2] > 0)[0]
    base = np.nonzero((fov.cell_labels > 0).any(axis=(1, 2)))[0].min()
    assert len(z) > 20
    assert z.max() <= base + synth.ADHESION_BAND_UM / tiny_settings.pixel_size_um[0] + 1


def test_nucleoli_inside_interphase_nuclei_and_gone_in_mitosis(tiny_fovs):
    fov = fov_of(tiny_fovs, "nucleoli")
    bright = fov.clean[2] > 0.3
    assert bright.sum() > 50
    assert np.all(fov.nucleus_labels[bright] > 0)
    mitotic = _stage_mask(fov, set(vocabulary.MITOTIC_STAGES) - {"interphase"})
    assert mitotic.any()
    assert not (bright & mitotic).any()


def test_nuclear_envelope_is_a_shell_in_interphase(tiny_fovs):
    fov = fov_of(tiny_fovs, "nuclear_envelope")
    interphase = _stage_mask(fov, {"interphase"})
    nucleus = (fov.nucleus_labels > 0) & interphase
    surface = nucleus & ~ndimage.binary_erosion(nucleus)
    interior = ndimage.binary_erosion(nucleus, iterations=2)
    assert fov.clean[2][surface].mean() > 5 * fov.clean[2][interior].mean()


def test_golgi_compact_and_dispersed_by_brefeldin(tiny_fovs):
    def spread(fov: synth.SyntheticFov, responders_only: bool) -> float:
        cells = fov.cells[(fov.cells["mitotic_stage"] == "interphase") & ~fov.cells["touches_border"]
                          & ~fov.cells["golgi_unlinked"]]
        if responders_only:
            cells = cells[cells["drug_responder"]]
        spreads = []
        for label in cells["label"]:
            weights = np.where(fov.cell_labels == label, fov.clean[2], 0)
            points = np.argwhere(weights > 0.2 * weights.max())
            spreads.append(np.sqrt(((points - points.mean(axis=0))[:, 1:] ** 2).sum(axis=1).mean()))
        return float(np.median(spreads))

    vehicle = spread(fov_of(tiny_fovs, "golgi", "vehicle"), responders_only=False)
    brefeldin = spread(fov_of(tiny_fovs, "golgi", "brefeldin_a"), responders_only=True)
    assert brefeldin > 1.5 * vehicle


def test_paclitaxel_bundles_microtubules(tiny_fovs):
    def cytoplasm_values(fov: synth.SyntheticFov) -> np.ndarray:
        return fov.clean[2][(fov.cell_labels > 0) & (fov.nucleus_labels == 0)]

    vehicle = cytoplasm_values(fov_of(tiny_fovs, "microtubules", "vehicle"))
    paclitaxel = cytoplasm_values(fov_of(tiny_fovs, "microtubules", "paclitaxel"))
    # Bundles are far brighter than single fibres, free tubulin is depleted, and the pattern is more contrasted.
    assert np.percentile(paclitaxel, 99.5) > 2 * np.percentile(vehicle, 99.5)
    assert np.median(paclitaxel) < 0.6 * np.median(vehicle)
    assert np.percentile(paclitaxel, 99.5) / paclitaxel.mean() > 1.5 * np.percentile(vehicle, 99.5) / vehicle.mean()


def _relative_to_cell_maximum(fov: synth.SyntheticFov) -> np.ndarray:
    """The clean structure channel divided by its maximum in each cell (0 outside cells)."""
    labels = fov.cell_labels
    maxima = np.zeros(labels.max() + 1)
    maxima[1:] = ndimage.maximum(fov.clean[2], labels, np.arange(1, labels.max() + 1))
    return np.divide(fov.clean[2], maxima[labels], out=np.zeros(labels.shape), where=maxima[labels] > 0)


def _junction_pools(fov: synth.SyntheticFov) -> np.ndarray:
    """Per cell with junctions: its cytoplasmic pool's brightness relative to the junctions (0 without a pool)."""
    relative, labels = _relative_to_cell_maximum(fov), fov.cell_labels
    pool = np.where(relative < 0.5, relative, 0)
    return np.array([pool[labels == label].max() for label in np.unique(labels[relative == 1])])


def test_paclitaxel_spreads_the_tight_junctions_cytoplasmic_pool_and_keeps_its_mean(tiny_fovs):
    low, high = synth.TIGHT_JUNCTION_POOL
    draws = {drug: np.array(list(synth.tight_junction_pools(range(4000), np.random.default_rng(1), drug=drug).values()))
             for drug in ("vehicle", "brefeldin_a", "paclitaxel")}
    assert all(low <= pools.min() and pools.max() <= high for pools in draws.values())
    width = high - low
    assert draws["vehicle"].min() < low + 0.02 * width and draws["vehicle"].max() > high - 0.02 * width  # the range
    assert abs(draws["paclitaxel"].mean() - draws["vehicle"].mean()) < 0.02 * width
    assert 3.5 < draws["paclitaxel"].std() / draws["vehicle"].std() < 5
    assert abs(draws["brefeldin_a"].std() / draws["vehicle"].std() - 1) < 0.1  # brefeldin A leaves them alone
    # In the images: every treated cell's pool at one end of the range, the untreated ones' less spread, one mean.
    pools = {drug: _junction_pools(fov_of(tiny_fovs, "tight_junctions", drug)) for drug in ("vehicle", "paclitaxel")}
    assert min(len(values) for values in pools.values()) >= 8
    assert np.all(np.abs(pools["paclitaxel"] - 0.5 * (low + high)) > 0.4 * width)
    assert pools["paclitaxel"].std() > 2.5 * pools["vehicle"].std()
    assert abs(pools["paclitaxel"].mean() - pools["vehicle"].mean()) < 0.15 * width


def test_the_ground_truth_table_gives_each_cells_junction_pool_as_drawn_in_the_image(tiny_fovs):
    for fov in tiny_fovs.values():
        table = fov.cells.set_index("label")["junction_pool"]
        if fov.cells["structure"].iloc[0] != "tight_junctions":
            assert table.isna().all(), fov.cells["fov_id"].iloc[0]
            continue
        relative, labels = _relative_to_cell_maximum(fov), fov.cell_labels
        with_junctions = np.unique(labels[relative == 1])
        assert len(with_junctions) >= 8
        for label in with_junctions:
            in_image = np.where(relative < 0.5, relative, 0)[labels == label].max()
            assert table[label] == pytest.approx(in_image, abs=1e-5)
        low, high = synth.TIGHT_JUNCTION_POOL
        assert table.between(low, high).all()  # every visible cell has one, junctions in the FOV or not


def test_drugs_leave_cell_shape_alone(tiny_fovs):
    import pandas as pd

    volumes = {drug: pd.concat([fov.cells for fov in tiny_fovs.values() if fov.cells["drug"].iloc[0] == drug])
               for drug in ("vehicle", "paclitaxel", "brefeldin_a")}
    means = {drug: table.loc[~table.touches_border, "cell_volume_um3"].mean() for drug, table in volumes.items()}
    assert max(means.values()) / min(means.values()) < 1.25


@pytest.mark.parametrize("structure, channel", [("control_dna", 1), ("control_membrane", 0)])
def test_copy_controls_duplicate_a_reference_channel(tiny_fovs, structure, channel):
    fov = fov_of(tiny_fovs, structure)
    np.testing.assert_array_equal(fov.image[2], fov.image[channel])


def test_blank_and_noise_controls(tiny_fovs):
    blank = fov_of(tiny_fovs, "control_blank")
    assert blank.clean[2].max() == 0
    assert np.unique(blank.image[2]).tolist() == [100]  # the camera offset only: no signal, no noise to normalize
    noise = fov_of(tiny_fovs, "control_noise")
    inside = noise.cell_labels > 0
    assert noise.clean[2][~inside].max() == 0
    assert noise.clean[2][inside].std() > 0.05
    assert noise.clean[2][noise.nucleus_labels > 0].mean() > noise.clean[2][inside & (noise.nucleus_labels == 0)].mean()


def test_random_structure_control_comes_from_another_cell(tiny_fovs):
    fov = fov_of(tiny_fovs, "control_random_structure")
    assert set(fov.cells["control_source_structure"]) <= set(vocabulary.REAL_STRUCTURES)
    assert fov.cells["control_source_structure"].nunique() > 1
    assert (fov.cells["control_source_label"] != fov.cells["label"]).all()
    assert fov.clean[2].max() > 0


def test_channel_names_written_to_disk(tmp_path, tiny_settings):
    from statcell import io

    plan = synth.plan_fovs(tiny_settings)[0]
    synth._write_fov(plan, tiny_settings, tmp_path)
    image = io.read_image(synth.raw_image_path(tmp_path, plan.fov_id))
    assert image.channel_names == ("membrane", "dna", plan.structure)
    np.testing.assert_allclose(image.spacing, tiny_settings.pixel_size_um)
    labels = io.read_image(synth.label_image_path(tmp_path, plan.fov_id))
    assert labels.channel_names == synth.LABEL_CHANNEL_NAMES


def test_table_heights_match_label_images(tiny_settings, tiny_fovs):
    for fov in tiny_fovs.values():
        for row in fov.cells[~fov.cells["touches_border"]].itertuples():
            slices = np.flatnonzero((fov.cell_labels == row.label).any(axis=(1, 2)))
            extent = (slices[-1] - slices[0] + 1) * tiny_settings.pixel_size_um[0]
            assert abs(extent - row.height_um) <= tiny_settings.pixel_size_um[0] + 1e-6
