"""Tests of the tempering helpers in aspire_jax.smc.tempering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.smc.tempering import (conditional_efficiency,
                                      incremental_log_weights, next_beta_step,
                                      safe_scale)

N = 1000


def _log_ratio(key, n=N, scale=3.0):
    """Log-ratios of a Gaussian-like problem: spread ``scale``, float32."""
    return scale * jax.random.normal(key, (n,)) - 5.0


def _uniform_log_weights(n=N):
    return jnp.full((n,), -jnp.log(n), jnp.float32)


def _ess_fraction(delta, log_ratio):
    """ESS / N of the weights exp(delta r), computed in float64 numpy."""
    w = np.exp(delta * (np.asarray(log_ratio, np.float64)
                        - np.max(np.asarray(log_ratio, np.float64))))
    return w.sum() ** 2 / (w.size * np.sum(w**2))


def test_safe_scale_and_increments():
    v = jnp.array([-jnp.inf, 1.0, -2.0])
    np.testing.assert_array_equal(safe_scale(0.0, v), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(safe_scale(2.0, v), [-jnp.inf, 2.0, -4.0])
    lw = incremental_log_weights(0.0, v)
    assert jnp.isneginf(lw[0]) and lw[1] == 0.0 and lw[2] == 0.0


@pytest.mark.parametrize("delta", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_efficiency_is_ess_fraction_for_uniform_weights(delta, keys):
    for k in keys(3):
        r = _log_ratio(k)
        eff = conditional_efficiency(delta, _uniform_log_weights(), r)
        # float32 logsumexp over 1000 terms: relative error ~1e-6 per term;
        # 1e-4 relative leaves a wide margin over round-off only.
        np.testing.assert_allclose(float(eff), _ess_fraction(delta, r), rtol=1e-4)


def test_conditional_efficiency_weighted_formula(key):
    key_w, key_r = jax.random.split(key)
    lw = jax.random.normal(key_w, (N,))
    lw = lw - jax.scipy.special.logsumexp(lw)
    r = _log_ratio(key_r)
    W = np.exp(np.asarray(lw, np.float64))
    for delta in (0.05, 0.3):
        w = np.exp(delta * np.asarray(r, np.float64))
        expected = np.sum(W * w) ** 2 / np.sum(W * w**2)
        eff = conditional_efficiency(delta, lw, r)
        np.testing.assert_allclose(float(eff), expected, rtol=1e-4)


def test_efficiency_with_impossible_particles(key):
    r = _log_ratio(key).at[:100].set(-jnp.inf)
    eff = conditional_efficiency(0.2, _uniform_log_weights(), r)
    expected = _ess_fraction(0.2, r[100:]) * 900 / N
    np.testing.assert_allclose(float(eff), expected, rtol=1e-4)
    all_impossible = jnp.full((N,), -jnp.inf)
    assert float(conditional_efficiency(0.2, _uniform_log_weights(),
                                        all_impossible)) == 0.0


@pytest.mark.parametrize("target", [0.3, 0.5, 0.9])
def test_next_beta_step_hits_target(target, keys):
    tol = 1e-6
    for k in keys(3):
        r = _log_ratio(k)
        lw = _uniform_log_weights()
        out = next_beta_step(lw, r, 0.0, target, tolerance=tol)
        delta = float(out.delta)
        assert not bool(out.hit_min)
        assert 0 < delta < 1
        # Bisection keeps the lower end of a bracket narrower than tol, so the
        # step meets the target and a step 2 tol longer does not (comparisons
        # in float32, as inside the search).
        target32 = float(np.float32(target))
        assert float(conditional_efficiency(delta, lw, r)) >= target32
        assert float(conditional_efficiency(delta + 2 * tol, lw, r)) < target32
        np.testing.assert_allclose(float(out.efficiency), target, atol=1e-3)


def test_next_beta_step_respects_max_step_and_room(key):
    r = _log_ratio(key, scale=0.01)  # nearly flat: any step meets the target
    lw = _uniform_log_weights()
    out = next_beta_step(lw, r, 0.0, 0.5, max_step=0.05)
    assert float(out.delta) == pytest.approx(0.05)
    out = next_beta_step(lw, r, 0.99, 0.5)
    assert float(out.delta) == pytest.approx(0.01, rel=1e-4)
    assert 0.99 + float(out.delta) <= 1.0 + 1e-7
    out = next_beta_step(lw, r, 0.99, 0.5, max_step=0.5, min_step=0.3)
    assert float(out.delta) == pytest.approx(0.01, rel=1e-4)


def test_next_beta_step_respects_min_step_and_flags(key):
    r = _log_ratio(key, scale=300.0)  # so sharp that the target needs tiny steps
    lw = _uniform_log_weights()
    free = next_beta_step(lw, r, 0.0, 0.9)
    assert float(free.delta) < 1e-2 and not bool(free.hit_min)
    out = next_beta_step(lw, r, 0.0, 0.9, min_step=0.1)
    assert float(out.delta) == pytest.approx(0.1)
    assert bool(out.hit_min)
    assert float(out.efficiency) < 0.9
    # A min_step that meets the target is not a failure.
    out = next_beta_step(lw, r, 0.0, 0.9, min_step=float(free.delta) / 2)
    assert not bool(out.hit_min)
    assert float(out.delta) == pytest.approx(float(free.delta), abs=2e-6)


def test_next_beta_step_efficiency_decreases_in_step(key):
    r = _log_ratio(key)
    lw = _uniform_log_weights()
    effs = [float(conditional_efficiency(d, lw, r)) for d in (0.0, 0.01, 0.1, 1.0)]
    assert effs[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(effs, effs[1:]))
    deltas = [float(next_beta_step(lw, r, 0.0, t).delta) for t in (0.9, 0.5, 0.2)]
    assert deltas[0] < deltas[1] < deltas[2]


def test_next_beta_step_jit_and_traced_beta(key):
    r = _log_ratio(key)
    lw = _uniform_log_weights()
    traces = []

    def search(beta, target):
        traces.append(None)
        return next_beta_step(lw, r, beta, target)

    jitted = jax.jit(search)
    for beta in (0.0, 0.2, 0.7):
        got = jitted(jnp.float32(beta), jnp.float32(0.5))
        want = next_beta_step(lw, r, jnp.float32(beta), 0.5)
        np.testing.assert_allclose(float(got.delta), float(want.delta), rtol=1e-6)
    assert len(traces) == 1
