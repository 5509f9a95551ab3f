"""Adaptive choice of the next inverse temperature.

The tempered family is

    p_beta(x) ∝ q(x)^(1 - beta) * (pi(x) L(x))^beta,

so moving from ``beta`` to ``beta + delta`` multiplies each particle's weight by
``exp(delta * r(x))`` with the log-ratio ``r = log pi + log L - log q``.

The step ``delta`` is chosen so that the *conditional* effective sample size
(Zhou, Johansen & Aston 2016) of the incremental weights equals a target
fraction of the particle count:

    CESS / N = (sum_i W_i w_i)^2 / (sum_i W_i w_i^2),

with ``W`` the normalised current weights and ``w`` the incremental weights.
For equal current weights (resampling every iteration) this is the usual
ESS / N of the incremental weights.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .._types import Array, ArrayLike

__all__ = [
    "safe_scale",
    "incremental_log_weights",
    "conditional_efficiency",
    "BetaSearch",
    "next_beta_step",
]


def safe_scale(scale: ArrayLike, values: ArrayLike) -> Array:
    """``scale * values`` with ``0 * (-inf) = 0`` instead of NaN."""
    scale = jnp.asarray(scale)
    return jnp.where(scale == 0, jnp.zeros_like(values), scale * values)


def incremental_log_weights(delta: ArrayLike, log_ratio: ArrayLike) -> Array:
    """``delta * log_ratio`` where ``-inf`` ratios give ``-inf`` for any delta."""
    log_ratio = jnp.asarray(log_ratio)
    return jnp.where(jnp.isneginf(log_ratio), -jnp.inf, delta * log_ratio)


def conditional_efficiency(delta: ArrayLike, log_weights: ArrayLike,
                           log_ratio: ArrayLike) -> Array:
    """CESS / N of the step ``delta`` given normalised ``log_weights``."""
    lw = incremental_log_weights(delta, log_ratio)
    # Shift by the largest increment first: 2 lse(a) - lse(2a) cancels
    # catastrophically in float32 when the increments are large (|r| ~ 1e9).
    top = jnp.max(jnp.where(jnp.isfinite(lw), lw, -jnp.inf))
    lw = lw - jnp.where(jnp.isfinite(top), top, 0.0)
    num = 2.0 * logsumexp(log_weights + lw)
    den = logsumexp(log_weights + 2.0 * lw)
    eff = jnp.exp(num - den)
    return jnp.where(jnp.isfinite(eff), jnp.clip(eff, 0.0, 1.0), 0.0)


class BetaSearch(NamedTuple):
    """Outcome of :func:`next_beta_step`.

    ``delta`` is the chosen step, ``efficiency`` the CESS / N it gives,
    ``hit_min`` says that even the smallest allowed step fell below the target
    (so the minimum step was taken), and ``n_iterations`` counts bisection
    iterations.
    """

    delta: Array
    efficiency: Array
    hit_min: Array
    n_iterations: Array


def next_beta_step(log_weights: ArrayLike, log_ratio: ArrayLike, beta: ArrayLike,
                   target: ArrayLike, *, min_step: ArrayLike = 0.0,
                   max_step: ArrayLike = 1.0, tolerance: float = 1e-6,
                   max_iterations: int = 100) -> BetaSearch:
    """Bisection for the largest step whose CESS / N is at least ``target``.

    Parameters
    ----------
    log_weights
        Normalised log-weights of the current particles, shape ``(n,)``.
    log_ratio
        ``log pi + log L - log q`` per particle, shape ``(n,)``.
    beta
        Current inverse temperature.
    target
        Target CESS / N in (0, 1).
    min_step, max_step
        Bounds on the step; the step never exceeds ``1 - beta``.
    tolerance
        Bisection stops once the bracket is narrower than this fraction of
        its upper end.
    max_iterations
        Hard cap on bisection iterations (static).

    Returns
    -------
    BetaSearch
        The step and diagnostics.

    Notes
    -----
    The efficiency decreases with ``delta`` (the incremental weights spread
    out), so bisection on the bracket ``[min_step, max_step]`` converges to the
    crossing. The lower end of the returned bracket is used, so the achieved
    efficiency is never below the target unless ``hit_min`` is set.
    """
    beta = jnp.asarray(beta)
    room = 1.0 - beta
    hi0 = jnp.minimum(jnp.asarray(max_step, beta.dtype), room)
    lo0 = jnp.minimum(jnp.asarray(min_step, beta.dtype), hi0)

    def eff(delta):
        return conditional_efficiency(delta, log_weights, log_ratio)

    eff_hi = eff(hi0)
    eff_lo = eff(lo0)
    take_hi = eff_hi >= target
    hit_min = jnp.logical_and(~take_hi, eff_lo < target)

    def cond(carry):
        lo, hi, it = carry
        # Relative width: a likelihood that is sharp compared with the flow
        # needs steps far below any fixed absolute tolerance.
        return jnp.logical_and(hi - lo > tolerance * hi, it < max_iterations)

    def body(carry):
        lo, hi, it = carry
        mid = 0.5 * (lo + hi)
        ok = eff(mid) >= target
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid), it + 1

    lo, _, n_it = jax.lax.while_loop(cond, body, (lo0, hi0, jnp.int32(0)))
    # A bracket collapsed onto zero would stall the run; take the upper end.
    lo = jnp.where(lo > 0, lo, jnp.minimum(hi0, tolerance * hi0))
    delta = jnp.where(take_hi, hi0, jnp.where(hit_min, lo0, lo))
    delta = jnp.where(delta > 0, delta, jnp.minimum(hi0, tolerance * hi0))
    return BetaSearch(delta=delta, efficiency=eff(delta), hit_min=hit_min,
                      n_iterations=n_it)
