"""Tests of aspire_jax.flows."""

import importlib
import json
import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.errors import FlowError, ValidationError
from aspire_jax.flows import Flow, FlowConfig, FlowHistory, FlowParams, fit
from aspire_jax.flows.gaussian import has_gaussian

# The package's `fit` attribute is the function; fetch the module itself.
fit_module = importlib.import_module("aspire_jax.flows.fit")

SMALL = dict(n_layers=2, hidden_sizes=(16,))
BOUNDS_3D = np.array([[-np.inf, np.inf], [0.0, np.inf], [-1.0, 2.0]])


def _bounded_samples(seed, n):
    rng = np.random.default_rng(seed)
    columns = [
        rng.normal(size=n),
        rng.gamma(2.0, size=n),
        -1.0 + 3.0 * rng.beta(2.0, 3.0, n),
    ]
    return np.stack(columns, axis=1).astype(np.float32)


@jax.jit
def _perturb(params, key, scale=0.1):
    """Random net weights, so the maps under test are far from the identity."""
    leaves, tree = jax.tree.flatten(params.net)
    keys = jax.random.split(key, len(leaves))
    leaves = [w + scale * jax.random.normal(k, w.shape) for w, k in zip(leaves, keys)]
    return params.replace(net=jax.tree.unflatten(tree, leaves))


def _make(kind, d):
    flow = Flow(FlowConfig(n_dims=d, kind=kind, **SMALL))
    x = _bounded_samples(0, 200)[:, 3 - d :]
    params = flow.init(jax.random.key(1), x, prior_bounds=BOUNDS_3D[3 - d :])
    return flow, _perturb(params, jax.random.key(2)), x


@pytest.fixture(params=["spline", "affine"])
def flow_and_params(request):
    """A 3-D flow with random weights over none / lower / bounded parameters."""
    return _make(request.param, 3)


def test_init_is_near_identity():
    flow = Flow(FlowConfig(n_dims=3, **SMALL))
    x = _bounded_samples(0, 100)
    params = flow.init(jax.random.key(1), x, prior_bounds=BOUNDS_3D)
    u, _ = flow.to_unbounded(params, x)
    z, _ = flow.to_latent(params, x)
    np.testing.assert_allclose(z, u, atol=1e-5)


def test_sample_log_q_matches_log_prob(flow_and_params):
    flow, params, _ = flow_and_params
    x, log_q = flow.sample_and_log_prob(params, jax.random.key(3), 256)
    assert x.shape == (256, flow.n_dims) and log_q.shape == (256,)
    np.testing.assert_allclose(flow.log_prob(params, x), log_q, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(flow.sample(params, jax.random.key(3), 256), x)


def test_latent_round_trip_and_logdets(flow_and_params):
    flow, params, x = flow_and_params
    x = x[:32]
    z, ld_to = flow.to_latent(params, x)
    x2, ld_from = flow.from_latent(params, z)
    np.testing.assert_allclose(x2, x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld_from, -ld_to, rtol=1e-4, atol=1e-3)

    def jac_logdet(fn, pts):
        jac = jax.jit(jax.vmap(jax.jacfwd(lambda p: fn(params, p[None])[0][0])))(pts)
        return jnp.linalg.slogdet(jac)[1]

    expected_to = jac_logdet(flow.to_latent, x)
    np.testing.assert_allclose(ld_to, expected_to, rtol=1e-4, atol=1e-3)
    expected_from = jac_logdet(flow.from_latent, z)
    np.testing.assert_allclose(ld_from, expected_from, rtol=1e-4, atol=1e-3)


def test_one_dimensional_flow():
    # With one dimension the couplings are unconditional maps.
    flow, params, x = _make("spline", 1)
    xs, log_q = flow.sample_and_log_prob(params, jax.random.key(3), 256)
    assert xs.shape == (256, 1) and np.all(np.asarray(xs) > -1.0)
    np.testing.assert_allclose(flow.log_prob(params, xs), log_q, rtol=1e-4, atol=1e-3)
    z, ld_to = flow.to_latent(params, x)
    x2, ld_from = flow.from_latent(params, z)
    np.testing.assert_allclose(x2, x, rtol=1e-4, atol=1e-4)
    slope = jax.jit(jax.vmap(jax.grad(lambda v: flow.to_latent(params, v)[0][0])))(x)
    np.testing.assert_allclose(ld_to, jnp.log(jnp.abs(slope[:, 0])), atol=1e-3)
    np.testing.assert_allclose(ld_from, -ld_to, rtol=1e-4, atol=1e-3)
    z_unconditional = flow.to_latent(params, x[:1])[0]
    # A batch of one runs other vectorised code than a batch of 64: float32
    # results differ by a few ulps of the O(1) intermediates (1.4e-6 seen on
    # one CPU). A map that depended on the other rows would differ by O(0.1).
    np.testing.assert_allclose(z_unconditional, z[:1], rtol=1e-6, atol=1e-5)


def test_unbounded_maps_are_the_transform(flow_and_params):
    flow, params, x = flow_and_params
    u, ld = flow.to_unbounded(params, x)
    x2, ld2 = flow.from_unbounded(params, u)
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld2, -ld, rtol=1e-5, atol=1e-4)


