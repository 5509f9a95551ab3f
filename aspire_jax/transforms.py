"""Bijections between native parameter space and the real line.

Each parameter (column of ``x``) gets one of four kinds, chosen from its prior
bounds ``(lo, hi)``:

``"none"``
    both sides unbounded, ``y = x``.
``"lower"``
    only ``lo`` finite, ``y = log(x - lo)``.
``"upper"``
    only ``hi`` finite, ``y = log(hi - x)``.
``"bounded"``
    both finite, ``t = (x - lo) / (hi - lo)`` and ``y = logit(t)`` or
    ``y = probit(t) = Phi^{-1}(t)``.

After that an affine whitening ``u = (y - shift) / scale`` fitted on the
training samples puts every column at zero mean and unit variance. The fitted
numbers live in a :class:`TransformParams` pytree; :func:`forward` and
:func:`inverse` are pure functions of it, batched over any leading axes, each
returning the mapped points and ``log|det J|`` of the map it applies.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import ndtr, ndtri

from aspire_jax._types import Array, ArrayLike
from aspire_jax.errors import ValidationError

__all__ = [
    "KINDS",
    "BOUNDED_TRANSFORMS",
    "TransformParams",
    "fit_transform",
    "forward",
    "inverse",
    "wrap_periodic",
    "transform_config",
    "transform_from_config",
]

KINDS = ("none", "lower", "upper", "bounded")
BOUNDED_TRANSFORMS = ("logit", "probit")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_CONFIG_KEYS = frozenset(
    {"kinds", "lower", "upper", "shift", "scale", "bounded_transform", "eps"}
)


@struct.dataclass
class TransformParams:
    """Fitted parameters of the native <-> real-line map.

    Attributes
    ----------
    lower, upper
        ``(n_dims,)`` prior bounds, ``-inf`` / ``+inf`` on unbounded sides.
    shift, scale
        ``(n_dims,)`` affine whitening applied after the bounded map,
        ``u = (y - shift) / scale``. Zeros and ones when whitening is off.
    kinds
        Static tuple with one entry of :data:`KINDS` per dimension.
    bounded_transform
        Static name of the map used for ``"bounded"`` dimensions.
    eps
        Static clamp: in :func:`forward` a bounded point closer than
        ``eps * (hi - lo)`` to a bound is treated as lying at that distance.
    """

    lower: Array
    upper: Array
    shift: Array
    scale: Array
    kinds: tuple = struct.field(pytree_node=False)
    bounded_transform: str = struct.field(pytree_node=False, default="logit")
    eps: float = struct.field(pytree_node=False, default=1e-6)

    @property
    def n_dims(self) -> int:
        """Number of parameters the map acts on."""
        return len(self.kinds)


def _working_dtype(x: np.ndarray) -> np.dtype:
    if np.issubdtype(x.dtype, np.floating):
        return jax.dtypes.canonicalize_dtype(x.dtype)
    return jax.dtypes.canonicalize_dtype(np.float64)


def _check_samples(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValidationError(
            f"x must be a 2-D array of shape (n_samples, n_dims); got shape {x.shape}."
        )
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValidationError(
            f"x must have at least one sample and one dim; got shape {x.shape}."
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValidationError(f"x must be a real-valued array; got dtype {x.dtype}.")
    x = x.astype(_working_dtype(x))
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValidationError(
            f"x must be finite; x[{i}, {j}] = {_fmt(x[i, j])} ({int(bad.sum())} "
            "non-finite entries). Drop or repair those samples."
        )
    return x


def _check_weights(weights, n: int) -> np.ndarray | None:
    """``None``, or ``weights`` as float64 of shape ``(n,)`` rescaled to mean
    one: finite, non-negative and not all zero."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.shape != (n,) or w.dtype.kind not in "fiu":
        raise ValidationError(
            f"weights must be real numbers of shape ({n},), one per sample; got "
            f"dtype {w.dtype} and shape {w.shape}.")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w) & (w >= 0)) or not np.any(w > 0):
        raise ValidationError(
            "weights must be finite and >= 0, with at least one > 0; got "
            f"min {np.nanmin(w) if np.any(~np.isnan(w)) else np.nan}, "
            f"max {np.nanmax(w) if np.any(~np.isnan(w)) else np.nan}"
            f"{', and NaN' if np.any(np.isnan(w)) else ''}.")
    return w / np.mean(w)


