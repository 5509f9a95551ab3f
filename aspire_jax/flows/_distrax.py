"""distrax, imported once and quietly.

distrax pulls in tensorflow_probability's JAX substrate, which touches
deprecated jax attributes at import time; the warning is not actionable for
users of aspire_jax.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"tensorflow_probability"
    )
    import distrax

__all__ = ["distrax"]
