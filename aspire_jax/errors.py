"""Exceptions raised by aspire_jax.

Every error the library raises on purpose derives from :class:`AspireJaxError`,
so a caller can catch them all with one ``except`` clause.
"""

__all__ = [
    "AspireJaxError",
    "ValidationError",
    "TemperingError",
    "CheckpointError",
    "FlowError",
]


class AspireJaxError(Exception):
    """Base class of the errors raised by aspire_jax."""


class ValidationError(AspireJaxError, ValueError):
    """Bad input caught at the API boundary, before anything is compiled."""


class TemperingError(AspireJaxError, RuntimeError):
    """The tempering schedule could not reach beta = 1."""


class CheckpointError(AspireJaxError, OSError):
    """A checkpoint file or blob is missing, corrupt, foreign or incompatible."""


class FlowError(AspireJaxError, RuntimeError):
    """The normalizing flow could not be built, trained or restored."""
