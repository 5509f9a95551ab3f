"""aspire_jax: reuse earlier posterior samples to speed up new Bayesian analyses.

A normalizing flow is fitted to the samples of an earlier analysis and
adaptive-tempered Sequential Monte Carlo moves from the flow to the new
posterior. The engine is a pure, jitted step over an immutable state pytree.
"""

__version__ = "0.1.0"
