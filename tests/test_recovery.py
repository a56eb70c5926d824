"""Ground-truth checks: each planted answer passes or fails on constructed analysis tables."""

from __future__ import annotations

import pandas as pd
import pytest

from statcell.analysis import recovery
from statcell.cli import main


def _coupling(calls: dict[str, str]) -> pd.DataFrame:
    rows = [{"structure": structure, "phase": phase, "couples_to": call, "membrane_coupling": 0.1,
             "nucleus_coupling": 0.2, "membrane_p_adjusted": 0.5, "nucleus_p_adjusted": 0.001}
            for structure, call in calls.items() for phase in ("interphase", "mitosis")]
    table = pd.DataFrame(rows)
    table.loc[table["phase"] == "mitosis", "couples_to"] = "undetermined"  # only interphase is checked
    return table


def test_coupling_checks_compare_each_planted_partner():
    calls = dict(recovery.COUPLING_EXPECTATIONS, nucleoli="membrane")
    checks = recovery.coupling_checks(_coupling(calls)).set_index("check")
    assert len(checks) == len(recovery.COUPLING_EXPECTATIONS)
    assert not checks.loc["nucleoli couples to", "passed"]
    assert checks.drop("nucleoli couples to")["passed"].all()


def test_absent_structures_are_left_out_not_passed():
    checks = recovery.coupling_checks(_coupling({"control_dna": "nucleus", "golgi": "neither"}))
    assert checks["check"].tolist() == ["control_dna couples to"]


def test_a_structure_of_the_run_without_measured_cells_is_a_failed_check_saying_why():
    """Not measured is not passed: a calibration control whose cells all trained is listed, with its note."""
    table = _coupling({"control_dna": "not measured", "control_membrane": "membrane"}).assign(n_cells=20, note="")
    unmeasured = table["structure"] == "control_dna"
    table.loc[unmeasured, "n_cells"] = 0
    table.loc[unmeasured, "note"] = "not measured: none of its cells is in the measured splits (all in training)"
    checks = recovery.coupling_checks(table).set_index("check")
    assert checks["passed"].to_dict() == {"control_membrane couples to": True, "control_dna couples to": False}
    assert checks.loc["control_dna couples to", "observed"].startswith("not measured: none of its cells")


def test_shift_checks_need_responders_significant_and_tight_junctions_not():
    shifts = pd.DataFrame({"space": ["target"] * 4 + ["reference"],
                           "structure": ["microtubules", "golgi", "tight_junctions", "tight_junctions", "golgi"],
                           "drug": ["paclitaxel", "brefeldin_a", "paclitaxel", "brefeldin_a", "brefeldin_a"],
                           "energy_p_adjusted": [0.001, 0.02, 1.0, 0.004, 0.0001],
                           "spectrum_p_adjusted": [1.0, 1.0, 0.002, 1.0, 1.0], "spectrum_distance": 0.5,
                           "distance": 0.3, "p_adjusted": [0.5, 0.001, 0.6, 1.0, 1.0]})
    checks = recovery.shift_checks(shifts, significance=0.01).set_index("check")
    assert "centroid shift 0.3, corrected p 0.5" in checks.loc["microtubules under paclitaxel", "observed"]
    assert checks["passed"].to_dict() == {"microtubules under paclitaxel": True, "golgi under brefeldin_a": False,
                                          "tight_junctions under paclitaxel": True,
                                          "tight_junctions under brefeldin_a": False}


@pytest.mark.parametrize("spectrum_p, centroid_p, passed", [(0.002, 0.6, True), (0.002, 0.004, False),
                                                             (0.02, 0.6, False), (float("nan"), 0.6, False)])
def test_the_spread_only_effect_needs_the_spectrum_test_and_not_the_centroid_test(spectrum_p, centroid_p, passed):
    """A centroid test that also fires means the drug moved the mean: not the planted spread-only answer."""
    shifts = pd.DataFrame({"space": ["target"], "structure": ["tight_junctions"], "drug": ["paclitaxel"],
                           "energy_p_adjusted": [0.5], "spectrum_p_adjusted": [spectrum_p],
                           "spectrum_distance": [0.4], "distance": [0.2], "p_adjusted": [centroid_p]})
    check = recovery.shift_checks(shifts, significance=0.01).iloc[0]
    assert check["passed"] == passed
    assert check["expected"].startswith("spectrum test: corrected p < 0.01")


def test_an_untested_shift_is_listed_and_does_not_pass():
    shifts = pd.DataFrame({"space": ["target"] * 2, "structure": ["tight_junctions", "golgi"],
                           "drug": ["paclitaxel", "brefeldin_a"], "energy_p_adjusted": [float("nan"), 0.001],
                           "note": ["not tested: no vehicle cells of tight_junctions in the drug set", ""]})
    checks = recovery.shift_checks(shifts, significance=0.01).set_index("check")
    assert checks["passed"].to_dict() == {"tight_junctions under paclitaxel": False, "golgi under brefeldin_a": True}
    assert "no vehicle cells" in checks.loc["tight_junctions under paclitaxel", "observed"]


