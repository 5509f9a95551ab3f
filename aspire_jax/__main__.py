"""``python -m aspire_jax``: the ``aspire-jax`` command line."""

import sys

from aspire_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
