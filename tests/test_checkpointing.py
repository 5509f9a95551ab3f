"""Checkpoint and resume through the facade, as users of aspire expect."""

import contextlib
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import problems
from aspire_jax import Aspire, AspireFile, CheckpointError, TemperingError, ValidationError
from aspire_jax.io import read_checkpoint_bytes, state_dict_from_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = dict(target_efficiency=0.9, n_mcmc_steps=4)


@pytest.fixture(scope="module")
def fitted():
    return problems.fitted_aspire()


def _fresh_like(aspire):
    """A new Aspire with the same settings and flow (no resume state)."""
    other = problems.make_aspire()
    other.flow_params = aspire.flow_params
    other.flow_history = aspire.flow_history  # what reference="auto" goes by
    return other


def _assert_same_run(a, b):
    (sa, ha), (sb, hb) = a, b
    np.testing.assert_array_equal(np.asarray(sa.x), np.asarray(sb.x))
    assert float(sa.log_evidence) == float(sb.log_evidence)
    assert float(sa.log_evidence_error) == float(sb.log_evidence_error)
    assert set(ha.data) == set(hb.data)
    for k in ha.data:
        np.testing.assert_array_equal(ha.data[k], hb.data[k], err_msg=k)


def test_checkpoint_file_layout(fitted, tmp_path):
    path = tmp_path / "run.h5"
    fitted.sample_posterior(400, key=1, checkpoint_path=path, **RUN)
    with AspireFile(path, "r") as f:
        assert {"checkpoint", "aspire_config", "sampler_config", "flow",
                "history"} <= set(f.keys())
        blob = f["checkpoint"]["state"][...].tobytes()
        assert f["checkpoint"]["state"].dtype == np.uint8
    state = state_dict_from_bytes(blob)
    assert state["x"].shape == (400, problems.DIMS)
    assert float(state["beta"]) == 1.0
    with h5py.File(path, "r") as f:
        import json

        cfg = {k: json.loads(v) for k, v in f["aspire_config"].attrs.items()}
        assert cfg["sampler_type"] == "smc"
        assert cfg["sampler_config"]["options"]["target_efficiency"] == 0.9


def test_resume_from_bytes_dict_and_path_is_exact(fitted, tmp_path):
    blobs = []
    full = fitted.sample_posterior(400, key=2, return_history=True,
                                   checkpoint_callback=blobs.append, **RUN)
    assert len(blobs) >= 3
    mid = blobs[len(blobs) // 2]
    # A dict from checkpoint_callback carries the settings and history.
    _assert_same_run(full, fitted.sample_posterior(400, return_history=True,
                                                   resume_from=mid))
    # Raw bytes carry the state only; the settings are passed again.
    again = fitted.sample_posterior(400, key=2, return_history=True,
                                    resume_from=mid["state"], **RUN)
    np.testing.assert_array_equal(np.asarray(full[0].x), np.asarray(again[0].x))
    # A file path.
    path = tmp_path / "run.h5"
    partial = []
    fitted.sample_posterior(400, key=2, checkpoint_path=path,
                            checkpoint_callback=partial.append, **RUN)
    _assert_same_run(full, fitted.sample_posterior(400, return_history=True,
                                                   resume_from=str(path)))


def test_checkpoint_every_and_callback(fitted):
    blobs = []
    _, history = fitted.sample_posterior(400, key=3, return_history=True,
                                         checkpoint_every=2,
                                         checkpoint_callback=blobs.append, **RUN)
    assert [b["iteration"] for b in blobs] == list(range(2, len(history) + 1, 2))
    assert all(isinstance(b["state"], bytes) for b in blobs)


def test_auto_checkpoint_and_resume_from_file(tmp_path):
    path = str(tmp_path / "auto.h5")
    aspire = problems.make_aspire()
    with aspire.auto_checkpoint(path, every=1):
        aspire.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
        with AspireFile(path, "r") as f:
            assert "flow" in f and "aspire_config" in f and "checkpoint" not in f
        full = aspire.sample_posterior(400, key=4, return_history=True, **RUN)
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    import jax

    same = jax.tree_util.tree_map(lambda u, v: bool(np.array_equal(u, v)),
                                  resumed.flow_params.net, aspire.flow_params.net)
    assert all(jax.tree_util.tree_leaves(same))
    # Finished run: resuming returns the same posterior without new iterations.
    again = resumed.sample_posterior(return_history=True)
    _assert_same_run(full, again)


def _stopped_at_iteration_2(aspire, path, n, key):
    """Run with checkpoints to ``path`` and stop it (KeyboardInterrupt from
    the callback) once iteration 2 is written; return the resumable file's
    Aspire."""

    def stop(checkpoint):
        if checkpoint["iteration"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        aspire.sample_posterior(n, key=key, checkpoint_path=path,
                                checkpoint_callback=stop, **RUN)
    return Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                   log_prior=problems.log_prior)


def test_refused_call_leaves_the_resume_pending(fitted, tmp_path):
    """A call refused on its arguments must not drop the loaded checkpoint: the
    next call resumes it, instead of starting afresh and overwriting it."""
    path = str(tmp_path / "run.h5")
    full = fitted.sample_posterior(400, key=9, return_history=True, **RUN)
    resumed = _stopped_at_iteration_2(fitted, path, 400, 9)
    with pytest.raises(CheckpointError, match="kernel"):
        resumed.sample_posterior(kernel="rwmh")
    with pytest.raises(ValidationError, match="400 particles"):
        resumed.sample_posterior(1000)
    _assert_same_run(full, resumed.sample_posterior(return_history=True))
    # Once resumed, the instance starts new runs.
    fresh = resumed.sample_posterior(400, key=10, **RUN)
    assert not np.array_equal(np.asarray(fresh.x), np.asarray(full[0].x))


def test_file_without_checkpoint_starts_again(fitted, tmp_path):
    path = tmp_path / "flow_only.h5"
    with AspireFile(path, "w") as f:
        fitted.save_config(f)
        fitted.save_flow(f)
    assert read_checkpoint_bytes(path) is None
    aspire = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                     log_prior=problems.log_prior)
    post = aspire.sample_posterior(300, key=5, checkpoint_path=path, **RUN)
    ref = fitted.sample_posterior(300, key=5, **RUN)
    np.testing.assert_array_equal(np.asarray(post.x), np.asarray(ref.x))
    assert read_checkpoint_bytes(path) is not None


