"""Reading samples from other tools' files and handing results on."""

import gzip
import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax.errors import ValidationError
from aspire_jax.formats import (flat_parameter_names, from_arviz, from_dataframe,
                                read_array, read_bilby_result, read_hdf5,
                                read_samples, read_table, to_arviz,
                                to_bilby_posterior, write_bilby_result,
                                write_samples, write_table)
from aspire_jax.samples import Samples


@pytest.fixture
def columns():
    rng = np.random.default_rng(1)
    n = 50
    return {
        "mass": rng.normal(30.0, 2.0, n),
        "spin": rng.uniform(0.0, 1.0, n),
        "log_likelihood": rng.normal(-10.0, 1.0, n),
        "log_prior": rng.normal(-2.0, 0.1, n),
    }


@pytest.fixture
def weighted():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    return Samples.from_array(
        x, ["a", "b"], log_likelihood=-0.5 * np.sum(x**2, 1),
        log_prior=np.full(40, -1.0), log_weights=rng.normal(size=40),
        log_evidence=-3.5, log_evidence_error=0.25)


def _close(samples, columns, names):
    np.testing.assert_allclose(
        np.asarray(samples.x), np.column_stack([columns[p] for p in names]),
        rtol=1e-6)


# ----------------------------------------------------------------- bilby layout
# The two files bilby's Result.save_to_file writes, in its exact layout (bilby
# 2.x: utils/io.py BilbyJsonEncoder and recursively_save_dict_contents_to_group),
# so these tests run without bilby; the tests further down use bilby itself.


def _bilby_json_dict(columns):
    return {
        "label": "run", "outdir": "/tmp/out", "sampler": "dynesty",
        "log_evidence": -12.5, "log_evidence_err": 0.2,
        "log_noise_evidence": float("nan"), "log_bayes_factor": float("nan"),
        "priors": {
            "mass": {"__prior__": True, "__module__": "bilby.core.prior.analytical",
                     "__name__": "Uniform",
                     "kwargs": {"minimum": 20, "maximum": 40, "name": "mass"}},
            "__prior_dict__": True, "__module__": "bilby.core.prior.dict",
            "__name__": "PriorDict"},
        "posterior": {"__dataframe__": True,
                      "content": {k: v.tolist() for k, v in columns.items()}},
        "search_parameter_keys": ["mass", "spin"],
        "fixed_parameter_keys": None,
        "meta_data": {"likelihood": {"__function__": True,
                                     "__module__": "os", "__name__": "system"},
                      "psd": {"__array__": True, "content": [1.0, 2.0]},
                      "z": {"__complex__": True, "real": 1.0, "imag": 2.0}},
        "version": "bilby=2.8.2",
    }


def test_bilby_json_layout(tmp_path, columns):
    path = tmp_path / "run_result.json"
    path.write_text(json.dumps(_bilby_json_dict(columns)))
    s = read_samples(path)
    assert s.parameters == ("mass", "spin")
    _close(s, columns, ["mass", "spin"])
    np.testing.assert_allclose(s.log_likelihood, columns["log_likelihood"], rtol=1e-6)
    np.testing.assert_allclose(s.log_prior, columns["log_prior"], rtol=1e-6)
    assert s.log_weights is None
    assert float(s.log_evidence) == -12.5
    assert float(s.log_evidence_error) == pytest.approx(0.2)
    gz = tmp_path / "run_result.json.gz"
    with gzip.open(gz, "wt") as fh:
        json.dump(_bilby_json_dict(columns), fh)
    s = read_samples(gz, parameters=["spin"])
    assert s.parameters == ("spin",)


def test_bilby_json_evidence_nan_and_plain_posterior(tmp_path, columns):
    data = _bilby_json_dict(columns)
    data["log_evidence"] = float("nan")
    data["posterior"] = {k: v.tolist() for k, v in columns.items()}
    del data["search_parameter_keys"]
    path = tmp_path / "old_result.json"
    path.write_text(json.dumps(data))
    s = read_bilby_result(path)
    assert s.parameters == ("mass", "spin")
    assert s.log_evidence is None


