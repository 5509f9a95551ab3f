"""Priors with non-box supports, the MCMC sampler's checks, weights and
options given in NumPy types, and warnings for results the error bar cannot
vouch for."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import problems
from aspire_jax import Aspire, Samples, ValidationError, wrap_numpy_likelihood
from aspire_jax.smc import SMCConfig

RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


# ------------------------------------------------------- ordering constraint
def _ordered_prior(x):
    inside = (x[:, 0] > x[:, 1]) & jnp.all((x > 0) & (x < 1), axis=-1)
    return jnp.where(inside, jnp.log(2.0), -jnp.inf)


def _ordered_likelihood(x):
    r = (x - jnp.array([0.6, 0.4])) / 0.1
    return -0.5 * jnp.sum(r**2, axis=-1) - jnp.log(2 * jnp.pi * 0.01)


def test_a_prior_constraint_bounds_cannot_express(caplog):
    """m1 > m2 on the unit square: the flow puts some initial particles on the
    wrong side, which the first reweighting gives weight 0; log Z is right."""
    exact = np.log(2 * norm.cdf(0.2 / (0.1 * np.sqrt(2))))
    rng = np.random.default_rng(0)
    old = rng.normal([0.62, 0.42], 0.12, (6000, 2))
    old = old[(old[:, 0] > old[:, 1]) & np.all((old > 0) & (old < 1), 1)][:3000]
    aspire = Aspire(log_likelihood=_ordered_likelihood, log_prior=_ordered_prior,
                    dims=2, prior_bounds=np.array([[0, 1], [0, 1]]), n_layers=2,
                    hidden_sizes=(16, 16))
    aspire.fit(old, key=0, n_epochs=30)
    pulls = []
    with caplog.at_level(logging.INFO, logger="aspire_jax.aspire"):
        for k in range(4):
            post = aspire.sample_posterior(1000, key=k)
            pulls.append((float(post.log_evidence) - exact)
                         / float(post.log_evidence_error))
            x = np.asarray(post.resample(k).x)
            assert np.all(x[:, 0] > x[:, 1])
    assert "outside the prior's support" in caplog.text
    # Each estimate within four of its reported errors; their RMS within
    # what four unit-variance pulls allow (chi-square_4 / 4 < 3.3 at 1 %).
    assert np.all(np.abs(pulls) < 4), pulls
    assert np.sqrt(np.mean(np.square(pulls))) < np.sqrt(3.3), pulls


def test_no_initial_particle_with_positive_density_is_refused(fitted):
    nowhere = problems.make_aspire(
        log_prior=lambda x: jnp.where(x[:, 0] > 50.0, 0.0, -jnp.inf))
    nowhere.flow_params = fitted.flow_params
    with pytest.raises(ValidationError, match="every initial particle"):
        nowhere.sample_posterior(200, key=0, **RUN)


# ------------------------------------------------------------------ mcmc
def test_mcmc_refuses_a_likelihood_that_is_nowhere_finite():
    aspire = problems.make_aspire(
        log_likelihood=lambda x: jnp.full(x.shape[0], -jnp.inf))
    aspire.fit(problems.earlier_samples(), key=0, n_epochs=3)
    with pytest.raises(ValidationError):
        aspire.sample_posterior(200, sampler="mcmc", key=0, n_steps=5, n_burnin=2)


def test_mcmc_counts_undefined_likelihood_values(caplog):
    def log_likelihood(x):
        return jnp.where(x[:, 0] > 2.3, jnp.nan, problems.log_likelihood(x))

    aspire = problems.make_aspire(log_likelihood=log_likelihood)
    aspire.fit(problems.earlier_samples(), key=0, n_epochs=3)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        post = aspire.sample_posterior(300, sampler="mcmc", key=0, n_steps=10,
                                       n_burnin=10)
    assert "NaN or +inf" in caplog.text
    x = np.asarray(post.x)[np.isfinite(np.asarray(post.log_weights_normalised))]
    assert np.all(x[:, 0] <= 2.3)


def test_mcmc_warns_of_chains_that_never_moved(fitted, caplog):
    """A chain that never accepted a move is a draw of the flow: with one
    sweep most chains are (random-walk acceptance is about a quarter); with
    the default 150 none should be."""
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        fitted.sample_posterior(200, sampler="mcmc", key=0, n_steps=1, n_burnin=0)
    assert "chains never accepted a move in 1 sweeps" in caplog.text
    # After one sweep the chains are where they started.
    assert "still correlate with their starting draws" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        fitted.sample_posterior(200, sampler="mcmc", key=0)
    assert "never accepted" not in caplog.text
    assert "still correlate" not in caplog.text


def test_mcmc_warns_of_chains_that_had_not_settled(caplog):
    """Earlier samples seven posterior sds from the new posterior: pCN's
    reference, fitted to chains still on their way, leaves them crawling,
    and the mean comes out far off. The run must say so (it had said
    nothing); random-walk chains from the same flow settle and say nothing."""
    mean, sd = problems.posterior_moments()
    far = problems.make_aspire()
    far.fit(problems.earlier_samples() * 0.2 + (mean + 3.5), **problems.FIT_SETTINGS)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        post = far.sample_posterior(1000, sampler="mcmc", kernel="pcn", key=1)
    off = (np.asarray(post.mean()) - mean) / sd
    assert off.min() > 0.5  # the bias the warning is about
    assert "had not settled by the end of the 50 burn-in sweeps" in caplog.text
    assert "the log posterior density" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        post = far.sample_posterior(1000, sampler="mcmc", key=1, n_burnin=150)
    assert "settled" not in caplog.text and "accepted" not in caplog.text
    assert np.all(np.abs(np.asarray(post.mean()) - mean) < 5 * sd / np.sqrt(1000))


def test_mcmc_history_claims_no_evidence_and_counts_each_sweep():
    def log_likelihood(x):  # NaN on a slab the chains cross
        ll = problems.log_likelihood(x)
        return jnp.where(jnp.abs(x[:, 0] - 1.2) < 0.05, jnp.nan, ll)

    aspire = problems.make_aspire(log_likelihood=log_likelihood)
    aspire.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
    before = aspire.n_likelihood_evaluations
    _, history = aspire.sample_posterior(200, sampler="mcmc", key=0, n_steps=20,
                                         n_burnin=10, return_history=True)
    assert len(history) == 30
    for field in ("log_evidence", "log_evidence_var", "ess", "efficiency"):
        assert np.all(np.isnan(np.asarray(getattr(history, field)))), field
    np.testing.assert_array_equal(history.n_evaluations, 200)
    # The starting draws are evaluated too, outside the sweeps.
    assert aspire.n_likelihood_evaluations - before >= 200 * 31
    assert np.sum(history.n_invalid) > 0
    import matplotlib

    matplotlib.use("Agg")
    fig = history.plot()
    assert fig.axes[0].get_xlabel() == "sweep"


def test_mcmc_checks_its_options_and_mala_needs_gradients(fitted):
    for bad in (dict(n_steps=10.7), dict(n_steps="10"), dict(n_burnin=1.5),
                dict(n_burnin=-1), dict(n_steps=0)):
        with pytest.raises(ValidationError, match="must be an integer"):
            fitted.sample_posterior(100, sampler="mcmc", key=0, **bad)
    host = problems.make_aspire(log_likelihood=wrap_numpy_likelihood(
        lambda x: np.asarray(problems.log_likelihood(jnp.asarray(x)))))
    host.flow_params = fitted.flow_params
    with pytest.raises(ValidationError, match="kernel='tpcn'"):
        host.sample_posterior(100, sampler="mcmc", kernel="mala", key=0)


# --------------------------------------------------------------- weights
def test_float64_log_weights_keep_their_precision_in_float32_samples():
    x = np.random.default_rng(0).normal(size=(2000, 2))
    lw = np.sum(-0.5 * ((x - 1) / 0.5) ** 2 + 0.5 * x**2, axis=1)
    expected = np.exp(lw - lw.max())
    expected /= expected.sum()
    for offset in (0.0, -3e8, 1e10):
        s = Samples.from_array(x, log_weights=lw + offset)
        np.testing.assert_allclose(np.asarray(s.weights), expected, rtol=1e-4,
                                   atol=1e-9)
    # Finite float64 values beyond float32's range are finite weights too.
    assert np.all(np.isfinite(Samples.from_array(x, log_weights=lw * 1e300).weights))
    with pytest.raises(ValidationError, match="must be numbers"):
        Samples.from_array(x, log_weights=np.ones(2000, bool))


def test_rows_of_weight_zero_are_dropped_before_they_are_checked():
    x = np.random.default_rng(0).normal(size=(3000, 2))
    lw = np.where(np.abs(x[:, 0]) < 2.5, 0.0, -np.inf)
    x[np.abs(x[:, 0]) >= 2.5, 1] = np.nan  # rows of weight 0 may be anything
    aspire = Aspire(log_likelihood=problems.log_likelihood,
                    log_prior=problems.log_prior, dims=2, flow_kind="affine",
                    n_layers=2, hidden_sizes=(8,),
                    prior_bounds=np.array([[-2.5, 2.5], [-np.inf, np.inf]]))
    aspire.fit(Samples.from_array(np.nan_to_num(x, nan=0.0), log_weights=lw),
               key=0, n_epochs=2)
    table = {"x_0": x[:, 0], "x_1": x[:, 1], "log_weights": lw}
    aspire.fit(table, key=0, n_epochs=2)
    with pytest.raises(ValidationError, match="non-finite values"):
        aspire.fit({**table, "log_weights": np.zeros(3000)}, key=0, n_epochs=2)


# ----------------------------------------------------------------- options
def test_numpy_scalars_are_numbers_and_booleans_are_not():
    c = SMCConfig(n_particles=np.int64(100), max_iterations=np.int32(50),
                  target_efficiency=np.float32(0.5), n_mcmc_steps=np.int64(3),
                  batch_size=np.int64(50))
    assert c == SMCConfig(n_particles=100, max_iterations=50, target_efficiency=0.5,
                          n_mcmc_steps=3, batch_size=50)
    assert type(c.max_iterations) is int
    with pytest.raises(ValidationError, match="max_iterations must be an integer"):
        SMCConfig(n_particles=100, max_iterations=True)


def test_an_option_given_twice_is_refused(fitted):
    with pytest.raises(ValidationError, match="set the same thing"):
        fitted.sample_posterior(100, key=0, n_mcmc_steps=7,
                                sampler_kwargs={"n_steps": 3})


# ---------------------------------------------------------------- warnings
def test_large_log_likelihoods_warn_of_their_float_resolution(caplog):
    offset = -3e6
    aspire = problems.make_aspire(
        log_likelihood=lambda x: problems.log_likelihood(x) + offset)
    aspire.fit(problems.earlier_samples(), key=0, n_epochs=3)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.sample_posterior(300, key=0, sampler="importance")
    assert "log Z is quantised" in caplog.text
    # The float32 spacing there (3e6 lies in [2**21, 2**22)).
    assert "resolves steps of 0.25," in caplog.text


def test_no_resolution_warning_for_ordinary_values(fitted, caplog):
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        fitted.sample_posterior(300, key=0, **RUN)
    assert "quantised" not in caplog.text


def test_mala_in_native_coordinates_of_bounded_parameters_warns(caplog):
    aspire = Aspire(log_likelihood=problems.log_likelihood,
                    log_prior=problems.log_prior, dims=2, flow_kind="affine",
                    n_layers=2, hidden_sizes=(8,),
                    prior_bounds=np.array([[-20.0, 20.0], [-20.0, 20.0]]))
    aspire.fit(problems.earlier_samples(dims=2), key=0, n_epochs=3)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.sample_posterior(200, key=0, kernel="mala", preconditioning="none",
                                **RUN)
    assert "preconditioning='standard'" in caplog.text


# ------------------------------------------------------- host-side failures
def test_a_host_likelihood_that_fails_mid_run_raises_its_own_exception(
        fitted, tmp_path, caplog):
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] > 12 and len(x) > 4:  # the four-point probe passes
            raise FileNotFoundError("detector data vanished")
        return np.asarray(problems.log_likelihood(jnp.asarray(x)))

    host = problems.make_aspire(log_likelihood=wrap_numpy_likelihood(flaky))
    host.flow_params = fitted.flow_params
    path = tmp_path / "run.h5"
    with (caplog.at_level(logging.ERROR, logger="jax._src.callback"),
          pytest.raises(FileNotFoundError, match="detector data vanished") as info):
        host.sample_posterior(300, key=0, checkpoint_path=path, kernel="rwmh",
                              **RUN)
    # JAX's own traceback of the failed callback is not logged: the exception
    # reaches the caller whole.
    assert "pure_callback failed" not in caplog.text
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "log_likelihood host function during the SMC run" in notes
    assert "resume_from_file" in notes
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    post = resumed.sample_posterior()
    assert np.isfinite(float(post.log_evidence))
    with pytest.raises(FileNotFoundError) as info:
        host.sample_posterior(200, key=0, sampler="importance")
    assert "during importance sampling" in " ".join(info.value.__notes__)


# ------------------------------------------------------ training rows on bounds
def test_training_values_on_a_bound_are_moved_inside(caplog):
    rng = np.random.default_rng(0)
    phi = rng.uniform(0.0, 2 * np.pi, 500)
    phi[:3] = [0.0, 2 * np.pi, 2 * np.pi - 1e-9]  # closed end; float32 rounds up
    x = np.column_stack([phi, rng.uniform(0.0, 1.0, 500)])
    x[3, 1] = 1.0 - 1e-9
    aspire = Aspire(log_likelihood=lambda x: jnp.zeros(x.shape[0]),
                    log_prior=lambda x: jnp.zeros(x.shape[0]), dims=2,
                    prior_bounds=np.array([[0.0, 2 * np.pi], [0.0, 1.0]]),
                    periodic_parameters=["x_0"], flow_kind="affine", n_layers=2,
                    hidden_sizes=(8,))
    with caplog.at_level(logging.INFO, logger="aspire_jax.aspire"):
        aspire.fit(x, key=0, n_epochs=2)
    assert "moved one float step inside" in caplog.text
    held = aspire.sample_flow(100, key=0)
    assert np.all(np.isfinite(np.asarray(held.log_q)))


def test_periodic_training_values_in_another_range_are_wrapped():
    """An angle recorded in (-pi, pi] trains a flow on [0, 2 pi): the values
    are wrapped, not refused; a bounded parameter outside its range still is."""
    rng = np.random.default_rng(1)
    phi = np.mod(rng.normal(0.0, 0.4, 600) + np.pi, 2 * np.pi) - np.pi
    assert (phi < 0).mean() > 0.3
    x = np.column_stack([phi, rng.uniform(0.1, 0.9, 600)])
    aspire = Aspire(log_likelihood=lambda x: jnp.zeros(x.shape[0]),
                    log_prior=lambda x: jnp.zeros(x.shape[0]), dims=2,
                    prior_bounds=np.array([[0.0, 2 * np.pi], [0.0, 1.0]]),
                    periodic_parameters=["x_0"], flow_kind="affine", n_layers=2,
                    hidden_sizes=(8,))
    aspire.fit(x, key=0, n_epochs=2)
    held = np.asarray(aspire._held_out)
    assert np.all((held[:, 0] >= 0) & (held[:, 0] < 2 * np.pi))
    np.testing.assert_allclose(np.cos(held[:, 0]),
                               np.cos(x[aspire.flow_history.held_out_index, 0]),
                               atol=1e-5)
    bad = x.copy()
    bad[5, 1] = 1.5
    with pytest.raises(ValidationError, match="outside prior_bounds.*'x_1'"):
        aspire.fit(bad, key=0, n_epochs=2)


def test_few_training_samples_warn(caplog):
    aspire = problems.make_aspire()
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.fit(problems.earlier_samples(n=50), key=0, n_epochs=2)
    assert "fitted to 50 samples" in caplog.text


def test_bounds_float32_cannot_tell_apart():
    if jax.config.jax_enable_x64:
        pytest.skip("float64 tells them apart")
    f = problems.log_prior
    t0 = 1126259462.4
    with pytest.raises(ValidationError, match="one and the same number in float32"):
        Aspire(log_likelihood=f, log_prior=f, dims=2, parameters=["t", "m"],
               prior_bounds={"t": (t0 - 0.1, t0 + 0.1)})
    with pytest.warns(UserWarning, match="about 16 float32 values"):
        Aspire(log_likelihood=f, log_prior=f, dims=2, parameters=["t", "m"],
               prior_bounds={"t": (t0 - 1000, t0 + 1000)})


@pytest.mark.parametrize("n, warned", [(5, True), (100, False)])
def test_a_handful_of_particles_is_warned_about(fitted, n, warned, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        fitted.sample_posterior(n, sampler="importance", key=0)
    said = any(f"{n} particles: below 100" in r.getMessage() for r in caplog.records)
    assert said == warned


def test_every_likelihood_evaluation_is_counted(fitted, caplog):
    # The four probe points of the user's functions count too.
    fitted.sample_posterior(300, sampler="importance", key=0)
    assert fitted.n_likelihood_evaluations == 300 + 4
    # A batch size that leaves a partial batch says what the padding costs.
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        fitted.sample_posterior(200, key=0, batch_size=70, **RUN)
    assert any("batch_size=70 does not divide 200 particles: each evaluation runs "
               "3 batches of 70 rows, 10 of them padding" in r.getMessage()
               and "batch_size=67 runs 3 batches and pads 1"
               in r.getMessage() for r in caplog.records)


def test_padding_advice_under_a_mesh_is_a_multiple_of_the_devices(caplog):
    from aspire_jax.aspire import _warn_batch_padding

    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _warn_batch_padding(70, 200, devices=4)
    said = [r.getMessage() for r in caplog.records]
    assert any("batch_size=68 runs 3 batches and pads 4" in m for m in said)
    assert any("not a multiple of the 4 devices" in m and "such as 72" in m
               for m in said)
    # Where no smaller size gives as few batches, a divisor is named rather
    # than the size given.
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _warn_batch_padding(7, 500)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "batch_size=5 divides it" in said and "batch_size=7 runs" not in said
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _warn_batch_padding(50, 200, devices=2)   # divides, and spreads evenly
        _warn_batch_padding(300, 200, devices=4)  # one batch: nothing to spread
    assert not caplog.records


def test_counts_past_int32_are_refused_before_any_work(fitted):
    with pytest.raises(ValidationError, match="int32"):
        fitted.sample_posterior(1000, sampler="mcmc", key=0, n_steps=2_200_000,
                                n_burnin=0)
    with pytest.raises(ValidationError, match="at most 2\\*\\*31 - 1"):
        fitted.sample_posterior(2**31, sampler="importance", key=0)
    # Padding to whole batches counts too.
    with pytest.raises(ValidationError, match="pads 2147483647 to 2147483648 rows"):
        fitted.sample_posterior(2**31 - 1, sampler="importance", key=0,
                                batch_size=2**30)


def test_importance_and_mcmc_in_batches_give_the_same_run(fitted):
    # batch_size bounds memory; the draws, densities and moves are the same
    # (padding rows of a partial last batch are evaluated and counted).
    for sampler, kw in (("importance", {}), ("mcmc", dict(n_steps=5, n_burnin=4))):
        whole = fitted.sample_posterior(300, sampler=sampler, key=3, **kw)
        parts = fitted.sample_posterior(300, sampler=sampler, key=3, batch_size=128,
                                        **kw)
        spent = fitted.n_likelihood_evaluations  # the last run's
        np.testing.assert_allclose(np.asarray(parts.x), np.asarray(whole.x),
                                   rtol=1e-5, atol=1e-6)
        if sampler == "importance":
            np.testing.assert_allclose(parts.log_evidence, whole.log_evidence,
                                       rtol=1e-6)
            assert spent == 384 + 4  # three batches of 128, and the probe's 4
    with pytest.raises(ValidationError, match="batch_size"):
        fitted.sample_posterior(300, sampler="importance", key=3, batch_size=0)


def test_settings_and_columns_that_would_mislead_the_fit_are_refused():
    with pytest.raises(ValidationError, match="bounded_to_unbounded must be True or"):
        problems.make_aspire(bounded_to_unbounded="no")
    with pytest.raises(ValidationError, match="None and NaN are not bounds"):
        problems.make_aspire(prior_bounds=[[0, None], [-1, 1], [-1, 1]])
    # Distinct in float64, one value in float32: a GPS time known to 10 ms.
    x = problems.earlier_samples().astype(np.float64)
    x[:, 0] = 1e9 + 0.01 * np.random.default_rng(0).standard_normal(len(x))
    aspire = problems.make_aspire()
    if jax.config.jax_enable_x64:
        pytest.skip("float64 resolves the column")
    with pytest.warns(UserWarning, match="loses up to"), \
            pytest.raises(ValidationError, match="varies by less than float32 resolves"):
        aspire.fit(x, **problems.FIT_SETTINGS)


def test_a_value_said_to_be_above_a_limit_reads_above_it():
    from aspire_jax.aspire import _above

    assert _above(0.0104, 0.01) == "0.0104"   # not "0.01, above 0.01"
    assert _above(0.503, 0.5) == "0.503"
    assert _above(0.29123, 0.1) == "0.29"


# ------------------------------------------------ a prior wider than its bounds
def _truncation_case(prior_outside, bounds=(0.5, 10.0)):
    """The README's prior and likelihood with ``a`` bounded below at 0.5, where
    the new posterior (mean 1, sd 0.49) has about 15 % of its mass below (or
    within other ``bounds``)."""
    lo, hi = bounds

    def log_prior(x):
        lp = jnp.sum(-0.5 * (x / 3.0) ** 2 - jnp.log(3.0 * jnp.sqrt(2 * jnp.pi)), -1)
        inside = (x[:, 0] > lo) & (x[:, 0] < hi)
        return lp if prior_outside else jnp.where(inside, lp, -jnp.inf)

    def log_likelihood(x):
        return jnp.sum(-0.5 * ((x - 1.0) / 0.5) ** 2, axis=-1)

    rng = np.random.default_rng(0)
    old = rng.normal(0.9, 0.6, size=(4000, 2))
    old = old[(old[:, 0] > lo) & (old[:, 0] < hi)][:1000]
    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=2,
                    parameters=["a", "b"], prior_bounds={"a": bounds},
                    n_layers=2, hidden_sizes=(16,))
    aspire.fit(old, n_epochs=20, key=0, progress=False)
    return aspire


@pytest.mark.parametrize("sampler, options", [("smc", RUN), ("importance", {}),
                                              ("mcmc", dict(n_burnin=20, n_steps=5))])
def test_a_prior_with_mass_beyond_its_bounds_is_named(sampler, options, caplog):
    # The samplers stay inside prior_bounds: with a log_prior still finite
    # below 0.5 the run returns the truncated posterior, and says so.
    aspire = _truncation_case(prior_outside=True)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.sample_posterior(500, sampler=sampler, key=1, progress=False,
                                **options)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "log_prior is finite where the posterior reaches past" in text
    assert "'a' beyond its lower bound 0.5" in text
    assert "'b'" not in text.split("past the prior bounds:")[1].split(".")[0]


def test_a_cut_shared_by_two_bounds_is_named(caplog):
    # 7.5 % of the posterior beyond each bound (1.44 posterior sds from its
    # mean): 15 % in all, about 1 % within a quarter sd of each bound.
    aspire = _truncation_case(prior_outside=True, bounds=(0.29, 1.71))
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.sample_posterior(1000, key=1, progress=False, **RUN)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "'a' beyond its lower bound 0.29" in text
    assert "'a' beyond its upper bound 1.71" in text


def test_a_prior_truncated_at_its_bounds_is_not_named(caplog):
    aspire = _truncation_case(prior_outside=False)
    with caplog.at_level(logging.WARNING, logger="aspire_jax.aspire"):
        aspire.sample_posterior(500, key=1, progress=False, **RUN)
    assert not any("log_prior is finite" in r.getMessage() for r in caplog.records)


def test_values_beyond_float32_are_refused_before_any_work():
    old = np.random.default_rng(0).normal(size=(200, problems.DIMS)) * 1e39
    aspire = Aspire(log_likelihood=problems.log_likelihood, log_prior=lambda x: jnp.zeros(
        x.shape[0]), dims=problems.DIMS)
    with pytest.raises(ValidationError, match=r"'x_0' holds values up to .*beyond the "
                       "largest float32"):
        aspire.fit(old, n_epochs=1, key=0, progress=False)
    with pytest.raises(ValidationError, match="beyond the largest float32"):
        Samples.from_array(old)


def test_unnamed_samples_given_to_a_named_aspire_are_explained():
    aspire = Aspire(log_likelihood=problems.log_likelihood,
                    log_prior=problems.log_prior, dims=problems.DIMS,
                    parameters=["a", "b", "c"])
    old = problems.earlier_samples(100, 0)
    with pytest.raises(ValidationError, match=r"default names of Samples made "
                       r"without parameters=.*parameters=\['a', 'b', 'c'\]"):
        aspire.fit(Samples.from_array(old), n_epochs=1, key=0, progress=False)
