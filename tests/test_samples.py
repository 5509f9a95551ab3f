"""Tests of the Samples pytree and its conversions."""

import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.errors import CheckpointError, ValidationError
from aspire_jax.samples import Samples

N, D = 64, 3
NAMES = ("mass", "spin", "phase")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    fields = {
        k: rng.normal(size=N).astype(np.float32)
        for k in ("log_likelihood", "log_prior", "log_q", "log_weights")
    }
    return Samples.from_array(
        x, NAMES, log_evidence=np.float32(-3.5), log_evidence_error=0.25, **fields
    )


def _assert_same(a: Samples, b: Samples):
    assert a.parameters == b.parameters
    for name in (
        "x",
        "log_likelihood",
        "log_prior",
        "log_q",
        "log_weights",
        "log_evidence",
        "log_evidence_error",
    ):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert np.asarray(va).dtype == np.asarray(vb).dtype, name
            np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=name)


# -- construction ---------------------------------------------------------------


def test_from_array_converts_lists_and_ints():
    s = Samples.from_array([[1, 2], [3, 4], [5, 6]])
    assert isinstance(s.x, jax.Array)
    assert s.x.dtype == jnp.float32
    assert s.parameters == ("x_0", "x_1")
    assert (s.n_samples, s.dims, len(s)) == (3, 2, 3)


def test_plain_constructor_is_tolerant():
    s = Samples([[0.0, 1.0], [2.0, 3.0]], parameters=["a", "b"])
    assert isinstance(s.x, jax.Array)
    assert s.parameters == ("a", "b")  # a tuple, so it is hashable static data
    hash(s.parameters)
    t = Samples(np.arange(6.0).reshape(3, 2))
    assert t.parameters == ("x_0", "x_1")
    np.testing.assert_allclose(t.mean(), [2.0, 3.0])
    assert t.weights.dtype == jnp.float32


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros(5), {}, r"2-D .* got shape \(5,\)"),
        (np.zeros((2, 3, 4)), {}, r"got shape \(2, 3, 4\)"),
        (np.zeros((0, 2)), {}, "at least one sample"),
        (np.zeros((5, 2)), {"parameters": ["a"]}, r"1 parameter names \('a',\)"),
        (np.zeros((5, 2)), {"parameters": ["a", "a"]}, r"unique; repeated: \['a'\]"),
        (np.zeros((5, 2)), {"parameters": "ab"}, "the string 'ab'"),
        (np.zeros((5, 2)), {"parameters": ["a", 3]}, "must be strings; got 3"),
        (np.zeros((5, 2)), {"log_q": np.zeros(4)}, r"log_q must have shape \(5,\)"),
        (np.zeros((5, 2)), {"log_evidence": np.zeros(2)}, r"shape \(\) .* \(2,\)"),
        (np.zeros((5, 2)), {"log_z": 1.0}, r"unknown Samples fields \['log_z'\]"),
        (np.array([["a", "b"]]), {}, "must be numeric"),
        (np.array([[1.0 + 2.0j]]), {}, "x must be real; got dtype complex"),
        (np.zeros((2, 1)), {"log_q": [0.0, 1j]}, "log_q must be real; got dtype c"),
        (np.zeros((5, 0)), {}, r"at least one parameter column; got shape \(5, 0\)"),
        (np.zeros((2, 2)), {"parameters": ["a", ""]}, "names must not be empty"),
    ],
)
def test_from_array_validation(x, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        Samples.from_array(x, **kwargs)


# -- weights and moments --------------------------------------------------------


def test_weights_and_ess_for_known_weights():
    w = np.array([1.0, 1.0, 2.0, 0.0])
    with np.errstate(divide="ignore"):
        s = Samples.from_array(np.zeros((4, 1)), log_weights=np.log(w) + 7.0)
    np.testing.assert_allclose(s.weights, [0.25, 0.25, 0.5, 0.0], rtol=1e-6)
    # Kish: (sum w)^2 / sum w^2 = 16 / 6.
    np.testing.assert_allclose(s.effective_sample_size, 16 / 6, rtol=1e-6)
    np.testing.assert_allclose(s.efficiency, 16 / 24, rtol=1e-6)
    np.testing.assert_allclose(
        s.log_weights_normalised[:3], np.log([0.25, 0.25, 0.5]), rtol=1e-6
    )


def test_equal_weights():
    s = Samples.from_array(np.ones((10, 2)))
    np.testing.assert_allclose(s.weights, np.full(10, 0.1), rtol=1e-6)
    assert float(s.effective_sample_size) == 10.0
    assert float(s.efficiency) == 1.0


def test_weighted_moments_match_numpy(samples):
    x = np.asarray(samples.x, np.float64)
    w = np.exp(np.asarray(samples.log_weights, np.float64))
    w /= w.sum()
    mean = np.average(x, axis=0, weights=w)
    np.testing.assert_allclose(samples.mean(), mean, rtol=1e-5, atol=1e-6)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(samples.std(), std, rtol=1e-5)
    for ddof in (0, 1):
        cov = np.cov(x.T, aweights=w, ddof=ddof)
        np.testing.assert_allclose(samples.cov(ddof=ddof), cov, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            samples.std(ddof=ddof), np.sqrt(np.diag(cov)), rtol=1e-5
        )


def test_quantiles():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(101, 2)).astype(np.float32)
    q = np.array([0.0, 0.05, 0.5, 0.95, 1.0])
    s = Samples.from_array(x)
    np.testing.assert_allclose(
        s.quantile(q), np.quantile(x, q, axis=0, method="hazen"), atol=2e-5
    )
    assert s.quantile(0.5).shape == (2,)
    # All weight on one point: every quantile is that point.
    with np.errstate(divide="ignore"):
        lw = np.log([0.0, 0.0, 1.0, 0.0])
    one = Samples.from_array(np.arange(4.0)[:, None], log_weights=lw)
    np.testing.assert_allclose(one.quantile(q)[:, 0], 2.0)
    # Two equal points: mid-points at 0.25 and 0.75 interpolate to 0.5.
    with np.errstate(divide="ignore"):
        two = Samples.from_array(
            np.arange(4.0)[:, None], log_weights=np.log([1.0, 1.0, 0.0, 0.0])
        )
    np.testing.assert_allclose(two.quantile(0.5), [0.5])


