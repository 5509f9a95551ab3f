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
from .step import _check_batched, _densities, _draw, evaluated_rows

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


def make_importance_sampler(log_likelihood_fn, log_prior_fn, flow, n_samples: int,
                            batch_size: int | None = None):
    """Build ``sample(key, flow_params) -> ImportanceResult`` (pure, jittable).

    With ``batch_size``, the draws pass through the flow and the user's
    functions at most that many at a time (:func:`~aspire_jax.smc.step.map_batches`),
    bounding the memory of a large ``n_samples``."""
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")

    def sample(key: PRNGKey, flow_params) -> ImportanceResult:
        x, lq, z = _draw(flow, flow_params, key, n_samples, batch_size, latent=True)
        lp, ll, lq, undefined = _densities(log_likelihood_fn, log_prior_fn, flow,
                                           flow_params, x, batch_size, log_q=lq)
        log_w = jnp.where(jnp.isfinite(lp + ll), lp + ll - lq, -jnp.inf)
        log_sum = logsumexp(log_w)
        log_z = log_sum - jnp.log(n_samples)
        w_rel = jnp.exp(log_w - log_z)
        var = jnp.sum((w_rel - 1.0) ** 2) / float(n_samples) ** 2
        log_weights = log_w - log_sum
        ess = 1.0 / jnp.sum(jnp.exp(2 * log_weights))
        return ImportanceResult(x, ll, lp, lq, log_weights, log_z, var, ess,
                                jnp.asarray(evaluated_rows(n_samples, batch_size),
                                            jnp.int32),
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


def weight_curvature(latent, log_weights) -> tuple[float, float]:
    """Largest curvature of the log importance weights in the reference's
    standard-normal latent space, and its standard error (host-side,
    float64); NaNs when too few weights are finite.

    A quadratic ``log w(z) ~ c + b.z + z^T A z / 2`` is fitted by least
    squares to the draws with a finite weight, and the largest eigenvalue of
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
    for a reference that matches, negative for one wider than the posterior,
    and above 1 only where the posterior is not log-concave in the latent
    space (several modes).

    The latent points are first rotated onto the principal axes of their
    weighted covariance, which for a Gaussian posterior are those of ``A``.
    With more than ``n / 10`` (or 500) coefficients in the full quadratic,
    for ``n`` finite weights, only its diagonal in those axes is fitted: a
    lower bound on the largest eigenvalue, exact when the axes are. At most
    20 000 draws (a fixed subset) enter the fit.

    Parameters
    ----------
    latent
        ``(n, d)`` latent points of the draws (standard normal under the
        reference).
    log_weights
        ``(n,)`` log importance weights, normalised or not.

    Returns
    -------
    curvature, standard_error : float
        The largest curvature, and its standard error from the least-squares
        residuals (along its eigenvector; noise in the weights also biases
        the largest eigenvalue upward by about this much).
    """
    z = np.asarray(latent, np.float64)
    lw = np.asarray(log_weights, np.float64)
    ok = np.isfinite(lw) & np.all(np.isfinite(z), axis=1)
    z, y = z[ok], lw[ok]
    if len(y) > _CURVATURE_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(y), _CURVATURE_ROWS,
                                                       replace=False))
        z, y = z[keep], y[keep]
    n, d = z.shape
    full = 1 + d + d * (d + 1) // 2 <= min(n // 10, 500)
    if full:
        i, j = np.triu_indices(d)
    else:
        i = j = np.arange(d)
    p = 1 + d + i.size
    if n < 10 * p:
        return math.nan, math.nan
    w = np.exp(y - y.max())
    centred = z - np.average(z, axis=0, weights=w)
    axes = np.linalg.eigh((centred * w[:, None]).T @ centred / np.sum(w))[1]
    z = z @ axes
    design = np.column_stack([np.ones(n), z, z[:, i] * z[:, j]])
    coef, _, rank, _ = np.linalg.lstsq(design, y - y.mean(), rcond=None)
    if rank < p:
        return math.nan, math.nan
    # z_i z_j with i < j contributes coef to A_ij and A_ji; z_i^2 gives 2 coef.
    a = np.zeros((d, d))
    a[i, j] = coef[1 + d:]
    a = a + a.T
    values, vectors = np.linalg.eigh(a)
    # v^T A v = sum over the fitted terms of 2 v_i v_j coef_ij.
    grad = np.zeros(p)
    grad[1 + d:] = 2.0 * vectors[i, -1] * vectors[j, -1]
    residual = y - y.mean() - design @ coef
    sigma2 = residual @ residual / (n - p)
    var = sigma2 * grad @ np.linalg.solve(design.T @ design, grad)
    return float(values[-1]), float(np.sqrt(max(var, 0.0)))


# Draws entering the curvature fit, at most.
_CURVATURE_ROWS = 20_000
