"""Inference speed of the trained networks on the CPU: weights in contiguous against channels-last memory.

The analyses (embedding, the coupling, generation, prediction) run the trained networks forward only, on networks
loaded by ``statcell.models.export.load_model``, which puts 3D networks in channels-last memory as training does. This
script times one encode and one decode of a batch, both layouts side by side in one run and interleaved, so that
machine load affects them alike, for the reference and the target model of a preset::

    python bench/bench_inference.py                        # default preset, batch 64, 1 thread
    python bench/bench_inference.py --batch 16 64 --threads 2

It prints milliseconds per image of each layout, the speedup, and the largest difference between the two outputs
(the same computation in another order: rounding only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from statcell.config import load_config, validate_config
from statcell.models.blocks import memory_format
from statcell.models.vae import ReferenceVAE, TargetVAE
from statcell.train import TrainSettings, model_config

def _networks(kind: str, preset: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The preset's network of ``kind`` (conditioned on its colony's structure classes), twice: contiguous and in
    channels-last memory, with the same weights."""
    config = load_config(f"config/{preset}.yaml") if preset != "default" else validate_config({})
    crop = config["crop"]["shape"]
    settings = TrainSettings.from_config(config["training"], kind)
    n_classes = len(config["synthetic"]["structures"])
    vae = model_config(kind, settings, (crop["z"], crop["y"], crop["x"]), n_classes)
    torch.manual_seed(0)
    contiguous = (ReferenceVAE(vae) if kind == "reference" else TargetVAE(vae)).eval()
    channels_last = (ReferenceVAE(vae) if kind == "reference" else TargetVAE(vae)).eval()
    channels_last.load_state_dict(contiguous.state_dict())
    channels_last.to(memory_format=memory_format(vae.ndim))
    return contiguous, channels_last


def _inputs(kind: str, network: torch.nn.Module, batch: int) -> tuple[torch.Tensor, ...]:
    shape = network.config.image_shape
    if kind == "reference":
        return (torch.rand(batch, 2, *shape),)
    n_classes = network.config.n_classes
    return torch.rand(batch, 1, *shape), torch.rand(batch, 2, *shape), torch.randint(0, n_classes, (batch,))


def _forward(network: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.inference_mode():
        encoding = network.encode(*inputs)
        return network.decode(encoding.mean, *inputs[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="default, or a config/<preset>.yaml (paper3d)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"preset {args.preset}, {args.threads} thread(s), median of {args.repeats} interleaved repeats")
    print("| model | batch | contiguous ms/image | channels-last ms/image | speedup | largest difference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("reference", "target"):
        contiguous, channels_last = _networks(kind, args.preset)
        for batch in args.batch:
            inputs = _inputs(kind, contiguous, batch)
            outputs = {name: _forward(net, inputs) for name, net in (("a", contiguous), ("b", channels_last))}
            times: dict[str, list[float]] = {"a": [], "b": []}
            for _ in range(args.repeats):
                for name, network in (("a", contiguous), ("b", channels_last)):
                    start = time.perf_counter()
                    _forward(network, inputs)
                    times[name].append((time.perf_counter() - start) / batch * 1000)
            a, b = statistics.median(times["a"]), statistics.median(times["b"])
            difference = float((outputs["a"] - outputs["b"]).abs().max())
            print(f"| {kind} | {batch} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
