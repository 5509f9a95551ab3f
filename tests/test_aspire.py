"""The facade: the whole job end to end, and bad input caught at the boundary."""

import dataclasses
import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import problems
from aspire_jax import Aspire, Samples, TemperingError, ValidationError


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


def _check_posterior(samples, n_eff):
    # Each posterior coordinate is N(mean, sd^2); with n_eff effectively
    # independent draws the sample mean has standard error sd / sqrt(n_eff),
    # so 5 standard errors fail for a correct sampler with probability ~6e-7
    # per coordinate.
    mean, sd = problems.posterior_moments()
    m = np.asarray(samples.mean())
    assert np.all(np.abs(m - mean) < 5 * sd / np.sqrt(n_eff)), m
    # The sample variance of n_eff Gaussian draws has relative sd sqrt(2/n_eff).
    s = np.asarray(samples.std())
    assert np.all(np.abs(s**2 / sd**2 - 1) < 5 * np.sqrt(2 / n_eff)), s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_smc_end_to_end(fitted, seed):
    post, history = fitted.sample_posterior(1000, key=seed, return_history=True)
    assert history.beta[-1] == 1.0
    assert np.all(np.diff(history.beta) > 0)
    truth = problems.log_evidence()
    # Reported error plus the float32 round-off of summing increments.
    assert abs(post.log_evidence - truth) < 4 * post.log_evidence_error + 1e-3
    # SMC particles are correlated after resampling; a quarter of N is a
    # conservative effective count for the checks below.
    _check_posterior(post, 1000 / 4)
    assert post.parameters == ("x_0", "x_1", "x_2")


def test_importance_end_to_end(fitted):
    post, history = fitted.sample_posterior(4000, sampler="importance", key=5,
                                            return_history=True)
    truth = problems.log_evidence()
    assert abs(post.log_evidence - truth) < 4 * post.log_evidence_error + 1e-3
    _check_posterior(post, float(post.effective_sample_size))
    assert len(history) == 1 and history.sampler == "importance"


def test_importance_with_more_draws_than_int32_squares(fitted):
    # The variance divides by n^2, which for n > 46340 does not fit an int32.
    post = fitted.sample_posterior(50_000, sampler="importance", key=7)
    truth = problems.log_evidence()
    assert np.isfinite(post.log_evidence_error) and post.log_evidence_error > 0
    assert abs(post.log_evidence - truth) < 4 * post.log_evidence_error + 1e-3


def test_mcmc_end_to_end(fitted):
    post, history = fitted.sample_posterior(
        1000, sampler="mcmc", key=6, return_history=True, n_steps=60, n_burnin=40)
    assert post.log_evidence is None
    _check_posterior(post, 1000 / 4)
    assert len(history) == 100


def test_device_driver_matches_host(fitted):
    a = fitted.sample_posterior(500, key=9, driver="device")
    b = fitted.sample_posterior(500, key=9, driver="host")
    np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.log_evidence, b.log_evidence, rtol=1e-6)


def test_n_final_samples(fitted):
    post = fitted.sample_posterior(500, key=3, n_final_samples=1200)
    assert post.x.shape == (1200, problems.DIMS)
    _check_posterior(post, 500 / 4)


def test_sample_flow(fitted):
    s = fitted.sample_flow(300, key=0)
    assert s.x.shape == (300, problems.DIMS)
    assert np.all(np.isfinite(np.asarray(s.log_q)))


def test_iteration_cap_raises_not_labelled_posterior(fitted):
    with pytest.raises(TemperingError, match="beta"):
        fitted.sample_posterior(300, key=0, target_efficiency=0.99, max_iterations=2)


def test_max_n_steps_forces_completion(fitted):
    _, history = fitted.sample_posterior(300, key=0, target_efficiency=0.99,
                                         max_n_steps=3, return_history=True)
    assert len(history) <= 3 and history.beta[-1] == 1.0


