"""Lower a trace to the source code of a plain pandas function.

The generated function takes one DataFrame per input table (``src0``,
``src1``, ... in source order) and returns the result. It uses only
``pd`` and DataFrame methods, so a backend can compile it with another
engine that understands pandas code (e.g. ``bodo.jit``). Column names
and literals are written with ``repr``, never pasted raw.

``PandasSourceExecutor`` runs the generated code with pandas; the parity
suite runs it next to the interpreter so the generator stays correct.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from datajax.ir.nodes import (
    BINARY_OPS,
    Aggregate,
    Assign,
    BinOp,
    Col,
    Expr,
    Filter,
    Join,
    Lit,
    Rename,
    Repartition,
    Select,
    Source,
    Step,
    Trace,
    UnaryOp,
)
from datajax.ir.printer import format_step, table_name
from datajax.runtime.base import Executor, bind_tables
from datajax.runtime.pandas_backend import join_kwargs

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan

logger = logging.getLogger(__name__)

DEFAULT_FUNC_NAME = "datajax_plan"

# Compiled functions kept per executor.
CACHE_SIZE = 64


def expr_source(expr: Expr, table: str) -> str:
    """Write an expression as pandas code over the DataFrame ``table``."""
    if isinstance(expr, Col):
        return f"{table}[{expr.name!r}]"
    if isinstance(expr, Lit):
        return repr(expr.value)
    if isinstance(expr, BinOp):
        left = expr_source(expr.left, table)
        right = expr_source(expr.right, table)
        return f"({left} {BINARY_OPS[expr.op]} {right})"
    if isinstance(expr, UnaryOp):
        inner = expr_source(expr.operand, table)
        if expr.op == "neg":
            return f"(-{inner})"
        if expr.op == "not":
            return f"(~{inner})"
        return f"{inner}.{expr.op}()"
    raise TypeError(f"{expr!r} is not an expression")


def step_source(index: int, step: Step, params: Mapping[int, str]) -> str:
    """Write one step as a pandas assignment statement."""
    out = table_name(index)

    if isinstance(step, Source):
        return f"{out} = {params[index]}"
    if isinstance(step, Filter):
        src = table_name(step.src)
        pred = expr_source(step.predicate, src)
        return f"{out} = {src}[{pred}.fillna(False).astype(bool)]"
    if isinstance(step, Select):
        return f"{out} = {table_name(step.src)}[{list(step.columns)!r}]"
    if isinstance(step, Rename):
        mapping = dict(step.mapping)
        return f"{out} = {table_name(step.src)}.rename(columns={mapping!r})"
    if isinstance(step, Assign):
        src = table_name(step.src)
        values = ", ".join(
            f"{name!r}: {expr_source(expr, src)}"
            for name, expr in step.columns
        )
        return f"{out} = {src}.assign(**{{{values}}})"
    if isinstance(step, Aggregate):
        src = table_name(step.src)
        aggs = ", ".join(
            f"{a.out!r}: ({a.column!r}, {a.func!r})" for a in step.aggs
        )
        return (
            f"{out} = {src}.groupby({list(step.keys)!r}, as_index=False, "
            f"sort=True, dropna={step.dropna!r}).agg(**{{{aggs}}})"
        )
    if isinstance(step, Join):
        kwargs = ", ".join(
            f"{k}={v!r}" for k, v in join_kwargs(step).items()
        )
        left, right = table_name(step.left), table_name(step.right)
        return f"{out} = pd.merge({left}, {right}, {kwargs})"
    if isinstance(step, Repartition):
        # one process: the rows stay where they are
        return f"{out} = {table_name(step.src)}"
    raise TypeError(f"cannot write code for {step!r}")


def trace_to_source(trace: Trace, func_name: str = DEFAULT_FUNC_NAME) -> str:
    """Write a whole trace as the source of one pandas function.

    Args:
        trace: a checked trace.
        func_name: the name of the generated function.

    Returns:
        Python source defining ``func_name(src0, src1, ...)``; it needs
        ``pd`` (pandas) in its globals.

    Raises:
        ValueError: ``func_name`` is not an identifier.
    """
    if not func_name.isidentifier():
        raise ValueError(f"func_name {func_name!r} is not an identifier")

    params: dict[int, str] = {}
    for index, step in enumerate(trace.steps):
        if isinstance(step, Source):
            params[index] = f"src{len(params)}"

    lines = [f"def {func_name}({', '.join(params.values())}):"]
    for index, step in enumerate(trace.steps):
        lines.append(f"    # {format_step(index, step)}")
        lines.append(f"    {step_source(index, step, params)}")
    result = table_name(trace.output)
    lines.append(f"    return {result}.reset_index(drop=True)")
    return "\n".join(lines) + "\n"


def compile_trace(trace: Trace, func_name: str = DEFAULT_FUNC_NAME) -> Any:
    """Compile the generated source of a trace into a Python function."""
    source = trace_to_source(trace, func_name)
    namespace: dict[str, Any] = {"pd": pd}
    code = compile(source, f"<datajax {func_name}>", "exec")
    exec(code, namespace)  # our own generated code, names quoted by repr
    return namespace[func_name]


class PandasSourceExecutor(Executor):
    """Run a plan through its generated pandas source code."""

    name = "pandas-codegen"

    def __init__(self) -> None:
        self._compiled: dict[Trace, Any] = {}

    def run(
        self, plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
    ) -> pd.DataFrame:
        func = self._compiled.get(plan.trace)
        if func is None:
            func = compile_trace(plan.trace)
            if len(self._compiled) >= CACHE_SIZE:
                self._compiled.clear()  # a crude bound, enough for a job
            self._compiled[plan.trace] = func
            logger.debug("compiled a trace of %d steps", len(plan.trace))
        return func(*bind_tables(plan.trace, tables))