def test_log_prob_outside_bounds_is_minus_inf():
    # The support mask does not depend on the coupling kind; affine compiles fast.
    flow = Flow(FlowConfig(n_dims=3, kind="affine", **SMALL))
    x = _bounded_samples(0, 100)
    params = flow.init(jax.random.key(1), x, prior_bounds=BOUNDS_3D)
    inside = [0.0, 1.0, 0.5]
    outside = [[0.0, -1.0, 0.5], [0.0, 0.0, 0.5], [0.0, 1.0, 2.0], [0.0, 1.0, 3.0]]
    pts = jnp.array([inside] + outside)
    lp = flow.log_prob(params, pts)
    assert np.isfinite(lp[0])
    assert np.all(np.asarray(lp[1:]) == -np.inf)
    # Points outside get a zero gradient, not NaN, so samplers can take grads.
    grad = jax.grad(lambda p: jnp.sum(flow.log_prob(params, p)))(pts)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad[1:]) == 0.0)


def test_jit_and_vmap_parity(flow_and_params):
    # The method is jitted itself; parity here is about nesting it inside the
    # caller's jit and vmap, and about agreeing with its own definition.
    flow, params, x = flow_and_params
    lp = flow.log_prob(params, x)
    z, logdet = flow.to_latent(params, x)
    log_base = -0.5 * jnp.sum(z**2, -1) - 0.5 * flow.n_dims * jnp.log(2 * jnp.pi)
    by_hand = log_base + logdet
    np.testing.assert_allclose(lp, by_hand, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda p, v: flow.log_prob(p, v))(params, x)
    np.testing.assert_allclose(jitted, lp, rtol=1e-5, atol=1e-5)
    rows = jax.vmap(lambda v: flow.log_prob(params, v))(x)
    np.testing.assert_allclose(rows, lp, rtol=1e-5, atol=1e-5)
    single = flow.log_prob(params, x[0])
    assert single.shape == ()
    np.testing.assert_allclose(single, lp[0], rtol=1e-5, atol=1e-5)


def test_flow_is_hashable_and_static():
    a = Flow(FlowConfig(n_dims=2, hidden_sizes=[8, 8]))
    b = Flow(FlowConfig(n_dims=2, hidden_sizes=(8, 8)))
    assert a == b and hash(a) == hash(b)
    assert a != Flow(FlowConfig(n_dims=2, hidden_sizes=(8,)))


def test_config_dict_round_trip():
    config = FlowConfig(n_dims=4, kind="affine", n_layers=6, bounded_transform="probit")
    text = json.dumps(config.to_dict())
    assert FlowConfig.from_dict(json.loads(text)) == config
    with pytest.raises(ValidationError, match="unknown FlowConfig keys"):
        FlowConfig.from_dict({**config.to_dict(), "n_hidden": 3})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_dims=0), "n_dims"),
        (dict(n_dims=2, kind="maf"), "kind"),
        (dict(n_dims=2, hidden_sizes=(8, 0)), "hidden_sizes"),
        (dict(n_dims=2, n_bins=1), "n_bins"),
        (dict(n_dims=2, spline_range=-1.0), "spline_range"),
        (dict(n_dims=2, bounded_transform="tanh"), "bounded_transform"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        FlowConfig(**kwargs)


def test_method_validation():
    flow = Flow(FlowConfig(n_dims=2, **SMALL))
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValidationError, match="typed PRNG key"):
        flow.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValidationError, match=r"shape \(n_samples, 2\)"):
        flow.init(jax.random.key(0), x[:, :1])
    params = flow.init(jax.random.key(0), x)
    with pytest.raises(ValidationError, match=r"shape \(\.\.\., 2\)"):
        flow.log_prob(params, jnp.zeros((4, 3)))
    with pytest.raises(ValidationError, match="positive int"):
        flow.sample(params, jax.random.key(0), 0)


