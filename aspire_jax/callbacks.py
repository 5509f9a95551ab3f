"""Likelihoods that are not JAX (NumPy, C extensions, bilby) as JAX functions.

The engine stays pure: a host function enters through
:func:`jax.pure_callback` with a batched signature, so one callback serves the
whole population of particles per evaluation.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ._types import is_int
from .errors import ValidationError

__all__ = ["wrap_numpy_likelihood"]


def _function_name(fn) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _checked_output(fn, out, n: int) -> np.ndarray:
    """The host function's return value as a real ``(n,)`` array, or a clear error.

    The message is one short line: inside ``jit`` it reaches the user only as
    the last line of a ``JaxRuntimeError``, after a traceback.
    """
    name = _function_name(fn)
    expected = f"a real array of shape ({n},) for a batch of {n} points"
    try:
        arr = np.asarray(out)
    except Exception as exc:  # ragged lists and the like
        raise ValidationError(
            f"wrap_numpy_likelihood: {name} must return {expected}; it returned "
            f"a {type(out).__name__} that NumPy cannot read as an array "
            f"({type(exc).__name__})") from exc
    if arr.shape != (n,) or arr.dtype.kind not in "fiu":
        raise ValidationError(
            f"wrap_numpy_likelihood: {name} must return {expected}; it returned "
            f"shape {arr.shape} and dtype {arr.dtype}")
    return arr


def _per_point_value(fn, out) -> float:
    """One point's return value as a float, or a clear one-line error."""
    arr = np.asarray(out)
    if arr.shape not in ((), (1,)) or arr.dtype.kind not in "fiu":
        raise ValidationError(
            f"wrap_numpy_likelihood: {_function_name(fn)} (vectorized=False) must "
            f"return one real number per point; it returned shape {arr.shape} and "
            f"dtype {arr.dtype}")
    return float(arr.reshape(()))


def _check_wrapper_settings(fn, vectorized, map_fn, chunk_size) -> None:
    if not callable(fn):
        raise ValidationError(
            f"wrap_numpy_likelihood needs a callable; got {type(fn).__name__}")
    if not isinstance(vectorized, (bool, np.bool_)):
        raise ValidationError(f"vectorized must be True or False; got {vectorized!r}")
    if map_fn is not None and not callable(map_fn):
        raise ValidationError(
            "map_fn must be a callable like map, pool.map or executor.map; got "
            f"{type(map_fn).__name__}")
    if chunk_size is not None:
        if not is_int(chunk_size) or chunk_size < 1:
            raise ValidationError(
                f"chunk_size must be a positive integer or None; got {chunk_size!r}")
        if not vectorized:
            raise ValidationError(
                "chunk_size splits the batch of a vectorized function; with "
                "vectorized=False every point is its own task (a pool's own "
                "chunksize, e.g. functools.partial(pool.map, chunksize=8), groups them)")
        if map_fn is None:
            raise ValidationError(
                "chunk_size needs map_fn (e.g. pool.map) to spread the chunks; "
                "without it the whole batch is one call")


