"""Likelihoods that are not JAX (NumPy, C extensions, bilby) as JAX functions.

The engine stays pure: a host function enters through
:func:`jax.pure_callback` with a batched signature, so one callback serves the
whole population of particles per evaluation.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["wrap_numpy_likelihood"]


def wrap_numpy_likelihood(fn, *, dtype=None):
    """Wrap a batched NumPy function ``(n, d) -> (n,)`` as a JAX function.

    Parameters
    ----------
    fn
        Host function taking a NumPy array ``(n, d)`` and returning ``(n,)``.
    dtype
        Output dtype; the input's dtype by default.

    Returns
    -------
    Callable
        A traceable function usable inside ``jit`` and ``vmap`` (batches are
        folded into one host call per evaluation).

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
        x = np.asarray(x)
        lead = x.shape[:-1]
        out = np.asarray(fn(x.reshape(-1, x.shape[-1])))
        return out.reshape(lead).astype(x.dtype if dtype is None else dtype)

    def wrapped(x):
        x = jnp.asarray(x)
        shape = jax.ShapeDtypeStruct(x.shape[:-1], dtype or x.dtype)
        return jax.pure_callback(host, shape, x, vmap_method="expand_dims")

    return wrapped
