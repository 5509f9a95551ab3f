"""Per-iteration history of a sampler run, as plain host arrays."""

import dataclasses
from typing import Iterable, Mapping, Sequence

import jax
import numpy as np

from ._names import missing
from .errors import ValidationError
from .smc.state import SMCInfo

__all__ = ["History", "SampleHistory"]

_FIELDS = SMCInfo._fields


@dataclasses.dataclass
class History:
    """Diagnostics of each iteration, one numpy array per :class:`SMCInfo` field.

    Attributes
    ----------
    sampler
        Name of the sampler that produced it (``"smc"``, ``"importance"``, ...).
    data
        Mapping from field name to an array of length ``n_iterations``.
    sample_history
        The particles themselves, iteration by iteration, when the run was
        asked to keep them (``store_sample_history=True``); else ``None``.
        They stay in memory: :meth:`to_dict` and checkpoints leave them out.
    """

    sampler: str
    data: dict
    sample_history: "SampleHistory | None" = None

    @classmethod
    def from_infos(cls, sampler: str, infos: Iterable[SMCInfo]) -> "History":
        """Stack a list of per-step infos (host or device arrays)."""
        infos = [jax.device_get(i) for i in infos]
        if not infos:
            return cls.empty(sampler)
        data = {f: np.stack([np.asarray(getattr(i, f)) for i in infos]) for f in _FIELDS}
        return cls(sampler, data)

    @classmethod
    def from_padded(cls, sampler: str, padded: SMCInfo, n_steps: int) -> "History":
        """Trim the padded buffers of the device driver to ``n_steps`` rows."""
        padded = jax.device_get(padded)
        return cls(sampler, {f: np.asarray(getattr(padded, f))[:n_steps]
                             for f in _FIELDS})

    @classmethod
    def empty(cls, sampler: str) -> "History":
        return cls(sampler, {f: np.zeros((0,)) for f in _FIELDS})

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        d = dict(d)
        sampler = str(d.pop("sampler", "smc"))
        data = {k: np.asarray(v) for k, v in d.items()}
        lengths = set()
        for k, v in data.items():
            if v.ndim != 1 or v.dtype.kind not in "biuf":
                raise ValidationError(
                    f"history field {k!r} must be a 1-D array of numbers, one per "
                    f"iteration; got dtype {v.dtype} and shape {v.shape}")
            lengths.add(len(v))
        if len(lengths) > 1:
            raise ValidationError(
                "history fields must all have one entry per iteration; got lengths "
                + ", ".join(f"{k}: {len(v)}" for k, v in data.items()))
        if data:
            # A history saved before a field existed reads as zeros there.
            n = len(next(iter(data.values())))
            for k in _FIELDS:
                data.setdefault(k, np.zeros(n, np.int32))
        return cls(sampler, data)

    def to_dict(self) -> dict:
        out = {k: np.asarray(v) for k, v in self.data.items()}
        out["sampler"] = self.sampler
        return out

    def extend(self, other: "History") -> "History":
        """This history followed by ``other`` (e.g. after a resume)."""
        particles = self.sample_history
        if particles is None:
            particles = other.sample_history
        elif other.sample_history is not None:
            particles = particles.extend(other.sample_history)
        if len(self) == 0:
            return History(other.sampler, dict(other.data), particles)
        keys = self.data.keys() & other.data.keys()
        return History(self.sampler, {k: np.concatenate([self.data[k], other.data[k]])
                                      for k in keys}, particles)

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def __getattr__(self, name):
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise missing(type(self).__name__, name)

    @property
    def n_likelihood_evaluations(self) -> int:
        """Likelihood evaluations spent in the recorded iterations.

        The ``n_particles`` evaluations of the initial flow draws are not an
        iteration and are not included; ``SMCState.n_evaluations`` (and
        ``Aspire.n_likelihood_evaluations``) count them too.
        """
        return int(np.sum(self.data.get("n_evaluations", 0)))

    def plot(self, fig=None):
        """Multi-panel figure of beta, ESS, acceptance and log-evidence steps."""
        from .plotting import plot_history

        return plot_history(self, fig=fig)


