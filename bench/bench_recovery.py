"""Ground-truth recovery on colonies nobody tuned for: the small run of ``config/ground_truth_small.yaml`` on several
synthetic colonies that differ in seed, cell size, pixel size and noise.

The simulator and the analyses' bars were developed on the colony of seed 0; this runs the real workflow from raw
images to ``ground_truth_recovery.csv`` on other colonies and reports, per colony and per check, whether the planted
answer came out. Colony ``k`` (``k = 1 .. --colonies``) has seed ``k`` and draws, from its own random stream, a cell
spacing in 9–11.5 µm, a cell height in 7.5–10 µm, an xy pixel size in 0.18–0.26 µm and a peak of 250–600 photons
(realistic ranges for hiPSC colonies imaged on a spinning disk; the default colony has 10, 8.5, 0.216 and 400).

    python bench/bench_recovery.py --colonies 3 --out bench/results/recovery
    python bench/bench_recovery.py --only 2 3 --out bench/results/recovery_23    # some colonies only

With ``--source manifest`` each colony is read as a lab's own data instead: the colony's images and its
``main_manifest.csv`` (relative paths, no mitotic column, no ground truth) are moved out of ``results/`` and the run
is pointed at them with ``data.source: manifest``. Such a run has no planted answers to score; what it checks is the
coupling calibration on controls built from the lab's cells (``coupling/calibration.csv``: membrane copy → membrane,
DNA copy → nucleus, blank → neither), on all cells since nothing says which are in interphase.

Each colony takes about as long as the ground-truth test (15–25 minutes on 2 cores). The table printed at the end,
and written to ``--out``/``recovery.csv``, is what the README's *Measured* section reports.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from statcell.seeding import numpy_stream

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "envs")
#: The table each source's run ends with: every planted answer, or (a lab's data) the calibration controls' calls.
TABLES = {"synthetic": "results/analysis/ground_truth_recovery.csv",
          "manifest": "results/analysis/coupling/calibration.csv"}
#: Where a manifest-sourced colony keeps its images, outside ``results/`` as a lab's data would be.
LAB_FOLDER = "lab"
#: Ranges the colonies' settings are drawn from, uniformly.
RANGES = {"cell_spacing_um": (9.0, 11.5), "cell_height_um": (7.5, 10.0), "pixel_xy_um": (0.18, 0.26),
          "peak_photons": (250.0, 600.0)}


def colony_settings(index: int) -> dict:
    """The ``synthetic`` overrides of colony ``index`` (seed ``index``, the rest drawn from :data:`RANGES`)."""
    rng = numpy_stream(0, "recovery bench", index)
    drawn = {name: float(rng.uniform(*bounds)) for name, bounds in RANGES.items()}
    return {"seed": index, "cell_spacing_um": round(drawn["cell_spacing_um"], 2),
            "cell_height_um": round(drawn["cell_height_um"], 2),
            "pixel_size_um": {"z": 0.29, "y": round(drawn["pixel_xy_um"], 3), "x": round(drawn["pixel_xy_um"], 3)},
            "camera": {"peak_photons": round(drawn["peak_photons"])}}


def _snakemake(folder: Path, target: str, configfiles: list[str], *, cores: int, what: str) -> None:
    run = subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", str(cores), "--configfile",
                          *configfiles], cwd=folder, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{what}: snakemake failed (see {folder}/logs):\n{run.stderr[-3000:]}")


def run_colony(index: int, folder: Path, *, cores: int, source: str = "synthetic") -> tuple[pd.DataFrame, float]:
    """Run the small ground-truth workflow on colony ``index`` in ``folder`` from ``source``; the table it ends with
    (:data:`TABLES`) and its wall time, synthesis included."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        target = folder / name
        if not target.exists():
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, target)
    (folder / "colony.yaml").write_text(yaml.safe_dump({"synthetic": colony_settings(index)}))
    configfiles = ["config/ground_truth_small.yaml", "colony.yaml"]
    start = time.perf_counter()
    if source == "manifest":
        lab = folder / LAB_FOLDER
        if not lab.exists():
            _snakemake(folder, "results/synthetic/main_manifest.csv", configfiles, cores=cores,
                       what=f"colony {index} (synthesis)")
            shutil.move(folder / "results" / "synthetic", lab)
        (folder / "lab.yaml").write_text(yaml.safe_dump(
            {"data": {"source": "manifest", "manifest": f"{LAB_FOLDER}/main_manifest.csv"}}))
        configfiles.append("lab.yaml")
    _snakemake(folder, TABLES[source], configfiles, cores=cores, what=f"colony {index}")
    return pd.read_csv(folder / TABLES[source]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--colonies", type=int, default=3, help="colonies to run (seeds 1 .. N)")
    parser.add_argument("--only", type=int, nargs="+", metavar="K",
                        help="run only these colonies (seeds), e.g. --only 2 3, instead of 1 .. --colonies")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recovery",
                        help="folder of the colonies' runs and of recovery.csv")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--source", choices=sorted(TABLES), default="synthetic",
                        help="read each colony as the synthetic source (every planted answer) or as a lab's manifest "
                             "(the calibration of the coupling on built controls)")
    args = parser.parse_args()
    indices = args.only or list(range(1, args.colonies + 1))
    tables = []
    for index in indices:
        settings = colony_settings(index)
        print(f"colony {index}: {settings}", flush=True)
        table, seconds = run_colony(index, args.out / f"colony_{index}", cores=args.cores, source=args.source)
        print(f"  {int(table['passed'].sum())} of {len(table)} checks passed in {seconds / 60:.1f} min",
              flush=True)
        tables.append(table.assign(colony=index, seed=index, source=args.source, minutes=round(seconds / 60, 1),
                                   **{key: str(value) for key, value in settings.items() if key != "seed"}))
    result = pd.concat(tables, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / "recovery.csv", index=False)
    wide = result.pivot(index="check", columns="colony", values="passed")
    print("\nrecovered (rows: checks, columns: colonies)")
    print(wide.replace({True: "yes", False: "NO"}).to_string())
    print(f"\n{int(result['passed'].sum())} of {len(result)} checks passed over {len(indices)} colonies")
    missed = result[~result["passed"]]
    if len(missed):
        print("\nmissed:\n" + missed[["colony", "check", "expected", "observed"]].to_string(index=False))
    sys.exit(0 if np.all(result["passed"]) else 1)


if __name__ == "__main__":
    main()
