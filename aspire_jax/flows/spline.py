"""Elementwise rational-quadratic spline, written for throughput on batches.

The map is the monotone rational-quadratic spline of Durkan et al. (2019) on
``[-B, B]`` with ``K`` bins, continued linearly outside with the end-knot
slopes. It is parametrised exactly as ``distrax.RationalQuadraticSpline`` with
its defaults (``min_bin_size = min_knot_slope = 1e-4``, unconstrained boundary
slopes), so parameters trained with either are interchangeable: the last axis
of ``params`` holds ``K`` unnormalised widths, ``K`` unnormalised heights and
``K + 1`` unnormalised knot slopes.

The difference is in how a point finds its bin. distrax evaluates a scalar
function under ``jnp.vectorize``, stacking the knot arrays and forming masked
sums over all bins for every point; here the bin index is the count of
interior knots at or below the point and the six numbers of that bin are
gathered once with ``take_along_axis``. On CPU this is several times faster
at the batch sizes of an SMC run, and the flow is evaluated at every MCMC
sweep. The knot arrays keep the bins on their leading axis, so the softmax,
the running sums and the bin search act elementwise on whole batches instead
of reducing over a short minor axis (about a third faster again on CPU).

In bin ``k`` with knots ``(x_k, y_k)``, ``(x_{k+1}, y_{k+1})``, knot slopes
``d_k, d_{k+1}``, width ``w``, height ``h`` and ``s = h / w``, put
``t = (x - x_k) / w``. Then

    y = y_k + h (s t^2 + d_k t (1 - t)) / (s + (d_{k+1} + d_k - 2 s) t (1 - t)),
    dy/dx = s^2 (d_{k+1} t^2 + 2 s t (1 - t) + d_k (1 - t)^2)
            / (s + (d_{k+1} + d_k - 2 s) t (1 - t))^2,

and the inverse solves the quadratic in ``t`` with the root that is stable
for either sign of its linear coefficient.

References
----------
Durkan, Bekasov, Murray, Papamakarios (2019), "Neural spline flows",
NeurIPS, arXiv:1906.04032.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from aspire_jax._types import Array
from aspire_jax.flows._distrax import distrax

__all__ = ["RationalQuadraticSpline"]

_MIN_BIN = 1e-4
_MIN_SLOPE = 1e-4
# softplus(0 + offset) + min_slope == 1: zero parameters give unit slopes.
_SLOPE_OFFSET = math.log(math.expm1(1.0 - _MIN_SLOPE))


def _unit_clamp(v: Array) -> Array:
    # Clamp to [0, 1] against round-off. Unlike jnp.clip, the gradient is 1 at
    # the ends themselves, so points exactly on a knot differentiate correctly.
    return jnp.where(v < 0.0, 0.0, jnp.where(v > 1.0, 1.0, v))


def _softplus(v: Array) -> Array:
    # log(1 + e^v) without overflow, in fewer operations than
    # jax.nn.softplus (a logaddexp with special cases for infinities).
    return jnp.maximum(v, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(v)))


class RationalQuadraticSpline(distrax.Bijector):
    """Monotone rational-quadratic spline acting elementwise (event rank 0).

    Parameters
    ----------
    params
        ``(..., 3 * K + 1)`` unnormalised spline parameters; the batch shape
        ``...`` must broadcast against the inputs.
    range_min, range_max
        The interval on which the spline acts (identity-length on both axes).
    """

    def __init__(self, params: Array, range_min: float, range_max: float):
        super().__init__(event_ndims_in=0)
        n_bins = (params.shape[-1] - 1) // 3
        if params.shape[-1] != 3 * n_bins + 1 or n_bins < 1:
            raise ValueError(
                f"spline parameters need 3K + 1 entries; got {params.shape[-1]}."
            )
        if not range_min < range_max:
            raise ValueError(
                f"need range_min < range_max; got {range_min}, {range_max}")
        span = range_max - range_min
        if n_bins * _MIN_BIN > span:
            raise ValueError(f"{n_bins} bins do not fit in an interval of {span}.")
        self._n_bins = n_bins
        self._lo = range_min
        self._hi = range_max
        # Bins on the leading axis: every reduction and selection below is
        # then an elementwise operation over whole batch arrays.
        p = jnp.moveaxis(params, -1, 0)

        # Knot j sits at range_min plus the first j bin sizes: a product with
        # a lower-triangular matrix of ones over the leading bin axis. Each
        # knot is then its own sum (a running sum would carry its rounding
        # from knot to knot), and the end knots are set exactly.
        partial_sums = np.tril(np.ones((n_bins + 1, n_bins)), k=-1)
        partial_sums[-1] = 0.0

        def knots(raw):
            size = (jax.nn.softmax(raw, axis=0) * (span - n_bins * _MIN_BIN)
                    + _MIN_BIN)
            # Full precision: a reduced-precision matmul (TF32 on some GPUs)
            # could collapse a minimum-size bin to zero width.
            pos = range_min + jnp.tensordot(partial_sums.astype(raw.dtype), size,
                                            axes=1, precision=jax.lax.Precision.HIGHEST)
            return pos.at[-1].set(range_max)

        self._x = knots(p[:n_bins])
        self._y = knots(p[n_bins:2 * n_bins])
        self._d = _softplus(p[2 * n_bins:] + _SLOPE_OFFSET) + _MIN_SLOPE

    def _bin(self, v: Array, pos):
        """The knots of the bin holding ``v`` (clamped to an end bin)."""
        shape = (self._n_bins + 1,) + jnp.broadcast_shapes(v.shape, pos.shape[1:])

        def full(a):
            # Parameters with fewer batch axes than the points broadcast from
            # the right, behind the leading bin axis.
            a = a.reshape(a.shape[:1] + (1,) * (len(shape) - a.ndim) + a.shape[1:])
            return jnp.broadcast_to(a, shape)

        x, y, d = (full(a) for a in (self._x, self._y, self._d))
        k = jnp.sum(v >= full(pos)[1:-1], axis=0)[None]

        def at(a, offset):
            return jnp.take_along_axis(a, k + offset, axis=0)[0]

        return at(x, 0), at(x, 1), at(y, 0), at(y, 1), at(d, 0), at(d, 1)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """Computes ``y = f(x)`` and ``log f'(x)``."""
        x0, x1, y0, y1, d0, d1 = self._bin(x, self._x)
        w, h = x1 - x0, y1 - y0
        s = h / w
        t = _unit_clamp((x - x0) / w)
        tt = t * (1.0 - t)
        denom = s + (d1 + d0 - 2.0 * s) * tt
        y = y0 + h * (s * t * t + d0 * tt) / denom
        slope = _slope(s, t, tt, denom, d0, d1)
        y, slope = self._linear_tails(x, y, slope, self._x, self._y, 1.0)
        return y, jnp.log(slope)

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """Computes ``x = f^{-1}(y)`` and ``log |d f^{-1}/dy|``."""
        x0, x1, y0, y1, d0, d1 = self._bin(y, self._y)
        w, h = x1 - x0, y1 - y0
        s = h / w
        r = _unit_clamp((y - y0) / h)
        # (s + c t(1-t)) r = s t^2 + d0 t(1-t) with c = d1 + d0 - 2s, i.e.
        # a t^2 + b t + q = 0 with the coefficients below; the root in [0, 1]
        # is 2q / (-b - sqrt(disc)) for b >= 0 and (-b + sqrt(disc)) / 2a else.
        c = d1 + d0 - 2.0 * s
        b = d0 - c * r
        a = s - b
        q = -s * r
        disc = b * b - 4.0 * a * q
        root = jnp.where(disc > 0.0,
                         jnp.sqrt(jnp.maximum(disc, jnp.finfo(disc.dtype).tiny)), 0.0)
        # Choose numerator and denominator before dividing: the branch not
        # taken may be 0 / 0 (a = 0 at the identity), and a NaN there would
        # still poison the gradient.
        positive = b >= 0.0
        t = (jnp.where(positive, 2.0 * q, -b + root)
             / jnp.where(positive, -b - root, 2.0 * a))
        t = _unit_clamp(t)
        x = x0 + w * t
        tt = t * (1.0 - t)
        denom = s + c * tt
        slope = _slope(s, t, tt, denom, d0, d1)
        x, slope = self._linear_tails(y, x, slope, self._y, self._x, -1.0)
        return x, -jnp.log(slope)

    def _linear_tails(self, v, out, slope, v_pos, out_pos, sign):
        """Continue ``out`` linearly beyond the end knots; ``slope`` is the
        forward derivative ``f'`` (the end-knot slope in a tail)."""
        below, above = v <= v_pos[0], v >= v_pos[-1]
        d_lo, d_hi = self._d[0], self._d[-1]
        rate_lo, rate_hi = (d_lo, d_hi) if sign > 0 else (1.0 / d_lo, 1.0 / d_hi)
        out = jnp.where(below, out_pos[0] + (v - v_pos[0]) * rate_lo, out)
        out = jnp.where(above, out_pos[-1] + (v - v_pos[-1]) * rate_hi, out)
        slope = jnp.where(below, d_lo, jnp.where(above, d_hi, slope))
        return out, slope


def _slope(s, t, tt, denom, d0, d1):
    """``f'`` inside a bin, ``s^2 (d1 t^2 + 2 s t (1 - t) + d0 (1 - t)^2) /
    denom^2``. One logarithm of the product, taken once the tails are
    merged in, instead of a logarithm per factor and per tail: every
    logarithm is a block of generated code that XLA compiles."""
    return (s / denom) ** 2 * (d1 * t * t + 2.0 * s * tt + d0 * (1.0 - t) ** 2)
