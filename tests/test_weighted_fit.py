"""Fitting the flow to weighted samples: weighted maximum likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax import Aspire, Samples, ValidationError
from aspire_jax.flows import Flow, FlowConfig, fit
from aspire_jax.transforms import fit_transform

FLOW = dict(flow_kind="affine", n_layers=2, hidden_sizes=(16,))


def _aspire():
    zero = lambda x: jnp.zeros(x.shape[0])  # noqa: E731
    return Aspire(log_likelihood=zero, log_prior=zero, dims=2, **FLOW)


def _weighted(n, seed=0):
    """N(0, I) draws weighted to N(1, 0.4^2 I)."""
    x = np.random.default_rng(seed).normal(0.0, 1.0, (n, 2))
    lw = np.sum(-0.5 * ((x - 1.0) / 0.4) ** 2 + 0.5 * x**2, axis=1)
    return x, lw


def _ess(lw):
    w = np.exp(lw - lw.max())
    return w.sum() ** 2 / np.sum(w**2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_flow_learns_the_weighted_distribution(seed, caplog):
    x, lw = _weighted(20000, seed)
    aspire = _aspire()
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        aspire.fit(Samples.from_array(x, log_weights=lw), key=seed, n_epochs=30)
    assert "effective sample size" in caplog.text
    draws = aspire.sample_flow(20000, key=seed + 10)
    # The weighted training rows carry about ess exact draws of N(1, 0.4^2),
    # 80 % of them in training: the flow's mean is within a few standard
    # errors of 1 (the unweighted points would give 0) and its spread that of
    # the target to the precision of a standard deviation from that many
    # draws, sd(s) / s = 1 / sqrt(2 n).
    n_eff = 0.8 * _ess(lw)
    se = 0.4 / np.sqrt(n_eff)
    np.testing.assert_allclose(np.asarray(draws.mean()), 1.0, atol=5 * se)
    np.testing.assert_allclose(np.asarray(draws.std()), 0.4,
                               rtol=5 / np.sqrt(2 * n_eff))


def test_equal_weights_change_nothing():
    x, _ = _weighted(1000)
    a, b = _aspire(), _aspire()
    a.fit(x.astype(np.float32), key=2, n_epochs=3)
    b.fit(Samples.from_array(x.astype(np.float32), log_weights=np.full(1000, -3.0)),
          key=2, n_epochs=3)
    np.testing.assert_array_equal(np.asarray(a.sample_flow(50, key=0).x),
                                  np.asarray(b.sample_flow(50, key=0).x))


def test_zero_weight_rows_are_dropped():
    x, _ = _weighted(1000)
    lw = np.where(x[:, 0] > 0, 0.0, -np.inf)
    aspire = _aspire()
    aspire.fit(Samples.from_array(x, log_weights=lw), key=0, n_epochs=3)
    assert aspire._held_out.min(axis=0)[0] > 0


def test_a_small_effective_sample_warns_as_few_rows_do(caplog):
    # Weighted or not, fewer than 100 (effective) samples fit with a warning.
    x, lw = _weighted(300)
    assert 2 < _ess(lw) < 100
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _aspire().fit(Samples.from_array(x, log_weights=lw), key=0, n_epochs=2)
    assert any(f"fitted to 300 samples (an effective {_ess(lw):.0f})"
               in r.getMessage() for r in caplog.records)


def test_one_sample_holding_all_the_weight_is_refused():
    x, _ = _weighted(300)
    lw = np.full(300, -60.0)
    lw[7] = 0.0
    with pytest.raises(ValidationError, match="effective sample size of 1.00"):
        _aspire().fit(Samples.from_array(x, log_weights=lw), key=0)


def test_dict_and_dataframe_weights_are_used():
    x, lw = _weighted(20000)
    table = {"x_0": x[:, 0], "x_1": x[:, 1], "log_weights": lw}
    aspire = _aspire()
    aspire.fit(table, key=0, n_epochs=30)
    assert abs(float(aspire.sample_flow(20000, key=1).mean()[0]) - 1.0) < 0.1
    pd = pytest.importorskip("pandas")
    aspire = _aspire()
    aspire.fit(pd.DataFrame(table), key=0, n_epochs=30)
    assert abs(float(aspire.sample_flow(20000, key=1).mean()[0]) - 1.0) < 0.1
    with pytest.raises(ValidationError, match="log_weights must be real numbers"):
        _aspire().fit(dict(table, log_weights=lw[:10]), key=0)


# ------------------------------------------------------------ library level
def _flow():
    return Flow(FlowConfig(n_dims=2, kind="affine", n_layers=2, hidden_sizes=(8,)))


def test_weighted_whitening_uses_weighted_moments():
    x, lw = _weighted(5000)
    w = np.exp(lw - lw.max())
    t = fit_transform(x, weights=w)
    mean = np.average(x, axis=0, weights=w)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(np.asarray(t.shift), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(t.scale), std, rtol=1e-5)
    # Scaling all weights changes nothing.
    t2 = fit_transform(x, weights=7.5 * w)
    np.testing.assert_allclose(np.asarray(t2.shift), np.asarray(t.shift), rtol=1e-6)


def test_validation_loss_is_the_weighted_held_out_mean():
    x, lw = _weighted(2000)
    x = x.astype(np.float32)
    w = np.exp(lw - lw.max())
    flow = _flow()
    params = flow.init(jax.random.key(0), x, weights=w)
    params, history = fit(flow, params, jax.random.key(1), x, n_epochs=3,
                          weights=w)
    idx = history.held_out_index
    expected = -np.average(history.held_out_log_q, weights=w[idx])
    np.testing.assert_allclose(history.best_validation_loss, expected, rtol=1e-5)
    # Rows are drawn in proportion to the weights: an epoch holds the
    # training rows' effective sample size, fewer than the 1600 rows.
    assert np.isfinite(history.gaussian_validation_loss)


@pytest.mark.parametrize("weights, match", [
    (np.ones(10), "shape"),
    (-np.ones(500), ">= 0"),
    (np.full(500, np.nan), ">= 0"),
    (np.zeros(500), "at least one > 0"),
    (np.array(["a"] * 500), "real numbers"),
])
def test_malformed_weights_are_refused(weights, match):
    x = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    flow = _flow()
    with pytest.raises(ValidationError, match=match):
        flow.init(jax.random.key(0), x, weights=weights)
    params = flow.init(jax.random.key(0), x)
    with pytest.raises(ValidationError, match=match):
        fit(flow, params, jax.random.key(1), x, n_epochs=1, weights=weights)


def test_held_out_rows_without_weight_are_refused():
    x = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    flow = _flow()
    params = flow.init(jax.random.key(0), x)
    w = np.zeros(500)
    w[0] = 1.0
    with pytest.raises(ValidationError, match="rows all have weight 0"):
        fit(flow, params, jax.random.key(1), x, n_epochs=1, weights=w)
