"""Importance sampling from the flow: the one-step end of the toolbox.

Draw ``x_i ~ q`` and weight by ``w_i = pi(x_i) L(x_i) / q(x_i)``. The evidence
estimate is ``Z = mean(w)``; its delta-method variance in log space is
``Var[log Z] ≈ Var(w) / (n mean(w)^2)``, the same formula the SMC engine uses
for each tempering increment (this is SMC with a single step beta: 0 -> 1).
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .._types import Array, PRNGKey
from .._random import compact_draws
from .step import _check_batched, _densities

__all__ = ["ImportanceResult", "make_importance_sampler", "pareto_tail_shape"]


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


def pareto_tail_shape(log_weights) -> float:
    """Shape ``k`` of a generalized Pareto fitted to the largest importance
    weights (host-side, float64); NaN when too few weights are finite.

    The diagnostic of Pareto-smoothed importance sampling (Vehtari, Simpson,
    Gelman, Yao and Gabry, 2024): the weights' upper tail, the largest
    ``M = ceil(min(n / 5, 3 sqrt(n)))`` of ``n`` weights, is fitted by the
    quasi-Bayesian estimate of Zhang and Stephens (2009), shrunk towards 0.5
    by a weak prior worth 10 observations. With ``k > 0.7`` the weights'
    variance is effectively infinite at any practical ``n``: the estimate of
    log Z and its delta-method error bar cannot be trusted (typically both
    too small), whatever the effective sample size says.

    Parameters
    ----------
    log_weights
        ``(n,)`` log importance weights, normalised or not.

    Returns
    -------
    float
        The fitted shape ``k``.
    """
    lw = np.asarray(log_weights, np.float64)
    lw = lw[np.isfinite(lw)]
    n = lw.size
    n_tail = int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))
    if n_tail < 5:
        return math.nan
    w = np.sort(np.exp(lw - lw.max()))
    exceed = w[-n_tail:] - w[-n_tail - 1]
    if not exceed[-1] > 0:
        return math.nan
    exceed = exceed[exceed > 0]
    m = exceed.size
    if m < 5:
        return math.nan
    # Grid over theta = -k / sigma, below 1 / max(exceedance) so that every
    # 1 - theta * y stays positive, denser near that end.
    quartile = exceed[max(int(math.floor(m / 4 + 0.5)) - 1, 0)]
    n_grid = 30 + int(math.sqrt(m))
    j = np.arange(1, n_grid + 1)
    theta = 1.0 / exceed[-1] + (1.0 - np.sqrt(n_grid / (j - 0.5))) / (3.0 * quartile)
    # For each theta the likelihood is maximised by k(theta) = mean log(1 -
    # theta y); the profile log-likelihood is m (log(-theta / k) - k - 1).
    k_theta = np.mean(np.log1p(-theta[:, None] * exceed[None, :]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        profile = m * (np.log(-theta / k_theta) - k_theta - 1.0)
    ok = np.isfinite(profile)
    if not ok.any():
        return math.nan
    theta, profile = theta[ok], profile[ok]
    post = np.exp(profile - profile.max())
    theta_hat = np.sum(theta * post) / np.sum(post)
    k = float(np.mean(np.log1p(-theta_hat * exceed)))
    return (m * k + 10 * 0.5) / (m + 10)
