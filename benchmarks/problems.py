"""Benchmark problems with exact answers.

Every problem has a normalised prior, a likelihood, the exact posterior
mean and standard deviation, the exact log-evidence and a generator of
"earlier samples": exact draws from a deliberately *off* distribution, as an
earlier analysis would have left behind (shifted by about one posterior
standard deviation and widened by a factor 1.5, or, for the real case, the
posterior of half of the data).

The log-densities are written once against an array namespace ``xp`` (numpy
or ``jax.numpy``), so the numpy-only upstream environment and the JAX peers
evaluate the very same formulas. This module imports neither jax nor the
package at import time.

Problems
--------
``gauss4``
    4-d Gaussian likelihood, Gaussian prior.
``gauss10``
    10-d Gaussian likelihood with AR(1) correlation 0.95 and scales spread
    over a factor 10 (condition number of the posterior covariance ~ 10^3).
``bimodal``
    4-d two-component Gaussian-mixture likelihood (weights 0.3 / 0.7, modes
    8 component standard deviations apart) under a Gaussian prior; the
    posterior is a mixture with known mode weights.
``banana``
    4-d twisted Gaussian (Haario et al. 2001, b = 0.03, first scale 10). The
    likelihood is defined as ``banana(x) / prior(x) * Z`` so that the posterior
    is exactly the normalised banana and the evidence is exactly ``Z``.
``diabetes``
    The 12-d Bayesian linear regression case of ``aspire_jax.cases``
    (``diabetes_linreg``): earlier analysis = first 221 patients, new analysis
    = all 442; analytic answers.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Callable

import numpy as np

__all__ = ["Problem", "PROBLEMS", "QUICK_PROBLEMS", "get_problem"]

_LOG_2PI = math.log(2.0 * math.pi)
_REPO = pathlib.Path(__file__).resolve().parent.parent
SHIFT_SD = 1.0
WIDEN = 1.5


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Attributes
    ----------
    name, dims, parameters
        Identity and parameter names.
    prior_bounds
        ``(dims, 2)`` list with ``inf`` for open sides.
    log_prior, log_likelihood
        ``f(x, xp) -> (n,)`` for a batch ``x`` of shape ``(n, dims)``.
    earlier_samples
        ``f(n, seed) -> (n, dims)`` float64 exact draws of the earlier
        (off) distribution.
    reference
        ``f() -> dict`` with ``mean``, ``std`` (lists), ``log_evidence`` and,
        for the mixture, ``mode_weight`` (posterior mass of the first mode).
    mode_indicator
        For the mixture: ``f(x) -> bool (n,)``, True in the first mode.
    """

    name: str
    dims: int
    parameters: tuple
    prior_bounds: list
    log_prior: Callable
    log_likelihood: Callable
    earlier_samples: Callable
    reference: Callable
    mode_indicator: Callable | None = None
    description: str = ""


# ----------------------------------------------------------------- helpers
def _gauss_logpdf(x, mean, prec, logdet_cov, xp):
    """log N(x; mean, cov) for a batch x, with prec = cov^-1 (numpy consts)."""
    d = x - xp.asarray(mean, dtype=x.dtype)
    quad = xp.sum((d @ xp.asarray(prec, dtype=x.dtype)) * d, axis=-1)
    return -0.5 * quad - 0.5 * (len(mean) * _LOG_2PI + logdet_cov)


def _gauss_logpdf_np(x, mean, cov):
    cov = np.asarray(cov, float)
    return float(_gauss_logpdf(np.atleast_2d(np.asarray(x, float)), mean,
                               np.linalg.inv(cov), np.linalg.slogdet(cov)[1], np)[0])


def _ar1_cov(scales, rho):
    d = len(scales)
    idx = np.arange(d)
    corr = rho ** np.abs(idx[:, None] - idx[None, :])
    return corr * np.outer(scales, scales)


