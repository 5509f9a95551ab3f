"""Importance sampling from the flow: the one-step end of the toolbox.

Draw ``x_i ~ q`` and weight by ``w_i = pi(x_i) L(x_i) / q(x_i)``. The evidence
estimate is ``Z = mean(w)``; its delta-method variance in log space is
``Var[log Z] ≈ Var(w) / (n mean(w)^2)``, the same formula the SMC engine uses
for each tempering increment (this is SMC with a single step beta: 0 -> 1).
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .._types import Array, PRNGKey
from .._random import compact_draws
from .step import _check_batched, _densities

__all__ = ["ImportanceResult", "make_importance_sampler"]


class ImportanceResult(NamedTuple):
    """Weighted draws from the flow and the evidence they give."""

    x: Array
    log_likelihood: Array
    log_prior: Array
    log_q: Array
    log_weights: Array
    log_evidence: Array
    log_evidence_var: Array
    ess: Array
    n_evaluations: Array
    n_invalid: Array


def make_importance_sampler(log_likelihood_fn, log_prior_fn, flow, n_samples: int):
    """Build ``sample(key, flow_params) -> ImportanceResult`` (pure, jittable)."""
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")

    def sample(key: PRNGKey, flow_params) -> ImportanceResult:
        x, lq = flow.sample_and_log_prob(flow_params, key, n_samples)
        lp, ll, lq, undefined = _densities(log_likelihood_fn, log_prior_fn, flow,
                                           flow_params, x, log_q=lq)
        log_w = jnp.where(jnp.isfinite(lp + ll), lp + ll - lq, -jnp.inf)
        log_sum = logsumexp(log_w)
        log_z = log_sum - jnp.log(n_samples)
        w_rel = jnp.exp(log_w - log_z)
        var = jnp.sum((w_rel - 1.0) ** 2) / float(n_samples) ** 2
        log_weights = log_w - log_sum
        ess = 1.0 / jnp.sum(jnp.exp(2 * log_weights))
        return ImportanceResult(x, ll, lp, lq, log_weights, log_z, var, ess,
                                jnp.asarray(n_samples, jnp.int32),
                                jnp.sum(undefined).astype(jnp.int32))

    return compact_draws(sample)
