"""Coupling of structures to the membrane and the nucleus (paper Eq 4, Eq 5, Fig 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from statcell import io
from statcell.analysis import coupling
from statcell.plots import coupling as coupling_plots
from statcell.cli import main
from statcell.models import VAEConfig
from statcell.train import load_model

SETTINGS = coupling.CouplingSettings(elbo_samples=3, coupling_copies=4, batch_size=16, resampling_iterations=2000,
                                     significance=0.01, seed=3)
ALL_SPLITS = ("train", "val", "test")


class OracleTarget(nn.Module):
    """A target model that knows the answer: it predicts the structure as the membrane (label 1), the DNA (label 0),
    or nothing (label 2), whatever the latent vector, with a standard normal posterior (KL 0)."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = VAEConfig(image_shape=image_shape, channels=1, widths=(4,), latent_dim=3, reference_channels=2,
                                n_classes=3)

    def encode(self, target, reference, label):
        zeros = torch.zeros(target.shape[0], self.config.latent_dim)
        return zeros, zeros

    def decode(self, z, reference, label):
        source = {0: 1, 1: 0}  # control_dna <- DNA, control_membrane <- membrane
        out = torch.zeros(z.shape[0], 1, *reference.shape[2:])
        for value, channel in source.items():
            chosen = label == value
            out[chosen] = reference[chosen, channel:channel + 1]
        return out


def test_coupling_score_known_answers():
    elbo = np.array([-100.0, -100.0, -100.0])
    swapped = np.array([[-150.0, -250.0], [-100.0, -100.0], [-40.0, -60.0]])
    # twice the code length when swapped: log 2; unchanged: 0; better when swapped: negative
    np.testing.assert_allclose(coupling.coupling_score(elbo, swapped), [np.log(2.0), 0.0, np.log(0.5)])
    with pytest.raises(ValueError, match="negative ELBOs"):
        coupling.coupling_score(np.array([1.0]), np.array([[-1.0]]))


def test_normalized_difference_bounded_and_signed():
    membrane = np.array([0.4, 0.0, 0.3, 0.1, -0.01, 0.0])
    nucleus = np.array([0.0, 0.2, 0.1, 0.3, 0.2, 0.0])
    result = coupling.normalized_difference(membrane, nucleus)
    np.testing.assert_allclose(result[:4], [1.0, -1.0, 0.5, -0.5])  # (m - n) / (m + n) for positive couplings
    assert -1.0 <= result[4] < -0.9 and result[5] == 0.0
    rng = np.random.default_rng(0)
    random = coupling.normalized_difference(rng.normal(size=1000), rng.normal(size=1000))
    assert np.all(np.abs(random) <= 1.0)


def test_donors_same_structure_never_self_and_deterministic():
    pool_structure = np.array(["a"] * 12 + ["b"] * 3)
    pool_index = np.arange(100, 115)
    pool_unit = np.array(["f1"] * 15)
    cells, structures = pool_index[[0, 5, 12, 14]], pool_structure[[0, 5, 12, 14]]

    def draw(chosen=slice(None), seed=1):
        return coupling.draw_donors(cells[chosen], structures[chosen], pool_unit[:4][chosen], pool_index=pool_index,
                                    pool_structure=pool_structure, pool_unit=pool_unit, copies=5, seed=seed)

    donors = draw().indices
    lookup = dict(zip(pool_index, pool_structure, strict=True))
    for cell, name, row in zip(cells, structures, donors, strict=True):
        assert cell not in row
        assert {lookup[d] for d in row} == {name}
    assert len(set(donors[0])) == 5  # 11 candidates: drawn without replacement
    assert set(donors[2]) <= {113, 114}  # 2 candidates for 5 copies: with replacement
    np.testing.assert_array_equal(draw([1]).indices[0], donors[1])  # a cell's donors do not depend on the others
    assert not np.array_equal(draw(seed=2).indices, donors)
    with pytest.raises(ValueError, match="no other cell"):
        coupling.draw_donors(np.array([7]), np.array(["c"]), np.array(["f"]), pool_index=np.array([7]),
                             pool_structure=np.array(["c"]), pool_unit=np.array(["f"]), copies=2, seed=0)


