"""Files that are not ours stay untouched, damaged checkpoints are refused
with a clear error, and a checkpoint that cannot be written loses nothing."""

import errno
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import problems
from aspire_jax import (Aspire, AspireFile, CheckpointError, Samples,
                        ValidationError)
from aspire_jax import aspire as aspire_module
from aspire_jax.formats import read_samples
from aspire_jax.io import (is_aspire_file, read_checkpoint_bytes, read_json_group,
                           state_dict_from_bytes, write_checkpoint_file)

RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


def _foreign(path):
    with h5py.File(path, "w") as f:
        f["my_data"] = np.arange(10)
        f["checkpoint/state"] = np.frombuffer(b"\x80\x04garbage", np.uint8)


def _still_foreign(path):
    with h5py.File(path, "r") as f:
        assert list(f["my_data"][...]) == list(range(10))
        assert "aspire_jax_version" not in f.attrs


def test_a_foreign_hdf5_file_is_never_overwritten(fitted, tmp_path):
    path = tmp_path / "mine.h5"
    _foreign(path)
    assert not is_aspire_file(path)
    a = problems.make_aspire()
    x = problems.earlier_samples()
    with pytest.raises(ValidationError, match="aspire_jax did not write"):
        with a.auto_checkpoint(path, resume=True):
            pass
    assert a._auto is None
    with pytest.raises(ValidationError, match="aspire_jax did not write"):
        a.fit(x, key=0, n_epochs=1, checkpoint_path=path)
    with pytest.raises(ValidationError, match="aspire_jax did not write"):
        fitted.sample_posterior(100, key=0, checkpoint_path=path, **RUN)
    with pytest.raises(CheckpointError, match="aspire_jax did not write"):
        write_checkpoint_file(path, state_bytes=None, groups={"a": {"b": 1}},
                              keep_existing=False)
    _still_foreign(path)
    # A file aspire_jax wrote is one it may replace.
    ours = tmp_path / "ours.h5"
    fitted.sample_posterior(100, key=0, checkpoint_path=ours, **RUN)
    assert is_aspire_file(ours)
    fitted.sample_posterior(100, key=1, checkpoint_path=ours, **RUN)


def test_a_newer_file_format_is_refused(fitted, tmp_path):
    path = tmp_path / "run.h5"
    fitted.sample_posterior(100, key=0, checkpoint_path=path, **RUN)
    with h5py.File(path, "r+") as f:
        f.attrs["file_format_version"] = 99
    with pytest.raises(CheckpointError, match="file format version 99"):
        Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)
    with pytest.raises(CheckpointError, match="file format version 99"):
        read_checkpoint_bytes(path)
    with pytest.raises(CheckpointError, match="file format version 99"):
        AspireFile(path, "a")
    with h5py.File(path, "r") as f:  # refused before anything was rewritten
        assert f.attrs["file_format_version"] == 99


def test_a_state_without_its_flow_is_not_silently_dropped(fitted, tmp_path):
    path = tmp_path / "run.h5"
    fitted.sample_posterior(100, key=0, checkpoint_path=path,
                            checkpoint_save_flow=False, **RUN)
    a = problems.make_aspire()
    with pytest.raises(CheckpointError, match="holds an SMC state but no flow"):
        with a.auto_checkpoint(path, resume=True):
            pass
    assert a._auto is None
    assert read_checkpoint_bytes(path) is not None


def test_resume_from_file_without_its_flow_says_so(fitted, tmp_path):
    path = tmp_path / "run.h5"
    fitted.sample_posterior(100, key=0, checkpoint_path=path,
                            checkpoint_save_flow=False, **RUN)
    a = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)
    with pytest.raises(ValidationError, match="holds no flow at 'flow'"):
        a.sample_posterior()


