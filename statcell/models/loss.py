"""The β-ELBO objective: pure functions returning named parts.

For an image ``x``, its reconstruction and a diagonal Gaussian posterior ``q(z | x) = N(mean, exp(log_var))``:

- reconstruction: the sum of squared errors over the image's voxels and channels (a Gaussian likelihood up to
  constants), averaged over the batch;
- KL: ``KL(q(z | x) || N(0, I))`` summed over latent dimensions, averaged over the batch; also kept per dimension;
- loss: ``(1 - β) · reconstruction + β · KL`` with β in [0, 1] (the paper's Eq 3, which keeps the objective's scale
  constant across β);
- ELBO: ``-(reconstruction + KL)``, the unweighted bound used to compare models and pick checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class LossParts(NamedTuple):
    """The objective's parts, each averaged over the batch (``kl_per_dim`` is ``(latent_dim,)``)."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor
    elbo: torch.Tensor


def kl_per_dimension(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(mean, exp(log_var))`` from ``N(0, 1)``, per sample and latent dimension.

    Examples
    --------
    >>> kl_per_dimension(torch.zeros(1, 2), torch.zeros(1, 2)).tolist()
    [[0.0, 0.0]]
    """
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)


def sum_squared_error(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squared errors over every non-batch dimension, shape ``(batch,)``."""
    return (reconstruction.float() - x.float()).pow(2).flatten(1).sum(dim=1)


def beta_elbo(x: torch.Tensor, reconstruction: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, *,
              beta: float, weights: torch.Tensor | None = None) -> LossParts:
    """The reparameterized β-VAE objective.

    Parameters
    ----------
    x, reconstruction : Tensor
        Images and their reconstructions, ``(batch, C, ...)``.
    mean, log_var : Tensor
        Posterior parameters, ``(batch, latent_dim)``.
    beta : float
        Weight of the KL term, in [0, 1].
    weights : Tensor, optional
        ``(batch,)`` weights of each image's reconstruction error in the loss (the target model's structure-class
        weights, :func:`statcell.train.structure_weights`); the ELBO and the reported reconstruction stay unweighted.

    Returns
    -------
    LossParts
        The loss to minimize and its named parts.

    Examples
    --------
    >>> x, zero = torch.ones(2, 1, 2, 2), torch.zeros(2, 3)
    >>> parts = beta_elbo(x, torch.zeros_like(x), zero, zero, beta=0.5, weights=torch.tensor([1.0, 3.0]))
    >>> parts.loss.item(), parts.reconstruction.item(), parts.elbo.item()
    (4.0, 4.0, -4.0)
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    errors = sum_squared_error(x, reconstruction)
    reconstruction_error = errors.mean()
    weighted_error = reconstruction_error if weights is None else (weights.to(errors.dtype) * errors).mean()
    kl_dims = kl_per_dimension(mean.float(), log_var.float())
    kl = kl_dims.sum(dim=1).mean()
    return LossParts(loss=(1.0 - beta) * weighted_error + beta * kl, reconstruction=reconstruction_error,
                     kl=kl, kl_per_dim=kl_dims.mean(dim=0), elbo=-(reconstruction_error + kl))


def elbo_estimate(encode: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                  decode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, samples: int = 10,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ELBO averaged over ``samples`` latent draws (the paper's evaluation, section 4.3).

    Parameters
    ----------
    encode : callable
        Returns ``(mean, log_var)`` of the images.
    decode : callable
        Maps latent vectors ``(batch, latent_dim)`` to reconstructions.
    x : Tensor
        The images, ``(batch, C, ...)``.
    samples : int
        Number of latent draws K.
    generator : torch.Generator, optional
        For reproducible draws.

    Returns
    -------
    elbo, reconstruction, kl : Tensor
        Each ``(batch,)``: ``-(E[SSE] + KL)``, the mean sum of squared errors over draws, and the KL (exact).
    """
    mean, log_var = encode()
    kl = kl_per_dimension(mean.float(), log_var.float()).sum(dim=1)
    errors = torch.zeros(x.shape[0], device=x.device)
    for _ in range(samples):
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        errors += sum_squared_error(x, decode(mean + noise * (0.5 * log_var).exp()))
    reconstruction = errors / samples
    return -(reconstruction + kl), reconstruction, kl
