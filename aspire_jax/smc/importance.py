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
from .step import _check_batched, _densities, _draw

__all__ = ["ImportanceResult", "make_importance_sampler", "pareto_tail_shape",
           "weight_curvature"]


class ImportanceResult(NamedTuple):
    """Weighted draws from the flow and the evidence they give; ``latent``
    holds the latent points the draws were mapped from (``None`` for a flow
    without ``from_latent``)."""

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
    latent: Array | None = None


def make_importance_sampler(log_likelihood_fn, log_prior_fn, flow, n_samples: int):
    """Build ``sample(key, flow_params) -> ImportanceResult`` (pure, jittable)."""
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")

    def sample(key: PRNGKey, flow_params) -> ImportanceResult:
        x, lq, z = _draw(flow, flow_params, key, n_samples, None, latent=True)
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
                                jnp.sum(undefined).astype(jnp.int32), z)

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


def weight_curvature(latent, log_weights) -> float:
    """Largest curvature of the log importance weights in the reference's
    standard-normal latent space (host-side, float64); NaN when too few
    weights are finite.

    A quadratic ``log w(z) ~ c + b.z + z^T A z / 2`` is fitted by least
    squares to every draw with a finite weight, and the largest eigenvalue of
    ``A`` is returned. When the posterior is Gaussian in the latent space,
    ``N(m, S)``, then ``A = I - S^-1`` exactly: its largest eigenvalue is
    ``1 - 1/s`` for the largest variance ``s`` of the posterior in units of
    the reference's, which is also the tail shape ``k`` of the weights along
    that direction. Their variance is infinite above 0.5 (a posterior
    sqrt(2) times wider than the reference there), the regime in which
    :func:`pareto_tail_shape` can look harmless: it reads ``k`` from the
    largest weights, which come from the few draws that happened to reach
    the reference's tails, and when none did the weights look light-tailed
    while log Z and its error bar are at their most wrong. The fit uses the
    bulk of the draws instead. Away from Gaussian posteriors it is a
    quadratic summary, not an exact tail shape: positive where the weights
    grow towards the reference's tails (a reference too narrow), near zero
    for a reference that matches, negative for one wider than the posterior.

    With more than ``n / 10`` coefficients in the full quadratic (``n`` finite
    weights), only its diagonal is fitted (each latent coordinate's own
    curvature).

    Parameters
    ----------
    latent
        ``(n, d)`` latent points of the draws (standard normal under the
        reference).
    log_weights
        ``(n,)`` log importance weights, normalised or not.

    Returns
    -------
    float
        The largest curvature.
    """
    z = np.asarray(latent, np.float64)
    lw = np.asarray(log_weights, np.float64)
    ok = np.isfinite(lw) & np.all(np.isfinite(z), axis=1)
    z, y = z[ok], lw[ok]
    n, d = z.shape
    full = 1 + d + d * (d + 1) // 2 <= n // 10
    if full:
        i, j = np.triu_indices(d)
    else:
        i = j = np.arange(d)
    if n < 10 * (1 + d + i.size):
        return math.nan
    design = np.column_stack([np.ones(n), z, z[:, i] * z[:, j]])
    coef = np.linalg.lstsq(design, y - y.mean(), rcond=None)[0][1 + d:]
    # z_i z_j with i < j contributes coef to A_ij and A_ji; z_i^2 gives 2 coef.
    a = np.zeros((d, d))
    a[i, j] = coef
    a = a + a.T
    return float(np.linalg.eigvalsh(a)[-1])
