"""Checkpoint state as framed msgpack bytes, restored against a template.

A checkpoint blob is a 20-byte header followed by a msgpack payload written by
``flax.serialization``:

====== ===== ================================================================
offset bytes field
====== ===== ================================================================
0      4     magic ``b"ASPJ"``
4      2     format version (little-endian unsigned), :data:`FORMAT_VERSION`
6      2     reserved, zero
8      8     payload length in bytes (little-endian unsigned)
16     4     CRC-32 (zlib) of bytes 0-15 followed by the payload
====== ===== ================================================================

The checksum covers the header fields as well as the payload, so a flipped bit
anywhere in the blob is detected (CRC-32 catches every burst of up to 32 bits
and misses random damage with probability 2**-32), and the length field tells
a truncated blob from a corrupted one. CRC-32 runs at memory speed, where a
cryptographic hash would cost more than the serialisation itself; it guards
against accidents, not against a forger, who could equally forge a hash.

The payload is the pytree's state dict (as produced by
``flax.serialization.to_state_dict``) with every leaf converted to numpy. A
typed PRNG key leaf is stored as ``{"__prng_key__": impl_name, "key_data":
uint32 array}`` because msgpack cannot hold key dtypes; restoring wraps it
back with ``jax.random.wrap_key_data``.

Nothing here unpickles: msgpack decodes only primitive types, and the array
extension of ``flax.serialization`` rebuilds arrays with ``numpy.frombuffer``,
which refuses object dtypes.
"""

import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from aspire_jax.errors import CheckpointError, ValidationError

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "state_to_bytes",
    "state_from_bytes",
    "state_dict_from_bytes",
    "state_from_state_dict",
    "check_state_bytes",
]

FORMAT_VERSION = 1
MAGIC = b"ASPJ"
_HEADER = struct.Struct("<4sHHQI")
HEADER_SIZE = _HEADER.size
_KEY_TAG = "__prng_key__"
_KEY_DATA = "key_data"
_ROOT = "state"
_MAX_LISTED = 12


def _checksum(prefix, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(prefix))


def _frame(payload: bytes) -> bytes:
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), 0)[:16]
    return b"".join(
        (prefix, struct.pack("<I", _checksum(prefix, payload)), payload)
    )


def _describe_foreign(head: bytes) -> str:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (
            "it looks like a Python pickle; aspire_jax never unpickles data. "
            "Write the checkpoint again with aspire_jax"
        )
    if head.startswith(b"\x89HDF"):
        return (
            "it is a whole HDF5 file, not the state bytes; read the state with "
            "aspire_jax.io.read_checkpoint_bytes(path)"
        )
    return f"it starts with {head[:8]!r} instead of the aspire_jax magic {MAGIC!r}"