def test_bilby_json_errors(tmp_path, columns):
    path = tmp_path / "notbilby.json"
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValidationError, match="no 'posterior'"):
        read_samples(path)
    path.write_text(json.dumps(_bilby_json_dict(columns)))
    with pytest.raises(ValidationError, match=r"no columns \['chirp_mass'\]"):
        read_samples(path, parameters=["chirp_mass"])
    path.write_text("{not json")
    with pytest.raises(ValidationError, match="not a readable JSON"):
        read_samples(path)
    with pytest.raises(FileNotFoundError):
        read_samples(tmp_path / "missing_result.json")
    cut = tmp_path / "cut_result.json.gz"
    with gzip.open(cut, "wt") as fh:
        fh.write(json.dumps(_bilby_json_dict(columns)))
    cut.write_bytes(cut.read_bytes()[:40])
    with pytest.raises(ValidationError, match="not a readable JSON"):
        read_samples(cut)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValidationError, match="nests JSON too deeply"):
        read_samples(path)


def test_bilby_hdf5_layout(tmp_path, columns):
    path = tmp_path / "run_result.hdf5"
    string = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        for k, v in columns.items():
            f.create_dataset(f"posterior/{k}", data=v)
        f.create_dataset("search_parameter_keys", data=["mass", "spin"], dtype=string)
        f.create_dataset("log_evidence", data=-12.5)
        f.create_dataset("log_evidence_err", data=0.2)
        f.create_dataset("label", data="run", dtype=string)
        f.create_dataset("priors", data="{}", dtype=string)
    s = read_samples(path)
    assert s.parameters == ("mass", "spin")
    _close(s, columns, ["mass", "spin"])
    assert float(s.log_evidence) == -12.5
    np.testing.assert_allclose(s.log_prior, columns["log_prior"], rtol=1e-6)
    # An empty list of sampled keys names nothing: every numeric column.
    with h5py.File(path, "a") as f:
        del f["search_parameter_keys"]
        f.create_dataset("search_parameter_keys", data=np.array([], dtype="S"))
    assert set(read_samples(path).parameters) >= {"mass", "spin"}


# ----------------------------------------------------------------- with bilby


@pytest.fixture
def bilby_result(columns, tmp_path):
    bilby = pytest.importorskip("bilby")
    import pandas as pd

    priors = bilby.core.prior.PriorDict({
        "mass": bilby.core.prior.Uniform(20.0, 40.0, "mass"),
        "spin": bilby.core.prior.Uniform(0.0, 1.0, "spin")})
    frame = pd.DataFrame(columns)
    frame["chirp_mass"] = 0.87 * frame["mass"]
    return bilby.core.result.Result(
        label="gw", outdir=str(tmp_path), posterior=frame, priors=priors,
        search_parameter_keys=["mass", "spin"], log_evidence=-12.5,
        log_evidence_err=0.2, sampler="dynesty")


@pytest.mark.parametrize("extension", ["json", "hdf5"])
def test_files_written_by_bilby(bilby_result, columns, tmp_path, extension):
    bilby_result.save_to_file(extension=extension)
    path = tmp_path / f"gw_result.{extension}"
    s = read_samples(path)
    assert s.parameters == ("mass", "spin")
    _close(s, columns, ["mass", "spin"])
    np.testing.assert_allclose(s.log_likelihood, columns["log_likelihood"], rtol=1e-6)
    assert float(s.log_evidence) == pytest.approx(-12.5)
    derived = read_samples(path, parameters=["chirp_mass", "mass"])
    np.testing.assert_allclose(derived["chirp_mass"], 0.87 * columns["mass"],
                               rtol=1e-6)


def test_bilby_result_object(bilby_result, columns):
    s = read_samples(bilby_result)
    assert s.parameters == ("mass", "spin")
    assert float(s.log_evidence_error) == pytest.approx(0.2)