def test_manual_load_flow_and_bytes_as_on_the_docs_page(fitted, tmp_path):
    path = tmp_path / "run.h5"
    full = fitted.sample_posterior(300, key=6, checkpoint_path=path, **RUN)
    aspire = problems.make_aspire()
    with AspireFile(path, "r") as f:
        aspire.load_flow(f, path="flow")
        blob = f["checkpoint"]["state"][...].tobytes()
    again = aspire.sample_posterior(300, sampler="smc", resume_from=blob, key=6, **RUN)
    np.testing.assert_array_equal(np.asarray(full.x), np.asarray(again.x))


def test_seed_recorded_when_no_key(fitted, tmp_path):
    path = tmp_path / "seed.h5"
    first = fitted.sample_posterior(300, checkpoint_path=path, **RUN)
    import json

    with h5py.File(path, "r") as f:
        seed = json.loads(f["sampler_config"].attrs["seed"])
    assert isinstance(seed, int)
    again = fitted.sample_posterior(300, key=seed, **RUN)
    np.testing.assert_array_equal(np.asarray(first.x), np.asarray(again.x))


def test_only_hdf5_paths(fitted):
    for bad in ("run.pkl", "run.txt", "run"):
        with pytest.raises(ValidationError, match=r"\.h5 or \.hdf5"):
            fitted.sample_posterior(100, key=0, checkpoint_path=bad)
    with pytest.raises(ValidationError, match=r"\.h5"):
        with fitted.auto_checkpoint("run.json"):
            pass


def test_mismatched_resume_names_the_problem(fitted, tmp_path):
    blobs = []
    fitted.sample_posterior(300, key=7, checkpoint_callback=blobs.append, **RUN)
    with pytest.raises(CheckpointError, match=r"state\.x.*\(300, 3\)"):
        fitted.sample_posterior(200, key=7, resume_from=blobs[0]["state"], **RUN)
    with pytest.raises(CheckpointError, match="kernel_params"):
        fitted.sample_posterior(300, key=7, resume_from=blobs[0]["state"], kernel="rwmh")
    tampered = bytearray(blobs[0]["state"])
    tampered[4] = 99  # format version field
    with pytest.raises(CheckpointError, match="version"):
        fitted.sample_posterior(300, key=7, resume_from=bytes(tampered), **RUN)


def test_flow_architecture_mismatch(fitted, tmp_path):
    path = tmp_path / "arch.h5"
    with AspireFile(path, "w") as f:
        fitted.save_flow(f)
    other = problems.make_aspire(n_layers=3)
    with AspireFile(path, "r") as f, pytest.raises(CheckpointError, match="n_layers"):
        other.load_flow(f)


@pytest.mark.parametrize("content", ["pickle", "garbage", "truncated"])
def test_corrupt_checkpoint_files(fitted, tmp_path, content, monkeypatch):
    import pickle

    path = tmp_path / "bad.h5"
    fitted.sample_posterior(300, key=8, checkpoint_path=path, **RUN)
    if content == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        payload = (pickle.dumps({"x": 1}) if content == "pickle"
                   else os.urandom(500))
        with h5py.File(path, "a") as f:
            del f["checkpoint/state"]
            f["checkpoint/state"] = np.frombuffer(payload, np.uint8)

    def refuse(*a, **k):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    with pytest.raises(CheckpointError):
        fitted.sample_posterior(300, resume_from=str(path))


