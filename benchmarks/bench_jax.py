"""Run aspire_jax and blackjax on one benchmark problem (a worker process).

Executed by ``run.py`` with the main environment's python::

    python benchmarks/bench_jax.py SPEC.json OUT.json

One process serves one problem and every peer and seed asked for, so that
``getrusage(RUSAGE_SELF).ru_maxrss`` (reported as the peak resident memory)
belongs to that problem, and so that compile times are those of a fresh
process. Each SMC program is compiled once ahead of time
(``jit(...).lower(...).compile()``; that time is the *first compile*), then
called once with a throw-away key (the *first call*, which also pays for
the first allocation of every buffer) and then once per seed with the seed's
key and flow parameters (the *sampling* time, steady state). The flow's
training step is compiled by a one-epoch warm-up fit, which is counted as
compile time too, so the fit times of all seeds are warm.

Warm cache
----------
The worker points JAX's persistent compilation cache at an empty temporary
folder, so the compile above is cold and fills it. After the timed calls
every in-memory cache is dropped (``jax.clear_caches()``) and the program is
lowered and compiled again: that second time (``t_compile_cached``) is what a
user pays on a later run of the same shapes with
``aspire_jax.enable_compilation_cache()``; the one-epoch warm-up fit is timed
again the same way (``t_compile_fit_cached``).

Peers
-----
``aspire_jax``
    Adaptive-tempered SMC with the defaults (t-pCN, adaptive MCMC length,
    the defensive reference of the facade's default ``defensive_weight=0.1``
    around the reference that its default ``reference="auto"`` picks and
    the move space of its default ``preconditioning="auto"``, both from the
    flow's held-out gain over a Gaussian: the fitted flow, or the Gaussian of
    the same training samples where the flow gains no more than 0.1 nats per
    dimension), device driver.
``aspire_jax_fixed``
    The same with a fixed ``n_mcmc_steps = 5 * dims`` (upstream's default
    length), to show what the adaptive length saves.
``aspire_jax_flowspace``
    The same as ``aspire_jax`` with ``reference="flow"`` and
    ``preconditioning="flow"`` whatever the flow: the run starts from the
    flow and moves in its latent space, as upstream's does.
``aspire_jax_is``
    Importance sampling from the fitted flow.
``aspire_jax_rwmh``
    The engine on blackjax's terms: the tempering path starts at the Gaussian
    fitted to the earlier samples (not the flow), moves are random-walk
    Metropolis in native coordinates with proposal covariance
    ``(2.38^2 / d)`` times the particle covariance, the scale frozen, and a
    fixed number of MCMC steps.
``blackjax``
    ``blackjax.inner_kernel_tuning`` over ``blackjax.adaptive_tempered_smc``
    with the additive random-walk (rmh) kernel, on the same path and with the
    same proposal rule (covariance re-estimated from the particles each
    iteration), systematic resampling and target ESS 0.5.
"""

from __future__ import annotations

import json
import math
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import versions, weighted_moments  # noqa: E402
from problems import get_problem  # noqa: E402

__all__ = ["GaussianProposal", "run_peers", "run_scaling", "main"]

JAX_PEERS = ("aspire_jax", "aspire_jax_fixed", "aspire_jax_flowspace",
             "aspire_jax_is", "aspire_jax_rwmh", "blackjax")
FLOW_PEERS = ("aspire_jax", "aspire_jax_fixed", "aspire_jax_flowspace",
              "aspire_jax_is")


def _versions() -> dict:
    return versions(("aspire-jax", "jax", "jaxlib", "flax", "distrax", "optax",
                     "blackjax", "numpy"))


def _timed(fn, *args):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


