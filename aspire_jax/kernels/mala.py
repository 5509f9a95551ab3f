"""Metropolis-adjusted Langevin moves preconditioned with the particle covariance.

With ``Sigma = L L^T`` the covariance of the current particles, ``h`` the step
size and ``g(u)`` the gradient of the log target, each particle proposes

    u' = u + (h^2 / 2) Sigma g(u) + h L z,   z ~ N(0, I),

an Euler step of the Langevin diffusion with mass matrix ``Sigma^{-1}``. The
proposal density is ``N(u'; u + (h^2 / 2) Sigma g(u), h^2 Sigma)``; in
whitened coordinates its exponent is ``-|w|^2 / (2 h^2)`` with

    w(u -> u') = L^{-1} (u' - u) - (h^2 / 2) L^T g(u),

so ``w(u -> u') = h z`` for the forward move and the Metropolis–Hastings ratio
is

    log alpha = log p(u') - log p(u) - |w(u' -> u)|^2 / (2 h^2) + |z|^2 / 2.

Gradients are those of the batched log density: particles are independent, so
the gradient of the sum over particles is the stack of per-particle
gradients. The proposal carries its gradient, so an accepted move costs no
further evaluation. A non-finite gradient at either end of a move rejects it;
the rule is symmetric in ``u`` and ``u'``, so detailed balance still holds.

The step size starts at ``initial_scale * 1.65 d^(-1/6)``, the optimum for a
Gaussian target with covariance ``Sigma`` (Roberts & Rosenthal 1998;
acceptance about 0.574), and is adapted on the log scale toward the target
acceptance rate after each sweep.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from .._types import Array, PRNGKey
from .base import (CholeskyScaleParams, KernelInfo, KernelState, MCMCKernel,
                   adapt_log_scale, check_settings, count_invalid, draw_move_noise,
                   in_unit_interval, mh_select, non_negative_finite, positive_finite,
                   safe_cholesky, weighted_mean_cov, whiten)

__all__ = ["MALAParams", "MALASettings", "mala", "value_and_grad_batched"]

# Bounds on log h: h in [6e-6, 20].
_LOG_SCALE_BOUNDS = (-12.0, 3.0)


MALAParams = CholeskyScaleParams
"""Cholesky factor of the particle covariance and the adapted log scale."""


@dataclasses.dataclass(frozen=True)
class MALASettings:
    """Static settings of the MALA kernel.

    Attributes
    ----------
    target_acceptance
        Acceptance rate the step size is adapted toward, in (0, 1).
    initial_scale
        Multiplier of ``1.65 d^(-1/6)`` giving the starting step size;
        positive.
    adaptation_rate
        Robbins–Monro gain on ``log h`` per sweep; non-negative (0 freezes
        the step size).
    """

    target_acceptance: float = 0.574
    initial_scale: float = 1.0
    adaptation_rate: float = 1.0

    def __post_init__(self):
        check_settings(self, (
            ("target_acceptance", in_unit_interval, "in (0, 1)"),
            ("initial_scale", positive_finite, "a positive finite number"),
            ("adaptation_rate", non_negative_finite, "a finite number >= 0"),
        ))


def value_and_grad_batched(log_density_fn, position: Array):
    """Log density, aux and per-particle gradient of a batched density.

    Parameters
    ----------
    log_density_fn
        ``(n, d) -> ((n,), aux)``, with particle ``i``'s density depending on
        row ``i`` alone.
    position
        Points, ``(n, d)``.

    Returns
    -------
    log_density, aux, grad
        ``(n,)``, the aux pytree, and the gradients ``(n, d)``.

    Notes
    -----
    Assumes the rows are independent (no batch statistics inside the
    density); this is not checked.
    """

    def total(u):
        log_density, aux = log_density_fn(u)
        return jnp.sum(log_density), (log_density, aux)

    (_, (log_density, aux)), grad = jax.value_and_grad(total, has_aux=True)(
        position)
    return log_density, aux, grad


def _finite_rows(a: Array) -> Array:
    return jnp.all(jnp.isfinite(a), axis=-1)


def mala(settings: MALASettings = MALASettings()) -> MCMCKernel:
    """Preconditioned Metropolis-adjusted Langevin kernel.

    Parameters
    ----------
    settings
        Static kernel settings.

    Returns
    -------
    MCMCKernel
        The pure ``init``, ``fit``, ``step``, ``adapt`` and ``prepare``
        functions, with ``uses_grad=True``: ``prepare(state, log_density_fn)``
        fills ``state.grad`` at the current positions. ``step`` calls it
        itself when ``state.grad`` is ``None``, at the cost of one extra
        evaluation; call it once before the first sweep to keep that cost
        visible.
    """

    def init(position: Array) -> MALAParams:
        d = position.shape[1]
        _, cov = weighted_mean_cov(position)
        log_scale = math.log(settings.initial_scale * 1.65 * d ** (-1.0 / 6.0))
        return MALAParams(chol=safe_cholesky(cov),
                          log_scale=jnp.asarray(log_scale, position.dtype))

    def fit(params: MALAParams, position: Array) -> MALAParams:
        _, cov = weighted_mean_cov(position)
        return params.replace(chol=safe_cholesky(cov))

    def prepare(state: KernelState, log_density_fn) -> KernelState:
        _, _, grad = value_and_grad_batched(log_density_fn, state.position)
        return state._replace(grad=grad)

    def step(key: PRNGKey, state: KernelState, log_density_fn,
             params: MALAParams) -> tuple[KernelState, KernelInfo]:
        if state.grad is None:
            state = prepare(state, log_density_fn)
        u, chol = state.position, params.chol
        h = jnp.exp(params.log_scale)
        grad_ok = _finite_rows(state.grad)
        # A zero drift keeps the proposal finite; the move is rejected anyway.
        grad = jnp.where(grad_ok[:, None], state.grad, 0.0)
        z, u_accept = draw_move_noise(key, *u.shape, u.dtype)
        prop_u = u + 0.5 * h**2 * ((grad @ chol) @ chol.T) + h * (z @ chol.T)
        prop_logp, prop_aux, prop_grad = value_and_grad_batched(log_density_fn,
                                                                prop_u)
        proposal = KernelState(prop_u, prop_logp, prop_aux, prop_grad)

        back = whiten(chol, u - prop_u)
        w_back = back - 0.5 * h**2 * (prop_grad @ chol)
        log_alpha = (prop_logp - state.log_density
                     - 0.5 * jnp.sum(w_back**2, axis=-1) / h**2
                     + 0.5 * jnp.sum(z**2, axis=-1))
        ok = grad_ok & _finite_rows(prop_grad)
        log_alpha = jnp.where(ok, log_alpha, -jnp.inf)
        new_state, prob = mh_select(u_accept, log_alpha, proposal, state)
        return new_state, KernelInfo(acceptance=jnp.mean(prob),
                                     n_invalid=count_invalid(prop_logp))

    def adapt(params: MALAParams, acceptance: Array) -> MALAParams:
        return params.replace(log_scale=adapt_log_scale(
            params.log_scale, acceptance, settings.target_acceptance,
            settings.adaptation_rate, bounds=_LOG_SCALE_BOUNDS))

    return MCMCKernel(name="mala", init=init, fit=fit, step=step, adapt=adapt,
                      uses_grad=True, prepare=prepare)
