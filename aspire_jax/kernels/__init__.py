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


def build_kernel(name: str, settings=None) -> MCMCKernel:
    """Return the kernel called ``name`` built with its ``settings``."""
    from ..errors import ValidationError

    if name in ("pcn", "tpcn"):
        settings = PCNSettings() if settings is None else settings
        _expect(settings, PCNSettings, name)
        return pcn(settings) if name == "pcn" else tpcn(settings)
    if name == "rwmh":
        settings = RWMHSettings() if settings is None else settings
        _expect(settings, RWMHSettings, name)
        return rwmh(settings)
    if name == "mala":
        settings = MALASettings() if settings is None else settings
        _expect(settings, MALASettings, name)
        return mala(settings)
    raise ValidationError(
        f"unknown kernel {name!r}; choose one of ['tpcn', 'pcn', 'rwmh', 'mala']")


def _expect(settings, cls, name):
    from ..errors import ValidationError

    if not isinstance(settings, cls):
        raise ValidationError(
            f"kernel {name!r} takes kernel_settings of type {cls.__name__}; got "
            f"{type(settings).__name__}")