def test_params_bytes_round_trip_exact(flow_and_params):
    flow, params, _ = flow_and_params
    restored = flow.params_from_bytes(flow.params_to_bytes(params))
    assert isinstance(restored, FlowParams)
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert restored.transform.kinds == params.transform.kinds


def test_params_bytes_mismatch_raises():
    flow = Flow(FlowConfig(n_dims=2, **SMALL))
    x = np.random.default_rng(0).normal(size=(50, 2))
    data = flow.params_to_bytes(flow.init(jax.random.key(0), x))
    other = Flow(FlowConfig(n_dims=2, n_layers=3, hidden_sizes=(16,)))
    with pytest.raises(FlowError, match="n_layers: stored 2, this flow 3"):
        other.params_from_bytes(data)
    with pytest.raises(FlowError, match="decode|not aspire_jax"):
        flow.params_from_bytes(b"not msgpack at all")
    # Same config, but one array has the wrong shape: the path is named.
    payload = flax.serialization.msgpack_restore(data)
    payload["state"]["transform"]["shift"] = np.zeros(5, np.float32)
    with pytest.raises(FlowError, match="params/transform/shift"):
        flow.params_from_bytes(flax.serialization.msgpack_serialize(payload))


def _correlated_gaussian(seed, n):
    sd = np.array([2.0, 1.0])
    cov = np.array([[1.0, 0.8], [0.8, 1.0]]) * np.outer(sd, sd)
    mean = np.array([1.0, -2.0])
    x = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    return x.astype(np.float32), mean, cov


def _gaussian_log_pdf(x, mean, cov):
    d = len(mean)
    diff = x - mean
    sol = np.linalg.solve(cov, diff.T).T
    norm = 0.5 * np.log(np.linalg.det(cov)) + 0.5 * d * np.log(2 * np.pi)
    return -0.5 * np.sum(diff * sol, axis=1) - norm


@pytest.mark.parametrize(
    "kind", ["affine", pytest.param("spline", marks=pytest.mark.slow)]
)
def test_fit_correlated_gaussian(kind):
    key_init, key_fit, key_sample = jax.random.split(jax.random.key(7), 3)
    x, mean, cov = _correlated_gaussian(1, 3000)
    flow = Flow(FlowConfig(n_dims=2, kind=kind, n_layers=4, hidden_sizes=(32, 32)))
    params = flow.init(key_init, x)
    params, history = fit(
        flow, params, key_fit, x, n_epochs=60, learning_rate=3e-3, patience=10
    )
    assert history.best_epoch == int(np.argmin(history.validation_loss))

    x_test, _, _ = _correlated_gaussian(2, 4000)
    log_q = np.asarray(flow.log_prob(params, x_test), dtype=np.float64)
    entropy = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * cov))
    # -mean(log q) over fresh samples estimates H + KL(p || q). Its Monte Carlo
    # standard error is sd(log q) / sqrt(n_test), about 1 / sqrt(4000) = 0.016
    # (the log density of a 2-D Gaussian has sd sqrt(d / 2) = 1). Five standard
    # errors make a failure from noise alone a ~1e-6 event for any seed; the
    # 0.03 nat allowance covers the fit's own KL (measured ~0.001 for affine,
    # ~0.013 for spline couplings with these settings).
    se = log_q.std() / np.sqrt(len(log_q))
    assert abs(-log_q.mean() - entropy) < 5 * se + 0.03
    # The paired difference has a much smaller error and bounds KL directly.
    diff = _gaussian_log_pdf(x_test, mean, cov) - log_q
    assert diff.mean() < 0.03 + 5 * diff.std() / np.sqrt(len(diff))

    n = 4000
    samples = np.asarray(flow.sample(params, key_sample, n), dtype=np.float64)
    sd = np.sqrt(np.diag(cov))
    # Mean: 5 standard errors (sd / sqrt(n)) plus 0.05 sd for fitting error.
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * sd / np.sqrt(n) + 0.05 * sd)
    # Covariance entry (i, j): var of x_i x_j is about S_ii S_jj + S_ij^2, so the
    # standard error is sqrt((S_ii S_jj + S_ij^2) / n); add 5% of sd_i sd_j.
    se_cov = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n)
    tol_cov = 5 * se_cov + 0.05 * np.outer(sd, sd)
    assert np.all(np.abs(np.cov(samples.T) - cov) < tol_cov)


