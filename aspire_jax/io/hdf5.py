"""The aspire_jax HDF5 file: atomic checkpoint writes, JSON config, history.

Layout of a checkpoint file (``.h5`` or ``.hdf5``)::

    /                   attrs: aspire_jax_version, file_format_version
    /checkpoint/state   1-D uint8 dataset: framed msgpack state bytes
                        (see aspire_jax.io.checkpoint), attr format_version
    /aspire_config      JSON values in attributes
    /sampler_config     JSON values in attributes
    /flow, /samples     written by the layers that own them
    /history            per-step diagnostics as plain datasets

:func:`write_checkpoint_file` never modifies the target in place: it builds a
complete new file in memory, writes it to a temporary file next to the target
with plain file I/O and renames it over the target, so a process killed at any
instant, or a disk that fills up, leaves either the previous or the new
complete file.
"""

import contextlib
import errno
import io
import json
import logging
import os
import platform
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np

from aspire_jax._types import is_int
from aspire_jax.errors import CheckpointError, ValidationError
from aspire_jax.io.checkpoint import FORMAT_VERSION, check_state_bytes

__all__ = [
    "AspireFile",
    "write_json_group",
    "read_json_group",
    "history_to_group",
    "history_from_group",
    "write_checkpoint_file",
    "read_checkpoint_bytes",
    "is_aspire_file",
]

logger = logging.getLogger(__name__)

_SUFFIXES = (".h5", ".hdf5")
_MODES = ("r", "r+", "a", "w", "w-", "x")
_STATE_DSET = "checkpoint/state"
# Attributes above 64 KiB need HDF5's dense attribute storage, which the default
# (oldest) file format lacks; longer JSON values go to string datasets instead.
_ATTR_LIMIT = 32 * 1024
# A temporary file of a writer of the same target that is older than this is
# left over from a crash, on whichever host it was written.
_STALE_TEMP_AGE_S = 24 * 3600.0
# The new file is written in pieces of at most this size.
_WRITE_CHUNK = 16 * 1024 * 1024


def _check_h5_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(
            f"expected a file path ending in .h5 or .hdf5; got "
            f"{type(path).__name__} {path!r}"
        )
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES:
        raise ValidationError(
            f"aspire_jax files are HDF5 and must end in .h5 or .hdf5; got "
            f"{str(path)!r}. Use e.g. {p.with_suffix('.h5').name!r}"
        )
    return p


class AspireFile(h5py.File):
    """An ``h5py.File`` restricted to ``.h5`` / ``.hdf5`` paths.

    Parameters
    ----------
    path : str or os.PathLike
        File path; must end in ``.h5`` or ``.hdf5``.
    mode : str
        ``"r"``, ``"r+"``, ``"a"``, ``"w"``, ``"w-"`` or ``"x"`` as in h5py.
    **kwargs
        Passed to ``h5py.File`` (e.g. ``driver``, ``locking``).

    Raises
    ------
    ValidationError
        If the suffix or the mode is not supported.
    CheckpointError
        If the file is missing (read modes), already exists (``"w-"``/``"x"``),
        or is not a readable HDF5 file (foreign, truncated or corrupt).

    Notes
    -----
    Write modes set the root attributes ``aspire_jax_version`` and
    ``file_format_version`` on a new file (modes ``"w"``, ``"w-"``, ``"x"``,
    or ``"a"`` creating the file) and on a file aspire_jax already wrote. An
    existing HDF5 file aspire_jax did not write, opened with ``"a"`` or
    ``"r+"``, is left unstamped: it stays the user's file, which checkpoint
    writes refuse to replace (see :func:`is_aspire_file`).
    """

    def __init__(self, path, mode: str = "r", **kwargs):
        p = _check_h5_path(path)
        if mode not in _MODES:
            raise ValidationError(f"mode must be one of {_MODES}; got {mode!r}")
        # Whether this opening creates the file (or truncates it), so that the
        # file is aspire_jax's; an existing file keeps the owner it had.
        new = mode in ("w", "w-", "x") or (mode == "a" and not p.exists())
        try:
            super().__init__(p, mode, **kwargs)
        except FileNotFoundError as exc:
            raise CheckpointError(f"no such file: {str(p)!r}") from exc
        except FileExistsError as exc:
            raise CheckpointError(
                f"{str(p)!r} already exists; open it with mode 'a' or 'w'"
            ) from exc
        except OSError as exc:
            if p.is_dir():
                raise CheckpointError(
                    f"{str(p)!r} is a directory, not an HDF5 file") from exc
            if p.is_file() and not h5py.is_hdf5(p):
                raise CheckpointError(
                    f"{str(p)!r} is not an HDF5 file (it may be truncated, "
                    "corrupt or a different format); restore it from a backup or "
                    "remove it to start afresh"
                ) from exc
            raise CheckpointError(
                f"cannot open {str(p)!r} as HDF5 with mode {mode!r}: {exc}; a "
                "truncated or corrupt file must be restored or removed, a locked "
                "one closed by the process holding it"
            ) from exc
        try:
            check_file_version(self, p)
        except CheckpointError:
            self.close()
            raise
        if mode != "r" and (new or _written_by_aspire(self)):
            self.attrs["aspire_jax_version"] = _version()
            self.attrs["file_format_version"] = FORMAT_VERSION