def test_sampler_kwargs_in_upstream_spelling(fitted):
    _, history = fitted.sample_posterior(
        300, key=0, return_history=True,
        sampler_kwargs=dict(n_steps=3, step_fn="pcn", target_acceptance_rate=0.3))
    assert np.all(history.n_mcmc_steps == 3)
    # aspire's name "default" is the standard space: the very same run.
    a, b = (fitted.sample_posterior(300, key=1, n_mcmc_steps=2, preconditioning=p)
            for p in ("default", "standard"))
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    # Plain MCMC under its aspire name: n_steps are its recorded sweeps, and
    # the target rate is that of the kernel it runs.
    _, history = fitted.sample_posterior(
        1000, sampler="minipcn", key=0, return_history=True,
        sampler_kwargs=dict(n_steps=40, step_fn="rwmh", target_acceptance_rate=0.5))
    assert history.sampler == "mcmc" and len(history) == 50 + 40
    assert abs(float(np.mean(history.acceptance[50:])) - 0.5) < 0.1
    # The original's pCN sampler moves with t-pCN unless told otherwise.
    fitted.sample_posterior(300, sampler="minipcn", key=0, sampler_kwargs=dict(
        n_steps=5, target_acceptance_rate=0.3))
    options = fitted._last_sampler_config["options"]
    assert options["kernel"] == "tpcn"
    assert options["kernel_settings"]["__settings__"] == "PCNSettings"
    assert options["kernel_settings"]["target_acceptance"] == 0.3
    with pytest.raises(ValidationError, match="target_acceptance_rate"):
        fitted.sample_posterior(100, sampler="minipcn", key=0,
                                sampler_kwargs=dict(target_acceptance_rate="high"))


# ----------------------------------------------------------------- bad input
def test_nan_in_training_samples():
    x = problems.earlier_samples()
    x[17, 1] = np.nan
    with pytest.raises(ValidationError, match="non-finite.*row 17"):
        problems.make_aspire().fit(x, n_epochs=1)


def test_wrong_shape_training_samples():
    with pytest.raises(ValidationError, match=r"shape \(n, 3\)"):
        problems.make_aspire().fit(np.zeros((100, 4)), n_epochs=1)


def test_samples_outside_bounds():
    aspire = problems.make_aspire(prior_bounds={"x_0": (0.0, 5.0)})
    x = np.abs(problems.earlier_samples())
    x[3, 0] = -1.0
    with pytest.raises(ValidationError, match="outside prior_bounds"):
        aspire.fit(x, n_epochs=1)


def test_likelihood_wrong_shape(fitted):
    bad = problems.make_aspire(log_likelihood=lambda x: jnp.sum(x))
    bad.flow_params = fitted.flow_params
    with pytest.raises(ValidationError, match=r"log_likelihood must map"):
        bad.sample_posterior(100, key=0)


@pytest.mark.parametrize("fn, message", [
    (lambda x: x[:, 0] > 0, "floating-point"),
    (lambda x: jnp.zeros(x.shape[0], jnp.int32), "floating-point"),
    (lambda x: jnp.zeros(x.shape[0], jnp.complex64), "floating-point"),
    (lambda x: jnp.where(jnp.arange(x.shape[0]) == 1, jnp.inf, 0.0), r"returned inf at 1 of 4"),
    (lambda x: jnp.full(x.shape[0], jnp.nan), r"returned nan at 4 of 4"),
])
def test_likelihood_values_that_are_not_log_densities(fitted, fn, message):
    # Probed on flow draws before anything compiles: a boolean, integer or
    # complex output, or a +inf / NaN at a point, is a bug in the user's code,
    # which the run itself would silently treat as an impossible point.
    for which in ("log_likelihood", "log_prior"):
        bad = problems.make_aspire(**{which: fn})
        bad.flow_params = fitted.flow_params
        for sampler in ("smc", "importance"):
            with pytest.raises(ValidationError, match=f"{which} .*{message}|{message}"):
                bad.sample_posterior(100, sampler=sampler, key=0)


