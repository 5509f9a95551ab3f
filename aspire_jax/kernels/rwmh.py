"""Random-walk Metropolis–Hastings with the particle covariance.

Each particle proposes

    u' = u + s L z,   z ~ N(0, I),

where ``L L^T = Sigma`` is the covariance of the current particles and ``s``
a scalar scale. The proposal is symmetric, so the Metropolis–Hastings ratio is
the ratio of target densities alone:

    log alpha = log p(u') - log p(u).

The scale starts at ``initial_scale * 2.38 / sqrt(d)``, the optimum for a
Gaussian target whose covariance is ``Sigma`` (Roberts, Gelman & Gilks 1997;
acceptance about 0.234 as ``d`` grows), and is adapted on the log scale toward
the target acceptance rate after each sweep.
"""

import dataclasses
import math

import jax.numpy as jnp

from .._types import Array, PRNGKey
from .base import (CholeskyScaleParams, KernelInfo, KernelState, MCMCKernel,
                   adapt_log_scale, check_settings, count_invalid, draw_move_noise,
                   in_unit_interval, mh_select, non_negative_finite, positive_finite,
                   safe_cholesky, weighted_mean_cov)

__all__ = ["RWMHParams", "RWMHSettings", "rwmh"]

# Bounds on log s: s in [6e-6, 20] covers any sensible random-walk scale.
_LOG_SCALE_BOUNDS = (-12.0, 3.0)


RWMHParams = CholeskyScaleParams
"""Cholesky factor of the particle covariance and the adapted log scale."""


@dataclasses.dataclass(frozen=True)
class RWMHSettings:
    """Static settings of the random-walk kernel.

    Attributes
    ----------
    target_acceptance
        Acceptance rate the scale is adapted toward, in (0, 1).
    initial_scale
        Multiplier of ``2.38 / sqrt(d)`` giving the starting scale; positive.
    adaptation_rate
        Robbins–Monro gain on ``log s`` per sweep; non-negative (0 freezes
        the scale).
    """

    target_acceptance: float = 0.234
    initial_scale: float = 1.0
    adaptation_rate: float = 1.0

    def __post_init__(self):
        check_settings(self, (
            ("target_acceptance", in_unit_interval, "in (0, 1)"),
            ("initial_scale", positive_finite, "a positive finite number"),
            ("adaptation_rate", non_negative_finite, "a finite number >= 0"),
        ))


def rwmh(settings: RWMHSettings = RWMHSettings()) -> MCMCKernel:
    """Random-walk Metropolis with a Gaussian step shaped by the particles.

    Parameters
    ----------
    settings
        Static kernel settings.

    Returns
    -------
    MCMCKernel
        The pure ``init``, ``fit``, ``step`` and ``adapt`` functions.
    """

    def init(position: Array) -> RWMHParams:
        d = position.shape[1]
        _, cov = weighted_mean_cov(position)
        log_scale = math.log(settings.initial_scale * 2.38 / math.sqrt(d))
        return RWMHParams(chol=safe_cholesky(cov),
                          log_scale=jnp.asarray(log_scale, position.dtype))

    def fit(params: RWMHParams, position: Array) -> RWMHParams:
        _, cov = weighted_mean_cov(position)
        return params.replace(chol=safe_cholesky(cov))

    def step(key: PRNGKey, state: KernelState, log_density_fn,
             params: RWMHParams) -> tuple[KernelState, KernelInfo]:
        u = state.position
        z, u_accept = draw_move_noise(key, *u.shape, u.dtype)
        prop_u = u + jnp.exp(params.log_scale) * (z @ params.chol.T)
        prop_logp, prop_aux = log_density_fn(prop_u)
        proposal = KernelState(prop_u, prop_logp, prop_aux, None)
        log_alpha = prop_logp - state.log_density
        new_state, prob = mh_select(u_accept, log_alpha, proposal, state)
        return new_state, KernelInfo(acceptance=jnp.mean(prob),
                                     n_invalid=count_invalid(prop_logp))

    def adapt(params: RWMHParams, acceptance: Array) -> RWMHParams:
        return params.replace(log_scale=adapt_log_scale(
            params.log_scale, acceptance, settings.target_acceptance,
            settings.adaptation_rate, bounds=_LOG_SCALE_BOUNDS))

    return MCMCKernel(name="rwmh", init=init, fit=fit, step=step, adapt=adapt)
