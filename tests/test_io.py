"""Tests of the checkpoint format and the HDF5 checkpoint file."""

import errno
import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import aspire_jax
from aspire_jax.errors import CheckpointError, ValidationError
from aspire_jax.io import (
    FORMAT_VERSION,
    AspireFile,
    history_from_group,
    history_to_group,
    read_checkpoint_bytes,
    read_json_group,
    state_dict_from_bytes,
    state_from_bytes,
    state_from_state_dict,
    state_to_bytes,
    write_checkpoint_file,
    write_json_group,
)
from aspire_jax.io.checkpoint import HEADER_SIZE, _frame

REPO = Path(aspire_jax.__file__).resolve().parents[1]
POSIX = os.name == "posix"


class KernelParams(NamedTuple):
    cov: jax.Array
    step_size: jax.Array


@struct.dataclass
class State:
    x: jax.Array
    log_likelihood: jax.Array
    beta: jax.Array
    iteration: jax.Array
    n_evaluations: jax.Array
    key: jax.Array
    kernel: KernelParams
    history: tuple
    note: str = "smc"
    missing: object = None
    n_particles: int = struct.field(pytree_node=False, default=0)


def _make_state(n=1000, d=4, seed=0):
    key, kx = jax.random.split(jax.random.key(seed))
    return State(
        x=jax.random.normal(kx, (n, d)),
        log_likelihood=-jnp.arange(n, dtype=jnp.float32),
        beta=jnp.float32(0.375),
        iteration=jnp.int32(7),
        n_evaluations=jnp.int32(123456),
        key=key,
        kernel=KernelParams(jnp.eye(d) * 0.5, jnp.float32(0.1)),
        history=(jnp.zeros(3), np.arange(3, dtype=np.int32)),
        n_particles=n,
    )


@pytest.fixture
def state():
    return _make_state()


@pytest.fixture
def blob(state):
    return state_to_bytes(state)


@pytest.fixture
def no_unpickling(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    import _pickle

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(_pickle, name, forbidden)


def _assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        if isinstance(u, jax.Array) and jax.dtypes.issubdtype(
            u.dtype, jax.dtypes.prng_key
        ):
            assert u.dtype == v.dtype
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        assert type(u) is type(v)
        assert np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# -- state bytes ----------------------------------------------------------------


def test_round_trip_is_exact(state, blob):
    assert blob[:4] == b"ASPJ"
    assert int.from_bytes(blob[4:6], "little") == FORMAT_VERSION
    restored = state_from_bytes(state, blob)
    _assert_trees_equal(restored, state)
    assert restored.n_particles == state.n_particles
    # The restored key continues the same stream.
    np.testing.assert_array_equal(
        jax.random.uniform(restored.key, (4,)), jax.random.uniform(state.key, (4,))
    )
    assert state_to_bytes(restored) == blob


def test_round_trip_against_abstract_template():
    def build(seed):
        key = jax.random.key(seed)
        return {
            "x": jax.random.normal(key, (50, 2)),
            "key": jax.random.split(key)[0],
            "iteration": jnp.int32(3),
            "kernel": KernelParams(jnp.eye(2), jnp.float32(0.2)),
        }

    tree = build(1)
    template = jax.eval_shape(build, 0)
    assert isinstance(template["x"], jax.ShapeDtypeStruct)
    _assert_trees_equal(state_from_bytes(template, state_to_bytes(tree)), tree)


def test_state_dict_without_template(state, blob):
    raw = state_dict_from_bytes(blob)
    assert raw["key"]["__prng_key__"] == "threefry2x32"
    np.testing.assert_array_equal(
        raw["key"]["key_data"], np.asarray(jax.random.key_data(state.key))
    )
    assert raw["iteration"].dtype == np.int32 and int(raw["iteration"]) == 7
    assert set(raw["kernel"]) == {"cov", "step_size"}
    assert set(raw["history"]) == {"0", "1"}
    assert raw["note"] == "smc" and raw["missing"] is None
    wrapped = state_dict_from_bytes(blob, wrap_keys=True)
    assert jax.dtypes.issubdtype(wrapped["key"].dtype, jax.dtypes.prng_key)
    # Either form restores against a template.
    _assert_trees_equal(state_from_state_dict(state, raw), state)
    _assert_trees_equal(state_from_state_dict(state, wrapped), state)


def test_other_key_implementations_round_trip():
    tree = {
        "k": jax.random.key(3, impl="rbg"),
        "ks": jax.random.split(jax.random.key(1)),
    }
    _assert_trees_equal(state_from_bytes(tree, state_to_bytes(tree)), tree)


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda s: s.replace(x=jnp.zeros((2000, 4))),
            "state.x: expected shape (2000, 4), got (1000, 4)",
        ),
        (
            lambda s: s.replace(iteration=jnp.float32(0)),
            "state.iteration: expected dtype float32, got int32",
        ),
        (
            lambda s: s.replace(kernel=KernelParams(jnp.eye(3), jnp.float32(0.1))),
            "state.kernel.cov: expected shape (3, 3), got (4, 4)",
        ),
        (
            lambda s: s.replace(history=(jnp.zeros(3),)),
            "state.history[1]: present in the checkpoint but not in the template",
        ),
        (
            lambda s: s.replace(key=jax.random.split(s.key, 2)),
            "state.key: expected a PRNG key of shape (2,)",
        ),
        (
            lambda s: s.replace(key=jax.random.key(0, impl="rbg")),
            "state.key: expected a PRNG key of shape () and dtype key<rbg>",
        ),
        (lambda s: s.replace(note=3), "state.note: expected a Python int, got a str"),
        (lambda s: s.replace(beta=None), "state.beta: expected None"),
    ],
)
def test_template_mismatch_names_the_path(state, blob, change, expected):
    with pytest.raises(CheckpointError) as info:
        state_from_bytes(change(state), blob)
    assert expected in str(info.value)


