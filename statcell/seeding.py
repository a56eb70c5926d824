"""The pipeline's one seeding scheme: every random stream is named by a seed and a path of keys.

A stream is ``numpy.random.SeedSequence([seed, *keys])``, each key an integer (a cell's store index, an epoch) or a
string turned into an integer by a stable hash (a FOV's name, a test's name, the purpose of the draws). Streams with
different keys are statistically independent (that is what a ``SeedSequence`` guarantees), so a result depends only
on its own keys: not on the order of the work, the batch size, or which other cells, tests or FOVs are in the run.

The stages draw from:

========================  ==================  ====================================================================
stage                     seed                keys
========================  ==================  ====================================================================
synthetic colony          ``synth.seed``      the FOV's name
control cells             :data:`DATA_SEED`   ``"control donor"`` or ``"control noise"``, the control's cell id
training                  ``training.seed``   ``"weights"`` and the model kind; ``"batch order"`` and the epoch;
                                              ``"loader workers"``
embedding                 ``analysis.seed``   ``"embedding"``, the cell's store index
generation                ``analysis.seed``   ``"generation"``, the purpose of the draws
β sweep                   ``analysis.seed``   ``"beta sweep"``, ``"embedding"`` or ``"generation"``
coupling                  ``analysis.seed``   ``"coupling donors"`` / ``"coupling noise"`` and the store index;
                                              ``"coupling bootstrap"`` and the structure's name
drug tests                ``analysis.seed``   ``"drug test"`` and the test's name
========================  ==================  ====================================================================

The split of cells (80/10/10 within each FOV) is not random: it orders each FOV's cells by :func:`stable_fraction` of
their ids (:func:`statcell.normalize.assign_splits`), so adding FOVs never moves another FOV's cells, whatever the
seeds.

This module needs only numpy; torch users seed a ``torch.Generator`` with :func:`integer_seed`.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Seed of the data stages, which have no seed setting: their draws are fixed by the cells' ids.
DATA_SEED = 0


def key_integer(key: str | int) -> int:
    """A stream key as a non-negative integer: integers as they are, strings by a stable 64-bit hash.

    Examples
    --------
    >>> key_integer(7)
    7
    >>> key_integer("golgi_00") == key_integer("golgi_00")
    True
    """
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return int(key)
    raise ValueError(f"a stream key is a string or a non-negative integer, not {key!r}")


def stream_seed(seed: int, *keys: str | int) -> np.random.SeedSequence:
    """The seed sequence of the stream named by ``seed`` and ``keys``."""
    return np.random.SeedSequence([key_integer(seed), *(key_integer(key) for key in keys)])


def numpy_stream(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy generator of the stream named by ``seed`` and ``keys``.

    Examples
    --------
    >>> first = numpy_stream(0, "embedding", 3).random()
    >>> first == numpy_stream(0, "embedding", 3).random() != numpy_stream(0, "embedding", 4).random()
    True
    """
    return np.random.default_rng(stream_seed(seed, *keys))


def integer_seed(seed: int, *keys: str | int, bits: int = 63) -> int:
    """An integer seed of the stream named by ``seed`` and ``keys``, for ``torch.Generator.manual_seed``.

    Parameters
    ----------
    seed : int
        The stage's seed setting.
    *keys : str or int
        The stream's name below the seed.
    bits : int
        Size of the integer: 63 for torch generators, 32 for ``lightning.seed_everything`` (which numpy's legacy
        global generator limits to 32 bits).

    Returns
    -------
    int
        In ``[0, 2**bits)``.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, not {bits}")
    word = int(stream_seed(seed, *keys).generate_state(1, np.uint64)[0])
    return word >> (64 - bits)


def stable_fraction(key: str) -> float:
    """A number in [0, 1) from a stable hash of a string, the same in every process and on every machine.

    Examples
    --------
    >>> 0 <= stable_fraction("main/golgi_00/7") < 1
    True
    """
    return key_integer(key) / 2.0**64
