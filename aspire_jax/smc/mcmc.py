"""Plain population MCMC on the posterior, started from flow draws.

Chains start at draws of the flow and are moved by the same kernels as the
SMC mutation phase at beta = 1. Each sweep moves every chain once. During the
``n_burnin`` sweeps the kernel adapts: its population reference (the Gaussian
or Student-t of pCN, the proposal covariance of random-walk kernels) is
refitted to the chains four times in the first half, so that it follows them
from the flow's draws to the posterior, and the step scale adapts throughout.
Both are frozen afterwards, so the recorded sweeps are a valid (non-adaptive)
Markov chain. The chains' positions at the end of burn-in are returned with
the final ones, to test whether they were still moving. No evidence is
estimated.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._random import compact_draws
from .._types import Array, PRNGKey
from ..kernels import KernelState, build_kernel
from .state import SMCConfig
from .step import (_Aux, _centre_space, _check_batched, _densities, _draw, _sanitise,
                   _spaces, _start_correlation, evaluated_rows, map_batches)

__all__ = ["MCMCResult", "make_mcmc_sampler"]


class MCMCResult(NamedTuple):
    """Final chain states, per-sweep acceptance and step size, the number of
    evaluations, of those at which the log-likelihood or log-prior was NaN
    or +inf (rejected), the number of chains that never accepted a move
    (still at their starting draw), and the largest correlation, over the
    coordinates of the move space, between the chains' starting and final
    points (near 0 for chains that forgot where they started), and the
    chains' native positions and log prior plus log-likelihood at the end of
    burn-in (the starting draws' when ``n_burnin`` is 0), and the NaN or +inf
    evaluations of each sweep."""

    x: Array
    log_likelihood: Array
    log_prior: Array
    log_q: Array
    acceptance: Array
    step_size: Array
    n_evaluations: Array
    n_invalid: Array
    n_unmoved: Array
    start_correlation: Array
    x_burnin: Array
    log_posterior_burnin: Array
    sweep_n_invalid: Array


def _log_posterior(aux) -> Array:
    return aux.log_prior + aux.log_likelihood


def make_mcmc_sampler(config: SMCConfig, log_likelihood_fn, log_prior_fn, flow,
                      n_steps: int, n_burnin: int):
    """Build ``sample(key, flow_params) -> MCMCResult`` for ``config.n_particles``
    chains, ``n_burnin`` adaptive sweeps then ``n_steps`` fixed sweeps."""
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")
    kernel = build_kernel(config.kernel, config.kernel_settings)
    to_space, from_space = _spaces(config, flow)
    n = config.n_particles
    # Sweeps after which the reference is refitted: four, evenly spread over
    # the first half of burn-in (the step then adapts to the last of them).
    half = n_burnin // 2
    refits = sorted({max(1, (half * k) // 4) - 1 for k in range(1, 5)}) if half else []

    def sample(key: PRNGKey, flow_params) -> MCMCResult:
        key_init, key_run = jax.random.split(key)
        x, _, _ = _draw(flow, flow_params, key_init, n, config.batch_size)
        # Periodic coordinates centred on the chains' starting points, fixed
        # for the whole run.
        flow_params = _centre_space(flow, flow_params, x)

        def unbatched_log_density(u):
            x, log_det = from_space(flow_params, u)
            lp, ll, lq, undefined = _densities(log_likelihood_fn, log_prior_fn, flow,
                                               flow_params, x)
            # NaN marks an undefined density for the kernel (rejected, counted).
            logp = jnp.where(undefined, jnp.nan, _sanitise(lp + ll + log_det))
            return logp, _Aux(x, lp, ll, lq)

        def log_density_fn(u):
            return map_batches(unbatched_log_density, u, config.batch_size)

        u, _ = to_space(flow_params, x)
        logp, aux = log_density_fn(u)
        n_invalid0 = jnp.sum(jnp.isnan(logp)).astype(jnp.int32)
        kstate = KernelState(u, _sanitise(logp), aux, None)
        if kernel.uses_grad:
            kstate = kernel.prepare(kstate, log_density_fn)
        params = kernel.fit(kernel.init(u), u)

        def sweep(carry, i):
            key, kstate, params, x_burnin, lp_burnin = carry
            key, key_step = jax.random.split(key)
            kstate, info = kernel.step(key_step, kstate, log_density_fn, params)
            adapted = kernel.adapt(params, info.acceptance)
            params = jax.tree_util.tree_map(
                lambda a, b: jnp.where(i < n_burnin, a, b), adapted, params)
            # Refit the population reference to the chains as they travel
            # from the flow's draws; the last refit is halfway through burn-in,
            # so the second half adapts the step to the reference the recorded
            # sweeps use (a refit after the step is frozen would leave the
            # acceptance far from its target). A single refit had left pCN's
            # reference between the flow and the posterior, where its
            # acceptance decayed and the chains crawled.
            if refits:
                params = jax.lax.cond(
                    jnp.isin(i, jnp.asarray(refits)),
                    lambda p: kernel.fit(p, kstate.position), lambda p: p, params)
            end = i == n_burnin - 1
            x_burnin = jnp.where(end, kstate.aux.x, x_burnin)
            lp_burnin = jnp.where(end, _log_posterior(kstate.aux), lp_burnin)
            size = jnp.asarray(getattr(params, "step_size", 0.0))
            return (key, kstate, params, x_burnin, lp_burnin), (
                info.acceptance, size, info.n_invalid)

        (_, kstate, _, x_burnin, lp_burnin), (acc, size, invalid) = jax.lax.scan(
            sweep, (key_run, kstate, params, x, _log_posterior(aux)),
            jnp.arange(n_burnin + n_steps))
        evals = evaluated_rows(n, config.batch_size) * (
            1 + n_burnin + n_steps + int(kernel.uses_grad))
        a = kstate.aux
        end = kstate.position
        unmoved = jnp.sum(jnp.all(end == u, axis=-1)).astype(jnp.int32)
        corr = _start_correlation(flow, flow_params, u, end)
        return MCMCResult(a.x, a.log_likelihood, a.log_prior, a.log_q, acc, size,
                          jnp.asarray(evals, jnp.int32),
                          n_invalid0 + jnp.sum(invalid).astype(jnp.int32), unmoved,
                          jnp.max(corr), x_burnin, lp_burnin,
                          invalid.astype(jnp.int32))

    return compact_draws(sample)