@struct.dataclass
class _Extended:
    state: State
    extra: jax.Array


@struct.dataclass
class _Reduced:
    x: jax.Array


def test_missing_and_extra_fields(state):
    blob = state_to_bytes({"state": state})
    with pytest.raises(CheckpointError, match=r"state\.extra: missing from the"):
        state_from_bytes(_Extended(state, jnp.zeros(2)), blob)
    with pytest.raises(CheckpointError) as info:
        state_from_bytes(_Reduced(jnp.zeros(2)), state_to_bytes(state))
    message = str(info.value)
    assert "state.beta: present in the checkpoint but not in the template" in message
    assert "state.x: expected shape (2,), got (1000, 4)" in message


def test_unsupported_leaf_is_rejected():
    with pytest.raises(ValidationError, match=r"state\.fn: leaves of type function"):
        state_to_bytes({"fn": lambda: 0})
    with pytest.raises(ValidationError, match=r"state\.a: numpy arrays of dtype obj"):
        state_to_bytes({"a": np.array([None, 1])})


def _flip(data: bytes, byte: int, bit: int) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


def test_truncated_blobs_are_rejected(state, blob, no_unpickling):
    for cut in (0, 3, 10, HEADER_SIZE - 1, HEADER_SIZE, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CheckpointError, match="truncated"):
            state_from_bytes(state, blob[:cut])
    with pytest.raises(CheckpointError, match="extra bytes"):
        state_from_bytes(state, blob + b"\0")


def test_every_flipped_bit_is_detected(state, blob, no_unpickling):
    rng = np.random.default_rng(0)
    header_bits = [(i, b) for i in range(HEADER_SIZE) for b in range(8)]
    payload_bits = [
        (int(i), int(b))
        for i, b in zip(
            rng.integers(HEADER_SIZE, len(blob), 64), rng.integers(0, 8, 64)
        )
    ]
    for byte, bit in header_bits + payload_bits:
        with pytest.raises(CheckpointError):
            state_from_bytes(state, _flip(blob, byte, bit))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        state_dict_from_bytes(_flip(blob, len(blob) - 5, 2))