def test_written_result_reads_back_in_bilby(weighted, tmp_path):
    bilby = pytest.importorskip("bilby")
    path = tmp_path / "aspire_result.json"
    with pytest.raises(ValidationError, match="key="):
        write_bilby_result(path, weighted)
    write_bilby_result(path, weighted, key=jax.random.key(0), meta_data={"note": 1})
    result = bilby.core.result.read_in_result(str(path))
    assert list(result.search_parameter_keys) == ["a", "b"]
    assert result.label == "aspire"
    assert result.log_evidence == pytest.approx(-3.5)
    assert result.meta_data["note"] == 1
    post = result.posterior
    assert list(post.columns) == ["a", "b", "log_likelihood", "log_prior"]
    assert len(post) == weighted.n_samples
    # Resampled rows are rows of the original samples.
    rows = {tuple(np.round(r, 5)) for r in np.asarray(weighted.x, np.float64)}
    assert all(tuple(np.round(r, 5)) in rows for r in post[["a", "b"]].to_numpy())
    np.testing.assert_allclose(post["log_likelihood"],
                               -0.5 * (post["a"] ** 2 + post["b"] ** 2), rtol=1e-5)


def test_written_result_reads_back_here(weighted, tmp_path):
    path = tmp_path / "x_result.json"
    unweighted = weighted.replace(log_weights=None)
    write_samples(path, unweighted)
    s = read_samples(path)
    np.testing.assert_allclose(s.x, unweighted.x, rtol=1e-6)
    np.testing.assert_allclose(s.log_prior, unweighted.log_prior)
    assert float(s.log_evidence) == pytest.approx(-3.5)


def test_to_bilby_posterior(weighted):
    pytest.importorskip("pandas")
    frame = to_bilby_posterior(weighted, key=1)
    assert list(frame.columns) == ["a", "b", "log_likelihood", "log_prior"]
    table = to_bilby_posterior(weighted.replace(log_weights=None), as_dataframe=False)
    np.testing.assert_array_equal(table["a"], np.asarray(weighted["a"]))
    # Uniform log-weights need no key.
    flat = weighted.replace(log_weights=jnp.full(40, -2.0))
    assert len(to_bilby_posterior(flat, as_dataframe=False)["a"]) == 40


# ----------------------------------------------------------------- tables


def test_csv_with_header_and_index(tmp_path, columns):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "post.csv"
    pd.DataFrame(columns).to_csv(path)
    s = read_samples(path)
    assert s.parameters == ("mass", "spin")
    _close(s, columns, ["mass", "spin"])
    np.testing.assert_allclose(s.log_likelihood, columns["log_likelihood"], rtol=1e-6)


def test_whitespace_table_with_comment_header(tmp_path, columns):
    path = tmp_path / "post.dat"
    data = np.column_stack([columns["spin"], columns["mass"]])
    np.savetxt(path, data, header="spin mass")
    s = read_table(path)
    assert s.parameters == ("spin", "mass")
    _close(s, columns, ["spin", "mass"])
    tsv = tmp_path / "post.tsv"
    tsv.write_text("spin\tmass\n" + "\n".join(f"{a}\t{b}" for a, b in data))
    assert read_samples(tsv, parameters=["mass"]).parameters == ("mass",)


def test_table_round_trip_keeps_weights_and_evidence(tmp_path, weighted):
    for name in ("w.csv", "w.txt"):
        path = tmp_path / name
        write_table(path, weighted)
        s = read_samples(path)
        np.testing.assert_allclose(s.x, weighted.x, rtol=1e-6)
        np.testing.assert_allclose(s.log_weights, weighted.log_weights, rtol=1e-6)
        assert float(s.log_evidence) == pytest.approx(-3.5)
        assert float(s.log_evidence_error) == pytest.approx(0.25)


def test_table_errors(tmp_path):
    path = tmp_path / "bare.txt"
    np.savetxt(path, np.ones((3, 2)))
    with pytest.raises(ValidationError, match="no header line"):
        read_samples(path)
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValidationError, match="cannot parse"):
        read_samples(path)
    path.write_text("a,b,c\n1,2\n3,4\n")
    with pytest.raises(ValidationError, match="3 header names"):
        read_samples(path)


