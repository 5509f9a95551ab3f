"""Resampling schemes.

Every resampler has the signature ``resample(key, weights, num_samples)`` and
returns ``num_samples`` ancestor indices into ``weights``. The weights must be
normalised (they sum to one); they are never modified.

All four schemes are unbiased: the expected number of copies of particle ``i``
is ``num_samples * weights[i]``. They differ in variance, from multinomial
(largest) to residual, stratified and systematic (smallest in practice).
"""

import jax
import jax.numpy as jnp

from .._types import Array, ArrayLike, PRNGKey

__all__ = [
    "multinomial",
    "systematic",
    "stratified",
    "residual",
    "RESAMPLERS",
    "get_resampler",
]


def _inverse_cdf(uniforms: Array, weights: Array) -> Array:
    """Indices ``i`` with ``cdf[i-1] <= u < cdf[i]`` for sorted ``uniforms``."""
    cdf = jnp.cumsum(weights)
    # Guard against the last cumulative weight falling short of 1 by round-off.
    cdf = cdf.at[-1].set(jnp.inf)
    idx = jnp.searchsorted(cdf, uniforms, side="right").astype(jnp.int32)
    # That guard must not hand the round-off gap to a zero-weight last
    # particle: fall back to the last particle with positive weight.
    n = weights.shape[0]
    last = (n - 1 - jnp.argmax(weights[::-1] > 0)).astype(jnp.int32)
    return jnp.minimum(idx, last)


def multinomial(key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    """Draw ancestors independently with probabilities ``weights``."""
    weights = jnp.asarray(weights)
    u = jnp.sort(jax.random.uniform(key, (num_samples,), dtype=weights.dtype))
    return _inverse_cdf(u, weights)


def stratified(key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    """One uniform in each of ``num_samples`` equal strata of [0, 1)."""
    weights = jnp.asarray(weights)
    jitter = jax.random.uniform(key, (num_samples,), dtype=weights.dtype)
    u = (jnp.arange(num_samples, dtype=weights.dtype) + jitter) / num_samples
    return _inverse_cdf(u, weights)


def systematic(key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    """A single uniform offset shared by ``num_samples`` equal strata."""
    weights = jnp.asarray(weights)
    jitter = jax.random.uniform(key, (), dtype=weights.dtype)
    u = (jnp.arange(num_samples, dtype=weights.dtype) + jitter) / num_samples
    return _inverse_cdf(u, weights)


def residual(key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    """Keep ``floor(num_samples * w)`` copies, fill the rest multinomially.

    Notes
    -----
    The deterministic copies are laid out with a static-shape scatter, so the
    function is jit-compatible: particle ``i`` owns the output slots
    ``[c_{i-1}, c_i)`` of the cumulative copy counts ``c``. Slots beyond the
    deterministic total are filled by multinomial draws on the residual
    weights ``num_samples * w - floor(num_samples * w)``.
    """
    weights = jnp.asarray(weights)
    scaled = num_samples * weights
    copies = jnp.floor(scaled).astype(jnp.int32)
    n_fixed = jnp.sum(copies)
    ends = jnp.cumsum(copies)
    slots = jnp.arange(num_samples, dtype=jnp.int32)
    fixed = jnp.searchsorted(ends, slots, side="right").astype(jnp.int32)
    res = scaled - copies
    res_total = jnp.sum(res)
    res_w = jnp.where(res_total > 0, res / jnp.where(res_total > 0, res_total, 1.0),
                      weights)
    # Independent, unsorted draws: the first ``num_samples - n_fixed`` of them
    # are then a multinomial sample from the residual weights. (Sorted draws
    # would favour low indices, because only a prefix is used.)
    u = jax.random.uniform(key, (num_samples,), dtype=weights.dtype)
    extra = _inverse_cdf(u, res_w)
    idx = jnp.where(slots < n_fixed, fixed, extra[slots - n_fixed])
    return jnp.clip(idx, 0, weights.shape[0] - 1)


RESAMPLERS = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}


def get_resampler(name: str):
    """Return the resampler called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``RESAMPLERS``.
    """
    from ..errors import ValidationError

    try:
        return RESAMPLERS[name]
    except KeyError:
        raise ValidationError(
            f"unknown resampling scheme {name!r}; choose one of "
            f"{sorted(RESAMPLERS)}") from None