def check_file_version(f: h5py.File, p: str | Path) -> None:
    """Refuse a file whose root claims a format this version cannot read."""
    version = f.attrs.get("file_format_version")
    if version is None:
        return
    try:
        arr = np.asarray(version)
        if arr.dtype.kind not in "iu":
            raise TypeError("not an integer")
        version = int(arr.reshape(()))
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{str(p)!r} has a file_format_version of {version!r}, not an integer; "
            "the file was not written by aspire_jax or was edited") from None
    if not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{str(p)!r} has file format version {version}; this aspire_jax "
            f"({_version()}) reads versions 1 to {FORMAT_VERSION}"
            + ("; upgrade aspire_jax to read it" if version > FORMAT_VERSION else ""))


def is_aspire_file(path, *, unopenable: bool = False) -> bool:
    """Whether ``path`` is an HDF5 file whose root carries the attributes
    aspire_jax writes (``aspire_jax_version`` and ``file_format_version``).

    Parameters
    ----------
    path : str or os.PathLike
        Any path.
    unopenable : bool
        The answer for an HDF5 file that cannot be opened now (another
        process holds it open for writing, and HDF5's file lock refuses a
        reader).

    Returns
    -------
    bool
        False for a missing or foreign file; ``unopenable`` for one that
        cannot be opened now.
    """
    p = Path(path)
    if not p.is_file() or not h5py.is_hdf5(p):
        return False
    try:
        with h5py.File(p, "r") as f:
            return _written_by_aspire(f)
    except OSError:
        return unopenable


def _written_by_aspire(f: h5py.File) -> bool:
    return {"aspire_jax_version", "file_format_version"} <= set(f.attrs)


def _foreign_message(target: Path) -> str:
    return (f"{str(target)!r} is an HDF5 file that aspire_jax did not write (its "
            "root lacks the aspire_jax_version and file_format_version "
            "attributes); aspire_jax does not overwrite it. Choose another path")


def _fresh_group(h5: h5py.Group, path: str) -> h5py.Group:
    if path in ("", "."):
        for name in list(h5.attrs):
            del h5.attrs[name]
        for name in list(h5):
            del h5[name]
        return h5
    if path in h5:
        del h5[path]
    return h5.create_group(path, track_order=True)


def _jsonable(value, where: str):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("jax"):
        arr = np.asarray(value)
        if arr.dtype.kind in "biufU":
            return arr.tolist()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{where}: JSON keys must be strings; got {k!r}")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if callable(value) and hasattr(value, "__module__") and hasattr(
        value, "__qualname__"
    ):
        return f"{value.__module__}:{value.__qualname__}"
    raise ValidationError(
        f"{where}: a {type(value).__name__} cannot be stored as JSON; pass numbers, "
        "strings, lists, dicts, arrays or module-level functions"
    )


def write_json_group(h5: h5py.Group, path: str, mapping: Mapping) -> h5py.Group:
    """Write a configuration mapping as JSON values in a group's attributes.

    Parameters
    ----------
    h5 : h5py.Group
        An open file or group.
    path : str
        Group to (re)create below ``h5``; ``"."`` writes into ``h5`` itself
        after clearing it. An existing group is replaced.
    mapping : Mapping
        String keys; values are JSON-encoded one attribute per key. Tuples
        become lists, arrays nested lists, callables ``"module:qualname"``.
        Values longer than 32 KiB are stored as string datasets instead.

    Returns
    -------
    h5py.Group
        The written group.

    Raises
    ------
    ValidationError
        If a key is not a string or a value cannot be encoded.
    """
    encoded = _encode_json(mapping, path)
    group = _fresh_group(h5, path)
    _write_json_texts(group, encoded)
    return group


