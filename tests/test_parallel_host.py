"""Host (NumPy) likelihoods evaluated point by point or in chunks, in a pool.

``wrap_numpy_likelihood(fn, vectorized=False, map_fn=pool.map)`` must give
exactly the values of the batch function, eagerly, under ``jit`` and
``vmap``, with threads or spawned processes; and an SMC run that uses it must
be the very run of the batch function under the same key.
"""

import functools
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import problems
from _pool_worker import batch_log_likelihood, point_log_likelihood
from aspire_jax import wrap_numpy_likelihood
from aspire_jax.errors import ValidationError

X = jnp.asarray(np.random.default_rng(3).normal(size=(7, problems.DIMS)), jnp.float32)


def _expected(x):
    return np.asarray(batch_log_likelihood(np.asarray(x))).astype(np.float32)


@pytest.fixture(scope="module")
def threads():
    with ThreadPoolExecutor(2) as ex:
        yield ex


def test_point_function_matches_the_batch_function(threads):
    variants = {
        "map": wrap_numpy_likelihood(point_log_likelihood, vectorized=False),
        "threads": wrap_numpy_likelihood(point_log_likelihood, vectorized=False,
                                         map_fn=threads.map),
        # 7 rows in chunks of 3: the last chunk is short.
        "chunks": wrap_numpy_likelihood(batch_log_likelihood, map_fn=threads.map,
                                        chunk_size=3),
        "one chunk": wrap_numpy_likelihood(batch_log_likelihood, map_fn=threads.map),
    }
    want = _expected(X)
    for name, f in variants.items():
        for g in (f, jax.jit(f)):
            out = g(X)
            assert out.dtype == X.dtype, name
            np.testing.assert_array_equal(np.asarray(out), want, err_msg=name)
        # vmap folds the leading axis into one host call of 2 * 7 points.
        both = jax.vmap(f)(jnp.stack([X, X + 1]))
        np.testing.assert_array_equal(np.asarray(both),
                                      np.stack([want, _expected(X + 1)]), err_msg=name)


def test_spawned_process_pool_under_jit():
    with mp.get_context("spawn").Pool(2) as pool:
        f = jax.jit(wrap_numpy_likelihood(
            point_log_likelihood, vectorized=False,
            map_fn=functools.partial(pool.map, chunksize=2)))
        np.testing.assert_array_equal(np.asarray(f(X)), _expected(X))


def test_smc_run_on_a_pool_is_the_batch_run():
    """Same key, same values: the per-point run on a process pool must be the
    batch function's run, and its evidence must match the exact one within
    the run's own error bar."""
    fitted = problems.fitted_aspire()
    runs = []
    with mp.get_context("spawn").Pool(2) as pool:
        for ll in (wrap_numpy_likelihood(batch_log_likelihood),
                   wrap_numpy_likelihood(point_log_likelihood, vectorized=False,
                                         map_fn=pool.map)):
            aspire = problems.make_aspire(log_likelihood=ll)
            aspire.flow_params = fitted.flow_params
            runs.append(aspire.sample_posterior(300, key=5, progress=False))
    batch, pooled = runs
    np.testing.assert_array_equal(np.asarray(pooled.x), np.asarray(batch.x))
    assert float(pooled.log_evidence) == float(batch.log_evidence)
    err = float(pooled.log_evidence_error)
    assert 0 < err < 0.5
    # 4 reported standard errors: a correct run fails with probability ~6e-5.
    assert abs(float(pooled.log_evidence) - problems.log_evidence()) < 4 * err


def _vector_point(p):
    return np.ones(2)


def test_point_function_returning_an_array_is_named():
    f = wrap_numpy_likelihood(_vector_point, vectorized=False)
    with pytest.raises(ValidationError) as info:
        f(X)
    msg = str(info.value)
    assert msg.startswith("wrap_numpy_likelihood: _vector_point (vectorized=False)")
    assert "shape (2,)" in msg and "\n" not in msg


@pytest.mark.parametrize("kwargs, match", [
    (dict(chunk_size=4), "needs map_fn"),
    (dict(chunk_size=4, map_fn=map, vectorized=False), "every point is its own task"),
    (dict(chunk_size=0, map_fn=map), "positive integer"),
    (dict(chunk_size=True, map_fn=map), "positive integer"),
    (dict(chunk_size=2.0, map_fn=map), "positive integer"),
    (dict(map_fn=4), "map_fn must be a callable"),
    (dict(vectorized="no"), "True or False"),
])
def test_settings_that_do_not_fit_are_refused_at_once(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        wrap_numpy_likelihood(batch_log_likelihood, **kwargs)


def test_non_callable_is_refused():
    with pytest.raises(ValidationError, match="needs a callable"):
        wrap_numpy_likelihood(np.zeros(3))


def _short_map(f, items):
    return list(map(f, items))[:-1]


def _long_map(f, items):
    out = list(map(f, items))
    return out + out[:1]


@pytest.mark.parametrize("mapper", [_short_map, _long_map])
@pytest.mark.parametrize("mode", [dict(vectorized=False),
                                  dict(chunk_size=3)])
def test_map_fn_with_the_wrong_count_is_named(mapper, mode):
    fn = point_log_likelihood if mode.get("vectorized") is False else batch_log_likelihood
    f = wrap_numpy_likelihood(fn, map_fn=mapper, **mode)
    with pytest.raises(ValidationError, match=r"map_fn returned \d+ results for \d+"):
        f(X)


def test_reversed_chunks_are_suspected():
    f = wrap_numpy_likelihood(batch_log_likelihood, chunk_size=3,
                              map_fn=lambda g, items: list(map(g, items))[::-1])
    with pytest.raises(ValidationError, match="out of order"):
        f(X)


def _in_place(p):
    p -= problems.LIKE_MEAN  # edits its input, as user code may
    return float(-0.5 * np.sum(p**2))


def test_functions_that_edit_their_input_work_without_a_pool(threads):
    plain = wrap_numpy_likelihood(_in_place, vectorized=False)
    pooled = wrap_numpy_likelihood(_in_place, vectorized=False, map_fn=threads.map)
    want = -0.5 * np.sum((np.asarray(X, np.float64) - problems.LIKE_MEAN) ** 2, axis=1)
    for f in (plain, jax.jit(plain), pooled):
        np.testing.assert_allclose(np.asarray(f(X)), want, rtol=1e-6)


def test_worker_failure_keeps_its_remote_traceback():
    """A pool's exception reaches the caller as itself, with the worker's
    traceback still attached (multiprocessing's RemoteTraceback)."""
    from _pool_worker import Boom, failing_point_log_likelihood

    fitted = problems.fitted_aspire()
    with mp.get_context("spawn").Pool(2) as pool:
        probe_ok = {"n": 0}

        def mapper(f, items):
            probe_ok["n"] += 1
            if probe_ok["n"] == 1:  # the probe passes; the initial draws fail
                return list(map(point_log_likelihood, items))
            return pool.map(f, items)

        ll = wrap_numpy_likelihood(failing_point_log_likelihood, vectorized=False,
                                   map_fn=mapper)
        aspire = problems.make_aspire(log_likelihood=ll)
        aspire.flow_params = fitted.flow_params
        with pytest.raises(Boom) as info:
            aspire.sample_posterior(200, key=0, progress=False)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "during the initial draws of the SMC run" in notes
    cause = info.value.__cause__
    assert cause is not None and "failing_point_log_likelihood" in str(cause)