def test_likelihood_may_be_undefined_where_the_prior_is_impossible(fitted):
    # An ordering constraint in the prior; the likelihood is NaN beyond it.
    def log_prior(x):
        return jnp.where(x[:, 0] < x[:, 1], problems.log_prior(x), -jnp.inf)

    def log_likelihood(x):
        return jnp.where(x[:, 0] < x[:, 1], problems.log_likelihood(x), jnp.nan)

    constrained = problems.make_aspire(log_prior=log_prior, log_likelihood=log_likelihood)
    constrained.flow_params = fitted.flow_params
    x = np.asarray(fitted.flow.sample(fitted.flow_params, jax.random.key(0), 4))
    assert not np.all(x[:, 0] < x[:, 1])  # the probe meets the constraint
    post = constrained.sample_posterior(300, sampler="importance", key=0)
    x, w = np.asarray(post.x), np.asarray(post.weights)
    outside = x[:, 0] >= x[:, 1]
    assert outside.any() and np.all(w[outside] == 0) and np.all(w[~outside] > 0)
    assert np.isfinite(float(post.log_evidence))


def test_target_efficiency_out_of_range(fitted):
    with pytest.raises(ValidationError, match=r"target_efficiency must be in \(0, 1\)"):
        fitted.sample_posterior(100, key=0, target_efficiency=1.5)


def test_unknown_sampler_and_option(fitted):
    with pytest.raises(ValidationError, match="unknown sampler"):
        fitted.sample_posterior(100, sampler="nessai")
    with pytest.raises(ValidationError, match="unknown option"):
        fitted.sample_posterior(100, target_efficency=0.5)


def test_sample_before_fit():
    with pytest.raises(ValidationError, match="fit"):
        problems.make_aspire().sample_posterior(100)


@pytest.mark.parametrize("backend", ["zuko", "flowjax"])
def test_other_flow_backends_name_jax(backend):
    with pytest.raises(ValidationError, match="another library's flows.*'jax'"):
        problems.make_aspire(flow_backend=backend)


def test_periodic_needs_bounds():
    with pytest.raises(ValidationError, match="finite prior_bounds"):
        problems.make_aspire(periodic_parameters=["x_1"])


def test_bad_key_type(fitted):
    with pytest.raises(ValidationError, match="key"):
        fitted.sample_posterior(100, key="seed")


def test_inputs_left_untouched():
    x = problems.earlier_samples(500)
    copy = x.copy()
    aspire = problems.make_aspire()
    aspire.fit(x, n_epochs=2, key=0)
    np.testing.assert_array_equal(x, copy)


def test_parameters_taken_from_samples():
    x = problems.earlier_samples(500)
    aspire = problems.make_aspire()
    aspire.fit(Samples.from_array(x, parameters=["a", "b", "c"]), n_epochs=2, key=0)
    assert aspire.parameters == ("a", "b", "c")


def test_bounded_and_periodic_parameters_end_to_end():
    # x_0 is periodic on [0, 2 pi) with a von Mises-like likelihood centred
    # near the seam; x_1 is bounded on (0, 1); both priors are uniform.
    two_pi = 2 * np.pi

    def log_prior(x):
        return jnp.where((x[:, 1] > 0) & (x[:, 1] < 1) & (x[:, 0] >= 0)
                         & (x[:, 0] < two_pi), -jnp.log(two_pi), -jnp.inf)

    def log_likelihood(x):
        return 4.0 * jnp.cos(x[:, 0] - 0.1) + 3 * jnp.log(x[:, 1]) + jnp.log(4.0)

    rng = np.random.default_rng(0)
    old = np.column_stack([rng.uniform(0, two_pi, 3000),
                           rng.beta(2, 1, 3000)]).astype(np.float32)
    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=2,
                    prior_bounds={"x_0": (0, two_pi), "x_1": (0, 1)},
                    periodic_parameters=["x_0"], **problems.FLOW_SETTINGS)
    aspire.fit(old, n_epochs=20, key=1)
    post = aspire.sample_posterior(1000, key=2, kernel="rwmh")
    x = np.asarray(post.x)
    assert np.all((x[:, 0] >= 0) & (x[:, 0] < two_pi))
    assert np.all((x[:, 1] > 0) & (x[:, 1] < 1))
    # Circular mean direction of a von Mises(0.1, 4): E[sin(x - 0.1)] = 0 and
    # E[cos(x - 0.1)] = I1(4)/I0(4) = 0.8635; the sd of cos/sin under it is
    # below 0.3, so 5 standard errors at n_eff = N/4 is 5 * 0.3 / sqrt(250).
    tol = 5 * 0.3 / np.sqrt(250)
    assert abs(np.mean(np.sin(x[:, 0] - 0.1))) < tol
    assert abs(np.mean(np.cos(x[:, 0] - 0.1)) - 0.8635) < tol
    # x_1 ~ Beta(4, 1): mean 0.8, sd 0.163.
    assert abs(np.mean(x[:, 1]) - 0.8) < 5 * 0.163 / np.sqrt(250)
    # Evidence: (1 / 2 pi) * 2 pi I0(4) e^0 ... = I0(4) * (1/4) * 4 = I0(4).
    truth = np.log(11.301921952136329)
    assert abs(post.log_evidence - truth) < 4 * post.log_evidence_error + 1e-3


