"""Plots people expect: weighted corner plots, SMC history and flow loss.

matplotlib is an optional extra (``pip install 'aspire-jax[plot]'``); it is
imported only when a plot is asked for. Every function returns the figure.
"""

import numpy as np

__all__ = ["corner_plot", "plot_history", "plot_flow_loss", "plot_comparison"]


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
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("MPLBACKEND"))


def _xw(samples):
    x = np.asarray(samples.x, dtype=float)
    w = np.asarray(samples.weights, dtype=float)
    return x, w


def corner_plot(*samples, parameters=None, labels=None, bins: int = 30, fig=None,
                colors=None):
    """Weighted one- and two-dimensional marginals of one or more sample sets.

    Parameters
    ----------
    *samples
        :class:`~aspire_jax.samples.Samples` objects with the same parameters.
    parameters
        Names to show (all by default).
    labels
        One legend label per sample set.
    bins
        Histogram bins per axis.
    fig
        Existing figure with ``d * d`` axes to draw into.
    colors
        One matplotlib colour per sample set.
    """
    plt = _plt()
    names = list(parameters or samples[0].parameters)
    idx = [list(samples[0].parameters).index(p) for p in names]
    d = len(names)
    if fig is None:
        fig, _ = plt.subplots(d, d, figsize=(1.6 * d + 1, 1.6 * d + 1), squeeze=False)
    axes = np.asarray(fig.axes).reshape(d, d)
    colors = colors or [f"C{i}" for i in range(len(samples))]
    data = [_xw(s) for s in samples]
    lo = np.min([np.quantile(x[:, idx], 0.002, axis=0) for x, _ in data], axis=0)
    hi = np.max([np.quantile(x[:, idx], 0.998, axis=0) for x, _ in data], axis=0)
    for k, ((x, w), c) in enumerate(zip(data, colors)):
        for i in range(d):
            for j in range(d):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                xi = x[:, idx[i]]
                if i == j:
                    ax.hist(xi, bins=bins, range=(lo[i], hi[i]), weights=w,
                            density=True, histtype="step", color=c,
                            label=None if labels is None else labels[k])
                    ax.set_yticks([])
                else:
                    xj = x[:, idx[j]]
                    h, ex, ey = np.histogram2d(xj, xi, bins=bins, weights=w,
                                               range=[(lo[j], hi[j]), (lo[i], hi[i])])
                    ax.contour(0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1]),
                               h.T, levels=_credible_levels(h), colors=c,
                               linewidths=0.8)
                if i == d - 1:
                    ax.set_xlabel(names[j], fontsize=7)
                else:
                    ax.set_xticklabels([])
                if j == 0 and i > 0:
                    ax.set_ylabel(names[i], fontsize=7)
                elif j > 0:
                    ax.set_yticklabels([])
                ax.tick_params(labelsize=6)
    if labels is not None:
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    return fig


def _credible_levels(h, masses=(0.393, 0.865)):
    """Histogram heights enclosing the 1- and 2-sigma (2-D Gaussian) masses."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / max(flat.sum(), 1e-300)
    levels = sorted({float(flat[min(np.searchsorted(cum, m), len(flat) - 1)])
                     for m in masses})
    levels = [v for v in levels if v > 0]
    return levels or [float(flat.max()) * 0.5]


def plot_comparison(*samples, labels=None, parameters=None):
    """Corner plot of several sample sets (e.g. earlier, flow and posterior)."""
    return corner_plot(*samples, parameters=parameters, labels=labels)


def plot_history(history, fig=None):
    """Beta schedule, ESS, acceptance and log-evidence increments per iteration."""
    plt = _plt()
    if fig is None:
        fig, _ = plt.subplots(2, 2, figsize=(8, 5.5))
    ax = np.asarray(fig.axes).reshape(2, 2)
    it = np.arange(1, len(history) + 1)
    ax[0, 0].plot(it, history.beta, marker=".")
    ax[0, 0].set(xlabel="iteration", ylabel="beta", yscale="log")
    ax[0, 1].plot(it, history.ess, marker=".", label="ESS")
    ax[0, 1].set(xlabel="iteration", ylabel="ESS")
    ax[1, 0].plot(it, history.acceptance, marker=".")
    ax[1, 0].set(xlabel="iteration", ylabel="acceptance", ylim=(0, 1))
    ax[1, 1].errorbar(it, history.log_evidence_increment,
                      yerr=np.sqrt(np.maximum(history.log_evidence_increment_var, 0)),
                      marker=".", linestyle="none")
    ax[1, 1].set(xlabel="iteration", ylabel="log Z increment")
    fig.tight_layout()
    return fig


def plot_flow_loss(flow_history, fig=None):
    """Training and validation loss per epoch, with the best epoch marked."""
    plt = _plt()
    if fig is None:
        fig, _ = plt.subplots(figsize=(5, 3.5))
    ax = fig.axes[0]
    ax.plot(np.asarray(flow_history.training_loss), label="training")
    ax.plot(np.asarray(flow_history.validation_loss), label="validation")
    ax.axvline(flow_history.best_epoch, color="k", lw=0.6, ls=":")
    ax.set(xlabel="epoch", ylabel="negative log-likelihood")
    ax.legend()
    fig.tight_layout()
    return fig
