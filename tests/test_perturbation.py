"""Drug perturbation analysis: permutation tests, Holm's correction, trajectories, on constructed embedding tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from statcell.analysis import perturbation
from statcell.plots import perturbation as perturbation_plots

LATENT_DIM = 4


def _tables(shifts: dict[tuple[str, str], np.ndarray], *, n: int = 20, seed: int = 0,
            noise_dims: tuple[int, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embedding and cell tables of a constructed drug set.

    Each (structure, drug) group holds ``n`` cells drawn from N(shift, 1) in the first ``LATENT_DIM`` dimensions;
    ``noise_dims`` get large unit-free noise in every group alike.
    """
    rng = np.random.default_rng(seed)
    embeddings, cells = [], []
    for (structure, drug), shift in shifts.items():
        means = rng.normal(0.0, 1.0, (n, LATENT_DIM)) + shift
        for dim in noise_dims:
            means[:, dim] = rng.normal(0.0, 50.0, n)
        for i in range(n):
            cell_id = f"drugs/{drug}_{structure}/{i}"
            embeddings.append({"cell_id": cell_id, "split": "test", "structure": structure,
                               **{f"mu_{d}": means[i, d] for d in range(LATENT_DIM)},
                               **{f"log_var_{d}": 0.0 for d in range(LATENT_DIM)}})
            cells.append({"cell_id": cell_id, "structure": structure, "drug": drug, "store_index": len(cells)})
    return pd.DataFrame(embeddings), pd.DataFrame(cells)


def _dimensions(kl: tuple[float, ...] = (2.0, 1.5, 1.0, 0.8)) -> pd.DataFrame:
    return pd.DataFrame({"dimension": np.arange(LATENT_DIM), "kl": kl, "mad": kl, "rank": np.arange(1, LATENT_DIM + 1)})


ZERO = np.zeros(LATENT_DIM)
FAR = np.array([8.0, 0.0, 0.0, 0.0])


def _shift_tests(latents, treated, units=None, *, permutations=2000, seed=0, components=3):
    units = np.arange(len(treated)) if units is None else units  # default: every cell its own FOV
    return perturbation.shift_tests(latents, treated, units, permutations=permutations,
                                    spectrum_components=components, rng=np.random.default_rng(seed))


def test_identical_groups_give_a_large_p_value():
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(60, 5))
    treated = np.arange(60) % 2 == 0
    result = _shift_tests(latents, treated)
    assert result.p_value > 0.05 and result.energy_p_value > 0.05 and result.spectrum_p_value > 0.05
    # the same cells in both groups: the observed distances are zero and every relabeling ties or exceeds them
    twice = np.vstack([latents, latents])
    same = _shift_tests(twice, np.repeat([False, True], 60), permutations=500)
    assert same.distance == pytest.approx(0.0, abs=1e-12) and same.energy_distance == pytest.approx(0.0, abs=1e-9)
    assert same.p_value == 1.0 and same.energy_p_value == 1.0


def test_well_separated_groups_give_the_smallest_possible_p_value():
    rng = np.random.default_rng(4)
    latents = np.vstack([rng.normal(0, 1, (25, 3)), rng.normal(0, 1, (25, 3)) + [10.0, 0, 0]])
    treated = np.repeat([False, True], 25)
    result = _shift_tests(latents, treated, permutations=999, seed=1)
    assert result.p_value == result.energy_p_value == result.min_p_value == 1 / 1000 and not result.exact
    assert result.distance == pytest.approx(np.linalg.norm(latents[25:].mean(0) - latents[:25].mean(0)))
    assert result.null_mean < result.distance / 3
    assert result.effect_size == pytest.approx(10.0, rel=0.25)  # 10 SD apart along the shift


def test_few_fovs_are_relabeled_exactly_and_bound_the_p_value():
    """3 + 3 FOVs of 10 cells: 20 relabelings, all enumerated; however far apart, p is at least 2/20 (the arms
    swapped give the same distance); 4 + 2 FOVs: 15 relabelings, at least 1/15."""
    rng = np.random.default_rng(7)
    units = np.repeat(np.arange(6), 10)
    treated = units >= 3
    latents = rng.normal(size=(60, 3)) + np.where(treated, 10.0, 0.0)[:, None] * [1, 0, 0]
    result = _shift_tests(latents, treated, units)
    assert result.exact and result.relabelings == 20 and (result.fovs_control, result.fovs_treated) == (3, 3)
    assert result.p_value == result.energy_p_value == result.min_p_value == 2 / 20
    shifted_two = rng.normal(size=(60, 3)) + np.where(units >= 4, 10.0, 0.0)[:, None] * [1, 0, 0]
    unequal = _shift_tests(shifted_two, units >= 4, units)
    assert unequal.relabelings == 15 and unequal.p_value == unequal.min_p_value == 1 / 15


