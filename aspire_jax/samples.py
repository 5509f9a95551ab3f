"""Weighted posterior samples as a pytree, with numpy, dict, DataFrame and HDF5
conversions.

A :class:`Samples` holds ``n`` points ``x`` in ``d`` named parameters, the
per-sample log-densities that produced them and optional unnormalised
log-weights ``log w_i``. With normalised weights ``W_i = w_i / sum_j w_j``,
weighted estimates are ``E[f] ~ sum_i W_i f(x_i)`` and the Kish effective
sample size is ``ESS = 1 / sum_i W_i^2``.
"""

import functools
import json
import os
import posixpath
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from aspire_jax._types import Array, ArrayLike, PRNGKey
from aspire_jax._names import missing
from aspire_jax.errors import CheckpointError, ValidationError

__all__ = ["Samples"]

_PER_SAMPLE = ("log_likelihood", "log_prior", "log_q", "log_weights")
_SCALARS = ("log_evidence", "log_evidence_error")
_RESERVED = ("x", "parameters") + _PER_SAMPLE + _SCALARS
_METHODS = ("systematic", "multinomial")


def _default_names(d: int) -> tuple[str, ...]:
    return tuple(f"x_{i}" for i in range(d))


def _as_float(value, name: str) -> Array:
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as exc:
        dtype = getattr(value, "dtype", None)
        raise ValidationError(
            f"{name} must be numeric; got {type(value).__name__}"
            + (f" of dtype {dtype}" if dtype is not None else "")
        ) from exc
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise ValidationError(
            f"{name} must be real; got dtype {arr.dtype} (take .real explicitly "
            "if the imaginary part is meant to be dropped)"
        )
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if not jnp.issubdtype(arr.dtype, jnp.number):
            raise ValidationError(f"{name} must be numbers; got dtype {arr.dtype}")
        arr = arr.astype(jnp.result_type(float))
    return arr


def check_float32_range(x, names=None, what: str = "samples") -> None:
    """Refuse a float64 ``(n, d)`` array ``x`` with finite values beyond
    float32's range when JAX computes in float32 (the default): cast, they
    would turn into infinities. ``names`` name the columns (default
    ``x_0``, ...)."""
    if jax.dtypes.canonicalize_dtype(np.float64) != np.float32:
        return
    if isinstance(x, jax.Array):  # already in the array dtype in use
        return
    try:
        arr = np.asarray(x)
    except Exception:  # not an array: the caller's own checks say so
        return
    if arr.dtype != np.float64 or arr.ndim != 2:
        return
    big = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)
    if big.any():
        j = int(np.flatnonzero(big.any(axis=0))[0])
        name = (names[j] if names is not None and len(names) == arr.shape[1]
                else f"x_{j}")
        raise ValidationError(
            f"{what}: {name!r} holds values up to "
            f"{np.max(np.abs(arr[:, j][big[:, j]])):.3g}, beyond the largest float32 "
            f"({np.finfo(np.float32).max:.3g}), JAX's default dtype: rescale that "
            "column, or enable float64 first "
            "(jax.config.update('jax_enable_x64', True))")


def warn_float32_resolution(x, names, what: str = "samples") -> None:
    """Warn when JAX's float32 (the default) cannot resolve the values of a
    column of ``x``: a float64 column whose rounding to float32 moves values
    by more than 0.1 % of the column's spread, as GPS times of about 1e9 s
    known to milliseconds are (float32 steps there are 128 s)."""
    if jax.dtypes.canonicalize_dtype(np.float64) != np.float32:
        return
    if isinstance(x, jax.Array):  # already in the array dtype in use
        return
    arr = np.asarray(x)
    if arr.dtype != np.float64 or arr.ndim != 2 or arr.shape[0] < 2:
        return
    # Columns with no finite value are skipped (numpy warns of all-NaN ones).
    usable = np.isfinite(arr).any(axis=0)
    if not usable.any():
        return
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finite = np.where(np.isfinite(arr), arr, np.nan)
        loss = np.where(usable, np.nanmax(np.abs(finite - finite.astype(np.float32)),
                                          axis=0), 0.0)
        spread = np.nanstd(finite, axis=0)
    for j in np.flatnonzero(loss > 1e-3 * spread):
        if not np.isfinite(spread[j]) or spread[j] <= 0:
            continue
        ratio = loss[j] / spread[j]
        share = f"{ratio:.1%} of" if ratio < 1 else f"{ratio:.3g} times"
        warnings.warn(
            f"{what}: {names[j]!r} (values about {np.nanmedian(finite[:, j]):.10g}, "
            f"spread {spread[j]:.3g}) loses up to {loss[j]:.3g} in float32, JAX's "
            f"default dtype: {share} its spread. Enable float64 first "
            "(jax.config.update('jax_enable_x64', True)) or subtract a reference "
            "value (e.g. a trigger time) from that column", UserWarning,
            stacklevel=3)


def _shift_log_weights(value):
    """Log-weights wider than the array dtype in use (float64 under JAX's
    default float32), shifted in their own precision so that the largest
    finite one is 0: the weights are unchanged, and casting raw
    log-likelihoods of -3e8 to float32 would leave a few distinct values."""
    if isinstance(value, jax.core.Tracer):
        return value
    arr = np.asarray(value)
    target = jnp.result_type(float)
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= np.dtype(target).itemsize:
        return value
    finite = np.isfinite(arr)
    if not finite.any():
        return value
    shifted = arr - np.max(arr[finite])
    # Weights below exp(-float32 max) are exactly zero in either precision.
    return np.where(shifted < -np.finfo(target).max, -np.inf, shifted)


