"""The adaptive-tempered SMC engine: ``init``, ``step`` and two drivers.

Build once, call many times::

    smc = build_smc(config, log_likelihood_fn, log_prior_fn, flow)
    state = smc.init(key, flow_params)
    state, info = smc.step(state, flow_params)

``log_likelihood_fn`` and ``log_prior_fn`` are batched, ``(n, d) -> (n,)``, and
are closed over, so ``step`` is an ordinary pure function that can be jitted,
vmapped over independent runs or called inside a user's ``lax`` loops.

One iteration (beta -> beta') is, in order:

1. reweight with ``exp((beta' - beta) r)``, ``r = log pi + log L - log q``,
   choosing beta' by bisection on the conditional ESS;
2. accumulate log Z += log sum_i W_i w_i and its delta-method variance;
3. resample (every iteration, or when ESS / N drops below a threshold);
4. mutate with MCMC moves that leave p_beta' invariant, in the chosen
   preconditioning space.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .._random import compact_draws
from .._types import Array, PRNGKey
from ..errors import ValidationError
from ..kernels import KernelState, build_kernel
from .resampling import get_resampler
from .state import SMCConfig, SMCInfo, SMCState, Status, tree_index
from .tempering import (conditional_efficiency, incremental_log_weights,
                        next_beta_step, safe_scale)

__all__ = [
    "SMCAlgorithm",
    "build_smc",
    "make_init",
    "make_step",
    "make_mutation",
    "run_device",
    "run_host",
    "target_efficiency_at",
    "tempered_log_density",
    "evaluate_densities",
    "map_batches",
]


class SMCAlgorithm(NamedTuple):
    """The pure functions of one configured SMC sampler."""

    init: Callable
    init_from_particles: Callable
    step: Callable
    config: SMCConfig


class _Aux(NamedTuple):
    x: Array
    log_prior: Array
    log_likelihood: Array
    log_q: Array


def _sanitise(v: Array) -> Array:
    """Map NaN and +inf to -inf: an undefined density is an impossible point."""
    return jnp.where(jnp.isnan(v) | (v == jnp.inf), -jnp.inf, v)


def evaluated_rows(n: int, batch_size: int | None) -> int:
    """Rows that :func:`map_batches` runs through ``fn`` for ``n`` rows: ``n``,
    or whole batches when ``batch_size`` does not divide ``n`` (the padding
    rows are evaluated too, so they count as likelihood evaluations; being
    copies of a real row, they never count as undefined points)."""
    if batch_size is None or batch_size >= n:
        return n
    return -(-n // batch_size) * batch_size


def map_batches(fn: Callable, x: Array, batch_size: int | None):
    """Apply the row-wise ``fn`` to ``x`` at most ``batch_size`` rows at a time.

    ``x`` is an array or a pytree of arrays sharing their leading axis; ``fn``
    maps its ``(b, ...)`` slices to a pytree of ``(b, ...)`` arrays, row by row.
    With ``batch_size=None`` (or at least ``n`` rows) it is called once on all
    of ``x``; otherwise ``lax.map`` runs it over ``ceil(n / batch_size)``
    batches in turn, so only one batch of intermediates is alive at a time.

    Notes
    -----
    Batches are strided, not contiguous: row ``i`` goes to batch
    ``i % n_batches``. With ``x`` split over devices along axis 0 and
    ``batch_size`` a multiple of the device count, every batch is then spread
    evenly over the devices and no row changes device. When ``batch_size``
    does not divide ``n``, ``x`` is padded with copies of its first row, whose
    results are dropped: they are evaluated all the same
    (:func:`evaluated_rows`).
    """
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return fn(x)
    n_batches = -(-n // batch_size)
    pad = evaluated_rows(n, batch_size) - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])])
        return a.reshape((batch_size, n_batches) + a.shape[1:]).swapaxes(0, 1)

    out = jax.lax.map(fn, jax.tree_util.tree_map(split, x))

    def unbatch(a):
        return a.swapaxes(0, 1).reshape((n + pad,) + a.shape[2:])[:n]

    return jax.tree_util.tree_map(unbatch, out)


def evaluate_densities(log_likelihood_fn, log_prior_fn, flow, flow_params, x,
                       batch_size: int | None = None, log_q: Array | None = None):
    """Log-prior, log-likelihood and flow log-density of ``x``, sanitised.

    The likelihood is only evaluated where the prior is finite; elsewhere it
    is set to ``-inf`` (points outside the prior support are impossible).
    ``batch_size`` bounds the rows evaluated at once (see :func:`map_batches`).
    A ``log_q`` already known (from the path that produced ``x``) is used as
    it is instead of a second pass through the flow.
    """
    return _densities(log_likelihood_fn, log_prior_fn, flow, flow_params, x,
                      batch_size, log_q)[:3]


def _undefined(v: Array) -> Array:
    return jnp.isnan(v) | (v == jnp.inf)


def _densities(log_likelihood_fn, log_prior_fn, flow, flow_params, x,
               batch_size: int | None = None, log_q: Array | None = None):
    """:func:`evaluate_densities` and, per row, whether a user function was
    undefined there: a NaN or +inf log-prior, or log-likelihood where the
    prior is finite."""

    def evaluate(x, log_q):
        lp_raw, ll_raw = log_prior_fn(x), log_likelihood_fn(x)
        lp = _sanitise(lp_raw)
        ll = jnp.where(jnp.isfinite(lp), _sanitise(ll_raw), -jnp.inf)
        undefined = _undefined(lp_raw) | (jnp.isfinite(lp) & _undefined(ll_raw))
        if log_q is None:
            log_q = flow.log_prob(flow_params, x)
        return lp, ll, _sanitise(log_q), undefined

    if log_q is None:
        return map_batches(lambda x: evaluate(x, None), x, batch_size)
    return map_batches(lambda xq: evaluate(*xq), (x, log_q), batch_size)


def tempered_log_density(beta, log_prior, log_likelihood, log_q):
    """``(1 - beta) log q + beta (log pi + log L)`` with ``0 * inf = 0``."""
    return safe_scale(1.0 - beta, log_q) + safe_scale(beta, log_prior + log_likelihood)


def target_efficiency_at(config: SMCConfig, beta: Array) -> Array:
    """Target CESS / N at inverse temperature ``beta``."""
    te = config.target_efficiency
    if isinstance(te, tuple):
        lo, hi = te
        return lo + (hi - lo) * jnp.power(beta, config.target_efficiency_rate)
    return jnp.asarray(te, beta.dtype)


def _spaces(config: SMCConfig, flow):
    """Maps native -> move space and back, each returning (value, log|J|)."""
    if config.preconditioning == "flow":
        return flow.to_latent, flow.from_latent
    if config.preconditioning == "standard":
        return flow.to_unbounded, flow.from_unbounded

    def identity(params, x):
        del params
        return x, jnp.zeros(x.shape[:1], x.dtype)

    return identity, identity


def _check_batched(fn, name):
    """Wrap a batched user function so a wrong output shape fails at trace time."""

    def wrapped(x):
        out = jnp.asarray(fn(x))
        if out.shape != x.shape[:1]:
            raise ValidationError(
                f"{name} must map a batch of shape (n, d) to shape (n,); for input "
                f"{tuple(x.shape)} it returned {tuple(out.shape)}")
        return out.astype(x.dtype)

    return wrapped


def _draw(flow, flow_params, key: PRNGKey, n: int, batch_size: int | None,
          latent: bool = False):
    """``n`` draws from the flow, their ``log q`` and, if asked, their latent
    points (else None), in batches if asked.

    Notes
    -----
    With ``batch_size`` set or ``latent`` asked, and a flow that has
    ``from_latent``, the latent points are drawn as
    ``jax.random.normal(key, (n, n_dims))`` and mapped batch by batch. This
    reproduces ``flow.sample_and_log_prob(params, key, n)`` for flows that
    sample that way, as :class:`aspire_jax.flows.Flow` does; this is assumed,
    not checked. A flow with ``draw_latent(key, n, dtype)`` (a defensive
    reference) draws its latent points with it instead. ``log q`` is the one
    computed along the sampling path (no second pass through the flow).
    """
    explicit = (batch_size is not None and batch_size < n) or latent
    if not explicit or not hasattr(flow, "from_latent"):
        return flow.sample_and_log_prob(flow_params, key, n) + (None,)
    like = jax.eval_shape(lambda p, k: flow.sample_and_log_prob(p, k, n)[0],
                          flow_params, key)
    if hasattr(flow, "draw_latent"):
        z = flow.draw_latent(key, like.shape[0], like.dtype)
    else:
        z = jax.random.normal(key, like.shape, like.dtype)

    def draw(z):
        x, log_det = flow.from_latent(flow_params, z)
        if hasattr(flow, "latent_log_prob"):
            return x, flow.latent_log_prob(flow_params, z, x, log_det)
        return x, flow.log_prob(flow_params, x)

    return map_batches(draw, z, batch_size) + ((z if latent else None),)


def make_init(config: SMCConfig, log_likelihood_fn, log_prior_fn, flow):
    """Build ``init(key, flow_params)`` and ``init_from_particles``."""
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")
    kernel = build_kernel(config.kernel, config.kernel_settings)
    to_space, _ = _spaces(config, flow)
    n = config.n_particles

    def init_from_particles(key: PRNGKey, x: Array, flow_params,
                            _log_q: Array | None = None,
                            _u: Array | None = None) -> SMCState:
        if x.ndim != 2 or x.shape[0] != n:
            raise ValidationError(
                f"init_from_particles needs an (n_particles, dims) = ({n}, d) array "
                f"as configured; got shape {tuple(x.shape)}")
        lp, ll, lq, undefined = _densities(log_likelihood_fn, log_prior_fn, flow,
                                           flow_params, x, config.batch_size, _log_q)
        u = _u
        if u is None:
            u, _ = map_batches(lambda x: to_space(flow_params, x), x,
                               config.batch_size)
        dtype = x.dtype
        return SMCState(
            x=x, log_likelihood=ll, log_prior=lp, log_q=lq,
            log_weights=jnp.full((x.shape[0],), -jnp.log(x.shape[0]), dtype),
            beta=jnp.zeros((), dtype), iteration=jnp.zeros((), jnp.int32),
            log_evidence=jnp.zeros((), dtype), log_evidence_var=jnp.zeros((), dtype),
            key=key, kernel_params=kernel.init(u),
            n_evaluations=jnp.asarray(evaluated_rows(x.shape[0], config.batch_size),
                                      jnp.int32),
            status=jnp.asarray(Status.RUNNING, jnp.int32),
            n_invalid=jnp.sum(undefined).astype(jnp.int32))

    def init(key: PRNGKey, flow_params) -> SMCState:
        key, key_sample = jax.random.split(key)
        # In the flow's latent space the draws' latent points are their move
        # coordinates: no pass back through the flow is needed.
        x, log_q, z = _draw(flow, flow_params, key_sample, n, config.batch_size,
                            latent=config.preconditioning == "flow")
        return init_from_particles(key, x, flow_params, log_q, z)

    return compact_draws(init), init_from_particles


def _choose_step(config: SMCConfig, state: SMCState, log_ratio: Array):
    """Next beta, the target efficiency, the CESS / N of the step, and the
    search flag."""
    beta = state.beta
    room = 1.0 - beta
    target = target_efficiency_at(config, beta)
    min_step = jnp.asarray(config.min_beta_step or 0.0, beta.dtype)
    if config.max_n_steps is not None:
        left = jnp.maximum(config.max_n_steps - state.iteration, 1).astype(beta.dtype)
        min_step = jnp.maximum(min_step, room / left)
    max_step = jnp.asarray(config.max_beta_step or 1.0, beta.dtype)
    if config.adaptive:
        search = next_beta_step(state.log_weights, log_ratio, beta, target,
                                min_step=min_step, max_step=max_step,
                                tolerance=config.beta_tolerance)
        delta, failed = search.delta, search.hit_min
        efficiency = search.efficiency
    else:
        delta = jnp.clip(jnp.asarray(1.0 / config.n_steps, beta.dtype),
                         min_step, max_step)
        failed = jnp.asarray(False)
        efficiency = None
    # Snap to 1 when the remaining gap is within round-off of the step.
    finish = delta >= room - 4 * jnp.finfo(beta.dtype).eps
    new_beta = jnp.where(finish, jnp.ones_like(beta), beta + delta)
    if efficiency is None:
        efficiency = conditional_efficiency(new_beta - beta, state.log_weights,
                                            log_ratio)
    # With the search, the efficiency is that of the searched step, which the
    # snap above changes by round-off at most.
    return new_beta, target, failed, efficiency


def _correlation(a: Array, b: Array, mask: Array | None = None) -> Array:
    """Per-column Pearson correlation of ``a`` and ``b`` (``(n, k)``) over the
    rows where ``mask`` is True (all rows when None); 0 for a column constant
    in either.

    It runs once per MCMC sweep, so its sums over the rows are matrix products
    (one for the means, one for the centred moments): on CPU, XLA splits every
    reduction over thousands of rows into three kernels for accuracy, and
    separate sums had made a third of a sweep's kernels.
    """
    ones = jnp.ones((a.shape[0],), a.dtype)
    if mask is None:
        w = ones[:, None]
    else:
        w = mask.astype(a.dtype)[:, None]
        a = jnp.where(mask[:, None], a, 0.0)
        b = jnp.where(mask[:, None], b, 0.0)
    k = a.shape[1]
    first = ones @ jnp.concatenate([w, a, b], axis=1)
    m = jnp.maximum(first[0], 1.0)
    a = (a - first[1:k + 1] / m) * w
    b = (b - first[k + 1:] / m) * w
    second = ones @ jnp.concatenate([a * b, a * a, b * b], axis=1)
    sab, saa, sbb = second[:k], second[k:2 * k], second[2 * k:]
    return sab / (jnp.sqrt(saa * sbb) + 1e-30)


def _centre_space(space, params, x: Array):
    """``params`` as the move space ``space`` wants them for moving the
    particles ``x``: a space with periodic coordinates
    (:class:`aspire_jax.spaces.PeriodicSpace`) centres them on the particles'
    circular mean, fixed for the whole move; other spaces take ``params`` as
    they are."""
    centred = getattr(space, "centred", None)
    return params if centred is None else centred(params, x)


def _mixing_features(space, params) -> Callable:
    """The columns that measure how far moves took move-space points: the
    coordinates themselves, or what the space makes of them (a periodic
    coordinate as the cosine and sine of its angle, since its lifted value can
    wander round the circle for ever without leaving its start behind)."""
    features = getattr(space, "mixing_features", None)
    return (lambda u: u) if features is None else (lambda u: features(params, u))


def _start_correlation(space, params, start: Array, end: Array) -> Array:
    """Per-column correlation between move-space points ``start`` and ``end``
    on the columns of :func:`_mixing_features`."""
    features = _mixing_features(space, params)
    return _correlation(features(start), features(end))


def make_mutation(config: SMCConfig, log_likelihood_fn, log_prior_fn, flow):
    """Build ``mutate``: the MCMC phase of an iteration at a fixed beta.

    ``mutate(key, x, lp, ll, lq, beta, kernel_params, flow_params)`` returns
    ``(aux, kernel_params, acceptance, n_sweeps, decorrelation, n_evals,
    n_invalid)`` where ``aux`` holds the moved particles and their cached
    densities and ``n_invalid`` counts the proposals at which a user function
    was NaN or +inf (rejected).
    The user functions must already be wrapped by :func:`_check_batched`.
    """
    kernel = build_kernel(config.kernel, config.kernel_settings)
    to_space, from_space = _spaces(config, flow)

    # In the flow's latent space, log q of a proposal follows from its latent
    # point and the log-determinant of the map back, so each proposal costs
    # one pass through the flow instead of two.
    latent_log_q = (getattr(flow, "latent_log_prob", None)
                    if config.preconditioning == "flow" else None)

    def mutate(key, x, lp, ll, lq, beta, kernel_params, flow_params):
        flow_params = _centre_space(flow, flow_params, x)
        u, log_det_to = map_batches(lambda x: to_space(flow_params, x), x,
                                    config.batch_size)

        def unbatched_log_density(u):
            x, log_det = from_space(flow_params, u)
            lq = (None if latent_log_q is None
                  else latent_log_q(flow_params, u, x, log_det))
            lp, ll, lq, undefined = _densities(log_likelihood_fn, log_prior_fn, flow,
                                               flow_params, x, log_q=lq)
            logp = _sanitise(tempered_log_density(beta, lp, ll, lq) + log_det)
            # NaN tells the kernel that the user's density is undefined here
            # (rejected like -inf, and counted).
            logp = jnp.where(undefined, jnp.nan, logp)
            return logp, _Aux(x, lp, ll, lq)

        def log_density_fn(u):
            return map_batches(unbatched_log_density, u, config.batch_size)

        # log|dx/du| at u is minus log|du/dx| at x: no pass back is needed.
        logp0 = _sanitise(tempered_log_density(beta, lp, ll, lq) - log_det_to)
        kstate = KernelState(u, logp0, _Aux(x, lp, ll, lq), None)
        extra_evals = 0
        if kernel.uses_grad:
            kstate = kernel.prepare(kstate, log_density_fn)
            extra_evals = 1
        kernel_params = kernel.fit(kernel_params, u)
        # Stopping rule of the adaptive length: the particles must have
        # forgotten both where they were (the correlation of each coordinate
        # with its start, averaged over coordinates) and how they were weighted
        # (the correlation of the tempering potential log pi + log L - log q,
        # whose values set the next weights, with its start). A radius-like
        # quantity such as the potential mixes more slowly than single
        # coordinates in many dimensions; stopping on the coordinates alone
        # leaves the next increment biased by several of its errors in 20-d.
        g_start = lp + ll - lq
        features = _mixing_features(flow, flow_params)
        start = features(u)

        def decorrelation(pos, aux):
            g = aux.log_prior + aux.log_likelihood - aux.log_q
            ok = jnp.isfinite(g_start) & jnp.isfinite(g)
            return jnp.maximum(jnp.mean(_correlation(start, features(pos))),
                               _correlation(g_start[:, None], g[:, None], ok)[0])

        cap = config.mcmc_step_cap(x.shape[-1])

        def cond(carry):
            i, _, _, _, _, corr, _ = carry
            if config.n_mcmc_steps is not None:
                return i < config.n_mcmc_steps
            return (i < cap) & (
                (i < config.min_mcmc_steps) | (corr > config.decorrelation_threshold))

        def body(carry):
            i, key, kstate, kparams, acc_sum, _, n_invalid = carry
            key, key_step = jax.random.split(key)
            kstate, kinfo = kernel.step(key_step, kstate, log_density_fn, kparams)
            kparams = kernel.adapt(kparams, kinfo.acceptance)
            return (i + 1, key, kstate, kparams, acc_sum + kinfo.acceptance,
                    decorrelation(kstate.position, kstate.aux),
                    n_invalid + jnp.asarray(kinfo.n_invalid, jnp.int32))

        init = (jnp.int32(0), key, kstate, kernel_params, jnp.zeros((), x.dtype),
                jnp.ones((), x.dtype), jnp.int32(0))
        n_sweeps, _, kstate, kernel_params, acc_sum, corr, n_invalid = (
            jax.lax.while_loop(cond, body, init))
        acceptance = acc_sum / jnp.maximum(n_sweeps, 1)
        n_evals = (n_sweeps + extra_evals) * evaluated_rows(x.shape[0],
                                                             config.batch_size)
        return (kstate.aux, kernel_params, acceptance, n_sweeps, corr, n_evals,
                n_invalid)

    return compact_draws(mutate)


def make_step(config: SMCConfig, log_likelihood_fn, log_prior_fn, flow):
    """Build the pure ``step(state, flow_params) -> (state, info)``.

    Parameters
    ----------
    config
        Static settings.
    log_likelihood_fn, log_prior_fn
        Batched log-densities ``(n, d) -> (n,)``, JAX-traceable.
    flow
        An object with ``log_prob(params, x)`` and the maps of the chosen
        preconditioning (``to_unbounded``/``from_unbounded`` or
        ``to_latent``/``from_latent``), e.g. :class:`aspire_jax.flows.Flow`.

    Returns
    -------
    Callable
        ``step(state, flow_params) -> (state, info)``. A state with beta = 1
        is returned unchanged apart from its status.
    """
    log_likelihood_fn = _check_batched(log_likelihood_fn, "log_likelihood")
    log_prior_fn = _check_batched(log_prior_fn, "log_prior")
    resample_fn = get_resampler(config.resampling)
    mutate = make_mutation(config, log_likelihood_fn, log_prior_fn, flow)
    n = config.n_particles

    def step(state: SMCState, flow_params) -> tuple[SMCState, SMCInfo]:
        key, key_resample, key_mutate = jax.random.split(state.key, 3)

        log_ratio = state.log_prior + state.log_likelihood - state.log_q
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        new_beta, target, failed, efficiency = _choose_step(config, state,
                                                             log_ratio)
        delta = new_beta - state.beta
        lw = state.log_weights + incremental_log_weights(delta, log_ratio)
        log_inc = logsumexp(lw)
        w_rel = jnp.exp(incremental_log_weights(delta, log_ratio) - log_inc)
        var_inc = jnp.sum(jnp.exp(2 * state.log_weights) * (w_rel - 1.0) ** 2)
        log_weights = lw - log_inc
        ess = 1.0 / jnp.sum(jnp.exp(2 * log_weights))

        if config.resample_threshold is None:
            resampled = jnp.asarray(True)
        else:
            resampled = ess < config.resample_threshold * n
        ancestors = resample_fn(key_resample, jnp.exp(log_weights), n)
        idx = jnp.where(resampled, ancestors, jnp.arange(n, dtype=ancestors.dtype))
        x, lp, ll, lq = tree_index(
            (state.x, state.log_prior, state.log_likelihood, state.log_q), idx)
        log_weights = jnp.where(resampled, jnp.full_like(log_weights, -jnp.log(n)),
                                log_weights)

        aux, kparams, acceptance, n_sweeps, corr, n_evals, n_invalid = mutate(
            key_mutate, x, lp, ll, lq, new_beta, state.kernel_params, flow_params)

        log_evidence = state.log_evidence + log_inc
        log_evidence_var = state.log_evidence_var + var_inc
        status = jnp.where(new_beta >= 1.0, Status.CONVERGED,
                           jnp.where(delta <= 0, Status.STALLED, Status.RUNNING))
        new_state = SMCState(
            x=aux.x, log_likelihood=aux.log_likelihood, log_prior=aux.log_prior,
            log_q=aux.log_q, log_weights=log_weights, beta=new_beta,
            iteration=state.iteration + 1, log_evidence=log_evidence,
            log_evidence_var=log_evidence_var, key=key, kernel_params=kparams,
            n_evaluations=state.n_evaluations + n_evals.astype(jnp.int32),
            status=status.astype(jnp.int32),
            n_invalid=state.n_invalid + n_invalid)
        info = SMCInfo(
            beta=new_beta, delta_beta=delta, efficiency=efficiency,
            target_efficiency=target, ess=ess, log_evidence_increment=log_inc,
            log_evidence_increment_var=var_inc, log_evidence=log_evidence,
            log_evidence_var=log_evidence_var, resampled=resampled,
            acceptance=acceptance, step_size=_step_size(kparams),
            n_mcmc_steps=n_sweeps, decorrelation=corr,
            n_evaluations=n_evals.astype(jnp.int32), beta_search_failed=failed,
            n_invalid=n_invalid)

        # A finished run is a fixed point: stepping it again changes nothing.
        # (A select, not lax.cond: under a sharded jit a conditional around
        # the step's collectives was seen to deadlock XLA's CPU devices.)
        done = state.beta >= 1.0
        new_state = jax.tree_util.tree_map(
            lambda old, new: jnp.where(done, old, new), state, new_state)
        info = jax.tree_util.tree_map(
            lambda v: jnp.where(done, jnp.zeros_like(v), v), info)
        return new_state, info

    return compact_draws(step)


def _step_size(kernel_params) -> Array:
    return jnp.asarray(getattr(kernel_params, "step_size", 0.0))


def build_smc(config: SMCConfig, log_likelihood_fn, log_prior_fn, flow) -> SMCAlgorithm:
    """Build the ``init`` and ``step`` functions of one configured sampler."""
    init, init_from_particles = make_init(config, log_likelihood_fn, log_prior_fn,
                                          flow)
    step = make_step(config, log_likelihood_fn, log_prior_fn, flow)
    return SMCAlgorithm(init=init, init_from_particles=init_from_particles,
                        step=step, config=config)


def _empty_history(info_shape: SMCInfo, length: int) -> SMCInfo:
    return jax.tree_util.tree_map(
        lambda s: jnp.zeros((length,) + s.shape, s.dtype), info_shape)


def run_device(step: Callable, state: SMCState, flow_params, max_iterations: int):
    """Run ``step`` in a ``lax.while_loop`` until beta = 1 or the cap.

    Returns
    -------
    state, history, n_steps
        The final state, the :class:`SMCInfo` of each iteration stacked in
        buffers padded to ``max_iterations`` (rows past ``n_steps`` are zero),
        and the number of iterations taken in this call.

    Notes
    -----
    No host round trip happens inside; the whole run is one XLA program.
    A run that hits the cap has ``status == Status.ITERATION_LIMIT``.
    """
    info_shape = jax.eval_shape(step, state, flow_params)[1]
    history = _empty_history(info_shape, max_iterations)

    def cond(carry):
        state, _, i = carry
        return (state.beta < 1.0) & (i < max_iterations) & (
            state.status != Status.STALLED)

    def body(carry):
        state, history, i = carry
        state, info = step(state, flow_params)
        history = jax.tree_util.tree_map(
            lambda h, v: jax.lax.dynamic_update_index_in_dim(h, v, i, 0), history, info)
        return state, history, i + 1

    state, history, n_steps = jax.lax.while_loop(
        cond, body, (state, history, jnp.int32(0)))
    status = jnp.where((state.beta < 1.0) & (state.status == Status.RUNNING),
                       Status.ITERATION_LIMIT, state.status)
    return state.replace(status=status.astype(jnp.int32)), history, n_steps


def run_host(step: Callable, state: SMCState, flow_params, max_iterations: int,
             callback: Callable[[SMCState, Any], Any] | None = None):
    """Run a (jitted) ``step`` from Python, one iteration per call.

    ``callback(state, info)`` is called on the host after each iteration (for
    checkpoints, logging and progress); the returned history is a list of
    :class:`SMCInfo` moved to the host.
    """
    history = []
    for _ in range(max_iterations):
        if bool(state.beta >= 1.0) or int(state.status) == Status.STALLED:
            break
        state, info = step(state, flow_params)
        info = jax.device_get(info)
        history.append(info)
        if callback is not None:
            callback(state, info)
    if float(state.beta) < 1.0 and int(state.status) == Status.RUNNING:
        state = state.replace(status=jnp.asarray(Status.ITERATION_LIMIT, jnp.int32))
    return state, history