@contextlib.contextmanager
def _held_open(path, mode):
    """Another process holding ``path`` open (h5py ``mode``) meanwhile."""
    code = ("import h5py, sys, time\n"
            "f = h5py.File(sys.argv[1], sys.argv[2])\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path), mode],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_reader_holding_the_file_does_not_stop_the_run(fitted, tmp_path):
    path = tmp_path / "held.h5"
    fitted.sample_posterior(300, key=9, checkpoint_path=path, **RUN)
    with _held_open(path, "r"):
        post = fitted.sample_posterior(300, key=10, checkpoint_path=path, **RUN)
    resumed = fitted.sample_posterior(300, resume_from=str(path))
    np.testing.assert_array_equal(np.asarray(post.x), np.asarray(resumed.x))


def test_writer_holding_the_file_before_the_run_is_not_called_foreign(fitted,
                                                                      tmp_path):
    """A file another process holds open for writing cannot even be read; the
    run must start (not refuse the file as foreign), warn at each write and
    hand its last checkpoint over with the final error."""
    path = tmp_path / "held.h5"
    fitted.sample_posterior(300, key=9, checkpoint_path=path, **RUN)
    with _held_open(path, "a"), pytest.warns(RuntimeWarning, match="not written"), \
            pytest.raises(CheckpointError) as info:
        fitted.sample_posterior(300, key=10, checkpoint_path=path, **RUN)
    ref = fitted.sample_posterior(300, key=10, **RUN)
    post = fitted.sample_posterior(resume_from=info.value.checkpoint)
    np.testing.assert_array_equal(np.asarray(post.x), np.asarray(ref.x))


def test_host_failure_in_the_final_move_is_raised_as_itself(fitted, tmp_path):
    import jax.numpy as jnp

    from aspire_jax import wrap_numpy_likelihood

    def ll_host(x):
        # The final move mutates n_final_samples = 200 points; the run 300.
        if len(x) == 200:
            raise FileNotFoundError("detector data vanished")
        return np.asarray(problems.log_likelihood(jnp.asarray(x)))

    aspire = problems.make_aspire(log_likelihood=wrap_numpy_likelihood(ll_host))
    aspire.flow_params = fitted.flow_params
    path = tmp_path / "final.h5"
    with pytest.raises(FileNotFoundError) as info:
        aspire.sample_posterior(300, key=11, checkpoint_path=path,
                                n_final_samples=200, **RUN)
    notes = " ".join(info.value.__notes__)
    assert "during the final move of the SMC run" in notes
    assert "resume_from_file" in notes


def _iteration_in(path):
    try:
        blob = read_checkpoint_bytes(path)
    except (CheckpointError, OSError):
        return -1
    return -1 if blob is None else int(state_dict_from_bytes(blob)["iteration"])


def test_sigkill_at_random_points_then_resume_is_exact(tmp_path):
    """Kill the sampler twice at random moments; the resumed run is bitwise equal."""
    path = str(tmp_path / "killed.h5")
    rng = random.Random(1234)
    kills = 0
    for mode in ("fresh", "resume"):
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_checkpoint_worker.py"), path, mode],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.time() + 240
        start = _iteration_in(path)
        while _iteration_in(path) <= start and proc.poll() is None:
            assert time.time() < deadline, "worker wrote no checkpoint in time"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stdout.close()
    assert kills >= 1
    assert _iteration_in(path) >= 1
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    got = resumed.sample_posterior(return_history=True)
    # The uninterrupted run, with the same flow, key and settings.
    import _checkpoint_worker as w

    ref = _fresh_like(resumed).sample_posterior(w.N, return_history=True, **w.RUN)
    _assert_same_run(ref, got)


def test_resume_with_another_likelihood_is_refused(fitted, tmp_path):
    import jax.numpy as jnp

    path = tmp_path / "mid.h5"
    blobs = []
    fitted.sample_posterior(300, key=12, checkpoint_callback=blobs.append, **RUN)
    other = problems.make_aspire(
        log_likelihood=lambda x: problems.log_likelihood(x - 1.0))
    other.flow_params = fitted.flow_params
    with pytest.raises(CheckpointError, match="different likelihood"):
        other.sample_posterior(300, resume_from=blobs[0])
    with pytest.raises(CheckpointError, match="kernel"):
        fitted.sample_posterior(300, resume_from=blobs[0], kernel="pcn")
    del jnp, path


def test_refit_to_a_file_drops_the_old_run(fitted, tmp_path):
    path = tmp_path / "refit.h5"
    fitted.sample_posterior(300, key=13, checkpoint_path=path, **RUN)
    aspire = problems.make_aspire()
    aspire.fit(problems.earlier_samples(seed=5), checkpoint_path=path,
               **problems.FIT_SETTINGS)
    assert read_checkpoint_bytes(path) is None
    with AspireFile(path, "r") as f:
        assert "history" not in f and "flow" in f


def test_corrupt_flow_parameters_are_detected(fitted, tmp_path):
    path = tmp_path / "flow.h5"
    with AspireFile(path, "w") as f:
        fitted.save_flow(f)
    with h5py.File(path, "a") as f:
        data = f["flow/params"][...]
        data[len(data) // 2] ^= 0x10
        f["flow/params"][...] = data
    with AspireFile(path, "r") as f, pytest.raises(CheckpointError, match="checksum"):
        problems.make_aspire().load_flow(f)


def test_auto_checkpoint_with_resume_on_a_first_run(tmp_path):
    # fit writes the flow and configuration first; with resume=True the
    # sampler must see that no state is there yet and start afresh, then a
    # second pass over the same file must resume the finished run.
    path = str(tmp_path / "first.h5")
    aspire = problems.make_aspire()
    with aspire.auto_checkpoint(path, every=1, resume=True):
        aspire.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
        first = aspire.sample_posterior(300, key=6, return_history=True, **RUN)
    assert read_checkpoint_bytes(path) is not None
    again = _fresh_like(aspire)
    with again.auto_checkpoint(path, every=1, resume=True):
        second = again.sample_posterior(300, key=6, return_history=True, **RUN)
    _assert_same_run(first, second)


def test_a_file_with_a_flow_and_no_run_gets_the_run(fitted, tmp_path, caplog):
    # resume_from_file on a file that holds a flow but no run yet: the run
    # starts afresh and checkpoints into that file, once; a refit forgets it.
    path = tmp_path / "flow_only.h5"
    fitted.save_flow(path)
    fitted.save_config(path)
    loaded = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                     log_prior=problems.log_prior)
    assert read_checkpoint_bytes(path) is None
    first = loaded.sample_posterior(300, key=8, return_history=True, **RUN)
    assert read_checkpoint_bytes(path) is not None
    again = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                    log_prior=problems.log_prior)
    _assert_same_run(first, again.sample_posterior(return_history=True))
    # The run it held is finished: a second run of the same instance writes
    # no file of its own choosing.
    before = path.read_bytes()
    loaded.sample_posterior(300, key=9, **RUN)
    assert path.read_bytes() == before
    other = tmp_path / "flow_only_2.h5"
    fitted.save_flow(other)
    fitted.save_config(str(other))

    def load():
        return Aspire.resume_from_file(other, log_likelihood=problems.log_likelihood,
                                       log_prior=problems.log_prior)

    refit = load()
    refit.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
    refit.sample_posterior(300, key=8, **RUN)
    assert read_checkpoint_bytes(other) is None
    # Only the first SMC run, wherever it writes.
    elsewhere = load()
    elsewhere.sample_posterior(300, key=8, checkpoint_path=False, **RUN)
    elsewhere.sample_posterior(300, key=8, **RUN)
    assert read_checkpoint_bytes(other) is None
    # Another instance's run, written since, is not written over.
    late, early = load(), load()
    early.sample_posterior(300, key=8, **RUN)
    theirs = read_checkpoint_bytes(other)
    assert theirs is not None
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        late.sample_posterior(300, key=9, **RUN)
    assert read_checkpoint_bytes(other) == theirs
    assert any("now holds a run or another flow" in r.getMessage()
               for r in caplog.records)


def test_auto_checkpoint_resume_stopped_again_goes_on_from_its_file(
        fitted, tmp_path, caplog):
    path = tmp_path / "run.h5"
    _stopped_at_iteration_2(fitted, path, 300, 55)

    def stop(checkpoint):
        if checkpoint["iteration"] == 3:
            raise KeyboardInterrupt

    aspire = problems.make_aspire()
    with aspire.auto_checkpoint(path, resume=True):
        with pytest.raises(KeyboardInterrupt):
            aspire.sample_posterior(checkpoint_callback=stop)
        with caplog.at_level("INFO", logger="aspire_jax.aspire"):
            aspire.sample_posterior()
    assert any("resuming SMC at iteration 3" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "run.unfinished.h5").exists()


def test_auto_checkpoint_resume_is_used_up_by_a_finished_run(tmp_path, caplog):
    path = str(tmp_path / "auto.h5")
    aspire = problems.make_aspire()
    with aspire.auto_checkpoint(path, every=1, resume=True):
        aspire.fit(problems.earlier_samples(), **problems.FIT_SETTINGS)
        first = aspire.sample_posterior(300, key=6, **RUN)
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            drawn = aspire.sample_posterior(200, sampler="importance", key=3)
        assert drawn.n_samples == 200
        assert any("writes no checkpoint, inside auto_checkpoint" in r.getMessage()
                   for r in caplog.records)
        # A new run with another key and count, not a resume of the first.
        second = aspire.sample_posterior(200, key=7, **RUN)
    assert second.n_samples == 200
    assert not np.array_equal(np.asarray(first.x)[:200], np.asarray(second.x))
    # A later script over the same file resumes the run the file holds last.
    again = _fresh_like(aspire)
    with again.auto_checkpoint(path, every=1, resume=True):
        third = again.sample_posterior(**RUN)
        fourth = again.sample_posterior(200, key=8, **RUN)
    np.testing.assert_array_equal(np.asarray(third.x), np.asarray(second.x))
    assert not np.array_equal(np.asarray(fourth.x), np.asarray(third.x))


