"""How aspire_jax's own programs draw random bits.

JAX's threefry generator has two layouts of its counters. The default,
*partitionable* one hashes a two-word counter per output element, which lets
XLA split a draw across devices without computing it whole; the other hashes
one word per element pair. Both give exact, independent uniform bits, and
both give the same values however the inputs are sharded (a draw's values
depend on its key and shape only). On CPU the partitionable hash compiles to
several times more machine code, and every draw site in a compiled sampler
carries its own copy: in an SMC program that is about a second of compile
time per process, against hashing a few thousand counters per sweep at run
time. aspire_jax's samplers therefore trace their draws in the compact
layout, through :func:`compact_draws`. Only the user's own draws and keys are
untouched: the setting is scoped to the trace of the decorated function.

Changing the layout changes which numbers a key gives, so it is a property
of a release: results are reproducible for a given key and version.
"""

import contextlib
import functools

import jax

__all__ = ["compact_draws"]


def _context():
    setting = getattr(jax, "threefry_partitionable", None)
    return setting(False) if setting is not None else contextlib.nullcontext()


def compact_draws(fn):
    """Decorate ``fn`` so that the threefry draws it traces use the compact
    counter layout (see the module notes). Keys of other generators are not
    affected."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with _context():
            return fn(*args, **kwargs)

    return wrapped
