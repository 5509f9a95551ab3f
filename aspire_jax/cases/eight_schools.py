"""Eight schools (Rubin 1981), centred parameterisation, 10-d.

Parameters: ``avg_effect`` (mu), ``log_stddev`` (log tau) and
``school_effects_0..7`` (theta_j), with y_j ~ N(theta_j, sigma_j) and
theta_j ~ N(mu, tau).

NEW analysis: mu ~ N(0, 10), log tau ~ N(5, 1).
EARLIER analysis: the same model with tau ~ HalfCauchy(0, 5) (Gelman 2006),
as a density on log tau, which puts much more mass at small tau — a deep
funnel in the centred form. Reuse scenario: prior-sensitivity re-analysis.

Reference answers come from 2-D quadrature over (mu, log tau) on a fine grid
with theta integrated analytically (error below 1e-9 in log Z); the stored
earlier-posterior draws are exact.
"""

import math

import jax.numpy as jnp
import numpy as np

from . import load_data

__all__ = ["NAME", "dims", "parameter_names", "prior_bounds", "periodic",
           "log_likelihood", "log_prior", "previous_log_likelihood",
           "previous_log_prior", "previous_samples", "reference_samples",
           "reference"]

NAME = "eight_schools"
Y = np.array([28, 8, -3, 7, -1, 1, 18, 12], dtype=np.float64)
SIGMA = np.array([15, 10, 16, 11, 9, 11, 10, 18], dtype=np.float64)
parameter_names = ["avg_effect", "log_stddev"] + [f"school_effects_{j}" for j in range(8)]
dims = 10
prior_bounds = np.array([[-np.inf, np.inf]] * dims)
periodic = [False] * dims
HALF_CAUCHY_SCALE = 5.0
_LOG_2PI = math.log(2 * math.pi)


def _normal(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI


def log_likelihood(x):
    x = jnp.atleast_2d(x)
    return jnp.sum(_normal(jnp.asarray(Y, x.dtype), x[:, 2:],
                           jnp.asarray(SIGMA, x.dtype)), axis=-1)


def _theta_given_hyper(x):
    tau = jnp.exp(x[:, 1])
    return jnp.sum(_normal(x[:, 2:], x[:, :1], tau[:, None]), axis=-1)


def log_prior(x):
    """mu ~ N(0, 10), log tau ~ N(5, 1), theta_j ~ N(mu, tau)."""
    x = jnp.atleast_2d(x)
    return _normal(x[:, 0], 0.0, 10.0) + _normal(x[:, 1], 5.0, 1.0) + _theta_given_hyper(x)


def previous_log_prior(x):
    """mu ~ N(0, 10), tau ~ HalfCauchy(0, 5) as a density on log tau."""
    x = jnp.atleast_2d(x)
    lt, s = x[:, 1], HALF_CAUCHY_SCALE
    log_p_logtau = math.log(2.0 / (math.pi * s)) - jnp.log1p(jnp.exp(2 * lt) / s**2) + lt
    return _normal(x[:, 0], 0.0, 10.0) + log_p_logtau + _theta_given_hyper(x)


previous_log_likelihood = log_likelihood


def _ref():
    return load_data("eight_schools_reference.npz")


def previous_samples(n=None, seed=0):
    """Exact draws of the EARLIER posterior (a random subset if ``n`` is given)."""
    draws = _ref()["previous_samples"]
    if n is None or n == len(draws):
        return draws.copy()
    rng = np.random.default_rng(seed)
    return draws[rng.choice(len(draws), size=int(n), replace=int(n) > len(draws))]


def reference_samples():
    """Exact draws of the NEW posterior."""
    return _ref()["new_samples"]


def reference():
    z = _ref()
    return dict(mean=z["new_mean"], std=z["new_std"],
                log_evidence=float(z["new_log_evidence"]),
                log_evidence_err=float(z["new_log_evidence_err"]),
                previous_mean=z["previous_mean"], previous_std=z["previous_std"],
                previous_log_evidence=float(z["previous_log_evidence"]),
                previous_log_evidence_err=float(z["previous_log_evidence_err"]),
                notes=str(z["notes"]))