def test_a_resumed_run_stopped_in_another_file_goes_on_from_there(
        fitted, tmp_path, caplog):
    path, other = tmp_path / "run.h5", tmp_path / "other.h5"
    resumed = _stopped_at_iteration_2(fitted, path, 300, 56)

    def stop(checkpoint):
        if checkpoint["iteration"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as err:
        resumed.sample_posterior(checkpoint_path=other, checkpoint_callback=stop)
    assert any("holds iteration 3" in note for note in err.value.__notes__)
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        end = resumed.sample_posterior(return_history=True)
    assert any("resuming SMC at iteration 3" in r.getMessage() for r in caplog.records)
    full = fitted.sample_posterior(300, key=56, return_history=True, **RUN)
    _assert_same_run(full, end)
    # It wrote on into the file it was stopped in.
    assert read_checkpoint_bytes(other) != read_checkpoint_bytes(path)
    assert len(Aspire.resume_from_file(
        other, log_likelihood=problems.log_likelihood,
        log_prior=problems.log_prior).sample_posterior(return_history=True)[1]) == len(
            full[1])


def test_a_history_that_is_not_the_states_is_refused(fitted, tmp_path, caplog):
    blobs = []
    fitted.sample_posterior(300, key=57, checkpoint_callback=blobs.append, **RUN)
    late, early = blobs[2], blobs[0]
    with pytest.raises(CheckpointError, match="holds 1 iterations where the state is"):
        fitted.sample_posterior(resume_from=dict(late, history=early["history"]))
    # A later history of the same run is cut to the state's rows, and says so;
    # the run goes on as from its own checkpoint.
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        _, cut = fitted.sample_posterior(
            resume_from=dict(early, history=late["history"]), return_history=True)
    assert any("rows after it are dropped" in r.getMessage() for r in caplog.records)
    _, own = fitted.sample_posterior(resume_from=early, return_history=True)
    np.testing.assert_array_equal(cut.data["beta"], own.data["beta"])
    caplog.clear()
    history = dict(late["history"])
    beta = np.array(history["beta"], float)
    beta[0] *= 1.01
    with pytest.raises(CheckpointError, match="delta_beta"):
        fitted.sample_posterior(resume_from=dict(late, history=dict(history, beta=beta)))
    counts = np.array(history["n_evaluations"])
    counts[0] += 1000
    with pytest.raises(CheckpointError, match="n_evaluations column"):
        fitted.sample_posterior(resume_from=dict(
            late, history=dict(history, n_evaluations=counts)))
    # The bytes alone: the history starts where the state is, and says so.
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        _, rest = fitted.sample_posterior(resume_from=late["state"], return_history=True,
                                          **RUN)
    assert any("without its history" in r.getMessage() for r in caplog.records)
    _, whole = fitted.sample_posterior(300, key=57, return_history=True, **RUN)
    assert len(rest) == len(whole) - late["iteration"]
    # A file without its history was edited.
    path = tmp_path / "run.h5"
    fitted.sample_posterior(300, key=57, checkpoint_path=path, **RUN)
    with h5py.File(path, "a") as f:
        del f["history"]
    with pytest.raises(CheckpointError, match="no /history"):
        fitted.sample_posterior(resume_from=str(path), **RUN)


def test_resume_restores_kernel_settings(fitted, tmp_path):
    # Settings objects are stored as plain JSON; a resume must rebuild them.
    from aspire_jax.kernels import PCNSettings

    path = str(tmp_path / "settings.h5")
    settings = PCNSettings(nu=4.5, target_acceptance=0.3)
    checkpoints = []
    full = fitted.sample_posterior(300, key=7, return_history=True,
                                   checkpoint_path=path,
                                   checkpoint_callback=checkpoints.append,
                                   kernel_settings=settings, **RUN)
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    _assert_same_run(full, resumed.sample_posterior(return_history=True))
    mid = _fresh_like(fitted).sample_posterior(resume_from=checkpoints[0],
                                               return_history=True)
    _assert_same_run(full, mid)


def test_callback_sees_nothing_newer_than_the_file(fitted, tmp_path):
    # A callback that stops the run leaves the file at its iteration.
    path = tmp_path / "stopped.h5"
    seen = []

    def stop(checkpoint):
        seen.append(checkpoint["iteration"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fitted.sample_posterior(300, key=8, checkpoint_path=path,
                                checkpoint_callback=stop, **RUN)
    assert seen == [1] and _iteration_in(path) == 1
    full = fitted.sample_posterior(300, key=8, return_history=True, **RUN)
    resumed = _fresh_like(fitted).sample_posterior(resume_from=str(path),
                                                   return_history=True, **RUN)
    _assert_same_run(full, resumed)


def test_bad_checkpoint_paths_are_refused_before_any_work(fitted, tmp_path, monkeypatch):
    import aspire_jax.aspire as facade

    def no_training(*args, **kwargs):
        raise AssertionError("the flow was trained before the path was checked")

    monkeypatch.setattr(facade, "fit_flow", no_training)
    missing = tmp_path / "no" / "such" / "run.h5"
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    aspire = problems.make_aspire()
    for path, message in ((missing, "does not exist"), (text, "not an HDF5 file")):
        with pytest.raises(ValidationError, match=message):
            aspire.fit(problems.earlier_samples(), checkpoint_path=path,
                       **problems.FIT_SETTINGS)
        with pytest.raises(ValidationError, match=message):
            with aspire.auto_checkpoint(path):
                pass
        with pytest.raises(ValidationError, match=message):
            fitted.sample_posterior(300, key=0, checkpoint_path=path, **RUN)
    assert text.read_text() == "not hdf5"
    with pytest.raises(ValidationError, match="applies to SMC"):
        fitted.sample_posterior(300, sampler="importance", key=0,
                                checkpoint_path=tmp_path / "is.h5")
    # Under auto_checkpoint the file is for the SMC runs; importance runs on.
    with fitted.auto_checkpoint(tmp_path / "auto.h5"):
        fitted.sample_posterior(300, sampler="importance", key=0)


def test_resume_settings_that_cannot_take_effect_are_refused(fitted, tmp_path):
    path = tmp_path / "run.h5"
    blobs = []
    fitted.sample_posterior(300, key=9, checkpoint_path=path,
                            checkpoint_callback=blobs.append, **RUN)
    for source in (str(path), blobs[0]):
        with pytest.raises(ValidationError, match="cannot resume"):
            fitted.sample_posterior(resume_from=source, sampler="importance")
        with pytest.raises(ValidationError, match="holds 300 particles"):
            fitted.sample_posterior(200, resume_from=source, **RUN)
        with pytest.raises(ValidationError, match="key=9"):
            fitted.sample_posterior(resume_from=source, key=10, **RUN)
    import jax

    # The same key, as an int or as the typed key made from it, is accepted.
    for key in (9, jax.random.key(9)):
        fitted.sample_posterior(300, resume_from=blobs[0], key=key, **RUN)
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    # Another sampler runs afresh and leaves the loaded checkpoint pending.
    drawn = resumed.sample_posterior(200, sampler="importance", key=3)
    assert drawn.n_samples == 200
    again = resumed.sample_posterior(**RUN)
    full = fitted.sample_posterior(300, key=9, **RUN)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(full.x))


def test_a_resume_stopped_before_its_first_step_stays_pending(fitted, tmp_path):
    from aspire_jax import TemperingError

    path = str(tmp_path / "run.h5")
    full = fitted.sample_posterior(400, key=11, return_history=True, **RUN)
    assert len(full[1]) >= 3
    with pytest.raises(TemperingError):
        fitted.sample_posterior(400, key=11, max_iterations=2, checkpoint_path=path,
                                **RUN)
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    before = read_checkpoint_bytes(path)
    with pytest.raises(TemperingError, match="iteration cap is 2 .max_iterations"):
        resumed.sample_posterior()  # the stored cap is already reached
    assert read_checkpoint_bytes(path) == before
    _assert_same_run(full, resumed.sample_posterior(return_history=True,
                                                    max_iterations=50))


def test_run_cut_off_in_its_first_iteration_resumes_from_its_initial_draws(
        fitted, tmp_path):
    """The file holds the initial draws before the first iteration: a run
    stopped during it resumes them (no second draw) and ends as the
    uninterrupted run."""
    import jax.numpy as jnp

    from aspire_jax import wrap_numpy_likelihood

    n = 300
    full = fitted.sample_posterior(n, key=21, return_history=True, **RUN)
    calls = []

    def ll_host(x):
        calls.append(len(x))
        if len(calls) > 2:  # the probe, the initial draws, then the first sweep
            raise RuntimeError("node lost")
        return np.asarray(problems.log_likelihood(jnp.asarray(x)))

    path = tmp_path / "early.h5"
    aspire = problems.make_aspire(log_likelihood=wrap_numpy_likelihood(ll_host))
    aspire.flow_params = fitted.flow_params
    aspire.flow_history = fitted.flow_history
    with pytest.raises(RuntimeError, match="node lost"):
        aspire.sample_posterior(n, key=21, checkpoint_path=path, **RUN)
    assert calls[1] == n
    state = state_dict_from_bytes(read_checkpoint_bytes(path))
    assert int(state["iteration"]) == 0 and int(state["n_evaluations"]) == n
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    _assert_same_run(full, resumed.sample_posterior(return_history=True))


def test_refit_after_resume_from_file_starts_afresh(fitted, tmp_path):
    resumed = _stopped_at_iteration_2(fitted, str(tmp_path / "stopped.h5"), 300, 23)
    resumed.fit(problems.earlier_samples(seed=3), overwrite=True,
                **problems.FIT_SETTINGS)
    # Not the stored run (its particles carry the old flow's log q): a new one,
    # with the key given now.
    post = resumed.sample_posterior(300, key=24, **RUN)
    ref = _fresh_like(resumed).sample_posterior(300, key=24, **RUN)
    np.testing.assert_array_equal(np.asarray(post.x), np.asarray(ref.x))


def test_numpy_integer_checkpoint_every(fitted, tmp_path):
    blobs = []
    fitted.sample_posterior(300, key=25, checkpoint_every=np.int64(2),
                            checkpoint_callback=blobs.append, **RUN)
    assert blobs and all(b["iteration"] % 2 == 0 for b in blobs)
    with pytest.raises(ValidationError, match="checkpoint_every"):
        fitted.sample_posterior(300, key=25, checkpoint_every=True, **RUN)


def test_a_callback_that_cannot_be_called_is_refused_before_the_run(fitted, tmp_path):
    path = tmp_path / "never.h5"
    before = fitted.n_likelihood_evaluations
    with pytest.raises(ValidationError, match="checkpoint_callback must be callable"):
        fitted.sample_posterior(300, key=25, checkpoint_callback=5,
                                checkpoint_path=path, **RUN)
    assert not path.exists() and fitted.n_likelihood_evaluations == before


def test_file_of_another_program_is_named_as_such(tmp_path):
    path = tmp_path / "upstream.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("aspire_config")
        g.attrs["dims"] = np.void(b"\x80\x04K\x03.")  # a pickled 3
        f.create_dataset("checkpoint/state", data=np.frombuffer(b"\x80\x04N.", np.uint8))
    with pytest.raises(CheckpointError, match="not written by aspire_jax.*pickled"):
        Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)


def test_rerunning_a_cut_off_script_keeps_its_unfinished_run(fitted, tmp_path, caplog):
    # The script is run again without asking to resume: its fit, then its
    # run, write over the file, but the unfinished run is kept aside first.
    path = tmp_path / "run.h5"
    _stopped_at_iteration_2(fitted, path, 300, 31)
    aside = tmp_path / "run.unfinished.h5"
    again = problems.make_aspire()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        again.fit(problems.earlier_samples(), checkpoint_path=path,
                  **problems.FIT_SETTINGS)
    assert any("holds an unfinished run (iteration 2" in r.getMessage()
               for r in caplog.records)
    assert read_checkpoint_bytes(path) is None
    kept = Aspire.resume_from_file(aside, log_likelihood=problems.log_likelihood,
                                   log_prior=problems.log_prior)
    assert int(state_dict_from_bytes(kept._resume["state"])["iteration"]) == 2
    # A finished run is written over without a copy.
    aside.unlink()
    fitted.sample_posterior(300, key=32, checkpoint_path=path, **RUN)
    fitted.sample_posterior(300, key=33, checkpoint_path=path, **RUN)
    assert not aside.exists()


def test_a_resumed_run_goes_on_checkpointing_into_its_file(fitted, tmp_path, caplog):
    path = tmp_path / "run.h5"
    resumed = _stopped_at_iteration_2(fitted, path, 300, 34)

    def stop(checkpoint):
        if checkpoint["iteration"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resumed.sample_posterior(checkpoint_callback=stop)
    assert _iteration_in(path) == 3
    # The next call goes on from iteration 3, where the file is: nothing to
    # set aside, and the same run as one never stopped.
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        post = resumed.sample_posterior(return_history=True)
    assert any("resuming SMC at iteration 3" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "run.unfinished.h5").exists()
    _assert_same_run(post, fitted.sample_posterior(300, key=34, return_history=True,
                                                   **RUN))
    # Once finished, a further call is a new run, and says so.
    caplog.clear()
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        resumed.sample_posterior(300, key=53, **RUN)
    assert any("starts a new run" in r.getMessage() for r in caplog.records)


def test_resume_from_file_names_a_missing_state_dataset(fitted, tmp_path):
    path = tmp_path / "run.h5"
    _stopped_at_iteration_2(fitted, path, 300, 35)
    # checkpoint_path names the group in the file here, not the file.
    with pytest.raises(CheckpointError, match="names the group inside the file"):
        Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior, checkpoint_path=str(path))
    with pytest.raises(CheckpointError, match="no dataset /checkpoint/stat$|"
                                              "no dataset /checkpoint/stat;"):
        Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior, checkpoint_dset="stat")


