"""Run the upstream ``aspire-inference`` package on one benchmark problem.

Executed with the python of ``benchmarks/.venv-upstream`` (see
``setup_peers.py``)::

    .venv-upstream/bin/python benchmarks/upstream_runner.py SPEC.json OUT.json

``SPEC.json`` names the problem (defined in ``problems.py``, evaluated here
with numpy), the samplers, the seeds, the particle count, the flow training
settings and, per seed, an ``.npy`` file of earlier samples. ``OUT.json``
receives one record per (sampler, seed) with wall times, likelihood
evaluations, SMC iterations, the evidence and its reported error, posterior
means and standard deviations and the final ESS, plus the peak resident
memory of this process (``getrusage(RUSAGE_SELF).ru_maxrss``).

Upstream is run with its defaults: the zuko MAF flow with its default
training (100 epochs, batch 500, learning rate 1e-3), and for SMC the
``minipcn_smc`` sampler (t-pCN, ``5 * dims`` MCMC steps per iteration, target
efficiency 0.5, multinomial resampling). ``flow_backend: "flowjax"`` in the
spec swaps in upstream's JAX flow (flowjax's default MAF, its training
compiled by flowjax, its evaluation during sampling called outside any jit);
everything else stays as it is. As in the JAX worker, a one-epoch warm-up
fit in the fresh process comes first and is reported as ``t_compile_fit``:
it pays the backend's one-time costs (torch start-up, flowjax's compilation
of its training step), so the timed fits of every seed are warm. The
sampler's own compile time is recorded as zero: flowjax's compilation during
sampling falls inside the first call. Each sampler is called once
untimed (a throw-away seed) before the timed calls, so that the sampling time
is the steady state, as for the JAX peers; that first call's wall time is
reported as ``t_first_call``.
"""

from __future__ import annotations

import json
import logging
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import versions, weighted_moments  # noqa: E402
from problems import get_problem  # noqa: E402

__all__ = ["run_spec", "main"]


def _versions() -> dict:
    return versions(("aspire-inference", "torch", "zuko", "jax", "jaxlib", "flowjax",
                     "equinox", "minipcn", "numpy", "orng"))


def _fit(problem, seed, x_train, fit_kwargs, flow_backend="zuko"):
    from aspire import Aspire
    from aspire.samples import Samples

    if flow_backend == "flowjax":
        import jax

        flow_seed = dict(key=jax.random.key(seed))
        # flowjax's trainer names the epoch budget max_epochs.
        if "n_epochs" in fit_kwargs:
            fit_kwargs = dict(fit_kwargs, max_epochs=fit_kwargs.pop("n_epochs"))
    else:
        import torch

        torch.manual_seed(seed)
        flow_seed = dict(seed=seed)

    def log_likelihood(samples):
        return problem.log_likelihood(np.asarray(samples.x, float), np)

    def log_prior(samples):
        return problem.log_prior(np.asarray(samples.x, float), np)

    bounds = {p: tuple(b) for p, b in zip(problem.parameters, problem.prior_bounds)}
    t0 = time.perf_counter()
    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior,
                    dims=problem.dims, parameters=list(problem.parameters),
                    prior_bounds=bounds, flow_backend=flow_backend, **flow_seed)
    aspire.fit(Samples(x_train, parameters=list(problem.parameters)), **fit_kwargs)
    return aspire, time.perf_counter() - t0