def _off_gaussian(mean, cov, n, seed):
    """Draws from N(mean + SHIFT_SD * sd, WIDEN^2 cov)."""
    rng = np.random.default_rng(seed)
    sd = np.sqrt(np.diag(cov))
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((n, len(mean)))
    return mean + SHIFT_SD * sd + WIDEN * z @ chol.T


# -------------------------------------------------------- Gaussian problems
def _gaussian_problem(name, data, lik_cov, prior_sd, description):
    d = len(data)
    data = np.asarray(data, float)
    lik_cov = np.asarray(lik_cov, float)
    lik_prec = np.linalg.inv(lik_cov)
    lik_logdet = np.linalg.slogdet(lik_cov)[1]
    prior_var = prior_sd**2
    prior_prec = np.eye(d) / prior_var
    post_cov = np.linalg.inv(prior_prec + lik_prec)
    post_mean = post_cov @ (lik_prec @ data)
    log_z = _gauss_logpdf_np(data, np.zeros(d), prior_var * np.eye(d) + lik_cov)

    def log_prior(x, xp):
        return (-0.5 * xp.sum(x**2, axis=-1) / prior_var
                - 0.5 * d * (_LOG_2PI + math.log(prior_var)))

    def log_likelihood(x, xp):
        # log N(data; x, lik_cov), symmetric in (data, x)
        return _gauss_logpdf(x, data, lik_prec, lik_logdet, xp)

    def reference():
        return dict(mean=post_mean.tolist(), std=np.sqrt(np.diag(post_cov)).tolist(),
                    log_evidence=log_z)

    def earlier(n, seed):
        return _off_gaussian(post_mean, post_cov, n, seed)

    return Problem(name, d, tuple(f"x{i}" for i in range(d)),
                   [[-math.inf, math.inf]] * d, log_prior, log_likelihood, earlier,
                   reference, None, description)


def _gauss4():
    return _gaussian_problem(
        "gauss4", [1.0, -0.5, 2.0, 0.3], np.diag([0.5, 1.0, 0.3, 0.8]) ** 2, 5.0,
        "4-d Gaussian, independent, prior N(0, 5^2)")


def _gauss10():
    scales = np.geomspace(0.2, 2.0, 10)
    data = np.linspace(-1.0, 1.5, 10)
    return _gaussian_problem(
        "gauss10", data, _ar1_cov(scales, 0.95), 10.0,
        "10-d Gaussian, AR(1) correlation 0.95, scales 0.2..2, prior N(0, 10^2)")


