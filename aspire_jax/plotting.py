"""Plots people expect: weighted corner plots, comparisons, SMC history and the
flow's training curve.

matplotlib is an optional extra (``pip install 'aspire-jax[plot]'``); it is
imported only when a plot is asked for, and the non-interactive Agg backend is
chosen when no display is available. Every function returns the
``matplotlib.figure.Figure`` and never calls ``show``.

Weighted samples are drawn with their normalised weights ``W_i``: histograms
use ``weights=W``, so no resampling (and no key) is needed.
"""

import math
import os

import numpy as np

from aspire_jax.errors import ValidationError

__all__ = ["corner_plot", "plot_comparison", "plot_marginals", "plot_history",
           "plot_sample_history", "plot_flow_loss"]


def _plt():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg",) and not _has_display():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install "
                          "'aspire-jax[plot]'") from exc
    return plt


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("MPLBACKEND"))


def _xw(samples):
    x = np.asarray(samples.x, dtype=float)
    w = np.asarray(samples.weights, dtype=float)
    bad = ~np.isfinite(x) & (w[:, None] > 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValidationError(
            f"samples to plot hold {int(bad.sum())} non-finite values (first: row "
            f"{r}, {samples.parameters[c]!r} = {x[r, c]}); drop those rows")
    return x, w


def _check_bins(bins) -> int:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) \
            or bins < 1:
        raise ValidationError(f"bins must be a positive integer; got {bins!r}")
    return int(bins)


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    # In float64 NumPy rather than aspire_jax.samples' JAX version, which
    # works in float32 by default: a GPS time of 1e9 s would move the axis
    # limits by a hundred seconds.
    order = np.argsort(v)
    cumulative = np.cumsum(w[order])
    i = np.searchsorted(cumulative, q * cumulative[-1])
    return float(v[order][min(int(i), v.size - 1)])


def _check_sets(samples, parameters, labels, colors):
    """The names to show and their column in each sample set, validated."""
    if not samples:
        raise ValidationError("pass at least one Samples to plot")
    for s in samples:
        if not hasattr(s, "x") or not hasattr(s, "weights"):
            raise ValidationError(
                f"plots take Samples objects; got {type(s).__name__} (wrap arrays "
                "with Samples.from_array(x, parameters=[...]))")
    names = list(parameters or samples[0].parameters)
    columns = []
    for k, s in enumerate(samples):
        missing = [p for p in names if p not in s.parameters]
        if missing:
            raise ValidationError(
                f"sample set {k} has no parameters {missing}; it has "
                f"{list(s.parameters)}. Pass parameters= common to every set")
        columns.append([list(s.parameters).index(p) for p in names])
    for what, values in (("labels", labels), ("colors", colors)):
        if values is not None and len(values) != len(samples):
            raise ValidationError(
                f"got {len(values)} {what} for {len(samples)} sample sets; give one "
                "per set")
    return names, columns


def _ranges(data, columns):
    """Axis ranges holding the central 99.6 % of every set's weight."""
    def ends(x, w, c):
        keep = w > 0
        return np.array([[_weighted_quantile(x[keep, j], w[keep], q) for j in c]
                         for q in (0.002, 0.998)])

    limits = np.array([ends(x, w, c) for (x, w), c in zip(data, columns)])
    lo, hi = limits[:, 0].min(axis=0), limits[:, 1].max(axis=0)
    # A constant column gets a window that float arithmetic can resolve.
    pad = np.maximum(0.5, 1e-6 * np.abs(lo))
    same = hi <= lo
    return np.where(same, lo - pad, lo), np.where(same, hi + pad, hi)


def _grid(plt, fig, rows, cols, size):
    if fig is None:
        fig, _ = plt.subplots(rows, cols, figsize=size, squeeze=False)
    if len(fig.axes) != rows * cols:
        raise ValidationError(
            f"fig must have {rows} x {cols} = {rows * cols} axes; it has "
            f"{len(fig.axes)}. Pass fig=None to make a new figure")
    return fig, np.asarray(fig.axes).reshape(rows, cols)


