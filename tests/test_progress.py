"""Progress bars on a non-terminal and one INFO line per SMC iteration."""

import logging
import re

import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.aspire import Aspire

pytest.importorskip("tqdm")


def _log_prior(x):
    return jnp.sum(-0.5 * x**2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def _log_likelihood(x):
    return jnp.sum(-0.5 * (x - 1.5) ** 2 / 0.3**2, axis=-1)


def test_progress_on_a_pipe_and_one_log_line_per_iteration(caplog, capsys):
    aspire = Aspire(log_likelihood=_log_likelihood, log_prior=_log_prior, dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(8,))
    old = np.random.default_rng(0).normal(0.5, 0.8, (600, 2)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="aspire_jax"):
        aspire.fit(old, key=0, n_epochs=5, progress=True)
        caplog.clear()
        post, history = aspire.sample_posterior(
            300, key=1, progress=True, return_history=True, n_mcmc_steps=2)
    assert post.n_samples == 300
    err = capsys.readouterr().err
    assert "flow" in err and "smc" in err  # the bars wrote to the captured pipe
    pattern = re.compile(r"it (\d+) beta=(\S+) .*ess=(\S+) acc=(\S+) .*logZ=(\S+)")
    lines = [r.getMessage() for r in caplog.records
             if r.name == "aspire_jax.aspire" and r.levelno == logging.INFO
             and pattern.match(r.getMessage())]
    assert len(history) >= 2
    assert len(lines) == len(history)
    for i, line in enumerate(lines):
        it, beta, ess, acc, log_z = pattern.match(line).groups()
        assert int(it) == i + 1
        assert float(beta) == pytest.approx(float(history.beta[i]), rel=1e-3)
        assert float(ess) == pytest.approx(float(history.ess[i]), abs=0.1)
        assert float(acc) == pytest.approx(float(history.acceptance[i]), abs=1e-3)
        assert float(log_z.split("+-")[0]) == pytest.approx(
            float(history.log_evidence[i]), abs=1e-3)
    assert float(lines[-1].split("beta=")[1].split()[0]) == 1.0
