"""Execution backends and the switch that picks one.

Backends register a factory under a name; ``get_executor`` returns the
one named by its argument, by ``DATAJAX_EXECUTOR``, or ``pandas``.

Adding a backend (e.g. Bodo)::

    class BodoExecutor(Executor):
        name = "bodo"
        def run(self, plan, tables):
            source = trace_to_source(plan.trace)  # plain pandas code
            ...  # compile it with bodo.jit, run it, return a DataFrame

    register_executor("bodo", BodoExecutor)

The factory is called on first use only, so an optional engine is
imported only when that backend is chosen.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from datajax.runtime.base import ExecutionError, Executor, bind_tables
from datajax.runtime.codegen import PandasSourceExecutor, trace_to_source
from datajax.runtime.pandas_backend import PandasExecutor, run_trace

__all__ = [
    "DEFAULT_EXECUTOR",
    "FALLBACK_EXECUTOR",
    "ENV_VAR",
    "ExecutionError",
    "Executor",
    "PandasExecutor",
    "PandasSourceExecutor",
    "bind_tables",
    "default_executor_name",
    "executor_names",
    "get_executor",
    "register_executor",
    "run_trace",
    "trace_to_source",
]

ENV_VAR = "DATAJAX_EXECUTOR"
# Without DATAJAX_EXECUTOR the backend is real Bodo wherever Bodo can be
# imported (installed, allowed by DATAJAX_ALLOW_BODO_IMPORT, and paired
# with a pandas it works with); pandas elsewhere.
FALLBACK_EXECUTOR = "pandas"
DEFAULT_EXECUTOR = "bodo"

_factories: dict[str, Callable[[], Executor]] = {}
_instances: dict[str, Executor] = {}
_lock = threading.Lock()


def register_executor(
    name: str, factory: Callable[[], Executor], replace: bool = False
) -> None:
    """Make a backend available under ``name``.

    Args:
        name: the name ``DATAJAX_EXECUTOR`` selects it by.
        factory: makes the executor; called once, on first use.
        replace: allow replacing a backend of the same name.

    Raises:
        ValueError: the name is taken and ``replace`` is not set.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"executor name must be a non-empty string, got {name!r}"
        )
    with _lock:
        if name in _factories and not replace:
            raise ValueError(
                f"an executor named {name!r} is already registered; pass "
                "replace=True to replace it"
            )
        _factories[name] = factory
        _instances.pop(name, None)


def executor_names() -> tuple[str, ...]:
    """Names of the registered backends, sorted."""
    return tuple(sorted(_factories))


def get_executor(
    name: str | None = None, environ: Mapping[str, str] | None = None
) -> Executor:
    """Return the backend named ``name``, by the environment, or pandas.

    Args:
        name: a registered backend name; None reads ``DATAJAX_EXECUTOR``.
        environ: the environment to read (default ``os.environ``).

    Returns:
        The executor (one shared instance per name).

    Raises:
        ValueError: no backend has that name.
    """
    if name is None:
        env = os.environ if environ is None else environ
        name = env.get(ENV_VAR, "").strip() or default_executor_name(env)
        origin = f"{ENV_VAR}={name!r}"
    else:
        origin = repr(name)

    with _lock:
        if name not in _factories:
            raise ValueError(
                f"unknown executor {origin}; choose one of "
                f"{list(executor_names())}"
            )
        if name not in _instances:
            _instances[name] = _factories[name]()
        return _instances[name]


def default_executor_name(environ: Mapping[str, str] | None = None) -> str:
    """``bodo`` where Bodo is installed and allowed, else ``pandas``.

    Only looks for the package; Bodo itself is imported when a plan first
    runs, and an installed Bodo/pandas pair known not to work then stops
    with an error naming both versions rather than falling back quietly.
    """
    import importlib.util

    from datajax.runtime.bodo_backend import bodo_import_allowed

    env = os.environ if environ is None else environ
    if env.get("DATAJAX_USE_BODO_STUB", "").strip() == "1":
        return DEFAULT_EXECUTOR
    if not bodo_import_allowed(env):
        return FALLBACK_EXECUTOR
    if importlib.util.find_spec("bodo") is None:
        return FALLBACK_EXECUTOR
    return DEFAULT_EXECUTOR


def _bodo_executor() -> Executor:
    # imported on first use; Bodo itself only when a plan runs
    from datajax.runtime.bodo_backend import BodoExecutor

    return BodoExecutor()


def _bodo_native_executor() -> Executor:
    from datajax.runtime.bodo_native import BodoNativeExecutor

    return BodoNativeExecutor()


register_executor("pandas", PandasExecutor)
register_executor("pandas-codegen", PandasSourceExecutor)
register_executor("bodo", _bodo_executor)
register_executor("bodo-native", _bodo_native_executor)