# ----------------------------------------------------------------- numpy


def test_npy_plain_and_structured(tmp_path, columns):
    x = np.column_stack([columns["mass"], columns["spin"]])
    np.save(tmp_path / "x.npy", x)
    s = read_samples(tmp_path / "x.npy", parameters=["m", "s"])
    assert s.parameters == ("m", "s")
    assert read_array(tmp_path / "x.npy").parameters == ("x_0", "x_1")
    rec = np.zeros(len(x), dtype=[("mass", "f8"), ("spin", "f8"),
                                  ("log_likelihood", "f8")])
    rec["mass"], rec["spin"] = x.T
    rec["log_likelihood"] = columns["log_likelihood"]
    np.save(tmp_path / "rec.npy", rec)
    s = read_samples(tmp_path / "rec.npy")
    assert s.parameters == ("mass", "spin")
    np.testing.assert_allclose(s.log_likelihood, columns["log_likelihood"], rtol=1e-6)


def test_npz_layouts(tmp_path, columns, weighted):
    np.savez(tmp_path / "cols.npz", **columns)
    s = read_samples(tmp_path / "cols.npz")
    assert s.parameters == ("mass", "spin")
    np.savez(tmp_path / "one.npz", chain=np.ones((5, 3)))
    assert read_samples(tmp_path / "one.npz", parameters=list("abc")).dims == 3
    write_samples(tmp_path / "ours.npz", weighted)
    s = read_samples(tmp_path / "ours.npz")
    assert s.parameters == ("a", "b")
    np.testing.assert_array_equal(s.log_weights, weighted.log_weights)
    assert float(s.log_evidence) == pytest.approx(-3.5)


