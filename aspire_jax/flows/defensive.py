"""A defensive reference: the flow with a share of its draws widened.

A flow trained on an earlier posterior is often lighter in its tails than the
new posterior. The weights ``pi L / q`` of the first tempering steps are then
heavy-tailed: most runs miss the rare large weights, so the log-evidence comes
out low and its error bar, estimated from the same particles, too small.
Mixing a wider copy of the flow into the reference bounds those weights, in the
spirit of defensive importance sampling (Hesterberg, 1995):

    q_def(x) = (1 - w) q(x) + w q_s(x),

where ``q_s`` pushes ``N(0, s^2 I)`` instead of ``N(0, I)`` through the same
bijection. Both share the map and its Jacobian, so ``log q_def`` costs one pass
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
        Mixture weight of the wide component, in ``(0, 1)``.
    scale
        Standard deviation of the wide component's latent base, > 1.

    Both are static Python (or NumPy) numbers: like the flow's architecture
    they shape the compiled program, so they cannot be traced values.
    """

    flow: object
    weight: float
    scale: float

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
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def n_dims(self) -> int:
        return self.flow.n_dims

    def base_log_prob(self, z: Array) -> Array:
        """Log density of the latent mixture ``(1 - w) N(0, I) + w N(0, s^2 I)``."""
        narrow = math.log1p(-self.weight) + _std_normal_log_prob(z)
        wide = (math.log(self.weight) + _std_normal_log_prob(z / self.scale)
                - z.shape[-1] * math.log(self.scale))
        return jnp.logaddexp(narrow, wide)

    def draw_latent(self, key: PRNGKey, n: int, dtype) -> Array:
        """``n`` latent draws of the mixture, shape ``(n, n_dims)``."""
        key_z, key_c = jax.random.split(key)
        z = jax.random.normal(key_z, (n, self.n_dims), dtype)
        wide = jax.random.uniform(key_c, (n, 1), dtype) < self.weight
        return jnp.where(wide, self.scale * z, z)

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


def defensive(flow, weight: float = 0.1, scale: float = 1.5) -> DefensiveReference:
    """``flow`` as a defensive reference; see :class:`DefensiveReference`."""
    return DefensiveReference(flow, weight, scale)
