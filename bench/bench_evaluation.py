"""Evaluating the trained models in float32 against bf16 (``analysis.precision``), on a finished run, side by side.

The analyses that run the trained networks are the run's longest after training: the coupling measurement decodes
every test cell with K latent draws under each of its reference swaps, and each embedding decodes every cell K times
for its ELBO. This script runs ``statcell measure-coupling`` and ``statcell embed-cells`` (target and reference
models, main dataset) of a finished default run at ``32-true`` and at ``bf16-mixed``, alternating the two so that
the machine's drift hits both alike, each with both cores, and prints:

* the wall seconds of each command at each precision (median of ``--repeats``);
* the coupling calls of both (they must agree) and the largest change of a coupling score;
* how far bf16 moves each model's per-cell ELBOs: the shift common to all cells, the spread of the shifts against
  the ELBOs' spread over cells, and the rank correlation of the two ELBO columns.

Run it in a folder where the default run finished (``bench/bench_run.py --out DIR``)::

    python bench/bench_evaluation.py --run DIR --out /tmp/evaluation
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd
from bench_run import timed_run  # bench/ is on the path of a script run from it

from statcell.config import load_config

PRECISIONS = ("32-true", "bf16-mixed")


def commands(run: Path, out: Path, settings: str) -> dict[str, list[str]]:
    """The timed commands on ``run``'s outputs, writing under ``out``, with the analysis section ``settings``."""
    statcell = [sys.executable, "-m", "statcell"]
    models, main = run / "results" / "models", run / "results" / "main"
    data = ["--store", str(main / "cells.zarr"), "--cells", str(main / "cells.parquet")]
    found = {"measure-coupling": [
        *statcell, "measure-coupling", "--settings", settings, "--model", str(models / "target.pt"), *data,
        *(f"--output-{name}={out / f'coupling_{name}.{suffix}'}" for name, suffix in (
            ("cells", "parquet"), ("structures", "csv"), ("mitosis", "csv"), ("calibration", "csv")))]}
    for kind in ("target", "reference"):
        found[f"embed-cells {kind}"] = [
            *statcell, "embed-cells", "--settings", settings, "--checkpoint", str(models / f"{kind}.pt"), *data,
            "--rank-on", "test", "--embeddings", str(out / f"{kind}.parquet"),
            "--dimensions", str(out / f"{kind}_dimensions.csv")]
    return found


def timed(command: list[str]) -> float:
    """Wall seconds of ``command`` with 2 threads; fails loudly."""
    seconds, done = timed_run(command, env={"OMP_NUM_THREADS": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return seconds


def elbo_agreement(exact: pd.DataFrame, bf16: pd.DataFrame) -> dict[str, float]:
    """How far bf16 moves per-cell ELBOs: common shift, spread of shifts against spread of ELBOs, rank correlation."""
    shift = bf16["elbo"] - exact["elbo"]
    return {"mean_elbo": exact["elbo"].mean(), "mean_shift": shift.mean(),
            "shift_sd_over_elbo_sd": shift.std() / exact["elbo"].std(),
            "largest_shift": shift.abs().max(), "rank_correlation": exact["elbo"].rank().corr(bf16["elbo"].rank())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="folder of a finished default run")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs of both precisions")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command and precision (median)")
    args = parser.parse_args()
    analysis = load_config(args.run / "config" / "config.yaml")["analysis"]
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            out = args.out / precision
            out.mkdir(parents=True, exist_ok=True)
            settings = json.dumps({**analysis, "precision": precision})
            for name, command in commands(args.run, out, settings).items():
                seconds.setdefault((name, precision), []).append(timed(command))
                print(f"{name} at {precision}: {seconds[name, precision][-1]:.1f} s", flush=True)

    table = pd.DataFrame([{"command": name, "precision": precision, "seconds": statistics.median(values)}
                          for (name, precision), values in seconds.items()])
    wide = table.pivot(index="command", columns="precision", values="seconds")[list(PRECISIONS)]
    wide["speedup"] = wide[PRECISIONS[0]] / wide[PRECISIONS[1]]
    print(f"\nwall seconds, median of {args.repeats}, 2 threads:\n{wide.round(2).to_string()}")

    exact, bf16 = (pd.read_csv(args.out / precision / "coupling_structures.csv") for precision in PRECISIONS)
    merged = exact.merge(bf16, on=["structure", "phase"], suffixes=("_32", "_bf16"))
    differ = merged[merged["couples_to_32"] != merged["couples_to_bf16"]]
    print(f"\ncoupling calls: {len(merged) - len(differ)} of {len(merged)} the same in both")
    if not differ.empty:
        print(differ[["structure", "phase", "couples_to_32", "couples_to_bf16"]].to_string(index=False))
    for score in ("membrane_coupling", "nucleus_coupling"):
        change = (merged[f"{score}_bf16"] - merged[f"{score}_32"]).abs()
        print(f"largest change of {score}: {change.max():.4f} (scores up to {merged[f'{score}_32'].abs().max():.3f})")
    agreement = pd.DataFrame({kind: elbo_agreement(*(pd.read_parquet(args.out / precision / f"{kind}.parquet")
                                                     for precision in PRECISIONS))
                              for kind in ("target", "reference")}).T
    print(f"\nper-cell ELBO, bf16 against float32:\n{agreement.round(4).to_string()}")


if __name__ == "__main__":
    main()
