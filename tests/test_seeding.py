"""The one seeding scheme: streams named by a seed and keys, and every stage drawing through it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from statcell import seeding

LIBRARY = Path(__file__).resolve().parents[1] / "statcell"


def test_a_stream_is_fixed_by_its_name_and_differs_between_names():
    first = seeding.numpy_stream(3, "embedding", 12).standard_normal(8)
    np.testing.assert_array_equal(first, seeding.numpy_stream(3, "embedding", 12).standard_normal(8))
    for other in [(4, "embedding", 12), (3, "embedding", 13), (3, "generation", 12), (3, "embedding")]:
        assert not np.allclose(first, seeding.numpy_stream(*other).standard_normal(8)), other


def test_integer_seeds_fit_their_consumers_and_follow_the_stream():
    torch_seed = seeding.integer_seed(0, "weights", "target")
    assert 0 <= torch_seed < 2**63
    assert 0 <= seeding.integer_seed(0, "weights", "target", bits=32) < 2**32
    assert torch_seed != seeding.integer_seed(0, "weights", "reference")
    assert torch_seed == seeding.integer_seed(0, "weights", "target")
    with pytest.raises(ValueError, match="bits"):
        seeding.integer_seed(0, bits=65)


@pytest.mark.parametrize("key", [-1, 1.5, True, None])
def test_a_bad_key_is_refused_with_its_value(key):
    with pytest.raises(ValueError, match="stream key"):
        seeding.numpy_stream(0, key)


def test_the_synthetic_colony_keeps_its_streams():
    """A FOV's stream is ``[seed, sha256(name)]``, the one the colony was always drawn from."""
    import hashlib

    from statcell.synth import fov_rng

    digest = int.from_bytes(hashlib.sha256(b"golgi_00").digest()[:8], "little")
    np.testing.assert_array_equal(fov_rng(5, "golgi_00").random(4), np.random.default_rng([5, digest]).random(4))


def test_the_split_hash_is_spread_and_stable():
    fractions = np.array([seeding.stable_fraction(f"main/golgi_00/{label}") for label in range(4000)])
    assert fractions.min() >= 0 and fractions.max() < 1
    counts = np.histogram(fractions, bins=10, range=(0, 1))[0]
    assert counts.min() > 330 and counts.max() < 470  # uniform: 400 per bin, 3 sigma is about 57
    assert seeding.stable_fraction("main/golgi_00/7") == pytest.approx(0.37158, abs=1e-5)  # the same on every machine


def _seeding_calls(path: Path) -> list[str]:
    """Calls in a module that seed a generator by hand instead of through :mod:`statcell.seeding`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in {"default_rng", "manual_seed", "SeedSequence", "seed_everything"} and node.args:
                argument = node.args[0]
                through_scheme = (isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name)
                                  and argument.func.id in {"integer_seed", "stream_seed"})
                if not through_scheme:
                    found.append(f"{path.relative_to(LIBRARY.parent)}:{node.lineno} {name}")
    return found


def test_every_generator_of_the_library_is_seeded_through_the_scheme():
    offenders = [call for path in sorted(LIBRARY.rglob("*.py")) if path.name != "seeding.py"
                 for call in _seeding_calls(path)]
    assert offenders == []
