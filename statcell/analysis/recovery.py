"""Ground-truth recovery: does the pipeline find what the synthetic colony was built to contain?

The synthetic colony plants known answers (``statcell.synth``): controls that copy a reference channel, structures
whose localization follows the membrane or the nucleus, a blank channel, drugs that bundle microtubules (paclitaxel)
or disperse the Golgi (brefeldin A), a drug that spreads the tight junctions' pool without moving its mean
(paclitaxel) and one that leaves them alone (brefeldin A), and cells of varying height and volume. This
module turns the analyses' tables into one pass/fail row per expectation (issue #5, item 8):

- coupling (``coupling/structures.csv``, interphase cells): ``control_membrane`` and ``plasma_membrane`` couple to
  the membrane; ``control_dna``, ``nuclear_envelope`` and ``nucleoli`` to the nucleus; ``control_blank`` to neither.
  The three controls calibrate the coupling score (:data:`statcell.analysis.coupling.CALIBRATION_CONTROLS`): the
  simulator images them, and where a colony lacks one, normalization builds it from the colony's own cells
  (``normalize.controls``), so their calls are checked on every synthetic run;
- drug effects (``perturbation/shifts.csv``, target latent space, FOV-level tests, Holm-corrected p against the
  bar): microtubules under paclitaxel and the Golgi under brefeldin A change their distribution (the energy-distance
  test), because the planted answers are changes of distribution: brefeldin disperses the Golgi in 75% of the
  treated cells, a mixture whose centroid moves less than its distribution changes; the centroid test is in the
  observed column beside it. Paclitaxel spreads the tight junctions' cytoplasmic pool without moving its
  mean (``statcell.synth.tight_junction_pools``): the covariance-spectrum test finds it and the centroid test does not.
  Brefeldin A leaves the tight junctions alone (the energy test finds nothing);
- latent space (``latent_space/measurement_recovery.csv``): some top reference dimension correlates with cell
  height and some with cell volume, |Spearman| ≥ 0.6.

Expectations whose structure, drug or measurement is absent from the run are left out (a smaller colony may not hold
them all), never counted as passed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.coupling import CALIBRATION_CONTROLS, NOT_MEASURED, called_phase

COUPLING_EXPECTATIONS: dict[str, str] = {
    "control_membrane": CALIBRATION_CONTROLS["control_membrane"],
    "plasma_membrane": "membrane",
    "control_dna": CALIBRATION_CONTROLS["control_dna"],
    "nuclear_envelope": "nucleus",
    "nucleoli": "nucleus",
    "control_blank": CALIBRATION_CONTROLS["control_blank"],
}
#: What a drug does to a structure: its distribution changes (``"changed"``: the energy test significant), nothing
#: (``"unchanged"``: not significant), or its spread changes with its mean kept (``"spread"``: the spectrum test
#: significant and the centroid test not).
SHIFT_EXPECTATIONS: tuple[tuple[str, str, str], ...] = (
    ("microtubules", "paclitaxel", "changed"),
    ("golgi", "brefeldin_a", "changed"),
    ("tight_junctions", "paclitaxel", "spread"),
    ("tight_junctions", "brefeldin_a", "unchanged"),
)
MEASUREMENT_EXPECTATIONS: tuple[str, ...] = ("cell_height_um", "cell_volume_um3")
log = logging.getLogger(__name__)
MIN_ABS_SPEARMAN = 0.6
#: Columns of the shift table the drug checks read: the FOV-level energy-distance, covariance-spectrum and centroid
#: tests, corrected.
ENERGY_P = "energy_p_adjusted"
SPECTRUM_P = "spectrum_p_adjusted"
CENTROID_P = "p_adjusted"
COLUMNS = ["analysis", "check", "expected", "observed", "passed"]


def coupling_checks(structures: pd.DataFrame, *, phase: str = "interphase",
                    expectations: Mapping[str, str] = COUPLING_EXPECTATIONS) -> pd.DataFrame:
    """Coupling calls of the planted structures against their expected partner channel.

    Parameters
    ----------
    structures : DataFrame
        ``coupling/structures.csv``: ``structure``, ``phase``, ``couples_to``, ``membrane_coupling``,
        ``nucleus_coupling``, ``membrane_p_adjusted``, ``nucleus_p_adjusted`` (and, where present, the mean ranks
        ``membrane_rank``, ``nucleus_rank`` and ``n_fovs``, shown in ``observed``).
    phase : str
        Cell-cycle phase whose calls are checked (interphase holds most cells).
    expectations : mapping of str to str
        The expected call of each structure checked (``membrane``, ``nucleus``, ``neither``).

    Returns
    -------
    DataFrame
        One row per expectation whose structure has a row of ``phase``, columns :data:`COLUMNS`; a structure of
        the run not measured (no held-out cells: 0 ``n_cells``) does not pass, its ``note`` saying why.

    Examples
    --------
    >>> table = pd.DataFrame({"structure": ["control_dna"], "phase": ["interphase"], "couples_to": ["nucleus"],
    ...                       "membrane_coupling": [0.01], "nucleus_coupling": [0.4],
    ...                       "membrane_p_adjusted": [1.0], "nucleus_p_adjusted": [1e-4]})
    >>> coupling_checks(table)[["check", "passed"]].values.tolist()
    [['control_dna couples to', True]]
    """
    rows = []
    calls = structures[structures["phase"] == phase].set_index("structure")
    for structure, expected in expectations.items():
        if structure not in calls.index:
            log.info("coupling check of %s left out: not in the colony, or no %s cells of it", structure, phase)
            continue
        row = calls.loc[structure]
        if "n_cells" in row and row["n_cells"] == 0:  # a structure of the run whose cells were all trained on
            note = row.get("note")
            rows.append({"analysis": "coupling", "check": f"{structure} couples to", "expected": expected,
                         "observed": note if isinstance(note, str) and note else "not measured: no held-out cells",
                         "passed": False})
            continue
        ranks = {channel: f", rank {row[f'{channel}_rank']:.2f}" if f"{channel}_rank" in row else ""
                 for channel in ("membrane", "nucleus")}
        fovs = f", {int(row['n_fovs'])} FOVs" if "n_fovs" in row else ""
        observed = (f"{row['couples_to']} (membrane {row['membrane_coupling']:.3f}{ranks['membrane']}, p_adj "
                    f"{row['membrane_p_adjusted']:.2g}; nucleus {row['nucleus_coupling']:.3f}{ranks['nucleus']}, "
                    f"p_adj {row['nucleus_p_adjusted']:.2g}{fovs})")
        rows.append({"analysis": "coupling", "check": f"{structure} couples to", "expected": expected,
                     "observed": observed, "passed": row["couples_to"] == expected})
    return pd.DataFrame(rows, columns=COLUMNS)


def calibration_checks(structures: pd.DataFrame) -> pd.DataFrame:
    """The calibration controls' coupling calls against the call each must get, on any dataset.

    The controls' answers hold whatever the data (:data:`statcell.analysis.coupling.CALIBRATION_CONTROLS`: a copy of
    a reference channel couples to that channel, a blank to neither), so a real dataset's coupling calls can be
    checked on the controls built from its cells (``normalize.controls``) as the synthetic colony's are on its
    planted answers. Interphase calls are checked where the cells have a mitotic annotation, else the calls over all
    (``unannotated``) cells.

    Parameters
    ----------
    structures : DataFrame
        ``coupling/structures.csv`` (:func:`coupling_checks`).

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, one row per calibration control; a control without measured cells (a dataset
        without controls, or none held out) does not pass, and ``observed`` says so.

    Examples
    --------
    >>> table = pd.DataFrame({"structure": ["control_blank", "golgi"], "phase": ["unannotated"] * 2,
    ...                       "couples_to": ["membrane", "membrane"], "membrane_coupling": [0.2, 0.3],
    ...                       "nucleus_coupling": [0.0, 0.1], "membrane_p_adjusted": [0.01, 0.001],
    ...                       "nucleus_p_adjusted": [1.0, 1.0]})
    >>> calibration_checks(table)[["check", "expected", "passed"]].values.tolist()
    [['control_membrane couples to', 'membrane', False], ['control_dna couples to', 'nucleus', False], ['control_blank couples to', 'neither', False]]
    """
    phase = called_phase(structures["phase"])
    measured = coupling_checks(structures, phase=phase, expectations=CALIBRATION_CONTROLS).set_index("check")
    rows = []
    for control, expected in CALIBRATION_CONTROLS.items():
        check = f"{control} couples to"
        if check in measured.index:
            rows.append({"check": check, **measured.loc[check].to_dict()})
        else:
            rows.append({"analysis": "coupling", "check": check, "expected": expected, "passed": False,
                         "observed": f"{NOT_MEASURED}: no {phase} held-out cells of {control} (normalize.controls "
                                     "builds the controls from the dataset's cells)"})
    return pd.DataFrame(rows, columns=COLUMNS)


def shift_checks(shifts: pd.DataFrame, *, significance: float, space: str = "target") -> pd.DataFrame:
    """Drug shifts of the planted responders, the spread-only effect and the non-responder (:data:`SHIFT_EXPECTATIONS`).

    Parameters
    ----------
    shifts : DataFrame
        ``perturbation/shifts.csv``: ``space``, ``structure``, ``drug``, the corrected p-values :data:`ENERGY_P`,
        :data:`SPECTRUM_P` and :data:`CENTROID_P`, and ``distance`` (the centroid shift, reported).
    significance : float
        The corrected p-value below which a test counts as significant.
    space : str
        Latent space whose tests are checked.

    Returns
    -------
    DataFrame
        One row per expectation whose structure and drug are in the table, columns :data:`COLUMNS`; one listed but
        not tested (no control cells: ``note``), or whose FOVs allow no p-value below ``significance`` (its
        ``min_p_value``; an expected "unchanged" would pass by default), does not pass.
    """
    rows = []
    tests = shifts[shifts["space"] == space].set_index(["structure", "drug"])
    for structure, drug, effect in SHIFT_EXPECTATIONS:
        if (structure, drug) not in tests.index:
            log.info("drug-shift check of %s under %s left out: not in the drug set", structure, drug)
            continue
        row = tests.loc[(structure, drug)]
        check = f"{structure} under {drug}"
        if effect == "spread":
            expected = (f"spectrum test: corrected p < {significance:g}; "
                        f"centroid test: corrected p ≥ {significance:g}")
            columns = [SPECTRUM_P, CENTROID_P]
        else:
            expected = f"distribution test: corrected p {'<' if effect == 'changed' else '≥'} {significance:g}"
            columns = [ENERGY_P]
        note = row.get("note")
        missing = [column for column in columns if column not in row]
        p_values = [float(row.get(column, np.nan)) for column in columns]
        untestable = float(row.get("min_p_value", 0.0)) >= significance  # no test could reject: none passes
        if np.isnan(p_values).any() or untestable:  # the analysis's reason, else a table written before it gave one
            if isinstance(note, str) and note:
                reason = note
            elif missing:
                reason = f"not tested: the shift table has no {', '.join(missing)} column"
            elif untestable:
                reason = f"untestable: the FOVs allow no p-value below {float(row['min_p_value']):.2g}"
            else:
                reason = "not tested"
            rows.append({"analysis": "drug shift", "check": check, "expected": expected, "observed": reason,
                         "passed": False})
            continue
        if effect == "spread":
            observed = (f"spectrum corrected p {p_values[0]:.2g} (dEIG {row.get('spectrum_distance', np.nan):.3g}); "
                        f"centroid shift {row.get('distance', np.nan):.3g}, corrected p {p_values[1]:.2g}")
            passed = p_values[0] < significance <= p_values[1]
        else:
            centroid = f"; centroid shift {row['distance']:.3g}, corrected p {row[CENTROID_P]:.2g}" \
                if CENTROID_P in row and "distance" in row else ""
            observed = f"corrected p {p_values[0]:.2g}{centroid}"
            passed = (p_values[0] < significance) == (effect == "changed")
        rows.append({"analysis": "drug shift", "check": check, "expected": expected, "observed": observed,
                     "passed": bool(passed)})
    return pd.DataFrame(rows, columns=COLUMNS)


def measurement_checks(recovery: pd.DataFrame, *, significance: float,
                       min_abs_spearman: float = MIN_ABS_SPEARMAN) -> pd.DataFrame:
    """Top reference dimensions that follow the planted cell height and volume.

    The bar is reachable by chance on few cells: the best of ``dimensions_searched`` correlations on ``n_cells``
    cells reaches ``min_abs_spearman`` with probability at most ``dimensions_searched`` times
    :func:`~statcell.analysis.statistics.spearman_chance`; where that is not below ``significance`` the check is
    untestable and does not pass (on 3 cells, |Spearman| 1 has odds 1 in 3 per dimension).

    Parameters
    ----------
    recovery : DataFrame
        ``latent_space/measurement_recovery.csv``: ``measurement``, ``dimension``, ``rank``, ``spearman`` and,
        where present, ``n_cells`` and ``dimensions_searched``.
    significance : float
        ``analysis.significance``: the largest chance of reaching the bar at which the check is made.
    min_abs_spearman : float
        The bar on the best absolute Spearman correlation.

    Returns
    -------
    DataFrame
        One row per measurement that was correlated, columns :data:`COLUMNS`.
    """
    from statcell.analysis.statistics import spearman_chance

    rows = []
    best = recovery.set_index("measurement")
    for measurement in MEASUREMENT_EXPECTATIONS:
        if measurement not in best.index:
            continue
        row = best.loc[measurement]
        cells = f", {int(row['n_cells'])} cells" if "n_cells" in row else ""
        observed = (f"dimension {int(row['dimension'])} (rank {int(row['rank'])}): Spearman {row['spearman']:.2f}"
                    f"{cells}")
        passed = abs(float(row["spearman"])) >= min_abs_spearman
        if "n_cells" in row and "dimensions_searched" in row:
            chance = min(1.0, int(row["dimensions_searched"]) * spearman_chance(min_abs_spearman, int(row["n_cells"])))
            if chance >= significance:
                observed = (f"untestable: the best of {int(row['dimensions_searched'])} dimensions on "
                            f"{int(row['n_cells'])} cells reaches |Spearman| {min_abs_spearman:g} by chance with "
                            f"probability up to {chance:.2g} ({observed})")
                passed = False
        rows.append({"analysis": "latent space", "check": f"a top reference dimension follows {measurement}",
                     "expected": f"|Spearman| ≥ {min_abs_spearman:g}", "observed": observed, "passed": passed})
    return pd.DataFrame(rows, columns=COLUMNS)


def check_ground_truth(*, coupling: str | Path, shifts: str | Path | None, measurements: str | Path,
                       significance: float) -> pd.DataFrame:
    """Every ground-truth expectation of the synthetic colony, checked against the analyses' tables.

    Parameters
    ----------
    coupling, shifts, measurements : path
        ``coupling/structures.csv``, ``perturbation/shifts.csv`` (None when the run has no drug set) and
        ``latent_space/measurement_recovery.csv``.
    significance : float
        ``analysis.significance``: the bar on corrected p-values.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, one row per checked expectation.
    """
    tables = [coupling_checks(pd.read_csv(coupling))]
    if shifts is not None:
        tables.append(shift_checks(pd.read_csv(shifts), significance=significance))
    tables.append(measurement_checks(pd.read_csv(measurements), significance=significance))
    return pd.concat([table for table in tables if len(table)], ignore_index=True)
