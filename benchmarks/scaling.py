"""Wall time of one SMC iteration against particles, dimensions and devices.

    python benchmarks/scaling.py              # default run, ~10 minutes on 2 cores
    python benchmarks/scaling.py --quick      # smoke test, ~2 minutes
    python benchmarks/scaling.py --kernels tpcn rwmh --out benchmarks/results

Four measurements, each in fresh subprocesses (XLA fixes the number of
virtual CPU devices when jax is imported, and ``ru_maxrss`` is a per-process
peak):

1. one device: time per iteration against the particle count (1e3 to 1e6,
   8 dimensions) and against the dimension (2 to 64, 1e4 particles);
2. strong scaling: a fixed population split over 1, 2, 4 and 8 devices;
3. weak scaling: a fixed number of particles per device;
4. peak host memory (``ru_maxrss``) of a 1e6-particle, 15-dimensional run
   with the default spline flow, with and without ``batch_size``.

Every iteration does the same work: a fixed number of MCMC sweeps, and each
timed call starts from the same state; the fastest of a few calls is
reported, the one least disturbed by other work on the machine. The target
is a Gaussian likelihood under a standard-normal prior; the flow is untrained
(its cost does not depend on its weights). Results go to ``OUT/scaling.md``,
``OUT/scaling.json`` and ``OUT/scaling.png``.

Virtual CPU devices share the machine's cores, so splitting over more devices
than there are cores cannot go faster; the scaling tables show the cost of the
partitioned program (collectives, gathers after resampling) on such a
machine, not the speed-up of real accelerators.
"""

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

__all__ = ["main"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
_SMALL_FLOW = dict(kind="affine", n_layers=2, hidden_sizes=(32,))

DEFAULT = dict(
    n_sweep=(1_000, 10_000, 100_000, 1_000_000), n_sweep_dims=8,
    d_sweep=(2, 8, 32, 64), d_sweep_particles=10_000,
    devices=(1, 2, 4, 8), strong_particles=65_536, weak_per_device=8_192,
    scaling_dims=8, memory=dict(n=1_000_000, d=15, batch_size=10_000),
    n_mcmc_steps=5, repeats=5, big_repeats=1, timeout=900)
QUICK = dict(
    n_sweep=(1_000, 10_000), n_sweep_dims=4, d_sweep=(2, 8), d_sweep_particles=2_000,
    devices=(1, 2), strong_particles=4_096, weak_per_device=2_048, scaling_dims=4,
    memory=dict(n=20_000, d=15, batch_size=2_000), n_mcmc_steps=2, repeats=2,
    big_repeats=1, timeout=600)


# ------------------------------------------------------------------ worker
def _problem(d: int):
    import jax.numpy as jnp

    def log_likelihood(x):
        return -0.5 * jnp.sum((x - 0.5) ** 2 / 0.25, axis=-1)

    def log_prior(x):
        return -0.5 * jnp.sum(x**2, axis=-1) - 0.5 * d * math.log(2 * math.pi)

    return log_likelihood, log_prior


def _build(row: dict, n_mcmc_steps: int, mesh, flow_settings: dict):
    """The flow, its parameters and the jitted init and step of one row."""
    import jax

    from aspire_jax.flows import Flow, FlowConfig
    from aspire_jax.sharding import jit_sharded_init, jit_sharded_step, replicate
    from aspire_jax.smc.state import SMCConfig
    from aspire_jax.smc.step import build_smc

    d, n = int(row["d"]), int(row["n"])
    flow = Flow(FlowConfig(n_dims=d, **flow_settings))
    rng = np.random.default_rng(0)
    params = flow.init(jax.random.key(0),
                       rng.standard_normal((512, d)).astype(np.float32))
    config = SMCConfig(n_particles=n, kernel=row.get("kernel", "tpcn"),
                       n_mcmc_steps=n_mcmc_steps, batch_size=row.get("batch_size"))
    smc = build_smc(config, *_problem(d), flow)
    if mesh is None:
        return params, jax.jit(smc.init), jax.jit(smc.step)
    template = jax.eval_shape(smc.init, jax.random.key(1), params)
    return (replicate(params, mesh), jit_sharded_init(smc.init, template, mesh),
            jit_sharded_step(smc.step, template, mesh))


def _time_row(row: dict, spec: dict, mesh) -> dict:
    import jax

    params, init, step = _build(row, spec["n_mcmc_steps"], mesh,
                                spec.get("flow", _SMALL_FLOW))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init(key, params))
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = step.lower(state, params).compile()
    t_compile = time.perf_counter() - t0
    jax.block_until_ready(compiled(state, params))
    times = []
    repeats = spec["big_repeats"] if row["n"] >= 500_000 else spec["repeats"]
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, params))
        times.append(time.perf_counter() - t0)
    # The fastest call is the one least disturbed by other work on the machine.
    return dict(row, devices=1 if mesh is None else mesh.size,
                t_step=float(np.min(times)), t_step_median=float(np.median(times)),
                t_compile=t_compile, t_init=t_init, repeats=repeats)


