"""Time and size of writing an SMC-sized checkpoint.

Compares the aspire_jax checkpoint (framed msgpack state written atomically
with ``write_checkpoint_file``: temporary file, fsync, rename) with a baseline
that pickles a dict of numpy arrays and stores the bytes as a uint8 dataset
in an HDF5 file rewritten in place. The baseline only writes pickles; nothing
here ever loads one.

Usage::

    python benchmarks/bench_checkpoint.py [--n-particles 100000] [--dims 15]
"""

import argparse
import os
import pickle
import statistics
import tempfile
import time

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from aspire_jax.io import (
    read_checkpoint_bytes,
    state_from_bytes,
    state_to_bytes,
    write_checkpoint_file,
)

__all__ = ["main"]


def _make_state(n: int, d: int) -> dict:
    key, kx, kl = jax.random.split(jax.random.key(0), 3)
    logs = jax.random.normal(kl, (4, n))
    return {
        "x": jax.random.normal(kx, (n, d)),
        "log_likelihood": logs[0],
        "log_prior": logs[1],
        "log_q": logs[2],
        "log_weights": logs[3],
        "beta": jnp.float32(0.5),
        "iteration": jnp.int32(12),
        "key": key,
    }


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pickle_baseline(path: str, state: dict, fsync: bool) -> None:
    arrays = {
        k: np.asarray(jax.random.key_data(v) if k == "key" else v)
        for k, v in state.items()
    }
    blob = pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL)
    with h5py.File(path, "a") as f:
        if "checkpoint/state" in f:
            del f["checkpoint/state"]
        f.create_dataset("checkpoint/state", data=np.frombuffer(blob, np.uint8))
    if fsync:
        fd = os.open(path, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None, help="directory for the files")
    args = parser.parse_args(argv)

    state = jax.block_until_ready(_make_state(args.n_particles, args.dims))
    raw_mb = sum(
        np.asarray(jax.random.key_data(v) if k == "key" else v).nbytes
        for k, v in state.items()
    ) / 1e6
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ours = os.path.join(tmp, "aspire.h5")
        base = os.path.join(tmp, "pickle.h5")
        base_sync = os.path.join(tmp, "pickle_fsync.h5")
        blob = state_to_bytes(state)
        t_ser = _timed(lambda: state_to_bytes(state), args.repeats)
        t_write = _timed(
            lambda: write_checkpoint_file(ours, state_bytes=blob), args.repeats
        )
        t_ours = _timed(
            lambda: write_checkpoint_file(ours, state_bytes=state_to_bytes(state)),
            args.repeats,
        )
        t_read = _timed(
            lambda: jax.block_until_ready(
                state_from_bytes(state, read_checkpoint_bytes(ours))
            ),
            args.repeats,
        )
        t_base = _timed(lambda: _pickle_baseline(base, state, False), args.repeats)
        t_sync = _timed(lambda: _pickle_baseline(base_sync, state, True), args.repeats)
        rows = [
            ("aspire_jax: state_to_bytes only", t_ser, None),
            ("aspire_jax: write_checkpoint_file only (atomic, fsync)", t_write, ours),
            ("aspire_jax: serialise + atomic write", t_ours, ours),
            ("aspire_jax: read + restore against template", t_read, None),
            ("baseline: pickle in HDF5, in place", t_base, base),
            ("baseline: pickle in HDF5, in place + fsync", t_sync, base_sync),
        ]
        print(
            f"State: {args.n_particles} particles x {args.dims} dims, float32, "
            f"{raw_mb:.2f} MB of arrays; state blob {len(blob) / 1e6:.2f} MB; "
            f"median of {args.repeats} runs.\n"
        )
        print("| operation | time (ms) | file size (MB) |")
        print("| --- | ---: | ---: |")
        for name, seconds, path in rows:
            size = f"{os.path.getsize(path) / 1e6:.2f}" if path else "-"
            print(f"| {name} | {seconds * 1e3:.1f} | {size} |")


if __name__ == "__main__":
    main()
