"""Shared pieces of the MCMC mutation kernels.

A kernel moves a whole population of particles at once. Its pieces are pure:

* ``init(position) -> params``: the adapted parameters at the start of a run
  (for example the proposal scale), carried from iteration to iteration in
  the SMC state;
* ``fit(params, position) -> params``: refit the population-level proposal
  (mean, covariance, ...) to the current particles, keeping the adapted scale;
* ``step(key, state, log_density_fn, params) -> (state, info)``: one
  Metropolis–Hastings sweep over every particle;
* ``adapt(params, acceptance) -> params``: move the scale toward the target
  acceptance rate after a sweep.

``log_density_fn(position) -> (log_density, aux)`` is batched over the
leading axis (NaN marks a density that is undefined rather than zero, see
:class:`KernelInfo`); ``aux`` is any pytree of per-particle arrays (the cached
log-prior, log-likelihood and flow density) that is carried along with the
accepted positions.
"""

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .._types import Array, ArrayLike
from ..errors import ValidationError

__all__ = [
    "KernelState",
    "KernelInfo",
    "MCMCKernel",
    "weighted_mean_cov",
    "safe_cholesky",
    "mh_select",
    "draw_move_noise",
    "adapt_log_scale",
    "whiten",
    "CholeskyScaleParams",
    "count_invalid",
]


@struct.dataclass
class CholeskyScaleParams:
    """Cholesky factor ``chol`` (d, d) of the particle covariance and a log scale.

    Shared by the kernels whose proposal is ``scale * chol`` times noise
    (random-walk Metropolis) or a Langevin step preconditioned by ``chol``
    (MALA); ``step_size`` is ``exp(log_scale)``.
    """

    chol: Array
    log_scale: Array

    @property
    def step_size(self) -> Array:
        """The adapted scale ``exp(log_scale)``."""
        return jnp.exp(self.log_scale)



def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def in_unit_interval(v) -> bool:
    """A real number in (0, 1)."""
    return _real(v) and 0.0 < v < 1.0


def positive_finite(v) -> bool:
    """A real number in (0, inf)."""
    return _real(v) and 0.0 < v < math.inf


def non_negative_finite(v) -> bool:
    """A real number in [0, inf)."""
    return _real(v) and 0.0 <= v < math.inf


def check_settings(settings, checks) -> None:
    """Raise a ValidationError naming the first field of the settings
    dataclass ``settings`` that fails its check; ``checks`` holds
    ``(field, predicate, what it must be)`` triples."""
    for name, ok, want in checks:
        value = getattr(settings, name)
        if not ok(value):
            raise ValidationError(
                f"{type(settings).__name__}.{name} must be {want}; got {value!r}")

class KernelState(NamedTuple):
    """Population state seen by a kernel.

    ``position`` has shape ``(n, d)``; ``log_density`` ``(n,)``; ``aux`` is a
    pytree of ``(n, ...)`` arrays; ``grad`` is the gradient of the log density
    at ``position`` for gradient kernels and ``None`` otherwise.
    """

    position: Array
    log_density: Array
    aux: Any
    grad: Any = None


class KernelInfo(NamedTuple):
    """Per-sweep diagnostics: the mean acceptance probability over particles,
    and the number of proposals whose log density was NaN.

    A ``log_density_fn`` returns NaN where the density is undefined (the
    user's function gave NaN or +inf there) and ``-inf`` where it is zero;
    both are rejected, and only the first is counted.
    """

    acceptance: Array
    n_invalid: Array = 0


class MCMCKernel(NamedTuple):
    """The pure functions that make up a population kernel.

    Gradient kernels set ``uses_grad=True`` and provide
    ``prepare(state, log_density_fn) -> state``, which fills ``state.grad`` at
    the current positions before the first sweep; ``prepare`` is ``None``
    otherwise.
    """

    name: str
    init: Callable
    fit: Callable
    step: Callable
    adapt: Callable
    uses_grad: bool = False
    prepare: Callable | None = None


