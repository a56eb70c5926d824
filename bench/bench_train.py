"""Training throughput and peak memory of the models, per configuration, side by side in one run.

For each configuration, in a fresh subprocess (so peak memory is its own), time full optimizer steps (forward,
β-ELBO, backward, Adam) of the reference model and of the target model on random data, after one warm-up step::

    python bench/bench_train.py                       # default preset (batch 32) and paper 3D preset (batch 2), CPU
    python bench/bench_train.py --ndim 2              # the same, 2D: default networks on max projections, paper2d
    python bench/bench_train.py --device cuda --paper-batch 32 --precision bf16   # where a GPU is available

Each model is measured with its weights and images in contiguous and in channels-last memory (``--layouts``).
It prints images per second and the peak resident memory (CPU) or peak allocated GPU memory of each run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

LAYOUTS = ("contiguous", "channels_last")
ROOT = Path(__file__).resolve().parents[1]


def measure(preset: str, kind: str, batch: int, steps: int, device: str, precision: str, ndim: int,
            layout: str) -> dict:
    """Time ``steps`` optimizer steps of one model, its weights and images in ``layout`` (run in the subprocess)."""
    import dataclasses

    import torch

    from statcell.config import load_config, validate_config
    from statcell.models.loss import beta_elbo
    from statcell.models.vae import ReferenceVAE, TargetVAE
    from statcell.train import TrainSettings, memory_format, model_config, to_channels_last

    config = load_config(ROOT / "config" / f"{preset}.yaml") if preset != "default" else validate_config({})
    settings = dataclasses.replace(TrainSettings.from_config(config["training"], kind), ndim=ndim)
    crop_shape = tuple(config["crop"]["shape"][axis] for axis in "zyx")
    model_shape = model_config(kind, settings, crop_shape, 24)
    shape = model_shape.image_shape
    model = (ReferenceVAE if kind == "reference" else TargetVAE)(model_shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, betas=settings.adam_betas)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, model_shape.channels, *shape, generator=generator).to(device)
    inputs = (x,) if kind == "reference" else (x, torch.rand(batch, 2, *shape, generator=generator).to(device),
                                               torch.randint(0, 24, (batch,), generator=generator).to(device))
    if layout == "channels_last":
        model = model.to(memory_format=memory_format(ndim))
        x, *rest = to_channels_last(inputs, ndim=ndim)
        inputs = (x, *rest)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            output = model(*inputs)
            parts = beta_elbo(x, output.reconstruction, output.mean, output.log_var, beta=settings.beta)
        optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        optimizer.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"preset": preset, "ndim": ndim, "model": kind, "layout": layout, "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()), "images_per_s": batch * steps / seconds,
            "seconds_per_step": seconds / steps, "peak_mib": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--default-batch", type=int, default=32)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default 3)")
    parser.add_argument("--ndim", type=int, choices=[2, 3], default=3,
                        help="3: 3D networks (default, paper3d); 2: 2D networks on max projections (paper2d)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                        help="memory layouts of weights and images, each measured (default: both)")
    parser.add_argument("--presets", nargs="+", choices=["default", "paper"], default=["default", "paper"],
                        help="the default preset, the paper preset of --ndim, or both (default)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.run:
        preset, kind, batch, layout = args.run.split(",")
        print(json.dumps(measure(preset, kind, int(batch), args.steps, args.device, args.precision, args.ndim,
                                 layout)))
        return
    print(f"{'preset':8} {'ndim':>4} {'model':9} {'layout':13} {'batch':>5} {'parameters':>11} {'images/s':>9} "
          f"{'s/step':>7} {'peak MiB':>9}")
    presets = {"default": ("default", args.default_batch), "paper": (f"paper{args.ndim}d", args.paper_batch)}
    for preset, batch in (presets[name] for name in args.presets):
        for kind in ("reference", "target"):
            for layout in args.layouts:
                run = subprocess.run([sys.executable, __file__, "--run", f"{preset},{kind},{batch},{layout}",
                                      "--steps", str(args.steps), "--device", args.device, "--precision",
                                      args.precision, "--ndim", str(args.ndim)],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                row = json.loads(run.stdout.strip().splitlines()[-1])
                print(f"{row['preset']:8} {row['ndim']:4d} {row['model']:9} {row['layout']:13} {row['batch']:5d} "
                      f"{row['parameters']:11,d} {row['images_per_s']:9.2f} {row['seconds_per_step']:7.2f} "
                      f"{row['peak_mib']:9.0f}")


if __name__ == "__main__":
    main()