def test_npy_objects_are_not_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object),
            allow_pickle=True)
    with pytest.raises(ValidationError, match="does not unpickle"):
        read_samples(tmp_path / "obj.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValidationError, match="does not unpickle"):
        read_samples(tmp_path / "obj.npz")


# ----------------------------------------------------------------- HDF5, objects


def test_hdf5_samples_round_trip(tmp_path, weighted):
    path = tmp_path / "post.h5"
    write_samples(path, weighted)
    s = read_samples(path)
    np.testing.assert_array_equal(s.x, weighted.x)
    np.testing.assert_array_equal(s.log_weights, weighted.log_weights)
    weighted.save(str(tmp_path / "other.h5"), "results/final")
    s = read_hdf5(tmp_path / "other.h5", group="results/final", parameters=["b"])
    assert s.parameters == ("b",)
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("nothing")
    with pytest.raises(ValidationError, match="holds no samples"):
        read_samples(tmp_path / "empty.h5")
    (tmp_path / "fake.h5").write_text("not hdf5")
    with pytest.raises(ValidationError, match="not an HDF5 file"):
        read_samples(tmp_path / "fake.h5")


def test_objects_and_dispatch_errors(weighted, tmp_path):
    assert read_samples(weighted) is weighted
    assert read_samples(weighted, parameters=["b"]).parameters == ("b",)
    s = read_samples(np.ones((4, 2)), parameters=["p", "q"])
    assert s.parameters == ("p", "q")
    s = read_samples(weighted.to_numpy())
    assert s.parameters == ("a", "b")
    with pytest.raises(ValidationError, match="cannot read samples from a set"):
        read_samples({1, 2})
    (tmp_path / "x.unknown").write_text("")
    with pytest.raises(ValidationError, match="cannot tell the format"):
        read_samples(tmp_path / "x.unknown")
    with pytest.raises(ValidationError, match="format must be one of"):
        read_samples(tmp_path / "x.unknown", format="yaml")
    with pytest.raises(ValidationError, match="list of names"):
        read_samples({"a": [1.0]}, parameters="a")
    with pytest.raises(ValidationError, match="no format for its suffix"):
        write_samples(tmp_path / "x.yaml", weighted)
    with pytest.raises(ValidationError, match="unknown format 'yaml'"):
        write_samples(tmp_path / "x.yaml", weighted, format="yaml")
    with pytest.raises(ValidationError, match="gzip-compressed files are read but not"):
        write_samples(tmp_path / "x_result.json.gz", weighted)


def test_dataframe_round_trip(weighted):
    pytest.importorskip("pandas")
    frame = weighted.to_dataframe()
    s = from_dataframe(frame)
    np.testing.assert_allclose(s.x, weighted.x)
    np.testing.assert_allclose(s.log_weights, weighted.log_weights, rtol=1e-6)
    assert float(s.log_evidence) == pytest.approx(-3.5)
    assert read_samples(frame, parameters=["b"]).parameters == ("b",)


# ----------------------------------------------------------------- ArviZ


def test_flat_names():
    assert flat_parameter_names("mu", ()) == ["mu"]
    assert flat_parameter_names("w", (2, 1)) == ["w[0,0]", "w[1,0]"]


def _arviz():
    pytest.importorskip("arviz")
    from aspire_jax.formats import _import_arviz

    return _import_arviz()


def test_from_arviz_flattens_chains_and_vectors():
    az = _arviz()
    rng = np.random.default_rng(3)
    post = {"mu": rng.normal(size=(2, 10)), "theta": rng.normal(size=(2, 10, 3))}
    loglik = {"y": rng.normal(size=(2, 10, 4))}
    idata = az.from_dict(posterior=post, log_likelihood=loglik)
    s = from_arviz(idata)
    assert s.parameters == ("mu", "theta[0]", "theta[1]", "theta[2]")
    assert s.n_samples == 20
    # chain-major flattening
    np.testing.assert_allclose(s["theta[1]"], post["theta"][:, :, 1].ravel(), rtol=1e-6)
    np.testing.assert_allclose(s.log_likelihood, loglik["y"].sum(-1).ravel(),
                               rtol=1e-5)
    assert read_samples(idata, parameters=["theta[2]"]).dims == 1


def test_from_xarray_datatree():
    _arviz()
    import xarray as xr

    if not hasattr(xr, "DataTree"):
        pytest.skip("this xarray has no DataTree")
    coords = {"chain": [0, 1], "draw": np.arange(3)}
    post = xr.Dataset({"mu": (("chain", "draw"), np.arange(6.0).reshape(2, 3))},
                      coords=coords)
    loglik = xr.Dataset({"y": (("chain", "draw", "obs"), np.ones((2, 3, 4)))},
                        coords=coords)
    tree = xr.DataTree.from_dict({"posterior": post, "log_likelihood": loglik})
    s = read_samples(tree)
    assert s.parameters == ("mu",)
    np.testing.assert_array_equal(s["mu"], np.arange(6.0))
    np.testing.assert_array_equal(s.log_likelihood, np.full(6, 4.0))


def test_to_arviz_round_trip_and_netcdf(weighted, tmp_path):
    _arviz()
    with pytest.raises(ValidationError, match="weighted"):
        to_arviz(weighted)
    vector = Samples.from_array(np.arange(12.0).reshape(4, 3),
                                ["theta[0]", "theta[1]", "sigma"],
                                log_likelihood=np.zeros(4), log_prior=np.ones(4))
    idata = to_arviz(vector)
    assert idata.posterior["theta"].shape == (1, 4, 2)
    assert idata.posterior["sigma"].shape == (1, 4)
    np.testing.assert_allclose(idata.sample_stats["lp"].values.ravel(), 1.0)
    back = from_arviz(idata)
    assert back.parameters == vector.parameters
    np.testing.assert_allclose(back.x, vector.x)
    np.testing.assert_allclose(back.log_prior, 1.0)
    path = tmp_path / "post.nc"
    write_samples(path, weighted, key=jax.random.key(1))
    s = read_samples(path)
    assert s.parameters == ("a", "b")
    assert s.n_samples == weighted.n_samples
    assert float(s.log_evidence) == pytest.approx(-3.5)
    rows = {tuple(np.round(r, 5)) for r in np.asarray(weighted.x, np.float64)}
    assert all(tuple(np.round(r, 5)) in rows for r in np.asarray(s.x, np.float64))


def test_tables_refuse_a_parameter_named_like_a_column(tmp_path):
    s = Samples.from_array([[1.0], [2.0]], parameters=["log_prior"],
                           log_prior=[0.5, 0.25])
    plain = Samples.from_array([[1.0], [2.0]], parameters=["log_prior"])
    # Even without the field set: a reader would take the column for it.
    for samples in (s, plain):
        with pytest.raises(ValidationError, match="one column would be lost"):
            to_bilby_posterior(samples, as_dataframe=False)
        with pytest.raises(ValidationError, match="one column would be lost"):
            write_table(tmp_path / "t.csv", samples)
    for name in ("log_weights", "log_evidence"):
        with pytest.raises(ValidationError, match="one column would be lost"):
            write_table(tmp_path / "t.csv",
                        Samples.from_array([[1.0, 2.0]], parameters=[name, "b"]))


# ------------------------------------------------ files written by other tools
def test_npz_selects_named_columns_instead_of_renaming(tmp_path):
    s = Samples.from_array([[1.0, 2.0], [3.0, 4.0]], ["a", "b"])
    write_samples(tmp_path / "s.npz", s)
    back = read_samples(tmp_path / "s.npz", parameters=["b", "a"])
    assert back.parameters == ("b", "a")
    np.testing.assert_array_equal(np.asarray(back.x), [[2.0, 1.0], [4.0, 3.0]])
    np.testing.assert_array_equal(
        np.asarray(read_samples(tmp_path / "s.npz", parameters=["b"]).x), [[2.0], [4.0]])
    with pytest.raises(ValidationError, match=r"no parameters \['c'\]"):
        read_samples(tmp_path / "s.npz", parameters=["c"])


def test_bilby_search_keys_missing_from_the_posterior_are_an_error(tmp_path):
    path = tmp_path / "r.json"
    content = {"mass_1": [1.0, 2.0], "mass_2": [1.0, 1.5], "chirp_mass": [1.0, 1.1]}
    path.write_text(json.dumps({
        "posterior": {"__dataframe__": True, "content": content},
        "search_parameter_keys": ["mass_1", "mass_2", "geocent_time"]}))
    with pytest.raises(ValidationError, match=r"\['geocent_time'\] are not columns"):
        read_samples(path)
    assert read_samples(path, parameters=["mass_1", "mass_2"]).parameters == (
        "mass_1", "mass_2")


@pytest.mark.parametrize("text, names", [
    ("\tm\ts\n0\t1.0\t3.0\n1\t2.0\t4.0\n", ("m", "s")),        # pandas, sep="\t"
    ("\ufeffm,s\n1.0,3.0\n2.0,4.0\n", ("m", "s")),              # byte-order mark
    ("# mass spin\n# seed 42\n1 3\n2 4\n", ("mass", "spin")),   # comments
])
def test_tables_as_other_tools_write_them(tmp_path, text, names):
    suffix = ".tsv" if text.startswith("\t") else (".csv" if "," in text else ".dat")
    path = tmp_path / f"t{suffix}"
    path.write_text(text, encoding="utf-8")
    back = read_samples(path)
    assert back.parameters == names
    np.testing.assert_array_equal(np.asarray(back.x), [[1.0, 3.0], [2.0, 4.0]])


@pytest.mark.parametrize("content, match", [
    (b"a,a,b\n1,2,3\n", "more than once"),
    (b"a,b\n", "no rows of values"),
    ("m\xe9,s\n1,2\n".encode("latin-1"), "not UTF-8"),
    (b"# log_evidence = unknown\na,b\n1,2\n", "as a number"),
])
def test_malformed_tables_are_refused(tmp_path, content, match):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=match):
        read_samples(path)


