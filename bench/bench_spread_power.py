"""How wide a spread-only drug effect the FOV-level tests find, measured on a finished run's drug set.

#17 asks for a treatment that widens a structure's phenotype without moving its mean, found by the spectrum test
(``dEIG_k``) and missed by the centroid test. Every plant tried in the simulator so far widened the latent spread too
little (README, *Measured*). This measures the bar such a plant has to clear, in the latent space itself: it takes
the drug set's embedded cells of a (structure, drug) whose planted answer is "unchanged", widens the treated arm's
spread along one principal axis of the pair's latents by a factor (its mean kept), and runs the drug analysis's own
FOV-level tests (:func:`statcell.analysis.perturbation.shift_tests`, the run's active dimensions, ``k`` and number of
relabelings) on all FOVs and on random subsets of ``n`` FOVs per arm. A widened arm is a constructed answer, so each
row says which widening each test finds at which number of FOVs; the bar is the run's ``analysis.significance``
over the number of tests of the run's shift table (both latent spaces, every structure and drug): the raw p-value
that the ground-truth table's Holm correction accepts whatever the other tests' p-values (it accepts more where
some are smaller).

    python bench/bench_spread_power.py --run bench/results/default_run

The run is a finished default run (``python bench/bench_run.py --out DIR``); nothing in it is changed. Give
``--configfile`` the config files the run was made with beyond its own ``config/config.yaml``, as Snakemake took them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from statcell.analysis import perturbation
from statcell.config import validate_config
from statcell.seeding import numpy_stream
from statcell.vocabulary import DRUG_DATASET, IMAGING_FOV, MAIN_DATASET

#: (structure, drug) pairs whose planted answer is "unchanged" in the default drug set (paclitaxel spreads the tight
#: junctions' pool: ``statcell.synth.tight_junction_pools``).
UNCHANGED_PAIRS = ("tight_junctions:brefeldin_a", "golgi:paclitaxel")


def pair(text: str) -> tuple[str, str]:
    """A ``structure:drug`` argument as its two names."""
    structure, _, drug = text.partition(":")
    if not structure or not drug:
        raise argparse.ArgumentTypeError(f"expected structure:drug (e.g. tight_junctions:paclitaxel), got {text!r}")
    return structure, drug


def run_analysis_settings(run: Path, configfiles: list[Path]) -> dict:
    """The ``analysis`` section a run was made with: its ``config/config.yaml``, then ``configfiles`` over it (as
    Snakemake merges them), defaults filled in by the schema."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in [run / "config" / "config.yaml", *configfiles]:
        if not path.is_file():
            raise SystemExit(f"config file not found: {path}")
        update_config(config, yaml.safe_load(path.read_text()) or {})
    return validate_config(config)["analysis"]


def widen(latents: np.ndarray, treated: np.ndarray, *, axis: np.ndarray, factor: float) -> np.ndarray:
    """The latents with the treated cells' deviations along ``axis`` (a unit vector) from their own mean scaled by
    ``factor``: the treated arm's standard deviation along it times ``factor``, its mean unchanged.

    Examples
    --------
    >>> x = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 4.0], [2.0, 6.0]])
    >>> widen(x, np.array([False, False, True, True]), axis=np.array([0.0, 1.0]), factor=2.0)[2:].tolist()
    [[0.0, 3.0], [2.0, 7.0]]
    """
    widened = latents.copy()
    arm = latents[treated]
    along = (arm - arm.mean(axis=0)) @ axis
    widened[treated] = arm + np.outer((factor - 1.0) * along, axis)
    return widened


def principal_axes(latents: np.ndarray) -> np.ndarray:
    """Unit principal axes ``(d, d)`` of the latents' covariance, as columns, largest variance first."""
    values, vectors = np.linalg.eigh(np.cov(latents, rowvar=False))
    return vectors[:, np.argsort(values)[::-1]]


def fov_subset(units: np.ndarray, treated: np.ndarray, *, per_arm: int, rng: np.random.Generator) -> np.ndarray:
    """Cells of ``per_arm`` FOVs drawn at random from each arm (all of an arm's FOVs where it has no more)."""
    keep = np.zeros(len(units), dtype=bool)
    for arm in (False, True):
        fovs = np.unique(units[treated == arm])
        chosen = fovs if len(fovs) <= per_arm else rng.choice(fovs, per_arm, replace=False)
        keep |= (treated == arm) & np.isin(units, chosen)
    return keep


