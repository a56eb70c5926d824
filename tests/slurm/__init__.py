"""A real single-node SLURM cluster on localhost for the SLURM profile's tests (see :mod:`tests.slurm.cluster`)."""