def test_names_a_table_cannot_hold_are_refused_and_tsv_keeps_them(tmp_path):
    s = Samples.from_array(np.arange(6.0).reshape(3, 2), ["w[0,0]", "w[0,1]"])
    with pytest.raises(ValidationError, match="cannot be written"):
        write_table(tmp_path / "m.csv", s)
    write_table(tmp_path / "m.tsv", s)
    back = read_samples(tmp_path / "m.tsv")
    assert back.parameters == s.parameters
    np.testing.assert_array_equal(np.asarray(back.x), np.asarray(s.x))


def test_table_advice_names_only_a_separator_that_reads_the_names(tmp_path):
    spaced = Samples.from_array(np.ones((2, 2)), ["chirp mass", "q"])
    with pytest.raises(ValidationError, match=r"use a \.csv file") as err:
        write_table(tmp_path / "m.tsv", spaced)
    assert ".tsv file" not in str(err.value)
    write_table(tmp_path / "m.csv", spaced)
    assert read_samples(tmp_path / "m.csv").parameters == spaced.parameters
    both = Samples.from_array(np.ones((2, 1)), ["a, b c"])
    for name in ("m.tsv", "m.csv"):
        with pytest.raises(ValidationError, match="cannot be written") as err:
            write_table(tmp_path / name, both)
        assert "file (" not in str(err.value)