def test_fov_effects_are_not_credited_to_the_drug():
    """Each FOV has its own offset (brightness, density) and the drug does nothing: relabeling cells finds "shifts"
    far more often than the level allows; relabeling FOVs keeps the false-positive rate at the level."""
    rng = np.random.default_rng(11)
    units = np.repeat(np.arange(14), 12)
    treated = units >= 7
    by_cells, by_fovs = [], []
    for _ in range(60):
        latents = rng.normal(size=(len(units), 3)) + rng.normal(0, 1.0, (14, 3))[units]
        by_fovs.append(_shift_tests(latents, treated, units, permutations=300, seed=int(rng.integers(1e9))).p_value)
        by_cells.append(_shift_tests(latents, treated, permutations=300, seed=int(rng.integers(1e9))).p_value)
    assert np.mean(np.asarray(by_cells) <= 0.05) > 0.5
    assert np.mean(np.asarray(by_fovs) <= 0.05) <= 0.15


def test_a_wider_spread_without_a_shift_is_found_by_the_spectrum_test_only():
    """Treated cells twice as spread along one axis, same mean: the centroid test misses it, dEIG finds it."""
    rng = np.random.default_rng(12)
    units = np.repeat(np.arange(14), 12)
    treated = units >= 7
    latents = rng.normal(size=(len(units), 4)) * np.where(treated[:, None], [2.5, 1, 1, 1], 1.0)
    result = _shift_tests(latents, treated, units, permutations=2000)
    assert result.p_value > 0.05
    assert result.spectrum_p_value < 0.01 and result.spectrum_distance > 1.0


def test_p_values_are_calibrated_under_the_null():
    """Under exchangeable labels the p-values are uniform: about 5% of tests fall at or below 0.05."""
    rng = np.random.default_rng(5)
    results = [_shift_tests(rng.normal(size=(20, 3)), np.arange(20) < 10, permutations=199,
                            seed=int(rng.integers(1e9))) for _ in range(200)]
    for name in ("p_value", "energy_p_value", "spectrum_p_value"):
        assert 0.01 <= np.mean(np.asarray([getattr(result, name) for result in results]) <= 0.05) <= 0.11, name


def test_spectrum_distance_of_known_spectra():
    assert perturbation.spectrum_distance(np.array([4.0, 1.0]), np.array([4.0, 1.0]), components=2) == 0.0
    assert perturbation.spectrum_distance(np.array([4.0, 1.0]), np.array([4.0, 4.0]), components=2) == 1.0
    assert perturbation.spectrum_distance(np.array([4.0, 1.0]), np.array([4.0, 4.0]), components=1) == 0.0


def test_a_group_must_not_be_empty():
    with pytest.raises(ValueError, match="both groups"):
        _shift_tests(np.zeros((4, 2)), np.ones(4, bool), permutations=10)


def test_active_dimensions_drop_dimensions_without_kl():
    table = _dimensions(kl=(2.0, 0.01, 0.7, 0.5))
    assert perturbation.active_dimensions(table, min_kl=0.6) == [0, 2]
    with pytest.warns(UserWarning, match="no latent dimension"):
        assert perturbation.active_dimensions(table, min_kl=5.0) == [0, 1, 2, 3]


def test_drug_shifts_finds_the_shifted_structure_only():
    groups = {("microtubules", "vehicle"): ZERO, ("microtubules", "paclitaxel"): FAR,
              ("tight_junctions", "vehicle"): ZERO, ("tight_junctions", "paclitaxel"): ZERO}
    embeddings, cells = _tables(groups)
    shifts = perturbation.drug_shifts({"target": embeddings, "reference": embeddings}, cells,
                                      {"target": _dimensions(), "reference": _dimensions()}, min_kl=0.6,
                                      permutations=999, seed=0, significance=0.01)
    assert len(shifts) == 4 and set(shifts["space"]) == {"target", "reference"}
    assert (shifts[["n_control", "n_treated"]] == 20).all().all()
    moved = shifts[shifts["structure"] == "microtubules"]
    still = shifts[shifts["structure"] == "tight_junctions"]
    assert (moved["p_value"] == 1 / 1000).all() and moved["significant"].all()
    assert moved["p_adjusted"].tolist() == pytest.approx([4 / 1000] * 2)
    assert (moved["energy_p_adjusted"] == 4 / 1000).all() and moved["energy_significant"].all()
    assert not still["significant"].any() and (still["p_value"] > 0.01).all()
    assert moved["distance"].iloc[0] == pytest.approx(8.0, abs=1.5)


