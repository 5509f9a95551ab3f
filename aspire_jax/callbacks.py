"""Likelihoods that are not JAX (NumPy, C extensions, bilby) as JAX functions.

The engine stays pure: a host function enters through
:func:`jax.pure_callback` with a batched signature, so one callback serves the
whole population of particles per evaluation.
"""

import jax
import jax.numpy as jnp
import numpy as np

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


def wrap_numpy_likelihood(fn, *, dtype=None):
    """Wrap a batched NumPy function ``(n, d) -> (n,)`` as a JAX function.

    Parameters
    ----------
    fn
        Host function taking a NumPy array ``(n, d)`` and returning ``(n,)``:
        a real (integer or floating, not bool or complex) array or sequence of
        exactly that shape; ``(n, 1)`` and scalars are refused.
    dtype
        Output dtype; the input's dtype by default.

    Returns
    -------
    Callable
        A traceable function usable inside ``jit`` and ``vmap`` (batches are
        folded into one host call per evaluation).

    Raises
    ------
    ValidationError
        When called, if ``fn`` returns anything but a real ``(n,)`` array for
        a batch of ``n`` points. Called eagerly, the wrapper runs ``fn``
        directly and raises it as is; inside ``jit`` or ``vmap`` JAX reports it
        as a ``JaxRuntimeError`` whose text ends with this message. The
        wrapper keeps the last exception of a host call as ``host_error``:
        :class:`~aspire_jax.Aspire` re-raises that exception itself (its own
        type, chained to JAX's error) when it stops a run.

    Notes
    -----
    The callback runs on the host and blocks the device while it does; it
    cannot be differentiated, so gradient kernels (MALA) cannot be used with it.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> f = wrap_numpy_likelihood(lambda x: -0.5 * np.sum(x**2, axis=1))
    >>> f(jnp.ones((3, 2))).shape
    (3,)
    """

    def host(x):
        try:
            x = np.asarray(x)
            lead = x.shape[:-1]
            n = int(np.prod(lead, dtype=np.int64))
            out = _checked_output(fn, fn(x.reshape(n, x.shape[-1])), n)
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
