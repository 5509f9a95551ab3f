"""The opt-in persistent compilation cache."""

import subprocess
import sys
import textwrap

import pytest

import aspire_jax
from aspire_jax.compilation import default_cache_dir
from aspire_jax.errors import ValidationError

_PROGRAM = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp
    import aspire_jax
    aspire_jax.enable_compilation_cache(sys.argv[1], min_compile_time_s=0.0)
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name)
        if name == "/jax/compilation_cache/cache_hits" else None)

    def f(x):
        for i in range(30):
            x = jnp.sin(x) @ x.T + i
        return x

    jax.jit(f).lower(jnp.ones((8, 8))).compile()
    print("hits", len(hits))
""")


def _run(cache):
    out = subprocess.run([sys.executable, "-c", _PROGRAM, str(cache)], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    return int(out.split()[-1])


def test_programs_are_stored_and_reused(tmp_path):
    cache = tmp_path / "xla"
    assert _run(cache) == 0
    assert [p for p in cache.rglob("*") if p.is_file()], "nothing was written"
    # A second process finds the program instead of compiling it.
    assert _run(cache) >= 1


def test_default_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ASPIRE_JAX_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ASPIRE_JAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "aspire_jax" / "xla"


def test_bad_arguments(tmp_path):
    # Every refusal comes before any JAX setting is touched.
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ValidationError, match="not a folder"):
        aspire_jax.enable_compilation_cache(not_a_dir)
    with pytest.raises(ValidationError, match="cannot create"):
        aspire_jax.enable_compilation_cache(not_a_dir / "below")
    with pytest.raises(ValidationError, match="empty"):
        aspire_jax.enable_compilation_cache("  ")
    for bad in (-1, True, "1", None):
        with pytest.raises(ValidationError, match="min_compile_time_s"):
            aspire_jax.enable_compilation_cache(tmp_path, min_compile_time_s=bad)
    import jax

    assert not jax.config.jax_compilation_cache_dir


def test_a_second_folder_in_one_process_is_refused(tmp_path):
    program = textwrap.dedent("""
        import sys
        import aspire_jax
        from aspire_jax.errors import ValidationError
        a = aspire_jax.enable_compilation_cache(sys.argv[1])
        assert aspire_jax.enable_compilation_cache(sys.argv[1]) == a
        try:
            aspire_jax.enable_compilation_cache(sys.argv[2])
        except ValidationError as err:
            print("refused", "already" in str(err))
    """)
    out = subprocess.run([sys.executable, "-c", program, str(tmp_path / "a"),
                          str(tmp_path / "b")], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert out.split() == ["refused", "True"]


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    program = textwrap.dedent("""
        import aspire_jax
        print(aspire_jax.enable_compilation_cache("rel/xla"))
    """)
    out = subprocess.run([sys.executable, "-c", program], check=True, timeout=120,
                         capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.strip() == str((tmp_path / "rel" / "xla").resolve())
