"""What starting a process costs the workflow, side by side for source trees (before and after a change).

Snakemake parses the whole workflow at every start: a run, a no-op rerun, and each cluster job twice (the job's
``snakemake`` and the ``srun`` step inside it). Each job's ``python -m statcell`` then imports what its command needs.
For every tree given (a checkout: ``git worktree add /tmp/before REV``), in a fresh copy of its workflow files with
the default config, in alternation so that the machine's drift hits every tree alike, this times:

* ``snakemake --list-rules``: the parse alone (config validation, every rule file, the FOV plan);
* ``snakemake -n``: the parse and the default run's whole DAG, as at the start of a run;
* ``python -c "import statcell.<module>"`` for the modules that many jobs import (the figure commands, training).

and prints the median wall seconds of ``--repeats`` starts per tree::

    python bench/bench_startup.py --trees /tmp/before .
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
from bench_run import copy_workflow, timed_run  # bench/ is on the path of a script run from it

#: Modules imported by many jobs: the latent-space figures and analyses, the store, the simulator's planning.
MODULES = ("statcell.normalize", "statcell.analysis.latent_space", "statcell.synth", "statcell.train")


def timed(command: list[str], *, cwd: Path, tree: Path) -> float:
    """Wall seconds of one run of ``command`` with ``tree``'s statcell first on the path; fails loudly."""
    seconds, done = timed_run(command, cwd=cwd, env={"PYTHONPATH": str(tree)})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{done.stderr[-3000:]}")
    return seconds


def probes(folder: Path) -> dict[str, list[str]]:
    """The commands timed, by name, to run in a copy of a tree's workflow."""
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]
    found = {"snakemake --list-rules": [*snakemake, "--list-rules"], "snakemake -n": [*snakemake, "-n", "-q"]}
    for module in MODULES:
        found[f"import {module}"] = [sys.executable, "-c", f"import {module}"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", type=Path, default=[Path(".")],
                        help="source trees (repository checkouts) to compare; default: this one")
    parser.add_argument("--repeats", type=int, default=7, help="starts per command and tree (median reported)")
    args = parser.parse_args()

    trees = [tree.resolve() for tree in args.trees]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as scratch:
        folders = {}
        for index, tree in enumerate(trees):
            folders[tree] = Path(scratch) / f"tree{index}"
            copy_workflow(tree, folders[tree])
        for repeat in range(args.repeats + 1):  # the first round warms the file cache and is not counted
            for tree in trees:
                for name, command in probes(folders[tree]).items():
                    seconds = timed(command, cwd=folders[tree], tree=tree)
                    if repeat:
                        times.setdefault((name, str(tree)), []).append(seconds)
            print(f"round {repeat} of {args.repeats} done", file=sys.stderr, flush=True)

    table = pd.DataFrame([{"command": name, "tree": tree, "median_s": statistics.median(values),
                           "min_s": min(values)} for (name, tree), values in times.items()])
    wide = table.pivot(index="command", columns="tree", values="median_s")[[str(tree) for tree in trees]]
    wide = wide.loc[list(probes(Path(".")))]
    print(f"median wall seconds of {args.repeats} starts (columns: trees)")
    print(wide.round(2).to_string())


if __name__ == "__main__":
    main()