def _encode_json(mapping, path: str) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"mapping must be a dict; got {type(mapping).__name__}")
    encoded = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(
                f"{path}: keys must be non-empty strings; got {key!r}"
            )
        encoded[key] = json.dumps(_jsonable(value, f"{path}.{key}"))
    return encoded


def _write_json_texts(group: h5py.Group, encoded: dict[str, str]) -> None:
    for key, text in encoded.items():
        if len(text.encode("utf-8")) > _ATTR_LIMIT and "/" not in key:
            group.create_dataset(key, data=text, dtype=h5py.string_dtype())
        else:
            group.attrs[key] = text


def read_json_group(h5: h5py.Group, path: str) -> dict:
    """Read a mapping written by :func:`write_json_group`.

    Parameters
    ----------
    h5 : h5py.Group
        An open file or group.
    path : str
        The group below ``h5``; ``"."`` reads ``h5`` itself.

    Returns
    -------
    dict
        The decoded values (JSON types: lists for tuples and arrays).

    Raises
    ------
    CheckpointError
        If the group is missing or a value is not valid JSON.
    """
    group = h5 if path in ("", ".") else h5.get(path)
    if not isinstance(group, h5py.Group):
        raise CheckpointError(f"no group {path!r} in {h5.file.filename!r}")
    texts = dict(group.attrs.items())
    for name, obj in group.items():
        if isinstance(obj, h5py.Dataset):
            texts[name] = obj.asstr()[()]
    out = {}
    for key, text in texts.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{group.name}: attribute {key!r} is not JSON ({exc}); the group was "
                "not written by write_json_group"
            ) from exc
    return out


def _as_mapping(history, where: str) -> Mapping:
    if hasattr(history, "_asdict"):
        return history._asdict()
    if isinstance(history, Mapping):
        return history
    raise ValidationError(
        f"{where}: history must be a dict or NamedTuple of arrays; got "
        f"{type(history).__name__}"
    )


def _write_history(group: h5py.Group, history, n_steps, where: str) -> None:
    for name, value in _as_mapping(history, where).items():
        if value is None:
            continue
        if isinstance(value, Mapping) or hasattr(value, "_asdict"):
            sub = group.create_group(name, track_order=True)
            _write_history(sub, value, n_steps, f"{where}.{name}")
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise ValidationError(
                f"{where}.{name}: history values must be numeric arrays; got dtype "
                f"{arr.dtype}"
            )
        if n_steps is not None:
            if arr.ndim == 0:
                raise ValidationError(
                    f"{where}.{name}: a scalar cannot be trimmed to n_steps; give "
                    "every history field a leading step axis"
                )
            arr = arr[:n_steps]
        group.create_dataset(name, data=arr)


def history_to_group(
    h5: h5py.Group, path: str, history, *, n_steps: int | None = None
) -> h5py.Group:
    """Store per-step diagnostics as plain datasets.

    Parameters
    ----------
    h5 : h5py.Group
        An open file or group.
    path : str
        Group to (re)create below ``h5``; ``"."`` writes into ``h5``.
    history : Mapping or NamedTuple
        Arrays with a leading step axis (e.g. stacked ``SMCInfo``); nested
        mappings become subgroups and None values are skipped.
    n_steps : int or None
        If given, keep only the first ``n_steps`` rows of every array, for
        buffers padded to a maximum step count.

    Returns
    -------
    h5py.Group
        The written group.

    Raises
    ------
    ValidationError
        If a value is not numeric or cannot be trimmed.
    """
    if n_steps is not None and (not is_int(n_steps) or n_steps < 0):
        raise ValidationError(f"n_steps must be a non-negative int; got {n_steps!r}")
    n_steps = None if n_steps is None else int(n_steps)
    group = _fresh_group(h5, path)
    _write_history(group, history, n_steps, path)
    if n_steps is not None:
        group.attrs["n_steps"] = n_steps
    return group