def test_foreign_bytes_are_rejected(state, no_unpickling):
    rng = np.random.default_rng(1)
    for data in (rng.bytes(200), b"ASPJ" + rng.bytes(100), b"", b"{}" * 40):
        with pytest.raises(CheckpointError):
            state_from_bytes(state, data)
    with pytest.raises(CheckpointError, match="must be bytes; got str"):
        state_from_bytes(state, "ASPJ")
    pickled = pickle.dumps({"x": np.zeros(3)}, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="pickle; aspire_jax never unpickles"):
        state_from_bytes(state, pickled)
    with pytest.raises(CheckpointError, match="HDF5 file"):
        state_dict_from_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))


def test_newer_version_and_valid_checksum_over_garbage(state):
    blob = bytearray(_frame(b"\xc1 not msgpack"))
    with pytest.raises(CheckpointError, match="not valid msgpack"):
        state_dict_from_bytes(bytes(blob))
    version = (FORMAT_VERSION + 1).to_bytes(2, "little")
    newer = bytes(blob[:4]) + version + bytes(blob[6:])
    with pytest.raises(CheckpointError, match="newer than the version 1.*checksum"):
        state_from_bytes(state, newer)
    payload = b"\x80"
    prefix = b"ASPJ" + version + bytes(2) + len(payload).to_bytes(8, "little")
    crc = zlib.crc32(prefix + payload).to_bytes(4, "little")
    with pytest.raises(CheckpointError) as info:
        state_from_bytes(state, prefix + crc + payload)
    assert str(info.value).endswith("this aspire_jax reads; upgrade aspire_jax")
    # Garbage behind the magic reads as a huge version: the length names it.
    with pytest.raises(CheckpointError, match="header is corrupt.*announces"):
        state_from_bytes(state, b"ASPJ" * 10)


# -- AspireFile -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["run.txt", "run.pkl", "run", "run.h5.bak"])
def test_aspire_file_requires_hdf5_suffix(tmp_path, name):
    with pytest.raises(ValidationError, match=r"\.h5 or \.hdf5"):
        AspireFile(tmp_path / name, "w")
    assert not (tmp_path / name).exists()
    with pytest.raises(ValueError):
        read_checkpoint_bytes(tmp_path / name)
    with pytest.raises(ValidationError):
        write_checkpoint_file(tmp_path / name, state_bytes=None)


def test_aspire_file_writes_version_attributes(tmp_path):
    path = tmp_path / "run.HDF5"
    with AspireFile(path, "w") as f:
        f.create_group("flow")
    with AspireFile(path) as f:
        assert f.attrs["aspire_jax_version"] == aspire_jax.__version__
        assert f.attrs["file_format_version"] == FORMAT_VERSION
    with pytest.raises(ValidationError, match="mode must be one of"):
        AspireFile(path, "rw")


def test_aspire_file_stamps_only_files_it_creates_or_wrote(tmp_path):
    stamp = {"aspire_jax_version", "file_format_version"}
    foreign = tmp_path / "mine.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    for mode in ("a", "r+"):
        with AspireFile(foreign, mode) as f:
            f.create_group(f"added_{mode.strip('+')}")
        with h5py.File(foreign, "r") as f:
            assert not stamp & set(f.attrs) and "data" in f
    new = tmp_path / "new.h5"
    with AspireFile(new, "a") as f:
        f.create_group("flow")
    with h5py.File(new, "r+") as f:
        assert stamp <= set(f.attrs)
        f.attrs["aspire_jax_version"] = "0.0.1"
    with AspireFile(new, "a"):
        pass
    with h5py.File(new, "r") as f:  # a file aspire_jax wrote is stamped anew
        assert f.attrs["aspire_jax_version"] == aspire_jax.__version__