def check_state_bytes(data, *, verify_checksum: bool = True) -> memoryview:
    """Check the header and checksum of a checkpoint blob.

    Parameters
    ----------
    data : bytes-like
        A blob produced by :func:`state_to_bytes`.
    verify_checksum : bool
        If False, check only the header and length (no pass over the payload).

    Returns
    -------
    memoryview
        The msgpack payload, without copying.

    Raises
    ------
    CheckpointError
        If the blob is not bytes, is foreign (bad magic, e.g. a pickle), comes
        from a newer format version, is truncated, or fails its checksum.
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise CheckpointError(
            f"checkpoint data must be bytes; got {type(data).__name__}"
        ) from exc
    n = len(view)
    if n < HEADER_SIZE:
        head = bytes(view[:8])
        if n >= 4 and head[:4] != MAGIC:
            raise CheckpointError(
                f"not an aspire_jax checkpoint: {_describe_foreign(head)}"
            )
        raise CheckpointError(
            f"checkpoint blob is {n} bytes, shorter than the {HEADER_SIZE}-byte "
            "aspire_jax header: it is truncated or not a checkpoint"
        )
    magic, version, reserved, length, crc = _HEADER.unpack(view[:HEADER_SIZE])
    if magic != MAGIC:
        raise CheckpointError(
            f"not an aspire_jax checkpoint: {_describe_foreign(bytes(view[:8]))}"
        )
    payload = view[HEADER_SIZE:]
    if version > FORMAT_VERSION and len(payload) != length:
        # A newer format keeps the magic and the length where they are; a blob
        # whose length does not match is damaged whatever its version field.
        raise CheckpointError(
            f"checkpoint header is corrupt: it announces format version {version} "
            f"and {length} payload bytes, and {len(payload)} are present; the blob "
            "was damaged or is not a checkpoint"
        )
    if version > FORMAT_VERSION:
        intact = _checksum(view[:16], payload) == crc
        raise CheckpointError(
            f"checkpoint format version {version} is newer than the version "
            f"{FORMAT_VERSION} this aspire_jax reads; upgrade aspire_jax"
            + ("" if intact else " (or restore an intact copy: the checksum fails)")
        )
    if version < 1 or reserved != 0:
        raise CheckpointError(
            f"checkpoint header is corrupt (version {version}, reserved field "
            f"{reserved}); the blob was damaged after writing"
        )
    if len(payload) != length:
        kind = "truncated" if len(payload) < length else "followed by extra bytes"
        raise CheckpointError(
            f"checkpoint header announces {length} payload bytes but "
            f"{len(payload)} are present: the blob is {kind}; restore it from an "
            "intact copy"
        )
    if verify_checksum and _checksum(view[:16], payload) != crc:
        raise CheckpointError(
            "checkpoint checksum mismatch: the bytes were corrupted after writing; "
            "restore them from an intact copy"
        )
    return payload


def _is_key_dtype(dtype) -> bool:
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _encode_leaf(leaf, path: str):
    if leaf is None or isinstance(leaf, (bool, int, float, str, np.generic)):
        return leaf
    if isinstance(leaf, jax.Array):
        if _is_key_dtype(leaf.dtype):
            return {
                _KEY_TAG: str(jax.random.key_impl(leaf)),
                _KEY_DATA: np.asarray(jax.random.key_data(leaf)),
            }
        return np.asarray(leaf)
    if isinstance(leaf, np.ndarray):
        if leaf.dtype.hasobject or leaf.dtype.fields is not None:
            raise ValidationError(
                f"{path}: numpy arrays of dtype {leaf.dtype} cannot be stored in "
                "a checkpoint; use numeric arrays"
            )
        return leaf
    raise ValidationError(
        f"{path}: leaves of type {type(leaf).__name__} cannot be stored in a "
        "checkpoint; use arrays, Python scalars, strings or None (mark other "
        "fields struct.field(pytree_node=False))"
    )


def _encode(node, path: str):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not isinstance(k, str):
                raise ValidationError(
                    f"{path}: dict keys must be strings to be stored; got {k!r}"
                )
            out[k] = _encode(v, f"{path}.{k}")
        return out
    return _encode_leaf(node, path)


def state_to_bytes(tree) -> bytes:
    """Serialise a state pytree to framed msgpack bytes.

    Parameters
    ----------
    tree : pytree
        A ``flax.struct.dataclass``, NamedTuple, dict, list or tuple whose
        leaves are arrays (typed PRNG keys included), Python scalars, strings
        or None.

    Returns
    -------
    bytes
        Header plus msgpack payload; see the module docstring for the layout.

    Raises
    ------
    ValidationError
        If a leaf cannot be stored (e.g. an object array or a Python object).

    Notes
    -----
    Arrays are copied to host memory with ``numpy.asarray``; arrays that are
    not fully addressable from this process (multi-host sharding) are not
    supported.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> state = {"x": jnp.zeros((3, 2)), "key": jax.random.key(0)}
    >>> blob = state_to_bytes(state)
    >>> blob[:4]
    b'ASPJ'
    >>> back = state_from_bytes(state, blob)
    >>> bool((jax.random.key_data(back["key"]) == 0).all())
    True
    """
    state = _encode(serialization.to_state_dict(tree), _ROOT)
    if not isinstance(state, dict):
        state = {"": state}
    payload = serialization.msgpack_serialize(state, in_place=True)
    return _frame(payload)


def _decode(data) -> dict:
    payload = check_state_bytes(data)
    try:
        state = serialization.msgpack_restore(bytes(payload))
    except Exception as exc:  # msgpack and numpy raise a variety of types
        raise CheckpointError(
            f"checkpoint payload passed its checksum but is not valid msgpack "
            f"state ({type(exc).__name__}: {exc}); it was not written by aspire_jax"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint payload holds a {type(state).__name__}, not a state dict"
        )
    return state


def _is_encoded_key(node) -> bool:
    return isinstance(node, dict) and _KEY_TAG in node and _KEY_DATA in node


def _wrap_key(node, path: str) -> jax.Array:
    impl, data = node[_KEY_TAG], node[_KEY_DATA]
    try:
        return jax.random.wrap_key_data(jnp.asarray(data), impl=impl)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild the PRNG key (impl {impl!r}, key data of "
            f"shape {np.shape(data)}): {exc}"
        ) from exc


def _wrap_keys(node, path: str):
    if _is_encoded_key(node):
        return _wrap_key(node, path)
    if isinstance(node, dict):
        return {k: _wrap_keys(v, f"{path}.{k}") for k, v in node.items()}
    return node


def state_dict_from_bytes(data, *, wrap_keys: bool = False) -> dict:
    """Decode a checkpoint blob into a nested dict, without a template.

    Parameters
    ----------
    data : bytes-like
        A blob produced by :func:`state_to_bytes`.
    wrap_keys : bool
        If True, PRNG keys come back as typed JAX keys; otherwise as
        ``{"__prng_key__": impl_name, "key_data": numpy array}``.

    Returns
    -------
    dict
        The state dict: nested dicts (lists and tuples appear as dicts keyed
        ``"0"``, ``"1"``, ...) of read-only numpy arrays and Python scalars.

    Raises
    ------
    CheckpointError
        If the blob is foreign, truncated, corrupt or from a newer version.
    """
    state = _decode(data)
    if wrap_keys:
        state = _wrap_keys(state, _ROOT)
    return state


def _join(path: str, key: str) -> str:
    return f"{path}[{key}]" if key.isdigit() else f"{path}.{key}"


def _describe(node) -> str:
    if _is_encoded_key(node):
        return "a PRNG key"
    if isinstance(node, dict):
        return "a mapping"
    if isinstance(node, (np.ndarray, np.generic, jax.Array)):
        return f"an array of shape {tuple(np.shape(node))}"
    return f"a {type(node).__name__}"


def _restore_array(tmpl, saved, path: str, problems: list):
    if isinstance(saved, jax.Array) and not _is_key_dtype(saved.dtype):
        saved = np.asarray(saved)
    if (
        isinstance(saved, (bool, int, float))
        and getattr(tmpl, "weak_type", False)
        and np.ndim(tmpl) == 0
    ):
        # jax.eval_shape turns Python scalar fields into weakly typed 0-d
        # structs; the saved value is the Python scalar itself.
        return saved
    if not isinstance(saved, (np.ndarray, np.generic)):
        problems.append(f"{path}: expected an array, got {_describe(saved)}")
        return None
    want_shape, want_dtype = tuple(np.shape(tmpl)), np.dtype(tmpl.dtype)
    if saved.shape != want_shape:
        problems.append(
            f"{path}: expected shape {want_shape}, got {saved.shape}; build the "
            "template from the configuration the checkpoint was written with"
        )
        return None
    if saved.dtype != want_dtype:
        if saved.dtype.kind == want_dtype.kind:
            hint = "set jax_enable_x64 as in the run that wrote the checkpoint"
        else:
            hint = "build the template from the saved configuration"
        problems.append(
            f"{path}: expected dtype {want_dtype}, got {saved.dtype}; {hint}"
        )
        return None
    if isinstance(tmpl, np.generic):
        return saved.dtype.type(saved[()])
    if isinstance(tmpl, np.ndarray):
        return np.array(saved)
    sharding = getattr(tmpl, "sharding", None)
    if sharding is not None and len(sharding.device_set) > 1:
        # Keep a template's multi-device layout; single-device leaves stay
        # uncommitted, like freshly created arrays.
        return jax.device_put(saved, sharding)
    return jnp.array(saved)


def _restore_key(tmpl, saved, path: str, problems: list):
    if isinstance(saved, jax.Array) and _is_key_dtype(saved.dtype):
        key = saved
    elif _is_encoded_key(saved):
        try:
            key = _wrap_key(saved, path)
        except CheckpointError as exc:
            problems.append(str(exc))
            return None
    else:
        problems.append(f"{path}: expected a PRNG key, got {_describe(saved)}")
        return None
    if key.shape != tuple(tmpl.shape) or key.dtype != tmpl.dtype:
        problems.append(
            f"{path}: expected a PRNG key of shape {tuple(tmpl.shape)} and dtype "
            f"{tmpl.dtype}, got shape {key.shape} and dtype {key.dtype}; use the "
            "same key implementation and key batch shape as the saved run"
        )
        return None
    return key


def _restore(tmpl, saved, path: str, problems: list):
    if isinstance(tmpl, dict):
        if not isinstance(saved, dict) or _is_encoded_key(saved):
            problems.append(f"{path}: expected a mapping, got {_describe(saved)}")
            return None
        missing = [k for k in tmpl if k not in saved]
        extra = [k for k in saved if k not in tmpl]
        for k in missing:
            problems.append(
                f"{_join(path, k)}: missing from the checkpoint; the template has "
                "a field the saved state lacks (was it written by another version "
                "or configuration?)"
            )
        for k in extra:
            problems.append(
                f"{_join(path, k)}: present in the checkpoint but not in the "
                "template; build the template from the saved configuration"
            )
        return {
            k: _restore(v, saved[k], _join(path, k), problems)
            for k, v in tmpl.items()
            if k in saved
        }
    if tmpl is None:
        if saved is not None:
            problems.append(f"{path}: expected None, got {_describe(saved)}")
        return None
    if hasattr(tmpl, "shape") and hasattr(tmpl, "dtype"):
        if _is_key_dtype(tmpl.dtype):
            return _restore_key(tmpl, saved, path, problems)
        return _restore_array(tmpl, saved, path, problems)
    if isinstance(tmpl, (bool, int, float, str)):
        if type(saved) is not type(tmpl):
            problems.append(
                f"{path}: expected a Python {type(tmpl).__name__}, got "
                f"{_describe(saved)}"
            )
        return saved
    problems.append(
        f"{path}: the template leaf of type {type(tmpl).__name__} is not "
        "supported; use arrays, jax.ShapeDtypeStruct, Python scalars or None"
    )
    return None


def state_from_state_dict(template, state: dict):
    """Restore a pytree from a state dict, checked against a template.

    Parameters
    ----------
    template : pytree
        A pytree of the expected structure. Its array leaves may be arrays or
        ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``); only their
        shapes, dtypes and shardings are used.
    state : dict
        A state dict as returned by :func:`state_dict_from_bytes` (keys typed
        or encoded).

    Returns
    -------
    pytree
        A new pytree with the structure of ``template`` and the saved values.
        JAX array leaves of the template come back as JAX arrays (placed with
        the template's sharding), numpy leaves as writable numpy arrays.

    Raises
    ------
    CheckpointError
        If any field is missing or extra, or a shape, dtype or leaf kind
        differs. The message lists every mismatch with its tree path, e.g.
        ``state.x: expected shape (2000, 4), got (1000, 4)``.
    """
    tmpl = serialization.to_state_dict(template)
    wrapped = not isinstance(tmpl, dict)
    if wrapped:
        tmpl = {"": tmpl}
    problems: list[str] = []
    restored = _restore(tmpl, state, _ROOT, problems)
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = len(problems) - _MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise CheckpointError(
            f"checkpoint does not match the template:\n  {listed}{tail}"
        )
    if wrapped:
        restored = restored[""]
    try:
        return serialization.from_state_dict(template, restored, name=_ROOT)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot rebuild the state from the checkpoint: {exc}")


def state_from_bytes(template, data):
    """Restore a pytree from checkpoint bytes, checked against a template.

    Parameters
    ----------
    template : pytree
        A pytree of the expected structure (see :func:`state_from_state_dict`).
    data : bytes-like
        A blob produced by :func:`state_to_bytes`.

    Returns
    -------
    pytree
        A new pytree with the structure of ``template`` and the saved values.

    Raises
    ------
    CheckpointError
        If the blob is foreign (bad magic, e.g. a pickle), from a newer format
        version, truncated or corrupt, or does not match the template; a
        mismatch names the tree path and what to change.
    """
    return state_from_state_dict(template, _decode(data))