def test_summary(samples):
    summary = samples.summary()
    assert list(summary) == list(NAMES)
    qs = samples.quantile(jnp.array([0.05, 0.5, 0.95]))
    for i, name in enumerate(NAMES):
        entry = summary[name]
        assert set(entry) == {"mean", "std", "q05", "q50", "q95"}
        assert all(isinstance(v, float) for v in entry.values())
        np.testing.assert_allclose(entry["mean"], samples.mean()[i], rtol=1e-6)
        np.testing.assert_allclose(entry["std"], samples.std()[i], rtol=1e-6)
        np.testing.assert_allclose(
            [entry["q05"], entry["q50"], entry["q95"]], qs[:, i], rtol=1e-6
        )


# -- resampling -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resample_gives_equal_weights(samples, key, method):
    r = samples.resample(key, method=method)
    assert r.log_weights is None
    assert r.n_samples == N
    assert float(r.efficiency) == 1.0
    assert r.parameters == NAMES
    assert r.log_evidence is samples.log_evidence
    r37 = samples.resample(key, n=37, method=method)
    assert r37.n_samples == 37 and r37.log_q.shape == (37,)
    # Rows stay aligned: each resampled row is a row of the original.
    rows = {tuple(row) for row in np.asarray(samples.x).tolist()}
    assert all(tuple(row) in rows for row in np.asarray(r37.x).tolist())


