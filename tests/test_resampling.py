"""Tests of the resampling schemes in aspire_jax.smc.resampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.errors import ValidationError
from aspire_jax.smc.resampling import RESAMPLERS, get_resampler

SCHEMES = sorted(RESAMPLERS)
N_KEYS = 2000


def _weights(n: int, seed: int = 0) -> jax.Array:
    """Dirichlet(1) weights, float32, summing to one."""
    w = np.random.default_rng(seed).dirichlet(np.ones(n))
    return jnp.asarray(w / w.sum(), jnp.float32)


@functools.lru_cache(maxsize=None)
def _copy_counts(name: str, n: int, num_samples: int, seed: int) -> np.ndarray:
    """Copies of each particle, ``(N_KEYS, n)``, one row per key."""
    fn = RESAMPLERS[name]
    weights = _weights(n, seed)

    def counts(key):
        idx = fn(key, weights, num_samples)
        return jnp.zeros((n,), jnp.int32).at[idx].add(1)

    keys = jax.random.split(jax.random.key(0), N_KEYS)
    return np.asarray(jax.jit(jax.vmap(counts))(keys), np.float64)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("n, num_samples", [(50, 50), (7, 20), (20, 7)])
def test_indices_shape_dtype_range(name, n, num_samples, keys):
    weights = _weights(n)
    for k in keys(5):
        idx = RESAMPLERS[name](k, weights, num_samples)
        assert idx.shape == (num_samples,)
        assert jnp.issubdtype(idx.dtype, jnp.integer)
        assert int(idx.min()) >= 0 and int(idx.max()) < n


@pytest.mark.parametrize("name", SCHEMES)
def test_zero_weights_never_drawn(name, keys):
    # Zeros away from the last slot: the last cumulative weight is pinned to
    # +inf against round-off, which is a separate matter.
    weights = np.asarray(_weights(12), np.float64)
    weights[[0, 3, 4, 8]] = 0.0
    weights = jnp.asarray(weights / weights.sum(), jnp.float32)
    for k in keys(20):
        idx = np.asarray(RESAMPLERS[name](k, weights, 12))
        assert not np.isin(idx, [0, 3, 4, 8]).any()


def _count_variance_bound(name: str, weights: np.ndarray, m: int) -> np.ndarray:
    """Per-particle variance of the copy count ``C_i`` (exact or an upper bound).

    With ``M w_i = k_i + f_i`` (integer part ``k_i``, fraction ``f_i``):

    * multinomial: ``C_i ~ Binomial(M, w_i)``, variance ``M w_i (1 - w_i)``;
    * systematic: a lattice of unit spacing meets an interval of length
      ``M w_i`` in ``k_i`` or ``k_i + 1`` points, and unbiasedness fixes the
      probabilities, so the variance is exactly ``f_i (1 - f_i)``;
    * stratified: a sum of independent Bernoullis over the strata the interval
      overlaps, at most two of them partially, so at most ``min(M w_i, 1/2)``;
    * residual: ``k_i + Binomial(R, f_i / R)``, variance at most ``f_i``.
    """
    mw = m * weights
    frac = mw - np.floor(mw)
    if name == "multinomial":
        return mw * (1.0 - weights)
    if name == "systematic":
        return frac * (1.0 - frac)
    if name == "stratified":
        return np.minimum(mw, 0.5)
    return frac


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("n, num_samples", [(50, 50), (20, 7)])
def test_unbiased_copy_counts(name, n, num_samples):
    weights = _weights(n, seed=1)
    counts = _copy_counts(name, n, num_samples, 1)
    assert np.all(counts.sum(axis=1) == num_samples)
    w = np.asarray(weights, np.float64)
    expected = num_samples * w
    # The mean of K independent counts has standard error sqrt(V_i / K), with
    # V_i the exact variance or its upper bound from _count_variance_bound.
    # 5 standard errors: a two-sided normal tail of 6e-7 per particle, about
    # 1e-4 over all particles, schemes and sizes tested here.
    se = np.sqrt(_count_variance_bound(name, w, num_samples) / N_KEYS)
    np.testing.assert_array_less(np.abs(counts.mean(axis=0) - expected),
                                 5 * se + 1e-6)


@pytest.mark.parametrize("name", ["systematic", "stratified", "residual"])
def test_variance_not_above_multinomial(name):
    n = m = 50
    weights = _weights(n, seed=1)
    w = np.asarray(weights, np.float64)
    var_mult = m * w * (1 - w)
    multinomial_total = var_mult.sum()
    # Sanity of the estimator on the multinomial scheme. For a Binomial count
    # mu_4 = 3 V^2 + V (1 - 6 w (1 - w)), so the sample variance of K draws has
    # variance (mu_4 - V^2) / K <= (2 V^2 + V) / K. The sd of the sum over
    # particles is at most the sum of the sds (Cauchy-Schwarz); 5 of them.
    counts_mult = _copy_counts("multinomial", n, m, 1)
    sd_total = np.sum(np.sqrt((2 * var_mult**2 + var_mult) / N_KEYS))
    assert abs(counts_mult.var(axis=0, ddof=1).sum() - multinomial_total) < (
        5 * sd_total)
    # The other schemes' totals are bounded by sum_i min(M w_i, 1/2) (at most
    # N/2) and by R = sum_i f_i (about N/2) while the multinomial total is
    # M (1 - sum w^2), close to M: a factor of about two. Their estimates have
    # an error of the same few-per-cent size as sd_total, so comparing with
    # the exact multinomial value cannot fail by noise.
    bound = _count_variance_bound(name, w, m).sum()
    assert bound < 0.7 * multinomial_total
    counts = _copy_counts(name, n, m, 1)
    assert counts.var(axis=0, ddof=1).sum() <= multinomial_total


@pytest.mark.parametrize("name", SCHEMES)
def test_jit_matches_eager(name, key):
    weights = _weights(30)
    fn = RESAMPLERS[name]
    eager = fn(key, weights, 30)
    jitted = jax.jit(fn, static_argnums=2)(key, weights, 30)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.parametrize("name", SCHEMES)
def test_weights_left_untouched(name, key):
    weights = np.asarray(_weights(10))
    before = weights.copy()
    RESAMPLERS[name](key, weights, 10)
    np.testing.assert_array_equal(weights, before)


def test_get_resampler():
    assert get_resampler("systematic") is RESAMPLERS["systematic"]
    with pytest.raises(ValidationError, match="'bootstrap'"):
        get_resampler("bootstrap")


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_round_off_gap_never_selects_a_zero_weight_last_particle(scheme):
    # Weights whose cumulative sum stops short of 1 and whose last particle
    # has zero weight: uniforms in the gap must not select it. The gap is
    # exaggerated to 10 % (round-off leaves ~1e-7) so that, without the guard,
    # about 6 of 64 draws per key would land on the last particle.
    w = jnp.full((7,), 1.0 / 6.0, jnp.float32).at[-1].set(0.0)
    w = w * 0.9
    for seed in range(20):
        idx = RESAMPLERS[scheme](jax.random.key(seed), w, 64)
        assert int(jnp.max(idx)) <= 5
