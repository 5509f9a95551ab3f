"""Shared fixtures: deterministic typed PRNG keys."""

import jax
import pytest


@pytest.fixture
def key():
    """The root key of a test, ``jax.random.key(0)``."""
    return jax.random.key(0)


@pytest.fixture
def keys():
    """``keys(n)`` gives ``n`` independent keys split from ``jax.random.key(0)``."""

    def make(n: int):
        return jax.random.split(jax.random.key(0), n)

    return make
