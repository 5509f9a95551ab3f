"""The facade users meet first: :class:`Aspire`.

It validates input, turns seeds into keys, builds the pure engine once,
drives it from the host (checkpoints, logging, progress) and packs results
into :class:`~aspire_jax.samples.Samples` and :class:`~aspire_jax.history.History`.
Everything numerical happens in the layers below.
"""

import contextlib
import dataclasses
import json
import logging
import math
import numbers
import os
import secrets
import stat
import statistics
import sys
import warnings
import zlib
from typing import Callable, Mapping, Sequence

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from . import __version__
from ._types import is_int
from .errors import CheckpointError, TemperingError, ValidationError
from .flows import DefensiveReference, Flow, FlowConfig, FlowHistory, fit as fit_flow
from .flows.flow import gaussian_of
from .flows.gaussian import GaussianReference, has_gaussian
from .io.hdf5 import copy_file_durably
from .history import History, SampleHistory
from .kernels import kernel_settings
from .io import (AspireFile, check_file_version, is_aspire_file,
                 read_checkpoint_bytes, read_json_group, state_dict_from_bytes,
                 state_from_state_dict, state_to_bytes,
                 write_checkpoint_file, write_json_group)
from .samples import (_CHECKPOINT_GROUPS, Samples, _default_names, _name_from_root,
                      check_float32_range, warn_float32_resolution)
from .sharding import (as_mesh, host_state, is_checkpoint_writer, jit_sharded_init,
                       jit_sharded_step, replicate, shard_state, sharded_template,
                       unshard_state)
from .smc.importance import (make_importance_sampler, pareto_tail_shape,
                              weight_curvature)
from .smc.mcmc import make_mcmc_sampler
from .smc.state import PRECONDITIONING, SMCConfig, SMCInfo, Status
from .smc.step import (build_smc, evaluated_rows, make_mutation, run_device,
                       _check_batched)
from .spaces import PeriodicSpace

__all__ = ["Aspire", "SAMPLERS"]

logger = logging.getLogger(__name__)

SAMPLERS = ("smc", "importance", "mcmc")
_ALIASES = {"minipcn_smc": "smc", "minipcn": "mcmc"}
_REFERENCE_OPTIONS = ("reference", "defensive_weight", "defensive_scale")
# The share of an SMC run's reference given to the heavy-tailed component of
# DefensiveReference unless the call says otherwise.
DEFENSIVE_WEIGHT = 0.1
_REFERENCES = ("auto", "flow", "gaussian")
# A trained flow should match a Gaussian fitted to the same samples at worst
# (it starts from one); half a nat per dimension worse only happens when the
# training went wrong.
POOR_FLOW_GAIN_PER_DIM = -0.5
_SMC_OPTIONS = tuple(f.name for f in dataclasses.fields(SMCConfig)
                     if f.name != "n_particles") + ("n_final_samples", "driver",
                                                    *_REFERENCE_OPTIONS)
_MCMC_OPTIONS = ("kernel", "kernel_settings", "n_steps", "n_burnin",
                 "preconditioning", "batch_size")
_IMPORTANCE_OPTIONS = (*_REFERENCE_OPTIONS, "batch_size")
_SPACES = PRECONDITIONING
_OTHER_BACKENDS = ("zuko", "flowjax", "torch", "pytorch", "nflows", "gwflow")
_CONFIG_VERSION = 1


def _as_key(key, what="key") -> tuple[jax.Array, int | None]:
    """A typed key from a key, a legacy uint32 key, an int seed or None.

    Returns the key and the seed it was made from (None for a given key).
    """
    if key is None:
        seed = secrets.randbelow(2**31)
        return jax.random.key(seed), seed
    if is_int(key):
        if not 0 <= int(key) < 2**63:
            raise ValidationError(f"an int seed must be in [0, 2**63); got {key}")
        return jax.random.key(int(key)), int(key)
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValidationError(f"{what} must be a single key; got shape "
                                      f"{key.shape}")
            return key, None
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(key), None
    raise ValidationError(
        f"{what} must be a typed key from jax.random.key, a legacy PRNGKey, an int "
        f"seed or None; got {type(key).__name__}")


_NAMES_HINT = (" (the default names: pass parameters=[...], the names in the "
               "order of the columns, when bounds or periodic parameters are "
               "given by name)")


def _parse_bounds(prior_bounds, parameters: Sequence[str], dims: int) -> np.ndarray:
    bounds = np.tile(np.array([-np.inf, np.inf]), (dims, 1))
    if prior_bounds is None:
        return bounds
    if isinstance(prior_bounds, Mapping):
        unknown = set(prior_bounds) - set(parameters)
        if unknown:
            raise ValidationError(
                f"prior_bounds names unknown parameters {sorted(unknown)}; the "
                f"parameters are {list(parameters)}"
                f"{_NAMES_HINT if tuple(parameters) == _default_names(dims) else ''}")
        for name, pair in prior_bounds.items():
            try:
                lo, hi = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise ValidationError(
                    f"prior_bounds[{name!r}] must be a pair of numbers (low, high); "
                    f"got {pair!r}") from None
            bounds[list(parameters).index(name)] = (lo, hi)
    else:
        try:
            arr = np.asarray(prior_bounds, dtype=float)
        except (TypeError, ValueError):
            raise ValidationError("prior_bounds must be a dict {name: (low, high)} or "
                                  f"a ({dims}, 2) array of numbers") from None
        if arr.shape != (dims, 2):
            raise ValidationError(
                f"prior_bounds must be a dict {{name: (low, high)}} or an array of "
                f"shape ({dims}, 2); got shape {arr.shape}")
        bounds = arr.copy()
    undefined = np.isnan(bounds).any(axis=1)
    if np.any(undefined):
        i = int(np.argmax(undefined))
        raise ValidationError(
            f"prior_bounds for {parameters[i]!r} must be a pair of numbers; got "
            f"{tuple(bounds[i])} (None and NaN are not bounds: use -inf or inf for "
            "an open side)")
    bad = ~(bounds[:, 0] < bounds[:, 1])
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValidationError(
            f"prior_bounds for {parameters[i]!r} must satisfy low < high; got "
            f"{tuple(bounds[i])}")
    return bounds


# Training options of aspire's flow backends, and what they are called here.
_FIT_NAMES = {"lr": "learning_rate", "learning_rate_init": "learning_rate",
              "epochs": "n_epochs", "max_epochs": "n_epochs",
              "val_prop": "validation_fraction", "max_patience": "patience",
              "clip_grad_norm": "clip_grad",
              "lr_annealing": None, "annealing": None}
_FIT_OPTIONS = ("key", "n_epochs", "learning_rate", "batch_size",
                "validation_fraction", "patience", "clip_grad", "weight_decay",
                "checkpoint_path", "checkpoint_save_config", "overwrite", "progress")