def power_table(latents: np.ndarray, treated: np.ndarray, units: np.ndarray, *, axes: list[int],
                factors: list[float], fovs_per_arm: list[int], draws: int, permutations: int,
                spectrum_components: int, bar: float, seed: int) -> pd.DataFrame:
    """Median raw p-value of each test, and the share of draws whose p-value clears ``bar``, per widening.

    Returns
    -------
    DataFrame
        One row per axis, factor and FOVs per arm: ``axis, sd_factor, fovs_per_arm, draws``, per test
        (``centroid``, ``energy``, ``spectrum``) ``<test>_p`` (median) and ``<test>_found`` (share below ``bar``),
        and ``dEIG`` (median).
    """
    directions = principal_axes(latents)
    most = len(np.unique(units[treated]))
    rows = []
    for axis in axes:
        for factor in factors:
            widened = widen(latents, treated, axis=directions[:, axis], factor=factor)
            for per_arm in fovs_per_arm:
                rng = numpy_stream(seed, "spread power", axis, f"{factor:g}", per_arm)
                tries = 1 if per_arm >= most else draws
                results = []
                for _ in range(tries):
                    keep = fov_subset(units, treated, per_arm=per_arm, rng=rng)
                    results.append(perturbation.shift_tests(
                        widened[keep], treated[keep], units[keep], permutations=permutations,
                        spectrum_components=spectrum_components, rng=rng))
                p = {"centroid": [r.p_value for r in results], "energy": [r.energy_p_value for r in results],
                     "spectrum": [r.spectrum_p_value for r in results]}
                row = {"axis": axis, "sd_factor": factor, "fovs_per_arm": min(per_arm, most), "draws": tries}
                for test, values in p.items():
                    row[f"{test}_p"] = float(np.median(values))
                    row[f"{test}_found"] = float(np.mean(np.asarray(values) < bar))
                row["dEIG"] = float(np.median([r.spectrum_distance for r in results]))
                rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run (bench_run.py --out)")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="config files the run was made with beyond its config/config.yaml")
    parser.add_argument("--pairs", type=pair, nargs="+", default=[pair(text) for text in UNCHANGED_PAIRS],
                        help="structure:drug pairs of the drug set whose planted answer is 'unchanged'")
    parser.add_argument("--axes", type=int, nargs="+", default=[0, 2, 5], help="principal axes widened (0: largest)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0],
                        help="standard-deviation factors along the axis")
    parser.add_argument("--fovs-per-arm", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--draws", type=int, default=5, help="random FOV subsets per row below all FOVs")
    args = parser.parse_args()

    shifts_path = args.run / "results" / "analysis" / "perturbation" / "shifts.csv"
    if not shifts_path.is_file():
        raise SystemExit(f"{shifts_path} not found: --run must be a finished default run (bench/bench_run.py --out)")
    config = run_analysis_settings(args.run, args.configfile)
    shifts = pd.read_csv(shifts_path)
    tests = int(shifts["p_value"].notna().sum())
    bar = config["significance"] / tests
    results = args.run / "results"
    cells = pd.read_parquet(results / DRUG_DATASET / "cells.parquet")
    table = perturbation.treatments(pd.read_parquet(results / DRUG_DATASET / "embeddings" / "target.parquet"), cells)
    dimensions = pd.read_csv(results / MAIN_DATASET / "embeddings" / "target_dimensions.csv")
    active = perturbation.active_dimensions(dimensions, min_kl=config["active_kl_nats"])
    control = perturbation.resolve_control(table["drug"], config["control_treatment"])
    print(f"target space, {len(active)} active dimensions, k = {config['spectrum_components']}, "
          f"{config['permutations']} relabelings; bar: raw p < {config['significance']} / {tests} tests = {bar:.2g}")
    pd.set_option("display.width", 200)
    for structure, drug in args.pairs:
        chosen = ((table["structure"] == structure) & table["drug"].isin([control, drug])).to_numpy()
        if not chosen.any():
            raise SystemExit(f"no {structure} cells of {control} or {drug} in {results / DRUG_DATASET}")
        latents = perturbation.latent_means(table.loc[chosen], dimensions=active)
        treated = (table.loc[chosen, "drug"] == drug).to_numpy()
        units = table.loc[chosen, IMAGING_FOV].to_numpy().astype(str)
        print(f"\n{structure}, {drug} against {control}: {int((~treated).sum())} + {int(treated.sum())} cells, "
              f"{len(np.unique(units[~treated]))} + {len(np.unique(units[treated]))} FOVs")
        power = power_table(latents, treated, units, axes=args.axes, factors=args.factors,
                            fovs_per_arm=args.fovs_per_arm, draws=args.draws, permutations=config["permutations"],
                            spectrum_components=config["spectrum_components"], bar=bar, seed=0)
        print(power.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