def _run_one(problem, aspire, t_fit, sampler, seed, n_particles):
    t1 = time.perf_counter()
    if sampler == "smc":
        from orng import RandomGenerator

        samples, history = aspire.sample_posterior(
            n_particles, sampler="minipcn_smc", return_history=True,
            rng=RandomGenerator(backend="numpy", seed=seed))
    else:
        samples = aspire.sample_posterior(n_particles, sampler="importance")
        history = None
    t_sample = time.perf_counter() - t1

    if sampler == "smc":
        mean, std, w = weighted_moments(samples.x)
        n_iter = len(history.beta)
        ess = float(history.ess[-1])
    else:
        mean, std, w = weighted_moments(samples.x, samples.log_w)
        n_iter = 1
        ess = float(1.0 / np.sum(w**2))
    # The counter belongs to the sampler object, which each call replaces.
    n_evals = int(aspire.n_likelihood_evaluations)
    rec = dict(
        sampler=sampler, seed=seed, n_particles=n_particles,
        t_fit=t_fit, t_compile=0.0, t_sample=t_sample,
        n_evaluations=n_evals,
        n_iterations=n_iter, log_evidence=float(samples.log_evidence),
        log_evidence_error=float(samples.log_evidence_error),
        mean=mean.tolist(), std=std.tolist(), ess=ess)
    if problem.mode_indicator is not None:
        rec["mode_weight"] = float(w @ problem.mode_indicator(samples.x))
    return rec


def run_spec(spec: dict) -> dict:
    """Run every (sampler, seed) of ``spec``; return the JSON-able results."""
    problem = get_problem(spec["problem"])
    records = []
    first_call: dict = {}
    # A one-epoch warm-up fit in this fresh process pays the flow backend's
    # one-time costs (imports, torch start-up, flowjax's compilation), as the
    # JAX worker's warm-up fit does; every timed fit below is then warm, and
    # the warm-up is charged to every seed's total, on both sides alike.
    t_compile_fit = 0.0
    if spec["train_files"]:
        x_warm = np.load(spec["train_files"][0], allow_pickle=False)
        try:
            _, t_compile_fit = _fit(problem, int(spec["seeds"][0]), x_warm,
                                    dict(spec.get("fit_kwargs", {}), n_epochs=1),
                                    spec.get("flow_backend", "zuko"))
        except Exception as exc:  # the timed fits below report the failure
            print(f"upstream warm-up fit failed: {exc}", file=sys.stderr, flush=True)
    for seed, path in zip(spec["seeds"], spec["train_files"]):
        x_train = np.load(path, allow_pickle=False)
        try:
            aspire, t_fit = _fit(problem, int(seed), x_train,
                                 dict(spec.get("fit_kwargs", {})),
                                 spec.get("flow_backend", "zuko"))
        except Exception as exc:  # report and carry on with the next seed
            for sampler in spec["samplers"]:
                records.append(dict(sampler=sampler, seed=seed, failed=True,
                                    error=f"fit: {type(exc).__name__}: {exc}"))
            continue
        # One flow per seed serves every sampler, as in the JAX worker.
        for sampler in spec["samplers"]:
            try:
                if sampler not in first_call:
                    # Untimed warm-up with a throw-away seed, as the JAX worker
                    # does: later calls are the steady-state sampling time.
                    first_call[sampler] = _run_one(
                        problem, aspire, t_fit, sampler, 10_000 + int(seed),
                        int(spec["n_particles"]))["t_sample"]
                rec = _run_one(problem, aspire, t_fit, sampler, int(seed),
                               int(spec["n_particles"]))
                rec["t_first_call"] = first_call[sampler]
                rec["t_compile_fit"] = t_compile_fit
            except Exception as exc:  # report and carry on with the next run
                rec = dict(sampler=sampler, seed=seed, failed=True,
                           error=f"{type(exc).__name__}: {exc}")
            records.append(rec)
            print(f"upstream {spec['problem']} {sampler} seed {seed}: "
                  f"{ {k: rec.get(k) for k in ('t_fit', 't_sample', 'log_evidence')} }",
                  file=sys.stderr, flush=True)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(problem=spec["problem"], records=records,
                peak_rss_mib=rss_kib / 1024.0, versions=_versions())


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``upstream_runner.py SPEC.json OUT.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(pathlib.Path(argv[0]).read_text())
    out = run_spec(spec)
    pathlib.Path(argv[1]).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
