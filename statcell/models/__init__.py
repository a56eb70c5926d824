"""Networks of the Statistical Cell: residual, spectrally normalized VAEs for 2D and 3D images.

See :mod:`statcell.models.blocks` for the residual blocks and :mod:`statcell.models.vae` for the reference and target
models, with notes on which facts come from the paper and which from the original code.
"""

from statcell.models.blocks import DownBlock, UpBlock
from statcell.models.vae import (
    Decoder,
    Encoder,
    Encoding,
    ReferenceVAE,
    TargetVAE,
    VAEConfig,
    VAEOutput,
    reparameterize,
)

__all__ = [
    "Decoder",
    "DownBlock",
    "Encoder",
    "Encoding",
    "ReferenceVAE",
    "TargetVAE",
    "UpBlock",
    "VAEConfig",
    "VAEOutput",
    "reparameterize",
]
