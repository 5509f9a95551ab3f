"""Tests of aspire_jax.transforms."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax import transforms as T
from aspire_jax.errors import ValidationError

# Columns: none, lower (lo=1), upper (hi=2), bounded (-3, 5).
BOUNDS = np.array([[-np.inf, np.inf], [1.0, np.inf], [-np.inf, 2.0], [-3.0, 5.0]])
KINDS = ("none", "lower", "upper", "bounded")

# Jitted once here: eager dispatch of the many small ops is slow on CPU.
fwd = jax.jit(T.forward)
inv = jax.jit(T.inverse)


def _samples(seed, n=64):
    rng = np.random.default_rng(seed)
    x = np.stack(
        [
            2.0 * rng.normal(size=n),
            1.0 + rng.exponential(size=n),
            2.0 - rng.exponential(size=n),
            rng.uniform(-2.9, 4.9, size=n),
        ],
        axis=1,
    )
    return jnp.asarray(x, dtype=jnp.float32)


def _near_boundary():
    # Bounded column at 1e-4 of the width from either end, one-sided columns
    # within 1e-4 of their bound.
    return jnp.array(
        [
            [0.0, 1.0 + 1e-4, 2.0 - 1e-4, -3.0 + 8e-4],
            [-1e3, 1.0 + 1e3, 2.0 - 1e3, 5.0 - 8e-4],
            [1e3, 1.5, 1.5, 1.0],
        ]
    )


@pytest.fixture(params=T.BOUNDED_TRANSFORMS)
def params(request):
    x = _samples(0, 256)
    return T.fit_transform(x, prior_bounds=BOUNDS, bounded_transform=request.param)


def test_kinds_and_whitening(params):
    assert params.kinds == KINDS
    y, _ = fwd(params, _samples(0, 256))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=1e-5)


def test_no_affine_is_bounded_map_only():
    x = _samples(1)
    p = T.fit_transform(x, prior_bounds=BOUNDS, affine=False)
    np.testing.assert_array_equal(p.shift, 0.0)
    np.testing.assert_array_equal(p.scale, 1.0)
    y, _ = fwd(p, x)
    np.testing.assert_allclose(y[:, 1], jnp.log(x[:, 1] - 1.0), rtol=1e-6)
    np.testing.assert_allclose(y[:, 2], jnp.log(2.0 - x[:, 2]), rtol=1e-6)


def test_round_trip_native(params):
    x = jnp.concatenate([_samples(2), _near_boundary()])
    y, ld_f = fwd(params, x)
    x2, ld_i = inv(params, y)
    np.testing.assert_allclose(x2, x, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ld_i, -ld_f, rtol=1e-5, atol=2e-4)


def _raw_limit(params):
    # |y| of the bounded map at the eps clamp: forward clamps beyond it.
    eps = params.eps
    if params.bounded_transform == "logit":
        return float(np.log((1 - eps) / eps))
    return -float(jax.scipy.special.ndtri(eps))


def test_round_trip_latent(params):
    limit = 0.99 * _raw_limit(params)
    rng = np.random.default_rng(3)
    raw = rng.uniform(-limit, limit, size=(64, 4)).astype(np.float32)
    y = (raw - params.shift) / params.scale
    x, ld_i = inv(params, y)
    y2, ld_f = fwd(params, x)
    # Storing x in float32 perturbs it by up to half a spacing, which moves y by
    # |dy/dx| times that; near a bound this dominates, so allow 2 spacings.
    slope = jax.jit(jax.vmap(jax.jacfwd(lambda v: fwd(params, v)[0])))(x)
    slope = jnp.abs(jnp.diagonal(slope, axis1=1, axis2=2))
    tol = 2.0 * np.spacing(np.abs(np.asarray(x))) * slope + 1e-5 * (1 + jnp.abs(y))
    assert np.all(np.abs(np.asarray(y2 - y)) <= tol)
    # Compare log-dets at corresponding points, (x, y2 = forward(x)).
    np.testing.assert_allclose(ld_f, -inv(params, y2)[1], rtol=1e-5, atol=2e-4)


def test_forward_clamps_within_eps_of_bounds(params):
    limit = _raw_limit(params)
    raw = jnp.zeros((2, 4)).at[:, 3].set(jnp.array([-2.0 * limit, 2.0 * limit]))
    x, _ = inv(params, (raw - params.shift) / params.scale)
    y, _ = fwd(params, x)
    edge = y[:, 3] * params.scale[3] + params.shift[3]
    np.testing.assert_allclose(edge, [-limit, limit], rtol=1e-4)


def _per_sample_logdet(fn, x):
    def one(xi):
        return fn(xi[None])[0][0]

    jac = jax.jit(jax.vmap(jax.jacfwd(one)))(x)
    return jnp.linalg.slogdet(jac)[1]


def test_forward_logdet_matches_autodiff(params):
    x = jnp.concatenate([_samples(4, 16), _near_boundary()])
    _, logdet = fwd(params, x)
    expected = _per_sample_logdet(lambda v: fwd(params, v), x)
    np.testing.assert_allclose(logdet, expected, rtol=1e-5, atol=1e-4)


def test_inverse_logdet_matches_autodiff(params):
    y = jnp.asarray(np.random.default_rng(5).normal(size=(16, 4)) * 2.0, jnp.float32)
    _, logdet = inv(params, y)
    expected = _per_sample_logdet(lambda v: inv(params, v), y)
    np.testing.assert_allclose(logdet, expected, rtol=1e-5, atol=1e-4)


def test_inverse_stays_inside_for_large_y(params):
    raw = jnp.array([[-30.0] * 4, [30.0] * 4, [-1e4] * 4, [1e4] * 4])
    # Undo the whitening so the bounded map itself sees |y| = 30 and beyond.
    y = (raw - params.shift) / params.scale
    x, logdet = inv(params, y)
    assert np.all(np.isfinite(np.asarray(logdet)))
    assert np.all(x[:, 3] > -3.0) and np.all(x[:, 3] < 5.0)
    assert np.all(x[:, 1] > 1.0) and np.all(x[:, 2] < 2.0)
    assert np.all(np.isfinite(np.asarray(x[:2])))


def test_finite_gradients_at_edges(params):
    edge = jnp.array(
        [[0.0, 1.0, 2.0, -3.0], [0.0, 1.0 + 1e-30, 2.0, 5.0], [0.0, 0.5, 3.0, 6.0]]
    )

    def total(v):
        y, ld = fwd(params, v)
        return jnp.sum(y) + jnp.sum(ld)

    g = jax.jit(jax.grad(total))(edge)
    assert np.all(np.isfinite(np.asarray(g)))
    y_edge = jnp.array([[-30.0] * 4, [30.0] * 4, [0.0] * 4])
    g = jax.jit(jax.grad(lambda v: sum(jnp.sum(a) for a in T.inverse(params, v))))(
        y_edge
    )
    assert np.all(np.isfinite(np.asarray(g)))


def test_forward_on_bound_is_finite(params):
    y, logdet = fwd(params, jnp.array([[0.0, 1.0, 2.0, -3.0], [0.0, 1.0, 2.0, 5.0]]))
    assert np.all(np.isfinite(np.asarray(y)))
    assert np.all(np.isfinite(np.asarray(logdet)))


def test_jit_parity_and_batch_shapes(params):
    x = _samples(6).reshape(4, 16, 4)
    y, ld = T.forward(params, x)
    assert y.shape == (4, 16, 4) and ld.shape == (4, 16)
    yj, ldj = jax.jit(T.forward)(params, x)
    np.testing.assert_allclose(yj, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ldj, ld, rtol=1e-6, atol=1e-5)
    y1, ld1 = fwd(params, x[0, 0])
    assert y1.shape == (4,) and ld1.shape == ()


def test_config_round_trip(params):
    config = T.transform_config(params)
    text = json.dumps(config, allow_nan=False)
    back = T.transform_from_config(json.loads(text))
    assert back.kinds == params.kinds
    assert back.bounded_transform == params.bounded_transform
    assert back.eps == params.eps
    for name in ("lower", "upper", "shift", "scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(params, name))


def test_config_errors(params):
    config = T.transform_config(params)
    with pytest.raises(ValidationError, match="unknown"):
        T.transform_from_config({**config, "extra": 1})
    with pytest.raises(ValidationError, match="length"):
        T.transform_from_config({**config, "shift": [0.0]})
    with pytest.raises(ValidationError, match="does not match"):
        T.transform_from_config({**config, "kinds": ["none"] * 4})


def test_wrap_periodic():
    x = jnp.array([-0.5, 0.0, 1.0, 2.0 * np.pi, 7.0, -1e-9, 4.0 * np.pi + 0.25])
    w = T.wrap_periodic(x, 0.0, 2.0 * np.pi)
    assert np.all(w >= 0.0) and np.all(w < np.float32(2.0 * np.pi))
    expected = [2 * np.pi - 0.5, 7.0 - 2 * np.pi, 0.25]
    np.testing.assert_allclose(np.asarray(w)[[0, 4, 6]], expected, atol=1e-5)
    assert w[3] == 0.0
    per_dim = T.wrap_periodic(
        jnp.array([[3.5, -0.25]]), jnp.array([0.0, -1.0]), jnp.array([1.0, 1.0])
    )
    np.testing.assert_allclose(per_dim, [[0.5, -0.25]], atol=1e-6)


@pytest.mark.parametrize(
    ("x", "bounds", "match"),
    [
        (np.array([[0.5], [1.5]]), [[0.0, 1.0]], r"x\[1, 0\] = 1\.5 .*\(0, 1\)"),
        (np.array([[0.0], [0.5]]), [[0.0, 1.0]], r"x\[0, 0\]"),
        (np.array([[np.nan], [0.5]]), None, "finite"),
        (np.zeros(3), None, "2-D"),
        (np.zeros((3, 2)), [[0.0, 1.0]], r"shape \(n_dims, 2\)"),
        (np.zeros((3, 1)), [[1.0, 0.0]], "lower < upper"),
    ],
)
def test_validation_errors(x, bounds, match):
    with pytest.raises(ValidationError, match=match):
        T.fit_transform(x, prior_bounds=bounds)


def test_validation_settings():
    x = np.full((4, 1), 0.5)
    with pytest.raises(ValidationError, match="bounded_transform"):
        T.fit_transform(x, prior_bounds=[[0.0, 1.0]], bounded_transform="tanh")
    with pytest.raises(ValidationError, match="eps"):
        T.fit_transform(x, eps=0.7)
    with pytest.raises(ValidationError, match=r"shape \(\.\.\., 1\)"):
        T.forward(T.fit_transform(x), jnp.zeros((2, 3)))


def test_constant_column_keeps_unit_scale():
    x = np.stack([np.linspace(0.0, 1.0, 10), np.full(10, 3.0)], axis=1)
    p = T.fit_transform(x)
    assert float(p.scale[1]) == 1.0


def test_periodic_space_maps_are_mutually_consistent():
    """The log-Jacobian of PeriodicSpace.to_unbounded at x must be minus
    that of from_unbounded at the image u, as the MH ratios assume."""
    from aspire_jax.flows import Flow, FlowConfig
    from aspire_jax.spaces import PeriodicSpace

    rng = np.random.default_rng(2)
    x = np.column_stack([rng.uniform(0, 2 * np.pi, 200), rng.uniform(0.05, 0.95, 200),
                         rng.normal(0, 2, 200)]).astype(np.float32)
    bounds = np.array([[0, 2 * np.pi], [0, 1], [-np.inf, np.inf]])
    flow = Flow(FlowConfig(n_dims=3, kind="affine", n_layers=1, hidden_sizes=(4,)))
    params = flow.init(jax.random.key(0), x, prior_bounds=bounds)
    space = PeriodicSpace(flow, (True, False, False), (0.0, 0.0, 0.0),
                          (2 * np.pi, 1.0, 0.0))
    for p in (params, space.centred(params, jnp.asarray(x[:50]))):
        u, ld_to = space.to_unbounded(p, jnp.asarray(x))
        x_back, ld_from = space.from_unbounded(p, u)
        np.testing.assert_allclose(np.asarray(x_back), x, atol=2e-5)
        np.testing.assert_allclose(np.asarray(ld_to), -np.asarray(ld_from), atol=1e-4)


def test_periodic_space_centres_a_population_that_straddles_the_seam():
    # Angles within 0.3 of 0 == 2 pi: about the middle of the period they
    # sit at both ends (a spread of ~1.7 in the move coordinate); about
    # their circular mean they are one narrow piece around zero.
    from aspire_jax.flows import Flow, FlowConfig
    from aspire_jax.spaces import PeriodicSpace

    rng = np.random.default_rng(3)
    phi = np.mod(rng.normal(0.05, 0.1, 500), 2 * np.pi)
    x = jnp.asarray(np.column_stack([phi, rng.normal(0, 1, 500)]), jnp.float32)
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=1, hidden_sizes=(4,)))
    params = flow.init(jax.random.key(0), np.asarray(x),
                       prior_bounds=np.array([[0, 2 * np.pi], [-np.inf, np.inf]]))
    space = PeriodicSpace(flow, (True, False), (0.0, 0.0), (2 * np.pi, 0.0))
    scale = 2 * np.pi / np.sqrt(12)
    u_mid, _ = space.to_unbounded(params, x)
    assert float(jnp.std(u_mid[:, 0])) > 1.5
    centred = space.centred(params, x)
    np.testing.assert_allclose(float(centred.centre[0]), 0.05, atol=0.03)
    u, _ = space.to_unbounded(centred, x)
    np.testing.assert_allclose(float(jnp.std(u[:, 0])) * scale, 0.1, rtol=0.15)
    np.testing.assert_array_equal(np.asarray(u[:, 1]), np.asarray(u_mid[:, 1]))
