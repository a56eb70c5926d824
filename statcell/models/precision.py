"""The numeric precision models train and are evaluated at: bfloat16 where the chip multiplies it natively.

Training takes ``training.precision`` (a Lightning precision); every analysis that runs a trained model takes
``analysis.precision`` and runs it inside :func:`evaluation_precision`. Both resolve ``auto`` the same way
(:func:`resolved_precision`). A model trained in ``bf16-mixed`` chose its best epoch by a validation ELBO computed in
bf16, so evaluating it in bf16 measures the model that was chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: The precisions an analysis evaluates trained models at (on the CPU, where the analyses run).
EVALUATION_PRECISIONS = ("auto", "32-true", "bf16-mixed")


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions: AMX tiles or AVX-512 BF16 (Intel Xeon since Cooper Lake,
    AMD since Zen 4). Elsewhere PyTorch emulates bf16, slower than float32. The probes are PyTorch's own (private: a
    PyTorch without them counts as no)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolved_precision(requested: str, *, on_gpu: bool, cpu_bf16: bool | None = None) -> str:
    """The Lightning precision a model runs at: ``requested``, or for ``auto`` bf16 mixed precision where the chip
    multiplies bf16 matrices natively (a GPU, or a CPU where ``cpu_bf16``, by default :func:`cpu_multiplies_bf16`)
    and float32 elsewhere.

    On the 2-core Intel Xeon with AMX of the README the default run's two trainings ran 1.2x faster in bf16, and its
    models and calls came out as in float32 (README, *Measured*).

    Examples
    --------
    >>> [resolved_precision("auto", on_gpu=False, cpu_bf16=native) for native in (True, False)]
    ['bf16-mixed', '32-true']
    >>> resolved_precision("32-true", on_gpu=True)
    '32-true'
    """
    if requested != "auto":
        return requested
    if on_gpu:
        return "bf16-mixed"
    return "bf16-mixed" if (cpu_multiplies_bf16() if cpu_bf16 is None else cpu_bf16) else "32-true"


@contextlib.contextmanager
def evaluation_precision(requested: str, *, cpu_bf16: bool | None = None) -> Iterator[str]:
    """Run the trained models called inside at ``requested`` precision on the CPU (``analysis.precision``); a model
    moved to a GPU inside runs as it would outside (float32).

    ``bf16-mixed`` is PyTorch's CPU autocast to bfloat16: convolutions and matrix products in bf16, reductions and
    the losses (:mod:`statcell.models.loss` casts to float32) in float32, as in training. On the 2-core Xeon with AMX
    of the README the default run's coupling measurement took half the time, with the same calls
    (``bench/bench_evaluation.py``); ``tests/test_precision.py`` bounds the ELBOs' departure from float32.

    Parameters
    ----------
    requested : {"auto", "32-true", "bf16-mixed"}
        The precision; ``auto`` resolves as in :func:`resolved_precision` on a CPU.
    cpu_bf16 : bool, optional
        Whether the CPU multiplies bf16 natively (default: :func:`cpu_multiplies_bf16`).

    Yields
    ------
    str
        The precision the models run at: ``32-true`` or ``bf16-mixed``.

    Raises
    ------
    ValueError
        If ``requested`` is not one of :data:`EVALUATION_PRECISIONS`.
    """
    if requested not in EVALUATION_PRECISIONS:
        raise ValueError(f"analysis.precision must be one of {', '.join(EVALUATION_PRECISIONS)}, got {requested!r}")
    precision = resolved_precision(requested, on_gpu=False, cpu_bf16=cpu_bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        yield precision
