"""Time the synthetic-colony generator ``statcell.synth.synthesize_fov`` against an earlier version of it.

Both versions generate the same FOV plans (a mix of structures) of the default configuration, interleaved so that
machine load affects them alike; the script prints, per FOV, the median seconds of each version, the speedup and the
peak memory traced during an untimed warm-up run. Run from the repository root::

    cp statcell/synth.py /tmp/synth_before.py        # before changing synth.py
    python bench/bench_synth.py --before /tmp/synth_before.py --fovs 6 --repeats 3

Without ``--before`` the current module is compared with itself (a check of the timing noise).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

from statcell import config, synth

#: FOVs taken round-robin from these ``(drug, structure)`` groups of the plan.
MIX: tuple[tuple[str, str], ...] = (
    ("", "golgi"),
    ("", "microtubules"),
    ("", "mitochondria"),
    ("", "nucleoli"),
    ("", "control_random_structure"),
    ("paclitaxel", "microtubules"),
)


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file as a module of the given name."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def pick_fov_ids(module: ModuleType, settings: object, count: int) -> list[str]:
    """The first ``count`` FOV names of the plan, round-robin over the groups of :data:`MIX`."""
    groups = [[plan.fov_id for plan in module.plan_fovs(settings) if (plan.drug, plan.structure) == key]
              for key in MIX]
    mixed = [fov_id for row in itertools.zip_longest(*groups) for fov_id in row if fov_id is not None]
    return mixed[:count]


def run_once(module: ModuleType, plan: object, settings: object) -> float:
    """Seconds taken by one call of ``module.synthesize_fov``."""
    start = time.perf_counter()
    module.synthesize_fov(plan, settings)
    return time.perf_counter() - start


def peak_mib(module: ModuleType, plan: object, settings: object) -> float:
    """Peak traced memory (MiB) of one call of ``module.synthesize_fov``."""
    tracemalloc.start()
    try:
        module.synthesize_fov(plan, settings)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, time both versions and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="synth.py of the earlier version (default: the current module)")
    parser.add_argument("--fovs", type=int, default=6, help="number of FOVs (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per FOV and version (default 3)")
    args = parser.parse_args(argv)

    versions = {"before": load_module(args.before, "synth_before") if args.before else synth, "after": synth}
    section = config.validate_config({})["synthetic"]
    settings = {name: module.SynthSettings.from_config(section) for name, module in versions.items()}
    plans = {name: {plan.fov_id: plan for plan in module.plan_fovs(settings[name])}
             for name, module in versions.items()}
    fov_ids = pick_fov_ids(synth, settings["after"], args.fovs)
    print(f"FOV shape {settings['after'].fov_shape}, {len(fov_ids)} FOVs x {args.repeats} repeats", flush=True)

    peaks = {(name, fov_id): peak_mib(module, plans[name][fov_id], settings[name])  # also the warm-up run
             for fov_id in fov_ids for name, module in versions.items()}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in peaks}
    for repeat in range(args.repeats):
        order = list(versions) if repeat % 2 == 0 else list(reversed(versions))
        for fov_id in fov_ids:
            for name in order:
                times[name, fov_id].append(run_once(versions[name], plans[name][fov_id], settings[name]))

    header = f"{'fov_id':<32} {'before s':>9} {'after s':>9} {'speedup':>8} {'before MiB':>11} {'after MiB':>10}"
    print(header)
    print("-" * len(header))
    medians = {key: statistics.median(values) for key, values in times.items()}
    for fov_id in fov_ids:
        before, after = medians["before", fov_id], medians["after", fov_id]
        print(f"{fov_id:<32} {before:9.3f} {after:9.3f} {before / after:7.2f}x "
              f"{peaks['before', fov_id]:11.0f} {peaks['after', fov_id]:10.0f}")
    before = statistics.mean(medians["before", fov_id] for fov_id in fov_ids)
    after = statistics.mean(medians["after", fov_id] for fov_id in fov_ids)
    print("-" * len(header))
    print(f"{'mean s, max MiB':<32} {before:9.3f} {after:9.3f} {before / after:7.2f}x "
          f"{max(peaks['before', f] for f in fov_ids):11.0f} {max(peaks['after', f] for f in fov_ids):10.0f}")


if __name__ == "__main__":
    main()
