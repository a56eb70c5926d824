"""Training and evaluation precision: bf16 where the chip multiplies it natively, and how far bf16 moves the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from statcell.analysis import embed
from statcell.models import TargetVAE, VAEConfig
from statcell.models.precision import cpu_multiplies_bf16, evaluation_precision, resolved_precision
from statcell.train import load_model


def test_auto_precision_is_bf16_where_the_chip_multiplies_bf16_natively():
    assert resolved_precision("auto", on_gpu=True, cpu_bf16=False) == "bf16-mixed"
    assert resolved_precision("auto", on_gpu=False, cpu_bf16=True) == "bf16-mixed"
    assert resolved_precision("auto", on_gpu=False, cpu_bf16=False) == "32-true"
    for chosen in ("32-true", "bf16-mixed", "16-mixed"):  # a precision the config names is kept
        assert resolved_precision(chosen, on_gpu=False, cpu_bf16=False) == chosen
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # the CPU's own flags (Linux) say the same as PyTorch
        flags = set(cpuinfo.read_text().split())
        assert cpu_multiplies_bf16() == bool(flags & {"amx_tile", "avx512_bf16"})


def test_evaluation_precision_autocasts_to_bf16_only_when_it_resolves_to_bf16():
    weight, image = torch.randn(4, 2, 3, 3, 3), torch.randn(1, 2, 6, 6, 6)
    for requested, native, expected in (("auto", True, torch.bfloat16), ("auto", False, torch.float32),
                                        ("bf16-mixed", False, torch.bfloat16), ("32-true", True, torch.float32)):
        with evaluation_precision(requested, cpu_bf16=native) as precision:
            assert torch.nn.functional.conv3d(image, weight).dtype == expected, (requested, native)
        assert precision == ("bf16-mixed" if expected == torch.bfloat16 else "32-true")
    with torch.autocast("cpu", dtype=torch.bfloat16), evaluation_precision("32-true"):  # 32-true means float32
        assert torch.nn.functional.conv3d(image, weight).dtype == torch.float32
    with pytest.raises(ValueError, match="analysis.precision.*16-mixed"):
        with evaluation_precision("16-mixed"):
            pass


def test_networks_in_eval_mode_return_float32_under_bf16_autocast_and_autocasts_dtype_in_training():
    config = VAEConfig(image_shape=(8, 8, 8), channels=1, widths=(4, 8), latent_dim=3, reference_channels=2,
                       n_classes=2)
    model = TargetVAE(config)
    target, reference, label = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 2, 8, 8, 8), torch.tensor([0, 1])
    with evaluation_precision("bf16-mixed", cpu_bf16=True):
        for training, dtype in ((False, torch.float32), (True, torch.bfloat16)):
            out = model.train(training)(target, reference, label)
            assert {out.reconstruction.dtype, out.mean.dtype, out.log_var.dtype} == {dtype}, training


@pytest.mark.parametrize("kind", ["reference", "target"])
def test_bf16_evaluation_stays_within_tolerance_of_float32(tiny_models, kind):
    """Embeddings of the same cells in float32 and in bf16. The ELBOs move by a shift common to all cells, small
    against the mean ELBO, and by a spread small against their spread over cells; the latent means move by a small
    fraction of their size; the ranking of cells by ELBO (what the coupling and drug tests compare) hardly changes.
    The default run's target model measured 0.2% of the mean, 2% of the spread and a rank correlation of 0.9997 on
    its test cells, these tiny models 0.2-0.3%, 0.4-0.6% and 0.9995 (README, *Measured*)."""
    model, card = load_model(tiny_models[kind].with_suffix(".pt"))
    cells = pd.read_parquet(tiny_models["cells"])

    def embedded() -> pd.DataFrame:
        return embed.embed_cells(tiny_models["store"], cells, model=model, hparams=card, samples=4, batch_size=16,
                                 seed=0)

    exact = embedded()
    with evaluation_precision("bf16-mixed", cpu_bf16=True):
        bf16 = embedded()
    means = embed.mean_columns(int(card["config"]["latent_dim"]))
    assert not np.array_equal(bf16[means].to_numpy(), exact[means].to_numpy()), "bf16 was not used"
    elbo_shift = bf16["elbo"] - exact["elbo"]
    assert abs(elbo_shift.mean()) <= 0.01 * abs(exact["elbo"].mean()), elbo_shift.describe()
    assert elbo_shift.std() <= 0.05 * exact["elbo"].std(), elbo_shift.describe()
    mean_shift = np.linalg.norm(bf16[means].to_numpy() - exact[means].to_numpy())
    assert mean_shift <= 0.05 * np.linalg.norm(exact[means].to_numpy()), mean_shift
    assert exact["elbo"].rank().corr(bf16["elbo"].rank()) >= 0.99
