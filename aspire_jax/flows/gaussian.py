"""A Gaussian reference: the flow's parameter transform without its coupling layers.

When the earlier posterior is close to Gaussian (after the bounded maps of
the parameter transform), a trained flow describes it no better than the
Gaussian fitted to the same samples, and it costs a pass through every
coupling layer wherever SMC evaluates the reference: once per particle per
MCMC sweep. :class:`GaussianReference` keeps the transform ``T`` and replaces
the coupling stack by the affine map of that Gaussian,

    x --T--> u,    z = L^{-1} (u - m),

so that ``log q(x) = log N(u; m, L L^T) + log|det du/dx|``. It is an exact,
normalised density with the same support as the flow (bounded and periodic
parameters stay inside their bounds), so SMC and importance sampling are
consistent with it as with the flow; their efficiency, and their finite-sample
accuracy, depend on how well it covers the new posterior. The
mean ``m`` and factor ``L`` travel in the flow's own parameters
(``FlowParams.gaussian``), written by :func:`aspire_jax.flows.fit`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, PRNGKey
from ..errors import ValidationError
from ..kernels.base import whiten
from .flow import _inside_bounds, _std_normal_log_prob

__all__ = ["GaussianReference", "has_gaussian"]


def has_gaussian(params) -> bool:
    """Whether ``params`` (concrete :class:`~aspire_jax.flows.FlowParams`)
    hold a Gaussian: those of ``Flow.init`` and ``fit`` do, those read from
    format 1 or 2 do not."""
    g = getattr(params, "gaussian", None)
    if not isinstance(g, dict) or "chol" not in g:
        return False
    return bool(np.all(np.isfinite(np.asarray(g["chol"]))))


@dataclasses.dataclass(frozen=True)
class GaussianReference:
    """The Gaussian of the flow's training samples in its unbounded space.

    It has the flow's interface (``log_prob``, ``sample_and_log_prob``, the
    latent and unbounded maps) and takes the flow's own
    :class:`~aspire_jax.flows.FlowParams`, so it stands wherever the SMC
    engine, the importance sampler or :func:`~aspire_jax.flows.defensive`
    take a flow. Its latent space is the fully whitened unbounded space.

    Attributes
    ----------
    flow
        A :class:`~aspire_jax.flows.Flow`; only its parameter transform is
        used.
    """

    flow: object

    def __post_init__(self):
        for name in ("to_unbounded", "from_unbounded"):
            if not hasattr(self.flow, name):
                raise ValidationError(
                    f"a Gaussian reference needs a flow with {name}; "
                    f"{type(self.flow).__name__} has none")

    @property
    def n_dims(self) -> int:
        return self.flow.n_dims

    @staticmethod
    def _moments(params):
        g = getattr(params, "gaussian", None)
        if not isinstance(g, dict) or "chol" not in g:
            raise ValidationError(
                "these flow parameters hold no Gaussian (FlowParams built by hand "
                "leave FlowParams.gaussian None); take them from Flow.init or "
                "aspire_jax.flows.fit, or use the flow itself")
        if not isinstance(g["chol"], jax.core.Tracer) and not has_gaussian(params):
            # Inside a trace this cannot be checked; the Aspire facade checks
            # before it compiles anything.
            raise ValidationError(
                "these flow parameters hold no usable Gaussian: they were written "
                "before aspire_jax kept one with the flow (format 1 or 2), or built "
                "by hand and saved, or its training samples were too degenerate to "
                "fit one; refit the flow, or use the flow itself")
        return g["mean"], g["chol"]

    def to_unbounded(self, params, x):
        return self.flow.to_unbounded(params, x)

    def from_unbounded(self, params, u):
        return self.flow.from_unbounded(params, u)

    def to_latent(self, params, x) -> tuple[Array, Array]:
        """Native ``x`` -> whitened ``z`` and ``log|det dz/dx|``."""
        mean, chol = self._moments(params)
        u, log_det = self.to_unbounded(params, x)
        batch = u.shape[:-1]
        flat = (u - mean).reshape(-1, self.n_dims)
        # A product with the inverse factor: one kernel that splits along the
        # particles, where a triangular solve against all of them does not.
        z = whiten(chol, flat)
        log_det_chol = jnp.sum(jnp.log(jnp.diag(chol)))
        return z.reshape(batch + (self.n_dims,)), log_det - log_det_chol

    def from_latent(self, params, z) -> tuple[Array, Array]:
        """Whitened ``z`` -> native ``x`` and ``log|det dx/dz|``."""
        mean, chol = self._moments(params)
        z = jnp.asarray(z)
        u = mean + z @ chol.T
        x, log_det = self.from_unbounded(params, u)
        return x, log_det + jnp.sum(jnp.log(jnp.diag(chol)))

    def log_prob(self, params, x) -> Array:
        """``log q(x)``; ``-inf`` outside the prior bounds."""
        x = jnp.asarray(x)
        z, log_det = self.to_latent(params, x)
        return jnp.where(_inside_bounds(params, x), _std_normal_log_prob(z) + log_det,
                         -jnp.inf)

    def latent_log_prob(self, params, z: Array, x: Array, log_det: Array) -> Array:
        """``log q(x)`` for ``x, log_det = from_latent(params, z)``."""
        return jnp.where(_inside_bounds(params, x), _std_normal_log_prob(z) - log_det,
                         -jnp.inf)

    def sample_and_log_prob(self, params, key: PRNGKey, n: int
                            ) -> tuple[Array, Array]:
        """``n`` draws and their ``log q``, computed along the sampling path."""
        dtype = params.transform.lower.dtype
        z = jax.random.normal(key, (n, self.n_dims), dtype)
        x, log_det = self.from_latent(params, z)
        return x, self.latent_log_prob(params, z, x, log_det)

    def sample(self, params, key: PRNGKey, n: int) -> Array:
        return self.sample_and_log_prob(params, key, n)[0]

