"""Helpers shared by the benchmark workers (numpy only, no JAX, no torch).

Both ``bench_jax.py`` (main environment) and ``upstream_runner.py`` (the
upstream environment) import this module, so it must run in either.
"""

from __future__ import annotations

import numpy as np

__all__ = ["versions", "weighted_moments"]


def versions(names) -> dict:
    """Installed version of each distribution in ``names`` (None if absent)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def weighted_moments(x, log_w=None):
    """Mean, standard deviation and normalised weights of rows ``x``.

    ``log_w`` are unnormalised log-weights (non-finite ones count as zero
    weight); ``None`` weighs every row equally.
    """
    x = np.asarray(x, float)
    if log_w is None:
        w = np.full(len(x), 1.0 / len(x))
    else:
        lw = np.asarray(log_w, float)
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        w = np.exp(lw - np.max(lw))
        w /= w.sum()
    mean = w @ x
    return mean, np.sqrt(w @ (x - mean) ** 2), w
