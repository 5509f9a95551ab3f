"""The Gaussian reference (the flow's transform with the Gaussian of its
training samples in place of the coupling layers) and reference= / "auto"."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import problems
from aspire_jax import Aspire, AspireFile, CheckpointError, ValidationError
from aspire_jax.aspire import AUTO_FLOW_GAIN_PER_DIM
from aspire_jax.flows import Flow, FlowConfig, GaussianReference, fit
from aspire_jax.flows.gaussian import has_gaussian

RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)

# A bounded problem: uniform prior on the unit square, Gaussian likelihood
# N(0.4, 0.1^2) per coordinate, so Z = prod (Phi(6) - Phi(-4)).
B_MEAN, B_SD = 0.4, 0.1


def _bounded_log_likelihood(x):
    return jnp.sum(-0.5 * ((x - B_MEAN) / B_SD) ** 2 - math.log(B_SD)
                   - 0.5 * math.log(2 * math.pi), axis=-1)


def _bounded_log_prior(x):
    return jnp.zeros(x.shape[:1], x.dtype)


def _bounded_log_evidence():
    def cdf(t):
        return 0.5 * (1 + math.erf(t / math.sqrt(2)))

    return 2 * math.log(cdf((1 - B_MEAN) / B_SD) - cdf(-B_MEAN / B_SD))


def _bounded_aspire():
    aspire = Aspire(log_likelihood=_bounded_log_likelihood,
                    log_prior=_bounded_log_prior, dims=2,
                    prior_bounds=[[0.0, 1.0], [0.0, 1.0]],
                    flow_kind="affine", n_layers=2, hidden_sizes=(16,))
    rng = np.random.default_rng(3)
    # Off: wider and shifted, as an earlier analysis would be.
    x = rng.beta(5.0, 6.0, size=(2000, 2)).astype(np.float32)
    aspire.fit(x, key=0, n_epochs=20, batch_size=256)
    return aspire


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


@pytest.fixture(scope="module")
def bounded():
    return _bounded_aspire()


def test_the_gaussian_is_that_of_the_training_samples():
    flow = Flow(FlowConfig(n_dims=2, n_layers=1, hidden_sizes=(8,)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2)) @ np.array([[1.0, 0.9], [0.0, 0.3]]) + 2.0
    x = x.astype(np.float32)
    params = flow.init(jax.random.key(0), x)
    u = np.asarray(flow.to_unbounded(params, x)[0], np.float64)
    np.testing.assert_allclose(np.asarray(params.gaussian["mean"]), u.mean(0),
                               atol=1e-5)
    chol = np.asarray(params.gaussian["chol"], np.float64)
    np.testing.assert_allclose(chol @ chol.T, np.cov(u.T, bias=True), rtol=1e-4,
                               atol=1e-5)
    # The transform whitens each coordinate alone; the Gaussian carries their
    # correlation (0.95 here).
    assert chol[1, 0] / np.hypot(chol[1, 0], chol[1, 1]) > 0.9
    # fit refits it to the training rows: the Gaussian whose held-out loss is
    # the baseline of the gain.
    fitted_params, history = fit(flow, params, jax.random.key(1), x, n_epochs=2)
    ref = GaussianReference(flow)
    held = x[history.held_out_index]
    loss = -float(np.mean(np.asarray(ref.log_prob(fitted_params, held), np.float64)))
    assert loss == pytest.approx(history.gaussian_validation_loss, abs=1e-4)
    train = np.setdiff1d(np.arange(len(x)), history.held_out_index)
    u_train = np.asarray(flow.to_unbounded(params, x[train])[0], np.float64)
    np.testing.assert_allclose(np.asarray(fitted_params.gaussian["mean"]),
                               u_train.mean(0), atol=1e-5)
    assert has_gaussian(params) and has_gaussian(fitted_params)


def test_density_is_normalised_and_matches_its_draws(bounded):
    ref = GaussianReference(bounded.flow)
    params = bounded.flow_params
    x, log_q = ref.sample_and_log_prob(params, jax.random.key(0), 4000)
    assert np.all((np.asarray(x) > 0) & (np.asarray(x) < 1))
    np.testing.assert_allclose(np.asarray(log_q), np.asarray(ref.log_prob(params, x)),
                               atol=2e-4)
    z, log_det = ref.to_latent(params, x)
    back, log_det_back = ref.from_latent(params, z)
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(log_det), -np.asarray(log_det_back),
                               atol=1e-4)
    # Both are normalised densities on the square: over draws of the
    # Gaussian reference E[q_flow / q_gauss] = 1 (four standard errors).
    xg, lg = ref.sample_and_log_prob(params, jax.random.key(1), 200_000)
    r = np.exp(np.asarray(bounded.flow.log_prob(params, xg) - lg, np.float64))
    assert abs(r.mean() - 1.0) < 4 * r.std() / np.sqrt(r.size)
    outside = jnp.asarray([[1.2, 0.5], [0.5, -0.1], [np.nan, 0.5]], jnp.float32)
    assert np.all(np.isneginf(np.asarray(ref.log_prob(params, outside))))


@pytest.mark.parametrize("sampler", ["smc", "importance"])
def test_evidence_from_the_gaussian_on_a_bounded_problem(bounded, sampler):
    exact = _bounded_log_evidence()
    for k in range(3):
        post = bounded.sample_posterior(2000, sampler=sampler, key=k,
                                        reference="gaussian")
        err = float(post.log_evidence_error)
        assert 0 < err < 0.1
        assert abs(float(post.log_evidence) - exact) < 4 * err


def test_auto_picks_the_gaussian_for_a_gaussian_earlier_posterior(fitted):
    gain = fitted.flow_history.gain_over_gaussian() / problems.DIMS
    assert gain <= AUTO_FLOW_GAIN_PER_DIM
    assert fitted.auto_reference() == "gaussian"
    post = fitted.sample_posterior(500, key=0, **RUN)
    # The default run is the Gaussian run, and it is recorded as such.
    same = fitted.sample_posterior(500, key=0, reference="gaussian", **RUN)
    np.testing.assert_array_equal(np.asarray(post.x), np.asarray(same.x))
    assert fitted._last_sampler_config["options"]["reference"] == "gaussian"
    flow = fitted.sample_posterior(500, key=0, reference="flow", **RUN)
    assert not np.array_equal(np.asarray(post.x), np.asarray(flow.x))
    # Importance sampling keeps the flow unless told otherwise.
    a = fitted.sample_posterior(300, sampler="importance", key=0)
    b = fitted.sample_posterior(300, sampler="importance", key=0, reference="flow")
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))


def test_auto_keeps_the_flow_without_a_held_out_gain():
    aspire = problems.make_aspire()
    aspire.fit(problems.earlier_samples(), n_epochs=3, key=0, validation_fraction=0.0)
    assert aspire.auto_reference() == "flow"


def test_a_saved_flow_keeps_its_gaussian_and_choice(fitted, tmp_path):
    path = tmp_path / "flow.h5"
    with AspireFile(path, "w") as f:
        fitted.save_flow(f)
    again = problems.make_aspire()
    with AspireFile(path, "r") as f:
        again.load_flow(f)
    np.testing.assert_array_equal(np.asarray(again.flow_params.gaussian["chol"]),
                                  np.asarray(fitted.flow_params.gaussian["chol"]))
    assert again.auto_reference() == fitted.auto_reference() == "gaussian"


def test_a_gaussian_run_resumes_exactly_and_only_as_such(fitted):
    blobs = []
    full = fitted.sample_posterior(300, key=4, checkpoint_callback=blobs.append,
                                   reference="gaussian", **RUN)
    again = fitted.sample_posterior(resume_from=blobs[0])
    np.testing.assert_array_equal(np.asarray(full.x), np.asarray(again.x))
    assert float(full.log_evidence) == float(again.log_evidence)
    with pytest.raises(CheckpointError, match="made with reference='gaussian'"):
        fitted.sample_posterior(resume_from=blobs[0], reference="flow")
    # Bare state bytes do not say what they started from: "auto" resolves as
    # for the run that made them, and a run made otherwise is caught by its
    # cached log q.
    bare = fitted.sample_posterior(300, key=4, resume_from=blobs[0]["state"], **RUN)
    np.testing.assert_array_equal(np.asarray(full.x), np.asarray(bare.x))
    with pytest.raises(CheckpointError, match="log_q.*another reference"):
        fitted.sample_posterior(300, key=4, resume_from=blobs[0]["state"],
                                reference="flow", **RUN)
    # A run recorded without a reference started from the flow.
    blobs = []
    fitted.sample_posterior(300, key=5, checkpoint_callback=blobs.append,
                            reference="flow", **RUN)
    old = dict(blobs[0], sampler_config=dict(blobs[0]["sampler_config"]))
    old["sampler_config"]["options"] = {
        k: v for k, v in old["sampler_config"]["options"].items() if k != "reference"}
    resumed = fitted.sample_posterior(resume_from=old)
    assert np.isfinite(float(resumed.log_evidence))


@pytest.mark.parametrize("value", ["normal", 1, None, "Gaussian"])
def test_bad_reference(fitted, value):
    for sampler in ("smc", "importance"):
        with pytest.raises(ValidationError, match="reference must be one of"):
            fitted.sample_posterior(100, sampler=sampler, key=0, reference=value)


def test_reference_is_not_an_mcmc_option_and_needs_a_gaussian(fitted):
    with pytest.raises(ValidationError, match="unknown option"):
        fitted.sample_posterior(100, sampler="mcmc", key=0, reference="gaussian")
    aspire = problems.make_aspire()
    aspire.fit(problems.earlier_samples(), n_epochs=2, key=0)
    nan = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), aspire.flow_params.gaussian)
    aspire.flow_params = aspire.flow_params.replace(gaussian=nan)
    with pytest.raises(ValidationError, match="has none .it was saved before"):
        aspire.sample_posterior(100, key=0, reference="gaussian")
    assert aspire.auto_reference() == "flow"
    bare = aspire.flow_params.replace(gaussian=None)
    aspire.flow_params = bare
    with pytest.raises(ValidationError, match="has none .its parameters were built"):
        aspire.sample_posterior(100, key=0, reference="gaussian")
    # The reference itself refuses both, named, outside a trace.
    reference = GaussianReference(aspire.flow)
    x = problems.earlier_samples()[:3]
    with pytest.raises(ValidationError, match="built by hand"):
        reference.log_prob(bare, x)
    with pytest.raises(ValidationError, match="format 1 or 2"):
        reference.sample(bare.replace(gaussian=nan), jax.random.key(0), 3)


def test_a_posterior_far_wider_than_the_earlier_samples_is_named(fitted, caplog):
    # Earlier samples confined near the line x1 = x0; the new posterior is
    # not. Either reference is far too narrow across the line, and log Z
    # comes out low by several reported errors: the run says so.
    x = problems.earlier_samples(seed=3)
    x[:, 1] = x[:, 0] + 1e-5 * np.random.default_rng(0).standard_normal(len(x))
    tied = problems.make_aspire()
    tied.fit(x, key=0, n_epochs=5, batch_size=256)
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        tied.sample_posterior(300, key=0, **RUN)
    assert any("times wider" in r.getMessage() for r in caplog.records)
    # A new posterior narrower than the earlier samples says nothing.
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        fitted.sample_posterior(300, key=0, **RUN)
    assert not any("times wider" in r.getMessage() for r in caplog.records)


def test_parameters_built_without_a_gaussian_save_and_load(fitted):
    flow, params = fitted.flow, fitted.flow_params
    bare = type(params)(transform=params.transform, net=params.net)
    assert bare.gaussian is None and not has_gaussian(bare)
    again = flow.params_from_bytes(flow.params_to_bytes(bare))
    assert not has_gaussian(again)
    np.testing.assert_array_equal(np.asarray(flow.log_prob(again, problems.earlier_samples()[:5])),
                                  np.asarray(flow.log_prob(params, problems.earlier_samples()[:5])))


def test_an_invalid_reference_at_resume_is_named_as_such(fitted):
    blobs = []
    fitted.sample_posterior(200, key=7, checkpoint_callback=blobs.append, **RUN)
    for bad in (3, "gauss"):
        with pytest.raises(ValidationError, match="reference must be one of"):
            fitted.sample_posterior(resume_from=blobs[0], reference=bad)


def _box(mu, earlier, b_free=False):
    """Uniform prior on the unit square, likelihood N(mu, 0.05^2) in a and
    N(0.5, 0.2^2) in b (none in b if ``b_free``), flow fitted to ``earlier``."""
    def log_likelihood(x):
        ll = -0.5 * ((x[:, 0] - mu) / 0.05) ** 2
        return ll if b_free else ll - 0.5 * ((x[:, 1] - 0.5) / 0.2) ** 2

    aspire = Aspire(log_likelihood=log_likelihood,
                    log_prior=lambda x: jnp.zeros(x.shape[0]), dims=2,
                    parameters=["a", "b"], prior_bounds={"a": (0, 1), "b": (0, 1)})
    aspire.fit(earlier, key=0, n_epochs=5)
    return aspire


@pytest.mark.parametrize("mu, b_free, warned", [
    (0.02, False, True),    # a pressed against 0, where the earlier samples were not
    (0.5, False, False),    # a well inside
    (0.5, True, False),     # b at its prior (near both bounds) as before: no news
])
def test_a_posterior_pressing_against_a_bound_is_named(mu, b_free, warned, caplog):
    rng = np.random.default_rng(0)
    earlier = np.clip(rng.normal([0.3, 0.5], [0.1, 0.2], (2000, 2)), 0.01, 0.99)
    if b_free:
        earlier[:, 1] = rng.uniform(0, 1, 2000)
    aspire = _box(mu, earlier, b_free)
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        aspire.sample_posterior(1000, key=1)
    said = [r.getMessage() for r in caplog.records if "presses against" in r.getMessage()]
    assert bool(said) == warned
    if warned:
        assert "a at its lower bound 0" in said[0] and "b at" not in said[0]
