"""The target model trained with and without structure weighting, side by side: per-structure reconstruction.

``training.structure_weighting: energy`` divides each structure class's reconstruction error by the class's mean image
energy (:func:`statcell.train.structure_weights`), so that dim, sparse structures count in the loss as much as bright
ones. This trains the target model once per weighting, with the same settings, seed and cells (a finished run's
``results/main/cells.zarr``), and prints the median Pearson correlation of each structure's test cells with their
reconstructions from the posterior means, as ``results/models/reconstruction.csv`` reports it, with the run's own
reference model for the reference rows.

    python bench/bench_structure_weighting.py --run PATH/TO/A/FINISHED/RUN --configfile config/ground_truth_small.yaml \\
        --epochs 24 96 --out bench/results/structure_weighting

The table is written to ``--out``/``reconstruction.csv``; the README's numbers come from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from statcell import train
from statcell.analysis.model_check import check_models
from statcell.config import load_config
from statcell.vocabulary import MAIN_DATASET

ROOT = Path(__file__).resolve().parents[1]
WEIGHTINGS = ("none", "energy")


def training_settings(configfile: Path) -> train.TrainSettings:
    """The target model's settings of ``configfile`` (the schema's defaults where it is silent)."""
    return train.TrainSettings.from_config(load_config(configfile)["training"], "target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run (its main store and models)")
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml",
                        help="the run's training settings (default: the default config)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[24], help="training lengths to compare")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "structure_weighting")
    args = parser.parse_args()
    store = args.run / "results" / MAIN_DATASET / "cells.zarr"
    cells = pd.read_parquet(args.run / "results" / MAIN_DATASET / "cells.parquet")
    reference = args.run / "results" / "models" / "reference.pt"
    base = training_settings(args.configfile)
    rows = []
    for epochs in args.epochs:
        for weighting in WEIGHTINGS:
            settings = dataclasses.replace(base, epochs=epochs, structure_weighting=weighting)
            folder = args.out / f"{weighting}_{epochs}"
            start = time.perf_counter()
            train.train_model("target", store=store, cells=args.run / "results" / MAIN_DATASET / "cells.parquet",
                              settings=settings, checkpoint=folder / "target.ckpt", metrics=folder / "metrics.csv",
                              workdir=folder / "work")
            minutes = (time.perf_counter() - start) / 60
            _, _, reconstruction = check_models(reference, folder / "target.ckpt", store=store, cells=cells)
            target = reconstruction[reconstruction["model"] == "target"]
            rows += [{"epochs": epochs, "weighting": weighting, "structure": row.structure,
                      "median_pearson": row.median_pearson, "train_minutes": round(minutes, 1)}
                     for row in target.itertuples()]
            print(f"{weighting}, {epochs} epochs: trained in {minutes:.1f} min; median r "
                  + ", ".join(f"{row.structure} {row.median_pearson:.2f}" for row in target.itertuples()), flush=True)
            table = pd.DataFrame(rows)
            table.to_csv(args.out / "reconstruction.csv", index=False)  # after each model: a cut-short run keeps it
    wide = table.pivot_table(index="structure", columns=["epochs", "weighting"], values="median_pearson")
    print("\nmedian Pearson r of test cells with their reconstructions (target model)")
    print(wide.to_string(float_format=lambda value: f"{value:.2f}"))


if __name__ == "__main__":
    main()
