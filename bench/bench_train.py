"""Training throughput and peak memory of the models, per configuration, side by side in one run.

For each configuration, in a fresh subprocess (so peak memory is its own), time full optimizer steps (forward,
β-ELBO, backward, Adam) of the reference model and of the target model, after one warm-up step::

    python bench/bench_train.py                       # default preset (batch 32) and paper 3D preset (batch 2), CPU
    python bench/bench_train.py --ndim 2              # the same, 2D: networks on max projections (the β sweep's)
    python bench/bench_train.py --device cuda --paper-batch 32 --precision bf16   # where a GPU is available
    python bench/bench_train.py --data store --workers 8   # batches streamed from a Zarr store, time waiting for them
    python bench/bench_train.py --data random store --presets default   # model speed beside streamed batches
    python bench/bench_train.py --presets paper --adam fused foreach    # Adam's fused kernel beside its foreach update
    python bench/bench_train.py --presets paper --precision bf16 --malloc kept system --rounds 3   # glibc's malloc

Each model is measured with its weights and images in contiguous and in channels-last memory (``--layouts``).
It prints images per second, the peak resident memory (CPU) or peak allocated GPU memory of each run and, with
``--data store``, the fraction of the timed steps spent waiting for the next batch. The floating-point operations of
one step are counted with torch's FLOP counter (matrix products and convolutions, forward and backward), and the
achieved rate is set against the device's matrix-multiply peak in the same precision, measured in the same run
(``--peak-size``; a square product timed after a warm-up, as a stand-in for what the device can do at best).

Each run takes memory as the ``statcell`` command does (``--malloc kept``: freed blocks kept for reuse,
:mod:`statcell.memory`) or with glibc's defaults (``system``). ``--rounds N`` measures every configuration N times,
the configurations interleaved in each round, so that a machine whose speed drifts weighs on all of them alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from statcell.memory import OPT_OUT_VARIABLE, keep_freed_memory

LAYOUTS = ("contiguous", "channels_last")
ROOT = Path(__file__).resolve().parents[1]


def masked_cell(rng, crop_shape: tuple[int, ...]):
    """One stand-in cell ``(C, Z, Y, X)`` as ``cells.zarr`` stores it: intensities inside an ellipsoidal cell (zero
    outside, as the pipeline masks them), a cell mask and a smaller nucleus mask, so it compresses like a real one."""
    import numpy as np

    from statcell.vocabulary import CROP_CHANNELS

    grid = np.meshgrid(*(np.linspace(-1, 1, size) for size in crop_shape), indexing="ij")
    radii = rng.uniform(0.7, 0.95, size=3)
    inside = sum((axis / radius) ** 2 for axis, radius in zip(grid, radii)) <= 1
    nucleus = sum((axis / (0.5 * radius)) ** 2 for axis, radius in zip(grid, radii)) <= 1
    cell = np.zeros((len(CROP_CHANNELS), *crop_shape), np.float32)
    cell[:3] = rng.random((3, *crop_shape), dtype=np.float32) * inside
    cell[3], cell[4] = inside, nucleus
    return cell


def store_loader(folder: Path, kind: str, crop_shape: tuple[int, ...], batch: int, batches: int, ndim: int,
                 workers: int, pin_memory: bool):
    """A loader of ``batches`` batches streamed from a ``cells.zarr`` written like the pipeline's (one Zstd chunk per
    cell), read through the training's dataset class, never cached."""
    import numpy as np
    from torch.utils.data import DataLoader

    from statcell.vocabulary import CROP_CHANNELS
    from statcell.io import encode_cells
    from statcell.normalize import create_cell_store
    from statcell.train import CellDataset

    count = batch * batches
    array = create_cell_store(folder / "cells.zarr", (count, len(CROP_CHANNELS), *crop_shape), voxel_um=1.0)
    rng = np.random.default_rng(0)
    for index in range(count):
        array[index] = encode_cells(masked_cell(rng, crop_shape), array.dtype)
    dataset = CellDataset(folder / "cells.zarr", np.arange(count), kind=kind, labels=rng.integers(0, 24, count),
                          cache_in_memory=False, project=ndim == 2)
    return DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=pin_memory, drop_last=True)