def test_systematic_counts_are_floor_or_ceil(key):
    w = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    with np.errstate(divide="ignore"):
        s = Samples.from_array(np.arange(5.0)[:, None], log_weights=np.log(w))
    n = 40
    for k in jax.random.split(key, 5):
        r = s.resample(k, n=n)
        counts = np.bincount(np.asarray(r.x[:, 0], int), minlength=5)
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * w)) and np.all(counts <= np.ceil(n * w))


def test_resample_jit_matches_eager(samples, key):
    eager = samples.resample(key)
    jitted = jax.jit(lambda s, k: s.resample(k))(samples, key)
    _assert_same(eager, jitted)


@pytest.mark.parametrize(
    "args, match",
    [
        ((jax.random.PRNGKey(0),), "typed PRNG key"),
        ((jax.random.key(0), 0), "positive int; got 0"),
        ((jax.random.key(0), 3.5), "positive int; got 3.5"),
        ((jax.random.key(0), None, "stratified"), "'stratified'"),
        ((jax.random.split(jax.random.key(0), 2),), r"single key; got shape \(2,\)"),
    ],
)
def test_resample_validation(samples, args, match):
    with pytest.raises(ValidationError, match=match):
        samples.resample(*args)


# -- selection ------------------------------------------------------------------


def test_getitem(samples):
    np.testing.assert_array_equal(samples["spin"], samples.x[:, 1])
    with pytest.raises(KeyError, match="'tilt'"):
        samples["tilt"]
    sub = samples[["phase", "mass"]]
    assert sub.parameters == ("phase", "mass")
    np.testing.assert_array_equal(sub.x, samples.x[:, [2, 0]])
    one = samples[3]
    assert one.x.shape == (1, D)
    np.testing.assert_array_equal(one.log_q, samples.log_q[3:4])
    np.testing.assert_array_equal(samples[-1].x, samples.x[-1:])
    with pytest.raises(IndexError):
        samples[N]
    sl = samples[5:15]
    assert sl.n_samples == 10 and sl.log_prior.shape == (10,)
    idx = np.array([0, 7, 7])
    np.testing.assert_array_equal(samples[idx].log_weights, samples.log_weights[idx])
    mask = np.arange(N) % 4 == 0
    assert samples[mask].n_samples == N // 4
    assert samples[jnp.asarray(5)].n_samples == 1
    assert "mass" in samples and "tilt" not in samples


def test_concatenate(samples):
    joined = Samples.concatenate([samples[:10], samples[10:40], samples[40:]])
    _assert_same(joined, samples)
    with pytest.raises(ValidationError, match="cannot concatenate samples in"):
        Samples.concatenate([samples, samples[["mass", "spin", "phase"]][["spin"]]])
    with pytest.raises(ValidationError, match="log_q is set in some parts"):
        Samples.concatenate([samples, samples.replace(log_q=None)])
    with pytest.raises(ValidationError, match="non-empty"):
        Samples.concatenate([])
    mixed = Samples.concatenate([samples[:4], samples[4:8].replace(log_weights=None)])
    np.testing.assert_array_equal(mixed.log_weights[4:], np.zeros(4))
    other = samples.replace(log_evidence=jnp.float32(0.0))
    assert Samples.concatenate([samples, other]).log_evidence is None


# -- round trips ----------------------------------------------------------------


def test_numpy_and_dict_round_trips_are_exact(samples):
    arrays = samples.to_numpy()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert arrays["parameters"].tolist() == list(NAMES)
    _assert_same(Samples.from_dict(arrays), samples)
    flat = samples.to_dict()
    assert list(flat)[:D] == list(NAMES)
    np.testing.assert_array_equal(flat["spin"], np.asarray(samples.x[:, 1]))
    _assert_same(Samples.from_dict(flat), samples)
    nested = samples.to_dict(flat=False)
    assert nested["parameters"] == list(NAMES)
    _assert_same(Samples.from_dict(nested), samples)


