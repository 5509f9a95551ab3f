"""The batched rational-quadratic spline against distrax's reference one."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.flows.spline import RationalQuadraticSpline

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import distrax


def _inputs(seed, n_bins, scale, dtype=np.float32):
    rng = np.random.default_rng(seed)
    # Points inside, on and beyond the interval [-3, 3].
    x = rng.uniform(-5.0, 5.0, size=(400, 3))
    x[:5, 0] = [-3.0, 3.0, -5.0, 5.0, 0.0]
    params = scale * rng.normal(size=(400, 3, 3 * n_bins + 1))
    return jnp.asarray(x, dtype), jnp.asarray(params, dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [2, 8])
@pytest.mark.parametrize("method", ["forward_and_log_det", "inverse_and_log_det"])
def test_matches_distrax(seed, n_bins, method):
    x, params = _inputs(seed, n_bins, 0.7)
    ours = getattr(RationalQuadraticSpline(params, -3.0, 3.0), method)(x)
    ref = getattr(distrax.RationalQuadraticSpline(params, -3.0, 3.0), method)(x)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_zero_parameters_are_the_identity():
    x = jnp.linspace(-6.0, 6.0, 41)
    spline = RationalQuadraticSpline(jnp.zeros((41, 25)), -5.0, 5.0)
    y, log_det = spline.forward_and_log_det(x)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_round_trip_and_log_det_float64():
    with jax.enable_x64(True):
        x, params = _inputs(3, 8, 1.0, np.float64)
        spline = RationalQuadraticSpline(params, -3.0, 3.0)
        y, ld_fwd = spline.forward_and_log_det(x)
        x_back, ld_inv = spline.inverse_and_log_det(y)
        np.testing.assert_allclose(x_back, x, atol=1e-9)
        np.testing.assert_allclose(ld_fwd + ld_inv, 0.0, atol=1e-9)
        # log f'(x) against the derivative of the map itself.
        def scalar(v, p):
            return RationalQuadraticSpline(p, -3.0, 3.0).forward(v)

        grad = jax.vmap(jax.vmap(jax.grad(scalar)))(x, params)
        np.testing.assert_allclose(ld_fwd, jnp.log(grad), atol=1e-8)


def test_rejects_bad_parameter_count():
    with pytest.raises(ValueError, match="3K \\+ 1"):
        RationalQuadraticSpline(jnp.zeros((3, 24)), -1.0, 1.0)


@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_gradients_are_finite_at_the_identity(method):
    # A fresh flow starts with zero spline parameters; both directions must
    # give finite gradients there, inside and outside the interval.
    x = jnp.linspace(-4.0, 4.0, 17)

    def total(params, x):
        return getattr(RationalQuadraticSpline(params, -3.0, 3.0), method)(x).sum()

    params = jnp.zeros((17, 25))
    g_params, g_x = jax.grad(total, argnums=(0, 1))(params, x)
    assert np.all(np.isfinite(g_params)) and np.all(np.isfinite(g_x))
    np.testing.assert_allclose(g_x, 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(25,), (3, 25), (1, 3, 25), (50, 1, 25)])
def test_parameters_broadcast_against_points(shape):
    # Fewer (or unit) batch axes in the parameters than in the points.
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(-4.0, 4.0, size=(50, 3)), jnp.float32)
    params = jnp.asarray(0.5 * rng.normal(size=shape), jnp.float32)
    for method in ("forward_and_log_det", "inverse_and_log_det"):
        ours = getattr(RationalQuadraticSpline(params, -3.0, 3.0), method)(x)
        ref = getattr(distrax.RationalQuadraticSpline(params, -3.0, 3.0), method)(x)
        for a, b in zip(ours, ref):
            assert a.shape == b.shape == (50, 3)
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
