"""Bad input to the ``aspire-jax demo`` command and to ``wrap_numpy_likelihood``.

Nothing here fits a flow or runs SMC: the command's settings must be refused
before any work, and a wrapped NumPy likelihood's bad return value must be
reported by name, eagerly, under ``jit`` and through ``Aspire``'s probe.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aspire_jax import cli, wrap_numpy_likelihood
from aspire_jax.errors import ValidationError


# --------------------------------------------------------------------- cli
@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Run ``main`` in ``tmp_path`` with a demo that must never start."""
    monkeypatch.chdir(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("run_demo was called despite bad settings")

    monkeypatch.setattr(cli, "run_demo", forbidden)
    return tmp_path


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: aspire-jax demo" in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag, value, rule", [
    ("--n-samples", "0", ">= 2"),
    ("--n-samples", "-3", ">= 2"),
    ("--n-samples", "1", ">= 2"),
    ("--n-training", "1", ">= 2"),
    ("--n-training", "-1", ">= 2"),
    ("--n-epochs", "0", ">= 1"),
    ("--n-epochs", "-2", ">= 1"),
    ("--seed", "-1", "[0, 2**63)"),
    ("--seed", str(2**63), "[0, 2**63)"),
])
def test_demo_refuses_bad_counts_before_running(no_demo, capsys, flag, value, rule):
    out = no_demo / "out"
    line = _usage_error(capsys, ["demo", flag, value, "--output", str(out)])
    assert line == (f"aspire-jax demo: error: {flag} must be an integer "
                    f"{'in ' if flag == '--seed' else ''}{rule}; got {int(value)}")
    assert not out.exists()  # counts are checked before the output is made


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_demo_refuses_a_bad_defensive_weight(no_demo, capsys, value):
    out = no_demo / "out"
    line = _usage_error(capsys, ["demo", "--defensive-weight", value, "--output", str(out)])
    assert line == ("aspire-jax demo: error: --defensive-weight must be a number in "
                    f"[0, 1); got {float(value)!r}")
    assert not out.exists()


def test_demo_passes_the_defensive_weight_on(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(case, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_demo", fake)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--defensive-weight", "0.1", "--output", str(tmp_path / "o")])
    assert seen["defensive_weight"] == 0.1
    assert seen["reference"] == "auto"
    with pytest.raises(SystemExit):
        cli.main(["demo", "--reference", "flow", "--output", str(tmp_path / "o")])
    assert seen["reference"] == "flow"


def test_cli_version(capsys):
    from aspire_jax import __version__, cli

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aspire-jax {__version__}"


def test_demo_refuses_an_unknown_reference(no_demo, capsys):
    line = _usage_error(capsys, ["demo", "--reference", "normal"])
    assert "--reference" in line and "'normal'" in line
    with pytest.raises(ValidationError, match="reference must be 'auto'"):
        cli._check_demo_settings(10, 10, 1, 0, None, reference="normal")


def test_demo_refuses_output_under_a_regular_file(no_demo, capsys):
    (no_demo / "f").write_text("not a directory")
    line = _usage_error(capsys, ["demo", "--output", "f/sub"])
    assert "--output 'f/sub' cannot be created" in line
    assert "is not a directory" in line
    assert (no_demo / "f").read_text() == "not a directory"


def test_demo_refuses_output_that_is_a_file(no_demo, capsys):
    (no_demo / "f").write_text("")
    line = _usage_error(capsys, ["demo", "--output", "f"])
    assert line.endswith("--output 'f' exists and is not a directory")


def test_demo_refuses_to_replace_a_posterior_file_it_did_not_write(no_demo, capsys):
    (no_demo / "out").mkdir()
    (no_demo / "out" / "posterior.h5").write_text("someone else's results")
    line = _usage_error(capsys, ["demo", "--output", "out"])
    assert "posterior.h5' exists and was not written by the demo" in line
    assert (no_demo / "out" / "posterior.h5").read_text() == "someone else's results"
    # An aspire_jax file of the user's own is not the demo's either.
    from aspire_jax import Samples

    (no_demo / "mine").mkdir()
    Samples.from_array(np.zeros((3, 2))).save(no_demo / "mine" / "posterior.h5",
                                               "my_analysis")
    line = _usage_error(capsys, ["demo", "--output", "mine"])
    assert "was not written by the demo" in line
    # The demo's own marked file is the one it may replace.
    import h5py

    with h5py.File(no_demo / "mine" / "posterior.h5", "a") as f:
        f.attrs[cli._DEMO_MARK] = True
    assert cli._written_by_demo(no_demo / "mine" / "posterior.h5")