class GaussianProposal:
    """A multivariate normal with the interface the SMC engine expects of a flow.

    Parameters are the pair ``(mean (d,), chol (d, d))``. Only the methods that
    ``preconditioning="none"`` needs are provided.
    """

    def __init__(self, dims: int):
        self.dims = dims

    def log_prob(self, params, x):
        import jax.numpy as jnp
        from jax.scipy.linalg import solve_triangular

        mean, chol = params
        z = solve_triangular(chol, (x - mean).T, lower=True).T
        return (-0.5 * jnp.sum(z**2, axis=-1) - jnp.sum(jnp.log(jnp.diag(chol)))
                - 0.5 * self.dims * math.log(2 * math.pi))

    def sample_and_log_prob(self, params, key, n):
        import jax

        mean, chol = params
        z = jax.random.normal(key, (n, self.dims), mean.dtype)
        x = mean + z @ chol.T
        return x, self.log_prob(params, x)

    @staticmethod
    def fit(x):
        """``(mean, chol)`` of the samples ``x`` as float32 arrays."""
        import jax.numpy as jnp

        x = np.asarray(x, float)
        cov = np.cov(x.T) + 1e-9 * np.eye(x.shape[1])
        return (jnp.asarray(x.mean(0), jnp.float32),
                jnp.asarray(np.linalg.cholesky(cov), jnp.float32))


def _batched(problem, name):
    import jax.numpy as jnp

    if problem.name == "diabetes":
        from aspire_jax.cases import load_case

        return getattr(load_case("diabetes_linreg"), name)
    fn = getattr(problem, name)
    return lambda x: fn(x, jnp)


def _record(peer, seed, n, **kw):
    rec = dict(sampler=peer, seed=int(seed), n_particles=int(n))
    for k, v in kw.items():
        rec[k] = v.tolist() if isinstance(v, np.ndarray) else v
    return rec


def _fit_flow(problem, x_train, seed, fit_kwargs, ll, lp):
    from aspire_jax.aspire import Aspire

    aspire = Aspire(log_likelihood=ll, log_prior=lp, dims=problem.dims,
                    parameters=list(problem.parameters),
                    prior_bounds=np.asarray(problem.prior_bounds, float))
    t0 = time.perf_counter()
    aspire.fit(x_train.astype(np.float32), key=seed, progress=False, **fit_kwargs)
    return aspire, time.perf_counter() - t0