def _memory_row(spec: dict) -> dict:
    """Peak RSS of init plus one iteration, with compilation counted apart."""
    import jax

    row = spec["row"]
    params, init, step = _build(row, spec["n_mcmc_steps"], None, {})
    key = jax.random.key(1)
    t0 = time.perf_counter()
    init_c = init.lower(key, params).compile()
    shape = jax.eval_shape(init, key, params)
    step_c = step.lower(shape, params).compile()
    t_compile = time.perf_counter() - t0
    rss_compiled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_c(key, params))
    state, _ = jax.block_until_ready(step_c(state, params))
    t_run = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state_mib = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(
        state.replace(key=None))) / 2**20
    return dict(row, rss_after_compile_mib=rss_compiled, rss_peak_mib=rss_peak,
                state_mib=state_mib, t_compile=t_compile, t_init_and_step=t_run)


def _worker(spec: dict) -> dict:
    import jax

    from aspire_jax.sharding import particle_mesh

    info = dict(jax_version=jax.__version__, backend=jax.default_backend(),
                device_count=jax.device_count())
    if spec["kind"] == "memory":
        return dict(info, rows=[_memory_row(spec)])
    mesh = None if spec["devices"] == 1 else particle_mesh(spec["devices"])
    rows, seen = [], {}
    for row in spec["rows"]:
        # A weak-scaling row can be a strong-scaling row too: time it once.
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen[key] = _time_row(row, spec, mesh)
            print(f"  {seen[key]}", file=sys.stderr, flush=True)
        rows.append(seen[key])
    return dict(info, rows=rows)


# ------------------------------------------------------------ orchestrator
def _run(spec: dict, devices: int, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH")]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s", rows=[])
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
    if proc.returncode:
        return dict(error=proc.stderr.strip().splitlines()[-1:], rows=[])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = time.perf_counter() - t0
    return out


def _measure(settings: dict, kernels) -> dict:
    common = dict(n_mcmc_steps=settings["n_mcmc_steps"], repeats=settings["repeats"],
                  big_repeats=settings["big_repeats"])
    timeout = settings["timeout"]
    d8, n4 = settings["n_sweep_dims"], settings["d_sweep_particles"]
    rows = [dict(n=n, d=d8) for n in settings["n_sweep"]]
    done = {(r["n"], r["d"]) for r in rows}
    rows += [dict(n=n4, d=d) for d in settings["d_sweep"] if (n4, d) not in done]
    results = dict(single=_run(dict(common, kind="step", devices=1, rows=rows), 1,
                               timeout))
    d = settings["scaling_dims"]
    results["strong"], results["weak"] = [], []
    for k in settings["devices"]:
        strong = [dict(n=settings["strong_particles"], d=d, kernel=kernel)
                  for kernel in kernels]
        weak = [dict(n=settings["weak_per_device"] * k, d=d, kernel=kernels[0])]
        out = _run(dict(common, kind="step", devices=k, rows=strong + weak), k,
                   timeout)
        results["strong"] += out["rows"][:len(strong)]
        results["weak"] += out["rows"][len(strong):]
        if "error" in out:
            results.setdefault("errors", []).append((k, out["error"]))
    results["memory"] = []
    mem = settings["memory"]
    for batch in (None, mem["batch_size"]):
        row = dict(n=mem["n"], d=mem["d"], batch_size=batch)
        out = _run(dict(common, kind="memory", row=row, n_mcmc_steps=1), 1, timeout)
        results["memory"] += out["rows"] or [dict(row, error=out.get("error"))]
    return results


# ----------------------------------------------------------------- report
def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(t):
    return f"{1e3 * t:.1f}"


