"""Where the coupling's donors come from, and what it does to the rank statistic's null and power.

The coupling call (:mod:`statcell.analysis.coupling`) ranks a held-out cell's own ELBO among its ELBOs with one
reference channel taken from each of K donors of its structure in its FOV. The pipeline draws donors from every cell
of the FOV, training cells included. Under no coupling the rank has mean 1/2 only if the cell is exchangeable with its
donors, and a training donor is not: the target model was fitted to its reference. This reruns the pipeline's
measurement on a finished run twice, on the same held-out cells with the same ELBO noise: once as the pipeline does,
and once with donors drawn from held-out cells only (validation and test, none trained on), and prints, per
structure in interphase, the FOV-level mean ranks, their one-sided p-values and the Holm-corrected calls of each.

    python bench/bench_coupling_donors.py --run bench/results/default_run

The run is a finished default run (``python bench/bench_run.py --out DIR``); nothing in it is changed. It takes
about twice the run's ``measure_coupling`` job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from bench_spread_power import run_analysis_settings  # bench/ is on the path of a script run from it

from statcell.analysis import coupling
from statcell.train import load_model
from statcell.vocabulary import MAIN_DATASET

#: Splits measured by the pipeline's coupling (neither was trained on).
HELD_OUT = ("test", "val")


def donor_variants(run: Path, configfiles: list[Path]) -> pd.DataFrame:
    """Interphase summaries of the coupling with donors from every cell and from held-out cells only.

    Parameters
    ----------
    run : Path
        A finished default run.
    configfiles : list of Path
        Config files the run was made with beyond its own ``config/config.yaml``.

    Returns
    -------
    DataFrame
        One row per structure: FOVs, and per donor pool (``all``, ``held_out``) and channel the FOV-level mean rank,
        its raw and Holm-adjusted p-values, and the call.
    """
    settings = coupling.CouplingSettings.from_config(run_analysis_settings(run, configfiles))
    results = run / "results"
    model, hparams = load_model(results / "models" / "target.pt")
    cells = pd.read_parquet(results / MAIN_DATASET / "cells.parquet")
    store = results / MAIN_DATASET / "cells.zarr"
    pools = {"all": cells, "held_out": cells[cells["split"].isin(HELD_OUT)]}
    columns = ["structure", "n_fovs"]
    summaries = []
    for pool, donors in pools.items():
        per_cell = coupling.measure_coupling(model, donors, structures=list(hparams["structures"]), store=store,
                                             settings=settings, splits=HELD_OUT)
        summary = coupling.summarize_structures(per_cell, settings=settings)
        summary = summary[summary["phase"] == "interphase"].set_index(columns)
        kept = [f"{channel}_{what}" for channel in coupling.SWAPPED_CHANNELS for what in ("rank", "p_value",
                                                                                          "p_adjusted")]
        summaries.append(summary[[*kept, "couples_to"]].add_prefix(f"{pool}: "))
    return pd.concat(summaries, axis=1).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run (bench_run.py --out)")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="config files the run was made with beyond its config/config.yaml")
    args = parser.parse_args()
    if not (args.run / "results" / "models" / "target.pt").is_file():
        raise SystemExit(f"{args.run}/results/models/target.pt not found: --run must be a finished default run")
    table = donor_variants(args.run, args.configfile)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
