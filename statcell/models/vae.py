"""The two variational autoencoders of the Statistical Cell: the reference model and the conditional target model.

The paper (section 4.2) factors an image as ``p(x_r, x_t | t) = p(x_r) p(x_t | x_r, t)``: a reference model ``M_R`` of
the cell membrane and DNA channels, and a target model ``M_T`` of one structure channel, conditioned on the reference
image and the one-hot structure label. Both are built by the same encoder and decoder classes here; 2D or 3D is
decided by the length of ``VAEConfig.image_shape``.

Architecture (paper section 4.2, Fig 7 caption; original code ``integrated_cell/networks/cvaegan3D_residual.py`` and
``cvaegan2D_residual.py``, classes ``Enc`` and ``Dec``, with the keyword arguments of the training scripts
``examples/training_scripts/{bvae,cbvae}{2D,3D}.sh``):

- encoder: one ``DownBlock`` per width (the first maps the image channels to the first width), then two independent
  spectrally normalized fully connected heads from the flattened last feature map to the mean and the log-variance;
- decoder: a spectrally normalized fully connected layer from the latent vector to the smallest feature map, batch
  norm and ReLU, then one ``UpBlock`` per width in reverse, the last one mapping the first width to the image
  channels and ending with the output activation, softplus (``activation_last`` in the training scripts);
- the target model conditions *every* encoder and decoder block on the reference image (resized to the block's
  output size) and on the structure label; the reference model has no conditioning;
- paper values: widths 32, 64, 128, 256, 512; latent size 512 for both models (section 4.4); 3D input
  64 x 96 x 160 (Z, Y, X; ``crop_to`` in the training scripts lists X, Y, Z); 2 reference channels; 24 structures.

With those values the reference and target 3D models together have 122,627,829 parameters and the 2D reference model
alone 22,279,054, the two counts given in section 4.2 (the paper's 2D count therefore uses the same widths as 3D,
although the 2D network file defaults to twice those widths). ``tests/test_models.py`` checks both counts.

The original code also initialized batch-norm scales from N(1, 0.02) (``weights_init`` in
``integrated_cell/utils/utils.py``); its N(0, 0.02) convolution initialization did not reach the spectrally
normalized weights, which kept PyTorch's default initialization. We do the same.

Batch norm also sits on the label path, where each sample's feature map is a single pixel, so in training mode the
target model needs batches of at least two images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from statcell.models.blocks import DownBlock, UpBlock, batch_norm, spectral_linear

PAPER_WIDTHS: tuple[int, ...] = (32, 64, 128, 256, 512)
PAPER_LATENT_DIM = 512
PAPER_IMAGE_SHAPE: dict[int, tuple[int, ...]] = {3: (64, 96, 160), 2: (96, 160)}
PAPER_N_CLASSES = 24


class Encoding(NamedTuple):
    """Parameters of the diagonal Gaussian posterior ``q(z | x)``, each of shape ``(batch, latent_dim)``."""

    mean: torch.Tensor
    log_var: torch.Tensor


class VAEOutput(NamedTuple):
    """What a forward pass returns: the reconstruction, the posterior parameters and the sampled latent vector."""

    reconstruction: torch.Tensor
    mean: torch.Tensor
    log_var: torch.Tensor
    z: torch.Tensor


@dataclass(frozen=True)
class VAEConfig:
    """Shape of one Statistical Cell model.

    Parameters
    ----------
    image_shape : tuple of int
        Spatial input size, ``(Z, Y, X)`` for 3D or ``(Y, X)`` for 2D; each must be divisible by ``2 ** depth``.
    channels : int
        Image channels the model encodes and reconstructs (2 for the reference model, 1 for the target model).
    widths : tuple of int
        Channels after each down block; its length is the depth (number of down and of up blocks).
    latent_dim : int
        Size of the latent vector.
    reference_channels : int
        Channels of the reference image the model is conditioned on; 0 for an unconditional model.
    n_classes : int
        Number of structure classes the model is conditioned on; 0 for an unconditional model.

    Raises
    ------
    ValueError
        If a size is not positive, the image is neither 2D nor 3D, or a spatial size is not divisible by
        ``2 ** depth``.

    Examples
    --------
    >>> VAEConfig(image_shape=(64, 96, 160), channels=2).bottleneck_shape
    (2, 3, 5)
    """

    image_shape: tuple[int, ...]
    channels: int
    widths: tuple[int, ...] = PAPER_WIDTHS
    latent_dim: int = PAPER_LATENT_DIM
    reference_channels: int = 0
    n_classes: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.image_shape) not in (2, 3):
            raise ValueError(f"image_shape must have 2 or 3 spatial dimensions, got {self.image_shape}")
        if not self.widths:
            raise ValueError("widths must name at least one block")
        sizes = {"channels": self.channels, "latent_dim": self.latent_dim}
        sizes |= {f"widths[{i}]": w for i, w in enumerate(self.widths)}
        sizes |= {f"image_shape[{i}]": s for i, s in enumerate(self.image_shape)}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("reference_channels", "n_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or positive, got {getattr(self, name)}")
        factor = 2**self.depth
        if any(s % factor for s in self.image_shape):
            raise ValueError(
                f"image_shape {self.image_shape} is not divisible by 2 ** depth = {factor} in every dimension "
                f"(depth {self.depth} = len(widths)); crop or pad the images, or use fewer blocks"
            )

    @classmethod
    def paper(cls, ndim: Literal[2, 3], model: Literal["reference", "target"]) -> VAEConfig:
        """Return the configuration of one of the paper's models.

        Parameters
        ----------
        ndim : {2, 3}
            2D or 3D model.
        model : {"reference", "target"}
            The reference model (membrane and DNA) or the target model (one structure channel, conditioned on the
            two reference channels and 24 structure classes).

        Returns
        -------
        VAEConfig
        """
        if model == "reference":
            return cls(image_shape=PAPER_IMAGE_SHAPE[ndim], channels=2)
        if model == "target":
            return cls(image_shape=PAPER_IMAGE_SHAPE[ndim], channels=1, reference_channels=2, n_classes=PAPER_N_CLASSES)
        raise ValueError(f"model must be 'reference' or 'target', got {model!r}")

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions, 2 or 3."""
        return len(self.image_shape)

    @property
    def depth(self) -> int:
        """Number of down blocks (and of up blocks)."""
        return len(self.widths)

    @property
    def bottleneck_shape(self) -> tuple[int, ...]:
        """Spatial size of the smallest feature map, after all down blocks."""
        return tuple(s // 2**self.depth for s in self.image_shape)

    @property
    def bottleneck_features(self) -> int:
        """Number of values in the smallest feature map of one image."""
        return self.widths[-1] * math.prod(self.bottleneck_shape)


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``z ~ N(mean, exp(log_var))`` differentiably, as ``mean + exp(log_var / 2) * eps``.

    Parameters
    ----------
    mean, log_var : torch.Tensor
        Posterior mean and log-variance, same shape.
    generator : torch.Generator, optional
        Source of the standard normal noise ``eps``.

    Returns
    -------
    torch.Tensor
        A sample, same shape as ``mean``.

    Examples
    --------
    >>> reparameterize(torch.zeros(2, 3), torch.full((2, 3), -1e4)).abs().max().item()
    0.0
    """
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


def _init_batch_norms(module: nn.Module) -> None:
    """Draw every batch-norm scale from N(1, 0.02), as the original code did."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(child.weight, mean=1.0, std=0.02)


class Encoder(nn.Module):
    """Residual encoder to the parameters of ``q(z | x)`` (or ``q(z | x, reference, label)`` when conditional).

    Parameters
    ----------
    config : VAEConfig
        Model shape; its conditioning sizes decide whether blocks take a reference image and a label.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        ch_in = (config.channels, *config.widths[:-1])
        self.blocks = nn.ModuleList(
            DownBlock(config.ndim, i, o, config.reference_channels, config.n_classes)
            for i, o in zip(ch_in, config.widths, strict=True)
        )
        self.mean = spectral_linear(config.bottleneck_features, config.latent_dim)
        self.log_var = spectral_linear(config.bottleneck_features, config.latent_dim)
        _init_batch_norms(self)

    def forward(
        self, x: torch.Tensor, reference: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> Encoding:
        """Encode a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(batch, channels, *image_shape)``.
        reference : torch.Tensor, optional
            Reference image, required when conditional.
        label : torch.Tensor, optional
            One-hot structure label of shape ``(batch, n_classes)``, required when conditional.

        Returns
        -------
        Encoding
        """
        h = x
        for block in self.blocks:
            h = block(h, reference, label)
        h = h.flatten(1)
        mean, log_var = self.mean(h), self.log_var(h)
        if not self.training:  # see Decoder.forward
            mean, log_var = mean.float(), log_var.float()
        return Encoding(mean, log_var)


class Decoder(nn.Module):
    """Residual decoder from a latent vector (and, when conditional, a reference image and a label) to an image.

    Parameters
    ----------
    config : VAEConfig
        Model shape; its conditioning sizes decide whether blocks take a reference image and a label.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.fc = spectral_linear(config.latent_dim, config.bottleneck_features)
        self.bottleneck = nn.Sequential(batch_norm(config.ndim, config.widths[-1]), nn.ReLU())
        ch_in = config.widths[::-1]
        ch_out = (*config.widths[-2::-1], config.channels)
        activations = [nn.ReLU() for _ in ch_in[:-1]] + [nn.Softplus()]
        self.blocks = nn.ModuleList(
            UpBlock(config.ndim, i, o, config.reference_channels, config.n_classes, activation=a)
            for i, o, a in zip(ch_in, ch_out, activations, strict=True)
        )
        _init_batch_norms(self)

    def forward(
        self, z: torch.Tensor, reference: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode a batch of latent vectors.

        Parameters
        ----------
        z : torch.Tensor
            Shape ``(batch, latent_dim)``.
        reference : torch.Tensor, optional
            Reference image, required when conditional.
        label : torch.Tensor, optional
            One-hot structure label of shape ``(batch, n_classes)``, required when conditional.

        Returns
        -------
        torch.Tensor
            Shape ``(batch, channels, *image_shape)``, non-negative (softplus). In eval mode float32 also under
            autocast (as the encoder's posterior parameters): an analysis that evaluates the network in bf16
            (:func:`statcell.models.precision.evaluation_precision`) gets float32 images to average and measure. In
            training mode the dtype is autocast's, so training's steps are those of plain mixed precision.
        """
        h = self.fc(z).view(z.shape[0], self.config.widths[-1], *self.config.bottleneck_shape)
        h = self.bottleneck(h)
        for block in self.blocks:
            h = block(h, reference, label)
        return h if self.training else h.float()


def _check_image(name: str, image: torch.Tensor, channels: int, config: VAEConfig) -> None:
    expected = (channels, *config.image_shape)
    if image.ndim != config.ndim + 2 or tuple(image.shape[1:]) != expected:
        raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, expected))}), got {tuple(image.shape)}")


def _check_latent(z: torch.Tensor, config: VAEConfig) -> None:
    if z.ndim != 2 or z.shape[1] != config.latent_dim:
        raise ValueError(f"z must have shape (batch, {config.latent_dim}), got {tuple(z.shape)}")


class ReferenceVAE(nn.Module):
    """The reference model ``M_R``: an unconditional VAE of the membrane and DNA channels.

    Parameters
    ----------
    config : VAEConfig
        Model shape, without conditioning (``reference_channels == n_classes == 0``).

    Examples
    --------
    >>> config = VAEConfig(image_shape=(16, 32), channels=2, widths=(4, 8), latent_dim=8)
    >>> model = ReferenceVAE(config).eval()
    >>> model(torch.rand(1, 2, 16, 32)).reconstruction.shape
    torch.Size([1, 2, 16, 32])
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.reference_channels or config.n_classes:
            raise ValueError("the reference model is unconditional: set reference_channels and n_classes to 0")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> Encoding:
        """Return the posterior parameters of reference images of shape ``(batch, channels, *image_shape)``."""
        _check_image("x", x, self.config.channels, self.config)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latent vectors of shape ``(batch, latent_dim)`` into reference images."""
        _check_latent(z, self.config)
        return self.decoder(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate ``n`` reference images by decoding latent vectors drawn from the standard normal prior.

        Parameters
        ----------
        n : int
            Number of images.
        generator : torch.Generator, optional
            Source of the latent vectors.

        Returns
        -------
        torch.Tensor
            Shape ``(n, channels, *image_shape)``.
        """
        like = next(self.parameters())
        z = torch.randn(n, self.config.latent_dim, generator=generator, dtype=like.dtype, device=like.device)
        return self.decode(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, sample a latent vector by reparameterization, and decode.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(batch, channels, *image_shape)``.
        generator : torch.Generator, optional
            Source of the reparameterization noise.

        Returns
        -------
        VAEOutput
        """
        mean, log_var = self.encode(x)
        z = reparameterize(mean, log_var, generator)
        return VAEOutput(self.decode(z), mean, log_var, z)


class TargetVAE(nn.Module):
    """The target model ``M_T``: a VAE of one structure channel conditioned on the reference image and the label.

    Parameters
    ----------
    config : VAEConfig
        Model shape, with ``reference_channels > 0`` and ``n_classes > 0``.

    Notes
    -----
    Labels are given either as class indices (integer tensor of shape ``(batch,)``) or as one-hot (or soft) float
    vectors of shape ``(batch, n_classes)``.

    Examples
    --------
    >>> config = VAEConfig(image_shape=(16, 32), channels=1, widths=(4, 8), latent_dim=8, reference_channels=2,
    ...                    n_classes=3)
    >>> model = TargetVAE(config).eval()
    >>> out = model(torch.rand(1, 1, 16, 32), torch.rand(1, 2, 16, 32), torch.tensor([2]))
    >>> out.reconstruction.shape, out.z.shape
    (torch.Size([1, 1, 16, 32]), torch.Size([1, 8]))
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.reference_channels < 1 or config.n_classes < 1:
            raise ValueError("the target model is conditional: reference_channels and n_classes must be positive")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def _conditions(
        self, reference: torch.Tensor, label: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the reference image and the label; return both, the label as one-hot float vectors."""
        _check_image("reference", reference, self.config.reference_channels, self.config)
        if reference.shape[0] != batch:
            raise ValueError(f"reference has batch size {reference.shape[0]}, expected {batch}")
        if label.dtype.is_floating_point:
            one_hot = label.to(reference.dtype)
        elif label.ndim == 1 and label.dtype != torch.bool and not label.dtype.is_complex:
            one_hot = F.one_hot(label.long(), self.config.n_classes).to(reference.dtype)
        else:
            raise ValueError(f"label must be class indices or float one-hot vectors, got dtype {label.dtype}")
        if tuple(one_hot.shape) != (batch, self.config.n_classes):
            expected = f"{batch} one-hot vectors of length {self.config.n_classes}"
            raise ValueError(f"label must give {expected}, got shape {tuple(label.shape)}")
        return reference, one_hot

    def encode(self, target: torch.Tensor, reference: torch.Tensor, label: torch.Tensor) -> Encoding:
        """Return the posterior parameters of structure images given their reference images and labels.

        Parameters
        ----------
        target : torch.Tensor
            Shape ``(batch, channels, *image_shape)``.
        reference : torch.Tensor
            Shape ``(batch, reference_channels, *image_shape)``.
        label : torch.Tensor
            Class indices ``(batch,)`` or one-hot vectors ``(batch, n_classes)``.

        Returns
        -------
        Encoding
        """
        _check_image("target", target, self.config.channels, self.config)
        return self.encoder(target, *self._conditions(reference, label, target.shape[0]))

    def decode(self, z: torch.Tensor, reference: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Decode latent vectors ``(batch, latent_dim)`` into structure images given reference images and labels."""
        _check_latent(z, self.config)
        return self.decoder(z, *self._conditions(reference, label, z.shape[0]))

    def sample(
        self, reference: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Generate one structure image per reference image and label, from latent vectors drawn from the prior.

        Parameters
        ----------
        reference : torch.Tensor
            Shape ``(batch, reference_channels, *image_shape)``.
        label : torch.Tensor
            Class indices ``(batch,)`` or one-hot vectors ``(batch, n_classes)``.
        generator : torch.Generator, optional
            Source of the latent vectors.

        Returns
        -------
        torch.Tensor
            Shape ``(batch, channels, *image_shape)``.
        """
        shape = (reference.shape[0], self.config.latent_dim)
        z = torch.randn(shape, generator=generator, dtype=reference.dtype, device=reference.device)
        return self.decode(z, reference, label)

    def forward(
        self,
        target: torch.Tensor,
        reference: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> VAEOutput:
        """Encode, sample a latent vector by reparameterization, and decode, all given the reference and label.

        Parameters
        ----------
        target : torch.Tensor
            Shape ``(batch, channels, *image_shape)``.
        reference : torch.Tensor
            Shape ``(batch, reference_channels, *image_shape)``.
        label : torch.Tensor
            Class indices ``(batch,)`` or one-hot vectors ``(batch, n_classes)``.
        generator : torch.Generator, optional
            Source of the reparameterization noise.

        Returns
        -------
        VAEOutput
        """
        mean, log_var = self.encode(target, reference, label)
        z = reparameterize(mean, log_var, generator)
        return VAEOutput(self.decode(z, reference, label), mean, log_var, z)
