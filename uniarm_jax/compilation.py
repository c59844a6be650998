"""Compile once per machine: JAX's persistent compilation cache, and a clock of compile time.

The `uniarm` command turns the cache on (`enable_persistent_cache`), so a second run of the same shapes
loads its programs from disk instead of compiling them; `UNIARM_COMPILE_CACHE` names another
directory, or `off` turns it off. `compile_seconds()` is the time this process has spent lowering,
compiling or loading compiled programs, so rates can be reported with and without it.
"""

from __future__ import annotations

import os

import jax
import jax.monitoring

from uniarm_jax import defaults

_seconds = [0.0]
_OFF = ("0", "off", "false", "no")


# time spent lowering a program and compiling it or reading it from the cache (the backend event wraps
# both), once per program. Tracing is left out: JAX reports nested traces inside their callers' (it
# would count twice); so is the time a cache hit saved, which was not spent.
_SPENT = ("/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/core/compile/backend_compile_duration")


def _listen(event: str, duration: float, **_) -> None:
    if event in _SPENT:
        _seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_listen)


def compile_seconds() -> float:
    """Seconds this process has spent lowering and compiling programs (or loading them) so far."""
    return _seconds[0]


def enable_persistent_cache() -> str | None:
    """Points JAX's persistent compilation cache at `$UNIARM_COMPILE_CACHE` (default: `compiled/` in
    the project's cache, `defaults.cache_root()`); `off` leaves it off. Returns the directory."""
    setting = os.environ.get("UNIARM_COMPILE_CACHE", "")
    if setting.lower() in _OFF:
        return None
    path = setting or os.path.join(defaults.cache_root(), "compiled")
    jax.config.update("jax_compilation_cache_dir", path)
    # every program, not only those over JAX's default 1 s: many small ones add up, and a hit costs ms
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