def _flag(name: str, value, allow_none: bool = False):
    """``value`` as a bool, refusing anything but True and False (and None
    when allowed): a string such as "no" must not count as True."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise ValidationError(f"{name} must be True or False"
                              + (" (or None)" if allow_none else "")
                              + f"; got {value!r}")
    return bool(value)


def _refuse_fit_options(unknown) -> None:
    hints = []
    for name in sorted(unknown):
        if name in _FIT_NAMES:
            here = _FIT_NAMES[name]
            hints.append(f"{name!r} is {here!r} here" if here else
                         f"{name!r} has no equivalent (a constant learning rate, "
                         "with early stopping on the validation loss)")
    raise ValidationError(
        f"unknown fit option(s) {sorted(unknown)}"
        + (f" ({'; '.join(hints)})" if hints else "")
        + f"; fit takes {', '.join(_FIT_OPTIONS)}")


def _check_float32_bounds(parameters, bounds) -> None:
    """Refuse finite bounds that float32 (JAX's default) cannot tell apart,
    and warn when it resolves fewer than 10^4 values between them."""
    if _float_dtype() != np.float32:
        return
    hint = ("enable float64 first (jax.config.update('jax_enable_x64', True)) or "
            "sample the parameter relative to a reference value (e.g. a trigger "
            "time)")
    for name, (lo, hi) in zip(parameters, bounds):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        pair = f"({float(lo)!r}, {float(hi)!r})"
        if not np.float32(lo) < np.float32(hi):
            raise ValidationError(
                f"prior_bounds of {name!r} {pair} are one and the same number in "
                f"float32, JAX's default dtype; {hint}")
        steps = (hi - lo) / float(np.spacing(np.float32(max(abs(lo), abs(hi)))))
        if steps < 1e4:
            warnings.warn(
                f"prior_bounds of {name!r} {pair} hold only about {steps:.0f} "
                f"float32 values (JAX's default dtype); {hint}",
                UserWarning, stacklevel=4)


def _float_dtype():
    """float64 when the user enabled ``jax_enable_x64``, float32 otherwise."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def _function_id(fn) -> str:
    mod = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{mod}:{name}"


class Aspire:
    """Reuse earlier posterior samples to sample a new posterior.

    Parameters
    ----------
    log_likelihood, log_prior
        Batched log-densities of the NEW analysis, ``(n, dims) -> (n,)``,
        written in JAX (wrap a NumPy function with
        :func:`aspire_jax.wrap_numpy_likelihood`). The prior must be
        normalised for the evidence to be the marginal likelihood. Return
        ``-inf`` for impossible points: NaN or ``+inf`` at the first points
        probed is refused, and anywhere else during a run it is treated as
        ``-inf`` (the point is rejected) and counted: the run logs a warning
        with the count, ``SMCState.n_invalid`` holds it and the history has
        it per iteration (``n_invalid``).
    dims
        Number of parameters.
    parameters
        Parameter names; ``x_0 ... x_{dims-1}`` by default, or taken from the
        training :class:`Samples` if those carry names.
    prior_bounds
        ``{name: (low, high)}`` or an array ``(dims, 2)``; ``±inf`` for open
        sides. Needed for bounded and periodic parameters.
    periodic_parameters
        Names of parameters periodic on their bounds.
    bounded_to_unbounded
        Map bounded parameters to the real line before the flow.
    bounded_transform
        ``"logit"`` (the default) or ``"probit"``. The probit's clamp at
        ``eps`` lies 4.75 units out on the real line (the logit's 13.8),
        within reach of the flow's tails: see :meth:`Flow.log_prob`.
    affine_transform
        Whiten the training samples before the flow.
    eps
        Clamp of the bounded transforms.
    flow_backend
        Only ``"jax"`` (flax + distrax) exists.
    flow_kind
        ``"spline"`` (rational-quadratic couplings) or ``"affine"``.
    n_layers, hidden_sizes, n_bins, spline_range
        Flow architecture.

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np
    >>> def log_prior(x):
    ...     return jnp.sum(-0.5 * x**2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    >>> def log_likelihood(x):
    ...     return jnp.sum(-0.5 * (x - 1.0) ** 2 / 0.25, axis=-1)
    >>> aspire = Aspire(log_likelihood=log_likelihood, log_prior=log_prior, dims=2,
    ...                 n_layers=2, hidden_sizes=(16,))
    >>> old = np.random.default_rng(0).normal(0.8, 0.5, size=(1000, 2))
    >>> _ = aspire.fit(old, n_epochs=5, key=0)
    >>> post = aspire.sample_posterior(500, sampler="importance", key=1)
    >>> post.x.shape
    (500, 2)
    """

    def __init__(self, *, log_likelihood: Callable, log_prior: Callable, dims: int,
                 parameters: Sequence[str] | None = None, prior_bounds=None,
                 periodic_parameters: Sequence[str] | None = None,
                 bounded_to_unbounded: bool = True, bounded_transform: str = "logit",
                 affine_transform: bool = True, eps: float = 1e-6,
                 flow_backend: str = "jax", flow_matching: bool = False,
                 flow_kind: str = "spline", n_layers: int = 4,
                 hidden_sizes: Sequence[int] = (64, 64), n_bins: int = 8,
                 spline_range: float = 5.0):
        if not callable(log_likelihood) or not callable(log_prior):
            raise ValidationError("log_likelihood and log_prior must be callables "
                                  "mapping (n, dims) arrays to (n,) arrays")
        if not is_int(dims) or dims < 1:
            raise ValidationError(f"dims must be a positive integer; got {dims!r}")
        if str(flow_backend).lower() in _OTHER_BACKENDS:
            raise ValidationError(
                f"flow_backend={flow_backend!r} names another library's flows; "
                "aspire_jax trains its own flows (flax modules of distrax "
                "bijectors), selected by flow_backend='jax' (the default), with "
                "flow_kind, n_layers, hidden_sizes and n_bins")
        if flow_backend != "jax":
            raise ValidationError(f"unknown flow_backend {flow_backend!r}; use 'jax'")
        if flow_matching:
            raise NotImplementedError(
                "flow matching (continuous flows) is not implemented in aspire_jax; "
                "use the default coupling flow (flow_matching=False)")
        self.log_likelihood = log_likelihood
        self.log_prior = log_prior
        self.dims = int(dims)
        if parameters is not None:
            if isinstance(parameters, (str, bytes)):
                raise ValidationError(
                    f"parameters must be a list of names, not the string "
                    f"{parameters!r}; e.g. parameters=[{parameters!r}]")
            parameters = tuple(parameters)
            bad = [p for p in parameters if not isinstance(p, str) or not p.strip()]
            if bad:
                raise ValidationError(f"parameter names must be non-empty strings; "
                                      f"got {bad}")
        self._parameters = parameters
        if self._parameters is not None and len(self._parameters) != self.dims:
            raise ValidationError(
                f"parameters has {len(self._parameters)} names but dims={dims}")
        self._prior_bounds_arg = prior_bounds
        if isinstance(periodic_parameters, str):
            periodic_parameters = [periodic_parameters]
        self.periodic_parameters = tuple(periodic_parameters or ())
        if isinstance(hidden_sizes, (int, np.integer)):
            raise ValidationError(f"hidden_sizes must be a sequence of layer widths, "
                                  f"e.g. (64, 64); got {hidden_sizes!r}")
        self.bounded_to_unbounded = _flag("bounded_to_unbounded", bounded_to_unbounded)
        self.flow_config = FlowConfig(
            n_dims=self.dims, kind=flow_kind, n_layers=n_layers,
            hidden_sizes=tuple(hidden_sizes), n_bins=n_bins,
            spline_range=spline_range, bounded_transform=bounded_transform,
            affine=affine_transform, eps=eps)
        self.flow = Flow(self.flow_config)
        self.flow_params = None
        self.flow_history = None
        self._held_out: np.ndarray | None = None
        self._held_out_weights: np.ndarray | None = None
        self._reset_auto()
        # Likelihood evaluations made outside a run (the "auto" density test,
        # the probe of the user's functions), added to the next run's
        # n_likelihood_evaluations.
        self._uncounted_evaluations = 0
        self._auto: dict | None = None
        self._resume: dict | None = None
        # The file a resume_from_file run came from: the resumed run goes on
        # checkpointing there unless told otherwise.
        self._resume_file: str | None = None
        # The file resume_from_file loaded a flow from when it held no run
        # yet: the next SMC run checkpoints there unless told otherwise.
        self._fresh_file: str | None = None
        self._fresh_flow: bytes | None = None
        # Set once a run has finished the loaded checkpoint: a later call
        # without resume_from starts a new run, and says so once.
        self._resume_used = False
        # Why there is no flow, when a checkpoint was read without one.
        self._no_flow_hint: str | None = None
        self._last_sampler_config: dict | None = None
        self._compiled: dict = {}
        self.n_likelihood_evaluations = 0
        self._check_parameters()

    # ------------------------------------------------------------------ setup
    def _cached(self, name, static, build):
        """Jitted engine functions, built once per configuration.

        Rebuilding the closures on every call would make ``jax.jit`` trace and
        compile again; the cache keys on the static settings and the identity
        of the user's functions.
        """
        key = (name, static, id(self.log_likelihood), id(self.log_prior))
        if key not in self._compiled:
            self._compiled[key] = build()
        return self._compiled[key]

    @property
    def parameters(self) -> tuple[str, ...]:
        if self._parameters is None:
            return _default_names(self.dims)
        return self._parameters

    @property
    def prior_bounds(self) -> np.ndarray:
        """Bounds as an array ``(dims, 2)``."""
        return _parse_bounds(self._prior_bounds_arg, self.parameters, self.dims)

    @property
    def periodic(self) -> tuple[bool, ...]:
        return tuple(p in self.periodic_parameters for p in self.parameters)

    def _check_parameters(self):
        if len(set(self.parameters)) != self.dims:
            raise ValidationError(f"parameter names must be unique; got "
                                  f"{list(self.parameters)}")
        unknown = set(self.periodic_parameters) - set(self.parameters)
        if unknown:
            raise ValidationError(
                f"periodic_parameters names unknown parameters {sorted(unknown)}; "
                f"the parameters are {list(self.parameters)}"
                f"{_NAMES_HINT if self._parameters is None else ''}")
        bounds = self.prior_bounds
        _check_float32_bounds(self.parameters, bounds)
        for name, per, (lo, hi) in zip(self.parameters, self.periodic, bounds):
            if per and not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValidationError(
                    f"periodic parameter {name!r} needs finite prior_bounds; got "
                    f"({lo}, {hi})")

    def _check_eps_band(self, x: np.ndarray) -> None:
        """Refuse training values that the bounded transform cannot tell
        apart: within ``eps * (hi - lo)`` of a bound every value maps to the
        same point, so a posterior far narrower than its prior range (a rate
        of 5 +- 0.5 in bounds (0, 1e7)) trains a flow collapsed onto a point
        in that coordinate."""
        if not self.bounded_to_unbounded:
            return
        eps = self.flow_config.eps
        for c, (name, per, (lo, hi)) in enumerate(
                zip(self.parameters, self.periodic, self.prior_bounds)):
            if per or not (np.isfinite(lo) and np.isfinite(hi)):
                continue
            gap = np.minimum(x[:, c] - lo, hi - x[:, c]) / (hi - lo)
            # Values on a bound (moved a float step inside it) are the
            # documented edge case, not a scale problem: they are left out.
            near_lo, near_hi = (4 * np.spacing(np.asarray(abs(b), x.dtype))
                                for b in (lo, hi))
            inside = (x[:, c] - lo > near_lo) & (hi - x[:, c] > near_hi)
            share = float(np.mean((gap < eps) & inside))
            if share > 0.01:
                fine = float(np.quantile(gap[inside], 0.01))
                raise ValidationError(
                    f"{share:.0%} of the training values of {name!r} lie within "
                    f"eps * (hi - lo) = {eps * (hi - lo):.3g} of a bound of "
                    f"({lo:g}, {hi:g}), where the bounded transform maps them all "
                    "to one point and the flow cannot describe them. Pass a "
                    f"smaller eps to Aspire (e.g. eps={max(fine / 100, 1e-30):.1g}) "
                    "or prior_bounds closer to the samples")

    def _flow_bounds(self):
        return self.prior_bounds if self.bounded_to_unbounded else None

    def _as_array(self, samples, what="samples") -> np.ndarray:
        """``samples`` as an ``(n, dims)`` float array in this instance's
        parameter order (rows are checked by :meth:`_check_rows`)."""
        if isinstance(samples, Samples):
            if self._parameters is None and samples.parameters:
                if len(samples.parameters) == self.dims:
                    self._parameters = tuple(samples.parameters)
                    self._check_parameters()
            elif sorted(samples.parameters) != sorted(self.parameters):
                unnamed = (tuple(samples.parameters) == _default_names(self.dims)
                           and len(samples.parameters) == self.dims)
                raise ValidationError(
                    f"{what} carry parameters {list(samples.parameters)} but this "
                    f"Aspire has {list(self.parameters)}"
                    + ("; those are the default names of Samples made without "
                       "parameters=: name the columns there (Samples.from_array(x, "
                       f"parameters={list(self.parameters)})) or pass the plain "
                       "array, whose columns are taken in this Aspire's order"
                       if unnamed else ""))
            x = np.asarray(samples.x)
            names = list(samples.parameters or ())
            if (sorted(names) == sorted(self.parameters)
                    and tuple(names) != self.parameters):
                # The same names in another order: columns by name, as for a
                # dict or a DataFrame.
                x = x[:, [names.index(p) for p in self.parameters]]
        elif hasattr(samples, "columns") and hasattr(samples, "to_numpy"):
            columns = [str(c) for c in samples.columns]
            if self._parameters is None and len(columns) == self.dims:
                self._parameters = tuple(columns)
                self._check_parameters()
            missing = [p for p in self.parameters if p not in columns]
            if missing:
                raise ValidationError(f"{what} DataFrame lacks columns {missing}; it has "
                                      f"{columns}")
            x = np.column_stack([np.asarray(samples[p]) for p in self.parameters])
        elif isinstance(samples, Mapping):
            missing = [p for p in self.parameters if p not in samples]
            if missing:
                raise ValidationError(f"{what} dict lacks parameters {missing}")
            lengths = {p: np.shape(samples[p]) for p in self.parameters}
            if len({v for v in lengths.values()}) != 1 or any(
                    len(v) != 1 for v in lengths.values()):
                raise ValidationError(f"{what} dict columns must be 1-D and of equal "
                                      f"length; got shapes {lengths}")
            x = np.column_stack([np.asarray(samples[p]) for p in self.parameters])
        else:
            x = np.asarray(samples)
        if x.ndim != 2 or x.shape[1] != self.dims:
            raise ValidationError(
                f"{what} must have shape (n, {self.dims}); got {x.shape}")
        if x.dtype.kind not in "fiu":
            raise ValidationError(f"{what} must be real numbers; got dtype {x.dtype}")
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(_float_dtype())
        return x

    def _inside_bounds(self, x: np.ndarray) -> np.ndarray:
        """Training rows strictly inside the bounds, as the flow's transform
        needs: periodic values wrapped into ``[lo, hi)``, and values on a
        bound (a closed end, or a float64 value the float32 cast rounded onto
        it) moved one float step inward."""
        bounds = self.prior_bounds.astype(x.dtype)
        x = x.copy()
        moved = 0
        for j, (lo, hi) in enumerate(bounds):
            if self.periodic[j]:
                x[:, j] = lo + np.mod(x[:, j] - lo, hi - lo)
            on_lo, on_hi = x[:, j] <= lo, x[:, j] >= hi
            x[on_lo, j] = np.nextafter(lo, hi)
            x[on_hi, j] = np.nextafter(hi, lo)
            moved += int(on_lo.sum() + on_hi.sum())
        if moved:
            logger.info("training samples: %d values on a bound moved one float step "
                        "inside it", moved)
        return x

    def _check_rows(self, x: np.ndarray, what: str) -> np.ndarray:
        """``x`` if it has two rows or more, all finite and inside the prior
        bounds; a clear error otherwise."""
        if x.shape[0] < 2:
            raise ValidationError(f"{what} need at least 2 rows; got {x.shape[0]}")
        bad = ~np.isfinite(x)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValidationError(
                f"{what} contain {int(bad.sum())} non-finite values (first: row {r}, "
                f"parameter {self.parameters[c]!r} = {x[r, c]}); drop or fix those "
                "rows before fitting")
        bounds = self.prior_bounds
        # Periodic values are wrapped into their range (see _inside_bounds):
        # an angle given in (-pi, pi] for bounds [0, 2 pi) is not outside.
        outside = ((x < bounds[:, 0]) | (x > bounds[:, 1])) & ~np.asarray(
            self.periodic, bool)
        if outside.any():
            r, c = np.argwhere(outside)[0]
            raise ValidationError(
                f"{what}: {int(outside.any(axis=1).sum())} rows lie outside "
                f"prior_bounds (first: row {r}, {self.parameters[c]!r} = {x[r, c]} "
                f"not in ({float(bounds[c, 0])}, {float(bounds[c, 1])})); widen "
                "prior_bounds or drop those rows")
        return x

    def _check_user_functions(self, x: np.ndarray):
        """Evaluate the user's functions on a few points, eagerly, with clear errors."""
        probe = jnp.asarray(x[: min(4, len(x))], _float_dtype())
        # Where the prior is -inf the likelihood is never used (it may be
        # undefined there, e.g. outside an ordering constraint).
        possible = np.ones(probe.shape[0], bool)
        for name, fn in (("log_prior", self.log_prior),
                         ("log_likelihood", self.log_likelihood)):
            try:
                out = jnp.asarray(fn(probe))
            except Exception as exc:  # the user's code: re-raise with context
                raise ValidationError(
                    f"{name} failed on a batch of shape {tuple(probe.shape)}: "
                    f"{type(exc).__name__}: {exc}. It must take an (n, {self.dims}) "
                    "array and return an (n,) array") from exc
            if out.shape != (probe.shape[0],):
                raise ValidationError(
                    f"{name} must map a batch of shape (n, {self.dims}) to shape (n,); "
                    f"for input {tuple(probe.shape)} it returned {tuple(out.shape)}")
            if not jnp.issubdtype(out.dtype, jnp.floating):
                raise ValidationError(
                    f"{name} must return real floating-point log-densities; it "
                    f"returned dtype {out.dtype}. Return a float array (impossible "
                    "points as -inf)")
            values = np.asarray(out)
            bad = (np.isnan(values) | (values == np.inf)) & possible
            if name == "log_prior":
                possible = ~np.isneginf(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValidationError(
                    f"{name} returned {values[i]} at {int(bad.sum())} of "
                    f"{values.size} points drawn from the flow (first: "
                    f"{np.asarray(probe[i]).tolist()}). A log-density must be finite "
                    "or -inf; return -inf for impossible points. (During a run NaN "
                    "and +inf are treated as -inf, i.e. the point is rejected, and "
                    "counted in a warning.)")
            try:
                jax.eval_shape(fn, probe)
            except (jax.errors.TracerArrayConversionError,
                    jax.errors.ConcretizationTypeError,
                    jax.errors.TracerBoolConversionError) as exc:
                raise ValidationError(
                    f"{name} is not traceable by JAX ({type(exc).__name__}): it looks "
                    "like NumPy or Python code. Write it with jax.numpy, or wrap a "
                    "batched NumPy function with aspire_jax.wrap_numpy_likelihood"
                ) from exc

    def _check_differentiable(self):
        """Gradient kernels need likelihoods JAX can differentiate."""
        probe = jnp.zeros((2, self.dims), _float_dtype())
        for name, fn in (("log_prior", self.log_prior),
                         ("log_likelihood", self.log_likelihood)):
            try:
                jax.eval_shape(jax.grad(lambda x: jnp.sum(fn(x))), probe)
            except Exception as exc:
                raise ValidationError(
                    f"kernel='mala' needs the gradient of {name}, which JAX cannot "
                    f"take ({type(exc).__name__}: {str(exc).splitlines()[0]}); a "
                    "wrap_numpy_likelihood callback has none. Use kernel='tpcn', "
                    "'pcn' or 'rwmh'") from exc

    # -------------------------------------------------------------------- fit
    def fit(self, samples, *, key=None, n_epochs: int = 200,
            learning_rate: float = 1e-3, batch_size: int = 256,
            validation_fraction: float = 0.2, patience: int | None = 20,
            clip_grad: float | None = None, weight_decay: float = 0.0,
            checkpoint_path=None, checkpoint_save_config: bool = True,
            overwrite: bool = False, progress: bool | None = None, **unknown):
        """Fit the flow to samples of the earlier analysis.

        Parameters
        ----------
        samples
            :class:`Samples`, an array ``(n, dims)`` or a dict of columns.
            Weighted samples (``log_weights`` set and not all equal, as from
            importance sampling; for a dict or DataFrame, a ``log_weights``
            entry that is not a parameter) are fitted by weighted maximum
            likelihood: the whitening uses weighted moments, batches are
            drawn in proportion to the weights and early stopping watches
            the weighted held-out loss. Rows of weight 0 are dropped, and
            the effective sample size ``(sum w)^2 / sum w^2`` must be at
            least 2 (fewer than 100 samples, or an effective 100, gives a
            warning: the flow will describe them poorly). Periodic values are wrapped into their range, and
            values on a bound are moved one float step inside it.
        key
            Typed key, int seed or None (a seed is drawn, logged and kept
            as ``flow_history.seed``).
        n_epochs, learning_rate, batch_size, validation_fraction, patience,
        clip_grad, weight_decay
            Training settings (optax Adam/AdamW, early stopping on the
            validation loss with the best parameters restored).
        checkpoint_path
            HDF5 file to which the config and flow are written after fitting
            (by default none, or that of :meth:`auto_checkpoint`; ``False``:
            none in either case).
        checkpoint_save_config
            Also write ``/aspire_config``.
        overwrite
            Refit even if a flow was restored from a checkpoint.
        progress
            Show a progress bar (default: when attached to a terminal).

        Returns
        -------
        FlowHistory
            Training and validation loss per epoch.
        """
        if unknown:
            _refuse_fit_options(unknown)
        overwrite = _flag("overwrite", overwrite)
        progress = _flag("progress", progress, allow_none=True)
        checkpoint_save_config = _flag("checkpoint_save_config", checkpoint_save_config)
        if self.flow_params is not None and self._resume is not None and not overwrite:
            logger.info("flow restored from a checkpoint; skipping fit "
                        "(pass overwrite=True to refit)")
            return self.flow_history
        if checkpoint_path is False:
            checkpoint_path = None
        elif checkpoint_path is None and self._auto is not None:
            checkpoint_path = self._auto["path"]
        x = self._as_array(samples, "training samples")
        check_float32_range(x, self.parameters, "training samples")
        warn_float32_resolution(x, self.parameters, "training samples")
        key, seed = _as_key(key)
        # Rows of weight 0 go first: reweighting to a narrower prior gives
        # -inf to rows outside it, which need not be inside its bounds.
        x, weights = _training_weights(samples, x, self.parameters)
        x = self._check_rows(x, "training samples")
        _refuse_point_mass(x, self.parameters)
        if checkpoint_path is not None:
            # Before training, so a bad path does not cost the fit.
            _check_h5_suffix(checkpoint_path)
            _check_writable(checkpoint_path)
        key_init, key_fit = jax.random.split(key)
        x = self._inside_bounds(x.astype(_float_dtype()))
        # Distinct as given, one value in the dtype the flow computes in.
        _refuse_point_mass(x, self.parameters, rounded=True)
        self._check_eps_band(x)
        effective = (x.shape[0] if weights is None
                     else float(weights.sum() ** 2 / np.sum(weights**2)))
        if effective < _FEW_TRAINING_ROWS:
            logger.warning("the flow is fitted to %d samples (an effective %.0f); with "
                           "fewer than %d it describes the earlier posterior poorly",
                           x.shape[0], effective, _FEW_TRAINING_ROWS)
        params = self.flow.init(key_init, x, prior_bounds=self._flow_bounds(),
                                weights=weights)
        callback, bar = self._fit_progress(n_epochs, progress)
        try:
            params, history = fit_flow(
                self.flow, params, key_fit, x, n_epochs=n_epochs,
                learning_rate=learning_rate, batch_size=batch_size,
                validation_fraction=validation_fraction, patience=patience,
                clip_grad=clip_grad, weight_decay=weight_decay, callback=callback,
                weights=weights)
        finally:
            if bar is not None:
                bar.close()
        history = dataclasses.replace(history, seed=seed)
        if self._resume is not None:
            # The checkpoint's particles carry log q of the flow it was run
            # with; they cannot continue under this one.
            logger.info("the refitted flow replaces the one restored from the "
                        "checkpoint; the next run starts afresh instead of resuming")
            self._resume = self._resume_file = None
        self._fresh_file = None
        self.flow_params = params
        self.flow_history = history
        self._reset_auto()
        self._held_out = (None if history.held_out_index is None
                          else x[history.held_out_index])
        self._held_out_weights = (None if weights is None or self._held_out is None
                                  else weights[history.held_out_index])
        logger.info("flow fitted: %d epochs, best validation loss %.4f at epoch %d%s",
                    len(history.training_loss), float(np.min(history.validation_loss))
                    if len(history.validation_loss) else float("nan"),
                    history.best_epoch, "" if seed is None else f" (seed {seed})")
        _warn_poor_flow(history, self.dims, learning_rate)
        if checkpoint_path is not None and is_checkpoint_writer():
            save_cfg = checkpoint_save_config and (
                self._auto is None or self._auto.get("save_config", True))
            groups = {"flow": self._write_flow}
            if save_cfg:
                groups["aspire_config"] = self._write_config
            _check_h5_suffix(checkpoint_path)
            _check_writable(checkpoint_path)
            # A new flow invalidates any state, history and sampler settings of
            # an earlier run in the same file, so the file is started afresh
            # (an unfinished run in it is kept aside first).
            _set_aside_unfinished(checkpoint_path)
            write_checkpoint_file(checkpoint_path, state_bytes=None, groups=groups,
                                  keep_existing=False)
        return history

    def _fit_progress(self, n_epochs, progress):
        bar = _make_bar(progress, total=n_epochs, desc="flow")
        if bar is None:
            return None, None

        def callback(epoch, train_loss, val_loss):
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}")

        return callback, bar

    def _require_flow(self):
        if self.flow_params is None:
            raise ValidationError(
                self._no_flow_hint or "no flow yet: call fit(samples) first, or load "
                "one with load_flow / Aspire.resume_from_file")

    # ----------------------------------------------------------- flow samples
    def sample_flow(self, n_samples: int, *, key=None) -> Samples:
        """Draw ``n_samples`` from the fitted flow, with ``log_q``."""
        self._require_flow()
        _check_count(n_samples, "n_samples")
        key, _ = _as_key(key)
        sample = self._cached("flow", None, lambda: jax.jit(
            self.flow.sample_and_log_prob, static_argnums=2))
        x, log_q = sample(self.flow_params, key, int(n_samples))
        return Samples.from_array(x, parameters=self.parameters, log_q=log_q)

    # -------------------------------------------------------------- posterior
    def sample_posterior(self, n_samples: int | None = None,
                         sampler: str | None = None, *,
                         key=None, return_history: bool = False,
                         checkpoint_path=None, checkpoint_every: int | None = None,
                         checkpoint_save_config: bool = True,
                         checkpoint_save_flow: bool = True,
                         checkpoint_callback: Callable | None = None,
                         resume_from=None, progress: bool | None = None,
                         log_every: int = 1, sampler_kwargs: Mapping | None = None,
                         mesh=None, store_sample_history: bool = False, **options):
        """Sample the new posterior, starting from the fitted flow.

        Parameters
        ----------
        n_samples
            Number of particles (SMC), draws (importance) or chains (MCMC);
            by default the count stored in the checkpoint being resumed, else
            1000.
        sampler
            ``"smc"`` (default), ``"importance"`` or ``"mcmc"``.
        key
            Typed key, int seed or None (a seed is drawn and recorded in the
            checkpoint, so the run can be reproduced). A resumed run continues
            with the random state stored in its checkpoint: a key other than the
            one it was started with raises.
        return_history
            Also return the per-iteration :class:`History`.
        checkpoint_path
            HDF5 file (``.h5``/``.hdf5``) to write checkpoints to (SMC). By
            default none, except that a run resumed from the file of
            :meth:`resume_from_file` goes on writing into that file, and one
            inside :meth:`auto_checkpoint` into its file; ``False`` writes no
            file in every case.
        checkpoint_every
            Iterations between checkpoints (default 1).
        checkpoint_save_config, checkpoint_save_flow
            Write ``/aspire_config`` and ``/flow`` beside the state.
        checkpoint_callback
            ``callback(checkpoint: dict)`` called every ``checkpoint_every``
            iterations with ``state`` (bytes), ``history``, ``iteration``, ``beta``,
            ``sampler`` and ``sampler_config``; the dict can be passed back as
            ``resume_from``.
        resume_from
            Resume SMC from checkpoint bytes, a checkpoint dict or a file path.
        progress
            Show a progress bar (default: when attached to a terminal).
        log_every
            Log one INFO line every this many iterations (0: none).
        sampler_kwargs
            Kernel options in the spelling of the original aspire:
            ``n_steps`` (MCMC sweeps per iteration), ``step_fn`` (``"tpcn"`` or
            ``"pcn"``), ``target_acceptance_rate``.
        store_sample_history
            Keep the particles of every SMC iteration in memory and return
            them as ``history.sample_history`` (a :class:`SampleHistory`, with
            the starting population first); they are not written to
            checkpoints. Costs ``n_samples x dims`` floats per iteration.
        mesh
            Split the particles over devices (SMC only): a mesh from
            :func:`aspire_jax.sharding.particle_mesh` or a device count; ``None``
            runs on the default device. A checkpoint resumes on any mesh.
        **options
            Sampler settings: for ``"smc"`` every field of
            :class:`~aspire_jax.smc.SMCConfig` except ``n_particles``, plus
            ``n_final_samples`` and ``driver`` (``"host"`` or ``"device"``); for
            ``"mcmc"`` ``kernel``, ``kernel_settings``, ``n_steps``, ``n_burnin``,
            ``preconditioning``. Unknown names raise at once.
            ``"smc"`` and ``"importance"`` also take ``reference``: what the run
            starts from, ``"flow"``, ``"gaussian"`` (the Gaussian of the
            flow's training samples in the unbounded space of the parameter
            transform, :class:`~aspire_jax.flows.GaussianReference`) or
            ``"auto"`` (:meth:`auto_reference`: the Gaussian when the flow does
            not beat it on held-out samples by more than 0.1 nats per
            dimension); the default is ``"auto"`` for SMC and ``"flow"`` for
            importance sampling. With the Gaussian, ``preconditioning="auto"``
            moves in the standard space. They also take ``defensive_weight``
            (default 0.1 for SMC, 0 for importance sampling) and
            ``defensive_scale`` (default 1.5): start from the defensive
            reference ``(1 - w) q + w q_t``, in which a share ``w`` of the
            reference's draws come from a Student-t base (3 degrees of freedom,
            scale ``s``) pushed through the same map
            (:class:`~aspire_jax.flows.DefensiveReference`). It bounds the
            heavy-tailed weights of a reference lighter-tailed than the new
            posterior (narrower along some direction, or Gaussian where the
            posterior falls off exponentially towards a bound), which otherwise
            bias log Z low with too small an error bar. ``defensive_weight=0``
            starts from the reference alone.

        Returns
        -------
        Samples or (Samples, History)

        Raises
        ------
        ValidationError
            For bad arguments, before anything runs.
        TemperingError
            When an SMC run stops short of beta = 1 (``max_iterations`` or
            ``max_n_steps`` reached, or the schedule stalled). Its ``history``
            attribute holds the :class:`History` of the iterations run (with
            the sample history if asked), and a checkpoint, if written, holds
            the last state: a run loaded with ``resume_from_file`` stays ready
            to resume.
        """
        self._require_flow()
        mesh = as_mesh(mesh)
        resume = self._resolve_resume(resume_from, sampler)
        if resume is None and self._resume_used:
            self._resume_used = False
            logger.warning(
                "the checkpoint this Aspire was loaded from was finished by an earlier "
                "call; this call starts a new run (pass resume_from= to run from a "
                "checkpoint again)")
        if sampler is None:
            sampler = (resume or {}).get("sampler") or "smc"
        if sampler == "minipcn" and "kernel" not in options and "step_fn" not in (
                sampler_kwargs or {}):
            # The original aspire's pCN sampler: its step, t-pCN, by default.
            options["kernel"] = "tpcn"
        sampler = _ALIASES.get(sampler, sampler)
        if sampler not in SAMPLERS:
            raise ValidationError(f"unknown sampler {sampler!r}; choose one of "
                                  f"{list(SAMPLERS)}")
        if resume is not None and sampler != "smc":
            raise ValidationError(
                f"resuming continues an SMC run; sampler={sampler!r} cannot resume. "
                "Drop resume_from (or call resume_from_file's sample_posterior with "
                "sampler='smc'), or start a fresh run")
        given = [n for n, v in (("checkpoint_path", checkpoint_path),
                                ("checkpoint_every", checkpoint_every),
                                ("checkpoint_callback", checkpoint_callback))
                 if v is not None]
        if given and sampler != "smc":
            raise ValidationError(
                f"{', '.join(given)} applies to SMC runs; sampler={sampler!r} runs in "
                "one call and writes no checkpoint. Drop it (save the result with "
                "Samples.save) or use sampler='smc'")
        if (self._auto is not None and sampler != "smc"
                and not self._auto.get("told_one_call")):
            self._auto["told_one_call"] = True
            logger.warning(
                "sampler=%r runs in one call and writes no checkpoint, inside "
                "auto_checkpoint too (which checkpoints SMC runs and the fit); save "
                "its result with Samples.save", sampler)
        store_sample_history = _flag("store_sample_history", store_sample_history)
        return_history = _flag("return_history", return_history)
        progress = _flag("progress", progress, allow_none=True)
        if isinstance(log_every, bool) or not is_int(log_every) or log_every < 0:
            raise ValidationError("log_every must be an int >= 0 (0: no per-iteration "
                                  f"log lines); got {log_every!r}")
        if store_sample_history and not return_history:
            raise ValidationError(
                "store_sample_history returns the particles in the history: pass "
                "return_history=True as well")
        if store_sample_history and sampler != "smc":
            raise ValidationError(
                f"store_sample_history keeps the particles of each SMC iteration; "
                f"sampler={sampler!r} has no iterations to keep. Drop it or use "
                "sampler='smc'")
        if mesh is not None and sampler != "smc":
            raise NotImplementedError(
                f"mesh places SMC particles only; sampler={sampler!r} runs on one "
                "device: drop mesh or use sampler='smc'")
        # Translated first, so that a resume checks them like their new names.
        options = _translate_sampler_kwargs(sampler_kwargs, options, sampler)
        if "reference" in options:
            # Checked before a resume compares it with the stored one.
            _check_reference_name(options["reference"])
        if options.get("preconditioning") == "default":
            # aspire's name for the standard (whitened) space.
            options["preconditioning"] = "standard"
        given_options, from_checkpoint = dict(options), set()
        stored_count = False  # whether n_samples is the checkpoint's own
        if resume and resume.get("sampler_config"):
            stored = dict(resume["sampler_config"].get("options", {}))
            if sampler in ("smc", "mcmc"):
                # Runs stored without it used the engine's default.
                stored.setdefault("preconditioning", "standard")
            if sampler == "smc":
                # Runs stored without it started from the flow.
                stored.setdefault("reference", "flow")
                # Runs stored without it started from the reference alone.
                stored.setdefault("defensive_weight", 0.0)
            options = _merge_resume_options(stored, options)
            from_checkpoint = set(stored) - set(given_options)
            stored_seed = resume["sampler_config"].get("seed")
            if stored_seed is not None:
                if key is not None and not _same_seed(key, int(stored_seed)):
                    raise ValidationError(
                        f"the checkpoint's run was started with key={int(stored_seed)} "
                        "and continues with the random state it stored; another key "
                        "cannot take effect. Drop key (or pass the same one)")
                key = int(stored_seed)
            elif key is not None:
                logger.warning(
                    "the checkpoint's run continues with the random state it stored "
                    "(it was started with a typed key, which is not recorded): the "
                    "key given now is not used")
            stored_n = resume["sampler_config"].get("n_samples")
            if n_samples is None:
                n_samples = stored_n
                stored_count = stored_n is not None
            elif stored_n is not None and n_samples != stored_n:
                raise ValidationError(
                    f"the checkpoint holds {stored_n} particles; n_samples={n_samples} "
                    "cannot resume it. Drop n_samples (or pass the same count)")
        if resume is not None:
            self._check_resume_precision(resume)
        if n_samples is None and resume is not None:
            n_samples = _stored_particle_count(resume)
        n_samples = 1000 if n_samples is None else n_samples
        _check_count(n_samples, "n_samples")
        if sampler in ("smc", "importance"):
            # A bare resumed state (no settings stored) resolves "auto" as the
            # run that made it did, from the same flow; its cached log q is
            # checked against the choice.
            options["reference"] = self._resolve_reference(
                options.get("reference", "auto" if sampler == "smc" else "flow"))
        if (sampler == "smc" and options.get("preconditioning", "auto") == "auto"
                and options["reference"] == "gaussian"):
            # The flow gains nothing to straighten; its latent space would not
            # be used by the reference either.
            options["preconditioning"] = "standard"
        if sampler in ("smc", "mcmc") and options.get("preconditioning",
                                                      "auto") == "auto":
            if resume is not None and not resume.get("sampler_config"):
                # A bare state does not say how it moved; keep the engine's
                # default rather than guess from the flow.
                options["preconditioning"] = "standard"
            else:
                options["preconditioning"] = self.auto_preconditioning()
        if options.get("preconditioning", "standard") not in _SPACES:
            raise ValidationError(
                f"unknown preconditioning {options['preconditioning']!r}; choose "
                f"one of {['auto', *_SPACES]}")
        no_file = checkpoint_path is False
        if no_file:
            checkpoint_path = None
        elif checkpoint_path is True:
            raise ValidationError(
                "checkpoint_path must be an .h5/.hdf5 path, None, or False (no file, "
                "even for a resumed run or inside auto_checkpoint); got True")
        if self._auto is not None and not no_file:
            if checkpoint_path is None:
                checkpoint_path = self._auto["path"]
            if checkpoint_every is None:
                checkpoint_every = self._auto["every"]
            checkpoint_save_config = self._auto.get("save_config", checkpoint_save_config)
            checkpoint_save_flow = self._auto.get("save_flow", checkpoint_save_flow)
        own_file = (self._resume_file if resume is not None and resume is self._resume
                    else self._fresh_file if resume is None else None)
        if (checkpoint_path is None and not no_file and own_file is not None
                and sampler == "smc" and resume is None
                and not self._file_as_loaded(own_file)):
            logger.warning(
                "%s, which held no run when this Aspire was loaded from it, now holds "
                "a run or another flow written since; this run writes no checkpoint "
                "there (pass checkpoint_path to choose a file)", own_file)
            own_file = None
        if (checkpoint_path is None and not no_file and own_file is not None
                and sampler == "smc"):
            run = "resumed run" if resume is not None else "run"
            try:
                _check_writable(own_file)
            except ValidationError as exc:
                logger.warning("the %s cannot checkpoint into the file its flow came "
                               "from, and writes no checkpoint: %s", run, exc)
            else:
                checkpoint_path = own_file
                logger.info("the %s checkpoints into %s, the file its flow came from "
                            "(pass checkpoint_path to choose another file, or False "
                            "for none)", run, checkpoint_path)
        if (resume_from is not None and checkpoint_path is None and not no_file
                and checkpoint_callback is None and sampler == "smc"):
            logger.warning(
                "the run resumed from resume_from writes no checkpoint: pass "
                "checkpoint_path (the file it came from, say) to go on "
                "checkpointing, or False to silence this")
        checkpoint_every = 1 if checkpoint_every is None else checkpoint_every
        if not is_int(checkpoint_every) or checkpoint_every < 1:
            raise ValidationError(f"checkpoint_every must be a positive integer; got "
                                  f"{checkpoint_every!r}")
        checkpoint_every = int(checkpoint_every)
        if checkpoint_callback is not None and not callable(checkpoint_callback):
            raise ValidationError(
                "checkpoint_callback must be callable (it is called with a dict of "
                f"the state bytes, history and iteration) or None; got "
                f"{checkpoint_callback!r}")
        if checkpoint_path is not None:
            _check_h5_suffix(checkpoint_path)
            _check_writable(checkpoint_path)
        key, seed = _as_key(key)
        allowed = {"importance": _IMPORTANCE_OPTIONS, "mcmc": _MCMC_OPTIONS,
                   "smc": _SMC_OPTIONS}
        stored_unknown = sorted(k for k in set(options) - set(allowed[sampler])
                                if k in from_checkpoint)
        if stored_unknown:
            raise CheckpointError(
                f"the checkpoint's sampler_config is damaged: it holds option(s) "
                f"{stored_unknown} that sampler={sampler!r} does not take; it was "
                "edited, or written by another version of aspire_jax")
        if sampler == "smc" and isinstance(self.flow, Flow):
            # (A flow of another kind may lack the latent maps it needs.)
            options.setdefault("defensive_weight", DEFENSIVE_WEIGHT)
        _reject_options(options, allowed[sampler], sampler)
        reference = self._reference(options)
        if self.flow_history is not None and options.get("reference") != "gaussian":
            _warn_poor_flow(self.flow_history, self.dims)
        if sampler == "smc":
            # Settle every engine setting now, so a refused call leaves no
            # trace in the configuration that checkpoints record.
            engine = {k: v for k, v in options.items()
                      if k not in ("n_final_samples", "driver", *_REFERENCE_OPTIONS)}
            try:
                SMCConfig(n_particles=int(n_samples), **engine)
            except ValidationError as exc:
                # A setting the checkpoint supplied is the file's fault, not
                # the caller's: say so.
                own = {k: v for k, v in engine.items() if k not in from_checkpoint}
                try:
                    SMCConfig(n_particles=int(n_samples), **own)
                except ValidationError:
                    raise exc from None
                stored = {k: v for k, v in engine.items() if k in from_checkpoint}
                try:
                    SMCConfig(n_particles=int(n_samples), **stored)
                except ValidationError:
                    pass
                else:
                    # Each side is valid alone: the call's settings do not fit
                    # the stored ones.
                    given = ", ".join(f"{k}={v!r}" for k, v in sorted(own.items()))
                    raise ValidationError(
                        f"{exc}. The settings given now ({given or 'none'}) do not "
                        "fit those the checkpoint's run was made with ("
                        + ", ".join(f"{k}={v!r}" for k, v in sorted(stored.items()))
                        + "); change the call's, or override the stored ones at "
                        "the call") from exc
                raise CheckpointError(
                    f"the checkpoint's sampler settings are damaged: {exc} (stored "
                    "in its sampler_config; pass a valid value at the call to "
                    "override it)") from exc
        if sampler == "importance" and options.get("batch_size") is not None:
            # Checked as the SMC setting is.
            SMCConfig(n_particles=int(n_samples), batch_size=options["batch_size"])
        rows = evaluated_rows(int(n_samples), options.get("batch_size"))
        if rows > _MAX_EVALUATIONS:
            raise ValidationError(
                f"batch_size={options['batch_size']} pads {n_samples} to {rows} rows, "
                "more than the int32 count of evaluations the samplers keep "
                "(2**31 - 1); choose a batch_size that divides n_samples")
        _warn_batch_padding(options.get("batch_size"), int(n_samples),
                            options.get("n_final_samples"),
                            devices=1 if mesh is None else mesh.size)
        if int(n_samples) < _FEW_PARTICLES:
            what = {"smc": "the error bar of log Z (a large-sample approximation) "
                           "and the move references fitted to the particles are "
                           "unreliable, and runs of 2 or 3 particles have returned "
                           "log Z off by tens of nats with error bars under 1",
                    "importance": "the error bar of log Z (a large-sample "
                                  "approximation) is unreliable",
                    "mcmc": "the move references fitted to the chains are "
                            "unreliable"}[sampler]
            logger.warning("%d particles: below %d %s; use thousands for a result",
                           int(n_samples), _FEW_PARTICLES, what)
        self._last_sampler_config = dict(sampler=sampler, n_samples=int(n_samples),
                                         seed=seed, options=_jsonable(options),
                                         x64=self._flow_dtype() == np.float64)
        if sampler == "importance":
            out = self._run_importance(key, int(n_samples), reference,
                                       options.get("batch_size"))
        elif sampler == "mcmc":
            out = self._run_mcmc(key, int(n_samples), options)
        else:
            # The file a flow was loaded from without a run gets the first run.
            self._fresh_file = None
            out = self._run_smc(
                key, int(n_samples), options, resume=resume,
                checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                save_config=checkpoint_save_config, save_flow=checkpoint_save_flow,
                callback=checkpoint_callback, progress=progress, log_every=log_every,
                mesh=mesh, reference=reference, keep_particles=store_sample_history,
                stored_count=stored_count)
        samples, history = out
        return (samples, history) if return_history else samples

    # ------------------------------------------------------------ importance
    def _run_importance(self, key, n, reference, batch_size=None):
        self._probe()
        sample = self._cached("importance", (n, reference, batch_size), lambda: jax.jit(
            make_importance_sampler(self.log_likelihood, self.log_prior, reference, n,
                                    batch_size)))
        with self._host_errors("importance sampling"):
            r = jax.device_get(sample(key, self.flow_params))
        self._count_evaluations(int(r.n_evaluations))
        _warn_undefined(int(r.n_invalid), int(r.n_evaluations))
        if not np.any(np.isfinite(r.log_weights)):
            raise ValidationError(
                f"every one of the {n} draws from the flow has zero posterior density "
                "(log_prior + log_likelihood is -inf, NaN or +inf), so importance "
                "sampling has nothing to weight; check the functions and the flow")
        err = float(np.sqrt(r.log_evidence_var))
        _warn_resolution(r.log_likelihood, err)
        k = pareto_tail_shape(r.log_weights)
        # With every weight within twice their mean the sample variance is
        # bounded and the fitted tail shape is noise (on a reference matching
        # the posterior, Pareto k ranged over 0.24-0.78 across keys): it is
        # read only when some draw carries more.
        log_w = np.asarray(r.log_weights, np.float64)
        top = np.max(log_w[np.isfinite(log_w)])
        # log(largest weight / mean weight), zero weights included.
        spread = -math.log(np.mean(np.exp(np.where(np.isfinite(log_w), log_w - top,
                                                   -np.inf))))
        k_read = k if spread > math.log(2.0) else -math.inf
        # The curvature reads the tail shape from the bulk of the draws. It
        # needs standard-normal latent points (not a defensive mixture's) and
        # a posterior without the seams of periodic coordinates; above
        # CURVATURE_MAX the posterior is not log-concave in the latent space
        # (several modes), and it is no tail shape.
        curvature, curvature_error = (
            (math.nan, math.nan) if r.latent is None or any(self.periodic)
            or isinstance(reference, DefensiveReference)
            else weight_curvature(r.latent, r.log_weights))
        logger.info("importance sampling: log Z = %.4f +- %.4f, ESS = %.1f (%.2f%%), "
                    "Pareto k of the weights %.2f, their curvature in the latent "
                    "space %.2f +- %.2f", r.log_evidence, err, r.ess, 100 * r.ess / n,
                    k, curvature, curvature_error)
        # Two standard errors clear of the limit: noisy weights bias the
        # largest eigenvalue of the fitted curvature upward.
        if (curvature - 2 * curvature_error > PARETO_K_LIMIT
                and curvature <= CURVATURE_MAX):
            logger.warning(
                "the importance weights grow towards the reference's tails (the "
                "curvature of log w in its latent space is %.2f +- %.2f, 1 - 1/s "
                "for a posterior s times the reference's variance along some "
                "direction; above %.1f the weights' variance is, in practice, "
                "infinite): the reference is much narrower than the posterior "
                "there, and log Z and its error bar cannot be trusted (both "
                "typically too small) whatever the efficiency (%.2f%%; Pareto k of "
                "the largest weights %.2f); use sampler='smc'", curvature,
                curvature_error, PARETO_K_LIMIT, 100 * r.ess / n, k)
        elif k_read > PARETO_K_LIMIT and curvature + 2 * curvature_error < 0.0:
            # log w curves down in every direction: the reference is wider
            # than the posterior, the weights are bounded, and the large
            # Pareto k only says how few draws carry them.
            logger.warning(
                "a few draws carry most of the importance weight (efficiency "
                "%.2f%%, Pareto k of the largest weights %.2f), but the reference "
                "is wider than the posterior (the curvature of log w in its latent "
                "space is %.2f +- %.2f, below 0), so the weights are bounded: log Z "
                "is consistent, and its error bar rough at so few effective draws; "
                "use more draws, or sampler='smc'", 100 * r.ess / n, k, curvature,
                curvature_error)
        elif k_read > PARETO_K_LIMIT:
            logger.warning(
                "the importance weights are heavy-tailed (Pareto k of the largest "
                "weights %s > %.1f): a few draws carry much of the weight, and "
                "log Z and its error bar cannot be trusted (both typically too "
                "small) whatever the efficiency (%.2f%%); use sampler='smc'",
                _above(k, PARETO_K_LIMIT), PARETO_K_LIMIT, 100 * r.ess / n)
        elif ((curvature - 2 * curvature_error > ERROR_BAR_K_LIMIT
               and curvature <= CURVATURE_MAX)
              or (not math.isfinite(curvature) and k_read > ERROR_BAR_K_LIMIT)):
            shape = (f"curvature of log w in the latent space {curvature:.2f} +- "
                     f"{curvature_error:.2f}, " if math.isfinite(curvature) else "")
            logger.warning(
                "the importance weights' variance is probably infinite (%sPareto k "
                "of the largest weights %s; above %.1f either way): log Z is still "
                "consistent, but its error bar understates the spread between runs "
                "(by a factor of 2 with a posterior 1.7 times wider than the "
                "reference); use sampler='smc' for an error bar to rely on", shape,
                _above(k, ERROR_BAR_K_LIMIT) if k > ERROR_BAR_K_LIMIT else f"{k:.2f}",
                ERROR_BAR_K_LIMIT)
        elif r.ess / n < 0.01:
            logger.warning("importance efficiency is %.3f%%: the flow covers the "
                           "posterior poorly; use sampler='smc'", 100 * r.ess / n)
        self._warn_prior_beyond_bounds(r.x, r.log_weights)
        samples = Samples.from_array(
            r.x, parameters=self.parameters, log_likelihood=r.log_likelihood,
            log_prior=r.log_prior, log_q=r.log_q, log_weights=r.log_weights,
            log_evidence=r.log_evidence, log_evidence_error=err)
        info = _single_info(1.0, r.ess / n, r.ess, r.log_evidence, r.log_evidence_var,
                            int(r.n_evaluations), int(r.n_invalid))
        return samples, History.from_infos("importance", [info])

    @contextlib.contextmanager
    def _host_errors(self, where: str, writer=None):
        """Re-raise an exception of a ``wrap_numpy_likelihood`` host function
        as itself (chained to the error JAX reports it as), with a note of
        where it stopped and of the checkpoint that resumes."""
        functions = (("log_likelihood", self.log_likelihood),
                     ("log_prior", self.log_prior))
        for _, f in functions:
            if hasattr(f, "host_error"):
                f.host_error = None
        # JAX logs a failed callback's traceback before raising; the
        # exception is re-raised below, whole, so that log is only noise.
        quiet = _OwnHostErrors(functions)
        callback_logger = logging.getLogger("jax._src.callback")
        callback_logger.addFilter(quiet)
        try:
            yield
        except Exception as exc:
            # JAX reports a failed callback as a JaxRuntimeError or, depending
            # on where the program is waited for, a ValueError; the host
            # function's own exception was recorded either way.
            for name, f in functions:
                original = getattr(f, "host_error", None)
                if original is None:
                    continue
                f.host_error = None
                note = f"aspire_jax: raised by the {name} host function during {where}"
                last = None if writer is None else writer.last_written
                if last is not None:
                    note += (f"; the checkpoint {os.fspath(writer.path)!r} holds "
                             f"iteration {last}, from which Aspire.resume_from_file "
                             "resumes the run")
                original.add_note(note)
                if original.__cause__ is not None:
                    # Keep the cause it came with (a pool's RemoteTraceback
                    # holds the worker's traceback); JAX's error stays its
                    # context.
                    raise original
                raise original from exc
            raise
        finally:
            callback_logger.removeFilter(quiet)

    def _probe(self):
        """Check the user's functions eagerly on four flow draws, before any jit."""
        sample = self._cached("probe", None, lambda: jax.jit(
            self.flow.sample, static_argnums=2))
        x = np.asarray(sample(self.flow_params, jax.random.key(0), 4))
        self._check_user_functions(x)
        self._uncounted_evaluations += len(x)

    # ------------------------------------------------------------------ mcmc
    def _run_mcmc(self, key, n, options):
        n_steps = options.pop("n_steps", 100)
        n_burnin = options.pop("n_burnin", 50)
        for name, v, low in (("n_steps", n_steps, 1), ("n_burnin", n_burnin, 0)):
            if (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral)
                    or v < low):
                raise ValidationError(f"{name} must be an integer >= {low}; got {v!r}")
        n_steps, n_burnin = int(n_steps), int(n_burnin)
        config = SMCConfig(n_particles=n, **{"kernel": "rwmh", **options})
        evaluations = evaluated_rows(n, config.batch_size) * (2 + n_burnin + n_steps)
        if evaluations > _MAX_EVALUATIONS:
            raise ValidationError(
                f"{n} chains of {n_burnin} + {n_steps} sweeps make {evaluations} "
                "likelihood evaluations, more than the int32 count the sampler keeps "
                "(2**31 - 1); run fewer chains or sweeps, or several runs")
        self._probe()
        if config.kernel == "mala":
            self._check_differentiable()
        _warn_mala_near_bounds(config, self.prior_bounds)
        space = self._space(config)
        sample = self._cached("mcmc", (config, space, n_steps, n_burnin),
                              lambda: jax.jit(make_mcmc_sampler(
                                  config, self.log_likelihood,
                                  self._engine_log_prior(config), space,
                                  n_steps, n_burnin)))
        with self._host_errors("the MCMC run"):
            r = jax.device_get(sample(key, self.flow_params))
        self._count_evaluations(int(r.n_evaluations))
        _warn_undefined(int(r.n_invalid), int(r.n_evaluations))
        logger.info("mcmc: %d chains x %d sweeps, final acceptance %.3f",
                    n, n_burnin + n_steps, float(r.acceptance[-1]))
        stuck = ~np.isfinite(np.asarray(r.log_prior) + np.asarray(r.log_likelihood))
        if stuck.all():
            raise ValidationError(
                f"every one of the {n} chains ends where the posterior density is "
                "zero (log_prior + log_likelihood is -inf, NaN or +inf): no chain "
                "found the posterior; check the functions and the flow")
        if stuck.any():
            logger.warning("%d of %d chains end where the posterior density is zero "
                           "and never moved to where it is not; they carry weight 0 "
                           "in the samples", int(stuck.sum()), n)
        unmoved = int(r.n_unmoved) - int(stuck.sum())
        if unmoved > 0:
            # A chain at positive density that never accepted a move is a
            # draw of the flow, not of the posterior: the samples lean toward
            # the flow there (where a move space squeezes the posterior).
            logger.warning(
                "%d of %d chains never accepted a move in %d sweeps: they are still "
                "at their starting draws of the flow, which biases the samples; run "
                "more sweeps (n_burnin, n_steps) or use another kernel or move "
                "space (preconditioning='standard' if this was 'flow')",
                unmoved, n, n_burnin + n_steps)
        # Sampling noise of a correlation over n chains is about 1/sqrt(n).
        corr = float(r.start_correlation)
        if n >= 20 and corr > max(0.2, 4.0 / math.sqrt(n)):
            logger.warning(
                "the chains' final points still correlate with their starting "
                "draws (%.2f in one coordinate of the move space) after %d sweeps: "
                "they have not forgotten the flow, so the samples may lean toward it; "
                "run more sweeps (n_burnin, n_steps) or use another kernel or move "
                "space", corr, n_burnin + n_steps)
        if n_steps and not unmoved:
            _warn_drift(r, ~stuck, self.parameters,
                        {j: tuple(self.prior_bounds[j]) for j, per in
                         enumerate(self.periodic) if per}, n_burnin, n_steps)
            _warn_acceptance_drop(r.acceptance, n_burnin, config)
        log_weights = np.where(stuck, -np.inf, 0.0) if stuck.any() else None
        self._warn_prior_beyond_bounds(r.x, log_weights)
        samples = Samples.from_array(
            r.x, parameters=self.parameters, log_likelihood=r.log_likelihood,
            log_prior=r.log_prior, log_q=r.log_q, log_weights=log_weights)
        # One row a sweep. MCMC estimates no evidence and no weights, so
        # those fields are NaN; the evaluations are the sweep's own (the
        # starting draws', like SMC's, are not an iteration's).
        nan = math.nan
        rows = [_single_info(1.0, nan, nan, nan, nan, n, int(bad))._replace(
                    acceptance=np.float32(acc), step_size=np.float32(size))
                for acc, size, bad in zip(r.acceptance, r.step_size,
                                          r.sweep_n_invalid)]
        return samples, History.from_infos("mcmc", rows)

    def auto_preconditioning(self) -> str:
        """The move space ``preconditioning="auto"`` (the default) chooses.

        ``"flow"`` (the flow's latent space) when both

        * the fitted flow beats its Gaussian by more than
          ``AUTO_FLOW_GAIN_PER_DIM`` nats per dimension on the held-out
          earlier samples weighted as draws of the new posterior (by
          ``pi(x) L(x) / q(x)`` under the new prior and likelihood, capped at
          their 99th percentile): it describes the posterior to be sampled,
          not only the earlier one, better than the Gaussian does. Where
          those weighted samples keep an effective size below
          ``AUTO_FLOW_MIN_HELD_OUT_ESS`` of their number, too few of them
          lie under the new posterior to judge by (or a few points where the
          flow's tail is too light take all the weight), and the gain on the
          unweighted held-out samples is used; and
        * the new posterior does not sit in the flow's tails: under the same
          weights, the median of the flow's log-density is above that of at
          least ``AUTO_FLOW_MIN_DENSITY_RANK``
          of the held-out samples (about half when the new posterior
          resembles the earlier one), or the weighted held-out samples keep
          an effective sample size of at least ``AUTO_FLOW_MIN_HELD_OUT_ESS``
          of their number (a new posterior that moves weight between the
          earlier modes: it ranks low in the flow's density but lies where
          the flow was trained);

        ``"standard"`` (the whitened unbounded space) otherwise, and whenever
        there is no validation loss to judge by or a parameter is periodic.
        The tests cost one likelihood evaluation per held-out sample,
        once per fit (counted in ``n_likelihood_evaluations`` of the next
        run); the held-out samples are saved with the flow, and a flow read
        from a file without them (or without its Gaussian) is judged by its
        unweighted held-out gain alone.

        Notes
        -----
        A flow that has learnt curvature, skew or several modes straightens
        them in its latent space, where pCN-type moves then decorrelate in a
        handful of sweeps (on a twisted Gaussian, five times fewer likelihood
        evaluations than in the whitened space). When the earlier posterior is
        close to Gaussian the flow has nothing to straighten and its small
        wiggles only hinder the moves, so the whitened space is kept.
        The latent space is only known to be well shaped where the flow was
        trained. When the new posterior lies largely outside the earlier one
        (a prior-sensitivity study that moves a hierarchical scale, say), it
        falls in the flow's extrapolated tails, where the moves mix slowly
        enough to bias the evidence: on the eight-schools case, by five
        times its reported error in the latent space against none in the
        whitened space. The test keeps such runs in the whitened space
        (it finds a rank of 0.05 there and an effective size of 2 %, against
        ranks of 0.43 to 0.57 on the benchmark's banana and on twisted
        Gaussians that match the earlier samples).

        The gain is weighted because what matters is the posterior to be
        sampled: where the new posterior moves mass into a minor mode of the
        earlier samples, the Gaussian of the training samples barely reaches
        it while the flow holds it (8-d, modes split 95/5 before and 30/70
        after: an unweighted gain of 0.03 per dimension, 0.21 to 0.31
        weighted); where it fills the gap between two earlier modes, the
        flow has a hole there that the Gaussian has not (2-d, split 50/50,
        new posterior N(between them, 3^2): 0.33 to 0.37 unweighted, -0.21
        to 0.00 weighted; from the flow log Z came out up to 7.7 reported
        errors off, from the Gaussian within 1.1). On the benchmark's
        problems the two agree on the choice.
        """
        self._check_auto_functions()
        if self._auto_space is not None:
            return self._auto_space
        if any(self.periodic):
            choice, why = "standard", "a parameter is periodic"
        else:
            choice, why = self._auto_flow_or(self._auto_gain(), "standard")
        logger.info("preconditioning='auto' -> %r (%s)", choice, why)
        self._auto_space = choice
        return choice

    def auto_reference(self) -> str:
        """The reference SMC starts from with ``reference="auto"`` (its default).

        ``"gaussian"`` (:class:`~aspire_jax.flows.GaussianReference`: the
        Gaussian of the training samples in the unbounded space of the
        parameter transform) when the fitted flow beats that Gaussian on the
        held-out earlier samples, weighted as draws of the new posterior, by
        no more than ``AUTO_FLOW_GAIN_PER_DIM`` nats per dimension, the
        margin below which
        :meth:`auto_preconditioning` keeps the moves out of the flow's latent
        space too, or when the new posterior sits in the flow's tails (the
        density-rank and held-out effective-size tests of
        :meth:`auto_preconditioning`): there the flow
        extrapolates, and on the eight-schools prior change SMC from the flow
        came out 0.039 +- 0.023 low (4 keys, reported error 0.029) with
        every iteration stopped unmixed at the sweep cap, against
        +0.002 +- 0.019 from the Gaussian. ``"flow"`` otherwise, and whenever there is no held-out
        gain to judge by (no validation set, or a flow read from a file
        without its fit history) or no Gaussian (a flow saved before the
        Gaussian was kept with it).

        Notes
        -----
        Both are exact, normalised densities with the flow's support, so SMC
        is consistent from either; the choice changes the cost, and, at a
        finite particle count, how well the start covers the new posterior.
        Both are fitted to the same samples and share their blind spots: a
        direction in which the earlier samples barely vary (two parameters
        tied together) is as narrow in either, and a new posterior much wider
        there biases log Z low (a warning says so after the run). Each MCMC
        sweep evaluates the
        reference on every particle; the Gaussian costs a triangular solve
        where the flow costs a pass through every coupling layer. On
        posteriors close to Gaussian (the benchmark's Gaussians, its mixture
        and its linear-regression case), where the flow gains -0.06 to
        +0.06 nats per dimension, starting from the Gaussian needed as many
        or fewer likelihood evaluations and sampled 10 to 12 times faster
        (``docs/benchmarks.md``). Pass ``reference="flow"`` to start from the
        flow regardless.
        """
        self._check_auto_functions()
        if self._auto_reference is not None:
            return self._auto_reference
        gain = self._auto_gain()
        if not has_gaussian(self.flow_params):
            choice, why = "flow", "the flow's parameters hold no Gaussian"
        elif not math.isfinite(gain):
            choice, why = "flow", "no held-out gain to judge by"
        else:
            choice, why = self._auto_flow_or(gain, "gaussian")
        logger.info("reference='auto' -> %r (%s)", choice, why)
        self._auto_reference = choice
        return choice

    def _auto_flow_or(self, gain: float, other: str) -> tuple[str, str]:
        """``"flow"`` or ``other`` by the gain and the tails tests, and why."""
        if not math.isfinite(gain):
            return other, "no held-out gain to judge by"
        if gain <= AUTO_FLOW_GAIN_PER_DIM:
            return other, (f"the flow gains {gain:.3g} <= {AUTO_FLOW_GAIN_PER_DIM:g} "
                           "nats per dimension over its Gaussian")
        if not self._in_flow_bulk():
            return other, ("the new posterior sits in the flow's tails: density rank "
                           f"{self._auto_rank:.3g} < {AUTO_FLOW_MIN_DENSITY_RANK:g}, "
                           f"held-out effective size {self._auto_ess:.3g} < "
                           f"{AUTO_FLOW_MIN_HELD_OUT_ESS:g}")
        return "flow", (f"the flow gains {gain:.3g} > {AUTO_FLOW_GAIN_PER_DIM:g} nats "
                        "per dimension over its Gaussian"
                        + ("" if self._auto_rank is None else
                           f"; density rank {self._auto_rank:.3g}, held-out "
                           f"effective size {self._auto_ess:.3g}"))

    def _check_auto_functions(self) -> None:
        """Forget the "auto" choices if ``log_likelihood`` or ``log_prior`` was
        replaced since they were made: they depend on the new posterior."""
        functions = (self.log_likelihood, self.log_prior)
        held = self._auto_functions
        if held is not None and (held[0] is not functions[0]
                                 or held[1] is not functions[1]):
            logger.info("log_likelihood or log_prior was replaced: the 'auto' "
                        "choices are made again")
            self._reset_auto()
        self._auto_functions = functions

    def auto_diagnostics(self) -> dict:
        """The numbers behind ``reference="auto"`` and ``preconditioning="auto"``.

        Runs the held-out test if it has not run for this flow and these
        functions (one likelihood evaluation per held-out sample, counted in
        the next run), as the choices themselves do; replacing
        ``log_likelihood`` or ``log_prior`` makes them again.

        Returns
        -------
        dict
            ``reference``, ``preconditioning``: the choices.
            ``gain_per_dim``: the flow's gain over its Gaussian on the
            held-out earlier samples as they are, in nats per dimension (NaN
            without a validation set). ``weighted_gain_per_dim``: the same on
            the held-out samples weighted as draws of the new posterior (NaN
            without held-out samples or a Gaussian). ``gain_used``: the one
            the choices compared with ``AUTO_FLOW_GAIN_PER_DIM`` (the move
            space is ``"standard"`` whenever a parameter is periodic,
            whatever the numbers).
            ``density_rank``, ``held_out_ess``: the tests of whether the new
            posterior sits in the flow's tails (NaN without held-out
            samples). ``n_held_out``: the number of held-out samples.

        Raises
        ------
        ValidationError
            If there is no flow yet.
        """
        self._require_flow()
        reference = self.auto_reference()
        preconditioning = self.auto_preconditioning()

        def number(v):
            return math.nan if v is None else float(v)

        return {
            "reference": reference,
            "preconditioning": preconditioning,
            "gain_per_dim": self._plain_gain(),
            "weighted_gain_per_dim": number(self._auto_weighted_gain),
            "gain_used": number(self._auto_gain_value),
            "density_rank": number(self._auto_rank),
            "held_out_ess": number(self._auto_ess),
            "n_held_out": 0 if self._held_out is None else len(self._held_out),
        }

    def _resolve_reference(self, value) -> str:
        _check_reference_name(value)
        if value == "auto":
            value = self.auto_reference()
        if value == "gaussian" and not has_gaussian(self.flow_params):
            why = ("its parameters were built by hand, FlowParams(transform, net)"
                   if getattr(self.flow_params, "gaussian", None) is None
                   else "it was saved before aspire_jax kept one, or built by hand "
                   "and saved, or its training samples were too degenerate to fit "
                   "one")
            raise ValidationError(
                "reference='gaussian' needs the Gaussian fitted with the flow, and "
                f"this flow has none ({why}); refit the flow, or use "
                "reference='flow'")
        return value

    def _reset_auto(self) -> None:
        """Forget the "auto" choices and their held-out test (a new flow)."""
        self._auto_space: str | None = None
        self._auto_reference: str | None = None
        self._auto_rank: float | None = None
        self._auto_ess: float | None = None
        self._auto_weighted_gain: float | None = None
        self._auto_gain_value: float | None = None
        self._auto_functions: tuple | None = None

    def _auto_gain(self) -> float:
        """The flow's gain over its Gaussian, in nats per dimension, that the
        "auto" choices compare with ``AUTO_FLOW_GAIN_PER_DIM``: on the
        held-out earlier samples weighted as draws of the new posterior
        (``pi L / q``, capped at their 99th percentile) where they represent
        it, keeping an effective size of at least ``AUTO_FLOW_MIN_HELD_OUT_ESS``
        of their number; else (too few held-out samples under the new
        posterior to judge by, or none, or no Gaussian) the plain held-out
        gain of the fit, NaN without a validation set."""
        if self._auto_gain_value is not None:
            return self._auto_gain_value
        h = self.flow_history
        gain = self._plain_gain()
        if not math.isfinite(gain):
            logger.info("no held-out gain of the flow over its Gaussian to judge by "
                        "(fitted without a validation set, or read without its fit "
                        "history)")
        elif (self._held_out is None or h.held_out_log_q is None
                or not has_gaussian(self.flow_params)):
            logger.info("the flow gains %.3g nats per dimension over its Gaussian on "
                        "the held-out samples", gain)
        else:
            self._held_out_test()
            weighted = self._auto_weighted_gain
            used = (self._auto_ess >= AUTO_FLOW_MIN_HELD_OUT_ESS
                    and math.isfinite(weighted))
            logger.info("the flow gains %.3g nats per dimension over its Gaussian on "
                        "the %d held-out samples, %.3g weighted as draws of the new "
                        "posterior (%s)", gain, len(self._held_out), weighted,
                        f"used: they keep an effective {self._auto_ess:.3g} of "
                        "their number" if used else
                        f"not used: they keep an effective {self._auto_ess:.3g} of "
                        f"their number, < {AUTO_FLOW_MIN_HELD_OUT_ESS:g}: too few "
                        "lie under the new posterior")
            gain = weighted if used else gain
        self._auto_gain_value = gain
        return gain

    def _plain_gain(self) -> float:
        """The flow's gain over its Gaussian on the held-out samples as they
        are, in nats per dimension (NaN without a validation set)."""
        h = self.flow_history
        return math.nan if h is None else h.gain_over_gaussian() / self.dims

    def _held_out_test(self) -> None:
        """Evaluate the new prior and likelihood on the held-out earlier
        samples once per flow (one likelihood evaluation each, counted in the
        next run) and keep what the "auto" choices read: the density rank,
        the effective size and the weighted gain over the Gaussian."""
        if self._auto_rank is not None:
            return
        h = self.flow_history
        x, log_q = self._held_out, np.asarray(h.held_out_log_q, np.float64)
        log_w, log_g = self._held_out_densities(x, log_q)
        self._uncounted_evaluations += len(x)
        self._auto_rank = self._density_rank(x, log_q, self._held_out_weights, log_w)
        # Capped at their 99th percentile, so that a point or two where the
        # flow's tail is too light cannot decide alone.
        w = _capped_weights(log_w, 0.99, self._held_out_weights)
        self._auto_ess = _held_out_ess(w, self._held_out_weights)
        self._auto_weighted_gain = (
            math.nan if log_g is None else _weighted_gain(log_q - log_g, w) / self.dims)

    def _in_flow_bulk(self) -> bool:
        """Whether the new posterior sits where the flow was trained, not in
        its tails: the median flow density under it ranks at least
        ``AUTO_FLOW_MIN_DENSITY_RANK`` among the held-out earlier samples
        (see :meth:`auto_preconditioning`), or those samples, weighted as
        draws of the new posterior, keep an effective sample size of at
        least ``AUTO_FLOW_MIN_HELD_OUT_ESS`` of their number (a new posterior
        that reweights the earlier one, moving mass between its modes, ranks
        low in density but lies where the flow has its training samples).
        True when there are no held-out samples to test with."""
        h = self.flow_history
        if self._held_out is None or h is None or h.held_out_log_q is None:
            return True
        self._held_out_test()
        return bool(self._auto_rank >= AUTO_FLOW_MIN_DENSITY_RANK
                    or self._auto_ess >= AUTO_FLOW_MIN_HELD_OUT_ESS)

    def _count_evaluations(self, n_run: int) -> None:
        """Set ``n_likelihood_evaluations`` for a finished run: its own
        evaluations plus those of an ``"auto"`` density test not yet counted."""
        self.n_likelihood_evaluations = n_run + self._uncounted_evaluations
        self._uncounted_evaluations = 0

    def _held_out_densities(self, x: np.ndarray, log_q: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray | None]:
        """``log pi + log L - log q`` at the held-out samples ``x`` (one
        likelihood evaluation each) and the log density of the flow's
        Gaussian there (None if the flow holds none), from one compiled
        call."""
        gaussian = (GaussianReference(self.flow) if has_gaussian(self.flow_params)
                    else None)

        def densities(x, params):
            values = (self.log_prior(x), self.log_likelihood(x))
            return values + ((gaussian.log_prob(params, x),) if gaussian else ())

        try:
            values = jax.jit(densities)(jnp.asarray(x, _float_dtype()),
                                        self.flow_params)
        except Exception:
            # The user's functions fail or cannot be traced: say so as the
            # checks before a run do, with the error chained.
            self._check_user_functions(np.asarray(x))
            raise
        lp, ll, *log_g = (np.asarray(v, np.float64) for v in values)
        return lp + ll - log_q, (log_g[0] if log_g else None)

    def _density_rank(self, x: np.ndarray, log_q: np.ndarray,
                      weights: np.ndarray | None = None,
                      log_w: np.ndarray | None = None) -> float:
        """Where the new posterior sits in the flow, estimated on held-out
        draws ``x ~ q``: the share of them at which ``q`` is lower than at the
        new posterior's median, the median of ``log q`` under the weights
        ``pi L / q``. Weighted training rows (``weights``) count as draws of
        the weighted distribution: the share is weighted by them, and they
        multiply ``pi L / q``.

        About 0.5 when the new posterior resembles the flow, more when the
        flow is the wider of the two, near 0 when the new posterior sits in
        the flow's tails. The weights are capped at their 95th percentile,
        so that a few held-out points where the flow's density is too low
        (where its training samples were sparse) cannot decide alone. A
        held-out point the new target rules out has weight 0. ``log_w``:
        the first values of :meth:`_held_out_densities`, if already evaluated.
        """
        if log_w is None:
            log_w = self._held_out_densities(x, log_q)[0]
        w = _capped_weights(log_w, 0.95, weights)
        if w is None:
            return 0.0
        order = np.argsort(log_q)
        cumulative = np.cumsum(w[order]) / np.sum(w)
        median = log_q[order][min(int(np.searchsorted(cumulative, 0.5)), len(w) - 1)]
        return float(np.average(log_q < median, weights=weights))

    # ------------------------------------------------------------------- smc
    def _reference(self, options: Mapping):
        """The flow or its Gaussian (``options["reference"]``, resolved), or
        its defensive mixture when ``defensive_weight > 0``."""
        weight = options.get("defensive_weight", 0.0)
        scale = options.get("defensive_scale", 1.5)
        for name, v in (("defensive_weight", weight), ("defensive_scale", scale)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise ValidationError(f"{name} must be a number; got {v!r}")
        if "defensive_scale" in options and float(weight) == 0.0:
            raise ValidationError(
                "defensive_scale has no effect without defensive_weight > 0; set "
                "defensive_weight (e.g. 0.1) or drop defensive_scale")
        if not 0.0 <= float(weight) < 1.0:
            raise ValidationError(
                f"defensive_weight must be in [0, 1) (0: the flow alone); got {weight!r}")
        if not (math.isfinite(float(scale)) and float(scale) > 1.0):
            raise ValidationError(f"defensive_scale must be a finite number > 1; "
                                  f"got {scale!r}")
        base = (GaussianReference(self.flow) if options.get("reference") == "gaussian"
                else self.flow)
        if float(weight) == 0.0:
            return base
        return DefensiveReference(base, float(weight), float(scale))

    def _space(self, config: SMCConfig, reference=None):
        reference = self.flow if reference is None else reference
        if (config.preconditioning == "standard" and any(self.periodic)
                and config.kernel in ("rwmh", "mala")):
            bounds = self.prior_bounds
            return PeriodicSpace(reference, self.periodic,
                                 tuple(float(b) for b in bounds[:, 0]),
                                 tuple(float(b) for b in bounds[:, 1]))
        return reference

    def _run_smc(self, key, n, options, *, resume, checkpoint_path, checkpoint_every,
                 save_config, save_flow, callback, progress, log_every, mesh=None,
                 reference=None, keep_particles=False, stored_count=False):
        options = dict(options)
        n_final = options.pop("n_final_samples", None)
        driver = options.pop("driver", "host")
        if driver not in ("host", "device"):
            raise ValidationError(f"driver must be 'host' or 'device'; got {driver!r}")
        if n_final is not None:
            _check_count(n_final, "n_final_samples")
        if keep_particles and driver == "device":
            raise ValidationError(
                "store_sample_history copies each iteration's particles to the host, "
                "which driver='device' (the whole run as one program) cannot do; use "
                "driver='host' (the default)")
        reference = self.flow if reference is None else reference
        for name in _REFERENCE_OPTIONS:
            options.pop(name, None)
        config = SMCConfig(n_particles=n, **options)
        if resume is not None:
            # Before the probe compiles anything.
            x = _state_x(resume)
            if x is not None and x.shape != (n, self.dims):
                raise self._misfit_error(
                    n, resume, stored_count,
                    f"state.x has shape {x.shape}, this run's particles "
                    f"({n}, {self.dims})")
        self._probe()
        if config.kernel == "mala":
            self._check_differentiable()
        _warn_mala_near_bounds(config, self.prior_bounds)
        space = self._space(config, reference)
        smc, step, init, run = self._cached(
            "smc", (config, space, mesh),
            lambda: self._build_smc(config, space, mesh, key))
        flow_params = self.flow_params if mesh is None else replicate(
            self.flow_params, mesh)
        history = History.empty("smc")
        with self._host_errors("the initial draws of the SMC run"):
            if resume is not None:
                state, history = self._restore_state(smc, key, resume, mesh,
                                                     reference, stored_count)
                logger.info("resuming SMC at iteration %d, beta = %.4g",
                            int(state.iteration), float(state.beta))
            else:
                state = init(key, flow_params)
            # Waits for the initial draws, so a host failure surfaces here.
            self._check_initial_state(state if mesh is None else host_state(state))
        populations = [_population(state)] if keep_particles else None
        cap = config.iteration_cap
        remaining = max(cap - int(state.iteration), 0)
        if remaining == 0 and float(state.beta) < 1.0:
            # A resumed run already at its cap: nothing would run.
            error = TemperingError(
                f"the checkpoint's run is at iteration {int(state.iteration)} (beta = "
                f"{float(state.beta):.6g}), and its iteration cap is {cap} ("
                + ("max_n_steps" if config.max_n_steps is not None
                   else "max_iterations" if config.adaptive
                   else "n_steps, with adaptive=False")
                + ", stored with the run unless given now): nothing would run. "
                "Pass a larger one to go on")
            error.history = history
            raise error
        writer = _CheckpointWriter(self, checkpoint_path, checkpoint_every,
                                   save_config, save_flow, callback)
        own_resume = resume is not None and resume is self._resume
        writer.continues_resume = own_resume and checkpoint_path is not None
        if checkpoint_path is not None and is_checkpoint_writer():
            # An unfinished run that the file holds, other than the one
            # resumed here, is kept aside before anything is written over it.
            _set_aside_unfinished(checkpoint_path, None if resume is None
                                  else resume.get("state"))
        if resume is None and checkpoint_path is not None:
            # The flow, the settings and the initial draws (a likelihood call
            # per particle) are in the file before the first iteration, so a
            # run cut off during it resumes without drawing again.
            writer.write(state, history, notify=False)
        bar = _make_bar(progress, total=None, desc="smc")
        rows = list()

        def on_step(state, info):
            rows.append(info)
            if populations is not None:
                populations.append(_population(state))
            it = int(state.iteration)
            if log_every and it % log_every == 0:
                logger.info("it %d beta=%.4g eff=%.3f ess=%.1f acc=%.3f mcmc=%d "
                            "logZ=%.4f+-%.4f", it, info.beta, info.efficiency, info.ess,
                            info.acceptance, info.n_mcmc_steps, info.log_evidence,
                            np.sqrt(max(float(info.log_evidence_var), 0.0)))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(beta=f"{float(info.beta):.4f}",
                                ess=f"{float(info.ess):.0f}",
                                acc=f"{float(info.acceptance):.2f}")
            writer.maybe_write(
                state, lambda: history.extend(History.from_infos("smc", rows)))

        try:
            with self._host_errors("the SMC run", writer):
                if driver == "device" and writer.inactive:
                    state, padded, n_taken = run(smc.step, state, flow_params,
                                                 max(remaining, 1))
                    rows = list(_unpad(padded, int(n_taken)))
                else:
                    for _ in range(remaining):
                        if (float(state.beta) >= 1.0
                                or int(state.status) == Status.STALLED):
                            break
                        state, info = step(state, flow_params)
                        on_step(state, jax.device_get(info))
        except KeyboardInterrupt as exc:
            last = writer.last_written
            if last is not None:
                exc.add_note(
                    f"aspire_jax: the checkpoint {os.fspath(checkpoint_path)!r} holds "
                    f"iteration {last}; Aspire.resume_from_file (or this instance's "
                    "next sample_posterior, for a resumed run) goes on from there")
            elif checkpoint_path is None:
                exc.add_note("aspire_jax: this run wrote no checkpoint file (pass "
                             "checkpoint_path for a run that can be resumed)")
            raise
        finally:
            if bar is not None:
                bar.close()
        if mesh is not None:
            state = unshard_state(state)
        history = history.extend(History.from_infos("smc", rows))
        if populations is not None:
            history = dataclasses.replace(history, sample_history=(
                SampleHistory.from_populations(populations, self.parameters)))
        if float(state.beta) < 1.0 and int(state.status) == Status.RUNNING:
            state = state.replace(status=jnp.asarray(Status.ITERATION_LIMIT, jnp.int32))
        self._last_state = state
        writer.write(state, history, force=True)
        self._count_evaluations(int(state.n_evaluations))
        before = self.n_likelihood_evaluations - int(state.n_evaluations)
        logger.info("SMC finished: %d iterations, %d likelihood evaluations%s, "
                    "log Z = %.4f +- %.4f", int(state.iteration),
                    self.n_likelihood_evaluations,
                    f" ({before} of them before the run: checks of the functions' "
                    "output and of the 'auto' choices)" if before > 0 else "",
                    float(state.log_evidence),
                    np.sqrt(max(float(state.log_evidence_var), 0.0)))
        if float(state.beta) < 1.0:
            _warn_undefined(int(state.n_invalid), int(state.n_evaluations))
            error = TemperingError(
                f"SMC stopped at beta = {float(state.beta):.6g} after "
                f"{int(state.iteration)} iterations (status "
                f"{Status.name(int(state.status))}); these particles are not the "
                "posterior. Raise max_iterations, set max_n_steps (forces a minimum "
                "step) or min_beta_step, raise max_beta_step if set, lower "
                "target_efficiency, or refit the flow."
                + (f" The last state is saved in {checkpoint_path}."
                   if checkpoint_path else "")
                + " The error's .history holds the iterations run.")
            error.history = history
            raise error
        _warn_collapsed_steps(history, config.n_particles)
        _warn_unmixed(history, config, self.dims)
        self._warn_narrow_reference(state)
        self._warn_pressed_bounds(state)
        self._warn_prior_beyond_bounds(state.x, state.log_weights)
        with self._host_errors("the final move of the SMC run", writer):
            samples, final_evals, final_invalid = self._smc_samples(
                state, config, n_final, space)
        if final_evals:
            self.n_likelihood_evaluations += final_evals
        _warn_undefined(int(state.n_invalid) + final_invalid,
                        int(state.n_evaluations) + final_evals)
        _warn_resolution(state.log_likelihood,
                         math.sqrt(max(float(state.log_evidence_var), 0.0)))
        if own_resume:
            # Only a run that reached the posterior uses up a loaded
            # checkpoint; one stopped early can be resumed again.
            self._resume = self._resume_file = None
            self._resume_used = True
        if self._auto is not None and (resume is not None or (
                checkpoint_path is not None
                and _same_file(checkpoint_path, self._auto["path"]))):
            # auto_checkpoint(resume=True) resumes what its file held; a run
            # that reached the posterior there uses that up, and later calls
            # start afresh.
            self._auto["resume"] = False
        return samples, history

    def _file_as_loaded(self, path) -> bool:
        """Whether the file this instance was loaded from without a run still
        holds no run, and the flow it was loaded with."""
        try:
            if read_checkpoint_bytes(path) is not None:
                return False
            with AspireFile(path, "r") as f:
                params = f.get("flow/params")
                stored = None if params is None else params[()].tobytes()
        except (CheckpointError, OSError):
            return False
        return stored == getattr(self, "_fresh_flow", None)

    def _engine_log_prior(self, config):
        """The log-prior the samplers use: the user's, and -inf outside
        ``prior_bounds`` when the moves are made in native coordinates
        (``preconditioning="none"``), where nothing else keeps the particles
        inside the bounds once the flow's term has gone at beta = 1."""
        bounds = self.prior_bounds
        if config.preconditioning != "none" or not np.isfinite(bounds).any():
            return self.log_prior
        lo = jnp.asarray(bounds[:, 0])
        hi = jnp.asarray(bounds[:, 1])
        log_prior = self.log_prior

        def bounded(x):
            inside = jnp.all((x >= lo.astype(x.dtype)) & (x <= hi.astype(x.dtype)),
                             axis=-1)
            return jnp.where(inside, log_prior(x), -jnp.inf)

        return bounded

    def _build_smc(self, config, space, mesh=None, key=None):
        smc = build_smc(config, self.log_likelihood, self._engine_log_prior(config),
                        space)
        run = jax.jit(run_device, static_argnums=(0, 3))
        if mesh is None:
            return smc, jax.jit(smc.step), jax.jit(smc.init), run
        template = jax.eval_shape(smc.init, key, self.flow_params)
        return (smc, jit_sharded_step(smc.step, template, mesh),
                jit_sharded_init(smc.init, template, mesh), run)

    def _check_initial_state(self, state):
        """Refuse a population with no point of positive posterior density;
        report the particles outside the prior's support, which the first
        reweighting gives weight 0 (a constraint such as m1 > m2 that
        ``prior_bounds`` cannot express, or missing bounds)."""
        lp = np.asarray(state.log_prior)
        ll = np.asarray(state.log_likelihood)
        if not np.any(np.isfinite(lp + ll)):
            raise ValidationError(
                "log_prior + log_likelihood is -inf or NaN at every initial particle; "
                "check the prior, the likelihood and the flow (and set prior_bounds "
                "for bounded parameters)")
        if float(state.beta) == 0.0:
            # In the flow's whitened coordinates its training samples have unit
            # spread; draws that have almost none come from a collapsed flow.
            u = np.asarray(self.flow.to_unbounded(self.flow_params, state.x)[0])
            sd = np.std(u, axis=0)
            flat = [name for name, v in zip(self.parameters, sd) if not v > 1e-3]
            if flat:
                raise ValidationError(
                    f"the {u.shape[0]} initial draws from the flow all have nearly "
                    f"the same value of {', '.join(flat)} "
                    f"(spread {float(np.min(sd)):.2g} of the training samples' in the "
                    "flow's whitened coordinates): the flow has collapsed. Its "
                    "training diverged (see the warnings of fit: refit with a "
                    "lower learning_rate or clip_grad), or, for a bounded "
                    "parameter, the samples sit within eps * (hi - lo) of a "
                    "bound (pass a smaller eps to Aspire)")
        outside = int(np.sum(~np.isfinite(lp)))
        if outside and float(state.beta) == 0.0:
            share = outside / lp.size
            log = logger.warning if share > 0.5 else logger.info
            log("%d of %d initial particles are outside the prior's support "
                "(log_prior = -inf) and get weight 0 at the first reweighting%s",
                outside, lp.size,
                "; set prior_bounds for bounded parameters so that the flow stays "
                "inside them" if share > 0.5 else "")

    def _warn_narrow_reference(self, state):
        """Log a warning when the new posterior is far wider than the earlier
        samples along some direction.

        Measured in the unbounded space of the parameter transform, against
        the Gaussian of the training samples (``FlowParams.gaussian``), which
        both the flow and the Gaussian reference were fitted to match: the
        largest standard deviation of the final weighted particles along any
        direction, in units of the training samples' standard deviation
        along it. Periodic coordinates are left out (their unbounded
        coordinate is not where they move). A reference far narrower than
        its target gives heavy-tailed weights along the tempering path, and
        log Z then comes out low by more than its error bar at any practical
        particle count: with earlier samples confined near a line
        (``x1 = x0`` up to 1e-5) and a new posterior that is not, 2 to 4
        reported errors on every key. Importance sampling cannot make this
        check: its weighted draws never reach beyond the reference.
        """
        if not has_gaussian(self.flow_params):
            return
        keep = [i for i, p in enumerate(self.periodic) if not p]
        w = _host_weights(state.log_weights)
        if not keep or w is None:
            return
        u = np.asarray(self.flow.to_unbounded(self.flow_params, state.x)[0],
                       np.float64)[:, keep]
        ok = np.all(np.isfinite(u), axis=1) & (w > 0)
        if not ok.any():
            return
        _, post = gaussian_of(u[ok], w[ok])
        chol = np.asarray(self.flow_params.gaussian["chol"], np.float64)
        try:
            ref = np.linalg.cholesky((chol @ chol.T)[np.ix_(keep, keep)])
        except np.linalg.LinAlgError:
            return
        if not np.all(np.isfinite(post)):
            return
        # The largest standard deviation ratio along any direction: the
        # spectral norm of ref^-1 post (both Cholesky factors).
        ratio = float(np.linalg.norm(np.linalg.solve(ref, post), 2))
        if ratio > NARROW_REFERENCE_RATIO:
            logger.warning(
                "the new posterior is %.3g times wider (in standard deviation) than "
                "the earlier samples along some direction of the unbounded "
                "coordinates (after the log / logit maps of bounded parameters): "
                "the reference, fitted to those samples, is much narrower there "
                "than the posterior, and log Z may come out low by more than its "
                "error bar. Compare log Z over several keys and with more "
                "particles, or raise defensive_scale (1.5 by default) towards this "
                "ratio; earlier samples confined near a subspace (a parameter "
                "fixed or tied to another, or far from a bound the new posterior "
                "presses against) make a poor starting point for a posterior that "
                "is not", ratio)

    def _near_bounds(self, x: np.ndarray, w: np.ndarray):
        """For each finite bound of a parameter that is not periodic, the
        posterior weight (particles ``x``, normalised weights ``w``) within
        ``PRESSED_WINDOW`` of its standard deviations of the bound: yields
        ``(column, name, "lower"/"upper", bound, edge of the window,
        share)`` where the window lies inside the bounds."""
        mean = w @ x
        std = np.sqrt(w @ (x - mean) ** 2)
        for j, (name, periodic) in enumerate(zip(self.parameters, self.periodic)):
            if periodic or not std[j] > 0:
                continue
            lo, hi = (float(b) for b in self.prior_bounds[j])
            for side, bound, sign in (("lower", lo, 1.0), ("upper", hi, -1.0)):
                edge = bound + sign * PRESSED_WINDOW * std[j]
                if not math.isfinite(bound) or not lo < edge < hi:
                    continue
                share = float(w[sign * (x[:, j] - edge) < 0].sum())
                yield j, name, side, bound, edge, share

    def _warn_pressed_bounds(self, state):
        """Log a warning when the new posterior presses against a bound that
        the earlier samples kept away from.

        For each finite bound of a parameter that is not periodic: the
        posterior weight within a quarter of the parameter's posterior
        standard deviation of the bound, against the mass that the Gaussian
        of the training samples (in the unbounded coordinates, as in
        :meth:`_warn_narrow_reference`) puts in the same interval. The
        reference models the parameter through its logit or log, whose tail
        towards the bound is exponential under such a posterior and lighter
        under the reference; the first weights are then heavy-tailed and log
        Z tends to come out low (see the user guide). A posterior that sits
        at a bound as the earlier samples did (a parameter left at its prior)
        says nothing.
        """
        w = _host_weights(state.log_weights)
        if not has_gaussian(self.flow_params) or w is None:
            return
        x = np.asarray(state.x, np.float64)
        mean = w @ x
        chol = np.asarray(self.flow_params.gaussian["chol"], np.float64)
        ref_mean = np.asarray(self.flow_params.gaussian["mean"], np.float64)
        ref_std = np.sqrt(np.sum(chol**2, axis=1))
        pressed = []
        for j, name, side, bound, edge, share in self._near_bounds(x, w):
            if share <= PRESSED_SHARE:
                continue
            # The same interval in the unbounded coordinate (the maps are
            # monotonic and act on each coordinate alone).
            points = np.repeat(mean[None], 2, axis=0)
            points[0, j] = edge
            u = np.asarray(self.flow.to_unbounded(
                self.flow_params, points.astype(state.x.dtype))[0], np.float64)
            z = (u[0, j] - ref_mean[j]) / ref_std[j]
            towards_bound = u[0, j] < u[1, j]
            ref_share = 0.5 * math.erfc((-z if towards_bound else z) / math.sqrt(2))
            if share > PRESSED_RATIO * ref_share:
                pressed.append(f"{name} at its {side} bound {bound:g} "
                               f"({100 * share:.0f}% of the weight, "
                               f"{100 * ref_share:.2g}% of the reference)")
        if pressed:
            logger.warning(
                "the new posterior presses against a bound that the earlier samples "
                "kept away from: %s, counting what lies within %g posterior "
                "standard deviations of the bound. The reference falls off faster "
                "there than the posterior, and log Z may come out low by about its "
                "error bar or more; compare log Z over several keys, or raise "
                "defensive_weight (0.1 by default, 0.2-0.3) for more draws from "
                "the reference's heavy tails (see 'The evidence and the posterior' "
                "in the user guide)", "; ".join(pressed), PRESSED_WINDOW)

    def _warn_prior_beyond_bounds(self, x, log_weights=None) -> None:
        """Log a warning when the posterior reaches a bound beyond which
        ``log_prior`` is still finite.

        Every sampler draws and moves points inside ``prior_bounds`` only
        (the flow's parameter transform maps them onto the real line), so
        what it returns is the posterior of the prior truncated to the
        bounds. Where the posterior has weight near a bound (more than
        ``BEYOND_BOUND_SHARE`` within ``PRESSED_WINDOW`` of its standard
        deviations) ``log_prior`` is evaluated at the particles nearest the
        bound, moved a tenth of a standard deviation beyond it: a finite value
        there says that the prior the user wrote has mass the run cannot
        reach, and the samples and log Z are those of the truncated prior.
        Costs one compiled call of ``log_prior`` on a few points, and only when
        the posterior is near a finite bound.
        """
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or not x.shape[0]:
            return
        w = _host_weights(log_weights, x.shape[0])
        if w is None:
            return
        groups, points = [], []
        for j, name, side, bound, edge, share in self._near_bounds(x, w):
            if share <= BEYOND_BOUND_SHARE:
                continue
            # The particles nearest the bound, moved a tenth of a posterior
            # standard deviation beyond it (the window is PRESSED_WINDOW sds).
            outward = (bound - edge) * 0.1 / PRESSED_WINDOW
            nearest = x[np.argsort(np.abs(x[:, j] - bound))[:8]].copy()
            nearest[:, j] = bound + outward
            groups.append(f"{name!r} beyond its {side} bound {bound:g} "
                          f"({100 * share:.0f}% of the posterior weight within "
                          f"{PRESSED_WINDOW:g} standard deviations of it)")
            points.append(nearest)
        if not points:
            return
        try:
            log_prior = np.asarray(jax.jit(self.log_prior)(
                jnp.asarray(np.concatenate(points), _float_dtype())), np.float64)
        except Exception:  # a prior that fails out of its domain is not finite there
            return
        finite = np.isfinite(log_prior).reshape(len(points), -1).any(axis=1)
        if finite.any():
            logger.warning(
                "log_prior is finite where the posterior reaches past the prior "
                "bounds: %s. The samplers draw and move points inside prior_bounds "
                "only, so the samples and log Z are those of the prior truncated "
                "to the bounds. If the prior has mass beyond them, widen "
                "prior_bounds; if the truncation is meant, make log_prior return "
                "-inf outside the bounds (normalised within them)",
                "; ".join(g for g, f in zip(groups, finite) if f))

    def _smc_samples(self, state, config, n_final, space):
        """The run's particles as Samples (moved to ``n_final`` if asked), and
        the likelihood evaluations and undefined densities of that final move."""
        final_evals = final_invalid = 0
        lw = state.log_weights
        x, ll, lp, lq = state.x, state.log_likelihood, state.log_prior, state.log_q
        if n_final is not None:
            key_res, key_mut = jax.random.split(jax.random.fold_in(state.key, 7))
            fconfig = dataclasses.replace(config, n_particles=int(n_final))
            mutate = self._cached("final", (fconfig, space), lambda: jax.jit(
                make_mutation(fconfig, _check_batched(self.log_likelihood,
                                                      "log_likelihood"),
                              _check_batched(self._engine_log_prior(config),
                                             "log_prior"), space)))
            from .smc.resampling import get_resampler

            idx = get_resampler(config.resampling)(key_res, jnp.exp(lw), int(n_final))
            aux, *_, n_evals, n_invalid = mutate(
                key_mut, x[idx], lp[idx], ll[idx], lq[idx], jnp.ones((), x.dtype),
                state.kernel_params, self.flow_params)
            final_evals, final_invalid = int(n_evals), int(n_invalid)
            x, ll, lp, lq = aux.x, aux.log_likelihood, aux.log_prior, aux.log_q
            lw = jnp.full((int(n_final),), -jnp.log(int(n_final)), x.dtype)
        uniform = bool(np.allclose(np.asarray(lw), -np.log(lw.shape[0])))
        err = float(np.sqrt(max(float(state.log_evidence_var), 0.0)))
        # Weights of mean one, as unweighted samples have (log w = 0): two
        # runs of equal size then weigh alike in Samples.concatenate whether
        # or not their last iteration resampled.
        return Samples.from_array(
            x, parameters=self.parameters, log_likelihood=ll, log_prior=lp, log_q=lq,
            log_weights=None if uniform else lw + jnp.log(lw.shape[0]).astype(lw.dtype),
            log_evidence=float(state.log_evidence),
            log_evidence_error=err), final_evals, final_invalid

    # --------------------------------------------------------------- resume
    def _resolve_resume(self, resume_from, sampler=None):
        if resume_from is None:
            if isinstance(sampler, str) and _ALIASES.get(sampler, sampler) != "smc":
                # A checkpoint the instance holds (loaded, or auto_checkpoint's)
                # waits for the next SMC call; other samplers run afresh.
                return None
            if self._resume is not None:
                # Kept until a run has restored it (see _run_smc), so a call
                # refused on its arguments leaves the instance ready to resume.
                return self._resume
            if self._auto is not None and self._auto.get("resume"):
                path = self._auto["path"]
                if os.path.exists(path):
                    resume = _resume_from_path(path)
                    # A file that holds a flow and a configuration but no
                    # state yet (written by fit, or cut off before the first
                    # checkpoint) starts a fresh run.
                    if resume.get("state") is not None:
                        return resume
            return None
        if isinstance(resume_from, (bytes, bytearray, memoryview)):
            return dict(state=bytes(resume_from))
        if isinstance(resume_from, (str, os.PathLike)):
            return _resume_from_path(resume_from)
        if isinstance(resume_from, Mapping):
            d = dict(resume_from)
            if "state" in d and isinstance(d["state"], (bytes, bytearray, memoryview)):
                return dict(state=bytes(d["state"]), history=d.get("history"),
                            sampler=d.get("sampler"),
                            sampler_config=_checked_sampler_config(
                                d.get("sampler_config")))
            if "state" in d:
                raise ValidationError(
                    "resume_from['state'] must be the checkpoint's state bytes (as "
                    "passed to checkpoint_callback); got "
                    f"{type(d['state']).__name__}")
            if not d:
                raise ValidationError(
                    "resume_from is an empty dict; pass the dict given to "
                    "checkpoint_callback, checkpoint bytes or an .h5 path")
            return dict(state_dict=d)
        raise ValidationError(
            "resume_from must be checkpoint bytes, a checkpoint dict, a state dict or "
            f"an .h5/.hdf5 path; got {type(resume_from).__name__}")

    def _flow_dtype(self) -> np.dtype:
        """The float dtype the flow, and so every run from it, computes in."""
        transform = getattr(self.flow_params, "transform", None)
        if transform is not None:
            return np.dtype(np.asarray(transform.lower).dtype)
        for leaf in jax.tree.leaves(self.flow_params):
            if np.issubdtype(np.asarray(leaf).dtype, np.floating):
                return np.dtype(np.asarray(leaf).dtype)
        return np.dtype(_float_dtype())

    def _check_resume_precision(self, resume) -> None:
        """Refuse, before any compile, a state whose precision this process or
        this flow cannot continue; warn where the run goes on in float32 in a
        64-bit process."""
        state64 = _stored_float64(resume)
        if state64 is None:
            return
        _check_x64_resumable(resume, state64)
        flow64 = self._flow_dtype() == np.float64
        if state64 != flow64:
            bits = {True: "float64", False: "float32"}
            raise CheckpointError(
                f"the checkpoint's state is {bits[state64]} and this Aspire's flow "
                f"{bits[flow64]}: a run goes on in the precision it started in, "
                "with the flow it was sampled with: load both with "
                "Aspire.resume_from_file(path), which keeps the run's precision")
        if not state64 and jax.config.jax_enable_x64:
            logger.warning(
                "the checkpoint's run computes in float32 (its state and flow are "
                "float32) and goes on in float32 in this 64-bit process; it repeats "
                "the uninterrupted run bit for bit only if log_likelihood and "
                "log_prior give the same float32 values with jax_enable_x64 on")

    def _misfit_error(self, n, resume, stored_count, details) -> CheckpointError:
        """The error for a stored state that does not fit a run of ``n``
        particles: the file's fault where the count came from the file."""
        x = _state_x(resume) if stored_count else None
        if x is not None and x.ndim == 2 and x.shape[0] != n and (
                x.shape[1] == self.dims):
            # The particle count came from the file, and its state holds
            # another: the file contradicts itself.
            return CheckpointError(
                f"the checkpoint's state does not fit the settings stored beside it "
                f"in its sampler_config ({n} particles of {self.dims} parameters): "
                f"the file was edited or damaged. Details: {details}")
        return CheckpointError(
            f"the checkpoint's state does not fit this run ({n} particles of "
            f"{self.dims} parameters, the settings given now): it was made with "
            "another particle count, dimension or sampler setting. Resume with the "
            f"n_samples and options of that run. Details: {details}")

    def _restore_state(self, smc, key, resume, mesh=None, reference=None,
                       stored_count=False):
        if resume.get("state") is None and resume.get("state_dict") is None:
            raise CheckpointError("the checkpoint holds no SMC state to resume from")
        template = jax.eval_shape(smc.init, key, self.flow_params)
        if mesh is not None:
            template = sharded_template(template, mesh)
        try:
            if resume.get("state") is not None:
                saved = state_dict_from_bytes(resume["state"])
            else:
                saved = resume["state_dict"]
            state = state_from_state_dict(template, _upgrade_state_dict(saved))
        except CheckpointError as exc:
            if "does not match the template" not in str(exc):
                raise
            n = int(template.x.shape[0])
            if "jax_enable_x64" in str(exc):
                raise CheckpointError(
                    "the checkpoint's state was written in another floating-point "
                    "precision than this process computes in: set "
                    "jax.config.update('jax_enable_x64', ...) as in the run that "
                    f"wrote it, before any JAX work. Details: {exc}") from exc
            raise self._misfit_error(n, resume, stored_count, str(exc)) from exc
        _check_restored(state)
        self._check_cached_densities(state, reference)
        if float(state.beta) < 1.0 and int(state.status) != Status.RUNNING:
            # A run stopped at its cap or on a stalled schedule goes on under
            # the settings given now (a larger cap, a minimum step).
            logger.info("the checkpoint's run had stopped (%s) at beta = %.4g; it "
                        "goes on with the settings given now",
                        Status.name(int(state.status)), float(state.beta))
            state = state.replace(status=jnp.asarray(Status.RUNNING, jnp.int32))
        if mesh is not None:
            state = shard_state(state, mesh)
        hist = resume.get("history")
        try:
            history = History.from_dict(hist) if hist else History.empty("smc")
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"the checkpoint's history is damaged: {exc}"
                                  ) from exc
        if len(history) > int(state.iteration):
            # A later history of the same run: its first rows are this state's
            # (the checks below refuse one whose path is not).
            logger.info("the checkpoint's history holds %d iterations where its state "
                        "is at iteration %d; the rows after it are dropped",
                        len(history), int(state.iteration))
            history = History("smc", {k: v[: int(state.iteration)]
                                      for k, v in history.data.items()})
        if hist is None and int(state.iteration) > 0:
            logger.warning(
                "the checkpoint gives the state alone, without its history: the "
                "run's history starts at iteration %d (pass the dict given to "
                "checkpoint_callback, or the file, for the whole history)",
                int(state.iteration))
        elif hist is not None and len(history) < int(state.iteration):
            raise CheckpointError(
                f"the checkpoint's history is damaged: it holds {len(history)} "
                f"iterations where the state is at iteration {int(state.iteration)} "
                "(a history and a state of different checkpoints)")
        _check_history_path(history, state)
        beta = np.asarray(history.data.get("beta", np.zeros(0)), np.float64)
        if beta.size and (not np.all((beta >= 0.0) & (beta <= 1.0))
                          or (beta.size == int(state.iteration)
                              and abs(beta[-1] - float(state.beta)) > 1e-5)):
            raise CheckpointError(
                "the checkpoint's history is damaged: its beta column is not the "
                "path of the stored state (values outside [0, 1], or a last value "
                f"{beta[-1]:.6g} where the state is at {float(state.beta):.6g})")
        _check_history_evidence(history, state)
        return state, history

    def _check_cached_densities(self, state, reference=None):
        """The state's cached densities must match the functions given now.

        A checkpoint made with another likelihood, prior or flow would
        otherwise resume silently towards the old posterior.
        """
        idx = np.linspace(0, state.x.shape[0] - 1, min(8, state.x.shape[0])).astype(int)
        x = jnp.asarray(np.asarray(state.x)[idx])
        reference = self.flow if reference is None else reference
        checks = (("log_likelihood", self.log_likelihood, state.log_likelihood),
                  ("log_prior", self.log_prior, state.log_prior),
                  ("flow log_q", lambda v: reference.log_prob(self.flow_params, v),
                   state.log_q))
        for name, fn, cached in checks:
            now = np.asarray(fn(x), dtype=np.float64)
            old = np.asarray(cached, dtype=np.float64)[idx]
            if name == "log_likelihood":
                # The engine stores -inf wherever the prior is -inf.
                lp = np.asarray(state.log_prior, dtype=np.float64)[idx]
                now = np.where(np.isfinite(lp), now, -np.inf)
            same = (now == old) | np.isclose(now, old, rtol=1e-4, atol=1e-3)
            if name == "flow log_q":
                # Drawn or moved through the latent space, a particle rounded
                # onto a bound keeps the density of its path, where log_prob
                # says -inf.
                same |= np.isneginf(now) & np.isfinite(old)
            if not np.all(same | (np.isnan(now) & np.isneginf(old))):
                raise CheckpointError(
                    f"the checkpoint's cached {name} values differ from the {name} "
                    "evaluated now at the stored particles (e.g. "
                    f"{old[~same][0]:.6g} stored vs {now[~same][0]:.6g} now): it was "
                    "made with a different likelihood, prior or flow"
                    + (", or from another reference (other reference, "
                       "defensive_weight or defensive_scale settings)"
                       if name == "flow log_q" else "")
                    + ". Resume with the functions, flow and settings of that run, "
                    "or start a new run")

    @classmethod
    def resume_from_file(cls, path, *, log_likelihood: Callable, log_prior: Callable,
                         sampler: str | None = None, checkpoint_path: str = "checkpoint",
                         checkpoint_dset: str = "state", flow_path: str = "flow",
                         config_path: str = "aspire_config",
                         resume_kwargs: Mapping | None = None) -> "Aspire":
        """Rebuild an :class:`Aspire` and its flow from a checkpoint file.

        The next :meth:`sample_posterior` call resumes from the stored state (if
        the file has one) with the stored sampler settings, which keyword
        arguments at the call can still override.
        """
        _check_h5_suffix(path)
        if not os.path.exists(path):
            raise CheckpointError(f"no checkpoint file at {str(path)!r}")
        foreign = not is_aspire_file(path)
        with AspireFile(path, "r") as f:
            try:
                if config_path not in f:
                    raise CheckpointError(
                        f"{str(path)!r} has no /{config_path} group; it was not "
                        "written by aspire_jax (or the config was not saved)")
                cfg = read_json_group(f, config_path)
            except CheckpointError as exc:
                samples = [k for k in f if isinstance(f[k], h5py.Group)
                           and f[k].attrs.get("aspire_jax_type") == "Samples"]
                if samples and config_path not in f:
                    raise CheckpointError(
                        f"{str(path)!r} holds samples (/{samples[0]}, written by "
                        "Samples.save) but no run to resume: read them with "
                        "aspire_jax.formats.read_samples, or pass a checkpoint "
                        "written with checkpoint_path") from exc
                if not foreign:
                    raise
                raise CheckpointError(
                    f"{str(path)!r} was not written by aspire_jax: its root lacks "
                    "the aspire_jax_version and file_format_version attributes. A "
                    "checkpoint of the original aspire package holds a pickled "
                    "state, which aspire_jax never unpickles; resume it with that "
                    "package, or start an aspire_jax run by fitting to its "
                    "posterior samples") from exc
        obj = cls._from_config(cfg, log_likelihood, log_prior)
        resume = _resume_from_path(path, f"{checkpoint_path}/{checkpoint_dset}")
        # Before the flow is read: its float64 arrays would be cut down.
        _check_x64_resumable(resume)
        with AspireFile(path, "r") as f:
            if flow_path in f:
                try:
                    obj.load_flow(f, path=flow_path)
                except CheckpointError as exc:
                    raise CheckpointError(
                        f"{str(path)!r}: the flow at /{flow_path} does not fit the "
                        "settings stored beside it in /aspire_config, so the file was "
                        "edited or damaged: "
                        + str(exc).replace(_REBUILD_ADVICE, "")) from exc
            else:
                obj._no_flow_hint = (
                    f"{str(path)!r} holds no flow at {flow_path!r} (it was written "
                    "with checkpoint_save_flow=False or save_flow=False): load the "
                    "flow the run used with load_flow(file, path=...) before "
                    "sampling")
        if sampler is not None:
            resume["sampler"] = sampler
        if resume_kwargs:
            sc = dict(resume.get("sampler_config") or {})
            sc["options"] = _merge_resume_options(sc.get("options", {}), resume_kwargs)
            resume["sampler_config"] = sc
        if resume.get("state") is None:
            if (checkpoint_path, checkpoint_dset) != ("checkpoint", "state"):
                hint = (" (here checkpoint_path names the group inside the file, not "
                        "a file)" if str(checkpoint_path).endswith((".h5", ".hdf5"))
                        else "")
                raise CheckpointError(
                    f"{str(path)!r} has no dataset /{checkpoint_path}/{checkpoint_dset}"
                    f"{hint}; aspire_jax writes the state at /checkpoint/state, the "
                    "default")
            logger.info("%s has no checkpoint yet; sampling will start afresh and "
                        "checkpoint there", path)
            obj._fresh_file = os.fspath(path)
            obj._fresh_flow = (None if obj.flow_params is None
                               else obj.flow.params_to_bytes(obj.flow_params))
        else:
            obj._resume = resume
            obj._resume_file = os.fspath(path)
            if resume.get("sampler_config"):
                # What save_sampler_config writes back before the run goes on.
                obj._last_sampler_config = dict(resume["sampler_config"])
        return obj

    @classmethod
    def _from_config(cls, cfg, log_likelihood, log_prior):
        version = int(cfg.get("config_version", 0))
        if version > _CONFIG_VERSION:
            raise CheckpointError(
                f"the file's aspire_config has version {version}, newer than this "
                f"aspire_jax understands ({_CONFIG_VERSION}); upgrade aspire_jax")
        try:
            flow_cfg = FlowConfig.from_dict(cfg["flow_config"])
            bounds = np.asarray(cfg["prior_bounds"], dtype=float)
            return cls(log_likelihood=log_likelihood, log_prior=log_prior,
                       dims=int(cfg["dims"]), parameters=cfg["parameters"],
                       prior_bounds=bounds,
                       periodic_parameters=cfg.get("periodic_parameters", []),
                       bounded_to_unbounded=cfg.get("bounded_to_unbounded", True),
                       bounded_transform=flow_cfg.bounded_transform,
                       affine_transform=flow_cfg.affine, eps=flow_cfg.eps,
                       flow_kind=flow_cfg.kind, n_layers=flow_cfg.n_layers,
                       hidden_sizes=flow_cfg.hidden_sizes, n_bins=flow_cfg.n_bins,
                       spline_range=flow_cfg.spline_range)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the file's aspire_config is incomplete or invalid: "
                                  f"{exc}") from exc

    # ------------------------------------------------------ config and flow IO
    def config_dict(self) -> dict:
        """The settings of this instance as a JSON-able dict."""
        bounds = self.prior_bounds
        cfg = dict(
            config_version=_CONFIG_VERSION, aspire_jax_version=__version__,
            dims=self.dims, parameters=list(self.parameters),
            prior_bounds=[[_json_float(a), _json_float(b)] for a, b in bounds],
            periodic_parameters=list(self.periodic_parameters),
            bounded_to_unbounded=self.bounded_to_unbounded,
            flow_backend="jax", flow_config=self.flow_config.to_dict(),
            log_likelihood=_function_id(self.log_likelihood),
            log_prior=_function_id(self.log_prior))
        if self._last_sampler_config is not None:
            cfg["sampler_type"] = self._last_sampler_config["sampler"]
            cfg["sampler_config"] = self._last_sampler_config
        return cfg

    def save_config(self, h5, path: str = "aspire_config"):
        """Write :meth:`config_dict` to ``/path`` of ``h5``: an open HDF5
        file or group, or a ``.h5`` / ``.hdf5`` path (then written atomically,
        keeping the file's other groups).

        Raises
        ------
        ValidationError
            If ``path`` is (or lies inside) another group of the checkpoint
            layout, or the file holds an unfinished SMC run whose stored
            settings this would change (resume the run, or write to another
            file).
        """
        content = self.config_dict()
        self._save_json(h5, path, "aspire_config", "save_config", content,
                        lambda g: _same_json(g, content, ignore=_CONFIG_NOT_RESUMED))

    def save_sampler_config(self, h5, path: str = "sampler_config"):
        """Write the settings of the last ``sample_posterior`` call (to an
        open file or group, or a path; refused as :meth:`save_config` is)."""
        content = self._last_sampler_config or {}
        self._save_json(h5, path, "sampler_config", "save_sampler_config", content,
                        lambda g: _same_json(g, content))

    @staticmethod
    def _save_json(h5, path, own, method, content, unchanged):
        if isinstance(h5, (str, os.PathLike)):
            _save_group_to_file(h5, path, own, method, unchanged,
                                lambda group: _fill_json_group(group, content))
            return
        _check_open_for_writing(h5, method)
        _guard_group(h5, path, own, method, unchanged)
        if path in h5:
            del h5[path]
        write_json_group(h5, path, content)

    def _write_config(self, group):
        _fill_json_group(group, self.config_dict())

    def _write_sampler_config(self, group):
        _fill_json_group(group, self._last_sampler_config or {})

    def _write_flow(self, group):
        self._require_flow()
        group.attrs["flow_config"] = json.dumps(self.flow_config.to_dict())
        blob = self.flow.params_to_bytes(self.flow_params)
        dset = group.create_dataset("params", data=np.frombuffer(blob, np.uint8))
        dset.attrs["crc32"] = zlib.crc32(blob)
        if self.flow_history is not None:
            for k, v in self.flow_history.to_dict().items():
                arr = np.asarray(v)
                if arr.dtype.kind in "fiu":
                    group.create_dataset(f"history/{k}", data=arr)
            group["history"].attrs["stop_reason"] = self.flow_history.stop_reason
            # The held-out rows and their log q: the "auto" choices' density
            # test needs them, so a flow read back chooses as its fit did.
            log_q = self.flow_history.held_out_log_q
            if self._held_out is not None and log_q is not None:
                group.create_dataset("held_out/x", data=np.asarray(self._held_out))
                group.create_dataset("held_out/log_q", data=np.asarray(log_q))
                if self._held_out_weights is not None:
                    group.create_dataset("held_out/weights",
                                         data=np.asarray(self._held_out_weights))

    def save_flow(self, h5, path: str = "flow"):
        """Write the flow's architecture and parameters to ``/path`` of ``h5``:
        an open file or group, or a ``.h5`` / ``.hdf5`` path (then written
        atomically, keeping the file's other groups)."""
        self._require_flow()
        blob = self.flow.params_to_bytes(self.flow_params)

        def same_flow(group):
            params = group.get("params") if isinstance(group, h5py.Group) else None
            return (isinstance(params, h5py.Dataset)
                    and params[()].tobytes() == blob
                    and group.attrs.get("flow_config")
                    == json.dumps(self.flow_config.to_dict()))

        if isinstance(h5, (str, os.PathLike)):
            # The run in the file was sampled with the flow it holds: replacing
            # that flow would leave it unresumable, so the run is kept aside.
            _save_group_to_file(h5, path, "flow", "save_flow", same_flow,
                                self._write_flow, set_aside=True)
            return
        _check_open_for_writing(h5, "save_flow")
        _guard_group(h5, path, "flow", "save_flow", same_flow)
        if path in h5:
            del h5[path]
        self._write_flow(h5.create_group(path))

    def load_flow(self, h5, path: str = "flow"):
        """Restore the flow written by :meth:`save_flow` from ``/path`` of
        ``h5`` (an open file or group, or a path).

        Raises
        ------
        CheckpointError
            If the group is missing, its architecture differs from this
            instance's (dimension, layers, ...), or it was fitted under other
            prior bounds.
        """
        if isinstance(h5, (str, os.PathLike)):
            _check_h5_suffix(h5)
            with AspireFile(h5, "r") as f:
                return self.load_flow(f, path)
        if path not in h5:
            raise CheckpointError(f"no /{path} group in {h5.file.filename!r}")
        g = h5[path]
        try:
            stored = FlowConfig.from_dict(json.loads(g.attrs["flow_config"]))
        except Exception as exc:
            raise CheckpointError(f"/{path} has no readable flow_config: {exc}") from exc
        if stored != self.flow_config:
            diff = {k: (v, getattr(self.flow_config, k))
                    for k, v in dataclasses.asdict(stored).items()
                    if getattr(self.flow_config, k) != v}
            raise CheckpointError(
                f"the stored flow's architecture differs from this Aspire's: "
                f"{ {k: f'file {a!r} vs here {b!r}' for k, (a, b) in diff.items()} }"
                + _REBUILD_ADVICE)
        if not isinstance(g.get("params"), h5py.Dataset):
            raise CheckpointError(f"/{path} has no params dataset")
        data = g["params"][...].tobytes()
        crc = g["params"].attrs.get("crc32")
        if crc is not None and int(crc) != zlib.crc32(data):
            raise CheckpointError(
                f"/{path}/params fails its checksum: the file is corrupt; use another "
                "checkpoint or refit the flow")
        try:
            params = self.flow.params_from_bytes(data)
        except Exception as exc:
            raise CheckpointError(f"cannot restore the flow from /{path}: {exc}") from exc
        self._check_flow_bounds(params, f"the flow in /{path}")
        self.flow_params = params
        # Another flow: the file the old one came from is no longer its home.
        self._fresh_file = None
        self.flow_history = _read_flow_history(g)
        self._held_out, self._held_out_weights = None, None
        self._reset_auto()
        held = _read_held_out(g, self.dims, self.flow_history)
        if held is not None:
            self._held_out, log_q, self._held_out_weights = held
            self.flow_history = dataclasses.replace(self.flow_history,
                                                    held_out_log_q=log_q)

    def _check_flow_bounds(self, params, what: str) -> None:
        """Refuse flow parameters whose parameter transform maps other bounds
        than this instance's ``prior_bounds``: its draws would ignore the
        bounds declared here."""
        want = self._flow_bounds()
        want = (np.full((self.dims, 2), [-np.inf, np.inf]) if want is None
                else np.asarray(want, np.float64))
        have = np.stack([np.asarray(params.transform.lower, np.float64),
                         np.asarray(params.transform.upper, np.float64)], axis=1)
        same = (have == want) | np.isclose(have, want, rtol=1e-6, atol=0.0)
        if not same.all():
            j = int(np.flatnonzero(~same.all(axis=1))[0])
            raise CheckpointError(
                f"{what} was fitted with the bounds ({have[j, 0]:g}, {have[j, 1]:g}) "
                f"for {self.parameters[j]!r}, and this Aspire declares "
                f"({want[j, 0]:g}, {want[j, 1]:g}) (prior_bounds, bounded_to_unbounded):"
                " its draws would not respect them. Build the Aspire with the bounds "
                "the flow was fitted with, or fit a new flow")

    # ------------------------------------------------------ auto checkpoint
    @contextlib.contextmanager
    def auto_checkpoint(self, path, every: int = 1, save_config: bool = True,
                        save_flow: bool = True, resume: bool = False):
        """Make every ``fit`` and ``sample_posterior`` inside checkpoint to ``path``.

        With ``resume=True``, a checkpoint already in the file is resumed from
        (and a stored flow is loaded, so ``fit`` is skipped).
        """
        _check_h5_suffix(path)
        _check_writable(path)
        if not is_int(every) or every < 1:
            raise ValidationError(f"every must be a positive integer; got {every!r}")
        every = int(every)
        save_config = _flag("save_config", save_config)
        save_flow = _flag("save_flow", save_flow)
        resume = _flag("resume", resume)
        if resume and os.path.exists(path):
            stored = _resume_from_path(path)
            # Before the flow is read: its float64 arrays would be cut down.
            _check_x64_resumable(stored)
            with AspireFile(path, "r") as f:
                has_flow = "flow" in f
                has_state = _STATE_DSET in f
                load = has_flow and self.flow_params is None
                if load:
                    self.load_flow(f)
            if has_state and not has_flow and self.flow_params is None:
                raise CheckpointError(
                    f"{os.fspath(path)!r} holds an SMC state but no flow, and "
                    "resuming needs the flow that state was sampled with (it is "
                    "written unless save_flow=False). Load it with load_flow, or "
                    "pass resume=False to start afresh (the file is overwritten)")
            if load:
                self._resume = stored
                if stored.get("state") is None:
                    self._resume = None
                else:
                    # The run writes on into this file: stopped again, it
                    # resumes from its latest checkpoint there.
                    self._resume_file = os.fspath(path)
        previous = self._auto
        if previous is not None and previous["path"] != os.fspath(path):
            logger.info("auto_checkpoint(%r) inside auto_checkpoint(%r): runs inside "
                        "the inner block write to %r only, and to the outer file again "
                        "after it", os.fspath(path), previous["path"], os.fspath(path))
        self._auto = dict(path=os.fspath(path), every=every, save_config=save_config,
                          save_flow=save_flow, resume=resume)
        try:
            yield self
        finally:
            self._auto = previous