def _report(results: dict, settings: dict, elapsed: float) -> str:
    single = results["single"]["rows"]
    sweeps = settings["n_mcmc_steps"]
    parts = [
        "# SMC iteration time: particles, dimensions, devices", "",
        f"Generated by `benchmarks/scaling.py` in {elapsed / 60:.1f} min on "
        f"{platform.machine()} with {os.cpu_count()} cores (load average at the end "
        f"{results.get('load_average', float('nan')):.1f}), jax "
        f"{results['single'].get('jax_version')}, "
        f"backend {results['single'].get('backend')}. One iteration = reweight, "
        f"bisection on beta, resample, {sweeps} MCMC sweeps (t-pCN unless stated); "
        "flow: affine coupling, 2 layers, hidden (32,). Fastest of "
        f"{settings['repeats']} timed calls ({settings['big_repeats']} from 5e5 "
        "particles), compilation excluded.", "",
        "## One device", "",
        _table(["particles", "dims", "ms / iteration", "us / particle / sweep",
                "compile s"],
               [(r["n"], r["d"], _ms(r["t_step"]),
                 f"{1e6 * r['t_step'] / (r['n'] * sweeps):.3f}",
                 f"{r['t_compile']:.1f}") for r in single]), ""]
    strong = results["strong"]
    base = {r["kernel"]: r["t_step"] for r in strong if r["devices"] == 1}
    parts += ["## Strong scaling (fixed population)", "",
              _table(["kernel", "particles", "devices", "ms / iteration", "speed-up"],
                     [(r["kernel"], r["n"], r["devices"], _ms(r["t_step"]),
                       f"{base.get(r['kernel'], float('nan')) / r['t_step']:.2f}")
                      for r in strong]), ""]
    weak = results["weak"]
    w1 = next((r["t_step"] for r in weak if r["devices"] == 1), float("nan"))
    parts += ["## Weak scaling (fixed particles per device)", "",
              _table(["particles", "devices", "ms / iteration", "efficiency"],
                     [(r["n"], r["devices"], _ms(r["t_step"]),
                       f"{w1 / r['t_step']:.2f}") for r in weak]), ""]
    parts += ["## Peak host memory", "",
              "Init plus one iteration (1 sweep) with the default spline flow; "
              "`ru_maxrss` after compiling both programs and at the end.", "",
              _table(["particles", "dims", "batch_size", "RSS after compile MiB",
                      "peak RSS MiB", "state MiB", "init + iteration s"],
                     [(r["n"], r["d"], r.get("batch_size"),
                       f"{r.get('rss_after_compile_mib', float('nan')):.0f}",
                       f"{r.get('rss_peak_mib', float('nan')):.0f}",
                       f"{r.get('state_mib', float('nan')):.0f}",
                       f"{r.get('t_init_and_step', float('nan')):.1f}")
                      for r in results["memory"]]), ""]
    if results.get("errors"):
        parts += ["## Errors", "", *[f"- {k} devices: {e}" for k, e in
                                     results["errors"]], ""]
    return "\n".join(parts)


def _plot(results: dict, settings: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    single = results["single"]["rows"]
    d8, n4 = settings["n_sweep_dims"], settings["d_sweep_particles"]
    by_n = sorted((r["n"], r["t_step"]) for r in single if r["d"] == d8)
    ax[0].loglog(*zip(*by_n), "o-")
    ax[0].set(xlabel="particles", ylabel="s / iteration", title=f"one device, d = {d8}")
    by_d = sorted((r["d"], r["t_step"]) for r in single if r["n"] == n4)
    ax[1].loglog(*zip(*by_d), "o-")
    ax[1].set_xticks([d for d, _ in by_d], [str(d) for d, _ in by_d])
    ax[1].minorticks_off()
    ax[1].set(xlabel="dimensions", ylabel="s / iteration",
              title=f"one device, n = {n4}")
    for kernel in sorted({r["kernel"] for r in results["strong"]}):
        rows = [r for r in results["strong"] if r["kernel"] == kernel]
        ax[2].plot([r["devices"] for r in rows], [rows[0]["t_step"] / r["t_step"]
                                                  for r in rows], "o-", label=kernel)
    devs = sorted({r["devices"] for r in results["strong"]})
    ax[2].plot(devs, devs, "k:", label="ideal")
    ax[2].set(xlabel="virtual devices", ylabel="speed-up", title="strong scaling")
    ax[2].legend()
    weak = results["weak"]
    efficiency = [weak[0]["t_step"] / r["t_step"] for r in weak]
    ax[3].plot([r["devices"] for r in weak], efficiency, "o-")
    ax[3].axhline(1.0, color="k", ls=":")
    ax[3].set(xlabel="virtual devices", ylabel="efficiency", title="weak scaling",
              ylim=(0, max([1.2, *efficiency]) * 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    """Run the benchmark (or, with ``--worker SPEC``, one measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test sizes")
    parser.add_argument("--kernels", nargs="+", default=["tpcn", "rwmh"],
                        help="kernels of the strong-scaling table (first: weak)")
    parser.add_argument("--out", default=os.path.join(_HERE, "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite scaling.md and scaling.png from scaling.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    if args.report_only:
        with open(os.path.join(args.out, "scaling.json")) as f:
            saved = json.load(f)
        settings, results = saved["settings"], saved["results"]
        elapsed = saved.get("elapsed", float("nan"))
    else:
        settings = QUICK if args.quick else DEFAULT
        t0 = time.perf_counter()
        results = _measure(settings, args.kernels)
        elapsed = time.perf_counter() - t0
        results["load_average"] = os.getloadavg()[0]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(dict(settings=settings, results=results, elapsed=elapsed), f,
                  indent=1)
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write(_report(results, settings, elapsed))
    _plot(results, settings, os.path.join(args.out, "scaling.png"))
    print(f"wrote {args.out}/scaling.{{md,json,png}} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