def test_a_shift_of_one_fov_per_arm_is_noted_untestable_whatever_it_is():
    """Two FOVs allow two relabelings (p ≥ 1): the note says so, and why, rather than a bare p of 1."""
    embeddings, cells = _tables({("golgi", "vehicle"): ZERO, ("golgi", "brefeldin_a"): FAR})
    cells["fov_id"] = cells["drug"] + "_golgi_00"
    shifts = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions()}, min_kl=0.6,
                                      permutations=999, seed=0, significance=0.01)
    row = shifts.iloc[0]
    assert row["relabelings"] == 2 and row["min_p_value"] == 1.0 and not row["significant"]
    assert row["note"].startswith("untestable: 1 control and 1 treated FOVs allow 2 relabelings, so no p-value below 1")


def test_each_dose_of_a_dose_series_is_its_own_condition():
    groups = {("microtubules", "vehicle"): ZERO, ("microtubules", "paclitaxel_1"): ZERO,
              ("microtubules", "paclitaxel_5"): FAR}
    embeddings, cells = _tables(groups)
    cells["concentration_um"] = cells["drug"].map({"vehicle": 0.0, "paclitaxel_1": 1.0, "paclitaxel_5": 5.0})
    cells["drug"] = cells["drug"].str.replace(r"_\d$", "", regex=True)
    shifts = perturbation.drug_shifts({"target": embeddings, "reference": embeddings}, cells,
                                      {"target": _dimensions(), "reference": _dimensions()}, min_kl=0.6,
                                      permutations=999, seed=0, significance=0.01)
    target = shifts[shifts["space"] == "target"].set_index("drug")
    assert sorted(target.index) == ["paclitaxel 1 µM", "paclitaxel 5 µM"] and (target["n_treated"] == 20).all()
    assert target.at["paclitaxel 5 µM", "significant"] and not target.at["paclitaxel 1 µM", "significant"]


def test_inactive_noisy_dimensions_are_left_out_of_the_distance():
    """A dimension without KL holds big noise: with it the shift drowns, without it the shift is found."""
    groups = {("golgi", "vehicle"): ZERO, ("golgi", "brefeldin_a"): np.array([1.5, 0.0, 0.0, 0.0])}
    embeddings, cells = _tables(groups, n=30, noise_dims=(3,))
    active = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions((2.0, 1.5, 1.0, 0.0))},
                                      min_kl=0.6, permutations=999, seed=0, significance=0.01)
    every = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions((2.0, 1.5, 1.0, 0.0))},
                                     min_kl=-1.0, permutations=999, seed=0, significance=0.01)
    assert active["dimensions"].item() == 3 and every["dimensions"].item() == 4
    assert active["p_value"].item() < 0.01 < every["p_value"].item()


def test_drug_shifts_are_deterministic_and_independent_of_row_order():
    groups = {("golgi", "vehicle"): ZERO, ("golgi", "brefeldin_a"): np.array([0.6, 0.0, 0.0, 0.0]),
              ("golgi", "paclitaxel"): ZERO}
    embeddings, cells = _tables(groups)
    arguments = dict(min_kl=0.6, permutations=500, significance=0.01)
    first = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions()}, seed=3, **arguments)
    again = perturbation.drug_shifts({"target": embeddings.sample(frac=1, random_state=1)},
                                     cells.sample(frac=1, random_state=2), {"target": _dimensions()}, seed=3,
                                     **arguments)
    pd.testing.assert_frame_equal(first, again)
    other = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions()}, seed=4, **arguments)
    assert not np.array_equal(first["p_value"], other["p_value"])
    assert first["drug"].tolist() == ["brefeldin_a", "paclitaxel"]


