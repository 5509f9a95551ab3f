"""Run the whole benchmark comparison and write the report.

::

    python benchmarks/setup_peers.py      # once: the upstream environment
    python benchmarks/run.py              # full: 5 problems, 3 seeds, N = 4000
    python benchmarks/run.py --medium     # 5 problems, 2 seeds, N = 2000
    python benchmarks/run.py --quick      # smoke run for CI, a few minutes

Writes ``results/results.json`` (every record), ``results/results.md`` (the
tables) and ``results/results.png`` (plots) under ``benchmarks/``. Every
(peer group, problem) pair runs in its own subprocess: the JAX peers with this
interpreter (``bench_jax.py``), upstream aspire with the python of
``benchmarks/.venv-upstream`` (``upstream_runner.py``). If that environment
is missing the upstream columns are left empty and the command to create it
is printed. Timings are wall-clock and depend on the machine's load; the
quick mode is a smoke test and nothing is asserted on its timings.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from problems import PROBLEMS, QUICK_PROBLEMS, get_problem  # noqa: E402
from setup_peers import upstream_python  # noqa: E402

__all__ = ["PRESETS", "main", "summarise", "write_markdown"]

PRESETS = {
    "full": dict(problems=PROBLEMS, seeds=(0, 1, 2), n_particles=4000, n_train=5000,
                 fit_kwargs={}, upstream_fit_kwargs={},
                 scaling=dict(n_particles=[1000, 10000, 100000], dims=[2, 8, 32],
                              n_mcmc_steps=10, repeats=3)),
    "medium": dict(problems=PROBLEMS, seeds=(0, 1), n_particles=2000, n_train=2000,
                   fit_kwargs={}, upstream_fit_kwargs={},
                   scaling=dict(n_particles=[1000, 10000, 100000], dims=[2, 8, 32],
                                n_mcmc_steps=5, repeats=2)),
    "quick": dict(problems=QUICK_PROBLEMS, seeds=(0,), n_particles=500, n_train=1000,
                  fit_kwargs=dict(n_epochs=20), upstream_fit_kwargs=dict(n_epochs=20),
                  scaling=dict(n_particles=[1000, 10000], dims=[2], n_mcmc_steps=3,
                               repeats=2)),
}
JAX_PEERS = ("aspire_jax", "aspire_jax_fixed", "aspire_jax_flowspace",
             "aspire_jax_is", "aspire_jax_rwmh", "blackjax")
JAX_GROUPS = (("aspire_jax", "aspire_jax_fixed", "aspire_jax_flowspace",
               "aspire_jax_is"),
              ("aspire_jax_rwmh",), ("blackjax",))
# The upstream package is run with each of its two flow backends: zuko (torch,
# its default) and flowjax (JAX, outside jit).
UPSTREAM_BACKENDS = {"upstream": "zuko", "upstream_jax": "flowjax"}
UPSTREAM_PEERS = ("upstream", "upstream_is", "upstream_jax", "upstream_jax_is")
PEER_LABELS = {
    "aspire_jax": "aspire_jax SMC (flow, t-pCN, adaptive length)",
    "aspire_jax_fixed": "aspire_jax SMC, fixed 5*d MCMC steps",
    "aspire_jax_flowspace": "aspire_jax SMC, moves in the flow's latent space",
    "aspire_jax_is": "aspire_jax importance sampling",
    "aspire_jax_rwmh": "aspire_jax SMC, Gaussian start, RWMH (blackjax's terms)",
    "blackjax": "blackjax adaptive_tempered_smc + rmh",
    "upstream": "upstream aspire minipcn_smc (defaults: zuko flow)",
    "upstream_is": "upstream aspire importance sampling (zuko flow)",
    "upstream_jax": "upstream aspire minipcn_smc with its flowjax (JAX) flow",
    "upstream_jax_is": "upstream aspire importance sampling (flowjax flow)",
}


def _run_worker(cmd, spec, log_path, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = pathlib.Path(tmp) / "spec.json"
        out_path = pathlib.Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        with open(log_path, "a") as log:
            log.write(f"\n=== {' '.join(map(str, cmd))} {spec.get('problem', '')}\n")
            log.flush()
            try:
                rc = subprocess.call([*cmd, str(spec_path), str(out_path)],
                                     stdout=log, stderr=log, timeout=timeout)
            except subprocess.TimeoutExpired:
                return dict(failed=True, error=f"timed out after {timeout} s")
        wall = time.perf_counter() - t0
        if rc != 0 or not out_path.exists():
            return dict(failed=True, error=f"worker exited with {rc}; see {log_path}")
        out = json.loads(out_path.read_text())
        out["worker_wall_s"] = wall
        return out


def _earlier_files(problem, seeds, n_train, workdir):
    files = []
    for s in seeds:
        path = workdir / f"{problem.name}_seed{s}.npy"
        np.save(path, problem.earlier_samples(n_train, 100 + int(s)))
        files.append(str(path))
    return files


def _errors(rec, ref):
    mean, std = np.asarray(rec["mean"]), np.asarray(rec["std"])
    m, s = np.asarray(ref["mean"]), np.asarray(ref["std"])
    out = dict(log_evidence_abs_error=abs(rec["log_evidence"] - ref["log_evidence"]),
               log_evidence_signed_error=rec["log_evidence"] - ref["log_evidence"],
               mean_error_sd=float(np.max(np.abs(mean - m) / s)),
               std_error_sd=float(np.max(np.abs(std - s) / s)))
    if "mode_weight" in rec and "mode_weight" in ref:
        out["mode_weight_error"] = abs(rec["mode_weight"] - ref["mode_weight"])
    return out


def _agg(values):
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def summarise(records: list, references: dict) -> dict:
    """Average the per-seed records of each (problem, peer)."""
    groups: dict = {}
    for rec in records:
        if rec.get("failed"):
            groups.setdefault((rec["problem"], rec["sampler"]), []).append(rec)
            continue
        rec.update(_errors(rec, references[rec["problem"]]))
        # A cold run pays the fit, every compile and a first call (which is
        # slower than the steady state measured by t_sample).
        run = max(rec.get("t_first_call") or 0.0, rec["t_sample"])
        rec["t_total"] = (rec["t_fit"] + rec.get("t_compile_fit", 0.0)
                          + rec["t_compile"] + run)
        if "t_compile_cached" in rec:
            rec["t_total_cached"] = (rec["t_fit"]
                                     + rec.get("t_compile_fit_cached", 0.0)
                                     + rec["t_compile_cached"] + run)
        groups.setdefault((rec["problem"], rec["sampler"]), []).append(rec)
    summary = {}
    fields = ("t_fit", "t_compile_fit", "t_compile", "t_first_call", "t_sample",
              "t_total", "t_compile_cached", "t_compile_fit_cached", "t_total_cached",
              "n_evaluations", "n_iterations", "log_evidence_abs_error",
              "log_evidence_signed_error", "log_evidence_error", "mean_error_sd",
              "std_error_sd", "ess", "mode_weight_error", "outside_likelihood_share",
              "peak_rss_mib", "flow_gain_per_dim")
    for (prob, peer), recs in groups.items():
        ok = [r for r in recs if not r.get("failed")]
        row = dict(problem=prob, peer=peer, n_seeds=len(ok),
                   n_failed=len(recs) - len(ok),
                   errors=[r["error"] for r in recs if r.get("failed")])
        for f in fields:
            row[f] = _agg([r.get(f) for r in ok])
        for f in ("reference", "preconditioning"):
            row[f] = ok[0].get(f) if ok else None
        if ok:
            errs = np.array([r["log_evidence_signed_error"] for r in ok])
            row["log_evidence_rms_error"] = float(np.sqrt(np.mean(errs**2)))
        summary[f"{prob}/{peer}"] = row
    return summary


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def ratios(summary: dict, problems) -> dict:
    """The headline ratios per problem (None where a peer is missing).

    Keys ``<up>_over_ours_*`` compare with the upstream package, one set per
    flow backend: ``upstream`` (zuko) and ``upstream_jax`` (flowjax).
    """
    out = {}
    for p in problems:
        ours = summary.get(f"{p}/aspire_jax", {})
        fixed = summary.get(f"{p}/aspire_jax_fixed", {})
        flowspace = summary.get(f"{p}/aspire_jax_flowspace", {})
        rw = summary.get(f"{p}/aspire_jax_rwmh", {})
        bj = summary.get(f"{p}/blackjax", {})
        row = {}
        for name in UPSTREAM_BACKENDS:
            up = summary.get(f"{p}/{name}", {})
            row.update({
                f"{name}_over_ours_sampling": _ratio(up.get("t_sample"),
                                                     ours.get("t_sample")),
                f"{name}_over_ours_total": _ratio(up.get("t_total"),
                                                  ours.get("t_total")),
                f"{name}_over_ours_total_cached": _ratio(up.get("t_total"),
                                                         ours.get("t_total_cached")),
                f"{name}_over_ours_evaluations": _ratio(up.get("n_evaluations"),
                                                        ours.get("n_evaluations")),
                f"ours_over_{name}_evidence_rms_error": _ratio(
                    ours.get("log_evidence_rms_error"),
                    up.get("log_evidence_rms_error")),
                f"{name}_over_flowspace_sampling": _ratio(up.get("t_sample"),
                                                          flowspace.get("t_sample")),
                f"{name}_over_flowspace_evaluations": _ratio(
                    up.get("n_evaluations"), flowspace.get("n_evaluations")),
            })
        row.update(
            blackjax_over_ours_rwmh_total=_ratio(bj.get("t_total"),
                                                 rw.get("t_total")),
            blackjax_over_ours_rwmh_total_cached=_ratio(bj.get("t_total_cached"),
                                                        rw.get("t_total_cached")),
            blackjax_over_ours_rwmh_sampling=_ratio(bj.get("t_sample"),
                                                    rw.get("t_sample")),
            fixed_over_adaptive_evaluations=_ratio(fixed.get("n_evaluations"),
                                                   ours.get("n_evaluations")),
            fixed_over_adaptive_sampling=_ratio(fixed.get("t_sample"),
                                                ours.get("t_sample")),
        )
        out[p] = row
    return out


def _fmt(v, spec=".3g"):
    if v is None:
        return "—"
    if isinstance(v, float) and not np.isfinite(v):
        return "—"
    return format(v, spec)


def write_markdown(path, meta, summary, ratio_table, scaling) -> str:
    """Render the tables as Markdown; write them to ``path`` and return them."""
    lines = [f"# Benchmark results ({meta['preset']})", "",
             f"Machine: {meta['machine']}. Load average at start "
             f"{meta['load_start']}, at end {meta['load_end']}. "
             f"N = {meta['n_particles']} particles, {meta['n_train']} earlier samples, "
             f"seeds {list(meta['seeds'])}. Times in seconds (mean over seeds); "
             "errors of mean/std are the largest over parameters, in units of the "
             "true posterior std; evidence errors are |log Z - exact| (mean) and the "
             "RMS over seeds; 'reported' is the sampler's own error bar.", ""]
    head = ("| problem | peer | fit | compile | first call | sample | total | "
            "compile (cached) | total (cached) | L evals | iters | "
            "logZ err | RMS | reported | mean err | std err | ESS | mode w err | "
            "outside-L share | peak RSS MiB |")
    lines += [head, "|" + "---|" * 20]
    order = [p for p in JAX_PEERS + UPSTREAM_PEERS]
    for prob in meta["problems"]:
        for peer in order:
            row = summary.get(f"{prob}/{peer}")
            if row is None:
                continue
            if not row["n_seeds"]:
                lines.append(f"| {prob} | {peer} | failed: "
                             f"{'; '.join(row['errors'])[:120]} |" + " |" * 18)
                continue
            compile_t = (row["t_compile"] or 0.0) + (row["t_compile_fit"] or 0.0)
            cached = None
            if row["t_compile_cached"] is not None:
                cached = row["t_compile_cached"] + (row["t_compile_fit_cached"] or 0.0)
            lines.append(
                f"| {prob} | {peer} | {_fmt(row['t_fit'])} | {_fmt(compile_t)} | "
                f"{_fmt(row['t_first_call'])} | "
                f"{_fmt(row['t_sample'])} | {_fmt(row['t_total'])} | "
                f"{_fmt(cached)} | {_fmt(row['t_total_cached'])} | "
                f"{_fmt(row['n_evaluations'], '.3g')} | "
                f"{_fmt(row['n_iterations'], '.2g')}"
                f" | {_fmt(row['log_evidence_abs_error'])} | "
                f"{_fmt(row['log_evidence_rms_error'])} | "
                f"{_fmt(row['log_evidence_error'])} | {_fmt(row['mean_error_sd'])} | "
                f"{_fmt(row['std_error_sd'])} | {_fmt(row['ess'], '.0f')} | "
                f"{_fmt(row['mode_weight_error'])} | "
                f"{_fmt(row['outside_likelihood_share'], '.4f')} | "
                f"{_fmt(row['peak_rss_mib'], '.0f')} |")
    lines += ["", "## aspire_jax's automatic choices", "",
              "The reference (`reference=\"auto\"`) and move space "
              "(`preconditioning=\"auto\"`) the defaults pick from the flow's "
              "held-out gain over a Gaussian (nats per dimension, first seed's "
              "flow for the choices, mean over seeds for the gain).", "",
              "| problem | flow gain / dim | reference | move space |",
              "|---|---|---|---|"]
    for prob in meta["problems"]:
        row = summary.get(f"{prob}/aspire_jax")
        if row and row.get("n_seeds"):
            lines.append(f"| {prob} | {_fmt(row.get('flow_gain_per_dim'), '.3f')} | "
                         f"{row.get('reference') or '-'} | "
                         f"{row.get('preconditioning') or '-'} |")
    lines += ["", "## Ratios against the upstream package", "",
              "Per flow backend of the upstream package: zuko (torch, its default) "
              "and flowjax (JAX). 'flowspace' is aspire_jax with its moves in the "
              "flow's latent space.", "",
              "| problem | upstream flow | upstream/ours sampling | "
              "upstream/ours total | upstream/ours total (cached) | "
              "upstream/ours L evals | ours/upstream logZ RMS err | "
              "upstream/flowspace sampling | upstream/flowspace L evals |",
              "|" + "---|" * 9]
    for prob, r in ratio_table.items():
        for name, backend in UPSTREAM_BACKENDS.items():
            keys = (f"{name}_over_ours_sampling", f"{name}_over_ours_total",
                    f"{name}_over_ours_total_cached", f"{name}_over_ours_evaluations",
                    f"ours_over_{name}_evidence_rms_error",
                    f"{name}_over_flowspace_sampling",
                    f"{name}_over_flowspace_evaluations")
            cells = " | ".join(_fmt(r.get(k), ".3g") for k in keys)
            lines.append(f"| {prob} | {backend} | {cells} |")
    lines += ["", "## Ratios against blackjax, and what the adaptive length saves", "",
              "| problem | blackjax/ours-rwmh total | "
              "blackjax/ours-rwmh total (cached) | blackjax/ours-rwmh sampling | "
              "fixed/adaptive L evals | fixed/adaptive sampling |",
              "|" + "---|" * 6]
    keys = ("blackjax_over_ours_rwmh_total", "blackjax_over_ours_rwmh_total_cached",
            "blackjax_over_ours_rwmh_sampling",
            "fixed_over_adaptive_evaluations", "fixed_over_adaptive_sampling")
    for prob, r in ratio_table.items():
        cells = " | ".join(_fmt(r.get(k), ".3g") for k in keys)
        lines.append(f"| {prob} | {cells} |")
    if scaling and scaling.get("rows"):
        lines += ["", "## aspire_jax SMC step scaling", "",
                  f"One SMC iteration with {scaling['rows'][0]['n_mcmc_steps']} "
                  "t-pCN sweeps through the default spline flow, median wall time.", "",
                  "| dims | particles | step s | µs per particle-sweep | compile s |",
                  "|---|---|---|---|---|"]
        for r in scaling["rows"]:
            lines.append(f"| {r['dims']} | {r['n_particles']} | {r['t_step']:.4g} | "
                         f"{r['t_per_particle_sweep_us']:.3g} | {r['t_compile']:.3g} |")
    elif scaling:
        lines += ["", f"Scaling run failed: {scaling.get('error')}"]
    lines += ["", "## Versions", "", "```", json.dumps(meta["versions"], indent=1),
              "```", ""]
    text = "\n".join(lines)
    pathlib.Path(path).write_text(text)
    return text


def plot(path, meta, summary, scaling):
    """Total wall time and evidence error per peer and problem; step scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [p for p in JAX_PEERS + UPSTREAM_PEERS
             if any(f"{q}/{p}" in summary for q in meta["problems"])]
    probs = list(meta["problems"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    width = 0.8 / max(len(peers), 1)
    for i, peer in enumerate(peers):
        tot = [summary.get(f"{q}/{peer}", {}).get("t_total") or np.nan for q in probs]
        err = [summary.get(f"{q}/{peer}", {}).get("log_evidence_rms_error") or np.nan
               for q in probs]
        xs = np.arange(len(probs)) + (i - len(peers) / 2 + 0.5) * width
        axes[0].bar(xs, tot, width, label=peer)
        axes[1].bar(xs, err, width, label=peer)
    for ax, title in zip(axes[:2], ("total wall time incl. fit and compile [s]",
                                    "RMS error of log Z over seeds")):
        ax.set_xticks(np.arange(len(probs)))
        ax.set_xticklabels(probs)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=6, ncol=2)
    if scaling and scaling.get("rows"):
        for d in sorted({r["dims"] for r in scaling["rows"]}):
            rows = [r for r in scaling["rows"] if r["dims"] == d]
            axes[2].loglog([r["n_particles"] for r in rows],
                           [r["t_step"] for r in rows], "o-", label=f"d = {d}")
        axes[2].set_xlabel("particles")
        axes[2].set_ylabel("s per SMC step")
        axes[2].set_title("aspire_jax step time")
        axes[2].legend()
    fig.suptitle(f"aspire_jax benchmarks ({meta['preset']}, N = {meta['n_particles']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rerender(out_dir: pathlib.Path) -> str:
    """Rebuild results.md and results.png from the records of results.json."""
    result = json.loads((out_dir / "results.json").read_text())
    meta, records = result["meta"], result["records"]
    summary = summarise(records, result["references"])
    ratio_table = ratios(summary, meta["problems"])
    result.update(summary=summary, ratios=ratio_table)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1, default=float))
    text = write_markdown(out_dir / "results.md", meta, summary, ratio_table,
                          result.get("scaling"))
    try:
        plot(out_dir / "results.png", meta, summary, result.get("scaling"))
    except ImportError:
        pass
    return text