def test_aspire_file_rejects_missing_foreign_and_truncated_files(tmp_path, blob):
    with pytest.raises(CheckpointError, match="no such file"):
        AspireFile(tmp_path / "absent.h5")
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint_bytes(tmp_path / "absent.h5")
    foreign = tmp_path / "notes.h5"
    foreign.write_text("just some text\n" * 100)
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        AspireFile(foreign)
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        read_checkpoint_bytes(foreign)
    path = tmp_path / "run.h5"
    write_checkpoint_file(path, state_bytes=blob)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 100, 600, 8):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError):
            read_checkpoint_bytes(path)


# -- checkpoint files -----------------------------------------------------------


def _config_writer(mapping):
    return lambda group: write_json_group(group, ".", mapping)


def test_checkpoint_file_layout(tmp_path, blob):
    path = tmp_path / "run.h5"
    write_checkpoint_file(
        path,
        state_bytes=blob,
        groups={"aspire_config": _config_writer({"sampler_type": "smc"})},
    )
    with AspireFile(path) as f:
        assert f["checkpoint"]["state"][...].tobytes() == blob
        ds = f["checkpoint/state"]
        assert ds.dtype == np.uint8 and ds.ndim == 1
        assert ds.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["aspire_jax_version"] == aspire_jax.__version__
        assert read_json_group(f, "aspire_config") == {"sampler_type": "smc"}
    assert read_checkpoint_bytes(path) == blob
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]


def test_checkpoint_file_keeps_other_groups(tmp_path, state, blob):
    path = tmp_path / "run.h5"
    write_checkpoint_file(
        path,
        state_bytes=blob,
        groups={
            "aspire_config": _config_writer({"n": 1}),
            "flow": lambda g: g.create_dataset("params", data=np.arange(5)),
            "results/samples": lambda g: g.attrs.__setitem__("tag", "a"),
        },
    )
    with AspireFile(path, "a") as f:
        f["checkpoint"].attrs["note"] = "kept"
        f["results"].create_dataset("other", data=[1.0, 2.0])
    new = state_to_bytes(state.replace(iteration=jnp.int32(8)))
    write_checkpoint_file(path, state_bytes=new, groups={"sampler_config": {"m": 2}})
    with AspireFile(path) as f:
        assert read_json_group(f, "aspire_config") == {"n": 1}
        assert read_json_group(f, "sampler_config") == {"m": 2}
        np.testing.assert_array_equal(f["flow/params"][()], np.arange(5))
        assert f["results/samples"].attrs["tag"] == "a"
        np.testing.assert_array_equal(f["results/other"][()], [1.0, 2.0])
        assert f["checkpoint"].attrs["note"] == "kept"
    assert int(state_from_bytes(state, read_checkpoint_bytes(path)).iteration) == 8
    # Replacing one nested group leaves its siblings alone.
    write_checkpoint_file(
        path, state_bytes=None, groups={"results/samples": lambda g: None}
    )
    with AspireFile(path) as f:
        assert "tag" not in f["results/samples"].attrs
        assert "other" in f["results"]
    assert read_checkpoint_bytes(path) == new
    write_checkpoint_file(path, state_bytes=blob, keep_existing=False)
    with AspireFile(path) as f:
        assert sorted(f) == ["checkpoint"]


def test_read_checkpoint_bytes_without_checkpoint(tmp_path):
    path = tmp_path / "run.h5"
    write_checkpoint_file(
        path, state_bytes=None, groups={"aspire_config": _config_writer({"a": 1})}
    )
    assert read_checkpoint_bytes(path) is None


def test_planted_pickle_is_rejected(tmp_path, no_unpickling):
    path = tmp_path / "run.h5"
    payload = pickle.dumps({"harmless": [1, 2, 3]})
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "checkpoint/state", data=np.frombuffer(payload, dtype=np.uint8)
        )
        ds.attrs["format_version"] = FORMAT_VERSION
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint_bytes(path)
    with AspireFile(path) as f:
        raw = f["checkpoint"]["state"][...].tobytes()
    with pytest.raises(CheckpointError, match="pickle"):
        state_dict_from_bytes(raw)


