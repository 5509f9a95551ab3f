"""NaN and +inf from the user's functions during a run: rejected and counted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import problems
from aspire_jax.io import state_dict_from_bytes, state_to_bytes
from aspire_jax.kernels import KernelState, build_kernel

RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)
EDGE = 1.7  # the likelihood is +inf beyond x_0 > EDGE: a few % of the posterior


def _broken(x):
    return jnp.where(x[:, 0] > EDGE, jnp.inf, problems.log_likelihood(x))


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


@pytest.fixture(scope="module")
def broken(fitted):
    aspire = problems.make_aspire(log_likelihood=_broken)
    aspire.flow_params = fitted.flow_params
    return aspire


def _count(x):
    return int(np.sum(np.asarray(x)[:, 0] > EDGE))


@pytest.mark.parametrize("kernel", ["tpcn", "pcn", "rwmh", "mala"])
def test_kernels_count_nan_proposals(kernel):
    k = build_kernel(kernel, None)
    u = jax.random.normal(jax.random.key(0), (500, 2))

    def log_density(u):
        logp = -0.5 * jnp.sum(u**2, axis=1)
        return jnp.where(u[:, 0] > 1.0, jnp.nan, logp), None

    logp, _ = log_density(u)
    state = KernelState(u, jnp.where(jnp.isnan(logp), -jnp.inf, logp), None, None)
    params = k.fit(k.init(u), u)
    if k.uses_grad:
        state = k.prepare(state, log_density)
    new, info = k.step(jax.random.key(1), state, log_density, params)
    assert int(info.n_invalid) > 0
    # Every such proposal was rejected: no particle sits where the density is NaN
    # unless it started there.
    moved = np.any(np.asarray(new.position) != np.asarray(u), axis=1)
    assert not np.any(np.asarray(new.position)[moved, 0] > 1.0)


def test_smc_counts_and_warns(broken, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _, history = broken.sample_posterior(1000, key=1, return_history=True, **RUN)
    state = broken._last_state
    total = int(state.n_invalid)
    per_iteration = np.asarray(history.n_invalid)
    assert per_iteration.sum() > 0
    # The rest were met by the initial draws from the flow.
    initial = total - int(per_iteration.sum())
    assert initial > 0
    assert f"NaN or +inf at {total} of {int(state.n_evaluations)}" in caplog.text
    assert _count(state.x) == 0


def test_importance_counts_and_warns(broken, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        samples = broken.sample_posterior(1000, key=2, sampler="importance")
    n_bad = _count(samples.x)
    assert n_bad > 0
    assert f"NaN or +inf at {n_bad} of 1000" in caplog.text


def test_defined_functions_count_nothing(fitted, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _, history = fitted.sample_posterior(400, key=3, return_history=True, **RUN)
    assert int(fitted._last_state.n_invalid) == 0
    assert not np.any(history.n_invalid)
    assert "NaN or +inf" not in caplog.text


def test_checkpoint_from_before_the_count_resumes(fitted):
    blobs = []
    full = fitted.sample_posterior(400, key=4, return_history=True,
                                   checkpoint_callback=blobs.append, **RUN)
    mid = blobs[1]
    old_state = dict(state_dict_from_bytes(mid["state"], wrap_keys=True))
    del old_state["n_invalid"]
    old_history = {k: v for k, v in mid["history"].items() if k != "n_invalid"}
    old = dict(mid, state=state_to_bytes(old_state), history=old_history)
    samples, history = fitted.sample_posterior(resume_from=old, return_history=True)
    np.testing.assert_array_equal(np.asarray(samples.x), np.asarray(full[0].x))
    assert float(samples.log_evidence) == float(full[0].log_evidence)
    # The old iterations read as zero in the merged history.
    assert len(history.n_invalid) == len(full[1])
    assert not np.any(history.n_invalid)


def test_importance_with_no_finite_weight_says_so(fitted):
    aspire = problems.make_aspire(
        log_likelihood=lambda x: jnp.where(x[:, 0] > -50.0, -jnp.inf, 0.0))
    aspire.flow_params = fitted.flow_params
    from aspire_jax import ValidationError

    with pytest.raises(ValidationError, match="zero posterior density"):
        aspire.sample_posterior(200, key=0, sampler="importance")


def test_final_moves_are_counted(broken, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        broken.sample_posterior(1000, key=1, n_final_samples=600,
                                preconditioning="standard", **RUN)
    state = broken._last_state
    total = broken.n_likelihood_evaluations
    # The final moves of 600 particles add at least one sweep each.
    assert total >= int(state.n_evaluations) + 600
    warned = caplog.text.split("NaN or +inf at ")[1].split(" points")[0]
    n_bad, n_all = (int(v) for v in warned.split(" of "))
    # The total also counts the four points that probe the functions before
    # the run (where a NaN is an error, not a warning).
    assert n_all == total - 4
    assert n_bad > int(state.n_invalid)


def test_warned_before_a_run_stops_early(broken, caplog):
    from aspire_jax import TemperingError

    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        with pytest.raises(TemperingError):
            broken.sample_posterior(1000, key=1, max_iterations=1,
                                    target_efficiency=0.99, n_mcmc_steps=2)
    assert "NaN or +inf at" in caplog.text
