"""A Gaussian stand-in for the normalizing flow, used by the engine tests.

It implements the same pure interface as :class:`aspire_jax.flows.Flow`, so
the SMC engine can be tested against closed-form answers without training.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class GaussianParams:
    mean: jax.Array
    chol: jax.Array


@dataclasses.dataclass(frozen=True)
class GaussianFlow:
    n_dims: int

    @staticmethod
    def params(mean, cov):
        mean = jnp.asarray(mean, jnp.float32)
        cov = jnp.asarray(cov, jnp.float32)
        return GaussianParams(mean, jnp.linalg.cholesky(cov))

    def _white(self, p, x):
        return jax.scipy.linalg.solve_triangular(p.chol, (x - p.mean).T, lower=True).T

    def _logdet(self, p):
        return jnp.sum(jnp.log(jnp.diag(p.chol)))

    def log_prob(self, p, x):
        z = self._white(p, x)
        return (-0.5 * jnp.sum(z**2, -1) - self._logdet(p)
                - 0.5 * self.n_dims * jnp.log(2 * jnp.pi))

    def sample_and_log_prob(self, p, key, n):
        z = jax.random.normal(key, (n, self.n_dims))
        x = p.mean + z @ p.chol.T
        return x, self.log_prob(p, x)

    def to_latent(self, p, x):
        return self._white(p, x), jnp.full(x.shape[:1], -self._logdet(p))

    def from_latent(self, p, z):
        return p.mean + z @ p.chol.T, jnp.full(z.shape[:1], self._logdet(p))

    to_unbounded = to_latent
    from_unbounded = from_latent
