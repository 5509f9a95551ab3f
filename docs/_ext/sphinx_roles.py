"""Griffe extension used by the documentation build: show Sphinx roles as code.

The docstrings of aspire_jax cross-reference objects with Sphinx roles
(``:class:`~aspire_jax.samples.Samples```, ``:func:`fit```), which Markdown
would print literally. This extension rewrites each role to inline code with
the name a reader sees in Sphinx: the last component after ``~``, the full
path otherwise.
"""

import re

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")


def _as_code(match: re.Match) -> str:
    tilde, target = match.groups()
    name = target.split(".")[-1] if tilde else target
    return f"`{name}`"


class SphinxRoles(griffe.Extension):
    """Replace Sphinx roles in every docstring by inline code."""

    def on_instance(self, *, obj, **kwargs) -> None:
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
