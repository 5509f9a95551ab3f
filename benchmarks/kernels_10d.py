"""Cost and accuracy of each MCMC kernel inside SMC on a 10-d correlated Gaussian.

For every kernel (t-pCN, pCN, RWMH, MALA) and both MCMC lengths (a fixed
``n_mcmc_steps = 10`` and the adaptive length), one SMC program is compiled
ahead of time and run from ``--keys`` keys. Reported per setting: likelihood
evaluations, wall time of a run (compile excluded), and the evidence error:
the mean absolute error of log Z against the closed form and the mean
reported sigma, with the largest |z| = |error| / sigma.

The problem: Gaussian prior N(0, 4 I) and Gaussian likelihood N(y; x, C) with
a correlated C (sd 0.5), so Z = N(y; 0, C + 4 I). The flow is a Gaussian
stand-in one posterior sd off in every coordinate and 1.5 times wider.

Usage::

    python benchmarks/kernels_10d.py [--particles 2000] [--keys 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from gaussian_flow import GaussianFlow, GaussianParams  # noqa: E402

from aspire_jax.smc.state import SMCConfig  # noqa: E402
from aspire_jax.smc.step import build_smc, run_device  # noqa: E402

__all__ = ["problem", "measure", "main"]

KERNELS = ("tpcn", "pcn", "rwmh", "mala")


def problem(d: int = 10, seed: int = 0):
    """Log-likelihood, log-prior, flow, flow parameters and exact log Z."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    c = a @ a.T / d + 0.2 * np.eye(d)
    sd = np.sqrt(np.diag(c))
    c = 0.25 * c / np.outer(sd, sd)
    y = rng.normal(size=d)
    s = np.linalg.inv(np.linalg.inv(c) + np.eye(d) / 4.0)
    m = s @ np.linalg.solve(c, y)
    total = c + 4.0 * np.eye(d)
    log_z = float(-0.5 * y @ np.linalg.solve(total, y)
                  - 0.5 * np.linalg.slogdet(2 * np.pi * total)[1])
    prec = jnp.asarray(np.linalg.inv(c), jnp.float32)
    y_j = jnp.asarray(y, jnp.float32)
    norm_l = float(-0.5 * np.linalg.slogdet(2 * np.pi * c)[1])
    norm_p = float(-0.5 * d * np.log(2 * np.pi * 4.0))

    def log_likelihood(x):
        r = x - y_j
        return -0.5 * jnp.einsum("ni,ij,nj->n", r, prec, r) + norm_l

    def log_prior(x):
        return -0.125 * jnp.sum(x**2, axis=-1) + norm_p

    chol = np.linalg.cholesky(1.5**2 * s)
    fp = GaussianParams(jnp.asarray(m + np.sqrt(np.diag(s)), jnp.float32),
                        jnp.asarray(chol, jnp.float32))
    return log_likelihood, log_prior, GaussianFlow(d), fp, log_z


def measure(kernel: str, n_mcmc_steps: int | None, n_particles: int,
            n_keys: int) -> dict:
    """Compile once, run ``n_keys`` keys, and summarise."""
    ll, lp, flow, fp, log_z = problem()
    config = SMCConfig(n_particles=n_particles, kernel=kernel,
                       n_mcmc_steps=n_mcmc_steps, max_iterations=100)
    smc = build_smc(config, ll, lp, flow)

    def run(key):
        return run_device(smc.step, smc.init(key, fp), fp, config.max_iterations)

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    errors, sigmas, evals, walls, iters, sweeps = [], [], [], [], [], []
    for i in range(n_keys):
        key = jax.random.key(1000 + i)
        t0 = time.perf_counter()
        state, history, n = jax.block_until_ready(compiled(key))
        walls.append(time.perf_counter() - t0)
        n = int(n)
        errors.append(float(state.log_evidence) - log_z)
        sigmas.append(math.sqrt(float(state.log_evidence_var)))
        evals.append(int(state.n_evaluations))
        iters.append(n)
        sweeps.append(int(np.sum(np.asarray(history.n_mcmc_steps)[:n])))
    errors, sigmas = np.array(errors), np.array(sigmas)
    return dict(kernel=kernel,
                mcmc="fixed 10" if n_mcmc_steps else "adaptive",
                n_particles=n_particles, n_keys=n_keys,
                evaluations=float(np.mean(evals)),
                iterations=float(np.mean(iters)), sweeps=float(np.mean(sweeps)),
                wall_s=float(np.mean(walls)), compile_s=compile_s,
                mean_abs_error=float(np.mean(np.abs(errors))),
                mean_sigma=float(np.mean(sigmas)),
                max_abs_z=float(np.max(np.abs(errors / sigmas))),
                errors=errors.tolist(), sigmas=sigmas.tolist())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    header = ("| kernel | MCMC | evaluations | iterations | sweeps | wall s | "
              "compile s | mean abs err | mean sigma | max abs z |")
    print(header)
    print("|" + "---|" * 10)
    for kernel in KERNELS:
        for n_mcmc_steps in (10, None):
            r = measure(kernel, n_mcmc_steps, args.particles, args.keys)
            rows.append(r)
            print(f"| {r['kernel']} | {r['mcmc']} | {r['evaluations']:.0f} | "
                  f"{r['iterations']:.1f} | {r['sweeps']:.1f} | {r['wall_s']:.2f} | "
                  f"{r['compile_s']:.1f} | {r['mean_abs_error']:.3f} | "
                  f"{r['mean_sigma']:.3f} | {r['max_abs_z']:.2f} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
