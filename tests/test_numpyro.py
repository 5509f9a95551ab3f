"""The NumPyro adapter: names, bounds, densities and an end-to-end evidence."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

numpyro = pytest.importorskip("numpyro")
dist = pytest.importorskip("numpyro.distributions")

from numpyro.infer.util import log_density  # noqa: E402

from aspire_jax.aspire import Aspire  # noqa: E402
from aspire_jax.errors import ValidationError  # noqa: E402
from aspire_jax.numpyro import NumPyroSpec, from_numpyro, unflatten_sites  # noqa: E402

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32)
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32)


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def mixed(y):
    numpyro.sample("u", dist.Uniform(-1.0, 2.0).expand([2]).to_event(1))
    numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))
    numpyro.sample("angle", dist.VonMises(0.0, 1.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    numpyro.factor("penalty", -0.5 * s**2)
    numpyro.sample("y", dist.Normal(0.0, s), obs=y)


# Conjugate model: mu_j ~ N(0, S0^2), y_jk | mu_j ~ N(mu_j, 1) for j < 2, k < 5.
S0 = 2.0
Y_CONJ = np.array([[0.3, 1.1, 0.8, 1.9, 0.6], [-1.2, -0.4, -0.9, -1.5, -0.2]],
                  np.float32)


def conjugate(y):
    with numpyro.plate("groups", y.shape[0], dim=-2):
        mu = numpyro.sample("mu", dist.Normal(0.0, S0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _conjugate_log_evidence(y):
    # Marginally y_j ~ N(0, I + S0^2 11^T) for each group j, independently.
    total = 0.0
    for row in np.asarray(y, float):
        cov = np.eye(len(row)) + S0**2
        _, logdet = np.linalg.slogdet(cov)
        total += -0.5 * (row @ np.linalg.solve(cov, row) + logdet
                         + len(row) * math.log(2 * math.pi))
    return total


def _conjugate_posterior(y):
    prec = 1.0 / S0**2 + y.shape[1]
    return y.sum(axis=1) / prec, np.full(y.shape[0], prec**-0.5)


def _random_points(key, spec, n):
    low = np.array([spec["prior_bounds"][p][0] for p in spec["parameters"]])
    high = np.array([spec["prior_bounds"][p][1] for p in spec["parameters"]])
    z = np.asarray(jax.random.normal(key, (n, spec["dims"])))
    x = z.copy()
    box = np.isfinite(low) & np.isfinite(high)
    half = np.isfinite(low) & ~np.isfinite(high)
    x[:, box] = low[box] + (high[box] - low[box]) / (1 + np.exp(-z[:, box]))
    x[:, half] = low[half] + np.exp(z[:, half])
    return jnp.asarray(x, jnp.float32)


def test_names_bounds_and_spec():
    spec = from_numpyro(mixed, jnp.asarray(0.5))
    assert isinstance(spec, NumPyroSpec)
    assert spec["parameters"] == ["u[0]", "u[1]", "w[0,0]", "w[0,1]", "w[1,0]",
                                  "w[1,1]", "angle", "s"]
    assert spec["dims"] == 8
    bounds = spec["prior_bounds"]
    assert bounds["u[1]"] == (-1.0, 2.0)
    assert bounds["w[1,0]"] == (-math.inf, math.inf)
    assert bounds["s"] == (0.0, math.inf)
    assert bounds["angle"] == pytest.approx((-math.pi, math.pi))
    assert spec["periodic_parameters"] == ["angle"]
    assert spec.site_shapes == {"u": (2,), "w": (2, 2), "angle": (), "s": ()}
    sites = spec.to_sites(jnp.arange(16.0).reshape(2, 8))
    assert sites["w"].shape == (2, 2, 2)
    np.testing.assert_array_equal(sites["w"][1], [[10.0, 11.0], [12.0, 13.0]])


def test_densities_sum_to_numpyro_log_joint(key):
    spec = from_numpyro(eight_schools, SIGMA, y=Y)
    x = _random_points(key, spec, 16)
    lp = spec["log_prior"](x)
    ll = spec["log_likelihood"](x)
    assert lp.shape == ll.shape == (16,)
    params = unflatten_sites(x, spec.site_shapes)
    joint = jax.jit(jax.vmap(
        lambda p: log_density(eight_schools, (SIGMA,), {"y": Y}, p)[0]))(params)
    np.testing.assert_allclose(lp + ll, joint, rtol=1e-5)
    # The likelihood alone is the observed site's density.
    theta = x[:, 2:]
    expect = jnp.sum(jax.scipy.stats.norm.logpdf(Y, theta, SIGMA), axis=1)
    np.testing.assert_allclose(ll, expect, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda x: spec["log_prior"](x) * 1.0)(x), lp,
                               rtol=1e-6)


def test_observed_sites_selects_the_likelihood(key):
    y = jnp.asarray(0.5)
    every = from_numpyro(mixed, y)
    only_y = from_numpyro(mixed, y, observed_sites=["y"])
    x = _random_points(key, every, 8)
    s = x[:, -1]
    penalty = -0.5 * s**2
    np.testing.assert_allclose(every["log_likelihood"](x) - only_y["log_likelihood"](x),
                               penalty, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(only_y["log_prior"](x) - every["log_prior"](x),
                               penalty, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValidationError, match="not observed sample sites"):
        from_numpyro(mixed, y, observed_sites=["s"])


def test_outside_support_is_minus_inf():
    spec = from_numpyro(eight_schools, SIGMA, y=Y)
    x = jnp.ones((2, spec["dims"])).at[0, 1].set(-0.5)
    lp = spec["log_prior"](x)
    assert lp[0] == -jnp.inf and jnp.isfinite(lp[1])


def test_unsupported_sites_raise():
    def simplex():
        numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))

    def discrete():
        numpyro.sample("k", dist.Poisson(3.0))

    def moving():
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        numpyro.sample("x", dist.Uniform(0.0, tau))

    with pytest.raises(NotImplementedError, match="not a box"):
        from_numpyro(simplex)
    with pytest.raises(NotImplementedError, match="discrete"):
        from_numpyro(discrete)
    with pytest.raises(NotImplementedError, match="depends on other latent"):
        from_numpyro(moving)
    spec = from_numpyro(conjugate, Y_CONJ)
    with pytest.raises(ValidationError, match=r"shape \(n, 2\)"):
        spec["log_prior"](jnp.zeros((3, 5)))


def test_smc_recovers_the_analytic_evidence():
    spec = from_numpyro(conjugate, Y_CONJ)
    assert spec["parameters"] == ["mu[0,0]", "mu[1,0]"]
    aspire = Aspire(**spec, flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    # Earlier analysis: the first two observations of each group only.
    mean, sd = _conjugate_posterior(Y_CONJ[:, :2])
    rng = np.random.default_rng(0)
    old = (mean + sd * rng.standard_normal((2000, 2))).astype(np.float32)
    aspire.fit(old, key=0, n_epochs=20, progress=False)
    post = aspire.sample_posterior(500, key=1, progress=False)
    ref = _conjugate_log_evidence(Y_CONJ)
    err = float(post.log_evidence_error)
    assert err > 0
    assert abs(float(post.log_evidence) - ref) < 4 * err, (post.log_evidence, ref, err)
    new_mean, new_sd = _conjugate_posterior(Y_CONJ)
    # 5 standard errors of the mean, allowing resampling duplicates and MCMC
    # correlation to cut the 500 particles to an effective 125: 5 sd / sqrt(125).
    tol = 5 * new_sd / math.sqrt(125)
    np.testing.assert_array_less(np.abs(np.asarray(post.mean()) - new_mean), tol)


def test_obs_mask_sites_are_refused():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0).expand([3]), obs=y,
                       obs_mask=jnp.array([True, False, True]))

    with pytest.raises(ValidationError, match="obs_mask"):
        from_numpyro(model, jnp.array([0.1, 0.0, 0.3]))