def _check_bounds(prior_bounds: ArrayLike | None, n_dims: int, dtype) -> np.ndarray:
    if prior_bounds is None:
        bounds = np.empty((n_dims, 2), dtype=dtype)
        bounds[:, 0], bounds[:, 1] = -np.inf, np.inf
        return bounds
    bounds = np.asarray(prior_bounds, dtype=np.float64)
    if bounds.shape != (n_dims, 2):
        raise ValidationError(
            f"prior_bounds must have shape (n_dims, 2) = ({n_dims}, 2); got shape "
            f"{bounds.shape}. Use -inf / inf for unbounded sides."
        )
    if np.isnan(bounds).any():
        j = int(np.argwhere(np.isnan(bounds))[0, 0])
        raise ValidationError(
            f"prior_bounds[{j}] = {bounds[j].tolist()} contains NaN; use -inf / inf "
            "for unbounded sides."
        )
    bad = ~(bounds[:, 0] < bounds[:, 1])
    if bad.any():
        j = int(np.argwhere(bad)[0, 0])
        raise ValidationError(
            f"prior_bounds[{j}] = {bounds[j].tolist()} must satisfy lower < upper."
        )
    return bounds.astype(dtype)


def _fmt(value) -> str:
    return f"{float(value):.9g}"


def _check_inside(x: np.ndarray, bounds: np.ndarray) -> None:
    for j in range(x.shape[1]):
        lo, hi = bounds[j]
        for side, bad in (("lower", ~(x[:, j] > lo)), ("upper", ~(x[:, j] < hi))):
            if bad.any():
                i = int(np.argmax(bad))
                raise ValidationError(
                    f"sample x[{i}, {j}] = {_fmt(x[i, j])} is not strictly inside the "
                    f"prior bounds ({_fmt(lo)}, {_fmt(hi)}) of parameter {j} (it "
                    f"violates the {side} bound; {int(bad.sum())} samples do, after "
                    f"conversion to {x.dtype}). Widen prior_bounds[{j}] or drop those "
                    "samples."
                )


def _kind_of(lo: float, hi: float) -> str:
    if np.isfinite(lo) and np.isfinite(hi):
        return "bounded"
    if np.isfinite(lo):
        return "lower"
    if np.isfinite(hi):
        return "upper"
    return "none"


def _check_settings(bounded_transform: str, eps: float) -> None:
    if bounded_transform not in BOUNDED_TRANSFORMS:
        raise ValidationError(
            f"bounded_transform must be one of {BOUNDED_TRANSFORMS}; got "
            f"{bounded_transform!r}."
        )
    if not (isinstance(eps, (int, float)) and 0.0 <= eps < 0.5):
        raise ValidationError(f"eps must be a float in [0, 0.5); got {eps!r}.")