def corner_plot(*samples, parameters=None, labels=None, bins: int = 30, fig=None,
                colors=None, truths=None):
    """Weighted one- and two-dimensional marginals of one or more sample sets.

    Parameters
    ----------
    *samples : Samples
        One or more sample sets holding the shown parameters.
    parameters : Sequence[str] or None
        Names to show (all of the first set's by default).
    labels : Sequence[str] or None
        One legend label per sample set.
    bins : int
        Histogram bins per axis.
    fig : matplotlib.figure.Figure or None
        Existing figure with ``d * d`` axes to draw into.
    colors : Sequence or None
        One matplotlib colour per sample set.
    truths : Sequence[float] or None
        Reference values per shown parameter, drawn as lines.

    Returns
    -------
    matplotlib.figure.Figure
        ``d * d`` axes; the upper triangle is hidden, so ``d (d + 1) / 2`` are
        visible. Contours enclose 39.3 % and 86.5 % of the weight (the 1- and
        2-sigma regions of a 2-D Gaussian).

    Raises
    ------
    ValidationError
        If a set lacks a parameter, the label or colour count is wrong, or
        ``fig`` has the wrong number of axes.
    """
    plt = _plt()
    names, columns = _check_sets(samples, parameters, labels, colors)
    bins = _check_bins(bins)
    d = len(names)
    if truths is not None and len(truths) != d:
        raise ValidationError(f"got {len(truths)} truths for {d} parameters")
    fig, axes = _grid(plt, fig, d, d, (1.6 * d + 1, 1.6 * d + 1))
    colors = colors or [f"C{i}" for i in range(len(samples))]
    data = [_xw(s) for s in samples]
    lo, hi = _ranges(data, columns)
    for k, ((x, w), c, cols) in enumerate(zip(data, colors, columns)):
        label = None if labels is None else labels[k]
        for i in range(d):
            for j in range(d):
                _corner_panel(axes[i, j], i, j, x, w, cols, lo, hi, bins, c, label)
    for i in range(d):
        for j in range(i + 1):
            _corner_axis_labels(axes[i, j], i, j, d, names, lo, hi)
            if truths is not None:
                axes[i, j].axvline(truths[j], color="k", lw=0.6)
                if i != j:
                    axes[i, j].axhline(truths[i], color="k", lw=0.6)
    if labels is not None:
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    return fig


def _corner_panel(ax, i, j, x, w, cols, lo, hi, bins, color, label):
    if j > i:
        ax.set_visible(False)
        return
    xi = x[:, cols[i]]
    if i == j:
        ax.hist(xi, bins=bins, range=(lo[i], hi[i]), weights=w, density=True,
                histtype="step", color=color, label=label)
        ax.set_yticks([])
        return
    xj = x[:, cols[j]]
    h, ex, ey = np.histogram2d(xj, xi, bins=bins, weights=w,
                               range=[(lo[j], hi[j]), (lo[i], hi[i])])
    levels = _credible_levels(h)
    if len(levels) and np.max(h) > levels[0]:
        ax.contour(0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1]), h.T,
                   levels=levels, colors=color, linewidths=0.8)


def _corner_axis_labels(ax, i, j, d, names, lo, hi):
    ax.set_xlim(lo[j], hi[j])
    if i != j:
        ax.set_ylim(lo[i], hi[i])
    if i == d - 1:
        ax.set_xlabel(names[j], fontsize=7)
    else:
        ax.set_xticklabels([])
    if j == 0 and i > 0:
        ax.set_ylabel(names[i], fontsize=7)
    elif j > 0:
        ax.set_yticklabels([])
    ax.tick_params(labelsize=6)


