"""Subprocess for the kill tests: run (or resume) an SMC run with checkpoints.

    python _checkpoint_worker.py PATH fresh|resume
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import problems  # noqa: E402
from aspire_jax import Aspire  # noqa: E402

RUN = dict(key=11, target_efficiency=0.9, n_mcmc_steps=4)
N = 600


def main(path, mode):
    if mode == "fresh":
        aspire = problems.make_aspire()
        aspire.fit(problems.earlier_samples(), checkpoint_path=path,
                   **problems.FIT_SETTINGS)
        aspire.sample_posterior(N, checkpoint_path=path, **RUN)
    else:
        aspire = Aspire.resume_from_file(path, log_likelihood=problems.log_likelihood,
                                         log_prior=problems.log_prior)
        aspire.sample_posterior(checkpoint_path=path)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
