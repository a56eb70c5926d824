"""Training steps under CPU contention: torch threads against the cores a process really has, side by side in one run.

On a machine whose cores are shared (two pytest-xdist workers, two Snakemake jobs), a process that runs torch on
every core competes with the others, and torch's OpenMP threads, which spin while they wait for each other, lose
far more than their share. For the default target model (one optimizer step at ``--batch``, the crop shape of
``--crop``), each in a fresh subprocess, this prints the seconds per step at 1 thread and at all cores, alone and
beside ``--competitors`` busy processes, and with ``OMP_WAIT_POLICY=PASSIVE`` (threads that sleep instead of
spinning); then the time two models take one after the other on every core against side by side on half the cores
each (how the workflow's two independent training rules can share a machine)::

    python bench/bench_threads.py
    python bench/bench_threads.py --crop 16 16 24 --batch 16 --steps 15
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _measure(args: argparse.Namespace) -> None:
    """One measurement, in this process: seconds per optimizer step of the target model, printed as JSON."""
    import torch

    from statcell.config import validate_config
    from statcell.models.loss import beta_elbo
    from statcell.models.vae import TargetVAE
    from statcell.train import TrainSettings, model_config

    torch.set_num_threads(args.threads)
    settings = TrainSettings.from_config(validate_config({})["training"], "target")
    model = TargetVAE(model_config("target", settings, tuple(args.crop), n_classes=9))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    target = torch.rand(args.batch, 1, *args.crop)
    reference = torch.rand(args.batch, 2, *args.crop)
    labels = torch.randint(0, 9, (args.batch,))

    def step() -> None:
        output = model(target, reference, labels)
        loss = beta_elbo(target, output.reconstruction, output.mean, output.log_var, beta=settings.beta).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(json.dumps({"s_per_step": (time.perf_counter() - start) / args.steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, nargs=3, default=[16, 16, 24], metavar=("Z", "Y", "X"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside the contended runs")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args.threads is not None:
        _measure(args)
        return

    cores = os.cpu_count() or 1
    common = ["--crop", *map(str, args.crop), "--batch", str(args.batch), "--steps", str(args.steps)]

    def start(threads: int, *, passive: bool = False) -> subprocess.Popen:
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        if passive:
            environment["OMP_WAIT_POLICY"] = "PASSIVE"
        return subprocess.Popen([sys.executable, __file__, *common, "--threads", str(threads)], env=environment,
                                stdout=subprocess.PIPE, text=True)

    def result(process: subprocess.Popen) -> float:
        output, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"measurement failed (exit {process.returncode})")
        return json.loads(output.strip().splitlines()[-1])["s_per_step"]

    def run(threads: int, *, passive: bool = False) -> float:
        return result(start(threads, passive=passive))

    print(f"{cores} cores; target model, batch {args.batch}, crop {tuple(args.crop)}; seconds per step")
    print(f"{'beside':>14} {'threads':>7} {'wait policy':>11} {'s/step':>7}")
    settings = [(1, False), (cores, False), (cores, True)]
    for beside in (0, args.competitors):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(beside)]
        try:
            for threads, passive in settings:
                seconds = run(threads, passive=passive)
                print(f"{f'{beside} busy' if beside else 'alone':>14} {threads:>7} "
                      f"{'passive' if passive else 'default':>11} {seconds:>7.3f}", flush=True)
        finally:
            for process in busy:
                process.kill()
    # two models to train (the reference and the target): one after the other on every core, or side by side
    alone = run(cores)
    pair = [result(process) for process in [start(max(1, cores // 2)) for _ in range(2)]]
    print(f"two models, {args.steps} steps each: one after the other at {cores} threads {2 * alone * args.steps:.1f} s; "
          f"side by side at {max(1, cores // 2)} thread(s) each {max(pair) * args.steps:.1f} s "
          f"({', '.join(f'{seconds:.3f}' for seconds in pair)} s/step)", flush=True)


if __name__ == "__main__":
    main()
