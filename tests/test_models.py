"""The Statistical Cell networks: the paper's parameter counts, shapes in 2D and 3D, conditioning, spectral norm."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from statcell.models import blocks as model_blocks
from statcell.models import (
    Decoder,
    Encoder,
    Encoding,
    ReferenceVAE,
    TargetVAE,
    VAEConfig,
    VAEOutput,
    reparameterize,
)

TINY_WIDTHS = (4, 8, 16)
TINY_LATENT = 8
TINY_SHAPES = {3: (16, 16, 32), 2: (16, 32)}
TINY_CLASSES = 3
BATCH = 2


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """Run single-threaded: on models this small, intra-op threads only add overhead (10x and more on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny_config(ndim: int, model: str) -> VAEConfig:
    if model == "reference":
        return VAEConfig(TINY_SHAPES[ndim], channels=2, widths=TINY_WIDTHS, latent_dim=TINY_LATENT)
    return VAEConfig(
        TINY_SHAPES[ndim],
        channels=1,
        widths=TINY_WIDTHS,
        latent_dim=TINY_LATENT,
        reference_channels=2,
        n_classes=TINY_CLASSES,
    )


def _images(config: VAEConfig, channels: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, channels, *config.image_shape, generator=generator)


def test_paper_parameter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 4.2: 3D reference + target models 122,627,829 parameters, 2D (reference) model 22,279,054."""
    # Spectral norm warms up its power-iteration buffers with 15 iterations, which are slow on the meta device (about
    # 10 s here); they touch buffers only, never parameters, so skip them. Should torch rename this private method,
    # the patch adds an unused attribute and the test just runs slower.
    monkeypatch.setattr(parametrizations._SpectralNorm, "_power_method", lambda *args: None, raising=False)
    with torch.device("meta"):
        reference_3d = ReferenceVAE(VAEConfig.paper(3, "reference"))
        target_3d = TargetVAE(VAEConfig.paper(3, "target"))
        reference_2d = ReferenceVAE(VAEConfig.paper(2, "reference"))
    assert next(reference_3d.parameters()).is_meta
    assert target_3d.config.image_shape == (64, 96, 160) and target_3d.config.n_classes == 24
    assert target_3d.config.widths == (32, 64, 128, 256, 512) and target_3d.config.latent_dim == 512
    assert _n_parameters(reference_3d) + _n_parameters(target_3d) == 122_627_829
    assert _n_parameters(reference_2d) == 22_279_054


def test_paper3d_preset_sweeps_beta_over_the_paper_2d_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/paper3d.yaml's β sweep trains 25 2D reference models with the paper's count (22,279,054)."""
    from statcell.analysis.beta_sweep import training_section
    from statcell.config import DEFAULT_CONFIG_PATH, load_config
    from statcell.train import TrainSettings, model_config

    monkeypatch.setattr(parametrizations._SpectralNorm, "_power_method", lambda *args: None, raising=False)
    config = load_config(DEFAULT_CONFIG_PATH.parent / "paper3d.yaml")
    assert config["beta_sweep"]["count"] == 25
    settings = TrainSettings.from_config(training_section(config["training"], sweep=config["beta_sweep"], index=24))
    assert settings.ndim == 2 and settings.beta == pytest.approx(0.99)
    crop_shape = tuple(config["crop"]["shape"][axis] for axis in "zyx")
    with torch.device("meta"):
        reference = ReferenceVAE(model_config("reference", settings, crop_shape, 24))
    assert reference.config.image_shape == (96, 160) and reference.config.channels == 2
    assert _n_parameters(reference) == 22_279_054


@pytest.mark.parametrize("ndim", [2, 3])
def test_reference_shapes(ndim: int) -> None:
    config = _tiny_config(ndim, "reference")
    model = ReferenceVAE(config)
    x = _images(config, 2, seed=0)
    out = model(x)
    assert isinstance(out, VAEOutput)
    assert out.reconstruction.shape == x.shape
    assert out.mean.shape == out.log_var.shape == out.z.shape == (BATCH, TINY_LATENT)
    assert isinstance(model.encode(x), Encoding)
    assert (out.reconstruction >= 0).all()
    z = torch.randn(5, TINY_LATENT)
    assert model.decode(z).shape == (5, 2, *config.image_shape)
    assert model.sample(3).shape == (3, 2, *config.image_shape)


@pytest.mark.parametrize("ndim", [2, 3])
def test_target_shapes(ndim: int) -> None:
    config = _tiny_config(ndim, "target")
    model = TargetVAE(config)
    target, reference = _images(config, 1, seed=0), _images(config, 2, seed=1)
    label = torch.tensor([0, 2])
    out = model(target, reference, label)
    assert out.reconstruction.shape == target.shape
    assert out.mean.shape == out.log_var.shape == out.z.shape == (BATCH, TINY_LATENT)
    assert model.decode(out.z, reference, label).shape == target.shape
    assert model.sample(reference, label).shape == target.shape


@pytest.mark.parametrize("ndim", [2, 3])
def test_target_is_conditioned_on_reference_and_label(ndim: int) -> None:
    config = _tiny_config(ndim, "target")
    torch.manual_seed(0)
    model = TargetVAE(config).eval()
    target, reference, other_reference = (_images(config, c, seed=s) for c, s in ((1, 0), (2, 1), (2, 2)))
    label, other_label = torch.tensor([0, 1]), torch.tensor([2, 2])
    z = torch.randn(BATCH, TINY_LATENT)
    with torch.no_grad():
        decoded = model.decode(z, reference, label)
        encoded = model.encode(target, reference, label).mean
        assert not torch.allclose(decoded, model.decode(z, other_reference, label))
        assert not torch.allclose(decoded, model.decode(z, reference, other_label))
        assert not torch.allclose(encoded, model.encode(target, other_reference, label).mean)
        assert not torch.allclose(encoded, model.encode(target, reference, other_label).mean)
        one_hot = nn.functional.one_hot(label, TINY_CLASSES).float()
        assert torch.equal(decoded, model.decode(z, reference, one_hot))


def test_every_block_receives_both_conditions() -> None:
    config = _tiny_config(3, "target")
    model = TargetVAE(config)
    out = model(_images(config, 1, seed=0), _images(config, 2, seed=1), torch.tensor([1, 2]))
    (out.reconstruction.mean() + out.mean.mean() + out.log_var.mean()).backward()
    blocks = [*model.encoder.blocks, *model.decoder.blocks]
    assert len(blocks) == 2 * len(TINY_WIDTHS)
    for block in blocks:
        for path in (block.reference_path, block.label_path):
            assert path is not None
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in path.parameters())


