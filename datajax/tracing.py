"""``djit`` and ``pjit``: trace a function of frames, plan it, run it.

::

    @djit
    def pipeline(logs, users):
        ...                      # Frame operations, see datajax.frame
        return result_frame

    out = pipeline(logs_df, users_df)      # a pandas DataFrame
    print(pipeline.explain())              # the last plan, as text

DataFrame arguments become input tables named after their parameters;
``Frame.source(name)`` reads tables passed as ``tables={name: df}``.
Other arguments are handed to the function unchanged (like JAX's static
arguments). The function is traced again on every call; tracing records
a few Python objects per operation, so this costs little next to the
run.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from datajax.frame import _ACTIVE, Frame, _Recorder, schema_of
from datajax.ir.nodes import Repartition, Trace
from datajax.planner.metrics import (
    merge_runtime_counters,
    runtime_counters_from_env,
)
from datajax.planner.plan import ExecutionPlan, plan_trace
from datajax.planner.sharding import ByKey, Resource
from datajax.runtime import Executor, get_executor

logger = logging.getLogger(__name__)

__all__ = ["Compiled", "djit", "pjit"]


class Compiled:
    """A traced function; call it with DataFrames to run it.

    Attributes:
        last_plan: the plan of the latest call (or ``lower``), with its
            metrics; runtime counters from ``DATAJAX_RUNTIME_METRICS``
            are merged in after each call.
        last_trace: the trace of the latest call.
    """

    def __init__(
        self,
        fn: Callable[..., Frame],
        executor: str | Executor | None = None,
        out_shardings: ByKey | None = None,
        resources: Resource | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"djit needs a function, got {fn!r}")
        self.fn = fn
        self.executor = executor
        self.out_shardings = out_shardings
        self.resources = resources if resources is not None else Resource()
        self.last_plan: ExecutionPlan | None = None
        self.last_trace: Trace | None = None
        self._signature = inspect.signature(fn)
        if "tables" in self._signature.parameters:
            raise ValueError(
                f"{fn.__name__} has a parameter named 'tables', which djit "
                "keeps for tables bound by name; rename the parameter"
            )
        functools.update_wrapper(self, fn)

    # -- tracing

    def trace(
        self,
        *args: Any,
        tables: Mapping[str, pd.DataFrame] | None = None,
        **kwargs: Any,
    ) -> Trace:
        """Trace the function on these arguments without running it."""
        trace, _ = self._trace(args, kwargs, tables)
        return trace

    def _trace(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tables: Mapping[str, pd.DataFrame] | None,
    ) -> tuple[Trace, dict[str, pd.DataFrame]]:
        """Trace one call; return the trace and its tables by name."""
        if _ACTIVE.get() is not None:
            raise RuntimeError(
                "a djit function cannot be called while another one is "
                "traced; call its Python function (.__wrapped__) instead"
            )
        bound = self._signature.bind(*args, **kwargs)
        named = dict(tables or {})
        for name, df in named.items():
            schema_of(df, name)  # fail early on an unusable table

        # wrap DataFrame arguments as input tables named by parameter
        rec = _Recorder(named)
        call_args = dict(bound.arguments)
        for pname, value in bound.arguments.items():
            kind = self._signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                call_args[pname] = tuple(
                    self._wrap(rec, f"{pname}{i}", v)
                    for i, v in enumerate(value)
                )
            elif kind is inspect.Parameter.VAR_KEYWORD:
                call_args[pname] = {
                    k: self._wrap(rec, k, v) for k, v in value.items()
                }
            else:
                call_args[pname] = self._wrap(rec, pname, value)
        bound.arguments.update(call_args)

        # run the Python function on frames, recording steps
        token = _ACTIVE.set(rec)
        try:
            result = self.fn(*bound.args, **bound.kwargs)
        finally:
            _ACTIVE.reset(token)

        if not isinstance(result, Frame) or result._rec is not rec:
            raise TypeError(
                f"{self.fn.__name__} must return a Frame made from its "
                f"inputs, not {type(result).__name__}"
            )
        if self.out_shardings is not None:
            result = self._constrain(result)

        trace = result.trace
        used = {n: rec.tables[n] for n in trace.sources if n in rec.tables}
        logger.debug("traced %s:\n%s", self.fn.__name__, trace)
        self.last_trace = trace
        return trace, used

    @staticmethod
    def _wrap(rec: _Recorder, name: str, value: Any) -> Any:
        if isinstance(value, Frame):
            raise TypeError(
                f"argument {name!r} is a Frame; pass the pandas DataFrame, "
                "djit wraps it"
            )
        if not isinstance(value, pd.DataFrame):
            return value
        if name in rec.tables:
            raise ValueError(
                f"table {name!r} is given both as an argument and in "
                "tables=; give it once"
            )
        rec.tables[name] = value
        return Frame._at(rec, rec.source(name, schema_of(value, name)))

    def _constrain(self, result: Frame) -> Frame:
        """Repartition the result as ``out_shardings`` asks, if needed."""
        spec = self.out_shardings
        last = result._rec.steps[result._index]
        if (
            isinstance(last, Repartition)
            and last.keys == spec.keys
            and last.axis == spec.axis
        ):
            return result
        return result.repartition(spec)

    # -- planning and running

    def lower(
        self,
        *args: Any,
        tables: Mapping[str, pd.DataFrame] | None = None,
        **kwargs: Any,
    ) -> ExecutionPlan:
        """Trace and plan a call without running it; sets ``last_plan``."""
        plan, _ = self._lower(args, kwargs, tables)
        return plan

    def _lower(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tables: Mapping[str, pd.DataFrame] | None,
    ) -> tuple[ExecutionPlan, dict[str, pd.DataFrame]]:
        trace, used = self._trace(args, kwargs, tables)
        plan = plan_trace(trace, resources=self.resources, tables=used)
        self.last_plan = plan
        return plan, used

    def __call__(
        self,
        *args: Any,
        tables: Mapping[str, pd.DataFrame] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Trace, plan and run the function.

        Args:
            *args: the function's arguments; DataFrames become inputs.
            tables: tables that ``Frame.source(name)`` reads.
            **kwargs: more arguments of the function.

        Returns:
            The result as a pandas DataFrame with a fresh RangeIndex.

        Raises:
            RuntimeMetricsError: ``DATAJAX_RUNTIME_METRICS`` is set but
                unreadable or invalid (checked before any work).
            IRError: the traced steps break a rule.
            ExecutionError: a step failed at run time.
        """
        # read the counters first: a bad value must fail before any work
        counters = runtime_counters_from_env()
        executor = self._executor()

        plan, used = self._lower(args, kwargs, tables)
        annotate = getattr(executor, "annotate", None)
        if annotate is not None:
            plan = annotate(plan)  # the backend's notes, e.g. "NOT Bodo"
        if counters is not None:
            plan = plan.with_metrics(
                merge_runtime_counters(plan.metrics, counters)
            )
        self.last_plan = plan

        logger.debug("running %s with %s", self.fn.__name__, executor.name)
        return executor.run(plan, used)

    def _executor(self) -> Executor:
        if isinstance(self.executor, Executor):
            return self.executor
        return get_executor(self.executor)

    def explain(
        self,
        *args: Any,
        tables: Mapping[str, pd.DataFrame] | None = None,
        **kwargs: Any,
    ) -> str:
        """Describe the plan of these arguments, or of the last call.

        Raises:
            RuntimeError: no arguments and no call yet.
        """
        if args or kwargs or tables:
            return self.lower(*args, tables=tables, **kwargs).explain()
        if self.last_plan is None:
            raise RuntimeError(
                f"{self.fn.__name__} has not been called yet; call it, or "
                "pass example arguments to explain()"
            )
        return self.last_plan.explain()

    def __repr__(self) -> str:
        return f"<Compiled {self.fn.__name__}>"