def history_from_group(h5: h5py.Group, path: str) -> dict:
    """Read diagnostics written by :func:`history_to_group`.

    Parameters
    ----------
    h5 : h5py.Group
        An open file or group.
    path : str
        The group below ``h5``; ``"."`` reads ``h5`` itself.

    Returns
    -------
    dict
        Field name to numpy array; subgroups become nested dicts.

    Raises
    ------
    CheckpointError
        If the group is missing.
    """
    group = h5 if path in ("", ".") else h5.get(path)
    if not isinstance(group, h5py.Group):
        raise CheckpointError(f"no group {path!r} in {h5.file.filename!r}")
    out = {}
    for name, obj in group.items():
        if isinstance(obj, h5py.Group):
            out[name] = history_from_group(obj, ".")
        else:
            out[name] = obj[()]
    return out


class _Fatal(Exception):
    """A failure that retrying cannot fix."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", platform.node()) or "host"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{_host()}-"


def _temp_pattern(target: Path) -> "re.Pattern[str]":
    # The temporary files of every writer of ``target``, on any host:
    # .<name>.tmp-<host>-<pid>-<hex>.h5 (see _temp_prefix).
    return re.compile(
        re.escape(f".{target.name}.tmp-") + r"([A-Za-z0-9_]+)-([0-9]+)-[0-9a-f]+\.h5"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove the temporary files that earlier writers of ``target`` left.

    A writer killed mid-write leaves its temporary file behind. Those of dead
    processes on this host are removed at once (``os.kill(pid, 0)`` probes a
    process only on POSIX). Any other one (written on another host sharing
    the folder, or by a process whose id has since been reused) is removed
    once it is older than a day: a write takes seconds, so it is no write in
    progress.
    """
    pattern = _temp_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    host, now = _host(), time.time()
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        path = target.parent / name
        pid = int(match.group(2))
        dead = (os.name == "posix" and match.group(1) == host
                and pid != os.getpid() and not _pid_alive(pid))
        if not dead:
            try:
                age_s = now - os.lstat(path).st_mtime
            except OSError:
                continue
            if age_s < _STALE_TEMP_AGE_S:
                continue
        try:
            os.unlink(path)
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync directories; the rename still stands
    finally:
        os.close(fd)


def _copy_except(src: h5py.Group, dst: h5py.Group, skip: set[str]) -> None:
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name in src:
        obj = src[name]
        if obj.name in skip:
            continue
        inside = any(s.startswith(obj.name + "/") for s in skip)
        if isinstance(obj, h5py.Group) and inside:
            _copy_except(obj, dst.create_group(name), skip)
        else:
            src.copy(obj, dst, name=name)


def _replaceable_mode(target: Path) -> int | None:
    """The permission bits of an existing target (None if there is none),
    refusing a target that may not be written."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return None
    # A file without any write permission bit is read-only by intent, also
    # for a user (root) whom os.access lets write it.
    if not os.access(target, os.W_OK) or not mode & 0o222:
        raise _Fatal(
            f"{str(target)!r} is read-only (mode {mode:#o}), and aspire_jax does "
            "not replace a file you may not write; make it writable (e.g. chmod "
            "u+w) or choose another path"
        )
    return mode


def _build_file(target, state_bytes, groups, keep_existing, dset, skip) -> io.BytesIO:
    """Build the complete new file in memory, so that HDF5 never writes to a
    disk that may fail (a failed write inside HDF5 is not an OSError, and the
    library may not recover from it)."""
    image = io.BytesIO()
    with h5py.File(image, "w") as dst:
        if target.exists() and h5py.is_hdf5(target):
            # One opening of the existing file both checks that aspire_jax
            # wrote it and copies the groups that are kept.
            with AspireFile(target, "r") as src:
                if not _written_by_aspire(src):
                    raise _Fatal(_foreign_message(target))
                if keep_existing:
                    _copy_except(src, dst, skip)
        elif keep_existing and target.exists():
            what = ("is a folder" if target.is_dir()
                    else "is not a readable HDF5 file")
            raise _Fatal(
                f"the existing {str(target)!r} {what}, so the groups of a "
                "checkpoint file cannot be kept there; move it away or choose "
                "another path (write_checkpoint_file overwrites it with "
                "keep_existing=False)"
            )
        if state_bytes is not None:
            data = np.frombuffer(state_bytes, dtype=np.uint8)
            ds = dst.create_dataset(dset, data=data)
            ds.attrs["format_version"] = FORMAT_VERSION
        for name, write in groups.items():
            try:
                write(_fresh_group(dst, name))
            except OSError:
                raise
            except Exception as exc:
                raise _Fatal(f"writing group {name!r} failed: {exc!r}") from exc
        # Stamped last: a group written at the root (".") starts it afresh.
        dst.attrs["aspire_jax_version"] = _version()
        dst.attrs["file_format_version"] = FORMAT_VERSION
    return image


def _write_new_file(path: Path, data) -> None:
    """Create ``path`` and write ``data`` to it with plain file I/O, then
    fsync it; a full disk or a file size limit raises an OSError (ENOSPC,
    EDQUOT, EFBIG)."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
    )
    try:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                n = os.write(fd, view[done : done + _WRITE_CHUNK])
                if n <= 0:
                    raise OSError(errno.EIO, f"writing {str(path)!r} made no progress")
                done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_once(target, tmp, state_bytes, groups, keep_existing, dset, skip):
    mode = _replaceable_mode(target)
    image = _build_file(target, state_bytes, groups, keep_existing, dset, skip)
    with image.getbuffer() as data:
        _write_new_file(tmp, data)
    del image
    if mode is not None:
        os.chmod(tmp, mode)  # the replaced file's permissions, not the umask's
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _version() -> str:
    from aspire_jax import __version__

    return __version__