def test_wrong_state_dataset_is_rejected(tmp_path, blob):
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("checkpoint/state", data=np.zeros(10))
    with pytest.raises(CheckpointError, match="1-D uint8 dataset"):
        read_checkpoint_bytes(path)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("checkpoint/state", data=np.frombuffer(blob, np.uint8))
        ds.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match="upgrade aspire_jax"):
        read_checkpoint_bytes(path)


def test_write_validates_inputs(tmp_path, blob):
    path = tmp_path / "run.h5"
    write_checkpoint_file(path, state_bytes=blob)
    with pytest.raises(CheckpointError, match="not an aspire_jax checkpoint"):
        write_checkpoint_file(path, state_bytes=b"x" * 100)
    with pytest.raises(ValidationError, match="would replace the state dataset"):
        write_checkpoint_file(path, state_bytes=blob, groups={"checkpoint": print})
    with pytest.raises(ValidationError, match=r"groups\['flow'\] must be a callable"):
        write_checkpoint_file(path, state_bytes=blob, groups={"flow": 3})
    with pytest.raises(ValidationError, match=r"aspire_config\.fn: a object cannot"):
        write_checkpoint_file(
            path, state_bytes=blob, groups={"aspire_config": {"fn": object()}}
        )
    assert read_checkpoint_bytes(path) == blob
    # Writing checks the header only; the checksum is verified on every read.
    write_checkpoint_file(path, state_bytes=_flip(blob, len(blob) - 1, 0))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint_bytes(path)


def test_failed_write_leaves_previous_file(tmp_path, blob, state):
    path = tmp_path / "run.h5"
    write_checkpoint_file(path, state_bytes=blob)

    def broken(group):
        raise TypeError("bad group writer")

    new = state_to_bytes(state.replace(iteration=jnp.int32(99)))
    with pytest.raises(CheckpointError, match="state is still in memory"):
        write_checkpoint_file(path, state_bytes=new, groups={"flow": broken})
    assert read_checkpoint_bytes(path) == blob
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]


def test_write_retries_then_reports(tmp_path, blob, monkeypatch):
    path = tmp_path / "run.h5"
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) < 3:
            raise OSError("device busy")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    write_checkpoint_file(path, state_bytes=blob, backoff_s=0.0)
    assert len(calls) == 3 and read_checkpoint_bytes(path) == blob

    def failing(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(CheckpointError, match="disk full.*still in memory"):
        write_checkpoint_file(path, state_bytes=blob, retries=2, backoff_s=0.0)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]


def test_existing_foreign_file_is_not_silently_dropped(tmp_path, blob):
    path = tmp_path / "run.h5"
    path.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(CheckpointError, match="keep_existing=False"):
        write_checkpoint_file(path, state_bytes=blob)
    write_checkpoint_file(path, state_bytes=blob, keep_existing=False)
    assert read_checkpoint_bytes(path) == blob


@pytest.mark.skipif(not POSIX, reason="stale temporary files are found by pid on POSIX")
def test_stale_temporary_files_are_removed(tmp_path, blob):
    from aspire_jax.io.hdf5 import _temp_prefix

    path = tmp_path / "run.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{_temp_prefix(path)}{dead.pid}-deadbeef.h5"
    stale.write_bytes(b"partial")
    alive = tmp_path / f"{_temp_prefix(path)}{os.getppid()}-cafef00d.h5"
    alive.write_bytes(b"someone else's write in progress")
    write_checkpoint_file(path, state_bytes=blob)
    assert not stale.exists() and alive.exists()


@pytest.mark.skipif(not POSIX, reason="host and pid in temporary names are POSIX's")
def test_stale_temporary_files_of_other_hosts_go_after_a_day(tmp_path, blob):
    from aspire_jax.io.hdf5 import _temp_prefix

    path = tmp_path / "run.h5"
    old = tmp_path / ".run.h5.tmp-othernode-12345-bbbb.h5"
    fresh = tmp_path / ".run.h5.tmp-othernode-12346-cccc.h5"
    reused = tmp_path / f"{_temp_prefix(path)}{os.getppid()}-dddd.h5"  # pid alive
    unrelated = tmp_path / ".run.h5.tmp-mine.txt"
    for p in (old, fresh, reused, unrelated):
        p.write_bytes(b"partial")
    two_days_ago = os.stat(old).st_mtime - 2 * 86400
    for p in (old, reused, unrelated):
        os.utime(p, (two_days_ago, two_days_ago))
    write_checkpoint_file(path, state_bytes=blob)
    assert not old.exists() and not reused.exists()
    assert fresh.exists() and unrelated.exists()