def _concrete(value) -> np.ndarray | None:
    """``value`` as a numpy array, or None while it is traced (under jit)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def _warn_nan_rows(x, names) -> None:
    """Warn when points hold NaN or infinities: every weighted moment and plot
    of them is then NaN or infinite. They are kept (a file may carry a column
    that is undefined in a few rows); ``Aspire.fit`` refuses them."""
    values = _concrete(x)
    if values is None:
        return
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        column = int(np.argmax(bad[rows[0]]))
        what = "NaN" if np.isnan(values).any() else "infinite"
        if np.isnan(values).any() and np.isinf(values).any():
            what = "NaN or infinite"
        warnings.warn(
            f"x is {what} in {rows.size} of {values.shape[0]} samples (first at "
            f"index {int(rows[0])}, parameter {names[column]!r}): their means, "
            "spreads and plots will not be finite; drop those rows "
            "(x[np.isfinite(x).all(axis=1)]) before using them", UserWarning,
            stacklevel=3)


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, what: str) -> str:
    count = int(bad.sum())
    plural = "s" if count > 1 else ""
    first = int(np.argmax(bad))
    return f"{name} is {what} at {count} sample{plural} (first at index {first})"


def _check_field_values(name: str, arr) -> None:
    """Refuse NaN and +inf in a per-sample field, and log-weights all -inf.

    ``-inf`` stays legal: an impossible point (a log-density) or a sample of
    zero weight (a log-weight). Traced values are not checked.
    """
    values = _concrete(arr)
    if values is None:
        return
    if name == "log_weights":
        hint = ("log-weights must be finite, or -inf for a sample of zero weight")
    else:
        hint = (f"per-sample log-densities must be finite, or -inf for an impossible"
                f" point; replace those values or leave {name} out")
    for bad, what in ((np.isnan(values), "NaN"), (values == np.inf, "+inf")):
        if bad.any():
            raise ValidationError(f"{_first_bad(name, values, bad, what)}; {hint}")
    if name == "log_weights" and np.all(np.isneginf(values)):
        raise ValidationError(
            "log_weights are all -inf, so every sample has zero weight; at least "
            "one log-weight must be finite"
        )


def _float_dtype(x) -> np.dtype:
    # The plain constructor may hold numpy (even integer) arrays; compute in the
    # dtype JAX would use for them.
    dtype = jax.dtypes.canonicalize_dtype(x.dtype)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _check_names(parameters, d: int) -> tuple[str, ...]:
    if parameters is None:
        return _default_names(d)
    if isinstance(parameters, str):
        raise ValidationError(
            f"parameters must be a sequence of names; got the string {parameters!r}"
            f" (use [{parameters!r}] for a single parameter)"
        )
    names = tuple(parameters)
    bad = [p for p in names if not isinstance(p, str)]
    if bad:
        raise ValidationError(f"parameter names must be strings; got {bad[0]!r}")
    names = tuple(str(p) for p in names)  # numpy string scalars -> str
    if "" in names:
        raise ValidationError(
            f"parameter names must not be empty; got {names} (position "
            f"{names.index('')})"
        )
    if len(names) != d:
        raise ValidationError(
            f"got {len(names)} parameter names {names} for x with {d} columns; "
            "give one name per column"
        )
    dupes = sorted({p for p in names if names.count(p) > 1})
    if dupes:
        raise ValidationError(f"parameter names must be unique; repeated: {dupes}")
    return names


def _check_ddof(ddof) -> int:
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer)) \
            or ddof not in (0, 1):
        raise ValidationError(f"ddof must be 0 or 1; got {ddof!r}")
    return int(ddof)


def _check_quantile_q(q) -> None:
    """q: a numeric scalar or 1-D array; values in [0, 1] when concrete."""
    if isinstance(q, jax.core.Tracer):
        dtype, shape, values = q.dtype, q.shape, None
    else:
        try:
            values = np.asarray(q)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"q must be numeric probabilities in [0, 1]; got {type(q).__name__}"
            ) from exc
        dtype, shape = values.dtype, values.shape
    if dtype == bool or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise ValidationError(
            f"q must be numeric probabilities in [0, 1]; got dtype {dtype}"
        )
    if len(shape) > 1:
        raise ValidationError(f"q must be a scalar or 1-D; got shape {shape}")
    if values is not None:
        outside = ~((values >= 0) & (values <= 1))
        if outside.any():
            raise ValidationError(
                f"q must be in [0, 1]; got {values.flat[int(np.argmax(outside))]}"
            )


def _as_key(key) -> PRNGKey:
    """A typed key as it is, or an int seed made into one."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    _check_key(key)
    return key


def _check_key(key) -> None:
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise ValidationError(
            f"key must be a typed PRNG key from jax.random.key(seed); got "
            f"{type(key).__name__} with dtype {dtype}"
        )
    if key.shape != ():
        raise ValidationError(f"key must be a single key; got shape {key.shape}")


@functools.partial(jax.jit, static_argnums=2)
def _systematic_indices(key: PRNGKey, weights: Array, num_samples: int) -> Array:
    # One uniform offset, then a comb of num_samples evenly spaced points through
    # the weight CDF; each index appears floor(n W_i) or ceil(n W_i) times.
    comb = jnp.arange(num_samples, dtype=weights.dtype)
    u = (jax.random.uniform(key, dtype=weights.dtype) + comb) / num_samples
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.clip(idx, 0, weights.shape[0] - 1)


@functools.partial(jax.jit, static_argnums=2)
def _multinomial_indices(key: PRNGKey, weights: Array, num_samples: int) -> Array:
    return jax.random.categorical(key, jnp.log(weights), shape=(num_samples,))


# The weighted statistics below are jitted as a whole: run op by op, every new
# shape pays one compilation per primitive, which dominates for small inputs.


@jax.jit
def _normalise(log_weights: Array) -> Array:
    return log_weights - jax.nn.logsumexp(log_weights)