def _credible_levels(h, masses=(0.393, 0.865)):
    """Histogram heights enclosing the 1- and 2-sigma (2-D Gaussian) masses."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / max(flat.sum(), 1e-300)
    levels = sorted({float(flat[min(np.searchsorted(cum, m), len(flat) - 1)])
                     for m in masses})
    levels = [v for v in levels if v > 0]
    return levels or [float(flat.max()) * 0.5]


def plot_marginals(*samples, parameters=None, labels=None, bins: int = 40,
                   fig=None, colors=None, ncols: int = 4):
    """Weighted one-dimensional marginals, one panel per parameter.

    Parameters
    ----------
    *samples : Samples
        One or more sample sets holding the shown parameters.
    parameters : Sequence[str] or None
        Names to show (all of the first set's by default).
    labels : Sequence[str] or None
        One legend label per sample set.
    bins : int
        Histogram bins.
    fig : matplotlib.figure.Figure or None
        Existing figure with ``rows * ncols`` axes.
    colors : Sequence or None
        One matplotlib colour per sample set.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        One visible axis per parameter (spare grid cells are hidden), with
        the parameter name as x label.
    """
    plt = _plt()
    names, columns = _check_sets(samples, parameters, labels, colors)
    bins = _check_bins(bins)
    d = len(names)
    ncols = max(1, min(int(ncols), d))
    rows = math.ceil(d / ncols)
    fig, axes = _grid(plt, fig, rows, ncols, (2.6 * ncols, 2.1 * rows + 0.3))
    axes = axes.ravel()
    colors = colors or [f"C{i}" for i in range(len(samples))]
    data = [_xw(s) for s in samples]
    lo, hi = _ranges(data, columns)
    for p, ax in enumerate(axes):
        if p >= d:
            ax.set_visible(False)
            continue
        for k, ((x, w), c, cols) in enumerate(zip(data, colors, columns)):
            ax.hist(x[:, cols[p]], bins=bins, range=(lo[p], hi[p]), weights=w,
                    density=True, histtype="step", color=c,
                    label=None if labels is None else labels[k])
        ax.set_xlabel(names[p], fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    if labels is not None:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_comparison(*samples, labels=None, parameters=None, kind: str = "corner",
                    **kwargs):
    """Compare sample sets, e.g. the earlier samples, the flow and the posterior.

    Parameters
    ----------
    *samples : Samples
        The sets to overlay, in legend order.
    labels : Sequence[str] or None
        One legend label per set.
    parameters : Sequence[str] or None
        Names to show.
    kind : str
        ``"corner"`` (:func:`corner_plot`) or ``"marginals"``
        (:func:`plot_marginals`, better for many parameters).
    **kwargs
        Passed to that function (``bins``, ``colors``, ``fig``, ...).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValidationError
        If ``kind`` is unknown.
    """
    if kind == "corner":
        return corner_plot(*samples, parameters=parameters, labels=labels, **kwargs)
    if kind == "marginals":
        return plot_marginals(*samples, parameters=parameters, labels=labels,
                              **kwargs)
    raise ValidationError(f"kind must be 'corner' or 'marginals'; got {kind!r}")


def plot_history(history, fig=None):
    """Beta schedule, ESS, acceptance and log-evidence increments per iteration.

    Parameters
    ----------
    history : History
        From ``sample_posterior(..., return_history=True)``.
    fig : matplotlib.figure.Figure or None
        Existing figure with 4 axes to draw into.

    Returns
    -------
    matplotlib.figure.Figure
        A 2 x 2 grid: beta (log scale when positive), ESS, MCMC acceptance
        and the log-evidence increment of each iteration with its error bar.
        For plain MCMC (``history.sampler == "mcmc"``), which has no beta,
        weights or evidence, a 1 x 2 grid of the acceptance and the step
        size of each sweep.

    Raises
    ------
    ValidationError
        If ``history`` is not a History (None, say, when ``return_history``
        was not set) or is empty.
    """
    plt = _plt()
    if not all(hasattr(history, f) for f in ("beta", "ess", "acceptance")):
        raise ValidationError(
            "plot_history takes the History of sample_posterior(..., "
            f"return_history=True); got {type(history).__name__}")
    if len(history) == 0:
        raise ValidationError("the history is empty: there is nothing to plot")
    if getattr(history, "sampler", "smc") == "mcmc":
        fig, ax = _grid(plt, fig, 1, 2, (8, 3))
        sweep = np.arange(1, len(history) + 1)
        ax[0, 0].plot(sweep, history.acceptance)
        ax[0, 0].set(xlabel="sweep", ylabel="acceptance", ylim=(0, 1))
        size = np.asarray(history.step_size, float)
        ax[0, 1].plot(sweep, size)
        ax[0, 1].set(xlabel="sweep", ylabel="step size",
                     yscale="log" if np.all(size > 0) else "linear")
        fig.suptitle(f"mcmc: {len(history)} sweeps", fontsize=9)
        fig.tight_layout()
        return fig
    fig, ax = _grid(plt, fig, 2, 2, (8, 5.5))
    it = np.arange(1, len(history) + 1)
    beta = np.asarray(history.beta, float)
    ax[0, 0].plot(it, beta, marker=".")
    ax[0, 0].set(xlabel="iteration", ylabel="beta",
                 yscale="log" if np.all(beta > 0) else "linear")
    ax[0, 1].plot(it, history.ess, marker=".", label="ESS")
    ax[0, 1].set(xlabel="iteration", ylabel="ESS")
    ax[1, 0].plot(it, history.acceptance, marker=".")
    ax[1, 0].set(xlabel="iteration", ylabel="acceptance", ylim=(0, 1))
    err = np.sqrt(np.maximum(np.asarray(history.log_evidence_increment_var, float), 0))
    ax[1, 1].errorbar(it, history.log_evidence_increment, yerr=err, marker=".",
                      linestyle="none")
    ax[1, 1].set(xlabel="iteration", ylabel="log Z increment")
    fig.suptitle(f"{getattr(history, 'sampler', 'smc')}: {len(history)} iterations",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_sample_history(sample_history, parameters=None, x_axis: str = "iteration",
                        n_points: int = 100, seed: int = 0, fig=None):
    """How each parameter's particles move from the flow to the posterior.

    Parameters
    ----------
    sample_history : SampleHistory or History
        From ``sample_posterior(..., store_sample_history=True,
        return_history=True)`` (the :class:`History` or its
        ``sample_history``).
    parameters : Sequence[str] or None
        Parameters to show, one panel each (default all).
    x_axis : {"iteration", "beta"}
        What the horizontal axis shows.
    n_points : int
        Particles drawn per entry, by weight, and shown as points (0 for
        none).
    seed : int
        Seed of that draw (a numpy generator: plotting needs no JAX key).
    fig : matplotlib.figure.Figure or None
        Existing figure with one axis per parameter.

    Returns
    -------
    matplotlib.figure.Figure
        Per parameter: the weighted median, the central 50 % and 90 % bands
        and the drawn particles of every entry.

    Raises
    ------
    ValidationError
        If there is no sample history, a parameter is unknown or
        ``x_axis`` is neither choice.
    """
    plt = _plt()
    history = getattr(sample_history, "sample_history", sample_history)
    if history is None or not hasattr(history, "quantiles"):
        raise ValidationError(
            "no sample history to plot: run sample_posterior(..., "
            "store_sample_history=True, return_history=True) and pass its History")
    if x_axis not in ("iteration", "beta"):
        raise ValidationError(f"x_axis must be 'iteration' or 'beta'; got {x_axis!r}")
    if isinstance(n_points, (bool, np.bool_)) or not isinstance(
            n_points, (int, np.integer)) or n_points < 0:
        raise ValidationError(f"n_points must be an integer >= 0; got {n_points!r}")
    n_points = int(n_points)
    names = list(parameters or history.parameters)
    missing = [p for p in names if p not in history.parameters]
    if missing:
        raise ValidationError(f"unknown parameters {missing}; the history has "
                              f"{list(history.parameters)}")
    cols = [list(history.parameters).index(p) for p in names]
    fig, ax = _grid(plt, fig, len(names), 1, (7, 1.8 * len(names) + 0.6))
    where = np.asarray(history.iteration if x_axis == "iteration" else history.beta,
                       float)
    q = history.quantiles([0.05, 0.25, 0.5, 0.75, 0.95])
    rng = np.random.default_rng(seed)
    drawn = []
    if n_points:
        for i in range(len(history)):
            w = np.exp(np.asarray(history.log_weights[i], float))
            idx = rng.choice(w.size, size=n_points, p=w / w.sum())
            drawn.append(np.asarray(history.x[i], float)[idx])
    for row, (name, c) in enumerate(zip(names, cols)):
        a = ax[row, 0]
        a.fill_between(where, q[:, 0, c], q[:, 4, c], alpha=0.2, color="C0",
                       label="90 %")
        a.fill_between(where, q[:, 1, c], q[:, 3, c], alpha=0.35, color="C0",
                       label="50 %")
        a.plot(where, q[:, 2, c], color="C0", marker=".", label="median")
        for i, pts in enumerate(drawn):
            a.scatter(np.full(n_points, where[i]), pts[:, c], s=2, alpha=0.25,
                      color="k", linewidths=0)
        a.set_ylabel(name)
    ax[0, 0].legend(fontsize=7, loc="best")
    ax[-1, 0].set_xlabel(x_axis)
    fig.tight_layout()
    return fig


def plot_flow_loss(flow_history, fig=None):
    """Training and validation loss per epoch, with the best epoch marked.

    Parameters
    ----------
    flow_history : FlowHistory
        From :meth:`Aspire.fit`.
    fig : matplotlib.figure.Figure or None
        Existing figure with one axis to draw into.

    Returns
    -------
    matplotlib.figure.Figure
        One axis: the training curve, the validation curve (if a validation
        set was used) and a dotted line at the epoch whose parameters were
        kept.

    Raises
    ------
    ValidationError
        If ``flow_history`` is not a FlowHistory.
    """
    plt = _plt()
    if not all(hasattr(flow_history, f)
               for f in ("training_loss", "validation_loss", "best_epoch")):
        raise ValidationError(
            "plot_flow_loss takes the FlowHistory that Aspire.fit returns (also "
            f"kept as aspire.flow_history); got {type(flow_history).__name__}")
    fig, axes = _grid(plt, fig, 1, 1, (5, 3.5))
    ax = axes[0, 0]
    train = np.asarray(flow_history.training_loss)
    valid = np.asarray(flow_history.validation_loss)
    ax.plot(np.arange(len(train)), train, label="training")
    if valid.size:
        ax.plot(np.arange(len(valid)), valid, label="validation")
    ax.axvline(flow_history.best_epoch, color="k", lw=0.6, ls=":",
               label=f"kept (epoch {flow_history.best_epoch})")
    ax.set(xlabel="epoch", ylabel="negative log-likelihood")
    ax.legend()
    fig.tight_layout()
    return fig
