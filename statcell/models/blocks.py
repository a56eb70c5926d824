"""Residual building blocks of the Statistical Cell networks, one code path for 2D and 3D images.

Every convolution and fully connected layer is wrapped in spectral normalization (paper, Fig 7 caption). We use
``torch.nn.utils.parametrizations.spectral_norm``: the normalized weight is recomputed from the original weight by a
power iteration whose vectors are buffers, so spectral normalization adds no trainable parameters. The original code
(``integrated_cell/utils/spectral_norm.py``, a copy of an early PyTorch version) did the same, which is why the
parameter counts of the paper are reproduced exactly.

Facts taken from the paper (section 4.2 and Fig 7 caption):

- a down block sums a residual path (kernel-4 stride-2 convolution, then a kernel-3 stride-1 convolution) with a
  bypass (1x1 convolution and average pooling); an up block uses a transposed convolution instead of the strided one
  and linear upsampling instead of pooling;
- in the conditional (target) model the reference image is linearly interpolated to the block's output size and
  passed through a 1x1 convolution, and the one-hot structure label is passed through a 1x1 convolution and added to
  every pixel of the block's output.

Facts taken from the original code (``integrated_cell/networks/cvaegan3D_residual.py`` and its 2D twin
``cvaegan2D_residual.py``, the network named by the paper's training scripts), needed to match the parameter counts:

- all convolutions carry a bias, batch norms are affine;
- the strided (or transposed) convolution keeps the block's *input* width, the kernel-3 convolution changes it to the
  output width; batch norm and ReLU sit between them, a second batch norm follows the kernel-3 convolution;
- the down bypass pools first and then applies the 1x1 convolution, the up bypass convolves first and then upsamples
  (both orders give the same result for linear operations; ours is the cheaper one);
- each conditioning input has its own path per block: 1x1 convolution, batch norm and ReLU, whose output is added to
  the block's sum; the block ends with an activation (ReLU, or the model's output activation for the last up block).

Where we deliberately depart from the original code: the original resized the reference and upsampled the bypass with
nearest-neighbour interpolation (PyTorch's default); we use linear interpolation as the paper describes. This changes
no parameter. The original padded odd feature maps in the decoder; we instead require image sizes divisible by
``2 ** depth`` (checked by the model configuration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class _Float32WhereNarrow:
    """Mixin for a convolution: computed in float32 where CPU bf16 autocast would get its gradient wrong.

    PyTorch's CPU bf16 convolution backward (2.13, oneDNN) returns non-finite weight gradients, at random, for a
    padded kernel larger than its input: the default networks' last encoder convolution (3x3x3 on a 2x2x3 map) did so
    in 3 of 20 random draws, and training in ``bf16-mixed`` went to NaN in its first epoch. Such maps are the smallest
    of the network, so computing them in float32 costs little; everywhere else, and outside CPU autocast, the layer is
    the plain convolution (the same parameters and state-dict keys).
    """

    kernel_size: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        narrow = any(size < kernel for size, kernel in zip(x.shape[2:], self.kernel_size, strict=True))
        if narrow and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())  # type: ignore[misc]
        return super().forward(x)  # type: ignore[misc]


class _Conv2d(_Float32WhereNarrow, nn.Conv2d):
    """``nn.Conv2d``, in float32 where its input is narrower than its kernel under CPU autocast."""


class _Conv3d(_Float32WhereNarrow, nn.Conv3d):
    """``nn.Conv3d``, in float32 where its input is narrower than its kernel under CPU autocast."""


_CONV: dict[int, type[nn.Module]] = {2: _Conv2d, 3: _Conv3d}
_CONV_TRANSPOSE: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVG_POOL: dict[int, type[nn.Module]] = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_LINEAR_MODE: dict[int, str] = {2: "bilinear", 3: "trilinear"}


def _check_ndim(ndim: int) -> None:
    if ndim not in _CONV:
        raise ValueError(f"only 2D and 3D images are supported, got ndim={ndim}")


def memory_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of ``ndim``-D images: ``channels_last_3d`` (3D) or ``channels_last`` (2D)."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    return torch.channels_last_3d if ndim == 3 else torch.channels_last


def runs_faster_channels_last(ndim: int, device_type: str) -> bool:
    """Whether ``ndim``-D networks on a ``device_type`` device ("cpu", "cuda") run faster in channels-last memory:
    on GPUs (tensor cores) always, on the CPU for 3D networks (``bench/bench_train.py``, ``bench/bench_inference.py``;
    2D ones are no faster there)."""
    return device_type == "cuda" or ndim == 3


def spectral_conv(
    ndim: int, ch_in: int, ch_out: int, kernel_size: int, stride: int = 1, padding: int = 0, transposed: bool = False
) -> nn.Module:
    """Build a spectrally normalized (transposed) convolution with bias.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    ch_in, ch_out : int
        Input and output channels.
    kernel_size, stride, padding : int
        As in ``torch.nn.Conv3d``.
    transposed : bool
        Build a transposed convolution instead.

    Returns
    -------
    torch.nn.Module
        The convolution, its weight parametrized by spectral normalization.
    """
    _check_ndim(ndim)
    conv_type = _CONV_TRANSPOSE[ndim] if transposed else _CONV[ndim]
    return spectral_norm(conv_type(ch_in, ch_out, kernel_size, stride=stride, padding=padding, bias=True))


def spectral_linear(in_features: int, out_features: int) -> nn.Linear:
    """Build a spectrally normalized fully connected layer with bias.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.

    Returns
    -------
    torch.nn.Linear
        The layer, its weight parametrized by spectral normalization.
    """
    return spectral_norm(nn.Linear(in_features, out_features, bias=True))


def batch_norm(ndim: int, channels: int) -> nn.Module:
    """Build an affine batch norm for ``ndim``-dimensional feature maps.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    channels : int
        Number of channels.

    Returns
    -------
    torch.nn.Module
        ``BatchNorm2d`` or ``BatchNorm3d``.
    """
    _check_ndim(ndim)
    return _BATCH_NORM[ndim](channels)


def resize_linear(image: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a batch of images to a spatial size by (bi/tri)linear interpolation.

    Parameters
    ----------
    image : torch.Tensor
        Shape ``(batch, channels, *spatial)`` with 2 or 3 spatial dimensions.
    size : tuple of int
        The new spatial size.

    Returns
    -------
    torch.Tensor
        Shape ``(batch, channels, *size)``; ``image`` itself when it already has that size.

    Examples
    --------
    >>> resize_linear(torch.ones(1, 2, 8, 8, 16), (2, 2, 4)).shape
    torch.Size([1, 2, 2, 2, 4])
    """
    if tuple(image.shape[2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode=_LINEAR_MODE[image.ndim - 2], align_corners=False)


class _ConditionPath(nn.Sequential):
    """1x1 convolution, batch norm and ReLU mapping a conditioning input onto a block's output channels."""

    def __init__(self, ndim: int, ch_cond: int, ch_out: int) -> None:
        super().__init__(spectral_conv(ndim, ch_cond, ch_out, 1), batch_norm(ndim, ch_out), nn.ReLU())


class _ResidualBlock(nn.Module):
    """A residual sum ``bypass(x) + residual(x)``, plus optional reference and label conditioning, then activation.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    ch_out : int
        Output channels.
    bypass, residual : torch.nn.Module
        The two summed paths.
    reference_channels : int
        Channels of the reference image this block is conditioned on; 0 for none.
    n_classes : int
        Number of structure classes (length of the one-hot label) this block is conditioned on; 0 for none.
    activation : torch.nn.Module
        Applied after the sum.
    """

    def __init__(
        self,
        ndim: int,
        ch_out: int,
        bypass: nn.Module,
        residual: nn.Module,
        reference_channels: int,
        n_classes: int,
        activation: nn.Module,
    ) -> None:
        super().__init__()
        self.ndim = ndim
        self.bypass = bypass
        self.residual = residual
        self.reference_path = _ConditionPath(ndim, reference_channels, ch_out) if reference_channels > 0 else None
        self.label_path = _ConditionPath(ndim, n_classes, ch_out) if n_classes > 0 else None
        self.activation = activation

    def forward(
        self, x: torch.Tensor, reference: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x : torch.Tensor
            Feature map, shape ``(batch, ch_in, *spatial)``.
        reference : torch.Tensor, optional
            Reference image at any spatial size, shape ``(batch, reference_channels, *spatial)``; required when the
            block is conditioned on it. It is linearly resized to the block's output size.
        label : torch.Tensor, optional
            One-hot (or soft) structure label, shape ``(batch, n_classes)``; required when the block is conditioned
            on it. Its projection is added to every pixel.

        Returns
        -------
        torch.Tensor
            Shape ``(batch, ch_out, *spatial_out)``.
        """
        out = self.bypass(x) + self.residual(x)
        if self.reference_path is not None:
            if reference is None:
                raise ValueError("this block is conditioned on a reference image, but none was given")
            out = out + self.reference_path(resize_linear(reference, tuple(out.shape[2:])))
        if self.label_path is not None:
            if label is None:
                raise ValueError("this block is conditioned on a structure label, but none was given")
            out = out + self.label_path(label.reshape(*label.shape, *([1] * self.ndim)))
        return self.activation(out)


class DownBlock(_ResidualBlock):
    """Residual block halving every spatial dimension (encoder), Fig 7 of the paper.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    ch_in, ch_out : int
        Input and output channels.
    reference_channels : int
        Channels of the reference image to condition on; 0 for none.
    n_classes : int
        Length of the one-hot structure label to condition on; 0 for none.

    Examples
    --------
    >>> block = DownBlock(3, 2, 4)
    >>> block(torch.zeros(2, 2, 4, 8, 8)).shape
    torch.Size([2, 4, 2, 4, 4])
    """

    def __init__(self, ndim: int, ch_in: int, ch_out: int, reference_channels: int = 0, n_classes: int = 0) -> None:
        _check_ndim(ndim)
        bypass = nn.Sequential(_AVG_POOL[ndim](2, stride=2), spectral_conv(ndim, ch_in, ch_out, 1))
        residual = nn.Sequential(
            spectral_conv(ndim, ch_in, ch_in, 4, stride=2, padding=1),
            batch_norm(ndim, ch_in),
            nn.ReLU(),
            spectral_conv(ndim, ch_in, ch_out, 3, padding=1),
            batch_norm(ndim, ch_out),
        )
        super().__init__(ndim, ch_out, bypass, residual, reference_channels, n_classes, nn.ReLU())


class UpBlock(_ResidualBlock):
    """Residual block doubling every spatial dimension (decoder), Fig 7 of the paper.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    ch_in, ch_out : int
        Input and output channels.
    reference_channels : int
        Channels of the reference image to condition on; 0 for none.
    n_classes : int
        Length of the one-hot structure label to condition on; 0 for none.
    activation : torch.nn.Module, optional
        Applied after the sum; ReLU when not given (the decoder's last block uses the output activation).

    Examples
    --------
    >>> block = UpBlock(2, 4, 2)
    >>> block(torch.zeros(2, 4, 3, 5)).shape
    torch.Size([2, 2, 6, 10])
    """

    def __init__(
        self,
        ndim: int,
        ch_in: int,
        ch_out: int,
        reference_channels: int = 0,
        n_classes: int = 0,
        activation: nn.Module | None = None,
    ) -> None:
        _check_ndim(ndim)
        bypass = nn.Sequential(
            spectral_conv(ndim, ch_in, ch_out, 1),
            nn.Upsample(scale_factor=2, mode=_LINEAR_MODE[ndim], align_corners=False),
        )
        residual = nn.Sequential(
            spectral_conv(ndim, ch_in, ch_in, 4, stride=2, padding=1, transposed=True),
            batch_norm(ndim, ch_in),
            nn.ReLU(),
            spectral_conv(ndim, ch_in, ch_out, 3, padding=1),
            batch_norm(ndim, ch_out),
        )
        activation = nn.ReLU() if activation is None else activation
        super().__init__(ndim, ch_out, bypass, residual, reference_channels, n_classes, activation)
