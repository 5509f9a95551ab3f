"""The shipped real cases against their reference answers, over several keys."""

import math

import numpy as np
import pytest

from aspire_jax import Aspire, Samples
from aspire_jax.cases import load_case

N_KEYS = 6


@pytest.mark.slow
def test_eight_schools_prior_change_evidence_is_unbiased():
    # Prior-sensitivity reuse: the earlier posterior (half-Cauchy scale) is a
    # funnel at small tau, the new one (log tau ~ N(5, 1)) lies at larger tau,
    # in the tails of a flow trained on the earlier samples. The reference
    # log Z comes from quadrature (error < 1e-9). Moving in the flow's latent
    # space gave log Z low by 0.10-0.15 on every key (five reported errors);
    # preconditioning="auto" must now pick a space that is unbiased.
    #
    # The tolerance is the estimator's own spread, measured over the keys:
    # the mean of N_KEYS runs must lie within 4 standard errors of the
    # reference. The reported error bar is not used here: on this case it
    # is about half the spread between keys (see the CHANGELOG).
    case = load_case("eight_schools")
    ref = case.reference()
    aspire = Aspire(log_likelihood=case.log_likelihood, log_prior=case.log_prior,
                    dims=case.dims, parameters=list(case.parameter_names),
                    n_layers=3, hidden_sizes=(32, 32))
    earlier = Samples.from_array(case.previous_samples(5000, seed=0),
                                 parameters=list(case.parameter_names))
    aspire.fit(earlier, key=0, n_epochs=100, progress=False)
    assert aspire.flow_history.gain_over_gaussian() / case.dims > 0.1
    assert aspire.auto_preconditioning() == "standard"
    log_z = []
    for k in range(1, N_KEYS + 1):
        post = aspire.sample_posterior(4000, key=k, progress=False)
        log_z.append(float(post.log_evidence))
    log_z = np.asarray(log_z)
    se = log_z.std(ddof=1) / math.sqrt(N_KEYS)
    assert abs(log_z.mean() - ref["log_evidence"]) < 4 * se + 0.01, (log_z, se)