def test_random_walk_across_a_periodic_seam_is_unbiased():
    """rwmh in the whitened space wraps periodic coordinates: the density of
    the particles it starts from must carry the same Jacobian as that of its
    proposals. (It once kept the flow's squashing Jacobian at the start,
    which put log Z about 6 reported errors low here.)"""
    from scipy.special import i0

    kappa, mu, sd = 20.0, 0.1, 0.3

    def log_prior(x):
        ok = (x[:, 0] >= 0) & (x[:, 0] < 2 * np.pi) & (jnp.abs(x[:, 1]) < 5)
        return jnp.where(ok, -np.log(2 * np.pi * 10), -jnp.inf)

    def log_likelihood(x):  # normalised von Mises x N(0, sd^2)
        return (kappa * jnp.cos(x[:, 0] - mu) - np.log(2 * np.pi * i0(kappa))
                - 0.5 * (x[:, 1] / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi)))

    rng = np.random.default_rng(0)
    old = np.column_stack([np.mod(rng.vonmises(mu, 2.0, 3000), 2 * np.pi),
                           np.clip(rng.normal(0, 1.5, 3000), -4.9, 4.9)])
    aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=2,
                    parameters=["phase", "x"],
                    prior_bounds={"phase": (0, 2 * np.pi), "x": (-5, 5)},
                    periodic_parameters=["phase"], **problems.FLOW_SETTINGS)
    aspire.fit(old.astype(np.float32), key=0, n_epochs=30)
    exact = -np.log(20 * np.pi)
    for key in range(3):
        post = aspire.sample_posterior(500, key=key, kernel="rwmh",
                                       preconditioning="standard", n_mcmc_steps=10)
        err = float(post.log_evidence_error)
        # 4 reported errors: a correct run fails with probability ~6e-5.
        assert abs(float(post.log_evidence) - exact) < 4 * err, (key, err)
    # With the adaptive length the moves must forget their start within the
    # cap: centred on the middle of the period, the particles on both sides
    # of the seam inflated the random walk's proposal, and iterations ended
    # at the cap with correlations of 0.4-0.8. (0.1 is twice the noise of a
    # correlation over 500 particles.)
    post, history = aspire.sample_posterior(500, key=5, kernel="rwmh",
                                            preconditioning="standard",
                                            return_history=True)
    assert float(np.max(history.decorrelation)) < 0.1, history.decorrelation
    assert abs(float(post.log_evidence) - exact) < 4 * float(post.log_evidence_error)


