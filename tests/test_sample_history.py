"""The particles of every SMC iteration, kept on request."""

import numpy as np
import pytest

import problems
from aspire_jax import SampleHistory, ValidationError

RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


@pytest.fixture(scope="module")
def run(fitted):
    return fitted.sample_posterior(400, key=3, return_history=True,
                                   store_sample_history=True, **RUN)


def test_one_population_per_iteration_and_the_start(run):
    samples, history = run
    particles = history.sample_history
    assert len(history) >= 3
    assert len(particles) == len(history) + 1
    np.testing.assert_array_equal(particles.iteration, np.arange(len(history) + 1))
    np.testing.assert_allclose(particles.beta, np.r_[0.0, history.beta])
    assert particles.x.shape == (len(history) + 1, 400, problems.DIMS)
    assert particles.parameters == samples.parameters
    # The last population is what the run returns.
    np.testing.assert_array_equal(particles.x[-1], np.asarray(samples.x))
    np.testing.assert_array_equal(particles.log_likelihood[-1],
                                  np.asarray(samples.log_likelihood))
    # Every population's weights are normalised.
    np.testing.assert_allclose(
        np.exp(particles.log_weights).sum(axis=1), 1.0, rtol=1e-4)
    # The start is the flow's draws: unweighted, before any move.
    assert particles.beta[0] == 0.0
    np.testing.assert_allclose(particles.log_weights[0], -np.log(400), rtol=1e-6)


def test_not_kept_unless_asked_and_never_checkpointed(fitted, run, tmp_path):
    _, plain = fitted.sample_posterior(400, key=3, return_history=True, **RUN)
    assert plain.sample_history is None
    _, history = run
    assert "x" not in history.to_dict()
    blobs = []
    fitted.sample_posterior(400, key=3, store_sample_history=True,
                            return_history=True, checkpoint_callback=blobs.append,
                            **RUN)
    assert set(blobs[-1]["history"]) == set(plain.to_dict())


def test_resumed_run_starts_from_the_resumed_population(fitted):
    blobs = []
    fitted.sample_posterior(400, key=4, checkpoint_callback=blobs.append, **RUN)
    mid = blobs[1]
    _, history = fitted.sample_posterior(resume_from=mid, return_history=True,
                                         store_sample_history=True)
    particles = history.sample_history
    assert particles.iteration[0] == mid["iteration"] == 2
    assert particles.iteration[-1] == len(history)
    assert particles.beta[0] == pytest.approx(mid["beta"])


def test_quantiles_match_numpy_for_equal_weights(run):
    particles = run[1].sample_history
    q = particles.quantiles([0.1, 0.5, 0.9])
    assert q.shape == (len(particles), 3, problems.DIMS)
    np.testing.assert_allclose(
        q[0], np.quantile(particles.x[0], [0.1, 0.5, 0.9], axis=0, method="hazen"),
        rtol=1e-5, atol=1e-6)
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        particles.quantiles([1.5])


def test_extend_joins_and_refuses_other_shapes(run):
    particles = run[1].sample_history
    both = particles.extend(particles)
    assert len(both) == 2 * len(particles)
    other = SampleHistory.from_populations(
        [dict(iteration=0, beta=0.0, x=np.zeros((5, problems.DIMS)),
              log_weights=np.zeros(5), log_likelihood=np.zeros(5),
              log_prior=np.zeros(5))], parameters=particles.parameters)
    with pytest.raises(ValidationError, match="cannot join"):
        particles.extend(other)


def test_refused_where_there_is_nothing_to_keep(fitted):
    keep = dict(store_sample_history=True, return_history=True)
    with pytest.raises(ValidationError, match="no iterations"):
        fitted.sample_posterior(100, sampler="importance", **keep)
    with pytest.raises(ValidationError, match="driver='host'"):
        fitted.sample_posterior(100, driver="device", **keep, **RUN)
    with pytest.raises(ValidationError, match="True or False"):
        fitted.sample_posterior(100, store_sample_history="yes", **RUN)
    with pytest.raises(ValidationError, match="return_history=True"):
        fitted.sample_posterior(100, store_sample_history=True, **RUN)


def test_a_run_stopped_early_keeps_its_history(fitted):
    from aspire_jax import TemperingError

    with pytest.raises(TemperingError) as stopped:
        fitted.sample_posterior(400, key=5, return_history=True,
                                store_sample_history=np.bool_(True),
                                max_iterations=1, target_efficiency=0.99,
                                n_mcmc_steps=2)
    history = stopped.value.history
    assert len(history) == 1 and history.beta[0] < 1.0
    np.testing.assert_array_equal(history.sample_history.iteration, [0, 1])


def test_plot_sample_history(run):
    pytest.importorskip("matplotlib")
    from aspire_jax.plotting import plot_sample_history

    history = run[1]
    fig = plot_sample_history(history, parameters=["x_0", "x_2"], x_axis="beta")
    assert len(fig.axes) == 2
    assert [a.get_ylabel() for a in fig.axes] == ["x_0", "x_2"]
    fig = history.sample_history.plot(n_points=0)
    assert len(fig.axes) == problems.DIMS
    plot_sample_history(history, n_points=np.int64(10))  # NumPy ints count
    with pytest.raises(ValidationError, match="n_points"):
        plot_sample_history(history, n_points=2.5)
    with pytest.raises(ValidationError, match="no sample history"):
        plot_sample_history(run[1].__class__("smc", dict(history.data)))
    with pytest.raises(ValidationError, match="x_axis"):
        plot_sample_history(history, x_axis="time")
    with pytest.raises(ValidationError, match="unknown parameters"):
        plot_sample_history(history, parameters=["nope"])
    import matplotlib.pyplot as plt

    plt.close("all")
