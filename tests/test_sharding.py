"""Particles split over devices, batched evaluation, and the checkpoint writer.

The checks on eight devices run in a subprocess (``_sharded_worker.py``),
because XLA fixes the number of virtual CPU devices when jax is first
imported. The rest run here, on the one device of the test process.

What "the same" means under sharding. Random draws are identical bit for
bit (``jax_threefry_partitionable``), and so is every per-particle operation
that does not reduce. Every reduction over particles (log-sum-exp, ESS, the
bisection on beta, the evidence increment, the kernel's mean and covariance)
becomes a sum of per-device partial sums, a different association of the same
terms, and XLA's code for a reduction along a row also depends on how many
rows a device holds, so results agree to a few units in the last place, not
exactly. In float32 those last-place differences are then amplified by the
discontinuous decisions of a run (an ancestor index, a Metropolis accept, a
bisection branch), so two float32 runs agree to rounding at the first
iteration and statistically at the end. In float64 the decisions do not flip
and whole runs agree to ~1e-15, which shows that the only difference is
rounding.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import problems
from aspire_jax import Aspire
from aspire_jax.errors import ValidationError
from aspire_jax.io import (read_checkpoint_bytes, state_dict_from_bytes,
                           state_from_bytes, state_to_bytes)
from aspire_jax.sharding import (as_mesh, host_state, is_checkpoint_writer,
                                 particle_mesh, replicate, shard_state,
                                 sharded_template, state_shardings, unshard_state)
from aspire_jax.smc.state import SMCConfig
from aspire_jax.smc.step import build_smc, evaluate_densities, map_batches
from gaussian_flow import GaussianFlow

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sharded_worker.py")
DIMS = 4
N = 2048
F32_EPS = float(np.finfo(np.float32).eps)


def _worker(mode, request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)
    # XLA's persistent cache: later runs of the suite skip most compilation.
    cache_dir = (cache.mkdir("aspire_jax_xla") if cache is not None
                 else tmp_path_factory.mktemp("xla"))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, WORKER, mode, str(cache_dir)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def f32(request, tmp_path_factory):
    return _worker("f32", request, tmp_path_factory)


@pytest.fixture(scope="module")
def f64(request, tmp_path_factory):
    return _worker("f64", request, tmp_path_factory)


def _x(run):
    return np.asarray(run["x"])


# ------------------------------------------------------------ one device
def _small_smc(**options):
    flow = GaussianFlow(DIMS)
    params = GaussianFlow.params(jnp.zeros(DIMS), jnp.eye(DIMS))
    smc = build_smc(SMCConfig(n_particles=64, **options), problems.log_likelihood,
                    problems.log_prior, flow)
    return smc, params


def test_particle_mesh_counts_and_validation():
    mesh = particle_mesh()
    assert mesh.axis_names == ("particles",)
    assert mesh.size == jax.device_count()
    assert particle_mesh(1).size == 1
    assert particle_mesh(jax.devices()[:1]).size == 1
    for bad in (0, jax.device_count() + 1):
        with pytest.raises(ValidationError, match=str(bad)):
            particle_mesh(bad)
    with pytest.raises(ValidationError, match="sequence of jax devices"):
        particle_mesh([])
    with pytest.raises(ValidationError, match="str"):
        particle_mesh("all")


def test_as_mesh():
    assert as_mesh(None) is None
    assert as_mesh(1).size == 1
    mesh = particle_mesh(1)
    assert as_mesh(mesh) is mesh
    other = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValidationError, match="'particles'"):
        as_mesh(other)
    with pytest.raises(ValidationError, match="float"):
        as_mesh(2.0)


def test_state_shardings_split_particle_leaves_only(key):
    smc, params = _small_smc()
    template = jax.eval_shape(smc.init, key, params)
    shardings = state_shardings(template, particle_mesh(1))
    split = PartitionSpec("particles")
    for name in ("x", "log_likelihood", "log_prior", "log_q", "log_weights"):
        assert getattr(shardings, name).spec == split, name
    for name in ("beta", "iteration", "log_evidence", "key", "status"):
        assert getattr(shardings, name).spec == PartitionSpec(), name
    for leaf in jax.tree_util.tree_leaves(shardings.kernel_params):
        assert leaf.spec == PartitionSpec()
    with pytest.raises(ValidationError, match="n_particles must be given"):
        state_shardings({"x": template.x}, particle_mesh(1))


def test_shard_unshard_and_host_state_round_trip(key):
    smc, params = _small_smc()
    state = jax.jit(smc.init)(key, params)
    mesh = particle_mesh(1)
    placed = shard_state(state, mesh)
    assert isinstance(placed.x.sharding, NamedSharding)
    assert placed.x.sharding.spec == PartitionSpec("particles")
    back = unshard_state(placed)
    assert back.x.sharding.device_set == {jax.local_devices()[0]}
    on_host = host_state(placed)
    assert isinstance(on_host.x, np.ndarray)
    assert jax.dtypes.issubdtype(on_host.key.dtype, jax.dtypes.prng_key)
    leaves = jax.tree_util.tree_leaves
    for a, b, c in zip(leaves(state), leaves(back), leaves(on_host)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b, c = (jax.random.key_data(v) for v in (a, b, c))
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(a), np.asarray(c))
    flow_params = replicate(params, mesh)
    assert flow_params.chol.sharding.spec == PartitionSpec()


def test_sharded_template_places_leaves_on_restore(key):
    smc, params = _small_smc()
    state = jax.jit(smc.init)(key, params)
    mesh = particle_mesh(1)
    template = sharded_template(jax.eval_shape(smc.init, key, params), mesh)
    assert template.x.sharding == NamedSharding(mesh, PartitionSpec("particles"))
    # The checkpoint reader places leaves whose template spans several devices
    # (checked on eight devices below); shard_state completes the placement.
    restored = shard_state(state_from_bytes(template, state_to_bytes(state)), mesh)
    assert restored.x.sharding == NamedSharding(mesh, PartitionSpec("particles"))
    assert restored.beta.sharding == NamedSharding(mesh, PartitionSpec())
    assert np.array_equal(np.asarray(restored.x), np.asarray(state.x))


def test_single_process_writes_checkpoints():
    assert jax.process_count() == 1
    assert is_checkpoint_writer()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_batch_size_validation(bad):
    with pytest.raises(ValidationError, match="batch_size"):
        SMCConfig(n_particles=64, batch_size=bad)
    assert SMCConfig(n_particles=64, batch_size=7).batch_size == 7


@pytest.mark.parametrize("batch_size", [None, 10, 16, 100])
def test_map_batches_is_strided_and_exact_for_rowwise_maps(batch_size):
    n = 64
    x = jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3)

    def fn(b):
        # Elementwise per row (no reduction), plus the first row of the batch.
        return 2.0 * b + 1.0, jnp.broadcast_to(b[0, 0] / 3.0, b.shape[:1])

    doubled, first = jax.jit(map_batches, static_argnums=(0, 2))(fn, x, batch_size)
    assert np.array_equal(np.asarray(doubled), np.asarray(2.0 * x + 1.0))
    n_batches = 1 if batch_size is None else -(-n // batch_size)
    # Row i lands in batch i % n_batches, whose first row is row i % n_batches
    # (padding with row 0 only ever fills the end of the last batches).
    expected = np.arange(n) % n_batches if batch_size and batch_size < n else 0
    assert np.array_equal(np.asarray(first), np.broadcast_to(expected, (n,)))


@pytest.mark.parametrize("batch_size", [256, 300])
def test_evaluate_densities_batched_within_rounding(key, batch_size):
    flow = GaussianFlow(DIMS)
    params = GaussianFlow.params(jnp.zeros(DIMS), 4.0 * jnp.eye(DIMS))
    x = 2.0 * jax.random.normal(key, (N, DIMS))
    run = jax.jit(evaluate_densities, static_argnums=(0, 1, 2, 5))
    whole = run(problems.log_likelihood, problems.log_prior, flow, params, x, None)
    batched = run(problems.log_likelihood, problems.log_prior, flow, params, x,
                  batch_size)
    # Each density is a sum over the 4 coordinates of terms no larger than the
    # total in magnitude; XLA may associate that sum differently for another
    # row count, which moves it by at most (4 - 1) eps |sum| plus one rounding.
    for a, b in zip(whole, batched):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.abs(a - b) <= 4 * F32_EPS * np.abs(a) + 1e-30)


def test_batched_initial_draw_reproduces_the_flow_sample(key):
    from aspire_jax.flows import Flow, FlowConfig

    flow = Flow(FlowConfig(n_dims=DIMS, kind="affine", n_layers=2, hidden_sizes=(8,)))
    params = flow.init(key, np.asarray(problems.earlier_samples(dims=DIMS)))
    states = []
    for batch_size in (None, 100):  # 100 does not divide 256: padded
        smc = build_smc(SMCConfig(n_particles=256, batch_size=batch_size),
                        problems.log_likelihood, problems.log_prior, flow)
        states.append(jax.jit(smc.init)(key, params))
    whole, batched = states
    assert np.array_equal(np.asarray(whole.x), np.asarray(batched.x))
    for name in ("log_likelihood", "log_prior", "log_q"):
        a, b = np.asarray(getattr(whole, name)), np.asarray(getattr(batched, name))
        # Rounding of row reductions only; the flow's coupling layers add a
        # few more operations per coordinate than the analytic densities.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_facade_rejects_bad_mesh_arguments():
    aspire = Aspire(log_likelihood=problems.log_likelihood,
                    log_prior=problems.log_prior, dims=DIMS)
    aspire.flow_params = object()  # never used: both calls fail before sampling
    with pytest.raises(ValidationError, match="str"):
        aspire.sample_posterior(100, mesh="all")
    with pytest.raises(NotImplementedError, match="importance"):
        aspire.sample_posterior(100, sampler="importance", mesh=1)


# ------------------------------------------------------- eight devices
def test_worker_sees_eight_devices(f32):
    assert f32["n_devices"] == 8 and f32["dtype"] == "float32"
    assert "multiple of the number of devices" in f32["primitives"]["indivisible_error"]
    assert "2047" in f32["primitives"]["indivisible_error"]


def test_reductions_agree_to_rounding(f32):
    p = f32["primitives"]
    # A sum of N = 2048 float32 terms in another association: the error is at
    # most (N - 1) eps relative in the worst case, ~log2(N) eps for the trees
    # XLA builds. 1e-5 (~80 eps) is far inside the first and well above the
    # second.
    for name in ("logsumexp", "ess", "cess", "mean", "cov"):
        assert p[name] < 1e-5, (name, p[name])
    # Five EM iterations of the Student-t fit, each with such a sum and a
    # Cholesky factorisation, compound it a few times over.
    assert p["t_fit_chol"] < 1e-4
    # XLA gathers the weights and runs the cumulative sum in full on each
    # device, so identical weights give identical ancestors.
    assert p["ancestors_differing"] == 0
    assert p["normal_draws_bitwise"]


def test_sharded_init_and_first_step_match_one_device(f32):
    assert "particles" in f32["init_x_spec"]
    assert f32["init_x_rel"] <= 4 * F32_EPS
    assert f32["init_log_q_rel"] <= 1e-5
    s = f32["step1"]
    tolerance = SMCConfig(n_particles=N).beta_tolerance
    # A bisection branch can flip only when the efficiency at a midpoint is
    # within rounding of the target; the chosen betas then still both lie
    # within the final bracket width of the crossing.
    assert abs(s["beta"][0] - s["beta"][1]) <= 2 * tolerance
    assert abs(s["log_evidence"][0] - s["log_evidence"][1]) <= 1e-4
    assert abs(s["ess"][0] - s["ess"][1]) <= 1e-5 * s["ess"][0]
    assert abs(s["acceptance"][0] - s["acceptance"][1]) <= 1e-4


def _check_against_truth(run):
    truth = problems.log_evidence(DIMS)
    sigma = np.sqrt(run["log_evidence_var"])
    # Reported error plus float32 round-off of summing the increments.
    assert abs(run["log_evidence"] - truth) < 4 * sigma + 1e-3
    mean, sd = problems.posterior_moments()
    # Resampled SMC particles are correlated; N / 4 is a conservative
    # effective count, so 5 standard errors fail with probability ~6e-7.
    assert np.all(np.abs(_x(run).mean(axis=0) - mean) < 5 * sd / np.sqrt(N / 4))


def test_sharded_run_agrees_with_one_device_run(f32):
    one, split = f32["single"], f32["sharded"]
    assert one["iteration"] == split["iteration"]
    _check_against_truth(one)
    _check_against_truth(split)
    # Same key: the two estimates are strongly correlated, so the combined
    # standard error bounds their difference generously.
    sigma = np.sqrt(one["log_evidence_var"] + split["log_evidence_var"])
    assert abs(one["log_evidence"] - split["log_evidence"]) < 4 * sigma


def test_sharded_step_compiles_once_and_keeps_its_layout(f32):
    s = f32["sharded"]
    assert s["traces_first_call"] == 1 and s["lowerings_first_call"] == 1
    assert s["traces_later_calls"] == 0 and s["lowerings_later_calls"] == 0
    assert len(s["x_specs"]) == 1 and "particles" in s["x_specs"][0]
    assert s["key_spec"] in ("P()", "PartitionSpec()")
    assert s["beta_spec"] in ("P()", "PartitionSpec()")


def test_batched_sharded_run_matches_unbatched(f32):
    b = f32["batched"]
    u = b["unbatched"]
    assert b["iteration"] == u["iteration"]
    # Per-particle values agree to rounding (see the one-device test above),
    # and XLA reduces the same per-device rows either way.
    assert abs(b["log_evidence"] - u["log_evidence"]) <= 1e-4
    np.testing.assert_allclose(_x(b), _x(u), rtol=1e-5, atol=1e-5)


def test_checkpoints_restore_exactly_across_placements(f32):
    r = f32["resume"]
    assert r["to_one_restored_exactly"] and r["to_mesh_restored_exactly"]
    assert r["to_one_x_device_count"] == 1
    assert "particles" in r["to_mesh_x_spec_on_read"]
    assert "particles" in r["to_mesh_x_spec"]
    assert r["to_mesh_key_spec"] in ("P()", "PartitionSpec()")
    assert r["iteration"] == 2
    _check_against_truth(f32["continued_on_one"])
    _check_against_truth(f32["continued_on_mesh"])


def test_facade_mesh_runs_and_resumes_match_the_engine(f32):
    f = f32["facade"]
    # The facade builds the same programs as the engine calls in the worker,
    # so the same key and state give bit-identical results.
    pairs = (("mesh", "sharded"), ("one", "single"),
             ("mesh_resumed", "continued_on_one"),
             ("one_resumed", "continued_on_mesh"))
    for facade, engine in pairs:
        assert np.array_equal(_x(f[facade]), _x(f32[engine])), facade
        assert f[facade]["log_evidence"] == f32[engine]["log_evidence"], facade


@pytest.mark.x64
def test_float64_sharded_runs_equal_one_device_runs(f64):
    assert f64["dtype"] == "float64"
    one = f64["single"]
    # eps = 2.2e-16: reassociated sums of 2048 terms move by ~1e-14 at most,
    # and five iterations of smooth maps keep that far below 1e-10; no
    # accept, ancestor or bisection decision sits that close to its threshold.
    for name in ("sharded",):
        run = f64[name]
        assert run["betas"] == pytest.approx(one["betas"], abs=1e-12)
        assert abs(run["log_evidence"] - one["log_evidence"]) < 1e-10
        np.testing.assert_allclose(_x(run), _x(one), rtol=0, atol=1e-10)
    b = f64["batched"]
    np.testing.assert_allclose(_x(b), _x(b["unbatched"]), rtol=0, atol=1e-10)
    assert abs(b["log_evidence"] - b["unbatched"]["log_evidence"]) < 1e-10
    assert f64["init_log_q_rel"] < 1e-13


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_run_one_smc_and_process_zero_writes(tmp_path, request,
                                                            tmp_path_factory):
    # Two processes on this machine, joined by jax.distributed through a
    # coordinator on a free localhost port, 2 devices each: the layout of two
    # hosts, at a small scale.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    logs = [(tmp_path / f"out{i}.txt", tmp_path / f"err{i}.txt") for i in range(2)]
    procs = []
    # Files, not pipes: a process blocked on a full pipe would never reach the
    # shutdown barrier the other one waits at.
    for i, (out, err) in enumerate(logs):
        with open(out, "w") as fo, open(err, "w") as fe:
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, "host", str(tmp_path_factory.mktemp("xla")),
                 str(i), str(port), str(tmp_path)], stdout=fo, stderr=fe, env=env))
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, logs):
        assert proc.returncode == 0, err.read_text()[-4000:]
    r0, r1 = sorted((json.loads(out.read_text().strip().splitlines()[-1])
                     for out, _ in logs), key=lambda r: r["process_index"])
    assert (r0["process_count"], r0["device_count"], r0["local_device_count"]) == (
        2, 4, 2)
    assert r0["writer"] and not r1["writer"]
    # Process 0 wrote every checkpoint and process 1 none.
    assert r0["callbacks"] >= 2 and r1["callbacks"] == 0
    # Every process ends with the whole, identical sample.
    assert np.array_equal(_x(r0), _x(r1))
    assert r0["log_evidence"] == r1["log_evidence"]
    truth = problems.log_evidence(DIMS)
    assert abs(r0["log_evidence"] - truth) < 4 * r0["log_evidence_error"] + 1e-3
    # The file holds the state gathered from both processes.
    saved = state_dict_from_bytes(read_checkpoint_bytes(str(tmp_path / "run.h5")))
    assert np.array_equal(np.asarray(saved["x"]), _x(r0))
    assert float(saved["beta"]) == 1.0