def test_a_linked_checkpoint_path_writes_through_the_link(tmp_path):
    (tmp_path / "scratch").mkdir()
    real, link = tmp_path / "scratch" / "run.h5", tmp_path / "run.h5"
    write_checkpoint_file(real, state_bytes=None, groups={"meta": {"n": 1}})
    os.symlink(real, link)
    write_checkpoint_file(link, state_bytes=None, groups={"meta": {"n": 2}})
    assert link.is_symlink()
    with h5py.File(real, "r") as f:
        assert read_json_group(f, "meta") == {"n": 2}
    assert not [p.name for p in (tmp_path / "scratch").iterdir() if p != real]


def test_a_failed_write_does_not_end_the_run(fitted, tmp_path, monkeypatch):
    """Failed intermediate writes warn and the run goes on; a failed last
    write hands the checkpoint over with the error, from which the run
    finishes exactly as one never interrupted."""
    path = tmp_path / "run.h5"
    full = fitted.sample_posterior(300, key=3, return_history=True, **RUN)
    real = aspire_module.write_checkpoint_file

    def always_fails(*args, **kwargs):
        raise CheckpointError("disk full (simulated)")

    monkeypatch.setattr(aspire_module, "write_checkpoint_file", always_fails)
    with pytest.warns(RuntimeWarning, match="not written"):
        with pytest.raises(CheckpointError, match="resume_from=error.checkpoint") \
                as info:
            fitted.sample_posterior(300, key=3, checkpoint_path=path, **RUN)
    monkeypatch.setattr(aspire_module, "write_checkpoint_file", real)
    checkpoint = info.value.checkpoint
    assert checkpoint["beta"] == 1.0
    samples, history = fitted.sample_posterior(resume_from=checkpoint,
                                               return_history=True)
    np.testing.assert_array_equal(np.asarray(samples.x), np.asarray(full[0].x))
    assert float(samples.log_evidence) == float(full[0].log_evidence)
    np.testing.assert_array_equal(history.beta, full[1].beta)


def test_raw_bytes_resume_with_their_own_particle_count(fitted):
    blobs = []
    full = fitted.sample_posterior(300, key=4, checkpoint_callback=blobs.append, **RUN)
    again = fitted.sample_posterior(key=4, resume_from=blobs[0]["state"], **RUN)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(full.x))


@pytest.mark.parametrize("field, value, match", [
    ("beta", np.nan, "beta = nan"),
    ("beta", 1.5, "beta = 1.5"),
    ("iteration", -7, "iteration = -7"),
    ("log_evidence_var", -1.0, "log_evidence_var = -1.0"),
    ("log_evidence", np.nan, "log_evidence = nan"),
])
def test_impossible_states_are_refused(fitted, field, value, match):
    blobs = []
    fitted.sample_posterior(200, key=5, checkpoint_callback=blobs.append, **RUN)
    state = state_dict_from_bytes(blobs[0]["state"], wrap_keys=True)
    state[field] = np.asarray(value, np.asarray(state[field]).dtype)
    with pytest.raises(CheckpointError, match=match):
        fitted.sample_posterior(200, key=5, resume_from=state, **RUN)


def test_damaged_sampler_config_and_history_are_refused(fitted):
    blobs = []
    fitted.sample_posterior(200, key=6, checkpoint_callback=blobs.append, **RUN)
    good = blobs[0]
    bad_seed = dict(good, sampler_config=dict(good["sampler_config"], seed="abc"))
    with pytest.raises(CheckpointError, match="seed = 'abc'"):
        fitted.sample_posterior(resume_from=bad_seed)
    history = dict(good["history"], beta=np.array(["a"] * len(good["history"]["beta"])))
    with pytest.raises(CheckpointError, match="history is damaged"):
        fitted.sample_posterior(resume_from=dict(good, history=history))
    history = dict(good["history"], beta=np.zeros(7))
    with pytest.raises(CheckpointError, match="one entry per iteration"):
        fitted.sample_posterior(resume_from=dict(good, history=history))