def test_fit_beta_samples_stay_in_bounds():
    key_init, key_fit, key_sample = jax.random.split(jax.random.key(11), 3)
    rng = np.random.default_rng(3)
    # A skewed Beta(2, 5) and a U-shaped Beta(0.5, 0.5) with mass at both ends.
    x = np.stack([rng.beta(2.0, 5.0, 2000), rng.beta(0.5, 0.5, 2000)], axis=1)
    x = np.clip(x.astype(np.float32), 1e-6, 1 - 1e-6)
    flow = Flow(FlowConfig(n_dims=2, n_layers=2, hidden_sizes=(16,)))
    params = flow.init(key_init, x, prior_bounds=[[0.0, 1.0], [0.0, 1.0]])
    params, _ = fit(flow, params, key_fit, x, n_epochs=20, learning_rate=3e-3)
    samples, log_q = flow.sample_and_log_prob(params, key_sample, 5000)
    samples = np.asarray(samples)
    assert np.all((samples > 0.0) & (samples < 1.0))
    assert np.all(np.isfinite(np.asarray(log_q)))
    # Beta(2, 5) has mean 2/7 and sd 0.16: 5 standard errors plus 0.02.
    assert abs(samples[:, 0].mean() - 2 / 7) < 5 * 0.16 / np.sqrt(5000) + 0.02
    assert abs(samples[:, 1].mean() - 0.5) < 5 * 0.354 / np.sqrt(5000) + 0.02


def test_fit_compiles_once():
    # An architecture no other test uses, so the jit cache starts without it.
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(5,)))
    x = np.random.default_rng(0).normal(size=(300, 2))
    params = flow.init(jax.random.key(0), x)
    before = fit_module._run_epoch._cache_size()
    calls = []
    settings = dict(patience=None, batch_size=64)
    def record(*args):
        calls.append(args)

    fit(flow, params, jax.random.key(1), x, n_epochs=4, callback=record, **settings)
    assert fit_module._run_epoch._cache_size() == before + 1
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert all(isinstance(v, float) for c in calls for v in c[1:])
    # A second fit of the same shapes and settings reuses the compiled epoch.
    fit(flow, params, jax.random.key(2), x + 1.0, n_epochs=2, **settings)
    assert fit_module._run_epoch._cache_size() == before + 1


def test_fit_early_stopping_returns_best():
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(7,)))
    x = np.random.default_rng(1).normal(size=(300, 2))
    params = flow.init(jax.random.key(0), x)
    key = jax.random.key(1)
    _, history = fit(flow, params, key, x, n_epochs=200, patience=3, batch_size=64)
    assert history.stop_reason == "early_stopping"
    assert len(history.validation_loss) == len(history.training_loss) < 200
    assert history.best_epoch == int(np.argmin(history.validation_loss))
    assert len(history.training_loss) - 1 - history.best_epoch == 3
    back = FlowHistory.from_dict(json.loads(json.dumps(history.to_dict())))
    np.testing.assert_array_equal(back.training_loss, history.training_loss)
    assert back.best_epoch == history.best_epoch
    assert back.stop_reason == history.stop_reason


def test_fit_without_validation_returns_last():
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(7,)))
    x = np.random.default_rng(1).normal(size=(300, 2))
    params = flow.init(jax.random.key(0), x)
    key = jax.random.key(1)
    _, history = fit(
        flow, params, key, x, n_epochs=3, batch_size=64, validation_fraction=0.0
    )
    assert history.validation_loss.shape == (0,) and history.best_epoch == 2


@pytest.mark.parametrize(
    ("x_fn", "kwargs", "match"),
    [
        (lambda x: np.where(x == x[2, 1], np.nan, x), {}, "finite"),
        (lambda x: x[:, :1], {}, r"shape \(n_samples, 2\)"),
        (lambda x: x, dict(validation_fraction=1.0), "validation_fraction"),
        (lambda x: x, dict(batch_size=0), "batch_size"),
        (lambda x: x, dict(learning_rate=-1.0), "learning_rate"),
        (lambda x: x, dict(clip_grad=0.0), "clip_grad"),
        (lambda x: x, dict(callback=3), "callback"),
        (lambda x: x - 10.0, {}, "prior bounds"),
    ],
)
def test_fit_validation(x_fn, kwargs, match):
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(7,)))
    x = np.abs(np.random.default_rng(1).normal(size=(40, 2))) + 0.1
    bounds = [[0.0, np.inf], [-np.inf, np.inf]]
    params = flow.init(jax.random.key(0), x, prior_bounds=bounds)
    with pytest.raises(ValidationError, match=match):
        fit(flow, params, jax.random.key(1), x_fn(x), **kwargs)