def test_a_stalled_run_resumes_under_new_settings(fitted):
    from aspire_jax.io import state_to_bytes
    from aspire_jax.smc.state import Status

    blobs = []
    fitted.sample_posterior(300, key=36, checkpoint_callback=blobs.append, **RUN)
    state = fitted._last_state  # only its layout is needed
    mid = state_dict_from_bytes(blobs[1]["state"], wrap_keys=True)
    from aspire_jax.io import state_from_state_dict

    stalled = state_from_state_dict(state, mid).replace(
        status=np.int32(Status.STALLED))
    post = fitted.sample_posterior(300, resume_from=dict(
        blobs[1], state=state_to_bytes(stalled)), min_beta_step=0.01)
    assert np.isfinite(float(post.log_evidence))


def test_states_no_run_reaches_are_refused(fitted):
    from aspire_jax.io import state_from_state_dict, state_to_bytes

    blobs = []
    fitted.sample_posterior(300, key=37, checkpoint_callback=blobs.append, **RUN)
    mid = state_dict_from_bytes(blobs[1]["state"], wrap_keys=True)
    state = state_from_state_dict(fitted._last_state, mid)
    for bad, said in ((state.replace(log_weights=state.log_weights.at[0].set(np.nan)),
                       "log_weights holding NaN"),
                      (state.replace(status=np.int32(99)), "status = 99")):
        with pytest.raises(CheckpointError, match=said):
            fitted.sample_posterior(300, resume_from=dict(blobs[1],
                                                          state=state_to_bytes(bad)))


