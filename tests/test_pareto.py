"""The tail diagnostics of importance weights: the Pareto shape of the
largest weights and the curvature of log w in the latent space."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax import Aspire
from aspire_jax.smc.importance import pareto_tail_shape, weight_curvature


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.8, 1.2])
def test_recovers_the_tail_shape_of_pareto_weights(shape):
    # w = U^(-k) has an exact Pareto tail of shape k. With n = 20 000 the
    # tail holds 425 weights; the estimate's standard error is about
    # (1 + k) / sqrt(425) <= 0.11, so four seeds' mean is within 0.12 (about
    # 2 standard errors of that mean, and the prior's pull towards 0.5 is
    # 10 / 435 of the distance).
    ks = [pareto_tail_shape(-shape * np.log(np.random.default_rng(s).uniform(
        size=20_000))) for s in range(4)]
    assert abs(np.mean(ks) - shape) < 0.12


def test_light_and_degenerate_weights():
    assert pareto_tail_shape(0.3 * np.random.default_rng(0).normal(size=4000)) < 0.3
    assert math.isnan(pareto_tail_shape(np.zeros(10)))
    assert math.isnan(pareto_tail_shape([-np.inf] * 100 + [0.0]))


def _log_prior(x):
    return jnp.sum(-0.5 * (x / 2) ** 2 - jnp.log(2 * jnp.sqrt(2 * jnp.pi)), axis=-1)


def _log_likelihood(x):
    return jnp.sum(-0.5 * ((x - 0.3) / 0.5) ** 2 - jnp.log(0.5 * jnp.sqrt(2 * jnp.pi)),
                   axis=-1)


@pytest.mark.parametrize("sd, warned", [(0.02, True), (1.0, False)])
def test_importance_sampling_from_a_much_narrower_flow_warns(sd, warned, caplog):
    # Earlier samples of sd 0.02 for a posterior of sd 0.485: importance
    # sampling comes out 4.6 nats low with an error bar of 0.09 and an
    # efficiency of 6 %, above the 1 % warning; the weights' tail says so.
    aspire = Aspire(log_likelihood=_log_likelihood, log_prior=_log_prior, dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    aspire.fit(np.random.default_rng(0).normal(0.3, sd, (2000, 2)), n_epochs=30, key=0)
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        aspire.sample_posterior(2000, sampler="importance", key=5)
    assert any("Pareto k" in r.getMessage() for r in caplog.records) == warned


@pytest.mark.parametrize("sd, warned", [(0.29, True), (0.485, False)])
def test_an_error_bar_from_weights_of_infinite_variance_is_named(sd, warned, caplog):
    # A posterior 1.7 times wider than the reference (sd 0.485 against 0.29,
    # curvature 1 - 0.6^2 = 0.64): the weights' variance is infinite, and
    # over 20 keys log Z spread by 0.15 where 0.078 was reported (a 2-d
    # problem of the same shape). A reference matching the posterior says
    # nothing, whatever the noisy Pareto fit of its near-equal weights reads.
    aspire = Aspire(log_likelihood=_log_likelihood, log_prior=_log_prior, dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    aspire.fit(np.random.default_rng(0).normal(0.3, sd, (4000, 2)), n_epochs=30, key=0)
    for key in range(3):
        caplog.clear()
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            aspire.sample_posterior(2000, sampler="importance", key=key)
        messages = [r.getMessage() for r in caplog.records]
        # Named as infinite variance, or, where the largest weights already
        # look heavy-tailed (Pareto k above 0.7), as that.
        assert any("probably infinite" in m or "heavy-tailed" in m
                   for m in messages) == warned, key
        if not warned:
            assert not messages, key


def test_a_reference_much_wider_than_the_posterior_is_not_called_heavy_tailed(
        caplog):
    # Earlier samples of sd 3 around a posterior of sd 0.485 in 6-d: about
    # 1 % efficiency and a large Pareto k, but bounded weights (log w curves
    # down in every direction), so no claim of heavy tails.
    def log_likelihood(x):
        return jnp.sum(-0.5 * ((x - 0.3) / 0.5) ** 2, axis=-1)

    def log_prior(x):
        return jnp.sum(-0.5 * (x / 2.0) ** 2 - jnp.log(2.0 * jnp.sqrt(2 * jnp.pi)),
                       axis=-1)

    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=6,
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    aspire.fit(np.random.default_rng(0).normal(0.3, 1.5, (2000, 6)), n_epochs=30,
               key=0)
    for key in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            aspire.sample_posterior(1000, sampler="importance", key=key)
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "heavy-tailed" not in messages and "nan" not in messages, messages
        assert "reference is wider than the posterior" in messages, messages


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curvature_is_exact_for_a_gaussian_posterior(seed):
    # log w of N(m, S) against N(0, I) is exactly quadratic, with Hessian
    # I - S^-1, so least squares recovers its largest eigenvalue, 1 - 1/s_max,
    # to round-off (and with no residual, no error): from the bulk of the
    # draws, whether or not any reached the tails.
    rng = np.random.default_rng(seed)
    d = 3
    root = rng.normal(size=(d, d))
    cov = root @ root.T + 0.5 * np.eye(d)
    mean = rng.normal(size=d)
    z = rng.normal(size=(500, d))
    diff = z - mean
    log_p = -0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    log_w = log_p + 0.5 * np.sum(z**2, axis=1)
    expected = 1.0 - 1.0 / np.linalg.eigvalsh(cov)[-1]
    curvature, error = weight_curvature(z, log_w)
    assert curvature == pytest.approx(expected, abs=1e-8)
    assert error < 1e-8
    # Noise in log w widens the error, and the estimate stays within it.
    noisy = log_w + 0.5 * rng.normal(size=500)
    curvature, error = weight_curvature(z, noisy)
    assert 0.01 < error < 0.2
    assert abs(curvature - expected) < 4 * error


def test_diagonal_fit_in_the_weights_principal_axes():
    # 6-d with 200 draws: the full quadratic (28 coefficients) is more than
    # n / 10, so only its diagonal is fitted, in the principal axes of the
    # weighted draws. A posterior 10 times wider along the diagonal
    # direction (1, ..., 1) / sqrt(6) has 1 - 1/s = 0.9 there but only 0.15
    # on each latent axis; the rotated fit finds most of it (a lower bound,
    # exact with enough draws for the full fit).
    d, s = 6, 10.0
    v = np.ones(d) / np.sqrt(d)
    prec = np.linalg.inv(np.eye(d) + (s - 1) * np.outer(v, v))

    def log_w(z):
        return -0.5 * np.einsum("ni,ij,nj->n", z, prec, z) + 0.5 * np.sum(z**2, axis=1)

    few = [weight_curvature(z, log_w(z))[0] for z in
           (np.random.default_rng(k).normal(size=(200, d)) for k in range(6))]
    assert all(0.45 < c <= 0.9 + 1e-9 for c in few)
    assert np.mean(few) > 0.6
    z = np.random.default_rng(6).normal(size=(1000, d))
    assert weight_curvature(z, log_w(z))[0] == pytest.approx(0.9, abs=1e-8)


def test_curvature_of_matching_or_wider_references_and_degenerate_input():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2000, 2))
    # A reference twice as wide as the posterior: log w = -2 |z|^2 + |z|^2 / 2,
    # Hessian I - 4 I.
    assert weight_curvature(z, -1.5 * np.sum(z**2, axis=1))[0] == pytest.approx(-3.0)
    # Pure noise in log w: no curvature beyond two standard errors.
    curvature, error = weight_curvature(z, 0.3 * rng.normal(size=2000))
    assert abs(curvature) < 2 * error + 0.01
    assert all(math.isnan(v) for v in weight_curvature(z[:20], np.zeros(20)))
    log_w = np.full(2000, -np.inf)
    log_w[:30] = 0.0
    assert all(math.isnan(v) for v in weight_curvature(z, log_w))


def test_importance_sampling_warns_even_when_no_draw_reached_the_tails(caplog):
    # Earlier samples ten times narrower than the posterior: on some keys no
    # draw reaches far enough into the flow's tails for the largest weights to
    # look heavy-tailed (Pareto k 0.4), and log Z comes out about 25 error bars
    # low. The weights' curvature in the latent space, 1 - 0.1^2, says so on
    # every key.
    aspire = Aspire(log_likelihood=_log_likelihood, log_prior=_log_prior, dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    aspire.fit(np.random.default_rng(0).normal(0.3, 0.0485, (1500, 2)), n_epochs=20,
               key=0)
    for key in range(10, 16):
        caplog.clear()
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            aspire.sample_posterior(1000, sampler="importance", key=key)
        assert any("curvature of log w in its latent space is 0.99"
                   in r.getMessage() for r in caplog.records), key


def test_importance_sampling_with_a_wider_reference_or_a_periodic_angle(caplog):
    # A reference wider than the posterior everywhere: the curvature is
    # negative, and only a heavy tail of the largest weights (the Pareto
    # fit) can raise a warning, which then does not call it narrow.
    aspire = Aspire(log_likelihood=_log_likelihood, log_prior=_log_prior, dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    aspire.fit(np.random.default_rng(0).normal(0.3, 2.0, (2000, 2)), n_epochs=20,
               key=0)
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        aspire.sample_posterior(1000, sampler="importance", key=1)
    assert any("curvature in the latent space -" in r.getMessage()
               for r in caplog.records)
    assert not any("narrower" in r.getMessage() for r in caplog.records)
    # Were the largest weights' Pareto fit large there (it can be, at a low
    # efficiency), the warning would say that a few draws carry the weight
    # of a reference wider than the posterior: bounded weights, not a
    # narrow reference.
    import aspire_jax.aspire as facade

    caplog.clear()
    with pytest.MonkeyPatch.context() as patch, \
            caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        patch.setattr(facade, "pareto_tail_shape", lambda log_w: 0.9)
        aspire.sample_posterior(1000, sampler="importance", key=1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("Pareto k of the largest weights 0.90), but the reference is wider"
               in m for m in messages), messages
    assert not any("heavy-tailed" in m for m in messages)
    assert not any("narrower" in m for m in messages)
    # An angle whose posterior straddles 0 = 2 pi: the latent space has a
    # seam, the quadratic fit reads no tail shape there and is not used.
    mu, kappa = 0.15, 4.0

    def log_prior(x):
        inside = (x[:, 0] > 0) & (x[:, 0] < 2 * np.pi)
        return jnp.where(inside, -jnp.log(2 * np.pi), -jnp.inf) - 0.5 * x[:, 1] ** 2

    def log_likelihood(x):
        return kappa * jnp.cos(x[:, 0] - mu) - 0.5 * ((x[:, 1] - 0.5) / 0.5) ** 2

    rng = np.random.default_rng(0)
    earlier = np.c_[np.mod(rng.vonmises(5.9, 1.5, 3000), 2 * np.pi),
                    rng.normal(0.3, 0.8, 3000)]
    angle = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=2,
                   parameters=["phi", "x"], prior_bounds={"phi": (0, 2 * np.pi)},
                   periodic_parameters=["phi"], n_layers=2, hidden_sizes=(32,))
    angle.fit(earlier, key=0, n_epochs=40)
    caplog.clear()
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        angle.sample_posterior(2000, sampler="importance", key=30, reference="gaussian")
    assert any("curvature in the latent space nan" in r.getMessage()
               for r in caplog.records)
    assert not any("heavy-tailed" in r.getMessage() or "grow towards" in r.getMessage()
                   for r in caplog.records)