def test_init_weights_follow_lecun_normal_and_the_key():
    flow = Flow(FlowConfig(n_dims=6, hidden_sizes=(128, 128)))
    x = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    params = flow.init(jax.random.key(3), x)
    n_hidden = 0
    for path, w in jax.tree_util.tree_leaves_with_path(params.net):
        layer, name = path[-2].key, path[-1].key
        w = np.asarray(w)
        if name == "kernel" and layer != "Dense_2":
            # Stacked over the coupling layers: (n_layers, fan_in, fan_out).
            n_hidden += w.shape[0]
            # Truncated at 2 sd, rescaled: variance 1 / fan_in, |w| <= 2 sd.
            sd = 1.0 / np.sqrt(w.shape[1])
            assert abs(w.std() / sd - 1.0) < 5.0 / np.sqrt(w.size)
            assert np.abs(w).max() <= 2.0 * sd / 0.87962566103423978 + 1e-6
        else:
            assert not w.any()  # biases and the last layer start at zero
    assert n_hidden == 2 * 4
    same = flow.init(jax.random.key(3), x)
    other = flow.init(jax.random.key(4), x)
    leaves = jax.tree.leaves
    assert all(np.array_equal(a, b)
               for a, b in zip(leaves(params.net), leaves(same.net)))
    assert not all(np.array_equal(a, b)
                   for a, b in zip(leaves(params.net), leaves(other.net)))


def _masked_coupling_reference(flow, net, u):
    """The coupling stack written directly from its definition: layer l keeps
    the columns of mask l, and a spline conditioned on them moves the rest."""
    from aspire_jax.flows.bijectors import Conditioner, coupling_masks
    from aspire_jax.flows.spline import RationalQuadraticSpline

    c = flow.config
    width, n_params = (c.n_dims + 1) // 2, 3 * c.n_bins + 1
    cond = Conditioner(width, n_params, c.hidden_sizes)
    u, total = np.asarray(u, np.float64), 0.0
    for layer, mask in enumerate(coupling_masks(c.n_dims, c.n_layers)):
        p = jax.tree.map(lambda a: a[layer], net["params"]["conditioners"])
        kept, moved = np.flatnonzero(mask), np.flatnonzero(~mask)
        cond_in = np.zeros((u.shape[0], width))
        cond_in[:, :kept.size] = u[:, kept]
        spline_params = cond.apply({"params": p}, jnp.asarray(cond_in, jnp.float32))
        spline = RationalQuadraticSpline(spline_params[:, width - moved.size:],
                                         -c.spline_range, c.spline_range)
        y, log_det = spline.forward_and_log_det(jnp.asarray(u[:, moved], jnp.float32))
        u = u.copy()
        u[:, moved] = np.asarray(y)
        total = total + np.asarray(log_det).sum(axis=1)
    return u, total


@pytest.mark.parametrize("n_dims", [1, 2, 3, 5, 6])
def test_scanned_layers_are_the_masked_couplings(n_dims):
    # The stack runs every layer as one scanned body over permuted, padded
    # columns; it must be exactly the chain of masked couplings.
    flow = Flow(FlowConfig(n_dims=n_dims, n_layers=4, hidden_sizes=(8,), n_bins=4))
    x = np.random.default_rng(0).normal(size=(64, n_dims)).astype(np.float32)
    params = flow.init(jax.random.key(0), x)
    noise = jax.random.split(jax.random.key(1), len(jax.tree.leaves(params.net)))
    leaves, tree = jax.tree.flatten(params.net)
    net = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape, a.dtype)
                                    for a, k in zip(leaves, noise)])
    u = np.random.default_rng(2).normal(size=(64, n_dims)).astype(np.float32)
    z, log_det = flow._net_to_latent(net, jnp.asarray(u))
    z_ref, log_det_ref = _masked_coupling_reference(flow, net, u)
    # float32 round-off through four splines; a misplaced column or padding
    # slot changes values by O(0.1).
    np.testing.assert_allclose(np.asarray(z), z_ref, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(log_det), log_det_ref, atol=1e-4, rtol=1e-5)
    assert np.abs(log_det_ref).max() > 0.1  # the layers are far from the identity


