"""Subprocess for the sharding tests: SMC on virtual CPU devices.

    python _sharded_worker.py f32|f64 CACHE_DIR
    python _sharded_worker.py host CACHE_DIR PROCESS_ID PORT OUT_DIR

XLA reads the virtual device count once, when jax is first imported, so this
runs in its own interpreter. It prints one JSON object on the last line of
stdout; the assertions live in ``test_sharding.py``. ``f32`` and ``f64`` use
8 devices (``f64`` turns on float64 in this process only). ``host`` is one of
two processes joined by ``jax.distributed.initialize`` through a coordinator
on 127.0.0.1:PORT, each with 2 devices. CACHE_DIR holds XLA's persistent
compilation cache, so the facade's runs reuse the programs compiled here for
the same configuration instead of compiling them again.
"""

import os
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else "f32"
N_DEVICES = 2 if MODE == "host" else 8
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={N_DEVICES}")
os.environ["JAX_PLATFORMS"] = "cpu"
_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_TESTS, os.path.dirname(_TESTS)]

import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

import problems  # noqa: E402
from gaussian_flow import GaussianFlow, GaussianParams  # noqa: E402

DIMS = 4
N = 2048
BATCH = 256
OPTIONS = dict(kernel="rwmh", n_mcmc_steps=2, preconditioning="none",
               target_efficiency=0.9)
RESUME_AT = 2
COUNTS = {"traces": 0, "lowerings": 0}


def log_likelihood(x):
    COUNTS["traces"] += 1
    return problems.log_likelihood(x)


def log_prior(x):
    return problems.log_prior(x)


def _on_event(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        COUNTS["lowerings"] += 1


@dataclasses.dataclass(frozen=True)
class StandInFlow(GaussianFlow):
    """The Gaussian stand-in with the ``sample`` method the facade probes with."""

    def sample(self, p, key, n):
        return self.sample_and_log_prob(p, key, n)[0]


def flow_params(dtype):
    # The earlier posterior: shifted by 0.8 sd and 1.5 times too wide.
    mean, sd = problems.posterior_moments()
    m = jnp.full((DIMS,), mean - 0.8 * sd, dtype)
    return GaussianParams(m, jnp.eye(DIMS, dtype=dtype) * (1.5 * sd))


def _np(a):
    return np.asarray(jax.device_get(a))


def _rel(a, b):
    a, b = _np(a).astype(np.float64), _np(b).astype(np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30)))