def test_structures_without_controls_are_listed_untested_with_the_reason():
    groups = {("golgi", "vehicle"): ZERO, ("golgi", "paclitaxel"): ZERO, ("actin", "paclitaxel"): ZERO}
    embeddings, cells = _tables(groups)
    shifts = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions()}, min_kl=0.6,
                                      permutations=100, seed=0, significance=0.01)
    tested = shifts[shifts["note"] == ""]
    assert tested["structure"].tolist() == ["golgi"] and tested["p_value"].notna().all()
    untested = shifts.set_index("structure").loc["actin"]
    assert untested["note"] == "not tested: no vehicle cells of actin in the drug set"
    assert np.isnan(untested["p_value"]) and not untested["significant"] and untested["n_treated"] == 20
    # only the test made counts in the correction
    assert tested["p_adjusted"].item() == pytest.approx(tested["p_value"].item())


@pytest.mark.parametrize(("drugs", "requested", "control"), [
    (["vehicle", "paclitaxel", ""], "auto", "vehicle"),
    (["", "paclitaxel"], "auto", ""),
    (["DMSO", "paclitaxel", ""], "DMSO", "DMSO"),
    (["vehicle", "paclitaxel", ""], "", ""),
])
def test_the_control_is_vehicle_else_the_untreated_cells_unless_named(drugs, requested, control):
    assert perturbation.resolve_control(drugs, requested) == control


@pytest.mark.parametrize(("drugs", "requested", "message"), [
    (["paclitaxel", "brefeldin_a"], "auto", r"no control cells: no 'vehicle' and no untreated cells .*brefeldin_a, "
                                            r"paclitaxel.*analysis\.control_treatment"),
    (["vehicle", "paclitaxel"], "DMSO", r"analysis\.control_treatment is 'DMSO'.*paclitaxel, vehicle"),
])
def test_a_drug_set_without_its_control_is_named(drugs, requested, message):
    with pytest.raises(perturbation.NoControlError, match=message):
        perturbation.resolve_control(drugs, requested)


def test_untreated_cells_are_the_control_of_a_manifest_drug_set(tmp_path):
    """A drug set written as the README says (empty drug for untreated cells) is compared with its untreated cells,
    also after a round trip of the tables through files."""
    groups = {("microtubules", ""): ZERO, ("microtubules", "paclitaxel"): FAR}
    embeddings, cells = _tables(groups)
    cells.loc[cells["drug"] == "", "drug"] = None  # as a table read back may hold it
    shifts = perturbation.drug_shifts({"target": embeddings}, cells, {"target": _dimensions()}, min_kl=0.6,
                                      permutations=999, seed=0, significance=0.01)
    row = shifts.iloc[0]
    assert len(shifts) == 1 and row["drug"] == "paclitaxel" and row["control"] == "untreated"
    assert row["n_control"] == 20 and row["significant"] and row["note"] == ""
    trajectory = perturbation.drug_trajectory(embeddings, cells, _dimensions(), steps=4, min_kl=0.6)
    assert trajectory["cell_drug"].tolist()[::3] == ["untreated", "paclitaxel"]
    shifts.to_csv(tmp_path / "shifts.csv", index=False)
    trajectory.to_csv(tmp_path / "trajectory.csv", index=False)
    read_back = pd.read_csv(tmp_path / "shifts.csv")
    shown = perturbation_plots.plot_drug_target_latents(embeddings, cells, _dimensions(), read_back, tmp_path / "t.png",
                                                  min_kl=0.6, dpi=40)
    assert shown["x_dimension"].item() == 0
    perturbation_plots.plot_drug_reference_latents(embeddings, cells, _dimensions(), read_back, tmp_path / "r.png", dpi=40)
    assert (tmp_path / "t.png").exists() and (tmp_path / "r.png").exists()


def test_unknown_cells_are_reported():
    embeddings, cells = _tables({("golgi", "vehicle"): ZERO, ("golgi", "paclitaxel"): ZERO})
    with pytest.raises(ValueError, match="not in the cell table"):
        perturbation.treatments(embeddings, cells.iloc[1:])