# ---------------------------------------------------------------- helpers
class _OwnHostErrors(logging.Filter):
    """Drops JAX's log record of a callback failure whose exception is one
    that a ``wrap_numpy_likelihood`` function recorded (and the facade
    re-raises); every other record passes."""

    def __init__(self, functions):
        super().__init__()
        self.functions = functions

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not any(
            exc is getattr(f, "host_error", None) for _, f in self.functions)


class _CheckpointWriter:
    """Writes checkpoints every ``every`` iterations (the path was checked
    before the run, so a write fails only if the file system does)."""

    def __init__(self, aspire, path, every, save_config, save_flow, callback):
        self.aspire, self.path, self.every = aspire, path, every
        self.save_config, self.save_flow, self.callback = save_config, save_flow, callback
        self.last_written = None  # iteration of the last checkpoint in the file
        # Whether this run continues the instance's loaded checkpoint and
        # writes into the file it came from (set by the run).
        self.continues_resume = False

    @property
    def inactive(self):
        return self.path is None and self.callback is None

    def maybe_write(self, state, make_history):
        if not self.inactive and int(state.iteration) % self.every == 0:
            self.write(state, make_history())

    def write(self, state, history, force=False, notify=True):
        """Write ``state`` to the file and hand it to the callback (not with
        ``notify=False``, nor on the last, ``force``d write)."""
        if self.inactive:
            return
        # Gathering is collective under jax.distributed; only one process writes.
        state = host_state(state)
        if not is_checkpoint_writer():
            return
        blob = state_to_bytes(state)
        # The file is written before the callback is called, so a callback that
        # stops the run (raising, e.g. KeyboardInterrupt) leaves a file at
        # least as recent as what it was given.
        if self.path is not None:
            groups = {"sampler_config": self.aspire._write_sampler_config,
                      "history": lambda g: _fill_history(g, history)}
            if self.save_config:
                groups["aspire_config"] = self.aspire._write_config
            if self.save_flow:
                groups["flow"] = self.aspire._write_flow
            try:
                write_checkpoint_file(self.path, state_bytes=blob, groups=groups)
            except CheckpointError as exc:
                if not force:
                    # A file held or a disk full for a while must not end a
                    # long run: the next checkpoint tries again.
                    logger.warning("checkpoint at iteration %d not written, the run "
                                   "goes on and the next checkpoint tries again: %s",
                                   int(state.iteration), exc)
                    warnings.warn(f"checkpoint at iteration {int(state.iteration)} "
                                  f"not written: {exc}", RuntimeWarning, stacklevel=2)
                else:
                    # The last write: hand the checkpoint over with the error,
                    # so that resume_from=error.checkpoint finishes the run.
                    exc.checkpoint = self._checkpoint_dict(blob, history, state)
                    exc.args = (f"{str(exc).rstrip('.')}. The checkpoint of iteration "
                                f"{int(state.iteration)} is attached to this error "
                                "as .checkpoint; pass resume_from=error.checkpoint "
                                "to finish the run.",)
                    raise
            else:
                self.last_written = int(state.iteration)
                logger.debug("checkpoint written to %s at iteration %d", self.path,
                             int(state.iteration))
                if self.continues_resume:
                    # The run resumed from the instance's checkpoint: should it
                    # stop early, the next call resumes from here (and goes on
                    # writing into this file), not from where it began.
                    self.aspire._resume = self._checkpoint_dict(blob, history, state)
                    self.aspire._resume_file = os.fspath(self.path)
        if self.callback is not None and notify and not force:
            self.callback(self._checkpoint_dict(blob, history, state))

    def _checkpoint_dict(self, blob, history, state) -> dict:
        return dict(state=blob, history=history.to_dict(),
                    iteration=int(state.iteration), beta=float(state.beta),
                    sampler="smc", sampler_config=self.aspire._last_sampler_config)