def test_truncated_and_corrupt_sample_files(tmp_path):
    s = Samples.from_array(np.random.default_rng(0).normal(size=(50, 2)))
    whole = tmp_path / "s.h5"
    s.save(whole, "samples")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole.read_bytes()[:1500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_samples(cut)
    np.save(tmp_path / "a.npy", np.zeros((10, 2)))
    (tmp_path / "b.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:100])
    with pytest.raises(ValidationError, match="not a readable .npy/.npz"):
        read_samples(tmp_path / "b.npy")


def test_samples_save_replaces_only_samples(fitted, tmp_path):
    path = tmp_path / "run.h5"
    posterior = fitted.sample_posterior(100, key=7, checkpoint_path=path, **RUN)
    for group in (".", "checkpoint", "flow"):
        with pytest.raises(ValidationError, match="was not written by Samples.save"):
            posterior.save(path, group)
    assert read_checkpoint_bytes(path) is not None
    posterior.save(path, "posterior")
    posterior.save(path, "posterior")  # its own group it replaces
    back = Samples.load(path, "posterior")
    np.testing.assert_array_equal(np.asarray(back.x), np.asarray(posterior.x))
    # int seeds resample as typed keys do
    a = posterior.resample(3, n=20)
    b = posterior.resample(jax.random.key(3), n=20)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert jnp.all(jnp.isfinite(a.x))


def test_a_samples_file_is_named_as_such_by_resume_from_file(tmp_path):
    path = tmp_path / "posterior.h5"
    with AspireFile(path, "w") as f:
        Samples.from_array(np.zeros((5, 3))).save(f, "samples")
    with pytest.raises(CheckpointError, match="holds samples .* no run to resume"):
        Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)


def test_samples_save_does_not_claim_a_users_file(tmp_path):
    path = tmp_path / "mine.h5"
    _foreign(path)
    Samples.from_array(np.zeros((5, 2))).save(path, path="old_samples")
    _still_foreign(path)
    assert not is_aspire_file(path)
    np.testing.assert_array_equal(np.asarray(Samples.load(path, "old_samples").x),
                                  np.zeros((5, 2)))
    # So a checkpoint still refuses to replace it, and the user's data stays.
    with pytest.raises(ValidationError, match="aspire_jax did not write"):
        problems.make_aspire().fit(problems.earlier_samples(), key=0, n_epochs=1,
                                   checkpoint_path=path)
    with pytest.raises(CheckpointError, match="aspire_jax did not write"):
        write_checkpoint_file(path, state_bytes=None, groups={"a": {"b": 1}},
                              keep_existing=False)
    _still_foreign(path)
    # A new file written by Samples.save is aspire_jax's.
    new = tmp_path / "posterior.h5"
    Samples.from_array(np.zeros((5, 2))).save(new)
    assert is_aspire_file(new)


def test_a_failed_samples_save_keeps_the_checkpoint(fitted, tmp_path, monkeypatch):
    path = tmp_path / "run.h5"
    posterior = fitted.sample_posterior(100, key=8, checkpoint_path=path, **RUN)
    before = path.read_bytes()
    real_write = os.write
    calls = []

    def full_disk(fd, data):  # part of the file, then the disk is full
        if fd in (0, 1, 2):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) % 2:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CheckpointError, match="No space left.*unchanged"):
        posterior.save(path, "posterior")
    monkeypatch.setattr(os, "write", real_write)
    assert calls and path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]
    a = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)
    assert float(a.sample_posterior().log_evidence) == float(posterior.log_evidence)
    # Once there is room, the samples join the checkpoint, which still resumes.
    posterior.save(path, "posterior")
    np.testing.assert_array_equal(np.asarray(Samples.load(path, "posterior").x),
                                  np.asarray(posterior.x))
    assert is_aspire_file(path)
    a = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)
    assert float(a.sample_posterior().log_evidence) == float(posterior.log_evidence)