def _same(tree_a, tree_b):
    """Bitwise equality of two state pytrees (keys compared by their data)."""
    def data(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return _np(leaf)

    la, lb = jax.tree_util.tree_leaves(tree_a), jax.tree_util.tree_leaves(tree_b)
    return len(la) == len(lb) and all(
        np.array_equal(data(a), data(b)) for a, b in zip(la, lb))


def _summary(state, betas):
    return dict(x=_np(state.x).tolist(), log_evidence=float(state.log_evidence),
                log_evidence_var=float(state.log_evidence_var), betas=betas,
                iteration=int(state.iteration))


def _run(step, state, params, limit=60):
    betas = []
    while float(state.beta) < 1.0 and len(betas) < limit:
        state, info = step(state, params)
        betas.append(float(info.beta))
    return state, betas


def primitives(mesh, dtype):
    """The step's global reductions on split inputs, against one device."""
    from aspire_jax.kernels import build_kernel
    from aspire_jax.kernels.base import weighted_mean_cov
    from aspire_jax.errors import ValidationError
    from aspire_jax.sharding import particle_sharding, state_shardings
    from aspire_jax.smc.resampling import systematic
    from aspire_jax.smc.tempering import conditional_efficiency

    split = particle_sharding(mesh)
    keys = jax.random.split(jax.random.key(3), 4)
    log_ratio = 10.0 * jax.random.normal(keys[0], (N,), dtype)
    log_w = jax.random.normal(keys[1], (N,), dtype)
    log_w = log_w - logsumexp(log_w)
    u = jax.random.normal(keys[2], (N, DIMS), dtype) * jnp.arange(1, DIMS + 1)
    tpcn = build_kernel("tpcn")
    params0 = tpcn.init(u)

    def reductions(log_w, log_ratio, u):
        w = jnp.exp(log_w)
        mean, cov = weighted_mean_cov(u)
        return dict(logsumexp=logsumexp(log_w + log_ratio),
                    ess=1.0 / jnp.sum(w**2),
                    cess=conditional_efficiency(0.05, log_w, log_ratio),
                    mean=mean, cov=cov, t_fit_chol=tpcn.fit(params0, u).chol,
                    ancestors=systematic(keys[3], w, N))

    one = jax.jit(reductions)(log_w, log_ratio, u)
    many = jax.jit(reductions)(*jax.device_put((log_w, log_ratio, u), split))
    out = {k: _rel(one[k], many[k]) for k in one if k != "ancestors"}
    out["ancestors_differing"] = int(np.sum(_np(one["ancestors"])
                                            != _np(many["ancestors"])))
    draw = jax.jit(lambda k: jax.random.normal(k, (N, DIMS), dtype),
                   out_shardings=split)
    out["normal_draws_bitwise"] = bool(np.array_equal(
        _np(draw(keys[0])), _np(jax.random.normal(keys[0], (N, DIMS), dtype))))
    try:
        state_shardings({"x": jax.ShapeDtypeStruct((N - 1, DIMS), dtype)}, mesh,
                        n_particles=N - 1)
    except ValidationError as exc:
        out["indivisible_error"] = str(exc)
    return out


def _checkpoint_at(step, state, params, iteration):
    while int(state.iteration) < iteration:
        state, _ = step(state, params)
    return state


def engine_runs(mesh, dtype, resumes: bool):
    """One-device and split runs of the engine; with ``resumes``, checkpoints."""
    from aspire_jax.io import state_from_bytes, state_to_bytes
    from aspire_jax.sharding import (host_state, jit_sharded_init, jit_sharded_step,
                                     replicate, shard_state, sharded_template,
                                     unshard_state)
    from aspire_jax.smc.state import SMCConfig
    from aspire_jax.smc.step import build_smc

    flow = StandInFlow(DIMS)
    params = flow_params(dtype)
    key = jax.random.key(0)
    out = {}

    smc = build_smc(SMCConfig(n_particles=N, **OPTIONS), log_likelihood, log_prior,
                    flow)
    template = jax.eval_shape(smc.init, key, params)
    params_m = replicate(params, mesh)
    step_1 = jax.jit(smc.step)
    step_m = jit_sharded_step(smc.step, template, mesh)

    s0 = jax.jit(smc.init)(key, params)
    s0_m = jit_sharded_init(smc.init, template, mesh)(key, params_m)
    out["init_x_rel"] = _rel(s0.x, s0_m.x)
    out["init_log_q_rel"] = _rel(s0.log_q, s0_m.log_q)
    out["init_x_spec"] = str(s0_m.x.sharding.spec)

    final_1, betas_1 = _run(step_1, s0, params)
    out["single"] = _summary(final_1, betas_1)

    counts0 = dict(COUNTS)
    state, info = step_m(s0_m, params_m)
    counts1 = dict(COUNTS)
    specs = {str(state.x.sharding.spec)}
    betas = [float(info.beta)]
    at = None
    while float(state.beta) < 1.0 and len(betas) < 60:
        if int(state.iteration) == RESUME_AT:
            at = state
        state, info = step_m(state, params_m)
        betas.append(float(info.beta))
        specs.add(str(state.x.sharding.spec))
    out["sharded"] = _summary(state, betas)
    out["sharded"].update(
        traces_first_call=counts1["traces"] - counts0["traces"],
        lowerings_first_call=counts1["lowerings"] - counts0["lowerings"],
        traces_later_calls=COUNTS["traces"] - counts1["traces"],
        lowerings_later_calls=COUNTS["lowerings"] - counts1["lowerings"],
        x_specs=sorted(specs), key_spec=str(state.key.sharding.spec),
        beta_spec=str(state.beta.sharding.spec))

    # One step from the very same state, split and not.
    state, info = step_m(shard_state(s0, mesh), params_m)
    _, info_1 = step_1(s0, params)
    out["step1"] = {k: [float(getattr(info_1, k)), float(getattr(info, k))]
                    for k in ("beta", "log_evidence", "ess", "acceptance")}

    # batch_size on the split run, its own configuration and program, for the
    # first iterations of the unbatched run.
    smc_b = build_smc(SMCConfig(n_particles=N, batch_size=BATCH, **OPTIONS),
                      log_likelihood, log_prior, flow)
    step_b = jit_sharded_step(smc_b.step, template, mesh)
    batched = _checkpoint_at(step_b, s0_m, params_m, RESUME_AT)
    out["batched"] = dict(_summary(batched, []), same_state=_same(batched, at),
                          unbatched=_summary(at, []))
    if not resumes:
        return out

    # Split -> one device: restore the bytes without a mesh and continue there.
    on_one = state_from_bytes(template, state_to_bytes(host_state(at)))
    # One device -> split: the template carries the shardings.
    at_1 = _checkpoint_at(step_1, s0, params, RESUME_AT)
    on_mesh = state_from_bytes(sharded_template(template, mesh),
                               state_to_bytes(at_1))
    x_spec_on_read = str(on_mesh.x.sharding.spec)
    on_mesh = shard_state(on_mesh, mesh)
    out["resume"] = dict(
        to_one_restored_exactly=_same(on_one, unshard_state(at)),
        to_one_x_device_count=len(on_one.x.sharding.device_set),
        to_mesh_x_spec_on_read=x_spec_on_read,
        to_mesh_x_spec=str(on_mesh.x.sharding.spec),
        to_mesh_key_spec=str(on_mesh.key.sharding.spec),
        to_mesh_restored_exactly=_same(unshard_state(on_mesh), at_1),
        iteration=int(on_mesh.iteration))
    out["continued_on_one"] = _summary(*_run(step_1, on_one, params))
    out["continued_on_mesh"] = _summary(*_run(step_m, on_mesh, params_m))
    return out


def facade_runs(dtype):
    """Fresh and resumed runs through ``Aspire.sample_posterior(mesh=...)``."""
    from aspire_jax import Aspire

    def new_aspire():
        aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=DIMS)
        aspire.flow = StandInFlow(DIMS)
        aspire.flow_params = flow_params(dtype)
        return aspire

    out = {}
    for name, mesh, other in (("mesh", N_DEVICES, None), ("one", None, N_DEVICES)):
        checkpoints = []
        post = new_aspire().sample_posterior(
            N, key=0, mesh=mesh, checkpoint_callback=checkpoints.append, **OPTIONS)
        at = next(c for c in checkpoints if c["iteration"] == RESUME_AT)
        resumed = new_aspire().sample_posterior(resume_from=at, mesh=other)
        out[name] = dict(x=_np(post.x).tolist(),
                         log_evidence=float(post.log_evidence),
                         log_evidence_error=float(post.log_evidence_error))
        out[name + "_resumed"] = dict(x=_np(resumed.x).tolist(),
                                      log_evidence=float(resumed.log_evidence))
    return out