def _fill_history(group, history: History):
    d = history.to_dict()
    group.attrs["sampler"] = d.pop("sampler")
    for k, v in d.items():
        group.create_dataset(k, data=np.asarray(v))


def _fill_json_group(group, mapping):
    for k, v in mapping.items():
        group.attrs[k] = json.dumps(v)


_STATE_DSET = "checkpoint/state"


def _resume_from_path(path, dset=_STATE_DSET):
    _check_h5_suffix(path)
    if os.path.isfile(path) and h5py.is_hdf5(path) and not is_aspire_file(
            path, unopenable=True):
        raise CheckpointError(
            f"{os.fspath(path)!r} was not written by aspire_jax (its root lacks the "
            "aspire_jax_version and file_format_version attributes), so it holds no "
            "run to resume; aspire_jax never unpickles another program's state")
    blob = read_checkpoint_bytes(path, dset)
    out = dict(state=blob)
    with AspireFile(path, "r") as f:
        if blob is not None and "history" not in f:
            raise CheckpointError(
                f"{os.fspath(path)!r} holds a state but no /history, which every "
                "checkpoint writes beside it: the file was edited or damaged")
        if "history" in f:
            g = f["history"]
            h = {k: np.asarray(g[k]) for k in g.keys()}
            h["sampler"] = str(g.attrs.get("sampler", "smc"))
            out["history"] = h
        if "sampler_config" in f:
            sc = _checked_sampler_config(read_json_group(f, "sampler_config"))
            out["sampler_config"] = sc
            out["sampler"] = sc.get("sampler")
    return out