@jax.jit
def _kish_ess(log_weights: Array) -> Array:
    # (sum w)^2 / sum w^2, in log space so large log-weights do not overflow.
    lse = jax.nn.logsumexp
    return jnp.exp(2 * lse(log_weights) - lse(2 * log_weights))


def _warn_no_dof(weights, ddof: int) -> None:
    """Warn, as numpy does, when ``ddof=1`` leaves no degree of freedom: one
    sample holds all the weight (checked only for concrete weights)."""
    w = _concrete(weights) if ddof else None
    if w is not None and 1.0 - np.sum(np.asarray(w, np.float64) ** 2) <= 1e-12:
        warnings.warn(
            "ddof=1: one sample holds all the weight (effective sample size 1), so "
            "the unbiased moment is undefined (inf or NaN); use ddof=0",
            RuntimeWarning, stacklevel=3)


def _scaled_deviations(x: Array, weights: Array) -> tuple[Array, Array]:
    """Deviations from the weighted mean in units of each column's largest
    one (1 for a constant column), and those units: moments are summed in
    them, so that the squares of tiny deviations (a strain amplitude of 1e-21
    has squares below the float32 range, flushed to 0) do not vanish."""
    dx = x - weights @ x
    scale = jnp.max(jnp.abs(dx), axis=0)
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    return dx / scale, scale


@jax.jit
def _weighted_cov(x: Array, weights: Array, ddof) -> Array:
    dx, scale = _scaled_deviations(x, weights)
    c = (dx.T * weights) @ dx / (1.0 - ddof * jnp.sum(weights**2))
    return c * scale[:, None] * scale[None, :]


@jax.jit
def _weighted_std(x: Array, weights: Array, ddof) -> Array:
    dx, scale = _scaled_deviations(x, weights)
    return scale * jnp.sqrt(weights @ dx**2 / (1.0 - ddof * jnp.sum(weights**2)))


def _warn_cov_underflow(std, parameters) -> None:
    """Warn when a variance is below the range of its float type (it comes
    out 0 in :meth:`Samples.cov`; checked only for concrete values)."""
    s = _concrete(std)
    if s is None:
        return
    tiny = np.finfo(np.asarray(s).dtype).tiny
    names = parameters or [f"column {i}" for i in range(np.size(s))]
    small = [p for p, v in zip(names, np.asarray(s, np.float64))
             if 0 < v and v * v < tiny]
    if small:
        warnings.warn(
            f"the variances of {small} are below the range of "
            f"{np.asarray(s).dtype} and come out as 0 in cov(); std() is exact. "
            "Rescale those parameters, or enable jax_enable_x64",
            RuntimeWarning, stacklevel=3)


@jax.jit
def _weighted_quantile(x: Array, weights: Array, q: Array) -> Array:
    order = jnp.argsort(x, axis=0)
    xs = jnp.take_along_axis(x, order, axis=0)
    ws = weights[order]
    c = jnp.cumsum(ws, axis=0) - 0.5 * ws
    # Zero-weight points must not become interpolation nodes: replace each by the
    # previous positive-weight node (or the first one, before any).
    positive = ws > 0
    rows = jnp.arange(ws.shape[0])[:, None]
    prev = jax.lax.cummax(jnp.where(positive, rows, -1), axis=0)
    src = jnp.where(prev < 0, jnp.argmax(positive, axis=0)[None, :], prev)
    xs = jnp.take_along_axis(xs, src, axis=0)
    c = jnp.take_along_axis(c, src, axis=0)
    interp = jax.vmap(jnp.interp, in_axes=(None, 1, 1), out_axes=-1)
    return interp(q, c, xs)


@jax.jit
def _summary_stats(samples) -> tuple[Array, Array, Array]:
    return samples.mean(), samples.std(), samples.quantile(jnp.array([0.05, 0.5, 0.95]))


