"""Tests of the MCMC kernels (pcn, tpcn, rwmh, mala) run directly as MCMC.

Invariance is checked the way the kernels are used inside SMC: a population
of N particles, all moved at once, with the population-level proposal fitted
beforehand. The parameters are adapted on a separate pilot population and
then frozen, so given them the N chains are independent; started from exact
draws, each chain stays exactly distributed as the target after any number
of sweeps if (and only if, up to the power of the check) the kernel leaves
the target invariant. The N final positions are then N independent draws:
the effective sample size of their mean is N.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.errors import ValidationError
from aspire_jax.kernels import (KernelState, MALASettings, PCNSettings,
                                RWMHSettings, build_kernel)
from aspire_jax.kernels.mala import value_and_grad_batched

KERNELS = ("pcn", "tpcn", "rwmh", "mala")
N = 2000
N_SWEEPS = 30


class _Target:
    """A normalised target with exact draws and known marginal moments.

    ``mean``, ``var`` and ``fourth`` (the central fourth moment) are per
    coordinate and exact.
    """

    def __init__(self, name, log_density, sample, mean, var, fourth):
        self.name = name
        self.log_density = log_density
        self.sample = sample
        self.mean = np.asarray(mean, np.float64)
        self.var = np.asarray(var, np.float64)
        self.fourth = np.asarray(fourth, np.float64)


def _correlated_gaussian(d: int) -> _Target:
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.1 * np.eye(d)
    mean = rng.normal(size=d)
    chol = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mu = jnp.asarray(mean, jnp.float32)

    def log_density(x):
        r = x - mu
        return -0.5 * jnp.einsum("ni,ij,nj->n", r, prec, r)

    def sample(key, n):
        return mu + jax.random.normal(key, (n, d)) @ chol.T

    var = np.diag(cov)
    return _Target(f"gauss{d}", log_density, sample, mean, var, 3 * var**2)


def _banana(s1: float = 2.0, b: float = 0.25) -> _Target:
    """Twisted Gaussian (Haario et al. 1999) in two dimensions.

    With ``x ~ N(0, diag(s1^2, 1))``, the map ``y1 = x1``,
    ``y2 = x2 + b (x1^2 - s1^2)`` has unit Jacobian, so the density of ``y`` is
    ``N(y1; 0, s1^2) N(y2 - b (y1^2 - s1^2); 0, 1)``, normalised, and exact
    draws are the map of Gaussian draws. Moments by construction: E y = 0;
    Var y2 = 1 + b^2 Var(x1^2) = 1 + 2 b^2 s1^4. With ``c = b s1^2`` and
    ``x1^2 / s1^2 - 1`` a centred chi-square(1) (variance 2, fourth central
    moment 60), the fourth central moment of y2 is 3 + 6 * 2 c^2 + 60 c^4.
    """

    def log_density(y):
        y1, y2 = y[:, 0], y[:, 1]
        return (-0.5 * (y1 / s1) ** 2
                - 0.5 * (y2 - b * (y1**2 - s1**2)) ** 2)

    def sample(key, n):
        x = jax.random.normal(key, (n, 2)) * jnp.array([s1, 1.0])
        return jnp.stack([x[:, 0], x[:, 1] + b * (x[:, 0] ** 2 - s1**2)], axis=1)

    c = b * s1**2
    var = [s1**2, 1 + 2 * c**2]
    fourth = [3 * s1**4, 3 + 12 * c**2 + 60 * c**4]
    return _Target("banana", log_density, sample, [0.0, 0.0], var, fourth)


TARGETS = {t.name: t for t in (_correlated_gaussian(2), _correlated_gaussian(5),
                               _banana())}
# The invariance check runs on these (the 2-D Gaussian serves the quick
# step-level tests).
INVARIANCE_TARGETS = ("gauss5", "banana")


def _with_aux(log_density):
    """Return the positions as aux, so carrying aux along can be checked."""

    def fn(u):
        return log_density(u), {"x": u}

    return fn


def _kernel_state(kernel, log_density_fn, u):
    logp, aux = log_density_fn(u)
    state = KernelState(u, logp, aux, None)
    if kernel.uses_grad:
        state = kernel.prepare(state, log_density_fn)
    return state


def _sweeps(kernel, log_density_fn, key, state, params, n_sweeps, adapt):
    """``n_sweeps`` steps; ``adapt`` (traced bool) switches adaptation on."""

    def body(carry, key_step):
        state, params = carry
        state, info = kernel.step(key_step, state, log_density_fn, params)
        adapted = kernel.adapt(params, info.acceptance)
        params = jax.tree_util.tree_map(lambda a, b: jnp.where(adapt, a, b),
                                        adapted, params)
        return (state, params), (info.acceptance, params.step_size)

    keys = jax.random.split(key, n_sweeps)
    (state, params), (acc, step) = jax.lax.scan(body, (state, params), keys)
    return state, params, acc, step


@functools.lru_cache(maxsize=None)
def _compiled_run(kernel_name: str, target_name: str, settings=None):
    """jit-compiled ``run(key, u_fit, u_start, params, adapt)``, one per case.

    Refits the proposal to ``u_fit``, then makes ``N_SWEEPS`` sweeps from
    ``u_start``, adapting the step when ``adapt`` is true. The same compiled
    function serves the pilot (adapting) and the measured (frozen) runs, and
    any initial step size (which only enters ``params``).
    """
    kernel = build_kernel(kernel_name, settings)
    log_density_fn = _with_aux(TARGETS[target_name].log_density)

    @jax.jit
    def run(key, u_fit, u_start, params, adapt):
        params = kernel.fit(params, u_fit)
        state = _kernel_state(kernel, log_density_fn, u_start)
        return _sweeps(kernel, log_density_fn, key, state, params, N_SWEEPS, adapt)

    return kernel, run


def _invariance_run(kernel_name, target_name, key, settings=None):
    """Pilot-adapted, then frozen, sweeps from exact draws."""
    kernel, run = _compiled_run(kernel_name, target_name, settings)
    target = TARGETS[target_name]
    key_pilot, key_draw, key_adapt, key_run = jax.random.split(key, 4)
    pilot = target.sample(key_pilot, N)
    _, params, _, _ = run(key_adapt, pilot, pilot, kernel.init(pilot), True)
    u0 = target.sample(key_draw, N)
    state, _, acc, _ = run(key_run, pilot, u0, params, False)
    return u0, state, acc


@pytest.mark.parametrize("target_name", INVARIANCE_TARGETS)
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_leaves_target_invariant(kernel_name, target_name, keys):
    for k in keys(3):
        _assert_invariant(TARGETS[target_name],
                          *_invariance_run(kernel_name, target_name, k))


def _assert_invariant(target, u0, state, acc):
    x = np.asarray(state.position, np.float64)
    # The aux pytree travels with the accepted positions.
    np.testing.assert_array_equal(np.asarray(state.aux["x"]),
                                  np.asarray(state.position))
    np.testing.assert_allclose(np.asarray(state.log_density),
                               np.asarray(target.log_density(state.position)),
                               rtol=1e-5, atol=1e-4)
    # The chains must have moved for the check to mean anything.
    assert 0.05 < float(jnp.mean(acc)) <= 1.0
    corr = np.mean([np.corrcoef(np.asarray(u0)[:, j], x[:, j])[0, 1]
                    for j in range(x.shape[1])])
    assert corr < 0.8, f"chains barely moved (start/end correlation {corr})"
    # N independent exact draws: the sample mean has sd sqrt(var / N) and
    # the sample variance sd sqrt((mu_4 - var^2) / N). 5 sd per check: a
    # two-sided tail of 6e-7, about 1e-4 over the ~200 checks of this
    # test (kernels x targets x coordinates x 2 moments x 3 keys).
    se_mean = np.sqrt(target.var / N)
    se_var = np.sqrt((target.fourth - target.var**2) / N)
    np.testing.assert_array_less(np.abs(x.mean(0) - target.mean), 5 * se_mean)
    np.testing.assert_array_less(np.abs(x.var(0, ddof=1) - target.var),
                                 5 * se_var)


# Adaptation: (kernel, target, settings, initial step too small, too large).
# Only ``init`` reads the initial step, so one compiled run per (kernel,
# settings) serves both starts. pCN moves with a Gaussian fitted to the
# particles are close to independence proposals: on the Gaussian their
# acceptance is near one at any step, and on the banana it stays above 0.5
# even as rho -> 1, so their case sets a reachable target of 0.6.
_PCN_ADAPT = PCNSettings(target_acceptance=0.6)
_ADAPT_CASES = [
    ("rwmh", "gauss5", None, RWMHSettings(initial_scale=0.05),
     RWMHSettings(initial_scale=8.0)),
    ("mala", "gauss5", None, MALASettings(initial_scale=0.05),
     MALASettings(initial_scale=4.0)),
    ("pcn", "banana", _PCN_ADAPT, PCNSettings(initial_rho=0.02),
     PCNSettings(initial_rho=0.999)),
    ("tpcn", "banana", _PCN_ADAPT, PCNSettings(initial_rho=0.02),
     PCNSettings(initial_rho=0.999)),
]


@pytest.mark.parametrize("kernel_name, target_name, settings, small, large",
                         _ADAPT_CASES)
def test_adaptation_moves_acceptance_toward_target(kernel_name, target_name,
                                                   settings, small, large, key):
    kernel, run = _compiled_run(kernel_name, target_name, settings)
    goal = (settings or type(small)()).target_acceptance
    u = TARGETS[target_name].sample(key, N)
    for start, direction in ((small, +1), (large, -1)):
        params = build_kernel(kernel_name, start).init(u)
        _, _, acc, step = run(jax.random.key(1), u, u, params, True)
        acc, step = np.asarray(acc), np.asarray(step)
        # The step moves in the right direction and the acceptance with it.
        assert direction * (step[-1] - step[0]) > 0
        assert abs(acc[-10:].mean() - goal) < abs(acc[0] - goal)
        # Fixed-gain Robbins–Monro settles into a band around the target; the
        # per-sweep acceptance averages N = 2000 particles (sd < 0.5 / sqrt(N)
        # ~ 0.01), so the band is set by the gain: 0.1 is several times that.
        assert abs(acc[-10:].mean() - goal) < 0.1


@functools.lru_cache(maxsize=None)
def _step_case(kernel_name: str):
    """Kernel, density, state, params and the jitted step on the 2-D Gaussian."""
    target = TARGETS["gauss2"]
    kernel = build_kernel(kernel_name)
    log_density_fn = _with_aux(target.log_density)
    u = target.sample(jax.random.key(0), 300)
    params = kernel.fit(kernel.init(u), u)
    state = _kernel_state(kernel, log_density_fn, u)
    jitted = jax.jit(lambda k, s, p: kernel.step(k, s, log_density_fn, p))
    return kernel, log_density_fn, state, params, jitted


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_step_jit_matches_eager(kernel_name):
    kernel, log_density_fn, state, params, jitted = _step_case(kernel_name)
    k = jax.random.key(7)
    eager, info_e = kernel.step(k, state, log_density_fn, params)
    compiled, info_j = jitted(k, state, params)
    # Same random numbers and decisions; values differ at most by float32
    # round-off of differently fused arithmetic.
    for a, b in zip(jax.tree_util.tree_leaves(eager),
                    jax.tree_util.tree_leaves(compiled)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(info_e.acceptance), float(info_j.acceptance),
                               rtol=1e-5)


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_step_vmap_over_keys_matches_rows(kernel_name, keys):
    kernel, log_density_fn, state, params, jitted = _step_case(kernel_name)
    batch_keys = keys(4)
    batched, info = jax.jit(jax.vmap(jitted, in_axes=(0, None, None)))(
        batch_keys, state, params)
    assert batched.position.shape == (4,) + state.position.shape
    assert info.acceptance.shape == (4,)
    for i in range(4):
        row, row_info = jitted(batch_keys[i], state, params)
        for a, b in zip(jax.tree_util.tree_leaves(row),
                        jax.tree_util.tree_leaves(batched)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[i]), rtol=1e-5,
                                       atol=1e-6)
        np.testing.assert_allclose(float(row_info.acceptance),
                                   float(info.acceptance[i]), rtol=1e-5)


def test_initial_scales_and_step_size():
    u = jnp.zeros((10, 4)) + jnp.arange(10.0)[:, None] * jnp.eye(4)[0]
    rw = build_kernel("rwmh", RWMHSettings(initial_scale=0.5)).init(u)
    assert float(rw.step_size) == pytest.approx(0.5 * 2.38 / math.sqrt(4), rel=1e-6)
    ml = build_kernel("mala").init(u)
    assert float(ml.step_size) == pytest.approx(1.65 * 4 ** (-1 / 6), rel=1e-6)
    for name in KERNELS:
        kernel = build_kernel(name)
        params = kernel.init(u)
        # The engine reports this diagnostic for every kernel.
        assert jnp.shape(params.step_size) == ()
        assert kernel.uses_grad == (name == "mala")
        assert (kernel.prepare is not None) == kernel.uses_grad


def test_mala_gradients_carried_with_accepted_moves(key):
    target = TARGETS["gauss5"]
    kernel = build_kernel("mala")
    log_density_fn = _with_aux(target.log_density)
    u = target.sample(key, 500)
    params = kernel.fit(kernel.init(u), u)
    state = _kernel_state(kernel, log_density_fn, u)
    grad_at = jax.vmap(jax.grad(lambda x: target.log_density(x[None])[0]))
    np.testing.assert_allclose(np.asarray(state.grad), np.asarray(grad_at(u)),
                               rtol=1e-4, atol=1e-4)
    new, info = kernel.step(jax.random.key(3), state, log_density_fn, params)
    assert 0 < float(info.acceptance) < 1
    np.testing.assert_allclose(np.asarray(new.grad), np.asarray(grad_at(new.position)),
                               rtol=1e-4, atol=1e-4)
    # A step without prepare computes the gradient itself, with the same result.
    bare = state._replace(grad=None)
    again, _ = kernel.step(jax.random.key(3), bare, log_density_fn, params)
    np.testing.assert_allclose(np.asarray(again.position), np.asarray(new.position),
                               rtol=1e-6, atol=1e-6)


@jax.custom_jvp
def _spoil(x0):
    """Zero, with a NaN derivative where ``x0 > 1``."""
    return jnp.zeros_like(x0)


@_spoil.defjvp
def _spoil_jvp(primals, tangents):
    (x0,), (t,) = primals, tangents
    return _spoil(x0), jnp.where(x0 > 1.0, jnp.nan, 0.0) * t


def test_mala_rejects_non_finite_gradients(key):
    def log_density(x):
        return -0.5 * jnp.sum(x**2, axis=-1) + _spoil(x[:, 0])

    log_density_fn = _with_aux(log_density)
    u = jax.random.normal(key, (1000, 2))
    u = u.at[:, 0].set(jnp.minimum(u[:, 0], 0.9))
    # Ten particles start where the gradient is NaN: they must never move.
    u = u.at[:10, 0].set(1.5)
    kernel = build_kernel("mala")
    params = kernel.fit(kernel.init(u), u)
    state = _kernel_state(kernel, log_density_fn, u)
    _, grad = value_and_grad_batched(log_density_fn, u)[1:]
    assert not np.isfinite(np.asarray(grad[:10])).all(axis=1).any()
    state, _, acc, _ = jax.jit(lambda k, s: _sweeps(
        kernel, log_density_fn, k, s, params, 20, adapt=False))(jax.random.key(1),
                                                              state)
    x = np.asarray(state.position)
    assert float(np.mean(acc)) > 0.2
    np.testing.assert_array_equal(x[:10], np.asarray(u[:10]))
    assert np.all(x[10:, 0] <= 1.0)
    assert np.isfinite(np.asarray(state.grad[10:])).all()
    assert np.isfinite(x).all()


def test_build_kernel_validation():
    with pytest.raises(ValidationError, match="'hmc'"):
        build_kernel("hmc")
    with pytest.raises(ValidationError, match="RWMHSettings"):
        build_kernel("rwmh", PCNSettings())
    with pytest.raises(ValidationError, match="MALASettings"):
        build_kernel("mala", RWMHSettings())


@pytest.mark.parametrize("cls", [RWMHSettings, MALASettings])
@pytest.mark.parametrize("field, value", [("target_acceptance", 1.5),
                                          ("target_acceptance", 0.0),
                                          ("initial_scale", 0.0),
                                          ("initial_scale", -1.0),
                                          ("adaptation_rate", -0.1),
                                          ("initial_scale", float("inf")),
                                          ("adaptation_rate", float("inf")),
                                          ("initial_scale", "1.0"),
                                          ("target_acceptance", True)])
def test_settings_validation(cls, field, value):
    # Each kernel's settings are checked alike, non-numbers included.
    with pytest.raises(ValidationError, match=f"{cls.__name__}.{field} must be"):
        cls(**{field: value})


def test_move_noise_is_standard_normal_and_uniform():
    # draw_move_noise: normals and the accept uniforms U from one draw.
    # Kolmogorov-Smirnov at 1e5 draws per column: a p-value below 1e-4
    # would be a real departure (one check in 10^4 fails by chance).
    from scipy import stats

    from aspire_jax.kernels.base import draw_move_noise

    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            z, u = draw_move_noise(jax.random.key(0), 100_000, 2, dtype)
        assert z.shape == (100_000, 2) and u.shape == (100_000,)
        assert z.dtype == dtype and u.dtype == dtype
        u = np.asarray(u, np.float64)
        # Strictly inside (0, 1): U < prob must reject a zero probability and
        # accept a probability of one.
        assert np.all(u > 0) and np.all(u < 1)
        for column in np.asarray(z).T:
            assert np.all(np.isfinite(column))
            assert stats.kstest(column, "norm").pvalue > 1e-4
        assert stats.kstest(u, "uniform").pvalue > 1e-4
        # The uniforms are independent of the normals of the same rows.
        assert abs(np.corrcoef(u, np.asarray(z)[:, 0])[0, 1]) < 5 / np.sqrt(u.size)


def test_mh_select_accepts_with_probability_min_one_ratio():
    from aspire_jax.kernels.base import KernelState, mh_select

    log_alpha = jnp.array([0.0, 1.0, jnp.log(0.25), -jnp.inf, jnp.nan, jnp.log(0.25)])
    u = jnp.array([0.999, 0.5, 0.2, 1e-30, 1e-30, 0.3])
    current = KernelState(jnp.zeros((6, 1)), jnp.zeros(6), None)
    proposal = KernelState(jnp.ones((6, 1)), jnp.ones(6), None)
    state, prob = mh_select(u, log_alpha, proposal, current)
    np.testing.assert_allclose(prob, [1, 1, 0.25, 0, 0, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(state.position[:, 0], [1, 1, 1, 0, 0, 0])


def test_tpcn_with_non_integer_nu_keeps_the_target(keys):
    # nu + d not an integer: the Gamma mixing variable comes from
    # jax.random.gamma instead of the shared block of normals.
    name = INVARIANCE_TARGETS[0]
    for k in keys(2):
        _assert_invariant(TARGETS[name], *_invariance_run(
            "tpcn", name, k, PCNSettings(nu=4.5)))


@pytest.mark.parametrize("bad", [dict(nu=0.0), dict(nu=-1.0), dict(nu=float("nan")),
                                 dict(nu=float("inf")), dict(initial_rho=1.0),
                                 dict(initial_rho=0.0), dict(target_acceptance=2.0),
                                 dict(t_fit_iterations=-3), dict(t_fit_iterations=2.5),
                                 dict(adaptation_rate=-0.1)])
def test_pcn_settings_reject_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ValidationError, match=f"PCNSettings.{name}"):
        PCNSettings(**bad)