def test_a_flow_fitted_under_other_bounds_is_refused(fitted, tmp_path):
    path = tmp_path / "flow.h5"
    with AspireFile(path, "w") as f:
        fitted.save_flow(f)
    bounds = np.array(fitted.prior_bounds, float)
    bounds[0] = [bounds[0, 0] / 2 if np.isfinite(bounds[0, 0]) else -1.0,
                 bounds[0, 1] / 2 if np.isfinite(bounds[0, 1]) else 1.0]
    other = problems.make_aspire(prior_bounds=bounds)
    with AspireFile(path, "r") as f, pytest.raises(CheckpointError,
                                                   match="fitted with the bounds"):
        other.load_flow(f)


def test_unreadable_or_dangling_checkpoint_paths_are_refused_up_front(fitted, tmp_path):
    truncated = tmp_path / "trunc.h5"
    fitted.sample_posterior(300, key=38, checkpoint_path=truncated, **RUN)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValidationError, match="truncated or damaged"):
        fitted.sample_posterior(300, key=38, checkpoint_path=truncated, **RUN)
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "missing" / "run.h5")
    with pytest.raises(ValidationError, match="does not exist"):
        fitted.sample_posterior(300, key=38, checkpoint_path=link, **RUN)


def test_damaged_settings_and_inputs_are_named_at_the_boundary(fitted, tmp_path):
    blobs = []
    fitted.sample_posterior(300, key=39, checkpoint_callback=blobs.append, **RUN)
    mid = dict(blobs[1])
    # A dict whose history is damaged.
    with pytest.raises(CheckpointError, match="history is damaged"):
        fitted.sample_posterior(resume_from=dict(mid, history={"beta": 1.0, "x": "a"}))
    # A setting the checkpoint supplies is blamed on the checkpoint...
    config = dict(mid["sampler_config"])
    config["options"] = dict(config["options"], target_efficiency="high")
    with pytest.raises(CheckpointError, match="sampler settings are damaged"):
        fitted.sample_posterior(resume_from=dict(mid, sampler_config=config))
    # ... and one given at the call, on the caller.
    with pytest.raises(ValidationError, match="target_efficiency"):
        fitted.sample_posterior(resume_from=mid, target_efficiency="high")
    # Valid on each side but not together: neither is called damaged.
    config["options"] = dict(mid["sampler_config"]["options"], max_beta_step=0.5)
    with pytest.raises(ValidationError, match=r"given now \(max_iterations=1\) do "
                       r"not fit.*max_beta_step=0.5") as info:
        fitted.sample_posterior(resume_from=dict(mid, sampler_config=config),
                                max_iterations=1)
    assert not isinstance(info.value, CheckpointError)
    # Another program's HDF5 file.
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["strain"] = np.zeros(4)
    with pytest.raises(CheckpointError, match="not written by aspire_jax"):
        fitted.sample_posterior(resume_from=foreign)
    # Flags of auto_checkpoint are bools.
    with pytest.raises(ValidationError, match="resume must be True or False"):
        with fitted.auto_checkpoint(tmp_path / "auto.h5", resume="yes"):
            pass


def test_flow_saved_to_and_loaded_from_a_path(fitted, tmp_path):
    path = tmp_path / "flow.h5"
    fitted.save_flow(path)
    other = _fresh_like(fitted)
    other.flow_params = None
    other.load_flow(path)
    np.testing.assert_array_equal(
        np.asarray(fitted.flow.log_prob(fitted.flow_params, problems.earlier_samples()[:5])),
        np.asarray(other.flow.log_prob(other.flow_params, problems.earlier_samples()[:5])))
    with AspireFile(path, "r") as f, pytest.raises(ValidationError, match="read-only"):
        fitted.save_flow(f)


def test_unfinished_copies_are_never_replaced_and_keep_their_mode(fitted, tmp_path):
    path = tmp_path / "run.h5"
    _stopped_at_iteration_2(fitted, path, 300, 40)
    os.chmod(path, 0o600)
    # First rerun: the 2-iteration run is kept aside.
    _stopped_at_iteration_2(_fresh_like(fitted), path, 300, 41)
    first = tmp_path / "run.unfinished.h5"
    assert oct(os.stat(first).st_mode & 0o777) == oct(0o600)
    kept = read_checkpoint_bytes(first)
    # Second rerun: the older copy stays; the newer run gets its own.
    fitted.sample_posterior(300, key=42, checkpoint_path=path, **RUN)
    assert read_checkpoint_bytes(first) == kept
    assert _iteration_in(tmp_path / "run.unfinished-2.h5") == 2
    assert not list(tmp_path.glob("*.tmp-*"))