def test_trajectory_walks_from_the_control_to_the_treated_centroid():
    groups = {("microtubules", "vehicle"): ZERO, ("microtubules", "paclitaxel"): np.array([2.5, 0.0, 0.0, 0.0])}
    embeddings, cells = _tables(groups, n=40)  # overlapping groups: cells all along the line
    steps = 5
    trajectory = perturbation.drug_trajectory(embeddings, cells, _dimensions(), steps=steps, min_kl=0.6)
    assert len(trajectory) == steps
    assert trajectory["position"].tolist() == pytest.approx(np.linspace(0, 1, steps))
    assert trajectory["projection"].is_monotonic_increasing
    assert (np.abs(trajectory["projection"] - trajectory["position"]) < 0.1).all()
    assert trajectory["cell_id"].is_unique
    # every chosen cell is the one whose projection is nearest its step
    table = perturbation.treatments(embeddings, cells)
    x = perturbation.latent_means(table, dimensions=[0, 1, 2, 3])
    treated = (table["drug"] == "paclitaxel").to_numpy()
    start, end = x[~treated].mean(0), x[treated].mean(0)
    projection = (x - start) @ (end - start) / np.sum((end - start) ** 2)
    for row in trajectory.itertuples():
        assert table["cell_id"].iloc[np.argmin(np.abs(projection - row.position))] == row.cell_id
        assert cells.set_index("cell_id").loc[row.cell_id, "store_index"] == row.store_index


def test_trajectory_is_deterministic():
    groups = {("golgi", "vehicle"): ZERO, ("golgi", "brefeldin_a"): FAR, ("golgi", "paclitaxel"): ZERO}
    embeddings, cells = _tables(groups)
    first = perturbation.drug_trajectory(embeddings, cells, _dimensions(), steps=4, min_kl=0.6)
    again = perturbation.drug_trajectory(embeddings.iloc[::-1], cells, _dimensions(), steps=4, min_kl=0.6)
    pd.testing.assert_frame_equal(first, again)
    assert first.groupby("drug").size().to_dict() == {"brefeldin_a": 4, "paclitaxel": 4}
    separated = first[first["drug"] == "brefeldin_a"]  # 8 SD apart: the ends are a control and a treated cell
    assert separated["cell_drug"].tolist()[::3] == ["vehicle", "brefeldin_a"]


def test_commands_on_the_tiny_drug_set(tiny_models, tmp_path):
    """drug-shifts, drug-trajectory and the three figures run end to end on tiny trained models."""
    from statcell import cli
    from statcell.analysis import embed
    from statcell.train import load_model

    paths = {}
    for kind in ("reference", "target"):
        model, hparams = load_model(tiny_models[kind])
        main = pd.read_parquet(tiny_models["cells"])
        ranked = embed.rank_dimensions(embed.embed_cells(tiny_models["store"], main[main["split"] == "test"],
                                                         model=model, hparams=hparams, samples=1, batch_size=16,
                                                         seed=0))
        drugs = embed.embed_cells(tiny_models["drug_store"], pd.read_parquet(tiny_models["drug_cells"]), model=model,
                                  hparams=hparams, samples=1, batch_size=16, seed=0)
        paths[kind] = tmp_path / f"{kind}.parquet"
        paths[f"{kind}_dimensions"] = tmp_path / f"{kind}_dimensions.csv"
        drugs.to_parquet(paths[kind])
        ranked.to_csv(paths[f"{kind}_dimensions"], index=False)
    # the active dimensions' KL and the control come from the analysis settings, as the rules pass them
    analysis = {"permutations": 199, "trajectory_steps": 3, "seed": 1, "active_kl_nats": 0,
                "control_treatment": "vehicle"}
    settings = json.dumps(analysis)
    common = ["--cells", str(tiny_models["drug_cells"])]
    assert cli.main(["drug-shifts", "--settings", settings, *common,
                     "--target-embeddings", str(paths["target"]), "--reference-embeddings", str(paths["reference"]),
                     "--target-dimensions", str(paths["target_dimensions"]),
                     "--reference-dimensions", str(paths["reference_dimensions"]),
                     "--output", str(tmp_path / "shifts.csv")]) == 0
    shifts = pd.read_csv(tmp_path / "shifts.csv")
    assert shifts[["space", "structure", "drug"]].values.tolist() == [["target", "nucleoli", "drug_a"],
                                                                     ["reference", "nucleoli", "drug_a"]]
    assert (shifts[["n_control", "n_treated"]] == 12).all().all()
    assert shifts["p_value"].between(1 / 200, 1).all()
    low, high = sorted(shifts["p_value"])  # Holm over the two tests: the smaller doubled, the larger kept above it
    assert sorted(shifts["p_adjusted"]) == pytest.approx([min(1, 2 * low), min(1, max(2 * low, high))])
    assert cli.main(["drug-trajectory", "--settings", settings, *common, "--embeddings",
                     str(paths["target"]), "--dimensions", str(paths["target_dimensions"]), "--store",
                     str(tiny_models["drug_store"]), "--output", str(tmp_path / "trajectory.csv"), "--images",
                     str(tmp_path / "trajectory.npz")]) == 0
    trajectory = pd.read_csv(tmp_path / "trajectory.csv")
    assert trajectory["step"].tolist() == [0, 1, 2] and trajectory["projection"].is_monotonic_increasing
    with np.load(tmp_path / "trajectory.npz") as images:  # the figure's pixels, in the table's order
        assert images["images"].shape[:2] == (3, 3) and images["images"].max() > 0
    figure_settings = ["--settings", '{"dpi": 60}', "--analysis-settings", settings]
    for command, space in (("plot-drug-reference-latents", "reference"), ("plot-drug-target-latents", "target")):
        assert cli.main([command, *figure_settings, *common,
                         "--embeddings", str(paths[space]), "--dimensions", str(paths[f"{space}_dimensions"]),
                         "--shifts", str(tmp_path / "shifts.csv"), "--output", str(tmp_path / f"{space}.png")]) == 0
        assert (tmp_path / f"{space}.png").stat().st_size > 10_000 and (tmp_path / f"{space}.svg").exists()
    assert cli.main(["plot-drug-trajectory", "--settings", '{"dpi": 60}', "--trajectory",
                     str(tmp_path / "trajectory.csv"), "--images", str(tmp_path / "trajectory.npz"), "--shifts",
                     str(tmp_path / "shifts.csv"), "--output", str(tmp_path / "trajectory.png")]) == 0
    from matplotlib.image import imread

    image = imread(tmp_path / "trajectory.png")[..., :3]
    assert (image.max(axis=-1) - image.min(axis=-1) > 0.3).mean() > 0.01  # the cells are drawn in colour


