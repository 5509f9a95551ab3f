"""A defensive reference: the flow with a share of its draws from heavy tails.

A flow trained on an earlier posterior is often lighter in its tails than the
new posterior: narrower along some direction, or Gaussian where the posterior
falls off exponentially (towards a bound, through the log or logit map of a
bounded parameter). The weights ``pi L / q`` of the tempering steps are then
heavy-tailed: most runs miss the rare large weights, so the log-evidence comes
out low and its error bar, estimated from the same particles, too small.
Mixing a heavy-tailed copy of the flow into the reference bounds those
weights, in the spirit of defensive importance sampling (Hesterberg, 1995):

    q_def(x) = (1 - w) q(x) + w q_t(x),

where ``q_t`` pushes the multivariate Student-t ``t_nu(0, s^2 I)`` instead of
``N(0, I)`` through the same bijection. Its polynomial tails outweigh any
Gaussian or exponential tail of the posterior in the latent space, so the
weights stay bounded there; and a share ``w`` of the draws populates those
tails, where the tempering schedule sees the weights it must temper. Both
components share the map and its Jacobian, so ``log q_def`` costs one pass
through the flow, as ``log q`` does; only the base density becomes a
two-component mixture in the latent space.
"""

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

from .._types import Array, PRNGKey
from ..errors import ValidationError
from .flow import _inside_bounds, _std_normal_log_prob

__all__ = ["DefensiveReference", "defensive"]

_MAX_DF = 100


@dataclasses.dataclass(frozen=True)
class DefensiveReference:
    """The flow ``flow`` with a share ``weight`` of its base widened by ``scale``.

    It has the flow's interface (``log_prob``, ``sample_and_log_prob``, the
    latent and unbounded maps), so it can stand wherever the SMC engine or the
    importance sampler take a flow; it is static (hashable) like the flow.

    Attributes
    ----------
    flow
        A :class:`~aspire_jax.flows.Flow` (anything with ``to_latent``,
        ``from_latent`` and a parameter transform with ``lower``/``upper``).
    weight
        Mixture weight of the heavy-tailed component, in ``(0, 1)``.
    scale
        Scale ``s`` of the heavy-tailed component's latent base, > 1.
    df
        Its degrees of freedom ``nu``, an integer >= 1 (default 3).

    All are static Python (or NumPy) numbers: like the flow's architecture
    they shape the compiled program, so they cannot be traced values.
    """

    flow: object
    weight: float
    scale: float
    df: int = 3

    def __post_init__(self):
        if isinstance(self.flow, DefensiveReference):
            raise ValidationError(
                "the flow is already a defensive reference; widen the plain flow "
                "once, with the weight and scale wanted")
        for name in ("to_latent", "from_latent"):
            if not hasattr(self.flow, name):
                raise ValidationError(
                    f"a defensive reference needs a flow with {name}; "
                    f"{type(self.flow).__name__} has none")
        for name in ("weight", "scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValidationError(
                    f"defensive {name} must be a Python or NumPy number (it is "
                    f"static, not traced); got {v!r}")
        if not 0.0 < float(self.weight) < 1.0:
            raise ValidationError(
                f"defensive weight must be in (0, 1); got {self.weight!r}")
        if not float(self.scale) > 1.0 or not math.isfinite(float(self.scale)):
            raise ValidationError(
                f"defensive scale must be a finite number > 1; got {self.scale!r}")
        if (isinstance(self.df, bool) or not isinstance(self.df, numbers.Integral)
                or not 1 <= self.df <= _MAX_DF):
            # Each draw sums df squared normals; past a hundred degrees of
            # freedom the t is a Gaussian for this purpose.
            raise ValidationError(
                f"defensive df must be an integer in [1, {_MAX_DF}]; got {self.df!r}")
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "df", int(self.df))

    @property
    def n_dims(self) -> int:
        return self.flow.n_dims

    def base_log_prob(self, z: Array) -> Array:
        """Log density of the latent mixture ``(1 - w) N(0, I) + w t_nu(0, s^2 I)``."""
        d, nu, s = z.shape[-1], float(self.df), self.scale
        narrow = math.log1p(-self.weight) + _std_normal_log_prob(z)
        norm = (math.lgamma(0.5 * (nu + d)) - math.lgamma(0.5 * nu)
                - 0.5 * d * math.log(nu * math.pi) - d * math.log(s))
        heavy = (math.log(self.weight) + norm
                 - 0.5 * (nu + d) * jnp.log1p(jnp.sum(z**2, axis=-1) / (nu * s * s)))
        return jnp.logaddexp(narrow, heavy)

    def draw_latent(self, key: PRNGKey, n: int, dtype) -> Array:
        """``n`` latent draws of the mixture, shape ``(n, n_dims)``: the
        Student-t ones as ``s z / sqrt(chi2_nu / nu)``, the chi-square a sum
        of ``nu`` squared normals of the same draw."""
        key_z, key_c = jax.random.split(key)
        e = jax.random.normal(key_z, (n, self.n_dims + self.df), dtype)
        z = e[:, : self.n_dims]
        chi2 = jnp.maximum(jnp.sum(e[:, self.n_dims:] ** 2, axis=1, keepdims=True),
                           jnp.finfo(dtype).tiny)
        heavy = jax.random.uniform(key_c, (n, 1), dtype) < self.weight
        return jnp.where(heavy, self.scale * z * jnp.sqrt(self.df / chi2), z)

    def log_prob(self, params, x: Array) -> Array:
        """``log q_def(x)``; ``-inf`` outside the prior bounds."""
        x = jnp.asarray(x)
        z, log_det = self.flow.to_latent(params, x)
        return jnp.where(_inside_bounds(params, x), self.base_log_prob(z) + log_det,
                         -jnp.inf)

    def latent_log_prob(self, params, z: Array, x: Array, log_det: Array) -> Array:
        """``log q_def(x)`` for ``x, log_det = from_latent(params, z)``."""
        return jnp.where(_inside_bounds(params, x), self.base_log_prob(z) - log_det,
                         -jnp.inf)

    def sample_and_log_prob(self, params, key: PRNGKey, n: int
                            ) -> tuple[Array, Array]:
        """``n`` draws of the mixture and their ``log q_def`` (one pass)."""
        z = self.draw_latent(key, n, params.transform.lower.dtype)
        x, log_det = self.flow.from_latent(params, z)
        return x, self.latent_log_prob(params, z, x, log_det)

    def sample(self, params, key: PRNGKey, n: int) -> Array:
        return self.sample_and_log_prob(params, key, n)[0]

    def to_latent(self, params, x):
        return self.flow.to_latent(params, x)

    def from_latent(self, params, z):
        return self.flow.from_latent(params, z)

    def to_unbounded(self, params, x):
        return self.flow.to_unbounded(params, x)

    def from_unbounded(self, params, u):
        return self.flow.from_unbounded(params, u)


def defensive(flow, weight: float = 0.1, scale: float = 1.5,
              df: int = 3) -> DefensiveReference:
    """``flow`` as a defensive reference; see :class:`DefensiveReference`."""
    return DefensiveReference(flow, weight, scale, df)