def test_resuming_into_another_files_unfinished_run_keeps_that_run(fitted, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    resumed = _stopped_at_iteration_2(fitted, a, 300, 43)
    _stopped_at_iteration_2(_fresh_like(fitted), b, 300, 44)
    b_state = read_checkpoint_bytes(b)
    resumed.sample_posterior(checkpoint_path=b)
    assert read_checkpoint_bytes(tmp_path / "b.unfinished.h5") == b_state
    # Resuming into its own file copies nothing.
    again = _stopped_at_iteration_2(fitted, tmp_path / "c.h5", 300, 45)
    again.sample_posterior()
    assert not (tmp_path / "c.unfinished.h5").exists()


def test_read_only_files_and_suffixless_link_targets_are_refused_up_front(
        fitted, tmp_path, caplog):
    path = tmp_path / "ro.h5"
    resumed = _stopped_at_iteration_2(fitted, path, 300, 46)
    os.chmod(path, 0o444)
    with pytest.raises(ValidationError, match="read-only"):
        fitted.sample_posterior(300, key=46, checkpoint_path=path, **RUN)
    # A resumed run whose file is read-only runs without checkpoints.
    with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
        post = resumed.sample_posterior()
    assert np.isfinite(float(post.log_evidence))
    assert any("cannot checkpoint into the file its flow came from" in r.getMessage()
               for r in caplog.records)
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "job_12345")
    with pytest.raises(ValidationError, match="does not end in .h5"):
        fitted.sample_posterior(300, key=46, checkpoint_path=link, **RUN)


def test_samples_are_not_saved_inside_a_checkpoints_groups(fitted, tmp_path):
    path = tmp_path / "run.h5"
    fitted.sample_posterior(300, key=47, checkpoint_path=path, **RUN)
    samples = fitted.sample_posterior(300, sampler="importance", key=0)
    for inside in ("history/x", "checkpoint/extra", "flow/extra", "./history/x",
                   "/history//x", "posterior/../history"):
        with pytest.raises(ValidationError,
                           match="group of the checkpoint layout|'..' component"):
            samples.save(path, path=inside)
    with h5py.File(path, "a") as f:
        # From inside a layout group, and into a layout group not yet written.
        for group, inside in ((f["history"], "x"), (f["history"], "."),
                              (f, "./sampler_config")):
            with pytest.raises(ValidationError,
                               match="checkpoint layout|not written by Samples.save"):
                samples.save(group, path=inside)
        assert "x" not in f["history"]
    samples.save(path, path="posterior")
    Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                            log_prior=problems.log_prior)


def test_weights_and_history_that_do_not_fit_the_state_are_refused(fitted):
    from aspire_jax.io import state_from_state_dict, state_to_bytes

    blobs = []
    fitted.sample_posterior(300, key=48, checkpoint_callback=blobs.append, **RUN)
    mid = dict(blobs[1])
    state = state_from_state_dict(fitted._last_state,
                                  state_dict_from_bytes(mid["state"], wrap_keys=True))
    shifted = state_to_bytes(state.replace(log_weights=state.log_weights + 1000.0))
    with pytest.raises(CheckpointError, match="do not sum to one"):
        fitted.sample_posterior(resume_from=dict(mid, state=shifted))
    history = dict(mid["history"])
    history["beta"] = np.array([1.0, 2.0, 3.0])[: len(history["beta"])]
    with pytest.raises(CheckpointError, match="history is damaged"):
        fitted.sample_posterior(resume_from=dict(mid, history=history))
    history = dict(mid["history"])
    history["log_evidence"] = np.where(np.arange(len(history["log_evidence"])) == 0,
                                       np.nan, history["log_evidence"])
    with pytest.raises(CheckpointError, match="history is damaged.*not finite"):
        fitted.sample_posterior(resume_from=dict(mid, history=history))
    history = dict(mid["history"])
    history["log_evidence"] = np.asarray(history["log_evidence"]) + np.where(
        np.arange(len(history["log_evidence"])) == 0, 0.5, 0.0)
    with pytest.raises(CheckpointError, match="history is damaged.*running sum"):
        fitted.sample_posterior(resume_from=dict(mid, history=history))
    # Particles and cached densities that no run writes.
    x = np.asarray(state.x).copy()
    x[5] = np.nan
    log_q = np.asarray(state.log_q).copy()
    log_q[7] = np.nan
    for damaged, match in ((state.replace(x=x), "particles with weight"),
                           (state.replace(log_q=log_q), "log_q holding NaN")):
        with pytest.raises(CheckpointError, match=match):
            fitted.sample_posterior(resume_from=dict(mid, state=state_to_bytes(damaged)))
    options = dict(mid["sampler_config"]["options"], bogus_option=1)
    with pytest.raises(CheckpointError, match="sampler_config is damaged.*bogus_option"):
        fitted.sample_posterior(resume_from=dict(
            mid, sampler_config=dict(mid["sampler_config"], options=options)))


def test_a_resume_in_another_precision_is_named(fitted, caplog, tmp_path):
    import jax

    blobs = []
    fitted.sample_posterior(300, key=49, checkpoint_callback=blobs.append, **RUN)
    mid = dict(blobs[1])
    assert mid["sampler_config"]["x64"] == bool(jax.config.jax_enable_x64)
    other = dict(mid["sampler_config"], x64=not jax.config.jax_enable_x64)
    if jax.config.jax_enable_x64:
        # The state's own precision rules, not the recorded flag.
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            fitted.sample_posterior(resume_from=dict(mid, sampler_config=other))
        assert not any("float32" in r.getMessage() for r in caplog.records)
    else:
        # The same run, resumed in 64 bits, goes on in float32.
        with jax.enable_x64(True), caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            post = fitted.sample_posterior(resume_from=mid)
        assert np.isfinite(float(post.log_evidence))
        assert np.asarray(post.x).dtype == np.float32
        assert any("goes on in float32" in r.getMessage() for r in caplog.records)
        caplog.clear()
        # The recorded flag alone changes nothing: the state is float32.
        fitted.sample_posterior(resume_from=dict(mid, sampler_config=other))
        # From a file, before its float64 flow is read (JAX would warn of
        # cutting it down; warnings are errors here).
        path = tmp_path / "run64.h5"
        with jax.enable_x64(True):
            run64 = problems.make_aspire()
            run64.fit(problems.earlier_samples(), **dict(problems.FIT_SETTINGS,
                                                       n_epochs=2))
            with pytest.raises(TemperingError):  # stopped at once, unfinished
                run64.sample_posterior(200, key=1, checkpoint_path=path,
                                       max_iterations=1, **RUN)
            # A float32 state and a float64 flow: refused, naming both.
            with pytest.raises(CheckpointError, match="state is float32 and this "
                               "Aspire's flow float64"):
                run64.sample_posterior(resume_from=mid)
        with pytest.raises(CheckpointError, match="cannot go on in this 32-bit"):
            Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                    log_prior=problems.log_prior)
        # A 64-bit state cannot go on in 32 bits: refused before anything
        # is said of going on.
        with caplog.at_level("WARNING", logger="aspire_jax.aspire"):
            with pytest.raises(CheckpointError, match="cannot go on in this 32-bit"):
                fitted.sample_posterior(resume_from=str(path))
        assert not any("goes on" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointError, match="x64 = 'yes'"):
        fitted.sample_posterior(resume_from=dict(
            mid, sampler_config=dict(other, x64="yes")))


