"""Where the names that users of the original aspire reach for live here.

Only consulted when an attribute lookup has already failed, so that the
``AttributeError`` points to the aspire_jax way instead of leaving the user
to search for it.
"""

_SAMPLES = {
    "evidence": "log_evidence (exp(log Z) under- or overflows for most likelihoods)",
    "evidence_error": "log_evidence_error (the error of log Z)",
    "log_w": "log_weights (unnormalised) or log_weights_normalised",
    "scaled_weights": "weights (normalised to sum to 1)",
    "compute_weights": "log_weights, set by the sampler (weights normalises them)",
    "rejection_sample": "resample(key, n), which draws n equally weighted points",
    "to_namespace": "to_numpy() (Samples holds JAX arrays)",
    "from_samples": "Samples.concatenate([...]) or samples.replace(...)",
    "log_p_t": "the SMC history's sample_history (store_sample_history=True)",
}

_HISTORY = {
    "log_norm_ratio": "log_evidence_increment (per iteration) or log_evidence "
                      "(running total)",
    "log_norm_ratio_var": "log_evidence_increment_var or log_evidence_var",
    "ess_target": "target_efficiency (a fraction of the particle count)",
    "eff_target": "target_efficiency",
    "mcmc_acceptance": "acceptance",
    "mcmc_autocorr": "decorrelation (the correlation left after the moves)",
    "plot_beta": "plot() (beta, ESS, acceptance and log-evidence panels)",
    "plot_ess": "plot()",
    "plot_log_norm_ratio": "plot()",
}

_TABLES = {"Samples": _SAMPLES, "History": _HISTORY}


def missing(owner: str, name: str) -> AttributeError:
    """The ``AttributeError`` for ``owner.name``, with a pointer when ``name``
    is one of the original aspire's."""
    hint = _TABLES.get(owner, {}).get(name)
    if hint is None:
        return AttributeError(f"{owner!r} object has no attribute {name!r}")
    return AttributeError(f"{owner!r} object has no attribute {name!r}; "
                          f"aspire_jax has {hint}")
