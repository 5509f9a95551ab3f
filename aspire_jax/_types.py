"""Type aliases shared across aspire_jax."""

import jax
import numpy as np
from jax.typing import ArrayLike

__all__ = ["PRNGKey", "ArrayLike", "Array", "is_int"]

PRNGKey = jax.Array
Array = jax.Array


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
