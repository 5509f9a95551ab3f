"""The facade's choice of move space, preconditioning="auto"."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import problems
from aspire_jax import Aspire, AspireFile
from aspire_jax.aspire import AUTO_FLOW_GAIN_PER_DIM
from aspire_jax.flows import FlowHistory

SMALL = dict(n_layers=2, hidden_sizes=(32, 32))


def _banana(n, seed):
    """A 2-d twisted Gaussian: x2 = 0.5 (x1^2 - 1) + 0.2 noise."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal(n)
    x2 = 0.5 * (x1**2 - 1.0) + 0.2 * rng.standard_normal(n)
    return np.stack([x1, x2], axis=1).astype(np.float32)


def _aspire(dims, **kw):
    def gauss(x):
        return jnp.sum(-0.5 * x**2, axis=-1)

    return Aspire(log_likelihood=gauss, log_prior=gauss, dims=dims, **SMALL, **kw)


@pytest.mark.parametrize("seed", [0, 1])
def test_curved_earlier_posterior_moves_in_latent_space(seed):
    aspire = _aspire(2)
    history = aspire.fit(_banana(2000, seed), key=seed, n_epochs=60)
    # The Gaussian misses the curvature by far more than the threshold.
    assert history.gain_over_gaussian() / 2 > 2 * AUTO_FLOW_GAIN_PER_DIM
    assert aspire.auto_preconditioning() == "flow"


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_earlier_posterior_stays_in_whitened_space(seed):
    aspire = _aspire(problems.DIMS)
    history = aspire.fit(problems.earlier_samples(2000, seed), key=seed, n_epochs=60)
    # A flow cannot beat the maximum-likelihood Gaussian by much on Gaussian
    # data: a gain of a few hundredths of a nat per dimension at most.
    assert history.gain_over_gaussian() / problems.DIMS < AUTO_FLOW_GAIN_PER_DIM / 2
    assert aspire.auto_preconditioning() == "standard"


def test_default_resolves_and_is_recorded():
    aspire = _aspire(2)
    aspire.fit(_banana(1000, 3), key=0, n_epochs=40)
    aspire.sample_posterior(200, key=1, progress=False, n_mcmc_steps=2)
    assert aspire._last_sampler_config["options"]["preconditioning"] == "flow"
    aspire.sample_posterior(200, key=1, progress=False, n_mcmc_steps=2,
                            preconditioning="standard")
    assert aspire._last_sampler_config["options"]["preconditioning"] == "standard"


def test_no_validation_set_or_periodic_falls_back_to_whitened_space():
    aspire = _aspire(2)
    aspire.fit(_banana(500, 4), key=0, n_epochs=5, validation_fraction=0.0)
    assert math.isnan(aspire.flow_history.gain_over_gaussian())
    assert aspire.auto_preconditioning() == "standard"
    periodic = _aspire(2, parameters=["a", "b"],
                       prior_bounds=[[-10.0, 10.0], [-10.0, 10.0]],
                       periodic_parameters=["a"])
    periodic.fit(_banana(1000, 5), key=0, n_epochs=40)
    assert periodic.auto_preconditioning() == "standard"


def test_history_round_trips_and_old_dicts_load(tmp_path):
    aspire = _aspire(2)
    history = aspire.fit(_banana(500, 6), key=0, n_epochs=5)
    again = FlowHistory.from_dict(history.to_dict())
    assert again.gaussian_validation_loss == history.gaussian_validation_loss
    old = {k: v for k, v in history.to_dict().items()
           if k != "gaussian_validation_loss"}
    assert math.isnan(FlowHistory.from_dict(old).gaussian_validation_loss)
    # The history travels with the flow, so a reloaded flow decides the same.
    path = tmp_path / "flow.h5"
    with AspireFile(path, "w") as f:
        aspire.save_flow(f)
    other = _aspire(2)
    with AspireFile(path, "r") as f:
        other.load_flow(f)
    assert other.flow_history.gain_over_gaussian() == pytest.approx(
        history.gain_over_gaussian())
    assert other.auto_preconditioning() == aspire.auto_preconditioning()
