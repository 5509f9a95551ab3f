"""Command line: ``aspire-jax demo`` runs the whole job on a real case.

The default case is the diabetes regression (``diabetes_linreg``): its
reference answers are analytic, so the run checks itself, and its earlier
posterior (half of the patients) covers the new one poorly, which is exactly
when reusing samples through a flow and SMC pays off.
"""

import argparse
import json
import logging
import os
import sys
import time

import h5py
import numpy as np

from . import __version__
from .aspire import _REFERENCES
from .errors import ValidationError
from .io import AspireFile, is_aspire_file

__all__ = ["main", "run_demo"]

_SEED_LIMIT = 2**63  # int seeds the library accepts: [0, 2**63)


def _check_demo_settings(n_samples, n_training, n_epochs, seed, output, *,
                         defensive_weight=0.1, reference="auto", flags: bool = False):
    """Refuse demo settings that would fail only after the flow is fitted.

    Parameters
    ----------
    n_samples, n_training, n_epochs, seed, output, defensive_weight, reference
        As for :func:`run_demo`.
    flags
        Name the settings by their command-line flags (``--n-samples``).

    Raises
    ------
    ValidationError
        With one line naming the setting, the rule and the value. A usable
        ``output`` directory is created.
    """

    def name(n):
        return "--" + n.replace("_", "-") if flags else n

    for n, value, least in (("n_samples", n_samples, 2), ("n_training", n_training, 2),
                            ("n_epochs", n_epochs, 1)):
        if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                or value < least):
            raise ValidationError(f"{name(n)} must be an integer >= {least}; "
                                  f"got {value!r}")
    if (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
            or not 0 <= seed < _SEED_LIMIT):
        raise ValidationError(f"{name('seed')} must be an integer in [0, 2**63); "
                              f"got {seed!r}")
    if (not isinstance(defensive_weight, (int, float, np.floating))
            or isinstance(defensive_weight, bool) or not 0 <= defensive_weight < 1):
        raise ValidationError(f"{name('defensive_weight')} must be a number in "
                              f"[0, 1); got {defensive_weight!r}")
    if reference not in _REFERENCES:
        raise ValidationError(f"{name('reference')} must be 'auto', 'flow' or "
                              f"'gaussian'; got {reference!r}")
    if output:
        _check_output_dir(os.fspath(output), name("output"))
        posterior = os.path.join(os.fspath(output), "posterior.h5")
        if os.path.lexists(posterior) and not _written_by_demo(posterior):
            raise ValidationError(
                f"{posterior!r} exists and was not written by the demo, which "
                f"would replace it. Choose another {name('output')} or move it away")
        # The other outputs carry no mark of their own: a folder whose
        # posterior file an earlier demo wrote is the demo's, and any other
        # folder must not hold files of those names.
        if not os.path.lexists(posterior):
            taken = [f for f in _DEMO_FILES[1:]
                     if os.path.lexists(os.path.join(os.fspath(output), f))]
            if taken:
                raise ValidationError(
                    f"{os.fspath(output)!r} holds {', '.join(taken)}, not written by "
                    f"the demo (it finds no posterior.h5 of its own there), which "
                    f"would replace {'them' if len(taken) > 1 else 'it'}. Choose "
                    f"another {name('output')} or move {'them' if len(taken) > 1 else 'it'} "
                    "away")


_DEMO_MARK = "aspire_jax_demo_output"
# Every file the demo writes into its output folder, the marked one first.
_DEMO_FILES = ("posterior.h5", "summary.json", "corner.png", "history.png")


def _written_by_demo(path) -> bool:
    """Whether ``path`` is a posterior file an earlier demo run wrote (and
    marked): the only file the demo may replace."""
    if not is_aspire_file(path):
        return False
    with h5py.File(path, "r") as f:
        return bool(f.attrs.get(_DEMO_MARK, False))