def test_writers_refuse_unknown_options_by_name(tmp_path, weighted):
    for name, known in (("s.csv", "delimiter"), ("s.json", "label"), ("s.npz", "none"),
                        ("s.h5", "group")):
        with pytest.raises(ValidationError, match=f"unknown options.*{known}"):
            write_samples(tmp_path / name, weighted, key=0, delimeter=",")
        assert not (tmp_path / name).exists()


def test_files_that_are_not_numpy_arrays_are_named_for_what_they_are(tmp_path):
    text = tmp_path / "table.npy"
    text.write_text("a b\n1 2\n")
    with pytest.raises(ValidationError, match="neither a .npy file nor an .npz"):
        read_samples(text)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValidationError, match="is empty"):
        read_samples(tmp_path / "empty.npz")
    import pickle

    (tmp_path / "p.npy").write_bytes(pickle.dumps([1.0, 2.0]))
    with pytest.raises(ValidationError, match="is a Python pickle"):
        read_samples(tmp_path / "p.npy")


def test_two_sample_groups_need_a_choice(tmp_path):
    path = tmp_path / "two.h5"
    Samples.from_array(np.ones((2, 1)), ["x"]).save(path, "earlier")
    Samples.from_array(np.zeros((2, 1)), ["x"]).save(path, "posterior")
    with pytest.raises(ValidationError, match="several groups"):
        read_samples(path)
    assert float(read_hdf5(path, group="posterior").x[0, 0]) == 0.0
    write_samples(tmp_path / "g.h5", Samples.from_array(np.ones((2, 1))), group="g")
    assert Samples.load(tmp_path / "g.h5", "g").n_samples == 2


def test_integer_columns_and_tables_keep_float64_precision(tmp_path):
    with jax.enable_x64(True):
        gps = np.arange(1126259462, 1126259468)
        assert np.unique(np.asarray(read_samples({"t": gps}).x)).size == 6
        s = Samples.from_array(gps[:, None] + 0.25, ["t"])
        write_table(tmp_path / "g.csv", s)
        np.testing.assert_array_equal(np.asarray(read_samples(tmp_path / "g.csv").x),
                                      np.asarray(s.x))


def test_one_name_as_a_string_is_refused_by_every_reader(tmp_path):
    s = Samples.from_array(np.ones((3, 2)))
    s.save(tmp_path / "s.h5", "samples")
    for source in (tmp_path / "s.h5", s, {"x_0": np.ones(3)}):
        with pytest.raises(ValidationError, match=r"use \['x_0'\]"):
            read_samples(source, parameters="x_0")