# ------------------------------------------------- hardening of the boundary
def test_sharp_likelihood_tempers_honestly(fitted):
    # A likelihood a million times narrower than the flow: the bisection must
    # take many small steps (relative tolerance, shifted efficiency) instead of
    # jumping to beta = 1 with one surviving particle.
    def sharp(x):
        return jnp.sum(-0.5 * ((x - 1.0) / 1e-6) ** 2
                       - jnp.log(1e-6 * jnp.sqrt(2 * jnp.pi)), axis=-1)

    aspire = problems.make_aspire(log_likelihood=sharp)
    aspire.flow_params = fitted.flow_params
    post, history = aspire.sample_posterior(400, key=3, return_history=True)
    assert len(history) > 10
    assert np.all(history.efficiency[:-1] > 0.45)
    # Evidence: prior density at x = 1 (the likelihood is a delta there).
    truth = problems.DIMS * (-0.5 / problems.PRIOR_SD**2
                             - np.log(problems.PRIOR_SD * np.sqrt(2 * np.pi)))
    assert abs(post.log_evidence - truth) < 4 * post.log_evidence_error + 1e-3


def test_numpy_likelihood_points_to_the_wrapper(fitted):
    aspire = problems.make_aspire(
        log_likelihood=lambda x: -0.5 * np.sum((np.asarray(x) - 1) ** 2, axis=-1))
    aspire.flow_params = fitted.flow_params
    with pytest.raises(ValidationError, match="wrap_numpy_likelihood"):
        aspire.sample_posterior(100, key=0)


def test_mala_with_callback_likelihood_is_refused(fitted):
    from aspire_jax import wrap_numpy_likelihood

    ll = wrap_numpy_likelihood(lambda x: -0.5 * np.sum((x - 1) ** 2, axis=1))
    aspire = problems.make_aspire(log_likelihood=ll)
    aspire.flow_params = fitted.flow_params
    with pytest.raises(ValidationError, match="gradient"):
        aspire.sample_posterior(100, key=0, kernel="mala")


def test_dataframe_columns_are_read_by_name():
    pd = pytest.importorskip("pandas")
    x = problems.earlier_samples(500)
    frame = pd.DataFrame({"b": x[:, 1], "a": x[:, 0], "c": x[:, 2]})
    aspire = problems.make_aspire(parameters=["a", "b", "c"])
    np.testing.assert_array_equal(aspire._as_array(frame), x)
    with pytest.raises(ValidationError, match="lacks columns"):
        aspire._as_array(frame.drop(columns="c").assign(d=1.0))


@pytest.mark.parametrize("bad", [{"x_0": 5}, {"x_0": ("a", "b")}, {"x_0": (1, 0)}])
def test_malformed_bounds(bad):
    with pytest.raises(ValidationError, match="prior_bounds"):
        problems.make_aspire(prior_bounds=bad)


def test_non_numeric_samples_and_seed_range(fitted):
    with pytest.raises(ValidationError, match="real numbers"):
        problems.make_aspire().fit(np.full((10, 3), "1.0"), n_epochs=1)
    with pytest.raises(ValidationError, match="seed"):
        fitted.sample_posterior(100, key=2**70)


