"""The names the whole pipeline shares: datasets, structures and control classes, mitotic stages, treatments, FOVs.

Values written into tables (``cells.parquet``'s ``structure``, ``mitotic_stage`` and ``drug`` columns) and into paths
(``results/{dataset}/...``). The simulator (:mod:`statcell.synth`) writes them, the workflow's rules and the analyses
read them; what only the simulator needs (localization rules, intensities, stage frequencies) stays in the simulator.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The dataset the models are trained on, ``results/main/``.
MAIN_DATASET = "main"
#: The drug-treated cells, ``results/drugs/``.
DRUG_DATASET = "drugs"
#: Both, in the order the workflow lists them.
DATASETS: tuple[str, ...] = (MAIN_DATASET, DRUG_DATASET)

#: Tagged structures of the synthetic colony (one cell line per FOV, as in the Allen Cell Collection).
REAL_STRUCTURES: tuple[str, ...] = (
    "plasma_membrane",
    "nuclear_envelope",
    "nucleoli",
    "mitochondria",
    "microtubules",
    "golgi",
    "tight_junctions",
    "matrix_adhesions",
)
#: The paper's five control classes, in the order they are built (:func:`statcell.normalize.plan_controls`).
CONTROLS: tuple[str, ...] = (
    "control_blank",
    "control_dna",
    "control_membrane",
    "control_noise",
    "control_random_structure",
)
#: Every structure class of the synthetic colony: the tagged structures, then the controls.
STRUCTURES: tuple[str, ...] = REAL_STRUCTURES + CONTROLS

#: The stage of a cell outside mitosis.
INTERPHASE = "interphase"
#: The paper's four mitotic annotation classes, in the order of mitosis.
MITOTIC_CLASSES: tuple[str, ...] = ("prophase", "early_prometaphase", "prometaphase_metaphase", "anaphase_telophase")
#: Every value of the ``mitotic_stage`` column: interphase, then the mitotic classes.
MITOTIC_STAGES: tuple[str, ...] = (INTERPHASE, *MITOTIC_CLASSES)

#: Channels of every cell crop and of ``cells.zarr``, in order: three intensities, then the cell and nucleus masks.
CROP_CHANNELS: tuple[str, ...] = ("membrane", "dna", "structure", "cell_mask", "nucleus_mask")

#: Column of ``cells.parquet`` naming the field of view a cell was imaged in: the replicate unit of every statistical
#: test (:mod:`statcell.analysis.statistics`).
IMAGING_FOV = "imaging_fov"

#: The solvent-only treatment, the drug set's control where it has one.
VEHICLE = "vehicle"
#: Treatments of the synthetic drug set: the vehicle control, then the drugs.
TREATMENTS: tuple[str, ...] = (VEHICLE, "paclitaxel", "brefeldin_a")


def showcase_order(structures: Sequence[str]) -> list[int]:
    """Positions of cells in the order to show or export a few: one of each tagged structure first, then the other
    cells of tagged structures, controls last (their first cells before their others), each group in given order.

    Examples
    --------
    >>> showcase_order(["control_blank", "golgi", "golgi", "nucleoli", "control_blank", "golgi"])
    [1, 3, 2, 5, 0, 4]
    """
    seen: set[str] = set()
    ranks = []
    for position, structure in enumerate(structures):
        ranks.append((structure in CONTROLS, structure in seen, position))
        seen.add(structure)
    return [position for *_, position in sorted(ranks)]
