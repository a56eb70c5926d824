"""Stage 5: analyses of the trained models, each a module of table functions; :mod:`statcell.plots` draws the figures
from what they write (tables, and ``.npz`` archives of the images a figure shows).

- ``overview``, ``model_check``: the input FOVs' projections, and test cells with their reconstructions and the KL
  per dimension of both models.

- ``embed``: latent means, log-variances and per-cell ELBO of every cell under both models.
- ``latent_space``: ranked dimensions, correlations with cell measurements, latent walks (paper Fig 2, S1–S3, S6).
- ``generation``: cells from the prior and structures generated inside real cells (Fig 4, S4, S5).
- ``features``: the 14 shape and intensity features on real and generated cells (Fig 3D, S7).
- ``beta_sweep``: rate, distortion and feature regression of 2D models across β (Fig 3A/C, S8).
- ``coupling``: membrane and nucleus coupling of each structure by reference-channel swaps (Fig 5).
- ``perturbation``: drug-treated cells in the trained latent spaces and permutation tests (Fig 6).
- ``recovery``: the synthetic colony's planted answers against what the analyses found.
- ``meshes``: surface meshes of real, reconstructed, generated and representative cells for simulators.
"""