def test_from_dict_flat_selects_parameters():
    data = {"a": [1.0, 2.0], "b": [3.0, 4.0], "log_q": [0.0, -1.0]}
    s = Samples.from_dict(data, parameters=["b", "a"])
    assert s.parameters == ("b", "a")
    np.testing.assert_array_equal(s.x, [[3.0, 1.0], [4.0, 2.0]])
    np.testing.assert_array_equal(s.log_q, [0.0, -1.0])
    with pytest.raises(ValidationError, match="column 'b' has 1 values where 'a' has 2"):
        Samples.from_dict({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValidationError, match=r"column 'a' has shape \(2, 2\); every "
                       "parameter column must be 1-D"):
        Samples.from_dict({"a": np.zeros((2, 2)), "b": [1.0, 2.0]})
    with pytest.raises(ValidationError, match="no parameter columns"):
        Samples.from_dict({"log_q": [1.0]})


def test_flat_dict_rejects_clashing_names():
    s = Samples.from_array(np.zeros((2, 2)), ["log_q", "a"])
    with pytest.raises(ValidationError, match=r"\['log_q'\] clash"):
        s.to_dict()
    assert s.to_dict(flat=False)["parameters"] == ["log_q", "a"]


def test_hdf5_round_trip(samples, tmp_path):
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        samples.save(f)
        samples[:5].save(f, path="posterior/first")
        samples.save(f)  # overwriting replaces the group
        assert f["samples"].attrs["parameters"] == '["mass", "spin", "phase"]'
    with h5py.File(path, "r") as f:
        _assert_same(Samples.load(f), samples)
        _assert_same(Samples.load(f, path="posterior/first"), samples[:5])
        with pytest.raises(CheckpointError, match="no samples at 'prior'"):
            Samples.load(f, path="prior")
    bare = Samples.from_array(np.ones((3, 1)), ["a"])
    bare.save(path, path="bare")  # a path opens the file in append mode
    _assert_same(Samples.load(path, path="bare"), bare)
    _assert_same(Samples.load(path), samples)


def test_to_dataframe_without_pandas(samples, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pandas.*aspire-jax\[pandas\]"):
        samples.to_dataframe()


def test_to_dataframe(samples):
    pytest.importorskip("pandas")
    frame = samples.to_dataframe()
    assert list(frame.columns)[:D] == list(NAMES)
    np.testing.assert_array_equal(frame["log_q"].to_numpy(), np.asarray(samples.log_q))
    assert frame.attrs["log_evidence"] == -3.5


# -- transformations ------------------------------------------------------------


def test_passes_through_jit(samples):
    out = jax.jit(lambda s: s)(samples)
    assert isinstance(out, Samples)
    _assert_same(out, samples)
    # jit parity; float32 reductions may reorder, so allow a few ulps.
    fns = (lambda s: s.mean(), lambda s: s.std(), lambda s: s.effective_sample_size)
    for fn in fns:
        np.testing.assert_allclose(jax.jit(fn)(samples), fn(samples), rtol=1e-6)


def test_jit_does_not_retrace_for_new_values(samples):
    traces = []

    @jax.jit
    def ess(s):
        traces.append(1)
        return s.effective_sample_size

    ess(samples)
    ess(samples.replace(log_weights=samples.log_weights * 2))
    assert len(traces) == 1


def test_vmap_over_batch(samples):
    parts = [samples[:16], samples[16:32], samples[32:48]]
    batch = jax.tree.map(lambda *a: jnp.stack(a), *parts)
    means = jax.vmap(lambda s: s.mean())(batch)
    assert means.shape == (3, D)
    for i, part in enumerate(parts):
        np.testing.assert_allclose(means[i], part.mean(), rtol=1e-6, atol=1e-7)


# -- value checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "log_weights, match",
    [
        ([0.0, np.nan, 1.0], r"log_weights is NaN at 1 sample \(first at index 1\)"),
        ([0.0, np.inf, 1.0], r"log_weights is \+inf at 1 sample \(first at index 1\)"),
        ([-np.inf, -np.inf, -np.inf], "log_weights are all -inf"),
    ],
)
def test_from_array_rejects_unusable_log_weights(log_weights, match):
    with pytest.raises(ValidationError, match=match):
        Samples.from_array(np.zeros((3, 1)), log_weights=log_weights)


def test_from_array_keeps_minus_inf_log_weights():
    s = Samples.from_array(np.arange(3.0)[:, None], log_weights=[0.0, -np.inf, 0.0])
    np.testing.assert_allclose(s.weights, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(s.mean(), [1.0])


@pytest.mark.parametrize("field", ["log_likelihood", "log_prior", "log_q"])
def test_from_array_rejects_nan_and_plus_inf_densities(field):
    match = rf"{field} is NaN at 2 samples \(first at index 0\)"
    with pytest.raises(ValidationError, match=match):
        Samples.from_array(np.zeros((3, 1)), **{field: [np.nan, 0.0, np.nan]})
    with pytest.raises(ValidationError, match=rf"{field} is \+inf"):
        Samples.from_array(np.zeros((3, 1)), **{field: [0.0, np.inf, 0.0]})
    # -inf marks an impossible point and is kept, even everywhere.
    s = Samples.from_array(np.zeros((3, 1)), **{field: [-np.inf] * 3})
    assert np.all(np.isneginf(getattr(s, field)))


def test_from_array_value_checks_skip_tracers():
    @jax.jit
    def build(x, lw):
        return Samples.from_array(x, log_weights=lw).mean()

    np.testing.assert_allclose(build(jnp.ones((3, 2)), jnp.zeros(3)), [1.0, 1.0])


def test_resample_rejects_unusable_weights(key):
    # The plain constructor does not validate; resample still refuses.
    s = Samples(jnp.zeros((3, 1)), log_weights=jnp.full(3, -jnp.inf))
    with pytest.raises(ValidationError, match="no usable weights"):
        s.resample(key)


def _seven():
    return Samples.from_array(
        np.arange(14.0).reshape(7, 2), ["a", "b"], log_q=np.arange(7.0)
    )


def test_getitem_index_arrays_are_range_checked():
    s = _seven()
    with pytest.raises(IndexError, match=r"index 10 out of range for 7 samples"):
        s[np.array([0, 10])]
    with pytest.raises(IndexError, match=r"index -8 out of range for 7 samples"):
        s[[1, -8]]
    with pytest.raises(IndexError, match=r"index 7 out of range"):
        s[jnp.array([7])]
    with pytest.raises(IndexError, match=r"index 9 out of range"):
        s[jnp.asarray(9)]
    # Negative indices within range count from the end, as in numpy.
    np.testing.assert_array_equal(s[np.array([-1, 0, -7])].log_q, [6.0, 0.0, 0.0])
    np.testing.assert_array_equal(s[[-2]].x, [[10.0, 11.0]])


@pytest.mark.parametrize(
    "item, match",
    [
        ([], "selects no samples"),
        (np.array([], dtype=int), "selects no samples"),
        (slice(100, None), r"slice\(100, None, None\) selects no samples of 7"),
        (slice(3, 3), "selects no samples"),
        (np.zeros(7, bool), "selects no samples"),
        (1.5, "must be integers or a boolean mask of length 7; got dtype float64"),
        (np.array([0.0, 1.0]), "got dtype float64"),
        (slice(0.5, 3), "slice bounds must be integers"),
        (slice(None, None, 0), "nonzero step"),
        (True, r"boolean index must be a mask of length 7"),
        (np.bool_(False), r"boolean index must be a mask of length 7"),
        (np.ones(3, bool), r"a mask of length 7; got shape \(3,\)"),
        (np.ones((7, 1), bool), r"got shape \(7, 1\)"),
        (np.zeros((2, 2), int), r"1-D; got shape \(2, 2\)"),
        (None, "got dtype object"),
        ([0, "a"], "got dtype <U"),
    ],
)
def test_getitem_refuses_unclear_selections(item, match):
    with pytest.raises(IndexError, match=match):
        _seven()[item]


def test_getitem_masks_and_slices_still_work():
    s = _seven()
    mask = np.array([True, False, True, False, False, False, True])
    np.testing.assert_array_equal(s[mask].log_q, [0.0, 2.0, 6.0])
    np.testing.assert_array_equal(s[jnp.asarray(mask)].log_q, [0.0, 2.0, 6.0])
    np.testing.assert_array_equal(s[list(mask)].log_q, [0.0, 2.0, 6.0])
    np.testing.assert_array_equal(s[::-3].log_q, [6.0, 3.0, 0.0])
    np.testing.assert_array_equal(s[5:100].log_q, [5.0, 6.0])
    assert s[np.int32(2)].n_samples == 1


def test_getitem_with_traced_index():
    s = _seven()
    pick = jax.jit(lambda s, i: s[i].log_q)
    np.testing.assert_array_equal(pick(s, jnp.array([3, -1])), [3.0, 6.0])
    np.testing.assert_array_equal(jax.vmap(lambda i: s[i].log_q)(jnp.arange(3)),
                                  [[0.0], [1.0], [2.0]])


@pytest.mark.parametrize("ddof", [5, -1, 2, 0.5, 1.0, True, "1", None])
@pytest.mark.parametrize("method", ["cov", "std"])
def test_ddof_is_0_or_1(samples, method, ddof):
    with pytest.raises(ValidationError, match=r"ddof must be 0 or 1; got"):
        getattr(samples, method)(ddof=ddof)


def test_ddof_numpy_integers_and_jit(samples):
    np.testing.assert_allclose(samples.cov(np.int64(1)), samples.cov(1))
    jitted = jax.jit(lambda s: s.std(ddof=1))(samples)
    np.testing.assert_allclose(jitted, samples.std(ddof=1), rtol=1e-6)


@pytest.mark.parametrize(
    "q, match",
    [
        (1.5, r"q must be in \[0, 1\]; got 1.5"),
        (-0.1, r"q must be in \[0, 1\]; got -0.1"),
        ([0.5, 2.0], r"q must be in \[0, 1\]; got 2.0"),
        (np.nan, r"q must be in \[0, 1\]; got nan"),
        (np.full((2, 2), 0.5), r"q must be a scalar or 1-D; got shape \(2, 2\)"),
        ("a", "q must be numeric"),
        (["a", "b"], "q must be numeric"),
        (True, "q must be numeric"),
        (0.5 + 0j, "q must be numeric"),
        (None, "q must be numeric"),
    ],
)
def test_quantile_validation(samples, q, match):
    with pytest.raises(ValidationError, match=match):
        samples.quantile(q)


def test_quantile_accepts_ints_and_traced_q(samples):
    np.testing.assert_allclose(samples.quantile([0, 1]), samples.quantile([0.0, 1.0]))
    q = jnp.array([0.1, 0.9])
    jitted = jax.jit(lambda s, q: s.quantile(q))(samples, q)
    np.testing.assert_allclose(jitted, samples.quantile(q), rtol=1e-6)
    with pytest.raises(ValidationError, match="scalar or 1-D"):
        jax.jit(lambda s, q: s.quantile(q))(samples, jnp.full((2, 2), 0.5))


@pytest.mark.parametrize("name", ["log_prior", "log_weights", "log_evidence"])
def test_to_dataframe_rejects_clashing_names(name):
    pytest.importorskip("pandas")
    s = Samples.from_array([[0.5], [0.7]], [name], log_prior=[0.5, 0.1])
    with pytest.raises(ValidationError, match=rf"\['{name}'\] clash .* DataFrame"):
        s.to_dataframe()
    # The names stay legal where nothing clashes.
    assert s.to_dict(flat=False)["parameters"] == [name]
    renamed = s.replace(parameters=("a",)).to_dataframe()
    assert list(renamed.columns) == ["a", "log_prior"]


def test_to_dataframe_allows_x_as_a_name():
    pytest.importorskip("pandas")
    frame = Samples.from_array([[0.5, 1.0]], ["x", "y"]).to_dataframe()
    assert list(frame.columns) == ["x", "y"]


def test_from_dict_refuses_empty_names():
    with pytest.raises(ValidationError, match="must not be empty"):
        Samples.from_dict({"": [1.0, 2.0], "a": [0.0, 1.0]}, parameters=["", "a"])


def test_names_of_the_original_aspire_point_here():
    from aspire_jax.history import History

    s = Samples.from_array(np.ones((3, 2)))
    with pytest.raises(AttributeError, match="log_evidence"):
        s.evidence
    with pytest.raises(AttributeError, match="resample"):
        s.rejection_sample
    with pytest.raises(AttributeError, match="log_evidence_increment"):
        History.empty("smc").log_norm_ratio
    # Other misses stay plain, and hasattr keeps working.
    assert not hasattr(s, "no_such_field") and not hasattr(History.empty("smc"), "x")


def test_columns_float32_cannot_resolve_are_named():
    import warnings as _w

    rng = np.random.default_rng(0)
    gps = 1126259462.4 + rng.normal(0, 0.01, 200)
    x = np.column_stack([gps, rng.normal(30, 2, 200)])
    if jax.config.jax_enable_x64:
        pytest.skip("float64 keeps the times")
    with pytest.warns(UserWarning, match="'geocent_time'.*float32") as record:
        Samples.from_array(x, ["geocent_time", "chirp_mass"])
    assert not any("chirp_mass" in str(r.message) for r in record)
    with _w.catch_warnings():
        _w.simplefilter("error")
        Samples.from_array(x[:, 1:], ["chirp_mass"])  # resolved: no warning
        Samples.from_array((gps - 1126259462.0)[:, None], ["t"])  # shifted: fine


def test_points_holding_nan_are_kept_with_a_warning():
    x = np.random.default_rng(0).normal(size=(20, 2))
    x[[3, 11], 1] = np.nan
    with pytest.warns(UserWarning, match=r"x is NaN in 2 of 20 samples \(first at "
                                         r"index 3, parameter 'b'\)"):
        s = Samples.from_array(x, parameters=["a", "b"])
    assert s.n_samples == 20


def test_ddof_one_with_all_the_weight_on_one_sample_warns():
    x = np.random.default_rng(0).normal(size=(50, 2))
    lw = np.full(50, -1e4)
    lw[7] = 0.0
    s = Samples.from_array(x, log_weights=lw)
    for moment in (s.std, s.cov):
        with pytest.warns(RuntimeWarning, match="one sample holds all the weight"):
            moment(ddof=1)
    assert np.all(np.isfinite(s.std(ddof=0)))


def test_moments_of_parameters_of_order_1e_21():
    # A strain amplitude: its squared deviations (about 1e-43) are below the
    # float32 range, so std is summed in units of the largest deviation.
    x = np.random.default_rng(0).normal([3e-21, 500.0], [5e-22, 20.0], size=(1000, 2))
    log_w = np.random.default_rng(1).normal(size=1000)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    for s, weights in ((Samples.from_array(x, parameters=["h0", "f"]), None),
                       (Samples.from_array(x, parameters=["h0", "f"],
                                           log_weights=log_w), w)):
        want = np.sqrt(np.average((x - np.average(x, axis=0, weights=weights)) ** 2,
                                  axis=0, weights=weights))
        np.testing.assert_allclose(np.asarray(s.std()), want, rtol=1e-4)
        if np.asarray(s.x).dtype == np.float32:
            with pytest.warns(RuntimeWarning, match=r"variances of \['h0'\]"):
                s.cov()


def test_a_negative_evidence_error_is_refused():
    with pytest.raises(ValidationError, match="log_evidence_error is a standard error"):
        Samples.from_array(np.zeros((3, 2)), log_evidence=-1.0, log_evidence_error=-0.1)