def _concrete_equal(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False


def _fresh_group(h5, path: str):
    if path in ("", "."):
        for name in list(h5.attrs):
            del h5.attrs[name]
        for name in list(h5):
            del h5[name]
        return h5
    if path in h5:
        del h5[path]
    return h5.create_group(path)


# Top-level groups of a checkpoint file (see aspire_jax.io.hdf5).
_CHECKPOINT_GROUPS = ("checkpoint", "history", "flow", "aspire_config",
                      "sampler_config")


def _name_from_root(h5, path: str, method: str) -> str:
    """The name, from the file's root and normalised, that ``path`` below
    ``h5`` (an open group, or None for a file's root) takes; ``""`` for the
    root itself. A ``..`` component is refused: HDF5 reads it as a link
    name, not as the parent group."""
    if ".." in str(path).split("/"):
        raise ValidationError(f"{method}: path {str(path)!r} has a '..' component; "
                              "name the group from the file's root instead")
    base = "/" if h5 is None else (getattr(h5, "name", None) or "/")
    name = posixpath.normpath(posixpath.join(base, str(path))).lstrip("/")
    return "" if name == "." else name


def _check_replaceable(h5, path: str) -> None:
    """Refuse to replace a group that holds something other than samples (a
    checkpoint's state, a flow, a user's data), or to write inside or create
    a group of the checkpoint layout, however ``path`` is spelt and from
    whichever group ``h5`` is."""
    root = path in ("", ".")
    name = _name_from_root(h5, path, "Samples.save")
    top = name.split("/")[0]
    if top in _CHECKPOINT_GROUPS and name != top:
        # Inside a checkpoint's own groups: a group there is read back as part
        # of the run (an extra history field damages the history).
        raise ValidationError(
            f"Samples.save would write /{name}, inside /{top}, a group of the "
            "checkpoint layout that resuming reads back; save to another group "
            "(e.g. path='samples' from the file's root)")
    target = h5 if root else h5.get(path)
    if target is None and top in _CHECKPOINT_GROUPS:
        raise ValidationError(
            f"Samples.save would create /{top}, a group name of the checkpoint "
            "layout; save to another group (e.g. path='samples')")
    if target is None or target.attrs.get("aspire_jax_type") == "Samples":
        return
    if root:
        held = list(target) + [f"attribute {a!r}" for a in target.attrs
                               if a not in ("aspire_jax_version", "file_format_version")]
        if not held:
            return
        what = "holds " + ", ".join(held[:4]) + (" ..." if len(held) > 4 else "")
    else:
        what = "exists"
    raise ValidationError(
        f"Samples.save would replace {target.name!r}, which {what} and was not "
        "written by Samples.save; save to another group (e.g. path='samples') or "
        "another file")


@struct.dataclass(eq=False)
class Samples:
    """Weighted samples in named parameters.

    Parameters
    ----------
    x : jax.Array
        Points, shape ``(n_samples, n_dims)``.
    parameters : tuple[str, ...] or None
        Column names (static metadata); ``("x_0", ..., "x_{d-1}")`` if None.
        Names of fields (``"log_prior"``, ...) are allowed, but the flat
        layouts (:meth:`to_dict`, :meth:`to_dataframe`) refuse them.
    log_likelihood, log_prior, log_q : jax.Array or None
        Per-sample log-densities, shape ``(n_samples,)``.
    log_weights : jax.Array or None
        Unnormalised log importance weights, shape ``(n_samples,)``; None means
        equal weights.
    log_evidence, log_evidence_error : jax.Array or None
        Scalar estimate of log Z and its standard error.

    Notes
    -----
    The constructor runs during every pytree unflatten (``jit``, ``vmap``,
    ``tree.map``), so it only converts lists to arrays and fills default
    names; it does not validate. Use :meth:`from_array` or the ``from_*``
    constructors for eager checks.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> s = Samples.from_array([[0.0, 1.0], [2.0, 3.0]], parameters=["a", "b"])
    >>> s["b"].tolist()
    [1.0, 3.0]
    >>> float(s.effective_sample_size)
    2.0
    """

    x: Array
    parameters: tuple[str, ...] | None = struct.field(pytree_node=False, default=None)
    log_likelihood: Array | None = None
    log_prior: Array | None = None
    log_q: Array | None = None
    log_weights: Array | None = None
    log_evidence: Array | None = None
    log_evidence_error: Array | None = None

    def __post_init__(self):
        for name in ("x",) + _PER_SAMPLE:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, _as_float(value, name))
        names = self.parameters
        if isinstance(names, list):
            object.__setattr__(self, "parameters", tuple(names))
        elif names is None:
            shape = getattr(self.x, "shape", None)
            if shape is not None and len(shape) == 2:
                object.__setattr__(self, "parameters", _default_names(shape[1]))

    def __getattr__(self, name):
        # Only reached when the lookup failed: point users of aspire to the
        # names here.
        raise missing("Samples", name)

    # -- construction -----------------------------------------------------------

    @classmethod
    def from_array(
        cls, x: ArrayLike, parameters=None, **fields: ArrayLike | None
    ) -> "Samples":
        """Build validated samples from an array-like.

        Parameters
        ----------
        x : jax.typing.ArrayLike
            Points, shape ``(n_samples, n_dims)`` with both at least 1;
            integers are cast to the default float dtype, complex numbers are
            refused.
        parameters : Sequence[str] or None
            One unique, non-empty name per column; defaults to ``x_0, x_1,
            ...``.
        **fields : jax.typing.ArrayLike or None
            Any of ``log_likelihood``, ``log_prior``, ``log_q``,
            ``log_weights`` (shape ``(n_samples,)``), ``log_evidence`` and
            ``log_evidence_error`` (scalars).

        Returns
        -------
        Samples

        Raises
        ------
        ValidationError
            If x is not 2-D with at least one sample and one column, a value
            is complex, a field has the wrong shape or an unknown name, the
            names do not match the columns (or one is empty), a per-sample
            field holds NaN or +inf, or the log-weights are all -inf. Points
            holding NaN are kept, with a warning.

        Notes
        -----
        ``-inf`` is legal in the per-sample fields: a log-density of an
        impossible point, or a log-weight of zero weight. Log-weights given
        in a wider float than the array dtype in use (float64 under JAX's
        default float32) are first shifted so that the largest finite one is
        0, which keeps their precision and leaves the weights unchanged. NaN
        and +inf are refused in all of them (a NaN log-likelihood is usually a bug in the
        code that produced it; aspire_jax's samplers store -inf there). Values
        are only checked when concrete, not while traced under ``jax.jit``.
        """
        unknown = sorted(set(fields) - set(_PER_SAMPLE + _SCALARS))
        if unknown:
            raise ValidationError(
                f"unknown Samples fields {unknown}; expected some of "
                f"{list(_PER_SAMPLE + _SCALARS)}"
            )
        x_in = x
        check_float32_range(x, parameters)
        x = _as_float(x, "x")
        if x.ndim != 2:
            raise ValidationError(
                f"x must be 2-D with shape (n_samples, n_dims); got shape {x.shape}"
                " (use x[:, None] for one parameter)"
            )
        n, d = x.shape
        if n == 0:
            raise ValidationError("x must hold at least one sample; got shape (0, d)")
        if d == 0:
            raise ValidationError(
                f"x must have at least one parameter column; got shape {x.shape}"
            )
        names = _check_names(parameters, d)
        warn_float32_resolution(x_in, names)
        _warn_nan_rows(x, names)
        values = {}
        for name, value in fields.items():
            if value is None:
                continue
            if name == "log_weights":
                value = _shift_log_weights(value)
            arr = _as_float(value, name)
            want = (n,) if name in _PER_SAMPLE else ()
            if arr.shape != want:
                raise ValidationError(
                    f"{name} must have shape {want} to match x with {n} samples; "
                    f"got shape {arr.shape}"
                )
            if name in _PER_SAMPLE:
                _check_field_values(name, arr)
            elif (name == "log_evidence_error" and not isinstance(arr, jax.core.Tracer)
                  and float(arr) < 0):
                raise ValidationError(
                    "log_evidence_error is a standard error and must not be "
                    f"negative; got {float(arr)}")
            values[name] = arr
        return cls(x, names, **values)

    @classmethod
    def from_dict(cls, data, parameters=None) -> "Samples":
        """Build samples from a flat or nested dict.

        Parameters
        ----------
        data : Mapping
            Either flat, one 1-D entry per parameter plus optional per-sample
            fields and evidence (as from ``to_dict(flat=True)``), or nested,
            with ``"x"`` of shape ``(n, d)`` and ``"parameters"``.
        parameters : Sequence[str] or None
            For flat dicts, which keys are parameters and in what order;
            default: every key that is not a field name, in dict order.

        Returns
        -------
        Samples

        Raises
        ------
        ValidationError
            If a column is missing or columns differ in length.
        """
        fields = {k: data[k] for k in _PER_SAMPLE + _SCALARS if k in data}
        if "x" in data and "parameters" in data and parameters is None:
            names = [str(p) for p in np.asarray(data["parameters"]).tolist()]
            return cls.from_array(data["x"], names, **fields)
        if parameters is None:
            names = [k for k in data if k not in _RESERVED]
        else:
            names = list(_check_names(parameters, len(parameters)))
        if not names:
            raise ValidationError(
                f"no parameter columns in dict with keys {list(data)}; pass a flat "
                "dict of parameter columns or a dict with 'x' and 'parameters'"
            )
        missing = [k for k in names if k not in data]
        if missing:
            raise ValidationError(f"parameters {missing} are not keys of the dict")
        cols = [np.asarray(data[k]) for k in names]
        for k, c in zip(names, cols):
            if c.ndim != 1:
                raise ValidationError(
                    f"column {k!r} has shape {c.shape}; every parameter column must "
                    "be 1-D, one value a sample")
            if c.shape != cols[0].shape:
                raise ValidationError(
                    f"column {k!r} has {c.shape[0]} values where {names[0]!r} has "
                    f"{cols[0].shape[0]}; every parameter column needs one value a "
                    "sample")
        return cls.from_array(np.stack(cols, axis=1), names, **fields)

    # -- sizes and weights ------------------------------------------------------

    @property
    def n_samples(self) -> int:
        """Number of samples ``n``."""
        return int(self.x.shape[0])

    @property
    def dims(self) -> int:
        """Number of parameters ``d``."""
        return int(self.x.shape[-1])

    def __len__(self) -> int:
        return self.n_samples

    def __contains__(self, name) -> bool:
        return name in (self.parameters or ())

    @property
    def log_weights_normalised(self) -> Array:
        """``log W_i``, shape ``(n_samples,)``, with ``sum_i W_i = 1``."""
        n = self.n_samples
        if self.log_weights is None:
            return jnp.full((n,), -np.log(n), dtype=_float_dtype(self.x))
        return _normalise(self.log_weights)

    @property
    def weights(self) -> Array:
        """Normalised weights ``W_i``, shape ``(n_samples,)``."""
        return jnp.exp(self.log_weights_normalised)

    @property
    def effective_sample_size(self) -> Array:
        """Kish effective sample size ``(sum w)^2 / sum w^2``, a scalar."""
        if self.log_weights is None:
            return jnp.asarray(self.n_samples, dtype=_float_dtype(self.x))
        return _kish_ess(self.log_weights)

    @property
    def efficiency(self) -> Array:
        """``ESS / n`` in (0, 1]."""
        return self.effective_sample_size / self.n_samples

    # -- weighted moments -------------------------------------------------------

    def mean(self) -> Array:
        """Weighted mean, shape ``(n_dims,)``.

        The arithmetic mean of every column: for a periodic parameter (a
        phase on [0, 2 pi) peaked near the wrap) it is not the centre of the
        posterior; take the angle of the weighted mean of ``exp(i x)``
        instead."""
        if self.log_weights is None:
            return jnp.mean(jnp.asarray(self.x, _float_dtype(self.x)), axis=0)
        return self.weights @ self.x

    def cov(self, ddof: int = 0) -> Array:
        """Weighted covariance, shape ``(n_dims, n_dims)``.

        Parameters
        ----------
        ddof : int
            0 normalises by the total weight; 1 applies the reliability-weight
            correction ``1 - sum W_i^2``, as ``numpy.cov(..., aweights=W)``
            (inf or NaN when one sample holds all the weight).

        Returns
        -------
        jax.Array

        Raises
        ------
        ValidationError
            If ``ddof`` is not the int 0 or 1.
        """
        ddof = _check_ddof(ddof)
        x = jnp.asarray(self.x, _float_dtype(self.x))
        weights = self.weights
        _warn_no_dof(weights, ddof)
        _warn_cov_underflow(_weighted_std(x, weights, 0), self.parameters)
        return _weighted_cov(x, weights, ddof)

    def std(self, ddof: int = 0) -> Array:
        """Weighted standard deviation, shape ``(n_dims,)``; see :meth:`cov`."""
        ddof = _check_ddof(ddof)
        x = jnp.asarray(self.x, _float_dtype(self.x))
        weights = self.weights
        _warn_no_dof(weights, ddof)
        return _weighted_std(x, weights, ddof)

    def quantile(self, q: ArrayLike) -> Array:
        """Weighted quantiles per parameter.

        Parameters
        ----------
        q : jax.typing.ArrayLike
            Probabilities in [0, 1], scalar or shape ``(k,)``.

        Returns
        -------
        jax.Array
            Shape ``(n_dims,)`` for scalar ``q``, else ``(k, n_dims)``.

        Notes
        -----
        Sorted values are placed at the mid-points of their weight, ``c_i =
        sum_{j<i} W_j + W_i / 2``, and interpolated linearly; zero-weight
        points are ignored. With equal weights this is ``numpy.quantile(...,
        method="hazen")``.

        ``quantile`` may be called under ``jax.jit``: the shape and dtype of
        ``q`` are always checked, its values only when ``q`` is concrete (a
        traced ``q`` outside [0, 1] is clamped to the extreme samples).

        Raises
        ------
        ValidationError
            If ``q`` is not numeric, has more than one dimension, or holds a
            value outside [0, 1] (or NaN).
        """
        _check_quantile_q(q)
        dtype = _float_dtype(self.x)
        q = jnp.asarray(q, dtype=dtype)
        return _weighted_quantile(jnp.asarray(self.x, dtype), self.weights, q)

    def summary(self) -> dict[str, dict[str, float]]:
        """Weighted mean, std and 5 / 50 / 95 % quantiles per parameter.

        Returns
        -------
        dict[str, dict[str, float]]
            ``{name: {"mean", "std", "q05", "q50", "q95"}}`` as Python floats.
        """
        mean, std, qs = jax.device_get(_summary_stats(self))
        return {
            name: {
                "mean": float(mean[i]),
                "std": float(std[i]),
                "q05": float(qs[0, i]),
                "q50": float(qs[1, i]),
                "q95": float(qs[2, i]),
            }
            for i, name in enumerate(self.parameters)
        }

    # -- selection --------------------------------------------------------------

    def _take(self, index) -> "Samples":
        per_sample = {
            k: getattr(self, k)[index]
            for k in _PER_SAMPLE
            if getattr(self, k) is not None
        }
        return self.replace(x=self.x[index], **per_sample)

    def resample(
        self, key: PRNGKey, n: int | None = None, method: str = "systematic"
    ) -> "Samples":
        """Draw equally weighted samples in proportion to the weights.

        Parameters
        ----------
        key : jax.Array or int
            Typed PRNG key, or an int seed.
        n : int or None
            Number of samples to draw; defaults to ``n_samples``.
        method : str
            ``"systematic"`` (low variance) or ``"multinomial"``.

        Returns
        -------
        Samples
            ``n`` samples with ``log_weights=None``; the evidence is kept.

        Raises
        ------
        ValidationError
            If the key is neither a typed key nor an int, ``n`` is not a
            positive int, the method is unknown, or the log-weights give no
            usable weights (checked when they are concrete).
        """
        key = _as_key(key)
        n = self.n_samples if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValidationError(f"n must be a positive int; got {n!r}")
        if method not in _METHODS:
            raise ValidationError(f"method must be one of {_METHODS}; got {method!r}")
        weights = self.weights
        values = _concrete(weights)
        if values is not None and not np.all(np.isfinite(values)):
            raise ValidationError(
                "log_weights give no usable weights (NaN, +inf, or all -inf); "
                "Samples.from_array points out the bad values"
            )
        pick = _systematic_indices if method == "systematic" else _multinomial_indices
        idx = pick(key, weights, int(n))
        return self._take(idx).replace(log_weights=None)

    def __getitem__(self, item):
        """Select samples (int, slice, index array, mask) or parameters.

        A parameter name returns its column, shape ``(n_samples,)``; a list of
        names returns Samples with those columns; an int returns Samples
        holding that one sample; a 1-D integer array (negative indices count
        from the end) or a boolean mask of length ``n_samples`` returns those
        samples.

        Raises
        ------
        KeyError
            If a parameter name is unknown.
        IndexError
            If an index is out of range, not an integer, a boolean that is not
            a mask of length ``n_samples``, or the selection holds no samples.
            Traced integer indices (under ``jit`` or ``vmap``) are not range
            checked; out of range, they are clamped as in JAX.
        """
        names = self.parameters or ()
        if isinstance(item, str):
            if item not in names:
                raise KeyError(f"no parameter {item!r}; the parameters are {names}")
            return self.x[:, names.index(item)]
        if (
            isinstance(item, (list, tuple))
            and item
            and all(isinstance(i, str) for i in item)
        ):
            missing = [i for i in item if i not in names]
            if missing:
                raise KeyError(f"no parameters {missing}; the parameters are {names}")
            cols = np.array([names.index(i) for i in item])
            return self.replace(x=self.x[:, cols], parameters=tuple(item))
        n = self.n_samples
        if isinstance(item, (bool, np.bool_)):
            raise IndexError(
                f"a boolean index must be a mask of length {n}; got {item!r}"
            )
        if isinstance(item, (int, np.integer)):
            if not -n <= item < n:
                raise IndexError(f"sample index {item} out of range for {n} samples")
            i = int(item) % n
            return self._take(slice(i, i + 1))
        if isinstance(item, slice):
            try:
                count = len(range(*item.indices(n)))
            except (TypeError, ValueError) as exc:
                raise IndexError(
                    f"slice bounds must be integers or None, with a nonzero step; "
                    f"got {item!r}"
                ) from exc
            if count == 0:
                raise IndexError(f"the slice {item!r} selects no samples of {n}")
            return self._take(item)
        return self._take(self._sample_index(item))

    def _sample_index(self, item):
        """Checked integer indices (shape ``(k,)``, k >= 1) for an array-like."""
        n = self.n_samples
        if isinstance(item, jax.core.Tracer):
            if not jnp.issubdtype(item.dtype, jnp.integer) or item.ndim > 1:
                raise IndexError(
                    "traced sample indices must be integers, a scalar or 1-D; got "
                    f"dtype {item.dtype} and shape {item.shape} (a boolean mask "
                    "must be concrete)"
                )
            return item[None] if item.ndim == 0 else item
        try:
            index = np.asarray(item)
        except (TypeError, ValueError) as exc:
            raise IndexError(
                f"sample indices must be integers or a boolean mask of length {n};"
                f" got {type(item).__name__}"
            ) from exc
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(
                    f"a boolean index must be a mask of length {n}; got shape "
                    f"{index.shape}"
                )
            if not index.any():
                raise IndexError("the boolean mask selects no samples")
            return np.flatnonzero(index)
        if index.size == 0:
            raise IndexError("the index selects no samples; it is empty")
        if index.dtype.kind not in "iu":
            raise IndexError(
                f"sample indices must be integers or a boolean mask of length {n};"
                f" got dtype {index.dtype}"
            )
        if index.ndim > 1:
            raise IndexError(
                f"integer sample indices must be a scalar or 1-D; got shape "
                f"{index.shape}"
            )
        out = (index < -n) | (index >= n)
        if out.any():
            raise IndexError(
                f"sample index {index.flat[int(np.argmax(out))]} out of range for "
                f"{n} samples"
            )
        return np.where(index < 0, index + n, index).reshape(-1)

    @classmethod
    def concatenate(cls, samples) -> "Samples":
        """Join samples along the sample axis.

        Parameters
        ----------
        samples : Sequence[Samples]
            With identical parameter names.

        Returns
        -------
        Samples
            Log-weights are joined as given (parts without weights count as
            ``log w = 0``), so each part should carry weights on the same
            scale: an SMC run's are of mean one, like an unweighted part's,
            and two runs of equal size weigh alike; importance sampling's are
            the raw ratios ``pi L / q``, whose mean is the evidence (rescale
            them with ``replace(log_weights=...)`` before mixing them with
            SMC parts). The evidence is kept only if every part carries the
            same value.

        Raises
        ------
        ValidationError
            If the list is empty, the names differ, or a per-sample field is
            present in some parts only.
        """
        parts = list(samples)
        if not parts or not all(isinstance(s, Samples) for s in parts):
            raise ValidationError("concatenate needs a non-empty list of Samples")
        names = parts[0].parameters
        for s in parts[1:]:
            if s.parameters != names:
                raise ValidationError(
                    f"cannot concatenate samples in {s.parameters} with samples in "
                    f"{names}; select matching parameters first"
                )
        out = {"x": jnp.concatenate([s.x for s in parts])}
        for name in _PER_SAMPLE:
            values = [getattr(s, name) for s in parts]
            if all(v is None for v in values):
                continue
            if name == "log_weights":
                values = [
                    jnp.zeros(s.n_samples, _float_dtype(s.x)) if v is None else v
                    for s, v in zip(parts, values)
                ]
            elif any(v is None for v in values):
                raise ValidationError(
                    f"cannot concatenate: {name} is set in some parts and None in "
                    "others; drop it or provide it everywhere"
                )
            out[name] = jnp.concatenate(values)
        for name in _SCALARS:
            first = getattr(parts[0], name)
            values = [getattr(s, name) for s in parts[1:]]
            if first is not None and all(
                v is not None and _concrete_equal(first, v) for v in values
            ):
                out[name] = first
        return cls(parameters=names, **out)

    # -- conversions ------------------------------------------------------------

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Copy to host as a dict of numpy arrays.

        Returns
        -------
        dict[str, numpy.ndarray]
            ``"x"``, ``"parameters"`` (a string array) and every field that is
            not None; ``Samples.from_dict`` reads it back.
        """
        out = {"x": np.asarray(self.x), "parameters": np.array(self.parameters)}
        for name in _PER_SAMPLE + _SCALARS:
            value = getattr(self, name)
            if value is not None:
                out[name] = np.asarray(value)
        return out

    def to_dict(self, flat: bool = True) -> dict:
        """Convert to a dict of numpy arrays.

        Parameters
        ----------
        flat : bool
            True: one 1-D column per parameter name plus the per-sample fields
            and evidence. False: the :meth:`to_numpy` layout, with
            ``"parameters"`` as a list.

        Returns
        -------
        dict

        Raises
        ------
        ValidationError
            If ``flat`` and a parameter is named like a field.
        """
        data = self.to_numpy()
        if not flat:
            data["parameters"] = list(self.parameters)
            return data
        clash = sorted(set(self.parameters) & set(_RESERVED))
        if clash:
            raise ValidationError(
                f"parameters {clash} clash with Samples field names in a flat dict;"
                " use to_dict(flat=False)"
            )
        x = data.pop("x")
        del data["parameters"]
        cols = {name: x[:, i] for i, name in enumerate(self.parameters)}
        return {**cols, **data}

    def plot_corner(self, parameters=None, fig=None, include_weights: bool = True,
                    **kwargs):
        """Corner plot of these samples.

        Parameters
        ----------
        parameters : Sequence[str] or None
            Names to show (all by default).
        fig : matplotlib.figure.Figure or None
            Existing figure with ``d * d`` axes to draw into.
        include_weights : bool
            Weight the histograms by :attr:`weights` (False: every point
            counts once, as the raw points of a weighted set).
        **kwargs
            Passed to :func:`aspire_jax.plotting.corner_plot` (``bins``,
            ``truths``, ``colors``, ``labels``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plotting import corner_plot

        if not isinstance(include_weights, (bool, np.bool_)):
            raise ValidationError(
                f"include_weights must be True or False; got {include_weights!r}")
        shown = self if include_weights else self.replace(log_weights=None)
        return corner_plot(shown, parameters=parameters, fig=fig, **kwargs)

    def to_dataframe(self):
        """Convert to a ``pandas.DataFrame``.

        Returns
        -------
        pandas.DataFrame
            One column per parameter and per-sample field; the evidence is in
            ``DataFrame.attrs``.

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install "aspire-jax[pandas]"``).
        ValidationError
            If a parameter is named like a per-sample field or an evidence
            attribute (its column would be lost); ``"x"`` is allowed.
        """
        clash = sorted(set(self.parameters) & set(_PER_SAMPLE + _SCALARS))
        if clash:
            raise ValidationError(
                f"parameters {clash} clash with Samples field names in a DataFrame;"
                " rename them (samples.replace(parameters=...)) or use"
                " to_dict(flat=False)"
            )
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "Samples.to_dataframe needs pandas, an optional dependency; install "
                'it with pip install "aspire-jax[pandas]"'
            ) from exc
        data = self.to_numpy()
        x = data.pop("x")
        del data["parameters"]
        columns = {name: x[:, i] for i, name in enumerate(self.parameters)}
        columns.update({k: data[k] for k in _PER_SAMPLE if k in data})
        frame = pd.DataFrame(columns)
        for k in _SCALARS:
            if k in data:
                frame.attrs[k] = float(data[k])
        return frame

    def save(self, h5, path: str = "samples") -> None:
        """Write to an HDF5 group: datasets for x and the per-sample fields,
        parameter names (JSON) and evidence as attributes.

        Parameters
        ----------
        h5 : h5py.Group or str or os.PathLike
            An open file or group, written into as it is; or a ``.h5`` /
            ``.hdf5`` path. A new file, or an existing file aspire_jax wrote
            (a checkpoint, say), is written atomically as checkpoints are
            (:func:`aspire_jax.io.write_checkpoint_file`): every other group
            is kept, and a failed write leaves the previous file unchanged.
            An existing HDF5 file aspire_jax did not write is the user's:
            the group is added to it in place, and the file is not marked
            as aspire_jax's.
        path : str
            Group below ``h5`` to (re)create; ``"."`` writes into ``h5``.

        Raises
        ------
        ValidationError
            If the path does not end in ``.h5`` / ``.hdf5``, or the group
            exists and was not written by :meth:`save` (a checkpoint's state
            or flow, a user's data).
        CheckpointError
            If the file cannot be opened (not HDF5, corrupt, held open for
            writing elsewhere, a newer format) or written (a full disk,
            permissions); a file written atomically is then unchanged.
        """
        if isinstance(h5, (str, os.PathLike)):
            return self._save_to_file(h5, path)
        _check_replaceable(h5, path)
        self._write_group(_fresh_group(h5, path))
        return None

    def _save_to_file(self, file, path: str) -> None:
        from aspire_jax.io.hdf5 import (AspireFile, _check_h5_path, _written_by_aspire,
                                        write_checkpoint_file)

        p = _check_h5_path(file)
        if not isinstance(path, str):
            raise ValidationError(
                f"path must be a str naming the group; got {type(path).__name__}")
        if p.exists():
            # Refuses a file that is not HDF5, is corrupt, held or newer.
            with AspireFile(p, "r") as f:
                ours = _written_by_aspire(f)
                _check_replaceable(f, path)
            if not ours:
                # The user's own file: added to in place, and left unstamped
                # so that checkpoint writes keep refusing to replace it.
                with AspireFile(p, "a") as f:
                    return self.save(f, path)
        # A new file, or one aspire_jax wrote (a checkpoint, say), is rebuilt
        # with every other group kept and renamed over the old one, so a failed
        # write (a full disk) leaves the old file whole.
        data = self.to_numpy()

        def write(group):
            self._write_group(group, data)

        write_checkpoint_file(p, state_bytes=None, keep_existing=True,
                              groups={path.strip("/") or ".": write})
        return None

    def _write_group(self, group, data=None) -> None:
        data = self.to_numpy() if data is None else data
        group.attrs["aspire_jax_type"] = "Samples"
        group.attrs["parameters"] = json.dumps(list(self.parameters))
        group.create_dataset("x", data=data["x"])
        for name in _PER_SAMPLE:
            if name in data:
                group.create_dataset(name, data=data[name])
        for name in _SCALARS:
            if name in data:
                group.attrs[name] = data[name]

    @classmethod
    def load(cls, h5, path: str = "samples") -> "Samples":
        """Read samples written by :meth:`save`.

        Parameters
        ----------
        h5 : h5py.Group or str or os.PathLike
            An open file or group, or a ``.h5`` / ``.hdf5`` path.
        path : str
            The group below ``h5``; ``"."`` reads ``h5`` itself.

        Returns
        -------
        Samples

        Raises
        ------
        CheckpointError
            If the group is missing or its contents are inconsistent.
        """
        if isinstance(h5, (str, os.PathLike)):
            from aspire_jax.io.hdf5 import AspireFile

            with AspireFile(h5, "r") as f:
                return cls.load(f, path)
        import h5py

        group = h5 if path in ("", ".") else h5.get(path)
        if (
            not isinstance(group, h5py.Group)
            or "x" not in group
            or "parameters" not in group.attrs
        ):
            raise CheckpointError(
                f"no samples at {path!r} in {h5.file.filename!r}; write them with "
                "Samples.save"
            )
        try:
            names = json.loads(group.attrs["parameters"])
            fields = {k: group[k][()] for k in _PER_SAMPLE if k in group}
            fields.update({k: group.attrs[k] for k in _SCALARS if k in group.attrs})
            return cls.from_array(group["x"][()], names, **fields)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"the samples at {group.name!r} are inconsistent: {exc}"
            ) from exc

    def __repr__(self) -> str:
        shape = getattr(self.x, "shape", None)
        present = [k for k in _PER_SAMPLE + _SCALARS if getattr(self, k) is not None]
        return (
            f"Samples(x: {shape}, parameters={self.parameters}, "
            f"fields={present})"
        )