def test_donors_come_from_the_cells_fov_unless_it_has_no_other_cell_of_its_structure():
    pool_index = np.arange(8)
    pool_structure = np.array(list("aaaaabbb"))
    pool_unit = np.array(["f1", "f1", "f1", "f2", "f2", "f1", "f2", "f3"])
    donors = coupling.draw_donors(pool_index, pool_structure, pool_unit, pool_index=pool_index,
                                  pool_structure=pool_structure, pool_unit=pool_unit, copies=3, seed=0)
    units = dict(zip(pool_index, pool_unit, strict=True))
    assert donors.in_fov.tolist() == [True] * 5 + [False, False, False]
    for cell in range(5):
        assert {units[d] for d in donors.indices[cell]} == {units[cell]}  # a's cells have FOV mates
    assert set(donors.indices[5]) <= {6, 7}  # b's cells are alone in their FOVs: donors from the others


def test_swap_rank_has_mean_one_half_when_the_channel_does_not_matter():
    """Own and swapped ELBOs drawn alike, with a large offset per FOV: the rank is 1/2 on average and the call is
    "neither", while Eq 4's mean is above 0 (Jensen) and a test of it would call coupling."""
    rng = np.random.default_rng(2)
    cells, copies = 400, 10
    fov = np.repeat(np.arange(20), cells // 20)
    scale = 200 * np.exp(rng.normal(0, 0.5, 20))[fov]
    elbos = -scale[:, None] * np.exp(rng.normal(0, 0.3, (cells, 1 + copies)))
    ranks = coupling.swap_rank(elbos[:, 0], elbos[:, 1:])
    assert abs(ranks.mean() - 0.5) < 0.03
    scores = coupling.coupling_score(elbos[:, 0], elbos[:, 1:])
    assert scores.mean() > 0.03  # E log(mean of K) - E log(one) > 0 under no coupling
    table = pd.DataFrame({"structure": "none", "phase": "interphase", "imaging_fov": fov, "membrane_coupling": scores,
                          "nucleus_coupling": scores, "membrane_rank": ranks, "nucleus_rank": ranks})
    table["normalized_difference"] = 0.0
    summary = coupling.summarize_structures(table, settings=SETTINGS)
    assert summary["couples_to"].item() == "neither" and summary["n_fovs"].item() == 20
    assert summary["membrane_degrees_of_freedom"].item() == pytest.approx(19)  # equal FOVs: FOVs - 1


def test_a_structure_without_measured_cells_has_a_row_saying_so():
    """A structure all of whose cells are in training (one FOV of two cells, say) is listed, not silently absent,
    and takes no part in the correction of the others."""
    rng = np.random.default_rng(3)
    fov = np.repeat(np.arange(10), 10)
    ranks = rng.uniform(0.4, 1.0, len(fov))
    table = pd.DataFrame({"structure": "golgi", "phase": "interphase", "imaging_fov": fov, "membrane_rank": ranks,
                          "nucleus_rank": ranks, "membrane_coupling": ranks, "nucleus_coupling": ranks,
                          "normalized_difference": 0.0})
    alone = coupling.summarize_structures(table, settings=SETTINGS)
    summary = coupling.summarize_structures(table, settings=SETTINGS, structures=["er", "golgi"]).set_index(
        "structure")
    assert summary.loc["er", "couples_to"] == coupling.NOT_MEASURED and summary.loc["er", "n_cells"] == 0
    assert summary.loc["er", "phase"] == "interphase" and "all in training" in summary.loc["er", "note"]
    assert summary.loc["golgi", "note"] == "" and summary.loc["golgi", "couples_to"] == alone["couples_to"].item()
    assert summary.loc["golgi", "membrane_p_adjusted"] == pytest.approx(alone["membrane_p_adjusted"].item())
    assert list(summary.columns)[-1] == "note"


def test_oracle_copies_couple_to_their_own_channel(tiny_models):
    """A model that predicts the DNA copy from the DNA alone and the membrane copy from the membrane alone: the
    couplings come out exactly where they must, and a structure it predicts from nothing couples to neither."""
    cells = pd.read_parquet(tiny_models["cells"])
    structures = ["control_dna", "control_membrane", "nucleoli"]
    model = OracleTarget(image_shape=(8, 8, 16))
    per_cell = coupling.measure_coupling(model, cells, structures=structures, store=tiny_models["store"],
                                         settings=SETTINGS, splits=ALL_SPLITS)
    assert len(per_cell) == len(cells)
    by = per_cell.set_index("structure")
    assert (by.loc["control_membrane", "membrane_coupling"] > 0.3).all()
    assert (by.loc["control_membrane", "nucleus_coupling"] == 0).all()  # the oracle ignores the DNA here
    assert (by.loc["control_dna", "nucleus_coupling"] > 0.3).all()
    assert (by.loc["control_dna", "membrane_coupling"] == 0).all()
    assert (by.loc["nucleoli", ["membrane_coupling", "nucleus_coupling"]] == 0).all().all()
    np.testing.assert_allclose(by.loc["control_membrane", "normalized_difference"], 1.0)
    np.testing.assert_allclose(by.loc["control_dna", "normalized_difference"], -1.0)
    for structure, channel in (("control_membrane", "membrane_rank"), ("control_dna", "nucleus_rank")):
        # 8x8x16 voxels hold few distinct shapes: a donor's may match the cell's voxel for voxel, up to noise
        assert by.loc[structure, channel].mean() > 0.9 and by.loc[structure, channel].min() >= 0.5
    assert (by.loc["nucleoli", ["membrane_rank", "nucleus_rank"]] == 0.5).all().all()  # every copy ties
    assert by["donors_in_fov"].all() and by["imaging_fov"].nunique() == 12  # 4 FOVs of each structure

    summary = coupling.summarize_structures(per_cell, settings=SETTINGS)
    calls = summary[summary["phase"] == "interphase"].set_index("structure")["couples_to"]
    assert calls.to_dict() == {"control_dna": "nucleus", "control_membrane": "membrane", "nucleoli": "neither"}
    interphase = summary[summary["phase"] == "interphase"].set_index("structure")
    assert (interphase["normalized_difference_ci_low"] <= interphase["normalized_difference"]).all()
    assert (interphase["normalized_difference"] <= interphase["normalized_difference_ci_high"]).all()


def test_real_model_swap_with_own_reference_changes_nothing(tiny_models):
    """Swapping a channel for the cell's own channel gives back the cell's ELBO (same noise, same reference)."""
    model, hparams = load_model(tiny_models["target"])
    cells = pd.read_parquet(tiny_models["cells"]).head(5)
    images = io.read_cells(tiny_models["store"], cells["store_index"].to_numpy(), channels=[0, 1, 2])
    labels = cells["structure"].map({s: i for i, s in enumerate(hparams["structures"])}).to_numpy()
    noise = torch.randn(5, 2, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    own = np.repeat(np.arange(5)[:, None], 3, axis=1)
    elbos = coupling.swap_elbos(model, images, labels, donor_references=images[:, :2], donors=own, noise=noise,
                                batch_size=7)
    assert elbos.shape == (5, 7) and (elbos < 0).all()
    np.testing.assert_allclose(elbos, np.repeat(elbos[:, :1], 7, axis=1), rtol=1e-5)
    shuffled = coupling.swap_elbos(model, images, labels, donor_references=images[:, :2], donors=(own + 1) % 5,
                                   noise=noise, batch_size=7)
    np.testing.assert_allclose(shuffled[:, 0], elbos[:, 0], rtol=1e-5)
    assert not np.allclose(shuffled[:, 1:], elbos[:, 1:])


def test_real_model_deterministic_and_batch_independent(tiny_models):
    model, hparams = load_model(tiny_models["target"])
    cells = pd.read_parquet(tiny_models["cells"])
    kwargs = {"structures": list(hparams["structures"]), "store": tiny_models["store"]}
    first = coupling.measure_coupling(model, cells, settings=SETTINGS, **kwargs)
    assert set(first["split"]) == {"test", "val"} and len(first) == 12
    assert all(cell not in set(row) for cell, row in zip(first["store_index"], first["donor_store_indices"],
                                                          strict=True))
    again = coupling.measure_coupling(model, cells, settings=SETTINGS.__class__(**{**SETTINGS.__dict__,
                                                                                   "batch_size": 5}), **kwargs)
    # scores are differences of two float32 log-ELBOs, each summed over every voxel: equal to ~1e-5 across batchings
    np.testing.assert_allclose(again[list(coupling.SCORES)], first[list(coupling.SCORES)], rtol=1e-5, atol=1e-5)
    other = coupling.measure_coupling(model, cells, settings=SETTINGS.__class__(**{**SETTINGS.__dict__, "seed": 4}),
                                      **kwargs)
    assert not np.allclose(other["membrane_coupling"], first["membrane_coupling"])


def _constructed_cells(shift: float, *, n_mitotic: int = 8) -> pd.DataFrame:
    """Two structures of 30 cells in 6 FOVs, the first ``n_mitotic`` of each mitotic (spread over the FOVs)."""
    rng = np.random.default_rng(5)
    rows = []
    for structure, offset in (("shifted", shift), ("same", 0.0)):
        for index in range(30):
            mitotic = index < n_mitotic
            membrane = rng.normal(0.2 + (offset if mitotic else 0.0), 0.05)
            nucleus = rng.normal(0.1, 0.05)
            rows.append({"structure": structure, "phase": "mitosis" if mitotic else "interphase",
                         "imaging_fov": f"{structure}_{index % 6}", "membrane_coupling": membrane,
                         "nucleus_coupling": nucleus, "membrane_rank": rng.uniform(0.6, 1.0),
                         "nucleus_rank": rng.uniform(0.55, 0.95)})
    table = pd.DataFrame(rows)
    table["normalized_difference"] = coupling.normalized_difference(table["membrane_coupling"],
                                                                    table["nucleus_coupling"])
    return table


def test_mitosis_test_finds_a_constructed_shift_only():
    table = coupling.mitosis_test(_constructed_cells(-0.2), settings=SETTINGS).set_index(["structure", "score"])
    assert table.loc[("shifted", "membrane_coupling"), "significant"]
    assert table.loc[("shifted", "membrane_coupling"), "difference"] == pytest.approx(-0.2, abs=0.05)
    assert table.loc[("shifted", "membrane_coupling"), "p_value"] == pytest.approx(1 / 2001)
    assert not table.loc[("same", "membrane_coupling"), "significant"]
    assert table.loc[("same", "nucleus_coupling"), "p_value"] > 0.01
    assert (table["n_mitosis"] == 8).all() and (table["iterations"] == 2000).all()
    again = coupling.mitosis_test(_constructed_cells(-0.2), settings=SETTINGS).set_index(["structure", "score"])
    pd.testing.assert_frame_equal(again, table)
    none = coupling.mitosis_test(_constructed_cells(0.0, n_mitotic=0), settings=SETTINGS)
    assert none["p_value"].isna().all() and not none["significant"].any()


def test_summary_calls_undetermined_in_one_fov():
    table = _constructed_cells(0.0, n_mitotic=1)
    summary = coupling.summarize_structures(table, settings=SETTINGS).set_index(["structure", "phase"])
    assert summary.loc[("same", "mitosis"), "couples_to"] == "undetermined"  # one cell, one FOV: no replicate
    two = coupling.summarize_structures(_constructed_cells(0.0, n_mitotic=2), settings=SETTINGS)
    assert two.set_index(["structure", "phase"]).loc[("same", "mitosis"), "couples_to"] == "undetermined"
    # both ranks significant (0.8 and 0.75 on average, 6 FOVs); Eq 4 means 0.2 and 0.1: the membrane dominates
    assert summary.loc[("same", "interphase"), "couples_to"] == "membrane"
    balanced = table.assign(nucleus_coupling=table["membrane_coupling"] + np.random.default_rng(0).normal(
        0, 0.05, len(table)))
    balanced["normalized_difference"] = coupling.normalized_difference(balanced["membrane_coupling"],
                                                                       balanced["nucleus_coupling"])
    calls = coupling.summarize_structures(balanced, settings=SETTINGS).set_index(["structure", "phase"])
    assert calls.loc[("same", "interphase"), "couples_to"] == "both"  # neither channel dominates
    assert summary.loc[("same", "interphase"), ["n_cells", "n_fovs"]].tolist() == [29, 6]


def test_cli_tables_and_figures(tiny_models, tmp_path):
    out = {name: tmp_path / name for name in ("cells.parquet", "structures.csv", "mitosis.csv", "calibration.csv",
                                              "a.png", "b.png")}
    settings = '{"elbo_samples": 2, "coupling_copies": 2, "resampling_iterations": 200}'
    assert main(["measure-coupling", "--settings", settings, "--model", str(tiny_models["target"]), "--store",
                 str(tiny_models["store"]), "--cells", str(tiny_models["cells"]), "--output-cells",
                 str(out["cells.parquet"]), "--output-structures", str(out["structures.csv"]), "--output-mitosis",
                 str(out["mitosis.csv"]), "--output-calibration", str(out["calibration.csv"])]) == 0
    summary = pd.read_csv(out["structures.csv"])
    calibration = pd.read_csv(out["calibration.csv"]).set_index("check")  # every control, measured or not
    assert calibration.index.tolist() == [f"{control} couples to" for control in coupling.CALIBRATION_CONTROLS]
    measured = set(summary.loc[summary["structure"].isin(coupling.CALIBRATION_CONTROLS), "structure"])
    for control in coupling.CALIBRATION_CONTROLS:
        observed = calibration.at[f"{control} couples to", "observed"]
        assert observed.startswith("not measured") != (control in measured), observed
    assert set(summary["couples_to"]) <= {"membrane", "nucleus", "both", "neither", "undetermined"}
    assert summary["n_cells"].sum() == 12
    assert main(["measure-coupling", "--settings", settings, "--model", str(tiny_models["reference"]), "--store",
                 str(tiny_models["store"]), "--cells", str(tiny_models["cells"]), "--output-cells", "x.parquet",
                 "--output-structures", "x.csv", "--output-mitosis", "y.csv", "--output-calibration", "z.csv"]) == 2
    for command, option, table, figure in (("plot-coupling-cells", "--per-cell", "cells.parquet", "a.png"),
                                           ("plot-coupling-structures", "--summary", "structures.csv", "b.png")):
        assert main([command, "--settings", '{"dpi": 60}', option, str(out[table]), "--output",
                     str(out[figure])]) == 0
        assert out[figure].stat().st_size > 10_000 and out[figure].with_suffix(".svg").exists()


def test_phases_come_from_is_mitotic_else_mitotic_stage_else_none():
    both = pd.DataFrame({"is_mitotic": [True, False, None], "mitotic_stage": ["interphase"] * 3})
    assert coupling.cell_phases(both).tolist() == ["mitosis", "interphase", coupling.UNANNOTATED]
    stages = pd.DataFrame({"mitotic_stage": ["interphase", "anaphase_telophase", "unknown", None]})
    assert coupling.cell_phases(stages).tolist() == ["interphase", "mitosis", coupling.UNANNOTATED,
                                                     coupling.UNANNOTATED]
    assert (coupling.cell_phases(pd.DataFrame({"structure": ["golgi"] * 2})) == coupling.UNANNOTATED).all()


def test_cells_without_mitotic_annotation_are_summarized_and_the_mitosis_test_says_why(tiny_models, tmp_path,
                                                                                         caplog):
    """A lab's own cells (no is_mitotic, no mitotic_stage): calls over all cells, the mitosis test skipped with
    its reason in every row, and both figures drawn."""
    cells = pd.read_parquet(tiny_models["cells"]).drop(columns=["is_mitotic", "mitotic_stage"])
    model = OracleTarget(image_shape=(8, 8, 16))
    per_cell = coupling.measure_coupling(model, cells, structures=["control_dna", "control_membrane", "nucleoli"],
                                         store=tiny_models["store"], settings=SETTINGS, splits=ALL_SPLITS)
    assert (per_cell["phase"] == coupling.UNANNOTATED).all() and "is_mitotic" not in per_cell
    summary = coupling.summarize_structures(per_cell, settings=SETTINGS)
    assert summary.set_index("structure")["couples_to"].to_dict() == {
        "control_dna": "nucleus", "control_membrane": "membrane", "nucleoli": "neither"}
    with caplog.at_level("WARNING"):
        mitosis = coupling.mitosis_test(per_cell, settings=SETTINGS)
    assert "no cell has a mitotic annotation" in caplog.text
    assert len(mitosis) == 3 * len(coupling.SCORES) and mitosis["p_value"].isna().all()
    assert mitosis["note"].str.contains("no mitotic annotation").all() and not mitosis["significant"].any()
    coupling_plots.plot_coupling_cells(per_cell, tmp_path / "a.png", dpi=50)
    coupling_plots.plot_coupling_structures(summary, tmp_path / "b.png", dpi=50)
    assert (tmp_path / "a.png").stat().st_size > 10_000 and (tmp_path / "b.png").stat().st_size > 10_000


def test_a_structure_of_one_cell_is_left_out_of_coupling(tiny_models, caplog):
    cells = pd.read_parquet(tiny_models["cells"])
    lonely = cells.index[(cells["structure"] == "nucleoli") & (cells["split"] == "test")][0]
    cells.loc[lonely, "structure"] = "golgi"
    model = OracleTarget(image_shape=(8, 8, 16))
    with caplog.at_level("WARNING"):
        per_cell = coupling.measure_coupling(model, cells, structures=["control_dna", "control_membrane", "nucleoli",
                                                                      "golgi"],
                                             store=tiny_models["store"], settings=SETTINGS)
    assert "golgi: a single cell" in caplog.text and "golgi" not in set(per_cell["structure"])
    assert len(per_cell) == 11