class _FullDisk:
    """os.write that writes part of the first piece it is given, then fails
    as a full disk does, for every file written."""

    def __init__(self):
        self.real, self.calls = os.write, 0

    def __call__(self, fd, data):
        if fd in (0, 1, 2):
            return self.real(fd, data)
        self.calls += 1
        if self.calls % 2:
            return self.real(fd, bytes(data[: max(1, len(data) // 2)]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_the_previous_file(tmp_path, blob, state, monkeypatch):
    path = tmp_path / "run.h5"
    write_checkpoint_file(path, state_bytes=blob, groups={"meta": {"n": 1}})
    before = path.read_bytes()
    new = state_to_bytes(state.replace(iteration=jnp.int32(99)))
    full = _FullDisk()
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(CheckpointError, match="No space left.*previous file is "
                                              "unchanged"):
        write_checkpoint_file(path, state_bytes=new, groups={"meta": {"n": 2}},
                              retries=2, backoff_s=0.0)
    monkeypatch.undo()
    assert full.calls == 6  # a partial write and the failure, in each of 3 attempts
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]
    # The same process writes again once there is room.
    write_checkpoint_file(path, state_bytes=new, groups={"meta": {"n": 2}})
    assert read_checkpoint_bytes(path) == new


_SIZE_LIMIT_DRIVER = textwrap.dedent(
    """
    import os, resource, sys
    import numpy as np
    from aspire_jax.errors import CheckpointError
    from aspire_jax.io import (read_checkpoint_bytes, state_to_bytes,
                               write_checkpoint_file)

    path = sys.argv[1]
    small = state_to_bytes({"x": np.zeros(1000)})
    write_checkpoint_file(path, state_bytes=small)
    # As `ulimit -f`: a write past 200 kB fails (Python ignores SIGXFSZ).
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    big = state_to_bytes({"x": np.arange(100_000.0)})
    for _ in range(2):
        try:
            write_checkpoint_file(path, state_bytes=big, backoff_s=0.0)
        except CheckpointError as exc:
            print("refused:", exc)
        else:
            print("written")
    assert read_checkpoint_bytes(path) == small
    print(sorted(os.listdir(os.path.dirname(path))))
    """
)


@pytest.mark.skipif(not POSIX, reason="needs RLIMIT_FSIZE")
def test_a_file_size_limit_raises_checkpoint_error_not_a_crash(tmp_path):
    path = tmp_path / "run.h5"
    proc = subprocess.run(
        [sys.executable, "-c", _SIZE_LIMIT_DRIVER, str(path)],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stdout
    for line in lines[:2]:
        assert line.startswith("refused:") and "File too large" in line, line
        assert "previous file is unchanged" in line
    assert lines[2] == "['run.h5']"


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_permissions_are_kept_and_a_read_only_file_is_refused(tmp_path, blob, state):
    path = tmp_path / "run.h5"
    write_checkpoint_file(path, state_bytes=blob)
    os.chmod(path, 0o640)
    new = state_to_bytes(state.replace(iteration=jnp.int32(99)))
    write_checkpoint_file(path, state_bytes=new)
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert read_checkpoint_bytes(path) == new
    os.chmod(path, 0o444)
    try:
        with pytest.raises(CheckpointError, match=r"read-only \(mode 0o444\).*chmod"):
            write_checkpoint_file(path, state_bytes=blob)
        assert read_checkpoint_bytes(path) == new
        assert (os.stat(path).st_mode & 0o777) == 0o444
        assert sorted(os.listdir(tmp_path)) == ["run.h5"]
    finally:
        os.chmod(path, 0o644)


# -- JSON config and history ----------------------------------------------------


def _module_level_function(x):
    return x


def test_json_group_round_trip(tmp_path):
    config = {
        "sampler_type": "smc",
        "n_particles": np.int64(2000),
        "target_efficiency": (0.5, 0.9),
        "bounds": {"mass": [1.0, 2.0], "phase": None},
        "flag": True,
        "cov": jnp.eye(2),
        "log_likelihood": _module_level_function,
        "big": list(range(20_000)),
    }
    path = tmp_path / "run.h5"
    with AspireFile(path, "w") as f:
        write_json_group(f, "aspire_config", config)
        write_json_group(f, "aspire_config", config)  # replaces the group
    with AspireFile(path) as f:
        out = read_json_group(f, "aspire_config")
        assert list(out) == list(config)
        assert isinstance(f["aspire_config"]["big"], h5py.Dataset)
        assert json.loads(f["aspire_config"].attrs["n_particles"]) == 2000
    assert out["n_particles"] == 2000
    assert out["target_efficiency"] == [0.5, 0.9]
    assert out["bounds"] == {"mass": [1.0, 2.0], "phase": None}
    assert out["cov"] == [[1.0, 0.0], [0.0, 1.0]]
    assert out["log_likelihood"] == f"{__name__}:_module_level_function"
    assert out["big"] == list(range(20_000))


def test_json_group_errors(tmp_path):
    path = tmp_path / "run.h5"
    with AspireFile(path, "w") as f:
        with pytest.raises(ValidationError, match=r"cfg\.opt: a object cannot"):
            write_json_group(f, "cfg", {"opt": object()})
        with pytest.raises(ValidationError, match="keys must be strings; got 1"):
            write_json_group(f, "cfg", {"opt": {1: 2}})
        assert "cfg" not in f  # nothing is written when encoding fails
        f.create_group("raw").attrs["v"] = "{not json"
        with pytest.raises(CheckpointError, match="not JSON"):
            read_json_group(f, "raw")
        with pytest.raises(CheckpointError, match="no group 'absent'"):
            read_json_group(f, "absent")


class _Info(NamedTuple):
    beta: jax.Array
    ess: jax.Array
    accepted: jax.Array


def test_history_round_trip(tmp_path):
    max_steps = 10
    info = _Info(
        beta=jnp.linspace(0.0, 1.0, max_steps),
        ess=jnp.arange(max_steps, dtype=jnp.float32),
        accepted=jnp.ones((max_steps, 3), dtype=jnp.int32),
    )
    path = tmp_path / "run.h5"
    with AspireFile(path, "w") as f:
        history = {"smc": info, "wall_s": np.arange(6.0)}
        history_to_group(f, "history", history, n_steps=6)
        history_to_group(f, "full", info)
    with AspireFile(path) as f:
        trimmed = history_from_group(f, "history")
        full = history_from_group(f, "full")
        assert f["history"].attrs["n_steps"] == 6
    np.testing.assert_array_equal(trimmed["smc"]["beta"], np.asarray(info.beta[:6]))
    assert trimmed["smc"]["accepted"].dtype == np.int32
    assert trimmed["smc"]["accepted"].shape == (6, 3)
    np.testing.assert_array_equal(trimmed["wall_s"], np.arange(6.0))
    for name in _Info._fields:
        np.testing.assert_array_equal(full[name], np.asarray(getattr(info, name)))
    with AspireFile(path, "a") as f:
        with pytest.raises(ValidationError, match="numeric arrays"):
            history_to_group(f, "bad", {"name": np.array(["a"])})
        with pytest.raises(ValidationError, match="n_steps must be"):
            history_to_group(f, "bad", {"a": np.zeros(3)}, n_steps=-1)


# -- crash safety ---------------------------------------------------------------

_KILL_DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import h5py
    import numpy as np
    from aspire_jax.io import (
        read_checkpoint_bytes, state_dict_from_bytes, state_to_bytes,
        write_checkpoint_file,
    )

    path, n_kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    directory = os.path.dirname(path)

    def size(i):
        return 20_000 * (1 + i % 8)

    def write(i):
        state = {
            "i": i,
            "x": np.full((size(i), 4), i, dtype=np.float32),
            "w": np.arange(size(i), dtype=np.float64),
        }
        write_checkpoint_file(
            path,
            state_bytes=state_to_bytes(state),
            groups={"meta": lambda g: g.attrs.__setitem__("i", i)},
        )

    def writer(start):
        i = start
        while True:
            write(i)
            i += 1

    def check():
        if not os.path.exists(path):
            return None
        state = state_dict_from_bytes(read_checkpoint_bytes(path))
        i = int(state["i"])
        assert state["x"].shape == (size(i), 4) and bool((state["x"] == i).all())
        assert state["w"].shape == (size(i),)
        with h5py.File(path, "r") as f:
            assert int(f["meta"].attrs["i"]) == i, "groups from different writes"
        return i

    # At least n_kills kills, and more (up to 6 times as many) until one has
    # landed inside a write: the temporary file exists only while the built
    # file is written out, a short window on a fast disk.
    results, mid_write, k = [], 0, 0
    while k < n_kills or (mid_write == 0 and k < 6 * n_kills):
        pid = os.fork()
        if pid == 0:
            # A slower fsync widens the window in which the temporary file
            # exists (the order of the steps is unchanged), so that kills
            # land inside writes on a loaded machine too.
            real_fsync = os.fsync
            os.fsync = lambda fd: (time.sleep(0.005), real_fsync(fd))[1]
            try:
                writer(1000 * k)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        temps = [n for n in os.listdir(directory) if n != os.path.basename(path)]
        mid_write += bool(temps)
        results.append(check())
        k += 1
    write(10**6)
    leftover = [n for n in os.listdir(directory) if n != os.path.basename(path)]
    print(json.dumps({"results": results, "mid_write": mid_write,
                      "leftover": leftover, "final": check()}))
    """
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.skipif(not POSIX, reason="needs os.fork and SIGKILL")
def test_sigkill_at_any_instant_leaves_a_complete_file(tmp_path):
    path = tmp_path / "run.h5"
    n_kills = 10
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_DRIVER, str(path), str(n_kills), "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert n_kills <= len(results) <= 6 * n_kills
    # Each check saw a complete state: either the killed writer's last finished
    # write or, if it finished none, the file left by an earlier writer.
    seen = [r for r in results if r is not None]
    assert seen == sorted(seen)
    assert any(r is not None and r >= 1000 * k for k, r in enumerate(results))
    # Most kills land inside a write; at least one must, or the test proved nothing.
    assert report["mid_write"] >= 1
    assert report["final"] == 10**6
    assert report["leftover"] == []


_READER = textwrap.dedent(
    """
    import hashlib, sys
    import h5py
    with h5py.File(sys.argv[1], "r") as f:
        ds = f["checkpoint/state"]
        print("ready", flush=True)
        sys.stdin.readline()
        data = ds[...].tobytes()
        print(hashlib.sha256(data).hexdigest(), int(f["meta"].attrs["i"]), flush=True)
    """
)


@pytest.mark.skipif(not POSIX, reason="POSIX rename semantics")
def test_reader_keeps_its_view_while_file_is_replaced(tmp_path):
    path = tmp_path / "run.h5"
    old = state_to_bytes({"x": np.arange(1000.0)})
    new = state_to_bytes({"x": np.arange(5000.0)})
    write_checkpoint_file(
        path, state_bytes=old, groups={"meta": lambda g: g.attrs.create("i", 1)}
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        write_checkpoint_file(
            path, state_bytes=new, groups={"meta": lambda g: g.attrs.create("i", 2)}
        )
        assert read_checkpoint_bytes(path) == new
        out, err = reader.communicate("go\n", timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    digest, meta = out.split()
    assert digest == hashlib.sha256(old).hexdigest() and int(meta) == 1
    with AspireFile(path) as f:
        assert int(f["meta"].attrs["i"]) == 2
