"""The report's figures: drawing only, from the tables and images the analyses write.

One module per pipeline stage (:mod:`~statcell.plots.overview`, :mod:`~statcell.plots.models`,
:mod:`~statcell.plots.latent_space`, :mod:`~statcell.plots.generation`, :mod:`~statcell.plots.features`,
:mod:`~statcell.plots.beta_sweep`, :mod:`~statcell.plots.coupling`, :mod:`~statcell.plots.perturbation`), the
shared palette and ``save`` in :mod:`~statcell.plots.style`, and the list of the report's figures in
:mod:`~statcell.plots.registry`. These modules import matplotlib, numpy and pandas, never torch or zarr, so the figure
rules run in ``envs/plots.yaml``. Nothing is imported here, to keep ``import statcell.plots.style`` light.
"""