def count_invalid(log_density: Array) -> Array:
    """Number of NaN entries (undefined densities) in ``log_density``."""
    return jnp.sum(jnp.isnan(log_density)).astype(jnp.int32)


def weighted_mean_cov(position: ArrayLike, weights: ArrayLike | None = None,
                      jitter: float = 1e-6) -> tuple[Array, Array]:
    """Weighted mean ``(d,)`` and covariance ``(d, d)`` of ``position``.

    A relative ``jitter`` times the mean variance is added to the diagonal so
    the covariance stays positive definite when particles are duplicated.
    """
    position = jnp.asarray(position)
    n = position.shape[0]
    if weights is None:
        weights = jnp.full((n,), 1.0 / n, position.dtype)
    mean = weights @ position
    centred = position - mean
    cov = (centred * weights[:, None]).T @ centred
    scale = jnp.maximum(jnp.trace(cov) / cov.shape[0], 1e-30)
    cov = cov + jitter * scale * jnp.eye(cov.shape[0], dtype=cov.dtype)
    return mean, cov


def safe_cholesky(cov: ArrayLike) -> Array:
    """Cholesky factor, falling back to the diagonal if the factor has NaNs."""
    cov = jnp.asarray(cov)
    chol = jnp.linalg.cholesky(cov)
    diag = jnp.diag(jnp.sqrt(jnp.maximum(jnp.diag(cov), 1e-30)))
    return jnp.where(jnp.all(jnp.isfinite(chol)), chol, diag)


def draw_move_noise(key: jax.Array, n: int, m: int, dtype) -> tuple[Array, Array]:
    """All the randomness of one move: ``(n, m)`` standard normals and ``n``
    accept uniforms ``U`` on (0, 1).

    One block of ``(n, m + 1)`` uniforms on (-1, 1) is drawn. The first ``m``
    columns become normals as in ``jax.random.normal``,
    ``Z = sqrt(2) erfinv(V)``; the last becomes ``U = (V + 1) / 2``. One draw
    instead of one per purpose keeps the compiled move small: every
    random-number call, and every special function, is a separate block of
    generated code.
    """
    dtype = jnp.dtype(dtype)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    v = jax.random.uniform(key, (n, m + 1), dtype, minval=low, maxval=1.0)
    z = np.array(math.sqrt(2.0), dtype) * jax.lax.erf_inv(v[:, :m])
    return z, 0.5 * (v[:, m] + 1.0)


def mh_select(u: ArrayLike, log_alpha: ArrayLike, proposal: KernelState,
              current: KernelState) -> tuple[KernelState, Array]:
    """Accept each particle's proposal with probability ``min(1, e^log_alpha)``,
    given its uniform ``U`` on (0, 1) (e.g. from :func:`draw_move_noise`).

    Non-finite ``log_alpha`` (NaN from an ill-defined density) rejects.
    Returns the new state and the acceptance probability of each particle.
    """
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    prob = jnp.exp(jnp.minimum(log_alpha, 0.0))
    accept = u < prob

    def pick(new, old):
        mask = accept.reshape(accept.shape + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    state = jax.tree_util.tree_map(pick, proposal, current)
    return state, prob


def adapt_log_scale(log_scale: ArrayLike, acceptance: ArrayLike,
                    target: float, rate: float = 1.0,
                    bounds: tuple[float, float] = (-12.0, 3.0)) -> Array:
    """One Robbins–Monro move of a log-scale toward the target acceptance."""
    new = log_scale + rate * (acceptance - target)
    return jnp.clip(new, *bounds)


def whiten(chol: ArrayLike, x: ArrayLike) -> Array:
    """``L^{-1} x`` for every row of ``x`` ``(n, d)``, with ``L`` lower-triangular.

    The inverse factor is formed once (a ``d x d`` solve) and applied as a
    matrix product: one triangular solve against all ``n`` particles is slow on
    CPU and is not split across devices when the particles are sharded.
    """
    chol = jnp.asarray(chol)
    eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
    inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    return jnp.asarray(x) @ inv.T