# ----------------------------------------------------------------- mixture
def _bimodal():
    d = 4
    comp_sd = 0.6
    w = np.array([0.3, 0.7])
    mus = np.array([-1.2 * np.ones(d), 1.2 * np.ones(d)])
    prior_sd = 4.0
    s_cov = comp_sd**2 * np.eye(d)
    s_prec = np.linalg.inv(s_cov)
    s_logdet = np.linalg.slogdet(s_cov)[1]
    p_cov = prior_sd**2 * np.eye(d)
    post_cov_k = np.linalg.inv(s_prec + np.linalg.inv(p_cov))
    post_mean_k = np.array([post_cov_k @ (s_prec @ m) for m in mus])
    log_zk = np.array([math.log(wk) + _gauss_logpdf_np(m, np.zeros(d), s_cov + p_cov)
                       for wk, m in zip(w, mus)])
    log_z = float(np.logaddexp(*log_zk))
    omega = np.exp(log_zk - log_z)
    mean = omega @ post_mean_k
    second = sum(o * (post_cov_k + np.outer(m, m)) for o, m in zip(omega, post_mean_k))
    cov = second - np.outer(mean, mean)
    # first mode: projection on e = (mu_1 - mu_2)/|.| beyond the midpoint
    e = (mus[0] - mus[1]) / np.linalg.norm(mus[0] - mus[1])
    mid = 0.5 * (mus[0] + mus[1])
    sd_proj = math.sqrt(e @ post_cov_k @ e)
    mode_weight = sum(
        o * 0.5 * math.erfc(-(e @ (m - mid)) / (sd_proj * math.sqrt(2)))
        for o, m in zip(omega, post_mean_k))

    def log_prior(x, xp):
        return (-0.5 * xp.sum(x**2, axis=-1) / prior_sd**2
                - 0.5 * d * (_LOG_2PI + 2 * math.log(prior_sd)))

    def log_likelihood(x, xp):
        a = math.log(w[0]) + _gauss_logpdf(x, mus[0], s_prec, s_logdet, xp)
        b = math.log(w[1]) + _gauss_logpdf(x, mus[1], s_prec, s_logdet, xp)
        return xp.logaddexp(a, b)

    def reference():
        return dict(mean=mean.tolist(), std=np.sqrt(np.diag(cov)).tolist(),
                    log_evidence=log_z, mode_weight=float(mode_weight))

    def earlier(n, seed):
        # The earlier analysis had equal mode weights; each component is
        # shifted by one sd and widened by 1.5.
        rng = np.random.default_rng(seed)
        first = rng.random(n) < 0.5
        out = np.empty((n, d))
        for k, sel in enumerate((first, ~first)):
            m = int(sel.sum())
            z = rng.standard_normal((m, d))
            sd_k = math.sqrt(post_cov_k[0, 0])
            out[sel] = post_mean_k[k] + SHIFT_SD * sd_k + WIDEN * sd_k * z
        return out

    def mode_indicator(x):
        return (np.asarray(x) - mid) @ e > 0

    return Problem("bimodal", d, tuple(f"x{i}" for i in range(d)),
                   [[-math.inf, math.inf]] * d, log_prior, log_likelihood, earlier,
                   reference, mode_indicator,
                   "4-d two-mode Gaussian mixture likelihood, weights 0.3/0.7")


# ------------------------------------------------------------------ banana
def _banana():
    d = 4
    b = 0.03
    s1 = 10.0
    scales = np.array([s1] + [1.0] * (d - 1))
    prior_sd = 20.0
    log_z_true = -3.0

    def _untwist(x, xp):
        # phi(y) = (y1, y2 + b y1^2 - b s1^2, y3, ...), unit Jacobian
        y2 = x[:, 1] + b * x[:, 0] ** 2 - b * s1**2
        return xp.concatenate([x[:, :1], y2[:, None], x[:, 2:]], axis=1)

    def log_banana(x, xp):
        z = _untwist(x, xp) / xp.asarray(scales, dtype=x.dtype)
        return (-0.5 * xp.sum(z**2, axis=-1) - 0.5 * d * _LOG_2PI
                - float(np.sum(np.log(scales))))

    def log_prior(x, xp):
        return (-0.5 * xp.sum(x**2, axis=-1) / prior_sd**2
                - 0.5 * d * (_LOG_2PI + 2 * math.log(prior_sd)))

    def log_likelihood(x, xp):
        return log_banana(x, xp) - log_prior(x, xp) + log_z_true

    def reference():
        var = np.ones(d)
        var[0] = s1**2
        var[1] = 1.0 + 2.0 * b**2 * s1**4  # Var(x2 - b (x1^2 - s1^2))
        return dict(mean=[0.0] * d, std=np.sqrt(var).tolist(), log_evidence=log_z_true)

    def earlier(n, seed):
        rng = np.random.default_rng(seed)
        z = (SHIFT_SD + WIDEN * rng.standard_normal((n, d))) * scales
        y = z.copy()
        y[:, 1] = z[:, 1] - b * z[:, 0] ** 2 + b * s1**2
        return y

    return Problem("banana", d, tuple(f"x{i}" for i in range(d)),
                   [[-math.inf, math.inf]] * d, log_prior, log_likelihood, earlier,
                   reference, None,
                   "4-d Haario twisted Gaussian, b=0.03, scale 10; posterior exact")