def test_a_newer_file_is_refused_before_any_work(fitted, tmp_path):
    path = tmp_path / "newer.h5"
    with AspireFile(path, "w") as f:
        f.attrs["file_format_version"] = 99
    with pytest.raises(ValidationError, match="format version 99"):
        fitted.sample_posterior(300, key=50, checkpoint_path=path, **RUN)
    with pytest.raises(ValidationError, match="format version 99"):
        problems.make_aspire().fit(problems.earlier_samples(), checkpoint_path=path,
                                   n_epochs=1)
    with pytest.raises(ValidationError, match="format version 99"):
        with fitted.auto_checkpoint(path):
            pass
    folder = tmp_path / "runs.h5"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        Aspire.resume_from_file(folder, log_likelihood=problems.log_likelihood,
                                log_prior=problems.log_prior)
    with pytest.raises(CheckpointError, match="is a directory"):
        fitted.sample_posterior(resume_from=folder)


def test_saving_a_flow_or_settings_never_costs_an_unfinished_run(fitted, tmp_path):
    path = tmp_path / "run.h5"
    _stopped_at_iteration_2(fitted, path, 300, 51)
    state = read_checkpoint_bytes(path)
    other = problems.make_aspire()
    other.fit(problems.earlier_samples(), n_epochs=2, batch_size=256, key=3)
    with AspireFile(path, "a") as f:
        for name in ("checkpoint", "history", "aspire_config", "history/extra",
                     "./checkpoint", "/flow/params", "./history/./extra",
                     "/", "."):
            with pytest.raises(ValidationError, match="group of the checkpoint layout"):
                other.save_flow(f, path=name)
        with pytest.raises(ValidationError, match="group of the checkpoint layout"):
            other.save_config(f, path="checkpoint")
        # Below a group of the layout, as below the root.
        with pytest.raises(ValidationError, match="inside /checkpoint"):
            other.save_flow(f["checkpoint"], path="state")
        with pytest.raises(ValidationError, match="unfinished SMC run"):
            other.save_flow(f["/"], path="./flow")
        # The run's own flow and settings are replaced only by themselves.
        with pytest.raises(ValidationError, match="unfinished SMC run"):
            other.save_flow(f)
        with pytest.raises(ValidationError, match="unfinished SMC run"):
            problems.make_aspire(n_bins=4).save_config(f)
        other.save_config(f)  # the same settings
        fitted.save_flow(f)
        other.save_flow(f, path="another_flow")
    assert read_checkpoint_bytes(path) == state
    # By path, settings are guarded as on an open file, and written back alike.
    with pytest.raises(ValidationError, match="unfinished SMC run"):
        problems.make_aspire(n_bins=4).save_config(path)
    with pytest.raises(ValidationError, match="group of the checkpoint layout"):
        other.save_config(str(path), path="./history")
    other.save_config(path)
    with AspireFile(path, "r") as f, pytest.raises(ValidationError, match="read-only"):
        other.save_config(f, path="mine")
    assert read_checkpoint_bytes(path) == state
    # The resumed instance writes its own settings back.
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    with AspireFile(path, "a") as f:
        resumed.save_config(f)
        resumed.save_flow(f)
        resumed.save_sampler_config(f)
        settings = dict(f["sampler_config"].attrs)
    resumed.save_sampler_config(path)
    with AspireFile(path, "a") as f:
        assert dict(f["sampler_config"].attrs) == settings
        with pytest.raises(ValidationError, match="'..' component"):
            resumed.save_flow(f, path="mine/../flow")
    # By path, the run is kept aside before its flow is replaced, however the
    # group is spelt.
    other.save_flow(path, path="/flow/")
    assert read_checkpoint_bytes(tmp_path / "run.unfinished.h5") == state
    with pytest.raises(ValidationError, match="folder .* does not exist"):
        other.save_flow(tmp_path / "missing" / "flow.h5")
    resumed = Aspire.resume_from_file(tmp_path / "run.unfinished.h5",
                                      log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    assert np.isfinite(float(resumed.sample_posterior().log_evidence))


def test_checkpoint_path_false_leaves_the_resumed_file_alone(fitted, tmp_path):
    path = tmp_path / "run.h5"
    resumed = _stopped_at_iteration_2(fitted, path, 300, 54)
    before = path.read_bytes()
    resumed.sample_posterior(checkpoint_path=False)
    assert path.read_bytes() == before
    with pytest.raises(ValidationError, match="got True"):
        fitted.sample_posterior(300, key=54, checkpoint_path=True, **RUN)


def test_reading_samples_from_a_checkpoint_file_points_to_resuming(fitted, tmp_path):
    from aspire_jax.formats import read_samples

    path = tmp_path / "run.h5"
    done = fitted.sample_posterior(300, key=61, checkpoint_path=path, **RUN)
    with pytest.raises(ValidationError, match="holds a run's checkpoint: "
                       r"Aspire.resume_from_file\(path"):
        read_samples(path)
    # As the message says: the finished run's posterior, with no new evaluations.
    resumed = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                      log_prior=problems.log_prior)
    again = resumed.sample_posterior()
    np.testing.assert_array_equal(np.asarray(done.x), np.asarray(again.x))
    assert float(again.log_evidence) == float(done.log_evidence)


def test_nested_auto_checkpoint_says_which_file_is_written(fitted, tmp_path, caplog):
    outer, inner = tmp_path / "outer.h5", tmp_path / "inner.h5"
    with caplog.at_level("INFO", logger="aspire_jax.aspire"):
        with fitted.auto_checkpoint(outer):
            with fitted.auto_checkpoint(inner):
                fitted.sample_posterior(300, key=62, **RUN)
    assert any("write to" in r.getMessage() and "inner.h5" in r.getMessage()
               for r in caplog.records)
    assert inner.exists() and not outer.exists()
