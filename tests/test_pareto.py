"""The Pareto tail diagnostic of importance weights."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax import Aspire
from aspire_jax.smc.importance import pareto_tail_shape


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
