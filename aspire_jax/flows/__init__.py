"""Normalizing flows: coupling-layer flows over a fitted parameter transform.

:class:`Flow` holds only its static :class:`FlowConfig`; its parameters are an
explicit :class:`FlowParams` pytree and every density method is pure.
:func:`fit` trains a flow by maximum likelihood with optax; :func:`defensive`
widens a share of its draws into a heavier-tailed reference for sampling, and
:class:`GaussianReference` replaces the coupling layers by the Gaussian of the
training samples where the flow gains nothing over it.
"""

from aspire_jax.flows.defensive import DefensiveReference, defensive
from aspire_jax.flows.fit import FlowHistory, fit
from aspire_jax.flows.flow import Flow, FlowConfig, FlowParams
from aspire_jax.flows.gaussian import GaussianReference

__all__ = ["Flow", "FlowConfig", "FlowParams", "FlowHistory", "fit",
           "DefensiveReference", "defensive", "GaussianReference"]
