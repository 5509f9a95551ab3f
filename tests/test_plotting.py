"""Each plot returns a Figure with the expected visible axes and labels."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aspire_jax.errors import ValidationError  # noqa: E402
from aspire_jax.flows import FlowHistory  # noqa: E402
from aspire_jax.history import History  # noqa: E402
from aspire_jax.plotting import (corner_plot, plot_comparison,  # noqa: E402
                                 plot_flow_loss, plot_history, plot_marginals)
from aspire_jax.samples import Samples  # noqa: E402
from aspire_jax.smc.state import SMCInfo  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    old = Samples.from_array(rng.normal(0.0, 2.0, (400, 3)), names)
    flow = Samples.from_array(rng.normal(0.5, 1.5, (400, 3)), names)
    x = rng.normal(1.0, 1.0, (400, 3))
    post = Samples.from_array(x, names, log_weights=-0.1 * np.sum(x**2, 1))
    return old, flow, post


def _visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _history(n=5):
    f = np.float32
    infos = [SMCInfo(beta=f((i + 1) / n), delta_beta=f(1 / n), efficiency=f(0.5),
                     target_efficiency=f(0.5), ess=f(250 + i),
                     log_evidence_increment=f(-0.3 * i),
                     log_evidence_increment_var=f(0.01), log_evidence=f(-i),
                     log_evidence_var=f(0.01 * i), resampled=np.bool_(True),
                     acceptance=f(0.3), step_size=f(0.5), n_mcmc_steps=np.int32(4),
                     decorrelation=f(0.1), n_evaluations=np.int32(2000),
                     beta_search_failed=np.bool_(False), n_invalid=np.int32(0))
            for i in range(n)]
    return History.from_infos("smc", infos)


def test_corner_plot_axes_and_labels(sets):
    fig = corner_plot(*sets, labels=["earlier", "flow", "posterior"],
                      truths=[1.0, 1.0, 1.0])
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 9
    assert len(_visible(fig)) == 6
    axes = np.asarray(fig.axes).reshape(3, 3)
    assert [ax.get_xlabel() for ax in axes[2]] == ["a", "b", "c"]
    assert [axes[i, 0].get_ylabel() for i in (1, 2)] == ["b", "c"]
    legend = axes[0, 0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["earlier", "flow",
                                                          "posterior"]


def test_corner_plot_subset_and_single_parameter(sets):
    fig = corner_plot(sets[2], parameters=["c", "a"])
    assert len(_visible(fig)) == 3
    assert np.asarray(fig.axes).reshape(2, 2)[1, 0].get_xlabel() == "c"
    fig = corner_plot(sets[0], parameters=["b"])
    assert len(_visible(fig)) == 1 and fig.axes[0].get_xlabel() == "b"


def test_corner_plot_validation(sets):
    with pytest.raises(ValidationError, match="has no parameters"):
        corner_plot(sets[0], parameters=["z"])
    with pytest.raises(ValidationError, match="2 labels for 3 sample sets"):
        corner_plot(*sets, labels=["x", "y"])
    fig, _ = plt.subplots(2, 2)
    with pytest.raises(ValidationError, match="3 x 3 = 9 axes"):
        corner_plot(sets[0], fig=fig)
    with pytest.raises(ValidationError, match="at least one"):
        corner_plot()
    with pytest.raises(ValidationError, match="Samples objects"):
        corner_plot(np.ones((3, 2)))


def test_plot_comparison_kinds(sets):
    fig = plot_comparison(*sets, labels=["earlier", "flow", "posterior"])
    assert len(_visible(fig)) == 6
    fig = plot_comparison(*sets, labels=["earlier", "flow", "posterior"],
                          kind="marginals", ncols=2)
    assert len(fig.axes) == 4 and len(_visible(fig)) == 3
    assert [ax.get_xlabel() for ax in _visible(fig)] == ["a", "b", "c"]
    with pytest.raises(ValidationError, match="kind must be"):
        plot_comparison(*sets, kind="violin")


def test_plot_marginals_weighted(sets):
    fig = plot_marginals(sets[2])
    assert len(_visible(fig)) == 3
    # Normalised weighted histograms integrate to one.
    ax = _visible(fig)[0]
    (patch,) = ax.patches
    xy = patch.get_xy()
    heights, edges = xy[1:-1:2, 1], xy[::2, 0]
    area = np.sum(heights[: len(edges) - 1] * np.diff(edges)[: len(heights)])
    assert area == pytest.approx(1.0, rel=0.05)


def test_plot_history_panels():
    history = _history()
    fig = plot_history(history)
    assert len(_visible(fig)) == 4
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["beta", "ESS", "acceptance", "log Z increment"]
    assert all(ax.get_xlabel() == "iteration" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].lines[0].get_xdata()) == 5
    assert len(_visible(history.plot())) == 4
    with pytest.raises(ValidationError, match="empty"):
        plot_history(History.empty("smc"))
    # sample_posterior returns no History unless return_history=True.
    with pytest.raises(ValidationError, match="return_history=True.*NoneType"):
        plot_history(None)


def test_plot_flow_loss():
    fh = FlowHistory(training_loss=np.linspace(3, 1, 20),
                     validation_loss=np.linspace(3.2, 1.3, 20), best_epoch=17)
    fig = plot_flow_loss(fh)
    assert len(_visible(fig)) == 1
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "negative log-likelihood")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["training", "validation", "kept (epoch 17)"]
    no_valid = FlowHistory(training_loss=np.ones(4), validation_loss=np.zeros(0),
                           best_epoch=3)
    texts = [t.get_text() for t in plot_flow_loss(no_valid).axes[0].get_legend()
             .get_texts()]
    assert texts == ["training", "kept (epoch 3)"]
    with pytest.raises(ValidationError, match="FlowHistory.*got NoneType"):
        plot_flow_loss(None)


def test_ranges_follow_the_weights_and_odd_columns_plot():
    from aspire_jax.plotting import corner_plot, plot_marginals

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1))
    s = Samples.from_array(x, ["a"], log_weights=-0.5 * ((x[:, 0] - 3) / 0.3) ** 2)
    fig = plot_marginals(s)
    lo, hi = fig.axes[0].get_xlim()
    w = np.asarray(s.weights)
    inside = (x[:, 0] >= lo) & (x[:, 0] <= hi)
    assert w[inside].sum() > 0.99  # the unweighted range held 87 % of the weight
    constant = Samples.from_array(np.column_stack([np.full(50, 1e20),
                                                   rng.normal(size=50)]))
    corner_plot(constant)
    for bins in (0, 2.5, True):
        with pytest.raises(ValidationError, match="bins"):
            plot_marginals(s, bins=bins)
    with pytest.warns(UserWarning, match="x is infinite in 1 of 10 samples"):
        bad = Samples.from_array(np.where(np.arange(10)[:, None] == 3, np.inf, 1.0))
    with pytest.raises(ValidationError, match="non-finite"):
        corner_plot(bad)
    plt.close("all")


def test_methods_of_samples_and_flow_history(sets):
    post = sets[2]
    weighted = post.plot_corner(parameters=["a", "b"], bins=20)
    assert len(_visible(weighted)) == 3
    raw = post.plot_corner(parameters=["a", "b"], bins=20, include_weights=False)
    # The weights (exp(-0.1 |x|^2)) pull the first marginal towards zero:
    # the weighted and raw histograms of the same points must differ.
    # (step histograms: one polygon per set, its outline the bar heights)
    h_w = weighted.axes[0].patches[0].get_xy()[:, 1]
    h_r = raw.axes[0].patches[0].get_xy()[:, 1]
    assert h_w.shape == h_r.shape and not np.allclose(h_w, h_r)
    with pytest.raises(ValidationError, match="include_weights"):
        post.plot_corner(include_weights="no")
    fh = FlowHistory(training_loss=np.linspace(3, 1, 5),
                     validation_loss=np.linspace(3.2, 1.3, 5), best_epoch=4)
    assert len(_visible(fh.plot_loss())) == 1
