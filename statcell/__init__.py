"""statcell: the Statistical Cell, a generative model of 3D single-cell organization, as a Snakemake workflow.

Modules mirror the workflow's stages: :mod:`statcell.synth` (synthetic colony), :mod:`statcell.io` (files),
:mod:`statcell.config` (validated configuration) and :mod:`statcell.cli` (the ``statcell`` command).
"""

__version__ = "0.1.0"