def _checked_sampler_config(sc):
    """A checkpoint's sampler configuration, refused with a clear error if a
    field has a type no run writes."""
    if sc is None:
        return None
    if not isinstance(sc, Mapping):
        raise CheckpointError(f"the checkpoint's sampler_config must be a dict; got "
                              f"{type(sc).__name__}")
    problems = []
    for name, low in (("seed", None), ("n_samples", 1)):
        v = sc.get(name)
        integer = isinstance(v, numbers.Integral) and not isinstance(v, bool)
        if v is not None and (not integer or (low is not None and v < low)):
            need = "an integer" + ("" if low is None else f" >= {low}")
            problems.append(f"{name} = {v!r} ({need} or null)")
    if sc.get("x64") is not None and not isinstance(sc.get("x64"), bool):
        problems.append(f"x64 = {sc.get('x64')!r} (true, false or null)")
    if sc.get("sampler") is not None and not isinstance(sc.get("sampler"), str):
        problems.append(f"sampler = {sc.get('sampler')!r} (a name)")
    if not isinstance(sc.get("options", {}), Mapping):
        problems.append(f"options = {sc.get('options')!r} (a dict)")
    if problems:
        raise CheckpointError("the checkpoint's sampler_config is damaged: "
                              + "; ".join(problems))
    return dict(sc)


