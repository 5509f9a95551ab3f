"""Real problems with reference answers, shipped with the package.

Each case is a module with the same attributes:

``NAME``, ``dims``, ``parameter_names``, ``prior_bounds`` ``(d, 2)``,
``periodic``, batched JAX ``log_prior`` / ``log_likelihood`` of the NEW
analysis (both normalised, so the evidence is the marginal likelihood),
``previous_samples(n, seed)`` — exact draws of the EARLIER posterior, the
samples a user would bring — and ``reference()`` with the exact moments and
log-evidence.

Cases: :mod:`~aspire_jax.cases.diabetes_linreg` (12-d Bayesian linear
regression, more data arrived; analytic answers) and
:mod:`~aspire_jax.cases.eight_schools` (10-d hierarchical model, prior change;
answers by fine quadrature).
"""

import importlib

import numpy as np

__all__ = ["CASES", "load_case", "load_data"]

CASES = ("diabetes_linreg", "eight_schools")


def load_data(name: str) -> dict:
    """Arrays of ``cases/data/<name>`` as a dict (no pickles allowed)."""
    from importlib import resources

    with resources.files(__name__).joinpath("data", name).open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def load_case(name: str):
    """Import the case module called ``name``."""
    if name not in CASES:
        from ..errors import ValidationError

        raise ValidationError(f"unknown case {name!r}; choose one of {list(CASES)}")
    return importlib.import_module(f"{__name__}.{name}")
