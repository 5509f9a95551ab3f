"""Per-iteration history of a sampler run, as plain host arrays."""

import dataclasses
from typing import Iterable, Mapping

import jax
import numpy as np

from .smc.state import SMCInfo

__all__ = ["History"]

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
    """

    sampler: str
    data: dict

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
        return cls(sampler, {k: np.asarray(v) for k, v in d.items()})

    def to_dict(self) -> dict:
        out = {k: np.asarray(v) for k, v in self.data.items()}
        out["sampler"] = self.sampler
        return out

    def extend(self, other: "History") -> "History":
        """This history followed by ``other`` (e.g. after a resume)."""
        if len(self) == 0:
            return History(other.sampler, dict(other.data))
        keys = self.data.keys() & other.data.keys()
        return History(self.sampler, {k: np.concatenate([self.data[k], other.data[k]])
                                      for k in keys})

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def __getattr__(self, name):
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(name)

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
