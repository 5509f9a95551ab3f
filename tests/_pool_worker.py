"""Module-level host functions for the process-pool tests: spawned workers
import this module by name, so it imports NumPy only (no JAX)."""

import numpy as np

LIKE_MEAN = 1.0
LIKE_SD = 0.5


def point_log_likelihood(p):
    """The Gaussian likelihood of ``tests/problems.py`` for one point ``(d,)``."""
    r = (np.asarray(p, dtype=np.float64) - LIKE_MEAN) / LIKE_SD
    return float(np.sum(-0.5 * r**2 - np.log(LIKE_SD * np.sqrt(2 * np.pi))))


def batch_log_likelihood(x):
    """The same for a batch ``(n, d)``."""
    return np.array([point_log_likelihood(p) for p in np.asarray(x)])


class Boom(RuntimeError):
    """Raised by :func:`failing_point_log_likelihood`."""


def failing_point_log_likelihood(p):
    """Raises for every point: a likelihood whose data went missing."""
    raise Boom("detector data vanished in a worker")