def test_a_shift_whose_fovs_allow_no_significant_p_value_is_untestable_and_does_not_pass():
    """One FOV per arm allows 2 relabelings, p ≥ 1: an expected 'unchanged' would pass whatever the drug did."""
    shifts = pd.DataFrame({"space": ["target"] * 2, "structure": ["tight_junctions", "golgi"],
                           "drug": ["brefeldin_a"] * 2, "energy_p_adjusted": [1.0, 0.001],
                           "min_p_value": [1.0, 0.0005], "note": ["untestable: 1 control and 1 treated FOVs", ""]})
    checks = recovery.shift_checks(shifts, significance=0.01).set_index("check")
    assert checks["passed"].to_dict() == {"tight_junctions under brefeldin_a": False, "golgi under brefeldin_a": True}
    assert checks.loc["tight_junctions under brefeldin_a", "observed"].startswith("untestable: 1 control")


def test_the_calibrating_controls_are_checked_with_the_calls_coupling_expects():
    from statcell.analysis.coupling import CALIBRATION_CONTROLS

    assert CALIBRATION_CONTROLS == {"control_membrane": "membrane", "control_dna": "nucleus",
                                    "control_blank": "neither"}
    assert {name: recovery.COUPLING_EXPECTATIONS[name] for name in CALIBRATION_CONTROLS} == CALIBRATION_CONTROLS
    checks = recovery.coupling_checks(_coupling({"control_membrane": "membrane", "control_dna": "membrane",
                                                 "control_blank": "neither"})).set_index("check")
    assert checks["passed"].to_dict() == {"control_membrane couples to": True, "control_dna couples to": False,
                                          "control_blank couples to": True}


def test_calibration_is_checked_on_interphase_cells_or_else_on_unannotated_ones():
    from statcell.analysis.coupling import CALIBRATION_CONTROLS

    calls = {"control_membrane": "membrane", "control_dna": "neither", "control_blank": "neither",
             "golgi": "membrane"}
    annotated = recovery.calibration_checks(_coupling(calls)).set_index("check")
    assert annotated["passed"].to_dict() == {"control_membrane couples to": True, "control_dna couples to": False,
                                             "control_blank couples to": True}  # golgi is no control: not checked
    unannotated = _coupling(calls).query("phase == 'interphase'").assign(phase="unannotated")
    assert recovery.calibration_checks(unannotated).set_index("check")["passed"].equals(annotated["passed"])
    without = recovery.calibration_checks(_coupling({"golgi": "membrane"}))  # a dataset without controls
    assert list(without.columns) == recovery.COLUMNS and not without["passed"].any()
    assert without["check"].tolist() == [f"{control} couples to" for control in CALIBRATION_CONTROLS]
    assert without["observed"].str.startswith("not measured: no interphase held-out cells of control_").all()


def test_measurement_checks_use_the_absolute_correlation():
    table = pd.DataFrame({"measurement": ["cell_height_um", "cell_volume_um3"], "dimension": [3, 5],
                          "rank": [1, 2], "spearman": [-0.75, 0.41]})
    checks = recovery.measurement_checks(table, significance=0.01)
    assert checks["passed"].tolist() == [True, False]


def test_a_measurement_check_on_so_few_cells_that_chance_reaches_the_bar_is_untestable():
    """|Spearman| 1 on 3 cells: 1 in 3 per dimension by chance (helper probe's one-structure colony)."""
    table = pd.DataFrame({"measurement": ["cell_height_um", "cell_volume_um3"], "dimension": [2, 1], "rank": [1, 2],
                          "spearman": [-0.75, -1.0], "n_cells": [150, 3], "dimensions_searched": [4, 2]})
    checks = recovery.measurement_checks(table, significance=0.01).set_index("check")
    assert checks["passed"].tolist() == [True, False]
    assert checks["observed"].iloc[0] == "dimension 2 (rank 1): Spearman -0.75, 150 cells"
    assert checks["observed"].iloc[1].startswith("untestable: the best of 2 dimensions on 3 cells reaches |Spearman| "
                                                 "0.6 by chance with probability up to 0.67")


def test_command_writes_the_table(tmp_path):
    _coupling(recovery.COUPLING_EXPECTATIONS).to_csv(tmp_path / "structures.csv", index=False)
    pd.DataFrame({"measurement": ["cell_height_um"], "dimension": [0], "rank": [1],
                  "spearman": [0.9]}).to_csv(tmp_path / "recovery.csv", index=False)
    status = main(["check-ground-truth", "--settings", "{}", "--coupling", str(tmp_path / "structures.csv"),
                   "--measurements", str(tmp_path / "recovery.csv"), "--shifts", "--output",
                   str(tmp_path / "checks.csv")])
    assert status == 0
    checks = pd.read_csv(tmp_path / "checks.csv")
    assert len(checks) == len(recovery.COUPLING_EXPECTATIONS) + 1 and checks["passed"].all()


def test_a_shift_table_without_the_spectrum_test_names_the_missing_column():
    shifts = pd.DataFrame({"space": ["target"], "structure": ["tight_junctions"], "drug": ["paclitaxel"],
                           "energy_p_adjusted": [0.5], "distance": [0.2], "p_adjusted": [0.6], "note": [""]})
    check = recovery.shift_checks(shifts, significance=0.01).iloc[0]
    assert not check["passed"]
    assert check["observed"] == "not tested: the shift table has no spectrum_p_adjusted column"