def test_unwritable_checkpoint_folder_fails_before_sampling(fitted, tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        fitted.sample_posterior(100, key=0,
                                checkpoint_path=tmp_path / "missing" / "run.h5")


def test_collapsed_forced_step_is_logged(caplog):
    # A likelihood far narrower than the flow, and two forced steps: the
    # first step leaves about one effective particle. The run finishes, but
    # the user must be told that its evidence cannot be trusted.
    def narrow(x):
        return jnp.sum(-0.5 * ((x - problems.LIKE_MEAN) / 0.01) ** 2
                       - jnp.log(0.01 * jnp.sqrt(2 * jnp.pi)), axis=-1)

    aspire = problems.make_aspire(log_likelihood=narrow)
    aspire.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _, history = aspire.sample_posterior(500, key=1, max_n_steps=2,
                                             return_history=True)
    assert float(np.min(history.ess)) < 5
    assert any("fewer than 1% effective particles" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        aspire.sample_posterior(500, key=1)
    assert not any("effective particles" in r.getMessage() for r in caplog.records)


def _collapsed(params):
    """The flow's parameters with every spline fixed (whatever its input) to
    put almost the whole latent interval into one bin of the smallest width:
    the flow then draws all its samples within 1e-4 of a point, as a flow
    whose training diverged can."""
    last = params.net["params"]["conditioners"]["Dense_1"]
    n_bins = (last["bias"].shape[-1] - 1) // 3
    logits = np.zeros(last["bias"].shape[-1], np.float32)
    logits[3] = -50.0               # its width: the minimum bin size
    logits[n_bins + 3] = 50.0       # its height: nearly the whole interval
    bias = np.tile(logits, last["bias"].shape[:-1] + (1,))
    net = jax.tree_util.tree_map(lambda a: a, params.net)
    net["params"]["conditioners"]["Dense_1"] = {
        "kernel": jnp.zeros_like(last["kernel"]), "bias": jnp.asarray(bias)}
    return params.replace(net=net)


def test_diverged_flow_is_flagged_by_fit_and_refused_by_the_sampler(caplog):
    # Far too large a learning rate: the flow collapses onto a point, many
    # nats per dimension worse than a Gaussian on the held-out samples. SMC
    # from it returned log Z off by 70 nats with an error bar of 0.09.
    aspire = problems.make_aspire()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        history = aspire.fit(problems.earlier_samples(), key=0, n_epochs=5,
                             learning_rate=10.0)
    assert history.gain_over_gaussian() / aspire.dims < -0.5
    assert any("worse than a Gaussian" in r.getMessage() for r in caplog.records)
    # Sampling warns again (the fit's warning may be long scrolled away), or
    # refuses outright when the draws have collapsed onto a point.
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        aspire.sample_posterior(200, key=1, sampler="importance")
    assert any("worse than a Gaussian" in r.getMessage() for r in caplog.records)
    collapsing = Aspire(log_likelihood=lambda x: -0.5 * jnp.sum(x**2, axis=-1),
                        log_prior=lambda x: -0.5 * jnp.sum(x**2, axis=-1),
                        dims=2, n_layers=2, hidden_sizes=(8,))
    earlier = np.random.default_rng(0).normal(0.7, 0.8, size=(1000, 2))
    collapsing.fit(earlier, key=0, n_epochs=5)
    collapsing.flow_params = _collapsed(collapsing.flow_params)
    with pytest.raises(ValidationError, match="collapsed"):
        collapsing.sample_posterior(200, key=1, reference="flow")
    # By default SMC starts from the Gaussian of the same samples instead,
    # and gets the evidence right: log Z = log pi for exp(-|x|^2) in 2-d.
    assert collapsing.auto_reference() == "gaussian"
    post = collapsing.sample_posterior(1000, key=1)
    assert abs(float(post.log_evidence) - math.log(math.pi)) < 4 * float(
        post.log_evidence_error)


def _flat_bounded_1d(mean, sd, bounds, **kwargs):
    """Settings of a 1-d problem: a Gaussian likelihood and a flat prior
    written as zeros, relying on ``prior_bounds`` for its support."""
    return dict(log_likelihood=lambda x: -0.5 * ((x[:, 0] - mean) / sd) ** 2,
                log_prior=lambda x: jnp.zeros(x.shape[0]), dims=1,
                parameters=["u"], prior_bounds={"u": bounds}, n_layers=2, **kwargs)


def test_samples_within_the_transform_clamp_of_a_bound_are_refused():
    # A rate of 5 +- 0.5 in bounds (0, 1e7): within eps * (hi - lo) = 10 of
    # the lower bound, all the samples map to one point; importance sampling
    # from the flow fitted to them was 61 nats off with an error of 0.22.
    settings = _flat_bounded_1d(5.0, 0.5, (0.0, 1e7), hidden_sizes=(8,))
    earlier = np.random.default_rng(0).normal(5.0, 0.7, size=(500, 1))
    with pytest.raises(ValidationError, match="smaller eps"):
        Aspire(**settings).fit(earlier, key=0, n_epochs=2)
    Aspire(eps=1e-9, **settings).fit(earlier, key=0, n_epochs=2)
    # Values on a bound itself are moved a float step inside, as documented,
    # and are no reason to refuse.
    on_bound = np.random.default_rng(1).uniform(0.0, 1e7, size=(500, 1))
    on_bound[:50] = 0.0
    Aspire(**settings).fit(on_bound, key=0, n_epochs=2)


def test_good_flow_is_not_flagged(fitted, caplog):
    assert fitted.flow_history.gain_over_gaussian() / fitted.dims > -0.5
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        fitted.sample_posterior(300, key=1)
    assert not caplog.records
    # A history without the Gaussian baseline (as read from an older file)
    # is judged by its own loss, which is finite here.
    from aspire_jax.aspire import _warn_poor_flow

    old = dataclasses.replace(fitted.flow_history, gaussian_validation_loss=math.nan)
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _warn_poor_flow(old, fitted.dims)
    assert not caplog.records
    diverged = dataclasses.replace(
        old, validation_loss=np.full_like(old.validation_loss, np.nan))
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _warn_poor_flow(diverged, fitted.dims)
    assert any("worse than a Gaussian" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("call, option, value", [
    ("sample", "return_history", "yes"),
    ("sample", "progress", "no"),
    ("sample", "log_every", -1),
    ("sample", "log_every", 0.5),
    ("sample", "adaptive", "no"),
    ("fit", "progress", "no"),
    ("fit", "overwrite", 1),
])
def test_flags_and_counts_of_the_wrong_type_are_refused(fitted, call, option, value):
    with pytest.raises(ValidationError, match=option):
        if call == "sample":
            fitted.sample_posterior(100, key=0, **{option: value})
        else:
            problems.make_aspire().fit(problems.earlier_samples(), n_epochs=1,
                                       **{option: value})


@pytest.mark.parametrize("names, message", [
    ("abc", "not the string"), ([1, 2, 3], "non-empty strings"),
    (["a", "", "c"], "non-empty strings")])
def test_malformed_parameter_names_are_refused_at_construction(names, message):
    with pytest.raises(ValidationError, match=message):
        problems.make_aspire(parameters=names)


@pytest.mark.parametrize("bad, message", [
    ({}, "empty dict"), ({"state": "abc"}, "state bytes")])
def test_a_malformed_resume_dict_is_named(fitted, bad, message):
    with pytest.raises(ValidationError, match=message):
        fitted.sample_posterior(100, key=0, resume_from=bad)


def test_smc_weights_have_mean_one_so_runs_concatenate_evenly(fitted):
    runs = [fitted.sample_posterior(400, key=k, resample_threshold=0.3,
                                    n_mcmc_steps=2) for k in range(1, 4)]
    weighted = [r for r in runs if r.log_weights is not None]
    assert weighted, "no run ended without resampling"
    w = np.exp(np.asarray(weighted[0].log_weights, np.float64))
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-4)
    plain = fitted.sample_posterior(400, key=9)
    both = Samples.concatenate([plain, weighted[0]])
    share = float(np.sum(np.asarray(both.weights)[400:]))
    np.testing.assert_allclose(share, 0.5, rtol=1e-4)


def test_native_moves_stay_inside_the_prior_bounds():
    # A flat prior written as zeros, relying on prior_bounds: in native
    # coordinates nothing else keeps the particles in (0, 1) at beta = 1.
    aspire = Aspire(**_flat_bounded_1d(0.05, 0.1, (0.0, 1.0), hidden_sizes=(16,)))
    earlier = np.random.default_rng(0).beta(2, 8, size=(2000, 1))
    aspire.fit(earlier, key=0, n_epochs=30)
    for kwargs in (dict(), dict(sampler="mcmc")):
        post = aspire.sample_posterior(500, key=1, preconditioning="none", **kwargs)
        x = np.asarray(post.x)
        assert x.min() >= 0.0 and x.max() <= 1.0, kwargs


def test_moves_that_do_not_forget_their_start_are_logged(fitted, caplog):
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _, history = fitted.sample_posterior(300, key=1, kernel="rwmh",
                                             n_mcmc_steps=1, return_history=True)
    corr = np.asarray(history.decorrelation)
    assert float(np.max(corr)) > 0.1
    [message] = [r.getMessage() for r in caplog.records
                 if "still correlated with their starting points" in r.getMessage()]
    # The iterations are named, and the threshold is the one that applied.
    named = ", ".join(str(i) for i in np.flatnonzero(corr > 0.1)[:8])
    assert f"SMC iterations ({named}" in message and "above 0.1;" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        fitted.sample_posterior(300, key=1, kernel="rwmh", max_mcmc_steps=2)
    assert any("cap of 2 sweeps" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kernel, target", [("rwmh", 0.234), ("mala", 0.574)])
def test_mcmc_acceptance_after_burn_in_is_near_target(fitted, kernel, target):
    # The proposal reference is refitted halfway through burn-in, and the
    # second half adapts the step to it; refitting only when the step is
    # frozen left rwmh at ~0.65 acceptance against its 0.234 target. 1000
    # chains: the sweep-averaged acceptance has sd ~0.01, far inside 0.1.
    _, history = fitted.sample_posterior(
        1000, sampler="mcmc", kernel=kernel, key=6, return_history=True,
        n_steps=30, n_burnin=40)
    after = np.asarray(history.acceptance)[40:]
    assert abs(float(after.mean()) - target) < 0.1


def test_samples_columns_are_read_by_name(fitted):
    from aspire_jax import Samples

    x = problems.earlier_samples(400)
    aspire = problems.make_aspire(parameters=["a", "b", "c"])
    shuffled = Samples.from_array(x[:, [2, 0, 1]], ["c", "a", "b"])
    np.testing.assert_array_equal(aspire._as_array(shuffled), x)
    with pytest.raises(ValidationError, match="carry parameters"):
        aspire._as_array(Samples.from_array(x, ["a", "b", "d"]))


def test_names_without_parameters_point_to_parameters():
    with pytest.raises(ValidationError, match=r"pass parameters=\[\.\.\.\]"):
        problems.make_aspire(prior_bounds={"a": (-5, 5)})
    with pytest.raises(ValidationError, match=r"pass parameters=\[\.\.\.\]"):
        problems.make_aspire(prior_bounds=np.tile([0.0, 1.0], (3, 1)),
                             periodic_parameters=["a"])
    with pytest.raises(ValidationError) as info:
        problems.make_aspire(parameters=["a", "b", "c"], prior_bounds={"z": (0, 1)})
    assert "pass parameters" not in str(info.value)


def test_fit_names_unknown_options_and_aspires_spellings():
    aspire = problems.make_aspire()
    with pytest.raises(ValidationError, match="'lr' is 'learning_rate' here"):
        aspire.fit(problems.earlier_samples(), lr=1e-3)
    with pytest.raises(ValidationError, match="'lr_annealing' has no equivalent"):
        aspire.fit(problems.earlier_samples(), lr_annealing=True)
    with pytest.raises(ValidationError, match=r"\['n_epoch'\]; fit takes key, n_epochs"):
        aspire.fit(problems.earlier_samples(), n_epoch=3)
    assert aspire.flow_params is None


def test_a_drawn_fit_seed_is_kept_and_repeats_the_fit(tmp_path):
    settings = dict(problems.FIT_SETTINGS, n_epochs=3, key=None)
    drawn = problems.make_aspire()
    drawn.fit(problems.earlier_samples(), **settings)
    seed = drawn.flow_history.seed
    assert isinstance(seed, int)
    again = problems.make_aspire()
    again.fit(problems.earlier_samples(), **dict(settings, key=seed))
    assert again.flow_history.seed == seed
    for a, b in zip(jax.tree.leaves(drawn.flow_params), jax.tree.leaves(again.flow_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    path = tmp_path / "flow.h5"
    drawn.save_flow(path)
    loaded = problems.make_aspire()
    loaded.load_flow(path)
    assert loaded.flow_history.seed == seed
    typed = problems.make_aspire()
    typed.fit(problems.earlier_samples(), **dict(settings, key=jax.random.key(0)))
    assert typed.flow_history.seed is None
    assert "seed" not in typed.flow_history.to_dict()
