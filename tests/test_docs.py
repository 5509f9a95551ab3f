"""The documentation: every ```python block runs, and the site builds strictly.

The blocks of one page run in order in one namespace, in a temporary working
directory, as a reader pasting them into a session would run them. Pages that
fit flows to the real cases are marked slow. A page can mark itself with an
HTML comment: ``<!-- docs-test: slow -->`` (run only with ``-m slow``) or
``<!-- docs-test: skip <reason> -->``.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*docs-test:\s*(slow|skip)\b\s*(.*?)\s*-->")

# Pages that train flows on the real cases: minutes on a laptop CPU.
SLOW = {"user-guide.md", "gallery/diabetes.md", "gallery/eight_schools.md"}
# Optional packages a page imports; the page is skipped without them.
NEEDS = {
    "formats.md": ("pandas", "arviz"),
    "user-guide.md": ("pandas",),
    "numpyro.md": ("numpyro",),
    "gallery/eight_schools.md": ("numpyro", "arviz"),
}


def _pages():
    pages = sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("gallery/*.md"))
    return [p.relative_to(DOCS).as_posix() for p in pages]


def _blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


def _params():
    out = []
    for page in _pages():
        if not _blocks(page):
            continue
        marks = [pytest.mark.slow] if page in SLOW else []
        for kind, reason in _MARK.findall((DOCS / page).read_text(encoding="utf-8")):
            if kind == "slow":
                marks.append(pytest.mark.slow)
            else:
                marks.append(pytest.mark.skip(reason=reason or "marked in the page"))
        out.append(pytest.param(page, marks=marks, id=page))
    return out


def test_pages_exist():
    for page in ("index.md", "installation.md", "user-guide.md", "composing.md",
                 "api.md", "formats.md", "gallery/diabetes.md",
                 "gallery/eight_schools.md"):
        assert (DOCS / page).is_file(), page
    assert _params(), "no page has python examples"


@pytest.mark.parametrize("page", _params())
def test_page_examples_run(page, tmp_path, monkeypatch):
    for module in NEEDS.get(page, ()):
        pytest.importorskip(module)
    pytest.importorskip("matplotlib").use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "docs_" + re.sub(r"\W", "_", page)}
    for i, block in enumerate(_blocks(page)):
        code = compile(block, f"{page}[block {i + 1}]", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation
    import matplotlib.pyplot as plt

    plt.close("all")


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'aspire-jax[docs]')")
    if importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocstrings is not installed (pip install 'aspire-jax[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(site), "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "sample_posterior" in api and "read_samples" in api
    shutil.rmtree(site)