def test_target_plot_shows_the_dimension_of_the_shift(tmp_path):
    """Dimension 2 holds the drug shift; with one active dimension a second is still shown."""
    groups = {("golgi", "vehicle"): ZERO, ("golgi", "brefeldin_a"): np.array([0.0, 0.0, 6.0, 0.0])}
    embeddings, cells = _tables(groups)
    dimensions = _dimensions()
    shifts = perturbation.drug_shifts({"target": embeddings}, cells, {"target": dimensions}, min_kl=0.6,
                                      permutations=100, seed=0, significance=0.01)
    shown = perturbation_plots.plot_drug_target_latents(embeddings, cells, dimensions, shifts, tmp_path / "t.png",
                                                  min_kl=0.6, dpi=40)
    assert shown[["structure", "x_dimension"]].values.tolist() == [["golgi", 2]]
    assert (tmp_path / "t.png").exists() and (tmp_path / "t.svg").exists()
    # the shift on x even where another dimension varies more (dimension 1: large noise in every group alike)
    noisy, noisy_cells = _tables(groups, noise_dims=(1,))
    shown = perturbation_plots.plot_drug_target_latents(noisy, noisy_cells, dimensions, shifts, tmp_path / "n.png",
                                                  min_kl=0.6, dpi=40)
    assert shown[["x_dimension", "y_dimension"]].values.tolist() == [[2, 1]]
    single = perturbation_plots.plot_drug_target_latents(embeddings, cells, _dimensions((2.0, 0.1, 0.1, 0.1)), shifts,
                                                   tmp_path / "one.png", min_kl=0.6, dpi=40)
    assert single["x_dimension"].item() == 2 and single["y_dimension"].item() in {0, 1, 3}


def test_the_panel_titles_give_each_test_and_star_the_significant_ones():
    row = pd.Series({"drug": "paclitaxel", "distance": 0.42, "p_adjusted": 1.0, "significant": False,
                     "energy_p_adjusted": 0.0036, "energy_significant": True, "spectrum_p_adjusted": 0.0072,
                     "spectrum_significant": True, "note": ""})
    assert perturbation_plots._p_label(row) == ("paclitaxel: d = 0.42 (p 1), distribution p 0.0036 *, "
                                                "spread p 0.0072 *")
    older = row.drop(["spectrum_p_adjusted", "spectrum_significant"])  # a table written before the spectrum test
    assert perturbation_plots._p_label(older) == "paclitaxel: d = 0.42 (p 1), distribution p 0.0036 *"