def _check_groups(groups, dset: str, has_state: bool) -> dict:
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise ValidationError(
            f"groups must be a dict of name -> callable(group); got "
            f"{type(groups).__name__}"
        )
    writers = {}
    for name, write in groups.items():
        if not isinstance(name, str) or not name.strip("/"):
            raise ValidationError(
                f"group names must be non-empty strings; got {name!r}"
            )
        clean = name.strip("/")
        if has_state and (
            clean == "." or dset == clean or dset.startswith(clean + "/")
        ):
            raise ValidationError(
                f"group {name!r} would replace the state dataset {dset!r}; write the "
                "state through state_bytes and choose another group name"
            )
        if isinstance(write, Mapping):
            # Encode now, so a value JSON cannot hold fails before any file work.
            texts = _encode_json(write, clean)
            writers[clean] = lambda group, texts=texts: _write_json_texts(group, texts)
        elif callable(write):
            writers[clean] = write
        else:
            raise ValidationError(
                f"groups[{name!r}] must be a callable taking the new h5py group or a "
                f"dict to store as JSON; got {type(write).__name__}"
            )
    return writers


def write_checkpoint_file(
    path,
    *,
    state_bytes: bytes | None,
    groups: Mapping[str, Callable[[h5py.Group], None] | Mapping] | None = None,
    keep_existing: bool = True,
    dset: str = _STATE_DSET,
    retries: int = 3,
    backoff_s: float = 0.05,
) -> None:
    """Write a checkpoint file atomically.

    The complete new file is built in memory (the groups kept are copied from
    the existing target, opened read-only), written with plain file I/O to a
    temporary file in the target's directory and fsynced, given the target's
    permission bits, renamed over the target with ``os.replace``, and the
    directory fsynced. A failed write (a full disk, a quota or file size
    limit) is thus an ``OSError`` of the temporary file alone, and readers
    holding the old file open keep their view. Building in memory takes
    about the size of the new file in memory.

    A link is followed: the file it points to is replaced, next to itself.
    Temporary files left by writers of the same target that were killed are
    removed: those of dead processes on this host at once, any other one
    once it is older than a day.

    Parameters
    ----------
    path : str or os.PathLike
        Target file, ending in ``.h5`` or ``.hdf5``.
    state_bytes : bytes or None
        Framed state from :func:`aspire_jax.io.state_to_bytes`, stored at
        ``dset``; None leaves the existing state (if any) as it is.
    groups : Mapping[str, Callable[[h5py.Group], None] | Mapping] or None
        Groups to replace: each callable receives a new, empty group at that
        path and fills it; a mapping is stored as JSON as by
        :func:`write_json_group`. The name ``"."`` is the root group: the
        whole file is written afresh (without ``state_bytes``).
    keep_existing : bool
        Copy every other group and root attribute of an existing target.
    dset : str
        Path of the state dataset.
    retries : int
        Further attempts after an ``OSError``, with exponential backoff.
    backoff_s : float
        Delay before the first retry, in seconds.

    Raises
    ------
    ValidationError
        If the path, a group name or callable is invalid.
    CheckpointError
        If the target is an HDF5 file aspire_jax did not write (see
        :func:`is_aspire_file`), the target is read-only (not writable by
        this user, or without any write permission bit), ``state_bytes`` is
        not a valid blob, or the file could not be written after all
        attempts; the previous file is then unchanged and the caller's state
        is still in memory.
    """
    target = _check_h5_path(path)
    # A link is followed: the file it points to (on scratch space, say) is
    # replaced, next to itself, and the link stays a link.
    target = Path(os.path.realpath(target))
    if state_bytes is not None:
        state_bytes = bytes(state_bytes)
        # The blob normally comes straight from state_to_bytes; readers verify
        # the checksum, so a header check suffices to refuse foreign bytes here.
        check_state_bytes(state_bytes, verify_checksum=False)
    dset = dset.strip("/")
    groups = _check_groups(groups, dset, state_bytes is not None)
    skip = {"/" + name for name in groups}
    if state_bytes is not None:
        skip.add("/" + dset)
    _remove_stale_temps(target)

    error: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        tmp = target.with_name(
            f"{_temp_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}.h5"
        )
        try:
            _write_once(target, tmp, state_bytes, groups, keep_existing, dset, skip)
            return
        except _Fatal as exc:
            error = exc
            break
        except OSError as exc:
            error = exc
            logger.warning(
                "checkpoint write to %s failed (attempt %d): %s",
                target,
                attempt + 1,
                exc,
            )
        finally:
            if tmp.exists():
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    raise CheckpointError(
        f"could not write the checkpoint file {str(target)!r}: {error}. The previous "
        "file is unchanged and the state is still in memory; fix the cause (disk "
        "space, permissions, a process holding the file for writing) and save again"
    ) from error


