"""Create the environments the benchmark peers need.

``python benchmarks/setup_peers.py`` builds ``benchmarks/.venv-upstream``, a
separate virtual environment holding the upstream ``aspire-inference`` package
with both of its flow backends, torch (zuko) and JAX (flowjax, which pins an
older JAX than ours), and its pCN SMC sampler. It is kept apart
from the main environment because it brings its own numpy, torch and array-API
stack. torch is pinned to the CPU release this machine carries, so no GPU
build is downloaded.

blackjax, the other peer, goes into the main environment instead
(``pip install blackjax``, also available as the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import venv

__all__ = ["UPSTREAM_REQUIREMENTS", "VENV_DIR", "upstream_python", "main"]

VENV_DIR = pathlib.Path(__file__).resolve().parent / ".venv-upstream"

# torch is pinned to a CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
# The other pins are the versions the published results were measured with.
UPSTREAM_REQUIREMENTS = (
    "aspire-inference[torch,jax,minipcn,scipy]==0.1.0",
    "torch==2.13.0",
    "zuko==1.6.0",
    "jax==0.8.1",
    "jaxlib==0.8.1",
    "flowjax==19.1.2",
    "minipcn==0.3.0a1",
)


def upstream_python(venv_dir: pathlib.Path = VENV_DIR) -> pathlib.Path:
    """Return the path of the upstream environment's python executable."""
    return venv_dir / "bin" / "python"


def main(argv: list[str] | None = None) -> int:
    """Create (or refresh) the upstream environment; return an exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=pathlib.Path, default=VENV_DIR)
    parser.add_argument(
        "--recreate", action="store_true", help="delete and rebuild the venv"
    )
    args = parser.parse_args(argv)
    python = upstream_python(args.venv)
    if args.recreate or not python.exists():
        venv.EnvBuilder(with_pip=True, clear=args.recreate).create(args.venv)
    cmd = [str(python), "-m", "pip", "install", *UPSTREAM_REQUIREMENTS]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc:
        return rc
    check = ("import aspire, zuko, torch, flowjax, minipcn; "
             "print('aspire', aspire.__file__)")
    return subprocess.call([str(python), "-c", check])


if __name__ == "__main__":
    sys.exit(main())