def test_demo_refuses_to_replace_other_files_of_its_names(no_demo, capsys):
    # summary.json and the plots carry no mark: without a posterior file of
    # the demo's own, a folder holding any of them is the user's.
    out = no_demo / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"my": "results"}')
    (out / "history.png").write_text("my own plot")
    line = _usage_error(capsys, ["demo", "--output", "results"])
    assert "holds summary.json, history.png, not written by the demo" in line
    assert (out / "summary.json").read_text() == '{"my": "results"}'
    assert (out / "history.png").read_text() == "my own plot"
    # Beside a posterior file an earlier demo wrote, they are the demo's.
    import h5py

    from aspire_jax import Samples

    Samples.from_array(np.zeros((3, 2))).save(out / "posterior.h5", "samples")
    with h5py.File(out / "posterior.h5", "a") as f:
        f.attrs[cli._DEMO_MARK] = True
    cli._check_demo_settings(10, 10, 1, 0, str(out))


def test_demo_refuses_output_in_a_read_only_directory(no_demo, capsys, monkeypatch):
    # Root may write anywhere, so make the permission check itself say no.
    access = os.access
    locked = os.path.abspath(no_demo / "locked")
    os.mkdir(locked)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if os.path.abspath(path) == locked else access(path, mode, **kw)))
    line = _usage_error(capsys, ["demo", "--output", "locked/new/deeper"])
    assert "is not writable" in line and repr(locked) in line
    assert not os.path.exists(os.path.join(locked, "new"))


def test_demo_with_good_settings_makes_output_and_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_demo(case, **kwargs):
        # The output exists before the (long) run, not only at its end.
        assert os.path.isdir(kwargs["output"])
        calls.append((case, kwargs))
        return {}

    monkeypatch.setattr(cli, "run_demo", fake_demo)
    monkeypatch.setattr(cli, "_print_result", lambda r: None)
    assert cli.main(["demo", "--n-samples", "2", "--n-training", "2", "--n-epochs",
                     "1", "--seed", "5", "--output", "a/b", "--no-plot",
                     "--quiet"]) == 0
    assert calls == [("diabetes_linreg", dict(n_samples=2, n_training=2, n_epochs=1,
                                              seed=5, output="a/b", plot=False,
                                              defensive_weight=0.1,
                                              reference="auto"))]


def test_run_demo_refuses_bad_settings_before_loading_the_case(monkeypatch, tmp_path):
    import aspire_jax.cases

    def forbidden(*args, **kwargs):
        raise AssertionError("the case was loaded despite bad settings")

    monkeypatch.setattr(aspire_jax.cases, "load_case", forbidden)
    with pytest.raises(ValidationError, match=r"n_samples must be an integer >= 2"):
        cli.run_demo(n_samples=0, output=None)
    with pytest.raises(ValidationError, match=r"n_epochs must be an integer >= 1"):
        cli.run_demo(n_epochs=0, output=None)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValidationError, match="is not a directory"):
        cli.run_demo(output=str(tmp_path / "f" / "sub"))


# --------------------------------------------------------------- callbacks
def _n2(x):
    return np.zeros((len(x), 2))


def _n1(x):
    return np.zeros((len(x), 1))


def _scalar(x):
    return 0.0


def _bools(x):
    return np.ones(len(x), bool)


def _complex(x):
    return np.ones(len(x), complex)


def _short_list(x):
    return [0.0] * (len(x) - 1)


def _none(x):
    return None


def _ragged(x):
    return [[0.0]] + [[0.0, 1.0]] * (len(x) - 1)


BAD_RETURNS = [
    (_n2, "shape (3, 2) and dtype float64"),
    (_n1, "shape (3, 1) and dtype float64"),
    (_scalar, "shape () and dtype float64"),
    (_bools, "shape (3,) and dtype bool"),
    (_complex, "shape (3,) and dtype complex128"),
    (_short_list, "shape (2,) and dtype float64"),
    (_none, "shape () and dtype object"),
    (_ragged, "a list that NumPy cannot read as an array"),
]
EXPECTED = "must return a real array of shape (3,) for a batch of 3 points"


