"""The target model trained with and without structure weighting, side by side: per-structure reconstruction.

``training.structure_weighting: energy`` divides each structure class's reconstruction error by the class's mean image
energy (:func:`statcell.train.structure_weights`), so that dim, sparse structures count in the loss as much as bright
ones. This trains the target model once per weighting, with the same settings, seed and cells (a finished run's
``results/main/cells.zarr``), and prints the median Pearson correlation of each structure's test cells with their
reconstructions from the posterior means, as ``results/models/reconstruction.csv`` reports it, with the run's own
reference model for the reference rows, beside a baseline: each test cell's correlation with the mean image of its
structure's training cells.

    python bench/bench_structure_weighting.py --run PATH/TO/A/FINISHED/RUN --configfile config/ground_truth_small.yaml \\
        --epochs 24 96 --out bench/results/structure_weighting

The table is written to ``--out``/``reconstruction.csv``; the README's numbers come from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import train
from statcell.analysis.model_check import check_models, reconstruction_correlations
from statcell.io import read_cells
from statcell.config import load_config
from statcell.vocabulary import MAIN_DATASET

ROOT = Path(__file__).resolve().parents[1]
WEIGHTINGS = ("none", "energy")


def training_settings(configfile: Path) -> train.TrainSettings:
    """The target model's settings of ``configfile`` (the schema's defaults where it is silent)."""
    return train.TrainSettings.from_config(load_config(configfile)["training"], "target")


def class_mean_baseline(store: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """The median correlation of each structure's test cells with the mean image of its training cells: what a
    model that ignored everything but the structure's class would reach."""
    rows = []
    for structure, group in cells.groupby("structure"):
        train_rows, test_rows = group[group["split"] == "train"], group[group["split"] == "test"]
        if train_rows.empty or test_rows.empty:
            continue
        mean_image = read_cells(store, train_rows["store_index"].to_numpy(),
                                channels=[train.STRUCTURE_CHANNEL])[:, 0].mean(axis=0)
        test = read_cells(store, test_rows["store_index"].to_numpy(), channels=[train.STRUCTURE_CHANNEL])[:, 0]
        correlations = reconstruction_correlations(test, np.broadcast_to(mean_image, test.shape))
        rows.append({"epochs": 0, "weighting": "class mean image", "structure": structure,
                     "median_pearson": float(np.nanmedian(correlations)) if np.isfinite(correlations).any()
                     else float("nan"), "train_minutes": 0.0})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run (its main store and models)")
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml",
                        help="the run's training settings (default: the default config)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[24], help="training lengths to compare")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "structure_weighting")
    args = parser.parse_args()
    store, cells_table = (args.run / "results" / MAIN_DATASET / name for name in ("cells.zarr", "cells.parquet"))
    cells = pd.read_parquet(cells_table)
    reference = args.run / "results" / "models" / "reference.pt"
    base = training_settings(args.configfile)
    rows = class_mean_baseline(store, cells).to_dict("records")
    for epochs in args.epochs:
        for weighting in WEIGHTINGS:
            settings = dataclasses.replace(base, epochs=epochs, structure_weighting=weighting)
            folder = args.out / f"{weighting}_{epochs}"
            start = time.perf_counter()
            train.train_model("target", store=store, cells=cells_table,
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