def _likelihood_time(ll, x, repeats=20):
    """Median wall time of one jitted batch call of the likelihood on ``x``."""
    import jax

    f = jax.jit(ll)
    jax.block_until_ready(f(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _enable_cache(folder):
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _compile(prog, *args):
    """Cold ahead-of-time compile; return (compiled, seconds)."""
    t0 = time.perf_counter()
    compiled = prog.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _compile_cached(prog, *args):
    """Seconds to lower and compile ``prog`` again once every in-memory cache
    is dropped, i.e. from the persistent compilation cache alone."""
    import jax

    jax.clear_caches()
    return _compile(prog, *args)[1]


def _first_call(compiled, *args):
    """Wall time of the first (untimed-in-``t_sample``) call of ``compiled``."""
    return _timed(compiled, *args)[1]


def _smc_program(config, ll, lp, flow):
    import jax

    from aspire_jax.smc.step import build_smc, run_device

    smc = build_smc(config, ll, lp, flow)
    cap = config.iteration_cap

    def run(key, flow_params):
        state = smc.init(key, flow_params)
        state, history, n_steps = run_device(smc.step, state, flow_params, cap)
        return state, history, n_steps

    return jax.jit(run)


def _smc_record(peer, seed, n, compiled, key, flow_params, problem, t_fit,
                t_compile, ll, like_time):
    (state, history, n_steps), t_sample = _timed(compiled, key, flow_params)
    n_steps = int(n_steps)
    hist = {f: np.asarray(v)[:n_steps] for f, v in history._asdict().items()}
    x = np.asarray(state.x)
    mean, std, w = weighted_moments(x, np.asarray(state.log_weights))
    n_evals = int(state.n_evaluations)
    t_like = like_time * n_evals / n
    extra = {}
    if problem.mode_indicator is not None:
        extra["mode_weight"] = float(w @ problem.mode_indicator(x))
    return _record(
        peer, seed, n, t_fit=t_fit, t_compile=t_compile, t_sample=t_sample,
        n_evaluations=n_evals, n_iterations=n_steps,
        log_evidence=float(state.log_evidence),
        log_evidence_error=float(np.sqrt(max(float(state.log_evidence_var), 0.0))),
        mean=mean, std=std, ess=float(hist["ess"][-1]) if n_steps else float("nan"),
        mcmc_steps_per_iteration=hist["n_mcmc_steps"].tolist(),
        status=int(state.status), t_likelihood=t_like,
        outside_likelihood_share=max(0.0, 1.0 - t_like / t_sample), **extra)


def _run_flow_peers(problem, peers, seeds, trains, n, fit_kwargs, records):
    import jax

    from aspire_jax.aspire import DEFENSIVE_WEIGHT
    from aspire_jax.flows import GaussianReference, defensive
    from aspire_jax.smc.importance import make_importance_sampler
    from aspire_jax.smc.state import SMCConfig

    import aspire_jax.aspire  # noqa: F401

    ll, lp = _batched(problem, "log_likelihood"), _batched(problem, "log_prior")
    # Warm-up fit: compiles the training epoch once for these shapes. The
    # package is imported above, outside the clock, as upstream_runner.py
    # imports aspire and torch before its own.
    t0 = time.perf_counter()
    _fit_flow(problem, trains[0], 0, dict(fit_kwargs, n_epochs=1), ll, lp)
    t_compile_fit = time.perf_counter() - t0

    fitted = [_fit_flow(problem, x, int(s), fit_kwargs, ll, lp)
              for s, x in zip(seeds, trains)]
    flow = fitted[0][0].flow
    x_probe = np.asarray(fitted[0][0].sample_flow(n, key=0).x)
    like_time = _likelihood_time(ll, jax.numpy.asarray(x_probe, jax.numpy.float32))
    # The move space the facade's default (preconditioning="auto") picks for
    # the first seed's flow; the fixed-length peer uses the same space.
    # The choices cost a likelihood evaluation per held-out sample (one test
    # for both); each seed's run would pay it, so the default peer is charged
    # its evaluations and its time (in the fit).
    # The reference the facade's default (reference="auto") picks; with the
    # Gaussian, the facade moves in the standard space.
    t0 = time.perf_counter()
    reference = fitted[0][0].auto_reference()
    space = ("standard" if reference == "gaussian"
             else fitted[0][0].auto_preconditioning())
    t_auto = time.perf_counter() - t0
    n_auto = fitted[0][0]._uncounted_evaluations
    configs = {"aspire_jax": SMCConfig(n_particles=n, preconditioning=space),
               "aspire_jax_fixed": SMCConfig(n_particles=n, preconditioning=space,
                                             n_mcmc_steps=5 * problem.dims),
               "aspire_jax_flowspace": SMCConfig(n_particles=n,
                                                 preconditioning="flow")}
    timings = {}
    for peer in peers:
        keys = [jax.random.key(1000 + int(s)) for s in seeds]
        if peer == "aspire_jax_is":
            prog = jax.jit(make_importance_sampler(ll, lp, flow, n))
        else:
            base = (flow if peer == "aspire_jax_flowspace" or reference == "flow"
                    else GaussianReference(flow))
            # The facade's default: a share of the draws from a heavy-tailed
            # copy of the reference.
            prog = _smc_program(configs[peer], ll, lp,
                                defensive(base, DEFENSIVE_WEIGHT))
        compiled, t_compile = _compile(prog, keys[0], fitted[0][0].flow_params)
        t_first = _first_call(compiled, jax.random.key(999), fitted[0][0].flow_params)
        timings[peer] = (prog, t_compile, t_first, len(records))
        for seed, key, (aspire, t_fit) in zip(seeds, keys, fitted):
            try:
                if peer == "aspire_jax_is":
                    r, t_sample = _timed(compiled, key, aspire.flow_params)
                    mean, std, w = weighted_moments(r.x, r.log_weights)
                    extra = {}
                    if problem.mode_indicator is not None:
                        extra["mode_weight"] = float(
                            w @ problem.mode_indicator(np.asarray(r.x)))
                    rec = _record(
                        peer, seed, n, t_fit=t_fit, t_compile=t_compile,
                        t_sample=t_sample, n_evaluations=int(r.n_evaluations),
                        n_iterations=1, log_evidence=float(r.log_evidence),
                        log_evidence_error=float(np.sqrt(float(r.log_evidence_var))),
                        mean=mean, std=std, ess=float(r.ess), **extra)
                else:
                    charged = peer == "aspire_jax" and n_auto
                    rec = _smc_record(peer, seed, n, compiled, key, aspire.flow_params,
                                      problem, t_fit + (t_auto if charged else 0.0),
                                      t_compile, ll, like_time)
                    if charged:
                        rec["n_evaluations"] += n_auto
                        rec["auto_space_evaluations"] = n_auto
            except Exception as exc:  # report and carry on
                rec = dict(sampler=peer, seed=int(seed), failed=True,
                           error=f"{type(exc).__name__}: {exc}")
            rec["t_compile_fit"] = t_compile_fit
            rec["t_first_call"] = t_first
            if peer in configs:
                rec["preconditioning"] = configs[peer].preconditioning
                rec["reference"] = ("flow" if peer == "aspire_jax_flowspace"
                                    else reference)
                rec["flow_gain_per_dim"] = (
                    aspire.flow_history.gain_over_gaussian() / problem.dims)
            records.append(rec)
            _log(problem, rec)
    # Warm-cache timings, after every timed call so they cannot disturb them.
    t0 = time.perf_counter()
    jax.clear_caches()
    _fit_flow(problem, trains[0], 0, dict(fit_kwargs, n_epochs=1), ll, lp)
    t_fit_cached = time.perf_counter() - t0
    for peer, (prog, _, _, start) in timings.items():
        t_cached = _compile_cached(prog, jax.random.key(1000),
                                   fitted[0][0].flow_params)
        for rec in records[start:start + len(seeds)]:
            rec["t_compile_cached"] = t_cached
            rec["t_compile_fit_cached"] = t_fit_cached


def _blackjax_program(problem, ll, lp, n, n_mcmc, target_ess=0.5):
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.smc import resampling

    d = problem.dims
    proposal = GaussianProposal(d)
    rw_kernel = blackjax.additive_step_random_walk.build_kernel()
    scale = 2.38 / math.sqrt(d)

    def step_fn(key, state, logdensity_fn, chol):
        return rw_kernel(key, state, logdensity_fn,
                         blackjax.mcmc.random_walk.normal(chol))

    def update_fn(key, state, info):
        del key, info
        x, w = state.particles, state.weights
        mean = w @ x
        c = x - mean
        cov = (c * w[:, None]).T @ c
        cov = cov + 1e-6 * jnp.trace(cov) / d * jnp.eye(d, dtype=x.dtype)
        return dict(chol=(scale * jnp.linalg.cholesky(cov))[None])

    def run(key, q_params):
        def logprior_fn(x):
            return proposal.log_prob(q_params, x[None])[0]

        def loglikelihood_fn(x):
            xb = x[None]
            return (lp(xb)[0] + ll(xb)[0]) - proposal.log_prob(q_params, xb)[0]

        key_init, key_run = jax.random.split(key)
        x0, _ = proposal.sample_and_log_prob(q_params, key_init, n)
        _, chol0 = q_params
        algo = blackjax.inner_kernel_tuning(
            smc_algorithm=blackjax.adaptive_tempered_smc, logprior_fn=logprior_fn,
            loglikelihood_fn=loglikelihood_fn, mcmc_step_fn=step_fn,
            mcmc_init_fn=blackjax.additive_step_random_walk.init,
            resampling_fn=resampling.systematic, mcmc_parameter_update_fn=update_fn,
            initial_parameter_value=dict(chol=(scale * chol0)[None]),
            num_mcmc_steps=n_mcmc, target_ess=target_ess)
        state = algo.init(x0)

        def cond(carry):
            state, *_ = carry
            return (state.sampler_state.tempering_param < 1.0) & (carry[2] < 500)

        def body(carry):
            state, key, i, log_z = carry
            key, sub = jax.random.split(key)
            state, info = algo.step(sub, state)
            return state, key, i + 1, log_z + info.log_likelihood_increment

        state, _, n_iter, log_z = jax.lax.while_loop(
            cond, body, (state, key_run, jnp.int32(0), jnp.zeros((), x0.dtype)))
        return state.sampler_state.particles, state.sampler_state.weights, n_iter, log_z

    return jax.jit(run)


def _run_gaussian_peers(problem, peers, seeds, trains, n, n_mcmc, records):
    import jax

    from aspire_jax.kernels import RWMHSettings
    from aspire_jax.smc.state import SMCConfig

    ll, lp = _batched(problem, "log_likelihood"), _batched(problem, "log_prior")
    q_params = [GaussianProposal.fit(x) for x in trains]
    proposal = GaussianProposal(problem.dims)
    config = SMCConfig(n_particles=n, kernel="rwmh", preconditioning="none",
                       n_mcmc_steps=n_mcmc,
                       kernel_settings=RWMHSettings(adaptation_rate=0.0))
    for peer in peers:
        keys = [jax.random.key(2000 + int(s)) for s in seeds]
        if peer == "blackjax":
            prog = _blackjax_program(problem, ll, lp, n, n_mcmc)
        else:
            prog = _smc_program(config, ll, lp, proposal)
        compiled, t_compile = _compile(prog, keys[0], q_params[0])
        t_first = _first_call(compiled, jax.random.key(999), q_params[0])
        start = len(records)
        like_time = None
        for seed, key, qp in zip(seeds, keys, q_params):
            try:
                if peer == "blackjax":
                    (x, w, n_iter, log_z), t_sample = _timed(compiled, key, qp)
                    x = np.asarray(x)
                    mean, std, wn = weighted_moments(x, np.log(np.asarray(w)))
                    n_iter = int(n_iter)
                    extra = {}
                    if problem.mode_indicator is not None:
                        extra["mode_weight"] = float(wn @ problem.mode_indicator(x))
                    rec = _record(
                        peer, seed, n, t_fit=0.0, t_compile=t_compile,
                        t_sample=t_sample,
                        # per iteration and particle: the ESS search, the
                        # weights, the MCMC init and n_mcmc proposals
                        n_evaluations=n_iter * n * (n_mcmc + 3),
                        n_iterations=n_iter, log_evidence=float(log_z),
                        log_evidence_error=None, mean=mean, std=std,
                        ess=float(1.0 / np.sum(wn**2)), **extra)
                else:
                    if like_time is None:
                        xp = np.asarray(proposal.sample_and_log_prob(
                            qp, jax.random.key(0), n)[0])
                        like_time = _likelihood_time(ll, jax.numpy.asarray(xp))
                    rec = _smc_record(peer, seed, n, compiled, key, qp, problem, 0.0,
                                      t_compile, ll, like_time)
            except Exception as exc:  # report and carry on
                rec = dict(sampler=peer, seed=int(seed), failed=True,
                           error=f"{type(exc).__name__}: {exc}")
            rec["t_first_call"] = t_first
            records.append(rec)
            _log(problem, rec)
        t_cached = _compile_cached(prog, keys[0], q_params[0])
        for rec in records[start:]:
            rec["t_compile_cached"] = t_cached


def _log(problem, rec):
    keys = ("t_fit", "t_compile", "t_sample", "n_iterations", "log_evidence", "error")
    print(f"{problem.name} {rec['sampler']} seed {rec['seed']}: "
          f"{ {k: rec.get(k) for k in keys if k in rec} }", file=sys.stderr,
          flush=True)


def run_peers(spec: dict) -> dict:
    """Run the peers of ``spec`` on its problem; return JSON-able results."""
    problem = get_problem(spec["problem"])
    seeds = [int(s) for s in spec["seeds"]]
    trains = [np.load(p, allow_pickle=False) for p in spec["train_files"]]
    n = int(spec["n_particles"])
    peers = list(spec["peers"])
    records: list = []
    import tempfile

    cache = tempfile.TemporaryDirectory(prefix="aspire_jax_bench_cache_")
    _enable_cache(cache.name)
    flow_peers = [p for p in peers if p in FLOW_PEERS]
    gauss_peers = [p for p in peers if p in ("aspire_jax_rwmh", "blackjax")]
    if flow_peers:
        _run_flow_peers(problem, flow_peers, seeds, trains, n,
                        dict(spec.get("fit_kwargs", {})), records)
    if gauss_peers:
        _run_gaussian_peers(problem, gauss_peers, seeds, trains, n,
                            int(spec.get("n_mcmc_rw", 5 * problem.dims)), records)
    cache.cleanup()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(problem=problem.name, records=records, peak_rss_mib=rss_kib / 1024.0,
                versions=_versions())


def run_scaling(spec: dict) -> dict:
    """Wall time of one aspire_jax SMC step against particle count and dimension.

    A standard-normal likelihood and prior, the default flow (untrained: its
    cost does not depend on its weights) and a fixed number of MCMC sweeps per
    step, so every step does the same work.
    """
    import jax
    import jax.numpy as jnp

    from aspire_jax.flows import Flow, FlowConfig
    from aspire_jax.smc.state import SMCConfig
    from aspire_jax.smc.step import build_smc

    n_sweeps = int(spec.get("n_mcmc_steps", 10))
    rows = []
    for d in spec["dims"]:
        def ll(x):
            return -0.5 * jnp.sum((x - 0.5) ** 2 / 0.25, axis=-1)

        def lp(x):
            return -0.5 * jnp.sum(x**2, axis=-1) - 0.5 * d * math.log(2 * math.pi)

        flow = Flow(FlowConfig(n_dims=d))
        rng = np.random.default_rng(0)
        params = flow.init(jax.random.key(0),
                           rng.standard_normal((512, d)).astype(np.float32))
        for n in spec["n_particles"]:
            config = SMCConfig(n_particles=int(n), n_mcmc_steps=n_sweeps,
                               max_beta_step=0.05)
            smc = build_smc(config, ll, lp, flow)
            init = jax.jit(smc.init)
            step = jax.jit(smc.step)
            state = jax.block_until_ready(init(jax.random.key(1), params))
            t0 = time.perf_counter()
            compiled = step.lower(state, params).compile()
            t_compile = time.perf_counter() - t0
            state, _ = jax.block_until_ready(compiled(state, params))
            times = []
            for _ in range(int(spec.get("repeats", 3))):
                t0 = time.perf_counter()
                state, _ = jax.block_until_ready(compiled(state, params))
                times.append(time.perf_counter() - t0)
            t_step = float(np.median(times))
            rows.append(dict(dims=int(d), n_particles=int(n), n_mcmc_steps=n_sweeps,
                             t_step=t_step, t_compile=t_compile,
                             t_per_particle_sweep_us=1e6 * t_step / (n * n_sweeps)))
            print(f"scaling d={d} n={n}: step {t_step:.4f}s compile {t_compile:.1f}s",
                  file=sys.stderr, flush=True)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(rows=rows, peak_rss_mib=rss_kib / 1024.0, versions=_versions())


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``bench_jax.py SPEC.json OUT.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(pathlib.Path(argv[0]).read_text())
    out = run_scaling(spec) if spec.get("kind") == "scaling" else run_peers(spec)
    pathlib.Path(argv[1]).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
