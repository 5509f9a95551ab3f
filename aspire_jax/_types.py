"""Type aliases shared across aspire_jax."""

import jax
from jax.typing import ArrayLike

__all__ = ["PRNGKey", "ArrayLike", "Array"]

PRNGKey = jax.Array
Array = jax.Array