def _load():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return an exit code (0 unless nothing ran)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run for CI")
    mode.add_argument("--medium", action="store_true")
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--n-particles", type=int)
    parser.add_argument("--no-upstream", action="store_true")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds allowed to each worker process")
    parser.add_argument("--rerender", action="store_true",
                        help="only rebuild the tables and plot from --out/results.json")
    args = parser.parse_args(argv)
    if args.rerender:
        print(rerender(args.out))
        return 0
    preset = "quick" if args.quick else "medium" if args.medium else "full"
    cfg = dict(PRESETS[preset])
    problems = tuple(args.problems or cfg["problems"])
    seeds = tuple(args.seeds or cfg["seeds"])
    n = int(args.n_particles or cfg["n_particles"])
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "run.log"
    log_path.write_text("")
    up_python = upstream_python()
    have_upstream = up_python.exists() and not args.no_upstream
    if not up_python.exists() and not args.no_upstream:
        print(f"upstream environment not found at {up_python.parent.parent}; create it "
              "with:\n    python benchmarks/setup_peers.py\nrunning the other peers "
              "only.", file=sys.stderr)
    meta = dict(preset=preset, problems=problems, seeds=seeds, n_particles=n,
                n_train=cfg["n_train"], load_start=_load(),
                machine=f"{platform.machine()}, {os.cpu_count()} cores, "
                        f"{platform.system()} {platform.release()}, "
                        f"python {platform.python_version()}",
                versions={})
    records, references, peaks = [], {}, {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        for name in problems:
            problem = get_problem(name)
            references[name] = problem.reference()
            files = _earlier_files(problem, seeds, cfg["n_train"], workdir)
            print(f"[{time.perf_counter() - t_start:7.1f}s] {name}: JAX peers",
                  file=sys.stderr, flush=True)
            # One process per group, so each group's peak memory is its own.
            for group in JAX_GROUPS:
                spec = dict(problem=name, peers=list(group), seeds=list(seeds),
                            train_files=files, n_particles=n,
                            fit_kwargs=cfg["fit_kwargs"], n_mcmc_rw=5 * problem.dims)
                out = _run_worker([sys.executable, str(HERE / "bench_jax.py")], spec,
                                  log_path, args.timeout)
                _collect(out, name, group, records, peaks, meta, "jax")
            for peer, backend in (UPSTREAM_BACKENDS.items() if have_upstream
                                  else ()):
                print(f"[{time.perf_counter() - t_start:7.1f}s] {name}: {peer} "
                      f"({backend} flow)", file=sys.stderr, flush=True)
                spec = dict(problem=name, samplers=["smc", "importance"],
                            seeds=list(seeds), train_files=files, n_particles=n,
                            fit_kwargs=cfg["upstream_fit_kwargs"],
                            flow_backend=backend)
                out = _run_worker([str(up_python), str(HERE / "upstream_runner.py")],
                                  spec, log_path, args.timeout)
                names = {"smc": peer, "importance": f"{peer}_is"}
                for r in out.get("records", []):
                    r["sampler"] = names[r["sampler"]]
                _collect(out, name, (peer, f"{peer}_is"), records, peaks, meta, peer)
    scaling = None
    if not args.no_scaling:
        print(f"[{time.perf_counter() - t_start:7.1f}s] scaling", file=sys.stderr,
              flush=True)
        scaling = _run_worker([sys.executable, str(HERE / "bench_jax.py")],
                              dict(kind="scaling", **cfg["scaling"]), log_path,
                              args.timeout)
    meta["load_end"] = _load()
    meta["wall_s"] = time.perf_counter() - t_start
    for rec in records:
        rec.setdefault("peak_rss_mib", peaks.get((rec["problem"], rec["sampler"])))
    summary = summarise(records, references)
    ratio_table = ratios(summary, problems)
    result = dict(meta=meta, references=references, records=records, summary=summary,
                  ratios=ratio_table, scaling=scaling)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    text = write_markdown(args.out / "results.md", meta, summary, ratio_table, scaling)
    try:
        plot(args.out / "results.png", meta, summary, scaling)
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print(text)
    print(f"wrote {args.out}/results.md, results.json, results.png in "
          f"{meta['wall_s']:.0f} s", file=sys.stderr)
    return 0 if any(not r.get("failed") for r in records) else 1


def _collect(out, problem, peers, records, peaks, meta, group):
    if out.get("failed"):
        for p in peers:
            records.append(dict(problem=problem, sampler=p, seed=-1, failed=True,
                                error=out["error"]))
        return
    meta["versions"][group] = out.get("versions", {})
    for r in out["records"]:
        r["problem"] = problem
        peaks[(problem, r["sampler"])] = out.get("peak_rss_mib")
        records.append(r)


if __name__ == "__main__":
    sys.exit(main())