def copy_file_durably(source, dest) -> None:
    """Copy ``source`` to ``dest`` (which must not exist) with its permissions,
    through a synced temporary file renamed into place, then sync the folder:
    a crash at any instant leaves either no ``dest`` or a complete one. The
    temporary file is named as ``source``'s own checkpoint writes name theirs,
    so one left by a killed process is removed by the next write to
    ``source``.

    Raises
    ------
    OSError
        If the copy fails; nothing is left behind.
    """
    source = Path(os.path.realpath(source))
    dest = Path(dest)
    tmp = dest.with_name(
        f"{_temp_prefix(source)}{os.getpid()}-{secrets.token_hex(4)}.h5")
    try:
        shutil.copy2(source, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def read_checkpoint_bytes(path, dset: str = _STATE_DSET) -> bytes | None:
    """Read the framed state bytes from a checkpoint file.

    Parameters
    ----------
    path : str or os.PathLike
        File ending in ``.h5`` or ``.hdf5``.
    dset : str
        Path of the state dataset.

    Returns
    -------
    bytes or None
        The verified state bytes, or None if the file holds no checkpoint.

    Raises
    ------
    ValidationError
        If the suffix is not ``.h5`` / ``.hdf5``.
    CheckpointError
        If the file is missing, not HDF5, truncated or corrupt, or the dataset
        is not an aspire_jax state blob (wrong dtype, foreign bytes such as a
        pickle, failed checksum, newer format version).
    """
    p = _check_h5_path(path)
    with AspireFile(p, "r") as f:
        try:
            obj = f.get(dset)
        except (KeyError, TypeError, ValueError):
            obj = None
        if obj is None:
            return None
        if not isinstance(obj, h5py.Dataset) or obj.dtype != np.uint8 or obj.ndim != 1:
            raise CheckpointError(
                f"{str(p)!r}:/{dset} is not a 1-D uint8 dataset of state bytes "
                f"(got {obj!r}); the file was not written by aspire_jax"
            )
        version = obj.attrs.get("format_version")
        if version is not None and int(version) > FORMAT_VERSION:
            raise CheckpointError(
                f"{str(p)!r}:/{dset} has format version {int(version)}, newer than "
                f"{FORMAT_VERSION}; upgrade aspire_jax"
            )
        try:
            data = obj[...].tobytes()
        except OSError as exc:
            raise CheckpointError(
                f"cannot read {str(p)!r}:/{dset}: {exc}; the file is corrupt"
            ) from exc
    check_state_bytes(data)
    return data