def wrap_numpy_likelihood(fn, *, dtype=None, vectorized: bool = True, map_fn=None,
                          chunk_size: int | None = None):
    """Wrap a NumPy log-density as a JAX function, optionally run in parallel.

    Parameters
    ----------
    fn
        Host function. With ``vectorized=True`` (the default) it takes a NumPy
        array ``(n, d)`` and returns ``(n,)``: a real (integer or floating, not
        bool or complex) array or sequence of exactly that shape; ``(n, 1)``
        and scalars are refused. With ``vectorized=False`` it takes one point,
        a ``(d,)`` array, and returns one real number.
    dtype
        Output dtype; the input's dtype by default.
    vectorized
        Whether ``fn`` takes a whole batch (True) or one point (False).
    map_fn
        ``map_fn(f, iterable) -> iterable`` used to spread the work, e.g.
        ``pool.map`` of a :mod:`multiprocessing` pool or ``executor.map`` of a
        :mod:`concurrent.futures` executor. Results must come back in order
        (``imap_unordered`` would pair values with the wrong points, which
        no check can see); a wrong count is refused.
        With ``vectorized=False`` it maps ``fn`` over the points; with
        ``vectorized=True`` it maps ``fn`` over chunks of ``chunk_size``
        rows. ``None``: the builtin ``map`` (one point after another), or
        one call on the whole batch.
    chunk_size
        Rows per call of a vectorized ``fn`` under ``map_fn``.

    Returns
    -------
    Callable
        A traceable function usable inside ``jit`` and ``vmap`` (batches are
        folded into one host call per evaluation).

    Raises
    ------
    ValidationError
        At once, for settings that do not fit together (``chunk_size`` without
        ``map_fn`` or with ``vectorized=False``, a ``map_fn`` that is not
        callable). When called, if ``fn`` returns anything but a real ``(n,)``
        array for a batch of ``n`` points (or a real number for one point).
        Called eagerly, the wrapper runs ``fn`` directly and raises it as is;
        inside ``jit`` or ``vmap`` JAX reports it as a ``JaxRuntimeError``
        whose text ends with this message. The wrapper keeps the last
        exception of a host call as ``host_error``:
        :class:`~aspire_jax.Aspire` re-raises that exception itself (its own
        type, chained to JAX's error) when it stops a run.

    Notes
    -----
    The callback runs on the host and blocks the device while it does; it
    cannot be differentiated, so gradient kernels (MALA) cannot be used with it.

    A pool of processes is what makes an expensive per-point likelihood (a
    waveform model, an ODE solve) use every core: the SMC step hands the
    whole population to one host call, which ``map_fn`` spreads over the
    workers. JAX runs threads of its own, so start worker processes with
    the ``"spawn"`` (or ``"forkserver"``) method, not ``"fork"``, and define
    ``fn`` at module level so that the workers can import it.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> f = wrap_numpy_likelihood(lambda x: -0.5 * np.sum(x**2, axis=1))
    >>> f(jnp.ones((3, 2))).shape
    (3,)
    >>> g = wrap_numpy_likelihood(lambda p: -0.5 * float(p @ p), vectorized=False)
    >>> g(jnp.ones((3, 2))).tolist()
    [-1.0, -1.0, -1.0]

    With a process pool (in a script guarded by ``if __name__ == "__main__":``)::

        import multiprocessing as mp
        with mp.get_context("spawn").Pool(8) as pool:
            log_likelihood = wrap_numpy_likelihood(
                my_point_log_likelihood, vectorized=False, map_fn=pool.map)
            aspire = Aspire(log_likelihood=log_likelihood, ...)
            samples = aspire.sample_posterior(4000)
    """
    _check_wrapper_settings(fn, vectorized, map_fn, chunk_size)

    def mapped(items: list) -> list:
        """``fn`` over ``items`` through ``map_fn``: one result per item."""
        results = list((map if map_fn is None else map_fn)(fn, items))
        if len(results) != len(items):
            raise ValidationError(
                f"wrap_numpy_likelihood: map_fn returned {len(results)} results for "
                f"{len(items)} {'points' if not vectorized else 'chunks'}; it must "
                "return one per item, in order (like map or pool.map)")
        return results

    def evaluate(x2d: np.ndarray) -> np.ndarray:
        # A writable copy: fn sees the same kind of array with or without a
        # pool (whose workers get copies anyway).
        x2d = np.array(x2d)
        n = x2d.shape[0]
        if not vectorized:
            values = [_per_point_value(fn, v) for v in mapped(list(x2d))]
            return np.asarray(values, dtype=np.float64)
        if map_fn is None or n == 0:
            return _checked_output(fn, fn(x2d), n)
        size = n if chunk_size is None else int(chunk_size)
        chunks = [x2d[i:i + size] for i in range(0, n, size)]
        results = mapped(chunks)
        try:
            return np.concatenate([_checked_output(fn, out, len(c))
                                   for c, out in zip(chunks, results)])
        except ValidationError as exc:
            raise ValidationError(
                f"{exc} (in chunks of {size} rows; or map_fn returned the chunks' "
                "results out of order)") from None

    def host(x):
        try:
            x = np.asarray(x)
            lead = x.shape[:-1]
            n = int(np.prod(lead, dtype=np.int64))
            out = evaluate(x.reshape(n, x.shape[-1]))
            return out.reshape(lead).astype(x.dtype if dtype is None else dtype)
        except Exception as exc:
            # JAX reports it as a JaxRuntimeError holding only its text; kept
            # here, the facade re-raises the exception itself.
            wrapped.host_error = exc
            raise

    def wrapped(x):
        x = jnp.asarray(x)
        if not isinstance(x, jax.core.Tracer):
            # Called eagerly (as Aspire's probe does): run the host function
            # directly, so a bad return value raises its own ValidationError
            # instead of a JaxRuntimeError wrapping a traceback.
            return jnp.asarray(host(np.asarray(x)))
        shape = jax.ShapeDtypeStruct(x.shape[:-1], x.dtype if dtype is None else dtype)
        return jax.pure_callback(host, shape, x, vmap_method="expand_dims")

    wrapped.host_error = None
    return wrapped