def _check_output_dir(output: str, what: str):
    """Make sure ``output`` is, or can be made, a writable directory; create it."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValidationError(f"{what} {output!r} exists and is not a directory")
    ancestor = os.path.abspath(output)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValidationError(f"{what} {output!r} cannot be created: {ancestor!r} is "
                              "not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValidationError(f"{what} {output!r} cannot be written: directory "
                              f"{ancestor!r} is not writable")
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"{what} {output!r} cannot be created: "
                              f"{exc.strerror or exc}") from exc


def run_demo(case: str = "diabetes_linreg", *, n_samples: int = 4000,
             n_training: int = 5000, n_epochs: int = 150, seed: int = 0,
             output: str | None = "demo_output", plot: bool = True,
             progress: bool | None = None, defensive_weight: float = 0.1,
             reference: str = "auto") -> dict:
    """Fit a flow to the case's earlier samples, run SMC, compare to reference.

    Returns a dict with the evidence, its error, the reference and the errors
    of the posterior moments in units of the reference standard deviation.

    Raises
    ------
    ValidationError
        Before any work, if ``n_samples`` or ``n_training`` is below 2,
        ``n_epochs`` below 1, ``seed`` outside ``[0, 2**63)``,
        ``defensive_weight`` outside ``[0, 1)``, ``reference`` not one of
        ``"auto"``, ``"flow"``, ``"gaussian"``, or ``output``
        is not a directory that exists or can be created and written.
    """
    _check_demo_settings(n_samples, n_training, n_epochs, seed, output,
                         defensive_weight=defensive_weight, reference=reference)
    import jax

    from .aspire import Aspire
    from .cases import load_case
    from .samples import Samples

    c = load_case(case)
    t0 = time.perf_counter()
    aspire = Aspire(log_likelihood=c.log_likelihood, log_prior=c.log_prior,
                    dims=c.dims, parameters=c.parameter_names,
                    prior_bounds=c.prior_bounds)
    old = Samples.from_array(c.previous_samples(n_training, seed=seed).astype(np.float32),
                             parameters=c.parameter_names)
    key_fit, key_smc = jax.random.split(jax.random.key(seed))
    aspire.fit(old, key=key_fit, n_epochs=n_epochs, progress=progress)
    t_fit = time.perf_counter() - t0
    post, history = aspire.sample_posterior(n_samples, sampler="smc", key=key_smc,
                                            return_history=True, progress=progress,
                                            defensive_weight=defensive_weight,
                                            reference=reference)
    t_total = time.perf_counter() - t0
    ref = c.reference()
    mean = np.asarray(post.mean(), dtype=float)
    std = np.asarray(post.std(), dtype=float)
    mean_err = (mean - ref["mean"]) / ref["std"]
    std_err = (std - ref["std"]) / ref["std"]
    result = dict(
        case=case, n_samples=n_samples, seed=seed,
        reference=aspire._last_sampler_config["options"]["reference"],
        log_evidence=float(post.log_evidence),
        log_evidence_error=float(post.log_evidence_error),
        reference_log_evidence=ref["log_evidence"],
        reference_log_evidence_error=ref["log_evidence_err"],
        max_abs_mean_error_sd=float(np.max(np.abs(mean_err))),
        max_abs_std_error_sd=float(np.max(np.abs(std_err))),
        n_iterations=len(history),
        n_likelihood_evaluations=aspire.n_likelihood_evaluations,
        wall_time_fit_s=t_fit, wall_time_total_s=t_total,
        parameters=list(c.parameter_names), mean=mean.tolist(), std=std.tolist(),
        reference_mean=np.asarray(ref["mean"]).tolist(),
        reference_std=np.asarray(ref["std"]).tolist())
    if output:
        os.makedirs(output, exist_ok=True)
        # Names, weights and evidence travel with the samples: read_samples
        # reads them back.
        # The file is the demo's own (checked before the run): written afresh,
        # and marked as the demo's.
        with AspireFile(os.path.join(output, "posterior.h5"), "w") as f:
            post.save(f, "samples")
            f.attrs[_DEMO_MARK] = True
        with open(os.path.join(output, "summary.json"), "w") as fh:
            json.dump(result, fh, indent=1)
        if plot:
            _demo_plots(output, old, aspire, post, history, seed)
    return result


def _demo_plots(output, old, aspire, post, history, seed):
    try:
        from .plotting import corner_plot
    except ImportError:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping plots "
              "(pip install 'aspire-jax[plot]')", file=sys.stderr)
        return
    flow = aspire.sample_flow(len(post.x), key=(seed + 17) % _SEED_LIMIT)
    names = list(post.parameters)[:4] + [post.parameters[-1]]
    fig = corner_plot(old, flow, post, parameters=names,
                      labels=["earlier samples", "flow", "new posterior"])
    fig.savefig(os.path.join(output, "corner.png"), dpi=110)
    plt.close(fig)
    fig = history.plot()
    fig.savefig(os.path.join(output, "history.png"), dpi=110)
    plt.close(fig)


def _print_result(r):
    print(f"case {r['case']}: {r['n_samples']} particles from the "
          f"{r.get('reference', 'flow')} reference, {r['n_iterations']} SMC "
          f"iterations, {r['n_likelihood_evaluations']} likelihood evaluations")
    print(f"log Z = {r['log_evidence']:.4f} +- {r['log_evidence_error']:.4f}   "
          f"(reference {r['reference_log_evidence']:.4f}, error "
          f"{r['log_evidence'] - r['reference_log_evidence']:+.4f})")
    print(f"{'parameter':24s} {'mean':>10s} {'ref mean':>10s} {'std':>9s} "
          f"{'ref std':>9s}")
    for p, m, rm, s, rs in zip(r["parameters"], r["mean"], r["reference_mean"],
                               r["std"], r["reference_std"]):
        print(f"{p:24s} {m:10.4f} {rm:10.4f} {s:9.4f} {rs:9.4f}")
    print(f"max |mean error| = {r['max_abs_mean_error_sd']:.3f} ref sd, "
          f"max |std error| = {r['max_abs_std_error_sd']:.3f} ref sd")
    print(f"wall time: {r['wall_time_total_s']:.1f} s "
          f"(flow fit {r['wall_time_fit_s']:.1f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="aspire-jax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole job on a real case")
    demo.add_argument("--case", default="diabetes_linreg",
                      choices=["diabetes_linreg", "eight_schools"])
    demo.add_argument("--n-samples", type=int, default=4000,
                      help="SMC particles (>= 2)")
    demo.add_argument("--n-training", type=int, default=5000,
                      help="earlier samples the flow is fitted to (>= 2)")
    demo.add_argument("--n-epochs", type=int, default=150,
                      help="flow training epochs (>= 1)")
    demo.add_argument("--seed", type=int, default=0,
                      help="random seed, in [0, 2**63)")
    demo.add_argument("--output", default="demo_output",
                      help="directory for samples, summary and plots "
                           "(created if missing; '' writes nothing)")
    demo.add_argument("--defensive-weight", type=float, default=0.1,
                      help="share of the first particles drawn from the "
                           "reference's heavy-tailed (Student-t) component, in "
                           "[0, 1) (0: the reference alone)")
    demo.add_argument("--reference", default="auto", choices=_REFERENCES,
                      help="what SMC starts from: the flow, the Gaussian of the "
                           "same training samples, or 'auto' (the Gaussian unless "
                           "the flow beats it on held-out samples)")
    demo.add_argument("--no-plot", action="store_true")
    demo.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        # Bad settings would otherwise surface only after the flow is fitted.
        try:
            _check_demo_settings(args.n_samples, args.n_training, args.n_epochs,
                                 args.seed, args.output,
                                 defensive_weight=args.defensive_weight,
                                 reference=args.reference, flags=True)
        except ValidationError as exc:
            demo.error(str(exc))
    logging.getLogger("jax").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.command == "demo":
        r = run_demo(args.case, n_samples=args.n_samples, n_training=args.n_training,
                     n_epochs=args.n_epochs, seed=args.seed, output=args.output,
                     plot=not args.no_plot, defensive_weight=args.defensive_weight,
                     reference=args.reference)
        _print_result(r)
        if args.output:
            print(f"samples, summary{'' if args.no_plot else ' and plots'} written "
                  f"to {args.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