def test_arviz_refuses_names_of_its_dimensions_and_attributes():
    for name in ("chain", "draw", "log_evidence"):
        s = Samples.from_array(np.ones((3, 2)), [name, "b"])
        with pytest.raises(ValidationError, match="named like fields"):
            to_arviz(s)


def test_a_column_with_an_array_per_row_is_left_out_unless_asked_for(tmp_path):
    path = tmp_path / "r.json"
    content = {"mass_1": [1.0, 2.0], "waveform": [[0.1, 0.2], [0.3, 0.4]]}
    path.write_text(json.dumps({"posterior": {"__dataframe__": True,
                                              "content": content}}))
    assert read_samples(path).parameters == ("mass_1",)
    with pytest.raises(ValidationError, match="not one number per sample"):
        read_samples(path, parameters=["waveform"])


def test_columns_are_never_lost_silently(tmp_path):
    """Each of these had read back with a column or the evidence missing."""
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValidationError, match=r"names the columns \['mass'\] more"):
        from_dataframe(pd.DataFrame([[30.0, 31.0, 0.5]], columns=["mass", "mass", "s"]))
    # An array per sample in an .npz: one column per element.
    path = tmp_path / "two.npz"
    np.savez(path, mass=np.arange(4.0), spins=np.ones((4, 2)))
    assert read_samples(path).parameters == ("mass", "spins[0]", "spins[1]")
    # The evidence, wherever its comment line is, or as a repeated column.
    path = tmp_path / "late.csv"
    path.write_text("mass,spin\n# log_evidence = -3.5\n30,0.1\n31,0.2\n")
    assert read_samples(path).log_evidence == -3.5
    path.write_text("mass,log_evidence\n30,-3.5\n31,-3.5\n")
    back = read_samples(path)
    assert back.parameters == ("mass",) and back.log_evidence == -3.5
    path.write_text("mass,log_evidence\n30,-3.5\n31,-3.6\n")
    with pytest.raises(ValidationError, match="varies from row to row"):
        read_samples(path)
    # A field column with null entries is named as it is left out.
    frame = pd.DataFrame({"mass": [30.0, 31.0],
                          "log_likelihood": pd.Series([-1.0, None], dtype=object)})
    with pytest.warns(UserWarning, match="'log_likelihood' column .* left out"):
        assert from_dataframe(frame).log_likelihood is None


def test_a_column_without_finite_values_warns_once():
    # numpy's own "All-NaN slice" warning must not leak past ours.
    x = np.array([[np.nan, 1.0], [np.nan, 2.0], [np.nan, 3.0]])
    with pytest.warns(UserWarning, match="x is NaN in 3 of 3 samples"):
        Samples.from_array(x, ["a", "b"])


def test_arviz_names_that_collide_are_refused(tmp_path):
    az = pytest.importorskip("arviz")
    idata = az.from_dict(posterior={"v[0]": np.zeros((1, 5)), "v": np.ones((1, 5, 2))})
    with pytest.raises(ValidationError, match="column 'v\\[0\\]' twice"):
        from_arviz(idata)
    path = tmp_path / "empty.nc"
    path.write_bytes(b"")
    with pytest.raises(ValidationError, match="not a readable NetCDF file"):
        read_samples(path)


def test_asking_for_a_missing_parameter_is_a_validation_error(tmp_path):
    path = tmp_path / "s.h5"
    Samples.from_array(np.ones((2, 1)), ["a"]).save(path)
    with pytest.raises(ValidationError, match=r"has no parameters \['zz'\]"):
        read_samples(path, parameters=["zz"])


def test_columns_named_like_another_tools_fields_are_pointed_out(tmp_path):
    path = tmp_path / "posterior_samples.dat"
    path.write_text("mass logl logprior\n30 -1.0 -2.0\n31 -1.5 -2.0\n")
    with pytest.warns(UserWarning, match=r"\['logl', 'logprior'\] look like"):
        read_samples(path)
    assert read_samples(path, parameters=["mass"]).parameters == ("mass",)
