"""aspire_jax: reuse earlier posterior samples to speed up new Bayesian analyses.

A normalizing flow is fitted to the samples of an earlier analysis and
adaptive-tempered Sequential Monte Carlo moves from the flow to the new
posterior. The engine is a pure, jitted step over an immutable state pytree.

Importing the package changes no JAX setting (``jax_enable_x64`` included).
"""

__version__ = "0.1.0"

from .errors import (AspireJaxError, CheckpointError, FlowError, TemperingError,
                     ValidationError)
from .samples import Samples
from .history import History, SampleHistory
from .flows import Flow, FlowConfig, FlowHistory, FlowParams
from .smc.state import SMCConfig, SMCInfo, SMCState, Status
from .smc.step import build_smc, make_init, make_step, run_device, run_host
from .io import AspireFile
from .aspire import Aspire
from .callbacks import wrap_numpy_likelihood
from .compilation import enable_compilation_cache

__all__ = [
    "Aspire",
    "AspireFile",
    "AspireJaxError",
    "CheckpointError",
    "Flow",
    "FlowConfig",
    "FlowError",
    "FlowHistory",
    "FlowParams",
    "History",
    "SampleHistory",
    "SMCConfig",
    "SMCInfo",
    "SMCState",
    "Samples",
    "Status",
    "TemperingError",
    "ValidationError",
    "build_smc",
    "enable_compilation_cache",
    "make_init",
    "make_step",
    "run_device",
    "run_host",
    "wrap_numpy_likelihood",
    "__version__",
]