def fit_transform(
    x: ArrayLike,
    *,
    prior_bounds: ArrayLike | None = None,
    bounded_transform: str = "logit",
    affine: bool = True,
    eps: float = 1e-6,
    weights: ArrayLike | None = None,
) -> TransformParams:
    """Fit the parameter transform to training samples.

    Parameters
    ----------
    x
        ``(n_samples, n_dims)`` finite samples in native space.
    prior_bounds
        ``None`` (every parameter unbounded) or ``(n_dims, 2)`` array-like of
        ``(lower, upper)`` pairs with ``-inf`` / ``inf`` for open sides.
    bounded_transform
        ``"logit"`` or ``"probit"``: the map used where both bounds are finite.
    affine
        Whether to whiten the unbounded samples to zero mean and unit standard
        deviation per dimension. With ``False`` shift is 0 and scale 1.
    eps
        Clamp in ``[0, 0.5)`` for bounded dimensions, see :class:`TransformParams`.
    weights
        ``None`` or ``(n_samples,)`` non-negative weights of the samples: the
        whitening then uses the weighted mean and standard deviation.

    Returns
    -------
    TransformParams
        The fitted map.

    Raises
    ------
    ValidationError
        If ``x`` is not a finite 2-D array, ``prior_bounds`` has the wrong shape
        or an empty interval, a sample is not strictly inside its bounds, or a
        setting is out of range, or ``weights`` are malformed.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.2, 1.0], [0.5, 3.0], [0.9, 2.0]])
    >>> params = fit_transform(x, prior_bounds=[[0.0, 1.0], [0.0, np.inf]])
    >>> params.kinds
    ('bounded', 'lower')
    """
    x = _check_samples(x)
    w = _check_weights(weights, x.shape[0])
    _check_settings(bounded_transform, eps)
    if not isinstance(affine, (bool, np.bool_)):
        raise ValidationError(f"affine must be True or False; got {affine!r}.")
    n_dims = x.shape[1]
    bounds = _check_bounds(prior_bounds, n_dims, x.dtype)
    _check_inside(x, bounds)

    kinds = tuple(_kind_of(lo, hi) for lo, hi in bounds)
    params = TransformParams(
        lower=jnp.asarray(bounds[:, 0]),
        upper=jnp.asarray(bounds[:, 1]),
        shift=jnp.zeros(n_dims, dtype=x.dtype),
        scale=jnp.ones(n_dims, dtype=x.dtype),
        kinds=kinds,
        bounded_transform=bounded_transform,
        eps=float(eps),
    )
    if not affine:
        return params
    y, _ = jax.jit(_to_real_line)(params, jnp.asarray(x))
    y = np.asarray(y, dtype=np.float64)
    if w is None:
        shift = y.mean(axis=0)
        std = y.std(axis=0) if y.shape[0] > 1 else np.ones(n_dims)
    else:
        shift = np.average(y, axis=0, weights=w)
        std = (np.sqrt(np.average((y - shift) ** 2, axis=0, weights=w))
               if np.count_nonzero(w) > 1 else np.ones(n_dims))
    # A constant column keeps unit scale rather than dividing by zero.
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return params.replace(
        shift=jnp.asarray(shift, dtype=x.dtype), scale=jnp.asarray(scale, dtype=x.dtype)
    )


def _groups(kinds: tuple) -> list[tuple[str, np.ndarray]]:
    out = []
    for kind in KINDS:
        idx = np.array([j for j, k in enumerate(kinds) if k == kind], dtype=np.int32)
        if idx.size:
            out.append((kind, idx))
    return out


def _next_up(a: Array) -> Array:
    # nextafter alone can return a subnormal, which the CPU flushes to zero.
    return jnp.maximum(jnp.nextafter(a, jnp.inf), a + jnp.finfo(a.dtype).tiny)


def _next_down(a: Array) -> Array:
    return jnp.minimum(jnp.nextafter(a, -jnp.inf), a - jnp.finfo(a.dtype).tiny)


def _bounded_forward(x, lo, hi, name, eps):
    # Both gaps are measured from their own bound so that points near the upper
    # bound keep their precision (1 - t would cancel).
    width = hi - lo
    floor = max(eps, float(jnp.finfo(x.dtype).tiny))
    a = jnp.clip((x - lo) / width, floor, 1.0)
    b = jnp.clip((hi - x) / width, floor, 1.0)
    if name == "logit":
        y = jnp.log(a) - jnp.log(b)
        return y, -jnp.log(width) - jnp.log(a) - jnp.log(b)
    # Evaluate ndtri on the smaller gap only: ndtri(1 - small) loses every digit.
    # A select rather than jnp.minimum, whose gradient splits in half at a == b.
    lower_half = a <= b
    y = jnp.where(lower_half, 1.0, -1.0) * ndtri(jnp.where(lower_half, a, b))
    return y, -jnp.log(width) + 0.5 * y**2 + _HALF_LOG_2PI


def _bounded_inverse(y, lo, hi, name):
    width = hi - lo
    if name == "logit":
        t_lo, t_hi = jax.nn.sigmoid(y), jax.nn.sigmoid(-y)
        logdet = jnp.log(width) + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
    else:
        t_lo, t_hi = ndtr(y), ndtr(-y)
        logdet = jnp.log(width) - 0.5 * y**2 - _HALF_LOG_2PI
    x = jnp.where(y < 0, lo + width * t_lo, hi - width * t_hi)
    # For large |y| the gap rounds to zero; keep x in the open interval.
    return jnp.clip(x, _next_up(lo), _next_down(hi)), logdet


