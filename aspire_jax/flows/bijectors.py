"""Coupling layers of the flow, built from distrax bijectors.

Together with :mod:`aspire_jax.flows.spline` this is where distrax is used.
A coupling layer splits the dimensions with a boolean mask ``m``: masked
dimensions ``x_A`` pass through unchanged and condition an elementwise
bijector ``f`` applied to the others ``x_B``,

    y_A = x_A,   y_B = f(x_B; g(x_A)),
    log|det dy/dx| = sum_{i in B} log|f'(x_i; g(x_A))|,

where the conditioner ``g`` is a small MLP. Two inner bijectors are offered:

``"spline"``
    a monotone rational-quadratic spline on ``[-B, B]`` with ``K`` bins,
    linear outside the interval (Durkan et al. 2019): a distrax bijector of
    :mod:`aspire_jax.flows.spline`, parametrised as
    ``distrax.RationalQuadraticSpline`` but several times faster on batches.
``"affine"``
    ``f(x) = shift + exp(s) * x`` with ``s = S * tanh(raw / S)``, so that one
    layer never rescales by more than ``exp(S)``; ``distrax.ScalarAffine``.

The layer gathers ``x_A`` and ``x_B`` with static indices, so the conditioner
emits parameters for the transformed half only and the spline is evaluated on
that half only. This computes the same map as ``distrax.MaskedCoupling`` but
at about half the cost, which is most of the training time.

The conditioner's last layer starts at zero, and zero parameters make both
inner bijectors the identity, so every layer starts as the identity map; the
hidden layers are random, so gradients reach them after the first step.

With one dimension there is nothing to condition on: the conditioner sees a
constant zero input and the layer is an unconditional spline or affine map
with learnable parameters.

References
----------
Durkan, Bekasov, Murray, Papamakarios (2019), "Neural spline flows",
NeurIPS, arXiv:1906.04032.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from aspire_jax._types import Array
from aspire_jax.flows._distrax import distrax
from aspire_jax.flows.spline import RationalQuadraticSpline

__all__ = [
    "COUPLING_KINDS",
    "coupling_masks",
    "Conditioner",
    "SubsetCoupling",
    "CouplingStack",
]

COUPLING_KINDS = ("spline", "affine")

# Bound S on the per-layer log-scale of affine couplings.
_AFFINE_MAX_LOG_SCALE = 3.0


def coupling_masks(n_dims: int, n_layers: int) -> tuple[np.ndarray, ...]:
    """Boolean masks of the coupling layers (True = passes through unchanged).

    Parameters
    ----------
    n_dims
        Number of dimensions.
    n_layers
        Number of coupling layers.

    Returns
    -------
    tuple of numpy.ndarray
        ``n_layers`` boolean arrays of shape ``(n_dims,)``.

    Notes
    -----
    Layers come in pairs whose masks are complements, so each pair transforms
    every dimension once. Successive pairs alternate between an even/odd split
    and a first-half/second-half split, which lets every dimension influence
    every other within four layers. With ``n_dims == 1`` every mask is False.
    """
    if n_dims == 1:
        return tuple(np.zeros(1, dtype=bool) for _ in range(n_layers))
    index = np.arange(n_dims)
    masks = []
    for layer in range(n_layers):
        if (layer // 2) % 2 == 0:
            mask = index % 2 == 0
        else:
            mask = index < n_dims // 2
        masks.append(mask if layer % 2 == 0 else ~mask)
    return tuple(masks)


class Conditioner(nn.Module):
    """MLP mapping ``(..., n_in)`` to ``(..., n_out, n_params)``.

    Attributes
    ----------
    n_out
        Number of transformed dimensions.
    n_params
        Number of inner-bijector parameters per transformed dimension.
    hidden_sizes
        Widths of the hidden layers (SiLU activations).
    """

    n_out: int
    n_params: int
    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = x
        for width in self.hidden_sizes:
            h = nn.silu(nn.Dense(width)(h))
        out = nn.Dense(
            self.n_out * self.n_params,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
        )(h)
        return out.reshape(x.shape[:-1] + (self.n_out, self.n_params))


class SubsetCoupling(distrax.Bijector):
    """Coupling bijector on ``(..., n_dims)`` defined by a static boolean mask.

    Parameters
    ----------
    mask
        ``(n_dims,)`` boolean numpy array; True marks dimensions that pass
        through and condition the rest. At least one entry must be False.
    conditioner
        Callable ``(..., n_kept) -> params`` of the inner bijector for the
        ``n_dims - n_kept`` transformed dimensions. If every entry of ``mask``
        is False it receives a constant ``(..., 1)`` array of zeros.
    bijector
        Callable ``params -> distrax`` scalar bijector acting elementwise.
    """

    def __init__(self, mask: np.ndarray, conditioner, bijector):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 1 or mask.all():
            raise ValueError(f"mask must be 1-D with a False entry; got {mask}")
        self._kept = np.flatnonzero(mask)
        self._moved = np.flatnonzero(~mask)
        self._conditioner = conditioner
        self._bijector = bijector
        super().__init__(event_ndims_in=1)

    def _inner(self, x: Array):
        if self._kept.size:
            cond_in = _take_columns(x, self._kept)
        else:
            cond_in = jnp.zeros(x.shape[:-1] + (1,), dtype=x.dtype)
        return self._bijector(self._conditioner(cond_in))

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """Computes ``y = f(x)`` and ``log|det J_f(x)|``."""
        y_moved, logdet = self._inner(x).forward_and_log_det(
            _take_columns(x, self._moved))
        return (_put_columns(x, self._moved, y_moved),
                jnp.sum(logdet, axis=-1))

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """Computes ``x = f^{-1}(y)`` and ``log|det J_{f^{-1}}(y)|``."""
        x_moved, logdet = self._inner(y).inverse_and_log_det(
            _take_columns(y, self._moved))
        return (_put_columns(y, self._moved, x_moved),
                jnp.sum(logdet, axis=-1))


# The column index sets of the masks are static, so splitting and merging are
# written as strided slices and one concatenation: XLA compiles those far more
# cheaply than the gather and scatter of fancy indexing.
def _as_slice(idx: np.ndarray) -> slice | None:
    if idx.size == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    step = int(idx[1] - idx[0])
    if step > 0 and np.array_equal(idx, np.arange(idx[0], idx[-1] + 1, step)):
        return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return None


def _take_columns(x: Array, idx: np.ndarray) -> Array:
    sl = _as_slice(idx)
    return x[..., sl] if sl is not None else jnp.take(x, idx, axis=-1)


def _put_columns(x: Array, idx: np.ndarray, values: Array) -> Array:
    """``x`` with columns ``idx`` (sorted, static) replaced by ``values``."""
    where = {int(c): j for j, c in enumerate(idx)}
    pieces, start, source = [], 0, None
    # Runs of adjacent columns taken from the same array become one slice.
    for c in range(x.shape[-1] + 1):
        src = None if c == x.shape[-1] else ("v" if c in where else "x")
        if c and src != source:
            if source == "x":
                pieces.append(x[..., start:c])
            else:
                pieces.append(values[..., where[start]:where[c - 1] + 1])
            start = c
        source = src
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)


def _spline_fn(spline_range: float):
    # The number of bins is implied by the parameter count, 3 * n_bins + 1.
    def make(params: Array):
        return RationalQuadraticSpline(params, -spline_range, spline_range)

    return make


def _affine(params: Array):
    log_scale = _AFFINE_MAX_LOG_SCALE * jnp.tanh(params[..., 1] / _AFFINE_MAX_LOG_SCALE)
    return distrax.ScalarAffine(shift=params[..., 0], log_scale=log_scale)


class CouplingStack(nn.Module):
    """A chain of coupling layers on ``(n, n_dims)`` arrays.

    ``forward_and_log_det`` maps data (already on the real line) to the latent
    space; ``inverse_and_log_det`` maps latent points back.

    Attributes
    ----------
    n_dims
        Number of dimensions.
    kind
        ``"spline"`` or ``"affine"``.
    n_layers
        Number of coupling layers.
    hidden_sizes
        Hidden widths of each conditioner.
    n_bins
        Bins per spline (``"spline"`` only).
    spline_range
        Half-width ``B`` of the spline interval ``[-B, B]``.
    """

    n_dims: int
    kind: str = "spline"
    n_layers: int = 4
    hidden_sizes: tuple[int, ...] = (64, 64)
    n_bins: int = 8
    spline_range: float = 5.0

    def setup(self):
        if self.kind == "spline":
            n_params, inner = 3 * self.n_bins + 1, _spline_fn(self.spline_range)
        elif self.kind == "affine":
            n_params, inner = 2, _affine
        else:
            raise ValueError(f"unknown coupling kind {self.kind!r}")
        self._masks = coupling_masks(self.n_dims, self.n_layers)
        self.conditioners = [
            Conditioner(int((~mask).sum()), n_params, tuple(self.hidden_sizes))
            for mask in self._masks
        ]
        self._inner = inner

    def _chain(self):
        layers = [
            SubsetCoupling(mask, cond, self._inner)
            for mask, cond in zip(self._masks, self.conditioners)
        ]
        # distrax chains apply their last element first; reverse so that layer 0
        # is the first map applied on the way to the latent space.
        return distrax.Chain(layers[::-1])

    def forward_and_log_det(self, u: Array) -> tuple[Array, Array]:
        """Data ``(n, n_dims)`` -> latent, with ``log|det dz/du|`` of shape (n,)."""
        return self._chain().forward_and_log_det(u)

    def inverse_and_log_det(self, z: Array) -> tuple[Array, Array]:
        """Latent ``(n, n_dims)`` -> data, with ``log|det du/dz|`` of shape (n,)."""
        return self._chain().inverse_and_log_det(z)

    def __call__(self, u: Array) -> tuple[Array, Array]:
        return self.forward_and_log_det(u)

    def init_conditioners(self, u: Array) -> None:
        """Create every conditioner's parameters from ``(n, n_dims)`` input.

        Used as the ``method`` of ``init``: it gives the same variables as
        initialising through :meth:`forward_and_log_det`, without tracing the
        chain of bijectors (most of the compile time of an init).
        """
        for mask, cond in zip(self._masks, self.conditioners):
            kept = int(mask.sum())
            cond(jnp.zeros(u.shape[:-1] + (max(kept, 1),), u.dtype))
