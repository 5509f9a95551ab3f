"""Wall time of an SMC run whose likelihood is an expensive host function,
evaluated point by point in this process or in a pool of worker processes.

The likelihood is a 3-d Gaussian whose every evaluation also spends
``--cost-ms`` milliseconds of CPU (a busy wait, standing in for a waveform
model or a solver); its value does not depend on the wait, so every
configuration must give the very same run. Each configuration is run twice
with the same key and the second, compiled, run is timed.

Usage::

    python benchmarks/bench_pool.py [--cost-ms 0.5] [--workers 2] [--n 400]
"""

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

__all__ = ["main"]

MEAN, SD, PRIOR_SD, DIMS = 1.0, 0.5, 3.0, 3
COST_S = float(os.environ.get("ASPIRE_JAX_BENCH_COST_MS", "0.5")) / 1e3


def point_log_likelihood(p):
    """One point's log-likelihood, after ``COST_S`` seconds of CPU."""
    end = time.perf_counter() + COST_S
    while time.perf_counter() < end:
        pass
    r = (np.asarray(p, np.float64) - MEAN) / SD
    return float(np.sum(-0.5 * r**2 - np.log(SD * np.sqrt(2 * np.pi))))


def _log_prior(x):
    import jax.numpy as jnp

    return jnp.sum(-0.5 * (x / PRIOR_SD) ** 2 - jnp.log(PRIOR_SD * jnp.sqrt(2 * jnp.pi)),
                   axis=-1)


def _exact_log_evidence():
    s2 = PRIOR_SD**2 + SD**2
    return DIMS * (-0.5 * MEAN**2 / s2 - 0.5 * np.log(2 * np.pi * s2))


def _run(aspire, n):
    aspire.sample_posterior(n, key=1, progress=False)  # compiles
    t0 = time.perf_counter()
    post = aspire.sample_posterior(n, key=1, progress=False)
    # (the count of the last run, initial draws included)
    return post, time.perf_counter() - t0, aspire.n_likelihood_evaluations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost-ms", type=float, default=0.5)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args(argv)
    # The workers read the cost from the environment when they import this
    # module, so it is set before any of them starts.
    os.environ["ASPIRE_JAX_BENCH_COST_MS"] = str(args.cost_ms)
    global COST_S
    COST_S = args.cost_ms / 1e3

    from aspire_jax import Aspire, wrap_numpy_likelihood

    var = 1.0 / (1.0 / PRIOR_SD**2 + 1.0 / SD**2)
    mean = var * MEAN / SD**2
    rng = np.random.default_rng(0)
    earlier = mean - 0.8 * np.sqrt(var) + 1.5 * np.sqrt(var) * rng.standard_normal(
        (2000, DIMS))

    def make(ll):
        a = Aspire(log_likelihood=ll, log_prior=_log_prior, dims=DIMS,
                   flow_kind="affine", n_layers=2, hidden_sizes=(16,))
        return a

    base = make(wrap_numpy_likelihood(point_log_likelihood, vectorized=False))
    base.fit(earlier.astype(np.float32), key=0, n_epochs=40, progress=False)
    rows = []
    serial, t_serial, evals = _run(base, args.n)
    rows.append(("serial (map)", 1, t_serial, serial))
    for w in args.workers:
        with mp.get_context("spawn").Pool(w) as pool:
            a = make(wrap_numpy_likelihood(point_log_likelihood, vectorized=False,
                                           map_fn=pool.map))
            a.flow_params = base.flow_params
            post, t, _ = _run(a, args.n)
        rows.append((f"spawn pool, {w} workers", w, t, post))
    print(f"# {args.n} particles, {evals} likelihood evaluations per run, "
          f"{args.cost_ms} ms each ({evals * args.cost_ms / 1e3:.1f} s of likelihood), "
          f"{os.cpu_count()} cores; exact log Z {_exact_log_evidence():.4f}")
    print("| likelihood on | workers | wall time (s) | serial / this | log Z | same run |")
    print("|---|---|---|---|---|---|")
    for name, w, t, post in rows:
        same = bool(np.array_equal(np.asarray(post.x), np.asarray(serial.x)))
        print(f"| {name} | {w} | {t:.2f} | {t_serial / t:.2f} | "
              f"{float(post.log_evidence):.4f} ± {float(post.log_evidence_error):.4f} "
              f"| {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