@pytest.mark.parametrize("fn, got", BAD_RETURNS, ids=[f.__name__ for f, _ in BAD_RETURNS])
def test_wrapped_likelihood_rejects_bad_returns_eagerly(fn, got):
    f = wrap_numpy_likelihood(fn)
    with pytest.raises(ValidationError) as info:
        f(jnp.ones((3, 2)))
    msg = str(info.value)
    assert msg.startswith(f"wrap_numpy_likelihood: {fn.__name__} {EXPECTED}")
    assert got in msg
    assert "\n" not in msg


@pytest.mark.parametrize("fn, got", BAD_RETURNS[:3],
                         ids=[f.__name__ for f, _ in BAD_RETURNS[:3]])
def test_wrapped_likelihood_rejects_bad_returns_under_jit(fn, got):
    f = jax.jit(wrap_numpy_likelihood(fn))
    with pytest.raises(Exception) as info:
        jax.block_until_ready(f(jnp.ones((3, 2))))
    # JAX wraps the host error; its message must still be there, whole.
    assert f"wrap_numpy_likelihood: {fn.__name__} {EXPECTED}; it returned {got}" in str(
        info.value)


def test_wrapped_likelihood_accepts_real_sequences_of_the_right_length():
    x = jnp.ones((3, 2))
    as_list = wrap_numpy_likelihood(lambda x: [float(v) for v in x.sum(axis=1)])
    as_int = wrap_numpy_likelihood(lambda x: np.arange(len(x)))
    for f in (as_list, jax.jit(as_list)):
        out = f(x)
        assert out.shape == (3,) and out.dtype == x.dtype
        np.testing.assert_array_equal(out, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(as_int(x), [0.0, 1.0, 2.0])
    assert as_int(x).dtype == x.dtype
    # vmap folds the batch into one host call of 4 * 3 points.
    batched = jax.vmap(wrap_numpy_likelihood(lambda x: x.sum(axis=1)))
    np.testing.assert_array_equal(batched(jnp.ones((4, 3, 2))), np.full((4, 3), 2.0))
    assert isinstance(as_list(np.ones((3, 2))), jax.Array)


def _bad_ll(x):
    return np.zeros((len(x), 2))


def _bad_column_ll(x):
    return -0.5 * np.sum(x**2, axis=1, keepdims=True)


@pytest.mark.parametrize("ll", [_bad_ll, _bad_column_ll])
def test_sample_posterior_names_the_bad_wrapped_likelihood(ll):
    from aspire_jax import Aspire

    aspire = Aspire(log_likelihood=wrap_numpy_likelihood(ll),
                    log_prior=lambda x: jnp.sum(-0.5 * x**2, axis=-1), dims=2,
                    flow_kind="affine", n_layers=2, hidden_sizes=(8,))
    # An unfitted flow is enough: the probe runs before any sampling.
    x = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    aspire.flow_params = aspire.flow.init(jax.random.key(0), x)
    with pytest.raises(ValidationError) as info:
        aspire.sample_posterior(50, key=0)
    msg = str(info.value)
    assert (f"wrap_numpy_likelihood: {ll.__name__} must return a real array of "
            "shape (4,) for a batch of 4 points") in msg
    assert msg.startswith("log_likelihood failed")
    assert "CpuCallback" not in msg and "Traceback" not in msg


def test_demo_output_reads_back_with_names_and_evidence(tmp_path):
    from aspire_jax.formats import read_samples

    result = cli.run_demo(n_samples=300, n_training=600, n_epochs=3, seed=1,
                          output=str(tmp_path / "o"), plot=False)
    back = read_samples(tmp_path / "o" / "posterior.h5")
    assert list(back.parameters) == result["parameters"]
    assert back.log_evidence is not None
    np.testing.assert_allclose(np.asarray(back.mean()), result["mean"], rtol=1e-5,
                               atol=1e-6)


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    from aspire_jax import __version__

    out = subprocess.run([sys.executable, "-m", "aspire_jax", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"aspire-jax {__version__}"