def matmul_peak(device: str, precision: str, size: int, seconds: float = 2.0) -> float:
    """The device's matrix-multiply rate in FLOP/s: ``size``-square products in ``precision`` (fp32 or bf16), repeated
    for about ``seconds`` after a warm-up, on random data (zeros run faster on some hardware)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(left, right)
    synchronize()
    start, repeats = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            torch.matmul(left, right)
        synchronize()
        repeats += 4
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def measure(preset: str, kind: str, batch: int, steps: int, device: str, precision: str, ndim: int,
            layout: str, data: str = "random", workers: int = 0, autotune: bool = False, profile: int = 0,
            compiled: bool = False, fused_adam: bool | None = None) -> dict:
    """Time ``steps`` optimizer steps of one model, its weights and images in ``layout`` (run in the subprocess).

    With ``data="random"`` every step reuses one random batch already on the device; with ``data="store"`` every step
    takes the next batch from a Zarr store through ``workers`` loader processes, and the time spent waiting for it
    (reading, decompressing, collating, copying to the device) is measured apart. ``autotune`` lets cuDNN time its
    convolution algorithms for these shapes on the first step and keep the fastest (``cudnn.benchmark``). With
    ``profile`` > 0, one more step on the first batch runs under torch's profiler, and the ``profile`` operators that
    took the most time of their own on the device (the GPU's kernels, or the CPU) are returned with their shares.
    ``compiled`` runs the model through ``torch.compile`` (fusing the elementwise work around the convolutions); the
    compilation happens in the warm-up step, whose time is returned as ``first_step_s``. ``fused_adam`` picks
    Adam's fused kernel or its per-operation ``foreach`` update; ``None``, as training picks for the device.
    """
    import dataclasses
    import tempfile

    import torch

    torch.backends.cudnn.benchmark = autotune

    from statcell.config import load_config, validate_config
    from statcell.models.blocks import memory_format
    from statcell.models.loss import beta_elbo
    from statcell.models.vae import ReferenceVAE, TargetVAE
    from statcell.train import TrainSettings, adam, model_config, to_channels_last

    config = load_config(ROOT / "config" / f"{preset}.yaml") if preset != "default" else validate_config({})
    settings = dataclasses.replace(TrainSettings.from_config(config["training"], kind), ndim=ndim)
    crop_shape = tuple(config["crop"]["shape"][axis] for axis in "zyx")
    model_shape = model_config(kind, settings, crop_shape, 24)
    shape = model_shape.image_shape
    model = (ReferenceVAE if kind == "reference" else TargetVAE)(model_shape).to(device)
    if layout == "channels_last":
        model = model.to(memory_format=memory_format(ndim))
    optimizer = adam(model.parameters(), learning_rate=settings.learning_rate, betas=settings.adam_betas,
                     device=device, fused=fused_adam)
    forward = torch.compile(model) if compiled else model
    dtype = torch.bfloat16 if precision == "bf16" else None
    on_cuda = device.startswith("cuda")

    def prepared(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        inputs = tuple(tensor.to(device, non_blocking=True) for tensor in inputs)
        return to_channels_last(inputs, ndim=ndim) if layout == "channels_last" else inputs

    if data == "random":
        generator = torch.Generator().manual_seed(0)
        fixed = prepared((torch.rand(batch, model_shape.channels, *shape, generator=generator),) if kind == "reference"
                         else (torch.rand(batch, 1, *shape, generator=generator),
                               torch.rand(batch, 2, *shape, generator=generator),
                               torch.randint(0, 24, (batch,), generator=generator)))
        batches = iter([fixed] * (steps + 1))
    else:
        folder = tempfile.TemporaryDirectory(prefix="bench_train_")  # removed when the subprocess ends
        loader = store_loader(Path(folder.name), kind, crop_shape, batch, steps + 1, ndim, workers, on_cuda)
        batches = (prepared(tuple(loaded)) for loaded in loader)

    def step(inputs: tuple[torch.Tensor, ...]) -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            output = forward(*inputs)
            parts = beta_elbo(inputs[0], output.reconstruction, output.mean, output.log_var, beta=settings.beta)
        optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        optimizer.step()

    from torch.utils.flop_counter import FlopCounterMode

    first = next(batches)
    started = time.perf_counter()
    step(first)  # warm-up (also starts the loader workers, and compiles a compiled model)
    if on_cuda:
        torch.cuda.synchronize()
    first_step = time.perf_counter() - started
    with FlopCounterMode(display=False) as counter:  # one more step on the same batch, its operations counted
        step(first)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    waiting = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        inputs = next(batches)
        waiting += time.perf_counter() - asked
        step(inputs)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = (torch.cuda.max_memory_allocated() / 2**20 if on_cuda
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    top_operators = profiled_operators(lambda: step(first), on_cuda, profile) if profile else []
    return {"preset": preset, "ndim": ndim, "model": kind, "layout": layout, "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()), "images_per_s": batch * steps / seconds,
            "seconds_per_step": seconds / steps, "peak_mib": memory, "flop_per_step": counter.get_total_flops(),
            "data_wait": waiting / seconds if data == "store" else None, "top_operators": top_operators,
            "first_step_s": first_step, "adam": "fused" if optimizer.defaults["fused"] else "foreach"}


def profiled_operators(run_step, on_cuda: bool, count: int) -> list[tuple[str, float, float]]:
    """The ``count`` operators of one call of ``run_step`` with the most self time on the device (on a GPU the time
    of the kernels each operator launched, else CPU time), each as (name, milliseconds, share of the step's total).

    Only operators are ranked, not the kernels beside them: the profiler lists each kernel's time under its launching
    operator too, so counting both would count that time twice.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as profiler:
        run_step()
        if on_cuda:
            torch.cuda.synchronize()
    attribute = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    events = [event for event in profiler.key_averages()
              if event.device_type == DeviceType.CPU and getattr(event, attribute) > 0]
    total = sum(getattr(event, attribute) for event in events) or 1.0
    events.sort(key=lambda event: getattr(event, attribute), reverse=True)
    return [(event.key, getattr(event, attribute) / 1e3, getattr(event, attribute) / total)
            for event in events[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--default-batch", type=int, default=32)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default 3)")
    parser.add_argument("--ndim", type=int, choices=[2, 3], default=3,
                        help="3: 3D networks (default, paper3d); 2: 2D networks on max projections (the β sweep's)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                        help="memory layouts of weights and images, each measured (default: both)")
    parser.add_argument("--presets", nargs="+", choices=["default", "paper"], default=["default", "paper"],
                        help="the default preset, the paper preset of --ndim, or both (default)")
    parser.add_argument("--data", nargs="+", choices=["random", "store"], default=["random"],
                        help="random: one random batch on the device (model speed alone, default); store: batches "
                             "streamed from a Zarr store like cells.zarr, and the fraction of time waiting for them; "
                             "both: each measured, side by side")
    parser.add_argument("--workers", type=int, default=2, help="loader processes with --data store (default 2)")
    parser.add_argument("--cudnn-benchmark", nargs="+", choices=["off", "on"], default=["on"],
                        help="on: cuDNN times its convolution algorithms on the first step and keeps the fastest "
                             "(GPU only; default on, as training on a GPU runs; both: side by side)")
    parser.add_argument("--peak-size", type=int, default=0,
                        help="side of the square matrix products that measure the device's peak (default: 8192 on "
                             "a GPU, 2048 on the CPU)")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"],
                        help="on: the model through torch.compile, its compile time in the warm-up step (default "
                             "off, as training runs; both: side by side)")
    parser.add_argument("--adam", nargs="+", choices=["training", "fused", "foreach"], default=["training"],
                        help="fused: Adam's one-kernel update; foreach: its update by operation; training: as training "
                             "runs on the device (default: fused on a GPU, foreach on the CPU); several: side by side")
    parser.add_argument("--malloc", nargs="+", choices=["kept", "system"], default=["kept"],
                        help="kept: freed memory kept for reuse, as the statcell command runs (statcell.memory); "
                             "system: glibc's defaults; both: side by side (default kept)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every configuration this many times, interleaved (default 1)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after each row, the N operators with the most device time in one profiled step")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.run:
        keep_freed_memory()  # unless the parent set STATCELL_KEEP_FREED_MEMORY=0 (--malloc system)
        preset, kind, batch, layout, data, autotune, compiled, optimizer = args.run.split(",")
        print(json.dumps(measure(preset, kind, int(batch), args.steps, args.device, args.precision, args.ndim,
                                 layout, data, args.workers, autotune == "on", args.profile, compiled == "on",
                                 {"training": None, "fused": True, "foreach": False}[optimizer])))
        return
    peak_size = args.peak_size or (8192 if args.device.startswith("cuda") else 2048)
    peak = matmul_peak(args.device, args.precision, peak_size)
    print(f"matrix-multiply peak on {args.device} in {args.precision}: {peak / 1e9:,.0f} GFLOP/s "
          f"({peak_size}-square products)")
    print(f"{'preset':8} {'ndim':>4} {'model':9} {'layout':13} {'data':6} {'tune':4} {'comp':4} {'adam':7} "
          f"{'malloc':6} {'batch':>5} {'parameters':>11} "
          f"{'images/s':>9} {'s/step':>7} {'peak MiB':>9} {'data wait':>9} {'GFLOP/step':>10} {'GFLOP/s':>9} "
          f"{'of peak':>7} {'first step s':>12}")
    presets = {"default": ("default", args.default_batch), "paper": (f"paper{args.ndim}d", args.paper_batch)}
    configurations = list(itertools.product(
        (presets[name] for name in args.presets), ("reference", "target"), args.layouts, args.data,
        args.cudnn_benchmark, args.compile, args.adam, args.malloc))
    for _round in range(args.rounds):
        for (preset, batch), kind, layout, data, autotune, compiled, optimizer, malloc in configurations:
            spec = f"{preset},{kind},{batch},{layout},{data},{autotune},{compiled},{optimizer}"
            environment = os.environ | {OPT_OUT_VARIABLE: "1" if malloc == "kept" else "0"}
            run = subprocess.run([sys.executable, __file__, "--run", spec, "--steps", str(args.steps), "--device",
                                  args.device, "--precision", args.precision, "--ndim", str(args.ndim),
                                  "--workers", str(args.workers), "--profile", str(args.profile)],
                                 capture_output=True, text=True, check=True, cwd=ROOT, env=environment)
            row = json.loads(run.stdout.strip().splitlines()[-1])
            rate = row["flop_per_step"] / row["seconds_per_step"]
            print(f"{row['preset']:8} {row['ndim']:4d} {row['model']:9} {row['layout']:13} {data:6} {autotune:4} "
                  f"{compiled:4} {row['adam']:7} {malloc:6} "
                  f"{row['batch']:5d} {row['parameters']:11,d} {row['images_per_s']:9.2f} "
                  f"{row['seconds_per_step']:7.3f} {row['peak_mib']:9.0f} {_share(row['data_wait']):>9} "
                  f"{row['flop_per_step'] / 1e9:10.1f} {rate / 1e9:9.1f} {rate / peak:7.1%} "
                  f"{row['first_step_s']:12.1f}")
            for name, milliseconds, share in row["top_operators"]:
                print(f"    {share:6.1%} {milliseconds:9.2f} ms  {name[:100]}")


def _share(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.0%}"


if __name__ == "__main__":
    main()
