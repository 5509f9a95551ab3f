"""Bayesian linear regression on the diabetes data (Efron et al. 2004), 12-d.

Data: 442 patients, 10 standardised baseline covariates (age, sex, bmi, bp,
s1..s6) and a standardised disease-progression score, as distributed with
scikit-learn (stored in ``data/diabetes.npz``).

Model, conjugate Normal–Inverse-Gamma:

    y_i | b, sigma ~ N(b_0 + x_i . b, sigma^2),
    b | sigma ~ N(0, sigma^2 I_11),   sigma^2 ~ InvGamma(2, 1),

with parameters (intercept, 10 coefficients, sigma > 0); the density on sigma
includes the Jacobian ``|d sigma^2 / d sigma| = 2 sigma``.

Reuse scenario: the EARLIER analysis saw the first 221 patients, the NEW one
sees all 442. Reference answers are analytic: Student-t marginals for the
coefficients, an inverse-gamma for sigma^2 and the closed-form marginal
likelihood. The earlier posterior is roughly sqrt(2) wider than the new one
and shifted, so importance sampling from it alone is inefficient.
"""

import math

import jax.numpy as jnp
import numpy as np

from . import load_data

__all__ = ["NAME", "dims", "parameter_names", "prior_bounds", "periodic",
           "log_likelihood", "log_prior", "previous_log_likelihood",
           "previous_log_prior", "previous_samples", "reference_samples",
           "reference"]

NAME = "diabetes_linreg"
FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
parameter_names = ["intercept"] + [f"beta_{f}" for f in FEATURES] + ["sigma"]
dims = 12
prior_bounds = np.array([[-np.inf, np.inf]] * 11 + [[0.0, np.inf]])
periodic = [False] * dims
A0, B0 = 2.0, 1.0
N_PREVIOUS = 221
_LOG_2PI = math.log(2 * math.pi)

_data = load_data("diabetes.npz")
X_ALL = np.column_stack([np.ones(len(_data["X"])), _data["X"]])
Y_ALL = np.asarray(_data["y"], dtype=np.float64)


def _gaussian_loglike(X, y):
    Xj = jnp.asarray(X, jnp.float32)
    yj = jnp.asarray(y, jnp.float32)
    n = len(y)

    def log_likelihood(x):
        x = jnp.atleast_2d(x)
        coef, sigma = x[:, :11], x[:, 11]
        safe = jnp.where(sigma > 0, sigma, 1.0)
        resid = yj[None, :] - coef @ Xj.T
        out = (-0.5 * jnp.sum(resid**2, axis=1) / safe**2 - n * jnp.log(safe)
               - 0.5 * n * _LOG_2PI)
        return jnp.where(sigma > 0, out, -jnp.inf)

    return log_likelihood


log_likelihood = _gaussian_loglike(X_ALL, Y_ALL)
previous_log_likelihood = _gaussian_loglike(X_ALL[:N_PREVIOUS], Y_ALL[:N_PREVIOUS])


def log_prior(x):
    """Normalised NIG prior on (intercept, coefficients, sigma)."""
    x = jnp.atleast_2d(x)
    coef, sigma = x[:, :11], x[:, 11]
    s = jnp.where(sigma > 0, sigma, 1.0)
    s2 = s**2
    lp_coef = -0.5 * jnp.sum(coef**2, axis=1) / s2 - 11 * jnp.log(s) - 5.5 * _LOG_2PI
    lp_s2 = A0 * math.log(B0) - math.lgamma(A0) - (A0 + 1) * jnp.log(s2) - B0 / s2
    out = lp_coef + lp_s2 + jnp.log(2 * s)
    return jnp.where(sigma > 0, out, -jnp.inf)


previous_log_prior = log_prior


def _posterior(X, y):
    """Conjugate update: mean, covariance factor, a_n, b_n and log evidence."""
    prec = np.eye(X.shape[1]) + X.T @ X
    cov = np.linalg.inv(prec)
    mean = cov @ (X.T @ y)
    a_n = A0 + len(y) / 2
    b_n = B0 + 0.5 * (y @ y - mean @ prec @ mean)
    log_z = (-0.5 * len(y) * _LOG_2PI + 0.5 * np.linalg.slogdet(cov)[1]
             + A0 * math.log(B0) - a_n * math.log(b_n) + math.lgamma(a_n)
             - math.lgamma(A0))
    return mean, cov, a_n, b_n, log_z


def _moments(X, y):
    mean, cov, a_n, b_n, log_z = _posterior(X, y)
    coef_sd = np.sqrt(np.diag(cov) * b_n / (a_n - 1))
    e_sigma = math.sqrt(b_n) * math.exp(math.lgamma(a_n - 0.5) - math.lgamma(a_n))
    e_sigma2 = b_n / (a_n - 1)
    return (np.concatenate([mean, [e_sigma]]),
            np.concatenate([coef_sd, [math.sqrt(e_sigma2 - e_sigma**2)]]), log_z)


def _exact_draws(X, y, n, seed):
    mean, cov, a_n, b_n, _ = _posterior(X, y)
    rng = np.random.default_rng(seed)
    s2 = b_n / rng.gamma(a_n, 1.0, size=n)
    chol = np.linalg.cholesky(cov)
    coef = mean + np.sqrt(s2)[:, None] * (rng.standard_normal((n, 11)) @ chol.T)
    return np.column_stack([coef, np.sqrt(s2)])


def previous_samples(n=None, seed=0):
    """Exact draws of the EARLIER (first 221 patients) posterior, ``(n, 12)``."""
    return _exact_draws(X_ALL[:N_PREVIOUS], Y_ALL[:N_PREVIOUS],
                        20000 if n is None else int(n), seed)


def reference_samples(n=20000, seed=12345):
    """Exact draws of the NEW posterior."""
    return _exact_draws(X_ALL, Y_ALL, n, seed)


def reference():
    """Analytic moments and log-evidence of the new and earlier posteriors."""
    m, s, lz = _moments(X_ALL, Y_ALL)
    pm, ps, plz = _moments(X_ALL[:N_PREVIOUS], Y_ALL[:N_PREVIOUS])
    return dict(mean=m, std=s, log_evidence=float(lz), log_evidence_err=0.0,
                previous_mean=pm, previous_std=ps, previous_log_evidence=float(plz),
                previous_log_evidence_err=0.0,
                notes="analytic (conjugate Normal-Inverse-Gamma); float64 round-off")
