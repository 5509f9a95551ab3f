"""MCMC mutation kernels, one module each, sharing one pure signature."""

from .base import KernelInfo, KernelState, MCMCKernel
from .mala import MALAParams, MALASettings, mala
from .pcn import PCNParams, PCNSettings, pcn, tpcn
from .rwmh import RWMHParams, RWMHSettings, rwmh

__all__ = [
    "KernelInfo",
    "KernelState",
    "MCMCKernel",
    "PCNParams",
    "PCNSettings",
    "pcn",
    "tpcn",
    "RWMHParams",
    "RWMHSettings",
    "rwmh",
    "MALAParams",
    "MALASettings",
    "mala",
    "build_kernel",
]


_SETTINGS = {"pcn": PCNSettings, "tpcn": PCNSettings, "rwmh": RWMHSettings,
             "mala": MALASettings}


def kernel_settings(name: str, settings=None):
    """The settings the kernel called ``name`` runs with: ``settings``, or
    its defaults when None."""
    from ..errors import ValidationError

    cls = _SETTINGS.get(name)
    if cls is None:
        raise ValidationError(
            f"unknown kernel {name!r}; choose one of ['tpcn', 'pcn', 'rwmh', 'mala']")
    settings = cls() if settings is None else settings
    _expect(settings, cls, name)
    return settings


def build_kernel(name: str, settings=None) -> MCMCKernel:
    """Return the kernel called ``name`` built with its ``settings``."""
    settings = kernel_settings(name, settings)
    build = {"pcn": pcn, "tpcn": tpcn, "rwmh": rwmh, "mala": mala}[name]
    return build(settings)


def _expect(settings, cls, name):
    from ..errors import ValidationError

    if not isinstance(settings, cls):
        raise ValidationError(
            f"kernel {name!r} takes kernel_settings of type {cls.__name__}; got "
            f"{type(settings).__name__}")
