"""Opt-in persistent compilation cache for repeated runs of the same shapes.

The first call of an SMC run compiles one XLA program of the whole sampler
with the flow and the user's likelihood inside: seconds on a CPU, which is
most of the wall time of a short run. JAX can keep compiled programs on disk
and reuse them in later processes whenever the program, its shapes and the
JAX version agree. :func:`enable_compilation_cache` switches that on; the
library never does so by itself, since the setting is global to the process.
"""

import os
import pathlib

import jax

from .errors import ValidationError

__all__ = ["default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> pathlib.Path:
    """``$ASPIRE_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/aspire_jax/xla``
    (``~/.cache/aspire_jax/xla`` when ``XDG_CACHE_HOME`` is unset)."""
    explicit = os.environ.get("ASPIRE_JAX_CACHE_DIR")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "aspire_jax" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             min_compile_time_s: float = 0.5) -> pathlib.Path:
    """Store compiled programs in ``path`` and reuse them in later processes.

    Parameters
    ----------
    path
        Folder of the cache, created if missing and made absolute;
        :func:`default_cache_dir` when ``None``. Several processes may share
        it; one process uses one folder (calling again with the same folder
        is harmless).
    min_compile_time_s
        Programs that compile faster than this are not stored.

    Returns
    -------
    pathlib.Path
        The folder in use.

    Raises
    ------
    ValidationError
        If ``path`` is empty, is not (or cannot be made) a folder, differs from
        a cache folder already set in this process, or ``min_compile_time_s``
        is not a number >= 0.

    Notes
    -----
    This sets JAX's global options ``jax_compilation_cache_dir``,
    ``jax_persistent_cache_min_compile_time_secs`` and
    ``jax_persistent_cache_min_entry_size_bytes`` (to 0) for the whole
    process. A cached program is only reused for identical computations:
    another particle count, flow architecture, likelihood or JAX version
    compiles afresh (and is stored in turn). Call it before the first run.
    """
    if isinstance(path, str) and not path.strip():
        raise ValidationError("compilation cache path is empty; pass a folder or None.")
    folder = default_cache_dir() if path is None else pathlib.Path(path)
    folder = folder.expanduser().resolve()
    if isinstance(min_compile_time_s, bool) or not (
            isinstance(min_compile_time_s, (int, float)) and min_compile_time_s >= 0):
        raise ValidationError(
            f"min_compile_time_s must be a number >= 0; got {min_compile_time_s!r}.")
    current = jax.config.jax_compilation_cache_dir
    if current and pathlib.Path(current).resolve() != folder:
        raise ValidationError(
            f"the compilation cache of this process is already {current}; JAX keeps "
            "the first folder for the life of the process, so start a new process "
            "to use another one.")
    if folder.exists() and not folder.is_dir():
        raise ValidationError(f"compilation cache path {folder} is not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValidationError(
            f"cannot create the compilation cache folder {folder}: {err}") from err
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