def test_reference_model_is_unconditional() -> None:
    model = ReferenceVAE(_tiny_config(3, "reference"))
    blocks = [*model.encoder.blocks, *model.decoder.blocks]
    assert all(block.reference_path is None and block.label_path is None for block in blocks)


@pytest.mark.parametrize("model_type", [ReferenceVAE, TargetVAE])
@pytest.mark.parametrize("ndim", [2, 3])
def test_spectral_norm_on_every_conv_and_linear(model_type: type[nn.Module], ndim: int) -> None:
    model = model_type(_tiny_config(ndim, "reference" if model_type is ReferenceVAE else "target"))
    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    assert len(layers) > 10
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        assert [type(p).__name__ for p in layer.parametrizations.weight] == ["_SpectralNorm"]
    assert sum(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in layers) == len(TINY_WIDTHS)


@pytest.mark.parametrize("shape", [(15, 16, 32), (16, 16, 36), (16, 20)])
def test_ragged_image_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="not divisible by 2 \\*\\* depth = 8"):
        VAEConfig(shape, channels=2, widths=TINY_WIDTHS, latent_dim=TINY_LATENT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_shape": (16,)}, "2 or 3 spatial dimensions"),
        ({"widths": ()}, "at least one block"),
        ({"latent_dim": 0}, "latent_dim must be positive"),
        ({"n_classes": -1}, "n_classes must be 0 or positive"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict, message: str) -> None:
    arguments = {"image_shape": (16, 32), "channels": 1, "widths": TINY_WIDTHS, "latent_dim": TINY_LATENT} | kwargs
    with pytest.raises(ValueError, match=message):
        VAEConfig(**arguments)


def test_bad_inputs_are_rejected() -> None:
    reference_config, target_config = _tiny_config(2, "reference"), _tiny_config(2, "target")
    with pytest.raises(ValueError, match="unconditional"):
        ReferenceVAE(target_config)
    with pytest.raises(ValueError, match="conditional"):
        TargetVAE(reference_config)
    reference_model, target_model = ReferenceVAE(reference_config), TargetVAE(target_config)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, 16, 32\)"):
        reference_model(torch.zeros(BATCH, 2, 16, 24))
    with pytest.raises(ValueError, match="z must have shape"):
        reference_model.decode(torch.zeros(BATCH, TINY_LATENT + 1))
    target, reference = _images(target_config, 1, seed=0), _images(target_config, 2, seed=1)
    with pytest.raises(ValueError, match="reference must have shape"):
        target_model(target, reference[:, :1], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one-hot vectors of length 3"):
        target_model(target, reference, torch.zeros(BATCH, TINY_CLASSES + 1))
    with pytest.raises(ValueError, match="conditioned on a reference image"):
        Encoder(target_config)(target)
    with pytest.raises(ValueError, match="conditioned on a structure label"):
        Decoder(target_config)(torch.zeros(BATCH, TINY_LATENT), reference)


def test_reparameterize() -> None:
    mean = torch.full((4000, 2), 3.0, requires_grad=True)
    log_var = torch.full((4000, 2), 2 * math.log(0.5), requires_grad=True)
    z = reparameterize(mean, log_var, torch.Generator().manual_seed(0))
    assert torch.equal(z, reparameterize(mean, log_var, torch.Generator().manual_seed(0)))
    assert abs(z.mean().item() - 3.0) < 0.05 and abs(z.std().item() - 0.5) < 0.05
    z.sum().backward()
    assert mean.grad is not None and log_var.grad is not None


def test_a_conv_narrower_than_its_kernel_trains_in_float32_under_cpu_autocast() -> None:
    """The default encoder's last convolution (3x3x3 on 2x2x3) under CPU bf16 autocast: finite gradients in every
    draw (PyTorch 2.13's bf16 kernel gave non-finite ones in 3 of 20), float32 output; the plain layer elsewhere."""
    for seed in range(20):
        torch.manual_seed(seed)
        conv = model_blocks.spectral_conv(3, 32, 64, 3, padding=1)
        x = torch.randn(16, 32, 2, 2, 3, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == torch.float32
        y.square().sum().backward()
        assert torch.isfinite(conv.parametrizations.weight.original.grad).all() and torch.isfinite(x.grad).all()
    wide = torch.randn(2, 32, 4, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(wide).dtype == torch.bfloat16  # wide enough: bf16 as autocast chooses
    plain = parametrizations.spectral_norm(nn.Conv3d(32, 64, 3, padding=1))
    plain.load_state_dict(conv.state_dict())  # the same parameters and keys: exported models load unchanged
    conv.eval(), plain.eval()  # no power iteration: both use the stored spectral-norm vectors
    assert torch.equal(conv(wide), plain(wide))