def djit(
    fn: Callable[..., Frame] | None = None,
    *,
    executor: str | Executor | None = None,
) -> Any:
    """Trace a function of frames and run it on DataFrames.

    Use as ``@djit`` or ``djit(fn, executor="pandas")``.

    Args:
        fn: a function taking frames (and other values) and returning a
            Frame.
        executor: a backend name or instance; None reads
            ``DATAJAX_EXECUTOR`` at each call (default ``pandas``).

    Returns:
        A ``Compiled`` callable (or a decorator when ``fn`` is None).
    """
    if fn is None:
        return functools.partial(djit, executor=executor)
    return Compiled(fn, executor=executor)


def pjit(
    fn: Callable[..., Frame] | None = None,
    *,
    out_shardings: ByKey | None = None,
    resources: Resource | None = None,
    executor: str | Executor | None = None,
) -> Any:
    """Like ``djit``, for a mesh and with a sharded result.

    Args:
        fn: the function to trace.
        out_shardings: ``shard.by_key(...)`` for the result; a final
            repartition is added unless the result is already one.
        resources: the target mesh, e.g. ``Resource(mesh_axes=("data",),
            world_size=4)``; one rank if None.
        executor: as for ``djit``.

    Returns:
        A ``Compiled`` callable (or a decorator when ``fn`` is None).

    Raises:
        TypeError: ``out_shardings`` or ``resources`` of the wrong type.
        ValueError: ``out_shardings`` names an axis the mesh lacks.
    """
    if resources is not None and not isinstance(resources, Resource):
        raise TypeError(
            f"resources must be a datajax.Resource, not {resources!r}"
        )
    if out_shardings is not None:
        if not isinstance(out_shardings, ByKey):
            raise TypeError(
                "out_shardings must be shard.by_key(...), not "
                f"{out_shardings!r}"
            )
        (resources or Resource()).resolve_axis(out_shardings.axis)
    if fn is None:
        return functools.partial(
            pjit,
            out_shardings=out_shardings,
            resources=resources,
            executor=executor,
        )
    return Compiled(
        fn,
        executor=executor,
        out_shardings=out_shardings,
        resources=resources,
    )
