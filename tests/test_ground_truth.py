"""Ground-truth recovery on a small synthetic run (issue #5, item 8): the real workflow, from raw images to the table.

The colony holds only the structures the checks are about (three controls, the membrane-, nucleus- and
drug-related structures; about 46 cells each, 10 of them held out) and a drug set of four FOVs per structure and
treatment (about 27 cells each: with two, the Golgi shift under brefeldin A was there but missed, raw p 0.03). So
that the run fits a test session, the models take more, smaller steps than the default: batch 16 at a learning rate
of 6e-4 for 80 epochs (1,680 steps; 50 epochs of batch 32 left the target model ignoring its reference and 5 of the
6 coupling checks failed), and ELBOs are averaged over 3 latent samples instead of 10. The checks and their bars
are those of the default run (``statcell.analysis.recovery``), none left out. 6 to 7.5 minutes alone on 2 idle
cores of the machines of 2026-12-01 and 2026-12-02 (Intel); on one about 3× slower, sharing its cores with the rest
of the suite, it had not finished after 40 minutes, hence its own timeout of 80 minutes (``RUN_TIMEOUT_S``).
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from statcell.analysis import recovery
from tests.test_workflow import copy_workflow, snakemake

SMALL = {
    "synthetic": {
        "structures": ["control_blank", "control_dna", "control_membrane", "plasma_membrane", "nuclear_envelope",
                       "nucleoli", "microtubules", "golgi", "tight_junctions"],
        "fovs_per_structure": 3,
        "drug_fovs_per_condition": 4,
    },
    "training": {"epochs": 80, "batch_size": 16, "learning_rate": 0.0006},
    "analysis": {"elbo_samples": 3},
    # The colony holds exactly the structures checked: no control classes built from its cells at normalization.
    "normalize": {"controls": False},
}
TABLE = "results/analysis/ground_truth_recovery.csv"
RUN_TIMEOUT_S = 4800


@pytest.mark.slow
def test_a_small_synthetic_run_recovers_every_planted_answer(tmp_path):
    folder = copy_workflow(tmp_path / "run")
    (folder / "small.yaml").write_text(yaml.safe_dump(SMALL))
    snakemake(folder, TABLE, "--configfile", "small.yaml", timeout=RUN_TIMEOUT_S)

    checked = set(recovery.COUPLING_EXPECTATIONS) | {structure for structure, _, _ in recovery.SHIFT_EXPECTATIONS}
    assert checked == set(SMALL["synthetic"]["structures"]), "the colony holds every structure checked, and no other"
    table = pd.read_csv(folder / TABLE)
    expected = (len(recovery.COUPLING_EXPECTATIONS) + len(recovery.SHIFT_EXPECTATIONS)
                + len(recovery.MEASUREMENT_EXPECTATIONS))
    assert len(table) == expected, f"checks left out:\n{table.to_string()}"
    missed = table[~table["passed"]]
    assert missed.empty, f"planted answers not recovered:\n{missed.to_string()}"