def _to_real_line(params: TransformParams, x: Array) -> tuple[Array, Array]:
    """Bounded map alone on ``(m, n_dims)``; per-dimension log-det."""
    y = x
    logdet = jnp.zeros_like(x)
    tiny = jnp.finfo(x.dtype).tiny
    for kind, idx in _groups(params.kinds):
        if kind == "none":
            continue
        xk, lo, hi = x[:, idx], params.lower[idx], params.upper[idx]
        if kind == "lower":
            yk = jnp.log(jnp.maximum(xk - lo, tiny))
            ldk = -yk
        elif kind == "upper":
            yk = jnp.log(jnp.maximum(hi - xk, tiny))
            ldk = -yk
        else:
            yk, ldk = _bounded_forward(xk, lo, hi, params.bounded_transform, params.eps)
        y = y.at[:, idx].set(yk)
        logdet = logdet.at[:, idx].set(ldk)
    return y, logdet


def _from_real_line(params: TransformParams, y: Array) -> tuple[Array, Array]:
    x = y
    logdet = jnp.zeros_like(y)
    for kind, idx in _groups(params.kinds):
        if kind == "none":
            continue
        yk, lo, hi = y[:, idx], params.lower[idx], params.upper[idx]
        if kind == "lower":
            xk = jnp.maximum(lo + jnp.exp(yk), _next_up(lo))
            ldk = yk
        elif kind == "upper":
            xk = jnp.minimum(hi - jnp.exp(yk), _next_down(hi))
            ldk = yk
        else:
            xk, ldk = _bounded_inverse(yk, lo, hi, params.bounded_transform)
        x = x.at[:, idx].set(xk)
        logdet = logdet.at[:, idx].set(ldk)
    return x, logdet


def _flatten(params: TransformParams, x: ArrayLike, name: str) -> tuple[Array, tuple]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(params.lower.dtype)
    if x.ndim < 1 or x.shape[-1] != params.n_dims:
        raise ValidationError(
            f"{name} must have shape (..., {params.n_dims}); got shape {x.shape}."
        )
    return x.reshape(-1, params.n_dims), x.shape[:-1]


@jax.jit
def forward(params: TransformParams, x: ArrayLike) -> tuple[Array, Array]:
    """Map native points to the whitened real line.

    Parameters
    ----------
    params
        Fitted map from :func:`fit_transform`.
    x
        ``(..., n_dims)`` points in native space.

    Returns
    -------
    y : jax.Array
        ``(..., n_dims)`` unbounded, whitened points.
    logdet : jax.Array
        ``(...)`` ``log|det dy/dx|``.

    Notes
    -----
    For a bounded dimension the normalised distances ``(x - lo) / (hi - lo)``
    and ``(hi - x) / (hi - lo)`` are clamped to at least ``eps`` (at least the
    smallest normal float when ``eps = 0``), so points on or beyond a bound
    map to finite values. The clamp caps ``|y|`` before whitening at
    ``log((1 - eps) / eps)`` (logit, 13.8 for ``eps = 1e-6``) or
    ``-ndtri(eps)`` (probit, 4.75); inside that range :func:`inverse` undoes
    this map exactly. One-sided bounds only floor ``x - lo`` (``hi - x``) at
    the smallest normal float. Compiled with ``jax.jit`` on first use.
    """
    x2, batch = _flatten(params, x, "x")
    y, ld = _to_real_line(params, x2)
    y = (y - params.shift) / params.scale
    logdet = jnp.sum(ld, axis=-1) - jnp.sum(jnp.log(params.scale))
    return y.reshape(batch + (params.n_dims,)), logdet.reshape(batch)


@jax.jit
def inverse(params: TransformParams, y: ArrayLike) -> tuple[Array, Array]:
    """Map whitened real-line points back to native space.

    Parameters
    ----------
    params
        Fitted map from :func:`fit_transform`.
    y
        ``(..., n_dims)`` unbounded points.

    Returns
    -------
    x : jax.Array
        ``(..., n_dims)`` native points, strictly inside any finite bounds.
    logdet : jax.Array
        ``(...)`` ``log|det dx/dy|``; finite for any finite ``y``.

    Notes
    -----
    No ``eps`` clamp is applied here: where a gap to a bound rounds to zero the
    output is moved to the nearest float inside the bound. An ``x`` that lands
    within ``eps * (hi - lo)`` of a bound is mapped back by :func:`forward` to
    the clamp edge, not to ``y``.
    """
    y2, batch = _flatten(params, y, "y")
    y2 = y2 * params.scale + params.shift
    x, ld = _from_real_line(params, y2)
    logdet = jnp.sum(ld, axis=-1) + jnp.sum(jnp.log(params.scale))
    return x.reshape(batch + (params.n_dims,)), logdet.reshape(batch)


