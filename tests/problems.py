"""Small problems with closed-form answers shared by the facade tests."""

import numpy as np
import jax.numpy as jnp

DIMS = 3
PRIOR_SD = 3.0
LIKE_MEAN = 1.0
LIKE_SD = 0.5


def log_prior(x):
    return jnp.sum(-0.5 * (x / PRIOR_SD) ** 2 - jnp.log(PRIOR_SD)
                   - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def log_likelihood(x):
    return jnp.sum(-0.5 * ((x - LIKE_MEAN) / LIKE_SD) ** 2 - jnp.log(LIKE_SD)
                   - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def log_evidence(dims=DIMS):
    """log of prod_i N(LIKE_MEAN; 0, PRIOR_SD^2 + LIKE_SD^2)."""
    s2 = PRIOR_SD**2 + LIKE_SD**2
    return dims * (-0.5 * LIKE_MEAN**2 / s2 - 0.5 * np.log(2 * np.pi * s2))


def posterior_moments():
    var = 1.0 / (1.0 / PRIOR_SD**2 + 1.0 / LIKE_SD**2)
    return var * LIKE_MEAN / LIKE_SD**2, np.sqrt(var)


def earlier_samples(n=2000, seed=0, dims=DIMS):
    """Draws of a deliberately-off earlier posterior: shifted and widened."""
    mean, sd = posterior_moments()
    rng = np.random.default_rng(seed)
    return (mean - 0.8 * sd + 1.5 * sd * rng.standard_normal((n, dims))).astype(
        np.float32)


FLOW_SETTINGS = dict(flow_kind="affine", n_layers=2, hidden_sizes=(16,))
FIT_SETTINGS = dict(n_epochs=30, batch_size=256, key=0)


def make_aspire(**kwargs):
    from aspire_jax import Aspire

    settings = dict(log_likelihood=log_likelihood, log_prior=log_prior, dims=DIMS,
                    **FLOW_SETTINGS)
    settings.update(kwargs)
    return Aspire(**settings)


def fitted_aspire(**kwargs):
    """``make_aspire(**kwargs)`` fitted to ``earlier_samples()`` with ``FIT_SETTINGS``."""
    aspire = make_aspire(**kwargs)
    aspire.fit(earlier_samples(), **FIT_SETTINGS)
    return aspire