# -------------------------------------------------------- real case (12-d)
_DIABETES_NPZ = _REPO / "aspire_jax" / "cases" / "data" / "diabetes.npz"
_NIG_A0, _NIG_B0 = 2.0, 1.0
_N_PREVIOUS = 221


def _diabetes_data():
    with np.load(_DIABETES_NPZ, allow_pickle=False) as z:
        X, y = np.asarray(z["X"], float), np.asarray(z["y"], float)
    return np.column_stack([np.ones(len(X)), X]), y


def _diabetes():
    X, y = _diabetes_data()
    n_obs = len(y)
    names = ("intercept", "beta_age", "beta_sex", "beta_bmi", "beta_bp", "beta_s1",
             "beta_s2", "beta_s3", "beta_s4", "beta_s5", "beta_s6", "sigma")

    def log_prior(x, xp):
        coef, sigma = x[:, :11], x[:, 11]
        s = xp.where(sigma > 0, sigma, 1.0)
        s2 = s**2
        lp = (-0.5 * xp.sum(coef**2, axis=-1) / s2 - 11 * xp.log(s) - 5.5 * _LOG_2PI
              + _NIG_A0 * math.log(_NIG_B0) - math.lgamma(_NIG_A0)
              - (_NIG_A0 + 1) * xp.log(s2) - _NIG_B0 / s2 + xp.log(2 * s))
        return xp.where(sigma > 0, lp, -math.inf)

    def log_likelihood(x, xp):
        coef, sigma = x[:, :11], x[:, 11]
        s = xp.where(sigma > 0, sigma, 1.0)
        resid = xp.asarray(y, dtype=x.dtype)[None, :] - coef @ xp.asarray(
            X.T, dtype=x.dtype)
        out = (-0.5 * xp.sum(resid**2, axis=-1) / s**2 - n_obs * xp.log(s)
               - 0.5 * n_obs * _LOG_2PI)
        return xp.where(sigma > 0, out, -math.inf)

    def reference():
        from aspire_jax.cases import load_case

        ref = load_case("diabetes_linreg").reference()
        return dict(mean=np.asarray(ref["mean"]).tolist(),
                    std=np.asarray(ref["std"]).tolist(),
                    log_evidence=float(ref["log_evidence"]))

    def earlier(n, seed):
        from aspire_jax.cases import load_case

        return np.asarray(load_case("diabetes_linreg").previous_samples(n, seed=seed),
                          float)

    bounds = [[-math.inf, math.inf]] * 11 + [[0.0, math.inf]]
    return Problem("diabetes", 12, names, bounds, log_prior, log_likelihood, earlier,
                   reference, None,
                   "aspire_jax.cases.diabetes_linreg: 12-d regression, 221 -> 442 "
                   "patients")


_FACTORIES = {"gauss4": _gauss4, "gauss10": _gauss10, "bimodal": _bimodal,
              "banana": _banana, "diabetes": _diabetes}
PROBLEMS = tuple(_FACTORIES)
QUICK_PROBLEMS = ("gauss4", "bimodal")


def get_problem(name: str) -> Problem:
    """Build the problem called ``name`` (one of :data:`PROBLEMS`)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown problem {name!r}; choose from {list(PROBLEMS)}")
    return _FACTORIES[name]()


def _jax_case_matches(problem: Problem, x: np.ndarray) -> Any:
    """For the real case: max |numpy port - aspire_jax.cases function|."""
    import jax.numpy as jnp

    from aspire_jax.cases import load_case

    case = load_case("diabetes_linreg")
    xj = jnp.asarray(x, jnp.float32)
    d_ll = np.max(np.abs(np.asarray(case.log_likelihood(xj))
                         - problem.log_likelihood(x, np)))
    d_lp = np.max(np.abs(np.asarray(case.log_prior(xj)) - problem.log_prior(x, np)))
    return float(max(d_ll, d_lp))