def host_run(process_id, port, out_dir):
    """One of two processes of a multi-process run through the facade."""
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=2, process_id=process_id,
                               initialization_timeout=300)
    from aspire_jax import Aspire
    from aspire_jax.sharding import is_checkpoint_writer, particle_mesh

    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=DIMS)
    aspire.flow = StandInFlow(DIMS)
    aspire.flow_params = flow_params(jnp.float32)
    calls = []
    post = aspire.sample_posterior(
        N, key=0, mesh=particle_mesh(), checkpoint_path=os.path.join(out_dir, "run.h5"),
        checkpoint_save_flow=False, checkpoint_callback=calls.append, **OPTIONS)
    return dict(process_index=jax.process_index(), process_count=jax.process_count(),
                device_count=jax.device_count(),
                local_device_count=jax.local_device_count(),
                writer=is_checkpoint_writer(), callbacks=len(calls),
                x=_np(post.x).tolist(), log_evidence=float(post.log_evidence),
                log_evidence_error=float(post.log_evidence_error))


def main(mode, cache_dir, *host_args):
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    if mode == "f64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if mode == "f64" else jnp.float32
    from aspire_jax.sharding import particle_mesh

    if mode == "host":
        print(json.dumps(host_run(int(host_args[0]), int(host_args[1]),
                                  host_args[2])))
        return
    mesh = particle_mesh(N_DEVICES)
    out = dict(n_devices=jax.device_count(), mode=mode,
               dtype=str(jnp.zeros((), dtype).dtype), seconds={})
    t = time.perf_counter()
    if mode == "f32":
        out["primitives"] = primitives(mesh, dtype)
        out["seconds"]["primitives"] = time.perf_counter() - t
    t = time.perf_counter()
    out.update(engine_runs(mesh, dtype, resumes=mode == "f32"))
    out["seconds"]["engine"] = time.perf_counter() - t
    if mode == "f32":
        t = time.perf_counter()
        out["facade"] = facade_runs(dtype)
        out["seconds"]["facade"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