_PARTICLE_FIELDS = ("x", "log_weights", "log_likelihood", "log_prior")


@dataclasses.dataclass(frozen=True)
class SampleHistory:
    """The SMC particles at each recorded iteration, as host arrays.

    Entry ``i`` is the population after iteration ``iteration[i]`` (at inverse
    temperature ``beta[i]``), with its normalised log-weights. A run records
    the population it starts from (the flow's draws at ``beta = 0``, or the
    resumed state) and the one after each iteration it takes.

    Attributes
    ----------
    iteration, beta
        Shape ``(k,)``.
    x
        Shape ``(k, n, d)``.
    log_weights, log_likelihood, log_prior
        Shape ``(k, n)``.
    parameters
        The ``d`` parameter names.

    Examples
    --------
    >>> import numpy as np
    >>> h = SampleHistory.from_populations(
    ...     [dict(iteration=0, beta=0.0, x=np.zeros((3, 1)),
    ...           log_weights=np.full(3, -np.log(3)), log_likelihood=np.zeros(3),
    ...           log_prior=np.zeros(3))], parameters=["a"])
    >>> len(h), h.x.shape
    (1, (1, 3, 1))
    """

    iteration: np.ndarray
    beta: np.ndarray
    x: np.ndarray
    log_weights: np.ndarray
    log_likelihood: np.ndarray
    log_prior: np.ndarray
    parameters: tuple

    @classmethod
    def from_populations(cls, populations: Sequence[Mapping],
                         parameters: Sequence[str]) -> "SampleHistory":
        """Stack per-iteration dicts with ``iteration``, ``beta`` and the
        particle fields (``x`` of shape ``(n, d)``, the rest ``(n,)``)."""
        if not populations:
            raise ValidationError("a sample history needs at least one population")
        pops = [jax.device_get(dict(p)) for p in populations]
        stacked = {f: np.stack([np.asarray(p[f]) for p in pops])
                   for f in _PARTICLE_FIELDS}
        return cls(iteration=np.asarray([int(p["iteration"]) for p in pops]),
                   beta=np.asarray([float(p["beta"]) for p in pops]),
                   parameters=tuple(parameters), **stacked)

    def __len__(self) -> int:
        return int(self.iteration.shape[0])

    def extend(self, other: "SampleHistory") -> "SampleHistory":
        """This history followed by ``other`` (same particle count and names)."""
        if other.parameters != self.parameters or other.x.shape[1:] != self.x.shape[1:]:
            raise ValidationError(
                f"cannot join sample histories of shapes {self.x.shape[1:]} and "
                f"{other.x.shape[1:]} (parameters {self.parameters} and "
                f"{other.parameters})")
        fields = {f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                  for f in dataclasses.fields(self) if f.name != "parameters"}
        return SampleHistory(parameters=self.parameters, **fields)

    def samples(self, i: int):
        """Entry ``i`` as weighted :class:`~aspire_jax.Samples`."""
        from .samples import Samples

        return Samples.from_array(self.x[i], parameters=self.parameters,
                                  log_weights=self.log_weights[i],
                                  log_likelihood=self.log_likelihood[i],
                                  log_prior=self.log_prior[i])

    def quantiles(self, q) -> np.ndarray:
        """Weighted quantiles of every entry, shape ``(k, len(q), d)``."""
        q = np.atleast_1d(np.asarray(q, float))
        if np.any((q < 0) | (q > 1)) or q.ndim != 1:
            raise ValidationError(f"quantiles must be in [0, 1]; got {q.tolist()}")
        return np.stack([np.asarray(self.samples(i).quantile(q)).reshape(len(q), -1)
                         for i in range(len(self))])

    def plot(self, parameters=None, x_axis: str = "iteration", **kwargs):
        """Quantile bands and particles per entry; see
        :func:`aspire_jax.plotting.plot_sample_history`."""
        from .plotting import plot_sample_history

        return plot_sample_history(self, parameters=parameters, x_axis=x_axis,
                                   **kwargs)