def test_format_1_parameters_are_read_as_the_same_map():
    # Written by aspire_jax 0.x with one conditioner per layer (format 1):
    # a 3-d flow, so two of its layers have a padding column once stacked.
    data = pathlib.Path(__file__).parent / "data"
    blob = (data / "flow_params_v1.msgpack").read_bytes()
    expected = np.load(data / "flow_params_v1_values.npz")
    flow = Flow(FlowConfig(n_dims=3, n_layers=4, hidden_sizes=(8,), n_bins=4))
    params = flow.params_from_bytes(blob)
    np.testing.assert_allclose(np.asarray(flow.log_prob(params, expected["x"])),
                               expected["log_q"], atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(flow.to_latent(params, expected["x"])[0]),
                               expected["z"], atol=1e-5, rtol=1e-6)
    # It has no Gaussian (written before format 3 kept one), so a Gaussian
    # reference cannot be built from it.
    assert not has_gaussian(params)
    assert np.isnan(np.asarray(params.gaussian["chol"])).all()
    # Saved again, it is format 3 and reads back bit for bit.
    again = flow.params_from_bytes(flow.params_to_bytes(params))
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in
               zip(jax.tree.leaves(params), jax.tree.leaves(again)))
    with pytest.raises(FlowError, match="different architecture"):
        Flow(FlowConfig(n_dims=3, n_layers=2, hidden_sizes=(8,), n_bins=4)
             ).params_from_bytes(blob)
    # A format-1 payload with a layer missing or a mis-sized array is refused.
    payload = flax.serialization.msgpack_restore(blob)
    layers = payload["state"]["net"]["params"]
    del layers["conditioners_3"]
    with pytest.raises(FlowError, match="format-1"):
        flow.params_from_bytes(flax.serialization.msgpack_serialize(payload))
    payload = flax.serialization.msgpack_restore(blob)
    last = payload["state"]["net"]["params"]["conditioners_1"]["Dense_1"]
    last["bias"] = last["bias"][:-1]
    with pytest.raises(FlowError, match="format-1"):
        flow.params_from_bytes(flax.serialization.msgpack_serialize(payload))


@pytest.mark.parametrize("x", [np.array([[0.1, 0.2], [0.3, 0.5]]),
                               np.tile([[0.1, 0.2]], (50, 1))])
def test_degenerate_training_sets_give_no_gaussian_baseline(x):
    # One training row, or rows all equal: the Gaussian baseline has no
    # density, so its loss is NaN (and the automatic move space cannot pick
    # the flow's), instead of a linear-algebra error after training.
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(8,)))
    params = flow.init(jax.random.key(0), x)
    _, history = fit(flow, params, jax.random.key(1), x, n_epochs=2)
    assert np.isnan(history.gaussian_validation_loss)
    assert np.isnan(history.gain_over_gaussian())


def test_copies_of_a_row_are_held_out_together():
    """Thinned chains repeat states. With the rows split one by one, copies
    of training rows were held out too, and the held-out loss of 150 points
    x 25 copies came out 0.6 nats below the entropy (no held-out estimate
    can): early stopping and the gain over the Gaussian believed it."""
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((150, 2)), 25, axis=0).astype(np.float32)
    flow = Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(8,)))
    params = flow.init(jax.random.key(0), x)
    _, history = fit(flow, params, jax.random.key(1), x, n_epochs=2)
    held = np.zeros(len(x), bool)
    held[history.held_out_index] = True
    rows = {tuple(r) for r in x[held]}
    assert not rows & {tuple(r) for r in x[~held]}
    assert abs(held.sum() - 0.2 * len(x)) <= 25  # whole groups of 25
    # Distinct rows are split exactly as before.
    y = rng.standard_normal((300, 2)).astype(np.float32)
    _, history = fit(flow, flow.init(jax.random.key(0), y), jax.random.key(1), y,
                     n_epochs=1)
    assert len(history.held_out_index) == 60


def test_unwhitened_points_outside_the_splines_are_named():
    x = np.random.default_rng(0).uniform(50, 950, size=(500, 1)).astype(np.float32)
    flow = Flow(FlowConfig(n_dims=1, affine=False))
    with pytest.warns(UserWarning, match="outside the splines' range"):
        flow.init(jax.random.key(0), x)
    Flow(FlowConfig(n_dims=1)).init(jax.random.key(0), x)  # whitened: silent