def wrap_periodic(x: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> Array:
    """Wrap ``x`` into the half-open interval ``[lower, upper)``.

    Parameters
    ----------
    x
        Points of any shape.
    lower, upper
        Finite period boundaries, broadcastable against ``x``, ``lower < upper``.

    Returns
    -------
    jax.Array
        ``lower + (x - lower) mod (upper - lower)``, same shape as ``x``.

    Notes
    -----
    Pure and jit-safe, so the bounds are not checked; infinite or empty periods
    give meaningless output.
    """
    x = jnp.asarray(x)
    lower = jnp.asarray(lower, dtype=x.dtype)
    upper = jnp.asarray(upper, dtype=x.dtype)
    wrapped = lower + jnp.mod(x - lower, upper - lower)
    # Rounding can land exactly on the excluded upper end.
    return jnp.where(wrapped >= upper, lower, wrapped)


def _finite_or_none(values: Array) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values)]


def transform_config(params: TransformParams) -> dict:
    """Describe a fitted map as a JSON-able dict.

    Parameters
    ----------
    params
        Fitted map.

    Returns
    -------
    dict
        Keys ``kinds``, ``lower``, ``upper`` (``None`` for infinite bounds),
        ``shift``, ``scale``, ``bounded_transform`` and ``eps``. Float32 values
        survive the round trip through Python floats exactly.
    """
    return {
        "kinds": list(params.kinds),
        "lower": _finite_or_none(params.lower),
        "upper": _finite_or_none(params.upper),
        "shift": [float(v) for v in np.asarray(params.shift)],
        "scale": [float(v) for v in np.asarray(params.scale)],
        "bounded_transform": params.bounded_transform,
        "eps": float(params.eps),
    }


def transform_from_config(config: dict) -> TransformParams:
    """Rebuild a map from :func:`transform_config` output.

    Parameters
    ----------
    config
        Dict with the keys written by :func:`transform_config`.

    Returns
    -------
    TransformParams
        The map, with arrays in the default float dtype.

    Raises
    ------
    ValidationError
        If keys are missing or unknown, lengths disagree, a kind is unknown or
        the kinds disagree with the bounds.
    """
    if not isinstance(config, dict):
        raise ValidationError(f"config must be a dict; got {type(config).__name__}.")
    keys = set(config)
    if keys != _CONFIG_KEYS:
        raise ValidationError(
            f"transform config keys must be {sorted(_CONFIG_KEYS)}; missing "
            f"{sorted(_CONFIG_KEYS - keys)}, unknown {sorted(keys - _CONFIG_KEYS)}."
        )
    kinds = tuple(config["kinds"])
    n_dims = len(kinds)
    for name in ("lower", "upper", "shift", "scale"):
        if len(config[name]) != n_dims:
            raise ValidationError(
                f"transform config {name!r} has length {len(config[name])}; "
                f"expected {n_dims} (one per kind)."
            )
    _check_settings(config["bounded_transform"], config["eps"])
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    lower = np.array([-np.inf if v is None else v for v in config["lower"]], dtype)
    upper = np.array([np.inf if v is None else v for v in config["upper"]], dtype)
    for j, kind in enumerate(kinds):
        if kind not in KINDS:
            raise ValidationError(
                f"unknown transform kind {kind!r} at index {j}; use one of {KINDS}."
            )
        if kind != _kind_of(lower[j], upper[j]) or not lower[j] < upper[j]:
            raise ValidationError(
                f"kind {kind!r} at index {j} does not match bounds "
                f"({lower[j]}, {upper[j]})."
            )
    return TransformParams(
        lower=jnp.asarray(lower),
        upper=jnp.asarray(upper),
        shift=jnp.asarray(np.asarray(config["shift"], dtype=dtype)),
        scale=jnp.asarray(np.asarray(config["scale"], dtype=dtype)),
        kinds=kinds,
        bounded_transform=config["bounded_transform"],
        eps=float(config["eps"]),
    )
