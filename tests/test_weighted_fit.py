"""fit() with weighted samples: thinned by rejection to unweighted draws."""

import numpy as np
import jax.numpy as jnp
import pytest

from aspire_jax import Aspire, Samples, ValidationError

FLOW = dict(flow_kind="affine", n_layers=2, hidden_sizes=(16,))


def _aspire():
    zero = lambda x: jnp.zeros(x.shape[0])  # noqa: E731
    return Aspire(log_likelihood=zero, log_prior=zero, dims=2, **FLOW)


def _weighted(n, seed=0):
    """N(0, I) draws weighted to N(1, 0.4^2 I)."""
    x = np.random.default_rng(seed).normal(0.0, 1.0, (n, 2))
    lw = np.sum(-0.5 * ((x - 1.0) / 0.4) ** 2 + 0.5 * x**2, axis=1)
    return x, lw


def test_the_flow_learns_the_weighted_distribution(caplog):
    x, lw = _weighted(20000)
    aspire = _aspire()
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        aspire.fit(Samples.from_array(x, log_weights=lw), key=0, n_epochs=30)
    kept = int(caplog.text.split("rejection keeps ")[1].split()[0])
    assert 500 < kept < 2000
    draws = aspire.sample_flow(20000, key=1)
    # The fit sees `kept` exact draws of N(1, 0.4^2): its mean is within a few
    # standard errors of 1 (the unweighted points would give 0).
    se = 0.4 / np.sqrt(0.8 * kept)
    np.testing.assert_allclose(np.asarray(draws.mean()), 1.0, atol=6 * se)
    np.testing.assert_allclose(np.asarray(draws.std()), 0.4, rtol=0.15)


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


def test_too_few_rows_left_is_refused():
    x, lw = _weighted(300)
    with pytest.raises(ValidationError, match="thinning them by rejection keeps"):
        _aspire().fit(Samples.from_array(x, log_weights=lw), key=0)


def test_dict_and_dataframe_weights_are_used():
    x, lw = _weighted(20000)
    table = {"x_0": x[:, 0], "x_1": x[:, 1], "log_weights": lw}
    aspire = _aspire()
    aspire.fit(table, key=0, n_epochs=30)
    assert abs(float(aspire.sample_flow(20000, key=1).mean()[0]) - 1.0) < 0.15
    pd = pytest.importorskip("pandas")
    aspire = _aspire()
    aspire.fit(pd.DataFrame(table), key=0, n_epochs=30)
    assert abs(float(aspire.sample_flow(20000, key=1).mean()[0]) - 1.0) < 0.15
    with pytest.raises(ValidationError, match="log_weights must be real numbers"):
        _aspire().fit(dict(table, log_weights=lw[:10]), key=0)
