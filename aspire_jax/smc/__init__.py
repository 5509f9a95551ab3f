"""The adaptive-tempered SMC engine: state, tempering, resampling, step, drivers."""

from .state import SMCConfig, SMCInfo, SMCState, Status
from .step import build_smc, make_init, make_mutation, make_step, run_device, run_host

__all__ = ["SMCConfig", "SMCInfo", "SMCState", "Status", "build_smc", "make_init",
           "make_mutation", "make_step", "run_device", "run_host"]