def _read_flow_history(group) -> FlowHistory | None:
    """The flow's training history stored beside it, or None if absent/unreadable."""
    if "history" not in group:
        return None
    h = group["history"]
    try:
        data = {k: np.asarray(h[k][...]) for k in h}
        if "stop_reason" in h.attrs:
            data["stop_reason"] = str(h.attrs["stop_reason"])
        return FlowHistory.from_dict(data)
    except (ValidationError, KeyError, TypeError, ValueError, OSError) as err:
        # A history is informative only; never block a load on it.
        logger.warning("ignoring the unreadable flow history in %s: %s",
                       group.name, err)
        return None


def _warn_batch_padding(batch_size, *counts, devices: int = 1) -> None:
    """Warn when ``batch_size`` leaves a partial batch for a particle count:
    the padding rows are evaluated (and counted) like the others. Under a
    mesh of ``devices`` the suggested size is a multiple of the device count,
    so that every batch spreads evenly over the devices."""
    if not is_int(batch_size) or isinstance(batch_size, bool) or batch_size < 1:
        return
    for n in counts:
        if not is_int(n) or isinstance(n, bool) or n <= batch_size or n % batch_size == 0:
            continue
        pad = evaluated_rows(n, batch_size) - n
        n_batches = -(-n // batch_size)
        even = -(-n // n_batches)
        even = -(-even // devices) * devices
        if even != batch_size:
            advice = (f"batch_size={even} runs {-(-n // even)} batches and pads "
                      f"{evaluated_rows(n, even) - n}")
        else:
            # No smaller size gives as few batches: name the largest divisor.
            divisor = max((d for d in range(devices, batch_size, devices)
                           if n % d == 0), default=0)
            advice = (f"batch_size={divisor} divides it" if divisor > 1
                      else "a batch_size that divides it pads none")
        logger.warning(
            "batch_size=%d does not divide %d particles: each evaluation runs %d "
            "batches of %d rows, %d of them padding (%.0f%% more likelihood "
            "evaluations, counted in n_likelihood_evaluations); %s", batch_size, n,
            n_batches, batch_size, pad, 100 * pad / n, advice)
    batched = any(is_int(n) and not isinstance(n, bool) and n > batch_size
                  for n in counts)
    if devices > 1 and batched and batch_size % devices:
        logger.warning(
            "batch_size=%d is not a multiple of the %d devices of the mesh: "
            "its batches do not spread evenly over them; a multiple such as %d "
            "does", batch_size, devices, -(-batch_size // devices) * devices)


def _read_held_out(group, dims: int, history: FlowHistory | None):
    """The held-out rows stored beside a flow: ``(x, log_q, weights or None)``,
    or None if absent (a file written before they were kept) or unreadable
    (with a warning): the "auto" choices then skip their density test."""
    if "held_out" not in group or history is None:
        if history is not None and math.isfinite(history.gain_over_gaussian()):
            logger.info("no held-out samples are stored with the flow in %s: the "
                        "density test of reference='auto' and preconditioning="
                        "'auto' is skipped", group.name)
        return None
    h = group["held_out"]
    try:
        x = np.asarray(h["x"][...])
        log_q = np.asarray(h["log_q"][...], np.float64)
        weights = (np.asarray(h["weights"][...], np.float64) if "weights" in h
                   else None)
        n = len(log_q)
        ok = (x.ndim == 2 and x.shape == (n, dims) and x.dtype.kind == "f"
              and n > 0 and np.all(np.isfinite(x)) and log_q.ndim == 1
              and not np.any(np.isnan(log_q)) and not np.any(log_q == np.inf))
        if weights is not None:
            ok = ok and (weights.shape == (n,) and np.all(np.isfinite(weights))
                         and np.all(weights >= 0) and np.any(weights > 0))
        if not ok:
            raise ValueError("shapes or values out of range")
    except (KeyError, TypeError, ValueError, OSError) as err:
        logger.warning("ignoring the unreadable held-out samples in %s (the density "
                       "test of the 'auto' choices is skipped): %s", h.name, err)
        return None
    return x, log_q, weights


# Held-out nats per dimension the flow must gain over its Gaussian, on the
# held-out samples weighted as draws of the new posterior, for
# preconditioning="auto" to move the particles in its latent space and for
# reference="auto" to start from it.
AUTO_FLOW_GAIN_PER_DIM = 0.1
# A posterior this many times wider than the earlier samples (in standard
# deviation, along its widest direction relative to them, in the unbounded
# coordinates) gets a warning: the reference fitted to those samples is then
# too narrow. At 5 times, log Z came out low by 1.0 +- 0.3 reported errors
# (16 keys, N = 1000); the eight-schools prior change, 2.7.
NARROW_REFERENCE_RATIO = 3.0
# A bound the posterior presses against: more than PRESSED_SHARE of its weight
# within PRESSED_WINDOW of its standard deviations of the bound, and more than
# PRESSED_RATIO times what the reference puts there. A half-normal posterior
# at the bound has 12 % there; one whose mean is two deviations from the bound,
# about 2 %.
PRESSED_WINDOW = 0.25
PRESSED_SHARE = 0.05
PRESSED_RATIO = 3.0
# A posterior with more than this share of its weight within PRESSED_WINDOW of
# its standard deviations of a bound gets log_prior checked just beyond it. A
# Gaussian posterior cut at its 2.6 % quantile (log Z 0.026 off the uncut
# problem, about one error bar at 2000 particles) has 1.5 % there; at 5 %, a
# 15 % cut split over two bounds went unnamed.
BEYOND_BOUND_SHARE = 0.01
# Importance weights whose fitted Pareto tail shape exceeds this have, in
# practice, infinite variance (Vehtari et al., Pareto smoothed importance
# sampling): the estimate and its error bar are unreliable.
PARETO_K_LIMIT = 0.7
# Above this tail shape (Pareto k, or the curvature 1 - 1/s of a Gaussian tail:
# a posterior more than twice the reference's variance along some direction)
# the weights' variance is infinite: the estimate still converges, but the
# error bar from their sample variance understates its spread.
ERROR_BAR_K_LIMIT = 0.5
# A curvature of log w above this (1 is the limit 1 - 1/s for a posterior
# infinitely wider than the reference; on a reference ten times too narrow
# the estimate read 0.99-1.01) comes from a posterior that is not
# log-concave in the latent space, and is no tail shape.
CURVATURE_MAX = 1.2
# ... and only when the new posterior's median flow density, estimated on the
# held-out earlier samples, ranks at least this high among them (about 0.5 for
# a new posterior like the earlier one; see Aspire.auto_preconditioning).
AUTO_FLOW_MIN_DENSITY_RANK = 0.35
# ... or when the held-out samples, weighted by pi L / q as draws of the new
# posterior (weights capped at their 99th percentile), keep an effective
# sample size of at least this share of their number: the new posterior then
# lies where the flow has its training samples. A 6-d mixture of two modes
# split 90/10 before and 70/30 after ranks 0.28-0.32 but keeps 0.26-0.33;
# from its flow log Z came out within 1.2 reported errors and the minor mode
# 0.28-0.30 (exact 0.296) on 4 keys, from the Gaussian up to 7.4 errors low
# and 0.09-0.28. A 4-d one split 95/5 before and 60/40 after keeps
# 0.075-0.16. A new posterior outside the earlier samples keeps 0.015-0.024
# (eight schools' prior change, the far side of a banana), where the flow
# extrapolates. This test cannot see a new posterior that fills the gap
# between the earlier modes, where no held-out sample lies (a 2-d mixture
# split 50/50, 8 sds apart, and a new posterior N(between them, 3^2) keeps
# 0.09-0.23); the weighted gain does: there the flow does no better than its
# Gaussian (-0.21 to 0.00 nats per dimension), and SMC starts from the
# Gaussian, within 1.1 reported errors on 6 runs, where from the flow log Z
# came out up to 7.7 errors off.
AUTO_FLOW_MIN_HELD_OUT_ESS = 0.05


def _weighted_gain(log_ratio: np.ndarray, w: np.ndarray | None) -> float:
    """Mean of ``log q - log g`` (``log_ratio``) over held-out samples weighted
    as draws of the new posterior (``w``, from :func:`_capped_weights`): how
    much better the flow than the Gaussian describes the new posterior, up to
    the new posterior's own entropy, which cancels. NaN when no weight is
    left."""
    finite = np.isfinite(log_ratio)
    if w is None or not np.any(w[finite] > 0):
        return math.nan
    return float(np.sum(w[finite] * log_ratio[finite]) / np.sum(w[finite]))


def _held_out_ess(w: np.ndarray | None, weights: np.ndarray | None = None) -> float:
    """Effective sample size, as a share of their own, of held-out samples
    weighted by ``w`` (from :func:`_capped_weights`, which includes their
    training ``weights``)."""
    if w is None:
        return 0.0
    base = np.ones_like(w) if weights is None else np.asarray(weights, np.float64)
    return float((w.sum() ** 2 / np.sum(w**2)) / (base.sum() ** 2 / np.sum(base**2)))


def _capped_weights(log_w: np.ndarray, quantile: float,
                    weights: np.ndarray | None = None) -> np.ndarray | None:
    """``exp(log_w)`` (0 where not finite), capped at its ``quantile`` and
    multiplied by the training ``weights``; None when no weight is left."""
    finite = np.isfinite(log_w)
    if not finite.any():
        return None
    w = np.where(finite, np.exp(log_w - np.max(log_w[finite])), 0.0)
    w = np.minimum(w, np.quantile(w, quantile))
    if weights is not None:
        w = w * weights
    return w if np.any(w > 0) else None


def _warn_resolution(log_likelihood, error: float) -> None:
    """Warn when the log-likelihood values are so large that the float
    resolution at their magnitude exceeds the evidence error: rounding their
    common offset shifts log Z by up to half a step, which the error bar
    does not know of."""
    ll = np.asarray(log_likelihood)
    ll = ll[np.isfinite(ll)]
    if not ll.size:
        return
    # The spacing of floats at the largest magnitude (eps times it is up to
    # twice that, by where in its binade the value falls).
    resolution = float(np.spacing(np.max(np.abs(ll))))
    if resolution > error:
        logger.warning(
            "log-likelihood values reach %.3g, where %s resolves steps of %.3g, "
            "against an evidence error of %.3g: log Z is quantised. Subtract a "
            "constant near the maximum from the log-likelihood (log Z shifts by "
            "it), or enable float64 (JAX_ENABLE_X64=1)",
            float(np.max(np.abs(ll))), ll.dtype, resolution, error)


def _warn_mala_near_bounds(config: SMCConfig, bounds: np.ndarray) -> None:
    """Warn of MALA moves in the native coordinates of bounded parameters.

    There a density that vanishes or diverges at a bound gives a drift that
    diverges too, and chains reach the region next to the bound only rarely.
    The kernel stays exact (50 sweeps from exact draws of Beta(1.5, 20)
    keep their distribution), but it mixes into that region slowly: from a
    flow fitted to Beta(3, 12) draws, 300 sweeps put the 1 % quantile at
    0.0045 against 0.0028, and SMC on 2-d Beta(1.5, 20) marginals (1000
    particles, eight keys) gave log Z 0.04 to 0.31 low against an error bar
    of 0.05. In the unbounded whitened space the same kernel was within its
    error.
    """
    if config.kernel == "mala" and config.preconditioning == "none" \
            and np.isfinite(bounds).any():
        logger.warning(
            "kernel='mala' with preconditioning='none' moves bounded parameters in "
            "their native coordinates, where the gradient can diverge at a bound "
            "and the chains mix slowly into the region next to it, so the "
            "evidence and its error bar are unreliable; use "
            "preconditioning='standard' (the unbounded, whitened space)")


def _warn_collapsed_steps(history: History, n: int) -> None:
    """Log a warning when a tempering step left fewer than 1% effective
    particles: a step forced past the target efficiency (``min_beta_step``,
    ``max_n_steps``, a fixed schedule) can make the evidence and its
    delta-method error bar badly wrong without any other sign."""
    if not len(history) or "ess" not in history.data:
        return
    ess = np.asarray(history.data["ess"], float)
    low = ess < 0.01 * n
    if low.any():
        forced = int(np.sum(np.asarray(history.data.get(
            "beta_search_failed", np.zeros(ess.shape)), bool)))
        logger.warning(
            "%d tempering step(s) left fewer than 1%% effective particles (ESS "
            "down to %.1f of %d; %d step(s) forced past the target efficiency): "
            "the evidence and its error bar are unreliable. Let the schedule "
            "adapt: raise max_n_steps, lower min_beta_step, or use adaptive=True",
            int(low.sum()), float(ess.min()), n, forced)


def _warn_poor_flow(history: FlowHistory, dims: int,
                    learning_rate: float | None = None) -> None:
    """Log a warning when the fitted flow describes its held-out samples much
    worse than a Gaussian fitted to the same training samples (or its
    validation loss is not finite): training diverged or went wrong, and a
    reference that misses part of the posterior can give a wrong posterior
    and log Z with a small error bar."""
    if not len(history.validation_loss):
        return
    gain = history.gain_over_gaussian() / dims
    if math.isfinite(history.gaussian_validation_loss):
        fine = math.isfinite(gain) and gain >= POOR_FLOW_GAIN_PER_DIM
    else:
        # No baseline (a history written without it): judge by the loss alone.
        fine = math.isfinite(history.best_validation_loss)
    if fine:
        return
    logger.warning(
        "the fitted flow describes the held-out earlier samples worse than a "
        "Gaussian fitted to them (%.3g nats per dimension; best validation loss "
        "%.4g against %.4g): its training probably diverged%s. Sampling from "
        "it can return a wrong posterior and log Z without any other sign: refit "
        "with a lower learning_rate or clip_grad, and look at the loss curve "
        "(flow_history.plot_loss())", gain, history.best_validation_loss,
        history.gaussian_validation_loss,
        "" if learning_rate is None else f" (learning_rate={learning_rate:g})")


def _warn_unmixed(history: History, config: SMCConfig, dims: int) -> None:
    """Log a warning when the moves of some iteration stopped before the
    particles forgot where they started: at the sweep cap of the adaptive
    length, or after a fixed ``n_mcmc_steps`` with a correlation above 0.1.
    Particles that still remember the previous, wider tempered distribution
    bias the next weights, so log Z and the posterior can be off by many
    reported errors without any other sign."""
    if not len(history) or "decorrelation" not in history.data:
        return
    corr = np.asarray(history.data["decorrelation"], float)
    sweeps = np.asarray(history.data["n_mcmc_steps"])
    threshold = config.decorrelation_threshold
    if config.n_mcmc_steps is None:
        cap = config.mcmc_step_cap(dims)
        bad = (sweeps >= cap) & (corr > threshold)
        limit, fix = f"the cap of {cap} sweeps", "Raise max_mcmc_steps"
        above = f"above {threshold:.2g}, where the adaptive length stops"
    else:
        threshold = max(0.1, threshold)
        bad = corr > threshold
        limit, fix = (f"n_mcmc_steps={config.n_mcmc_steps}",
                      "Raise n_mcmc_steps or leave it None (adaptive length)")
        above = (f"above {threshold:.2g}; the adaptive length would go on to "
                 f"{config.decorrelation_threshold:.2g}")
    if bad.any():
        which = np.flatnonzero(bad)
        names = ", ".join(str(i) for i in which[:8]) + (" ..." if which.size > 8 else "")
        logger.warning(
            "in %d of %d SMC iterations (%s) the MCMC moves stopped at %s with the "
            "particles still correlated with their starting points (mean "
            "correlation up to %s, %s): the evidence and the posterior may be "
            "biased by more than their error bars. %s%s", which.size, len(corr),
            names, limit, _above(float(corr[bad].max()), threshold), above, fix,
            "" if config.kernel == "mala"
            else ", or use kernel='mala' for a differentiable likelihood")


def _above(value: float, limit: float) -> str:
    """``value`` with the fewest digits (two at least) that show it above
    ``limit``."""
    for digits in range(2, 7):
        text = f"{value:.{digits}g}"
        if float(text) > float(f"{limit:.{digits}g}"):
            return text
    return f"{value:.9g}"


# Family-wise false-alarm rate of the drift test of plain MCMC.
_DRIFT_ALPHA = 1e-3


def _warn_drift(result, ok, names, periodic, n_burnin: int, n_steps: int) -> None:
    """Warn when the MCMC chains were still moving after burn-in.

    Chains that have reached the posterior by the end of burn-in stay there:
    over the recorded sweeps, each chain's move ``x_end - x_start`` has mean
    zero, and the centred squares keep their mean. Over independent chains,
    the mean move divided by its standard error is then about N(0, 1) per
    parameter (and likewise for the squares), so a value beyond the normal
    quantile for a family-wise rate of ``_DRIFT_ALPHA`` means the chains were
    still travelling from the flow's draws, and their final positions lean
    toward where they started. A periodic parameter (``periodic`` maps its
    column to its bounds) is tested on the cosine and sine of its angle. So
    is the log posterior density, which keeps rising while chains still
    climb toward the posterior, however slowly they move.
    """
    x_start, x_end = np.asarray(result.x_burnin)[ok], np.asarray(result.x)[ok]
    n = len(x_end)
    if n < 20:
        return
    lp_end = np.asarray(result.log_prior) + np.asarray(result.log_likelihood)
    cols = [(np.asarray(result.log_posterior_burnin, np.float64)[ok],
             lp_end.astype(np.float64)[ok], "the log posterior density")]
    for j, name in enumerate(names):
        a, b = x_start[:, j].astype(np.float64), x_end[:, j].astype(np.float64)
        if j in periodic:
            lo, hi = periodic[j]
            ta, tb = (2 * np.pi * (v - lo) / (hi - lo) for v in (a, b))
            cols += [(np.cos(ta), np.cos(tb), f"the cosine of {name!r}"),
                     (np.sin(ta), np.sin(tb), f"the sine of {name!r}")]
        else:
            cols.append((a, b, repr(name)))
    limit = statistics.NormalDist().inv_cdf(1 - _DRIFT_ALPHA / (4 * len(cols)))
    found = []
    for a, b, name in cols:
        spread = np.std(a)
        if not (np.isfinite(spread) and spread > 0):
            continue
        centre = np.mean(a)
        for kind, move in (("mean", b - a), ("spread", (b - centre) ** 2 - (a - centre) ** 2)):
            se = np.std(move, ddof=1) / math.sqrt(n)
            z = float(np.mean(move) / se) if se > 0 else 0.0
            if abs(z) > limit:
                change = (f"moved by {float(np.mean(b - a)) / spread:+.2f} of its "
                          "spread" if kind == "mean" else
                          f"changed by a factor {float(np.std(b)) / spread:.2f}")
                found.append((abs(z), f"the {kind} of {name} {change} (z = {z:.1f})"))
    if not found:
        return
    found.sort(reverse=True)
    logger.warning(
        "the MCMC chains had not settled by the end of the %d burn-in sweeps: "
        "over the %d recorded sweeps %s%s. Chains still on their way from the "
        "flow's draws may not have reached the posterior by their last sweep; "
        "raise n_burnin (the kernel adapts during it), or use kernel='rwmh' or "
        "'mala'", n_burnin, n_steps, "; ".join(text for _, text in found[:3]),
        f" (and {len(found) - 3} more)" if len(found) > 3 else "")


def _warn_acceptance_drop(acceptance, n_burnin: int, config: SMCConfig) -> None:
    """Warn when plain MCMC accepted far fewer moves after burn-in than its
    adaptation aimed at: the chains then left the region the frozen kernel
    was tuned to (pCN's reference, say, fitted to chains still on their way),
    and crawl, which no test of their movement can tell from stationarity."""
    target = getattr(kernel_settings(config.kernel, config.kernel_settings),
                     "target_acceptance", None)
    recorded = np.asarray(acceptance, np.float64)[n_burnin:]
    if target is None or not recorded.size or not n_burnin:
        return
    rate = float(np.mean(recorded))
    if rate < 0.5 * target:
        logger.warning(
            "the MCMC kernel accepted %.3f of its proposals after burn-in, against "
            "the %.3g it adapted to: the chains moved away from where the frozen "
            "kernel was tuned%s, and may be crawling short of the posterior. Raise "
            "n_burnin, or use kernel='rwmh' or 'mala'", rate, target,
            " (its reference was fitted to the chains during burn-in)"
            if config.kernel in ("pcn", "tpcn") else "")


def _warn_undefined(n_invalid: int, n_evaluations: int) -> None:
    """Log a warning when the user's functions were NaN or +inf at some of
    the points evaluated: those points were treated as impossible."""
    if n_invalid:
        logger.warning(
            "the log-likelihood or log-prior was NaN or +inf at %d of %d points "
            "evaluated; they were treated as impossible (log density -inf) and "
            "rejected. If the posterior has mass there, the samples and log Z are "
            "wrong. Return -inf explicitly where the density is zero, and fix the "
            "functions where it is not", n_invalid, n_evaluations)


def _check_reference_name(value) -> None:
    if not isinstance(value, str) or value not in _REFERENCES:
        raise ValidationError(f"reference must be one of {list(_REFERENCES)}; "
                              f"got {value!r}")


def _merge_resume_options(stored: Mapping, given: Mapping) -> dict:
    """Stored sampler options updated by those given at resume.

    The kernel and move space cannot change mid-run; ``preconditioning="auto"``
    given at resume means "as stored".
    """
    stored = _from_jsonable(stored)
    _check_structure(stored, given)
    merged = dict(stored)
    merged.update({k: v for k, v in given.items()
                   if not (k in ("preconditioning", "reference") and v == "auto")})
    return merged


def _check_structure(stored: Mapping, given: Mapping):
    """Refuse to resume with a different kernel, move space or reference."""
    for name, default in (("kernel", "tpcn"), ("preconditioning", "standard"),
                          ("reference", "flow"),
                          ("defensive_weight", 0.0), ("defensive_scale", 1.5)):
        if name in ("preconditioning", "reference") and given.get(name) == "auto":
            continue
        if name == "defensive_scale" and name in given and float(
                given.get("defensive_weight", stored.get("defensive_weight", 0.0))) == 0.0:
            raise CheckpointError(
                "the checkpoint's run has no defensive component "
                "(defensive_weight=0), so defensive_scale has no effect on it; "
                "drop defensive_scale to resume it")
        if name in given and given[name] != stored.get(name, default):
            raise CheckpointError(
                f"the checkpoint was made with {name}={stored.get(name, default)!r}; "
                f"resuming it with {name}={given[name]!r} would change the sampler "
                "mid-run. Resume with the same setting or start a new run")


def _host_weights(log_weights, n: int | None = None) -> np.ndarray | None:
    """Normalised weights from ``log_weights`` as float64 on the host (equal
    weights for ``n`` particles when it is None); None when no particle has
    weight."""
    if log_weights is None:
        return np.full(n, 1.0 / n)
    log_w = np.asarray(log_weights, np.float64)
    finite = np.isfinite(log_w)
    if not finite.any():
        return None
    w = np.where(finite, np.exp(log_w - np.max(log_w[finite])), 0.0)
    return w / w.sum()


def _unfinished_state(blob) -> tuple[int, float] | None:
    """``(iteration, beta)`` of the SMC state bytes ``blob`` if it has not
    reached beta = 1; None if it has (or cannot be read: writing over such a
    state is refused or reported elsewhere)."""
    try:
        saved = state_dict_from_bytes(blob)
        beta, it = float(np.asarray(saved["beta"])), int(np.asarray(saved["iteration"]))
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
    return (it, beta) if beta < 1.0 else None


def _unfinished_run(path) -> tuple[int, float] | None:
    """:func:`_unfinished_state` of the state in the aspire_jax file ``path``;
    None if it holds none (or cannot be read)."""
    try:
        if not os.path.isfile(path) or not is_aspire_file(path):
            return None
        blob = read_checkpoint_bytes(path)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return None if blob is None else _unfinished_state(blob)


def _set_aside_unfinished(path, continued: bytes | None = None) -> None:
    """Copy ``path`` to ``<stem>.unfinished<suffix>`` (or ``-2``, ``-3``, ...:
    an older copy is never replaced) when it holds an SMC run that has not
    reached the posterior, before a call that does not continue that run
    writes over it: re-running a script that was cut off, without asking to
    resume, must not cost the hours it ran. ``continued`` is the state of the
    run being resumed: a file that holds exactly it is that run's own file.
    The copy is synced and renamed into place, with the file's permissions,
    before the file is written over (see :func:`copy_file_durably`)."""
    found = _unfinished_run(path)
    if found is None:
        return
    source = os.path.realpath(os.fspath(path))
    if continued is not None:
        try:
            if read_checkpoint_bytes(source) == bytes(continued):
                return
        except CheckpointError:
            pass
    stem, suffix = os.path.splitext(source)
    aside = f"{stem}.unfinished{suffix}"
    number = 1
    while os.path.lexists(aside):
        number += 1
        aside = f"{stem}.unfinished-{number}{suffix}"
    try:
        copy_file_durably(source, aside)
    except OSError as exc:
        raise CheckpointError(
            f"{os.fspath(path)!r} holds an unfinished run (iteration {found[0]}, beta "
            f"{found[1]:.4g}) that this call would overwrite, and it could not be "
            f"kept as {aside!r}: {exc}. Nothing was written. Resume it "
            "(resume_from_file, resume_from=, auto_checkpoint(..., resume=True)), "
            "or move the file away first") from exc
    logger.warning(
        "%s holds an unfinished run (iteration %d, beta = %.4g) that this call does "
        "not continue: it is kept as %s before the file is written over. Resume it "
        "with Aspire.resume_from_file(%r, ...), or delete the copy",
        os.fspath(path), found[0], found[1], aside, aside)


_REBUILD_ADVICE = ("; build the Aspire with the same flow settings, or use "
                   "resume_from_file")


def _check_group_name(h5, path: str, own: str, method: str) -> str:
    """The name, from the file's root, that ``path`` below ``h5`` (an open
    group, or None for a file's root) takes; refused at the root, or at or
    inside a group of the checkpoint layout other than exactly ``own``:
    resuming reads those back."""
    name = _name_from_root(h5, path, method)
    top = name.split("/")[0]
    if name == "" or (top in _CHECKPOINT_GROUPS and name != own):
        raise ValidationError(
            f"{method} would write /{name.strip('.')}, "
            + (f"inside /{top}, " if top in _CHECKPOINT_GROUPS and name != top else "")
            + "a group of the checkpoint layout that resuming reads back; use "
            f"path={own!r} or a name of your own")
    return name


def _guard_group(h5, path: str, own: str, method: str, unchanged) -> None:
    """Before ``method`` replaces ``path`` below the open group ``h5``: refuse
    a name of another layout group (:func:`_check_group_name`), and refuse to
    change what an unfinished SMC run in the same file resumes with (its
    ``/own``: flow or settings), unless the group would come out the same
    (``unchanged(group)``)."""
    name = _check_group_name(h5, path, own, method)
    f = getattr(h5, "file", None)
    if f is None or name != own:
        return
    group = f.get(name)
    if _STATE_DSET not in f or group is None or unchanged(group):
        return
    found = _unfinished_state(np.asarray(f[_STATE_DSET][()]).tobytes())
    if found is not None:
        it, beta = found
        raise ValidationError(
            f"{f.filename!r} holds an unfinished SMC run (iteration {it}, beta "
            f"{beta:.4g}) that resumes with its /{own}; {method} would replace it "
            "and leave the run unresumable. Resume the run first or write to another "
            "file" + (", or pass the file's path to save_flow (the run is then kept "
                      "aside as <name>.unfinished.h5)" if own == "flow" else ""))


def _state_x(resume: Mapping) -> np.ndarray | None:
    """The particles of a checkpoint's state; None without a readable state
    (refused, if at all, where it is restored)."""
    try:
        saved = (state_dict_from_bytes(resume["state"])
                 if resume.get("state") is not None else resume.get("state_dict"))
        return np.asarray(saved["x"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def _stored_float64(resume: Mapping) -> bool | None:
    """Whether a checkpoint's state holds float64 particles; None without a
    readable state."""
    x = _state_x(resume)
    return None if x is None else x.dtype == np.float64


def _check_x64_resumable(resume: Mapping, state64: bool | None = None) -> None:
    """Refuse a float64 state in a process without float64."""
    if state64 is None:
        state64 = _stored_float64(resume)
    if state64 and not jax.config.jax_enable_x64:
        raise CheckpointError(
            "the checkpoint's run computed in float64 (jax_enable_x64=True), and "
            "its state cannot go on in this 32-bit process: set "
            "jax.config.update('jax_enable_x64', True) before any JAX work, "
            "as in that run")


def _check_open_for_writing(h5, method: str) -> None:
    f = getattr(h5, "file", None)
    if f is not None and f.mode == "r":
        raise ValidationError(
            f"{f.filename!r} is open read-only; open it with mode 'a' (or pass its "
            f"path) for {method}")


def _save_group_to_file(file, path, own, method, unchanged, write,
                        set_aside: bool = False) -> None:
    """``method`` given a file's path: write the group ``path`` with
    ``write(group)``, atomically, keeping the file's other groups; refused as
    on an open file (:func:`_guard_group`), except that with ``set_aside`` an
    unfinished run whose ``/own`` would change is copied aside first."""
    _check_h5_suffix(file)
    name = _check_group_name(None, path, own, method)
    _check_writable(file, f"{method}'s file")
    if os.path.isfile(os.fspath(file)) and name == own:
        with AspireFile(file, "r") as f:
            group = f.get(name)
            keep = isinstance(group, h5py.Group) and unchanged(group)
            if not keep and not set_aside:
                _guard_group(f, name, own, method, unchanged)
        if not keep and set_aside:
            _set_aside_unfinished(file)
    write_checkpoint_file(file, state_bytes=None, groups={name: write})


# Entries of config_dict that resuming does not read from /aspire_config.
# (The functions' names are a record: the functions are given anew.)
_CONFIG_NOT_RESUMED = ("sampler_type", "sampler_config", "aspire_jax_version",
                       "log_likelihood", "log_prior")


def _same_json(group, content, ignore=()) -> bool:
    """Whether the JSON group ``group`` reads back as ``content`` would once
    written (through a file in memory, so both sides are encoded alike),
    the entries ``ignore`` aside."""
    def kept(d):
        return {k: v for k, v in d.items() if k not in ignore}

    try:
        with h5py.File(f"mem-{secrets.token_hex(4)}", "w", driver="core",
                       backing_store=False) as mem:
            write_json_group(mem, "g", content)
            return kept(read_json_group(group, ".")) == kept(read_json_group(mem, "g"))
    except (CheckpointError, OSError, TypeError, ValueError):
        return False


def _check_writable(path, what: str = "checkpoint_path"):
    """Fail before sampling if the checkpoint file could never be written."""
    if os.path.islink(os.fspath(path)):
        # The file a link names is where the writes go.
        target = os.path.realpath(os.fspath(path))
        if os.path.splitext(target)[1].lower() not in (".h5", ".hdf5"):
            raise ValidationError(
                f"{what} {os.fspath(path)!r} is a link to {target!r}, which "
                "does not end in .h5 or .hdf5; aspire_jax writes only such files. "
                "Link to a name with that suffix")
        path = target
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise ValidationError(f"the folder of {what} {os.fspath(path)!r} does "
                              "not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValidationError(f"cannot write to the folder of {what} "
                              f"{os.fspath(path)!r}; choose a writable location")
    if os.path.isdir(os.fspath(path)):
        raise ValidationError(f"{what} {os.fspath(path)!r} is a directory")
    if not os.path.exists(os.fspath(path)):
        return
    mode = os.stat(os.fspath(path)).st_mode
    if not os.access(os.fspath(path), os.W_OK) or not mode & 0o222:
        raise ValidationError(
            f"{what} {os.fspath(path)!r} is read-only (mode "
            f"{stat.S_IMODE(mode):#o}); aspire_jax does not replace a file you may "
            "not write. Make it writable or choose another path")
    if not h5py.is_hdf5(os.fspath(path)):
        raise ValidationError(
            f"{what} {os.fspath(path)!r} exists and is not an HDF5 file; "
            "aspire_jax does not overwrite it. Remove it or choose another path")
    try:
        with h5py.File(os.fspath(path), "r") as f:
            version_error = None
            try:
                check_file_version(f, os.fspath(path))
            except CheckpointError as exc:
                version_error = exc
    except OSError as exc:
        # A file held open for writing elsewhere cannot be read now: the
        # writes of the run check it again, and retry with a warning while
        # it is held. One that cannot be read for any other reason never will.
        message = str(exc).lower()
        if not ("unable to lock" in message
                or "resource temporarily unavailable" in message):
            raise ValidationError(
                f"{what} {os.fspath(path)!r} exists and cannot be read as an "
                f"HDF5 file (truncated or damaged?): {exc}. aspire_jax does not "
                "overwrite it; move it away or choose another path") from exc
    else:
        if version_error is not None:
            raise ValidationError(
                f"{what}: {version_error}. aspire_jax does not overwrite "
                "it; choose another path") from version_error
    # A file held open for writing elsewhere cannot be read now (see above).
    if not is_aspire_file(path, unopenable=True):
        raise ValidationError(
            f"{what} {os.fspath(path)!r} is an HDF5 file that aspire_jax did "
            "not write (its root lacks the aspire_jax_version and "
            "file_format_version attributes); aspire_jax does not overwrite it. "
            "Choose another path")


def _same_file(a, b) -> bool:
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def _check_h5_suffix(path):
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(f"checkpoint path must be a str or path; got "
                              f"{type(path).__name__}")
    if os.path.splitext(os.fspath(path))[1].lower() not in (".h5", ".hdf5"):
        raise ValidationError(f"checkpoint files must be HDF5 with a .h5 or .hdf5 "
                              f"suffix; got {os.fspath(path)!r}")


def _same_seed(key, seed: int) -> bool:
    """Whether ``key`` (an int seed or a key) is the one made from ``seed``."""
    typed, given = _as_key(key)
    if given is not None:
        return given == seed
    return bool(np.array_equal(np.asarray(jax.random.key_data(typed)),
                               np.asarray(jax.random.key_data(jax.random.key(seed)))))


# The samplers count evaluations in int32.
_MAX_EVALUATIONS = 2**31 - 1


def _refuse_point_mass(x: np.ndarray, names, rounded: bool = False) -> None:
    """Refuse training samples with a constant column: exactly constant, or
    (``rounded``) reduced to one value by the cast to the compute dtype."""
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if not constant.size:
        return
    c = int(constant[0])
    if rounded:
        what = (f"varies by less than {np.dtype(x.dtype).name} resolves at its "
                f"magnitude (every row rounds to {x[0, c]!r})")
        advice = ("Enable float64 first (jax.config.update('jax_enable_x64', True)) "
                  "or subtract a reference value (e.g. a trigger time) from that "
                  "column")
    else:
        what = (f"takes the single value {x[0, c]} in every row (and "
                f"{constant.size} parameter(s) in all are constant)")
        advice = ("Remove fixed parameters from the analysis or pass the earlier "
                  "posterior's actual draws")
    raise ValidationError(f"training samples: parameter {names[c]!r} {what}; a flow "
                          f"cannot be fitted to a point mass. {advice}")


def _check_count(n, name):
    if not is_int(n) or n < 2:
        raise ValidationError(f"{name} must be an integer >= 2; got {n!r}")
    if n > _MAX_EVALUATIONS:
        raise ValidationError(
            f"{name} must be at most 2**31 - 1 (the samplers count likelihood "
            f"evaluations in int32); got {n}")


def _reject_options(options, allowed, sampler):
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValidationError(
            f"unknown option(s) {unknown} for sampler={sampler!r}; allowed: "
            f"{sorted(allowed) if allowed else 'none'}")


def _translate_sampler_kwargs(sampler_kwargs, options, sampler: str = "smc"):
    """The original aspire's ``sampler_kwargs`` as options of ``sampler``:
    ``n_steps`` is the MCMC length of each SMC iteration (``n_mcmc_steps``),
    or the recorded sweeps of plain MCMC (``n_steps``); ``step_fn`` names
    the kernel; ``target_acceptance_rate`` sets that kernel's target."""
    options = dict(options)
    if not sampler_kwargs:
        return options
    sk = dict(sampler_kwargs)
    steps = "n_steps" if sampler == "mcmc" else "n_mcmc_steps"
    mapping = {"n_steps": steps, "step_fn": "kernel",
               "target_acceptance_rate": "kernel_settings"}
    both = sorted(f"sampler_kwargs[{old!r}] and {new}=" for old, new in mapping.items()
                  if old in sk and new in options)
    if both:
        raise ValidationError(f"{', '.join(both)} set the same thing; pass one")
    for old in ("n_steps", "step_fn"):
        if old in sk:
            options[mapping[old]] = sk.pop(old)
    if "target_acceptance_rate" in sk:
        kernel = options.get("kernel", "rwmh" if sampler == "mcmc" else "tpcn")
        rate = sk.pop("target_acceptance_rate")
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise ValidationError("sampler_kwargs['target_acceptance_rate'] must be "
                                  f"a number in (0, 1); got {rate!r}")
        options["kernel_settings"] = dataclasses.replace(
            kernel_settings(kernel), target_acceptance=float(rate))
    sk.pop("verbose", None)
    if sk:
        raise ValidationError(f"unknown sampler_kwargs {sorted(sk)}; known: "
                              "n_steps, step_fn, target_acceptance_rate")
    return options


def _json_float(v):
    v = float(v)
    return v if np.isfinite(v) else ("inf" if v > 0 else "-inf")


def _jsonable(options):
    out = {}
    for k, v in options.items():
        if dataclasses.is_dataclass(v):
            out[k] = {"__settings__": type(v).__name__, **dataclasses.asdict(v)}
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return out


def _from_jsonable(options: Mapping) -> dict:
    """Inverse of :func:`_jsonable`: stored kernel settings become settings
    objects again."""
    from .kernels import MALASettings, PCNSettings, RWMHSettings

    classes = {c.__name__: c for c in (PCNSettings, RWMHSettings, MALASettings)}
    out = {}
    for k, v in options.items():
        if isinstance(v, Mapping) and "__settings__" in v:
            fields = dict(v)
            name = fields.pop("__settings__")
            if name not in classes:
                raise CheckpointError(
                    f"the checkpoint's {k} names unknown kernel settings {name!r}")
            try:
                v = classes[name](**fields)
            except (TypeError, ValidationError) as err:
                raise CheckpointError(
                    f"the checkpoint's {k} cannot be restored: {err}") from err
        out[k] = v
    return out


# Below an effective sample size of 2, one sample holds all the weight.
_MIN_TRAINING_ESS = 2
# fit warns below this many training samples (their effective number, weighted).
_FEW_TRAINING_ROWS = 100
# sample_posterior warns below this many particles.
_FEW_PARTICLES = 100


def _log_weights_of(samples, parameters) -> np.ndarray | None:
    """The log-weights carried by training samples: ``Samples.log_weights``,
    or a ``log_weights`` entry of a dict or column of a DataFrame that is not
    a parameter."""
    if isinstance(samples, Samples):
        return None if samples.log_weights is None else np.asarray(samples.log_weights)
    if "log_weights" in parameters:
        return None
    keys = (list(samples) if isinstance(samples, Mapping)
            else [str(c) for c in getattr(samples, "columns", [])])
    near = [k for k in keys if k in ("weights", "log_weight", "logw", "log_w", "weight")
            and k not in parameters]
    if near and "log_weights" not in keys:
        logger.warning("training samples: column %r is not used as weights; name the "
                       "log-weights 'log_weights' to fit the weighted distribution",
                       near[0])
    if "log_weights" in keys:
        return np.asarray(samples["log_weights"])
    return None


def _training_weights(samples, x: np.ndarray, parameters
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of ``x`` with non-zero weight and their weights (mean one),
    from the log-weights of ``samples``; ``x`` and ``None`` for unweighted
    input or equal weights."""
    lw = _log_weights_of(samples, parameters)
    if lw is None:
        return x, None
    if lw.shape != (x.shape[0],) or lw.dtype.kind not in "fiu":
        raise ValidationError(
            f"training samples: log_weights must be real numbers of shape "
            f"({x.shape[0]},); got dtype {lw.dtype} and shape {lw.shape}")
    lw = np.asarray(lw, np.float64)
    if np.any(np.isnan(lw) | (lw == np.inf)) or not np.any(np.isfinite(lw)):
        raise ValidationError(
            "training samples: log_weights must be finite or -inf, with at least one "
            "finite; they are NaN, +inf or all -inf")
    finite = np.isfinite(lw)
    if finite.all() and np.ptp(lw) == 0:
        return x, None
    w = np.exp(lw[finite] - np.max(lw[finite]))
    ess = float(w.sum() ** 2 / np.sum(w**2))
    if ess < _MIN_TRAINING_ESS:
        raise ValidationError(
            f"training samples are weighted with an effective sample size of "
            f"{ess:.2f} ({lw.size} rows): one sample holds nearly all the weight, and "
            "a flow cannot be fitted to a point mass. Pass more samples or samples "
            "with more even weights")
    logger.info("training samples are weighted: effective sample size %.0f of %d "
                "rows (%d of weight 0 dropped)", ess, lw.size, lw.size - w.size)
    return x[finite], w / np.mean(w)


def _check_history_path(history, state) -> None:
    """Refuse a history that covers the state's iterations but whose beta steps
    or evaluation counts are not those of that state."""
    data = history.data
    if len(history) != int(state.iteration) or not len(history):
        return
    problem = None
    beta = np.asarray(data.get("beta", []), np.float64)
    delta = np.asarray(data.get("delta_beta", []), np.float64)
    if beta.size and np.any(np.diff(beta) < 0):
        problem = "its beta column decreases"
    elif beta.size and delta.size == beta.size:
        steps = np.diff(np.concatenate([[0.0], beta]))
        if not np.allclose(steps, delta, rtol=1e-4, atol=1e-6):
            problem = "its beta column is not the sum of its delta_beta steps"
    if problem is None and "n_evaluations" in data:
        n = int(state.x.shape[0])
        # The initial draws: one evaluation a particle, padded to whole
        # batches or devices, fewer than twice the particles.
        initial = int(state.n_evaluations) - int(np.sum(data["n_evaluations"]))
        if not n <= initial < 2 * n:
            problem = (f"its n_evaluations column sums to "
                       f"{int(np.sum(data['n_evaluations']))}, which leaves {initial} "
                       f"of the state's {int(state.n_evaluations)} evaluations for the "
                       f"initial draws of {n} particles")
    if problem is not None:
        raise CheckpointError(f"the checkpoint's history is damaged: {problem}")


def _check_history_evidence(history, state) -> None:
    """Refuse a history whose log_evidence column is not the running sum of
    its increments, or does not end at the state's log Z (when it covers
    every iteration of the state)."""
    data = history.data
    if "log_evidence" not in data or not len(data["log_evidence"]):
        return
    log_z = np.asarray(data["log_evidence"], np.float64)
    problem = None
    if not np.isfinite(log_z).all():
        problem = "holds values that are not finite"
    elif "log_evidence_increment" in data and (
            log_z.size == int(state.iteration)):
        increments = np.asarray(data["log_evidence_increment"], np.float64)
        running = np.cumsum(increments)
        # The run sums in its own precision: round-off grows with the
        # magnitudes summed.
        tolerance = 1e-3 * np.maximum(1.0, np.cumsum(np.abs(increments)))
        if running.shape == log_z.shape and not np.all(
                np.abs(running - log_z) <= tolerance):
            problem = "is not the running sum of its increments"
    if problem is None and log_z.size == int(state.iteration):
        state_log_z = float(state.log_evidence)
        if not abs(log_z[-1] - state_log_z) <= 1e-4 * max(1.0, abs(state_log_z)):
            problem = (f"ends at {log_z[-1]:.6g} where the state's log Z is "
                       f"{state_log_z:.6g}")
    if problem is not None:
        raise CheckpointError(
            f"the checkpoint's history is damaged: its log_evidence column {problem}")


def _check_restored(state) -> None:
    """Refuse a restored state that no SMC run can reach (a hand-edited or
    damaged dict): beta outside [0, 1], negative counters, a log-evidence of
    NaN or +inf, an evidence variance that is negative or not finite,
    log-weights with NaN or +inf or all -inf, cached densities with NaN or
    +inf, weighted particles that are not finite, an unknown status, or
    kernel parameters that are not finite."""
    beta = float(state.beta)
    problems = []
    if not 0.0 <= beta <= 1.0:
        problems.append(f"beta = {beta} (must be in [0, 1])")
    for name in ("iteration", "n_evaluations", "n_invalid"):
        v = int(getattr(state, name))
        if v < 0:
            problems.append(f"{name} = {v} (must be >= 0)")
    if int(state.iteration) == 0 and beta > 0.0:
        problems.append(f"beta = {beta} at iteration 0")
    log_z, var = float(state.log_evidence), float(state.log_evidence_var)
    if math.isnan(log_z) or log_z == math.inf:
        problems.append(f"log_evidence = {log_z}")
    if not var >= 0.0 or not math.isfinite(var):
        problems.append(f"log_evidence_var = {var}")
    log_w = np.asarray(state.log_weights, np.float64)
    if np.isnan(log_w).any() or (log_w == np.inf).any():
        problems.append("log_weights holding NaN or +inf")
    elif not np.isfinite(log_w).any():
        problems.append("log_weights all -inf (no particle has weight)")
    else:
        # Every step leaves them normalised: log sum exp = 0 up to round-off.
        top = np.max(log_w)
        total = top + math.log(np.sum(np.exp(log_w - top)))
        if abs(total) > 1e-3:
            problems.append(f"log_weights that do not sum to one (log sum exp = "
                            f"{total:.4g})")
    # The cached densities are sanitised as they are computed (NaN and +inf
    # become -inf), and a particle with weight was drawn or accepted at a
    # finite point.
    for name in ("log_prior", "log_likelihood", "log_q"):
        v = np.asarray(getattr(state, name), np.float64)
        if np.isnan(v).any() or (v == np.inf).any():
            problems.append(f"{name} holding NaN or +inf")
    x = np.asarray(state.x, np.float64)
    weighted = np.isfinite(log_w) if log_w.shape == x.shape[:1] else slice(None)
    if not np.isfinite(x[weighted]).all():
        problems.append("particles with weight at points that are not finite")
    if int(state.status) not in (Status.RUNNING, Status.CONVERGED,
                                 Status.ITERATION_LIMIT, Status.STALLED):
        problems.append(f"status = {int(state.status)} (no such status)")
    leaves = jax.tree_util.tree_leaves(state.kernel_params)
    if any(np.issubdtype(np.asarray(v).dtype, np.floating)
           and not np.isfinite(np.asarray(v)).all() for v in leaves):
        problems.append("kernel parameters that are not finite")
    if problems:
        raise CheckpointError(
            "the checkpoint's state is not one an SMC run can reach: "
            + "; ".join(problems) + ". It was edited or damaged; resume from an "
            "unmodified checkpoint")


def _stored_particle_count(resume) -> int | None:
    """The particle count of a checkpoint's state (bytes or state dict); None
    if it cannot be read, which restoring the state then reports."""
    try:
        saved = (state_dict_from_bytes(resume["state"])
                 if resume.get("state") is not None else resume.get("state_dict"))
        shape = np.shape(saved["x"])
    except Exception:  # noqa: BLE001 - a probe; restoring reports the cause
        return None
    return int(shape[0]) if len(shape) == 2 and shape[0] > 0 else None


def _population(state) -> dict:
    """The particles of ``state`` on the host, for a :class:`SampleHistory`."""
    return jax.device_get(dict(
        iteration=state.iteration, beta=state.beta, x=state.x,
        log_weights=state.log_weights, log_likelihood=state.log_likelihood,
        log_prior=state.log_prior))


def _upgrade_state_dict(saved):
    """A saved SMC state from before ``n_invalid`` was counted, with the count
    started at zero; any other state as it is."""
    if isinstance(saved, Mapping) and "x" in saved and "status" in saved and (
            "n_invalid" not in saved):
        return {**saved, "n_invalid": np.zeros((), np.int32)}
    return saved


def _single_info(beta, eff, ess, log_z, log_z_var, n_evals,
                 n_invalid=0) -> SMCInfo:
    f = np.float32
    return SMCInfo(
        beta=f(beta), delta_beta=f(beta), efficiency=f(eff), target_efficiency=f(0),
        ess=f(ess), log_evidence_increment=f(log_z),
        log_evidence_increment_var=f(log_z_var), log_evidence=f(log_z),
        log_evidence_var=f(log_z_var), resampled=np.bool_(False),
        acceptance=f(0), step_size=f(0), n_mcmc_steps=np.int32(0),
        decorrelation=f(0), n_evaluations=np.int32(n_evals),
        beta_search_failed=np.bool_(False), n_invalid=np.int32(n_invalid))


def _unpad(padded, n):
    padded = jax.device_get(padded)
    for i in range(n):
        yield SMCInfo(*[np.asarray(v)[i] for v in padded])


def _make_bar(progress, total, desc):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("progress bars need tqdm: pip install 'aspire-jax[progress]'")
        return None
    return tqdm(total=total, desc=desc, leave=False)
