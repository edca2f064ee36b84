"""The pandas executor: interprets the IR step by step on one process.

It is the reference every other backend is compared with. A repartition
keeps the rows where they are: with one process there is nowhere to
move them.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from datajax.ir.nodes import (
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
    step_inputs,
    step_kind,
)
from datajax.runtime.base import ExecutionError, Executor, bind_tables

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan

logger = logging.getLogger(__name__)

BINARY_FUNCS: Mapping[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "and": operator.and_,
    "or": operator.or_,
}
UNARY_FUNCS: Mapping[str, Callable[[Any], Any]] = {
    "neg": operator.neg,
    "not": operator.invert,
    "isna": lambda s: s.isna(),
    "notna": lambda s: s.notna(),
}


def eval_expr(expr: Expr, df: pd.DataFrame) -> Any:
    """Evaluate an expression on a table; a Series, or a scalar for Lit."""
    if isinstance(expr, Col):
        return df[expr.name]
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, BinOp):
        left = eval_expr(expr.left, df)
        right = eval_expr(expr.right, df)
        return BINARY_FUNCS[expr.op](left, right)
    if isinstance(expr, UnaryOp):
        return UNARY_FUNCS[expr.op](eval_expr(expr.operand, df))
    raise TypeError(f"{expr!r} is not an expression")


def filter_mask(mask: pd.Series) -> pd.Series:
    """Turn a predicate into a row mask; a null predicate drops the row.

    Raises:
        TypeError: the predicate is not boolean.
    """
    if not pd.api.types.is_bool_dtype(mask.dtype):
        raise TypeError(
            f"the filter predicate has dtype {mask.dtype}, not bool; "
            "compare the column with a value, e.g. f[f['x'] > 0]"
        )
    return mask.fillna(False).astype(bool)


def run_step(step: Step, inputs: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Run one non-source step on its input tables."""
    if isinstance(step, Filter):
        (df,) = inputs
        return df[filter_mask(eval_expr(step.predicate, df))]

    if isinstance(step, Select):
        (df,) = inputs
        return df[list(step.columns)]

    if isinstance(step, Rename):
        (df,) = inputs
        return df.rename(columns=dict(step.mapping))

    if isinstance(step, Assign):
        (df,) = inputs
        values = {name: eval_expr(e, df) for name, e in step.columns}
        return df.assign(**values)

    if isinstance(step, Aggregate):
        (df,) = inputs
        grouped = df.groupby(
            list(step.keys), as_index=False, sort=True, dropna=step.dropna
        )
        return grouped.agg(**{a.out: (a.column, a.func) for a in step.aggs})

    if isinstance(step, Join):
        left, right = inputs
        return pd.merge(left, right, **join_kwargs(step))

    if isinstance(step, Repartition):
        (df,) = inputs
        return df

    raise TypeError(f"the pandas executor cannot run {step!r}")


def join_kwargs(step: Join) -> dict[str, Any]:
    """The ``pandas.merge`` arguments of a join step."""
    kwargs: dict[str, Any] = {"how": step.how}
    if step.left_on == step.right_on:
        kwargs["on"] = list(step.left_on)
    else:
        kwargs["left_on"] = list(step.left_on)
        kwargs["right_on"] = list(step.right_on)
    kwargs["suffixes"] = tuple(step.suffixes)
    return kwargs


def run_trace(
    trace: Trace,
    tables: Mapping[str, pd.DataFrame],
    observe: Callable[[int, pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Run every step of a trace with pandas.

    Args:
        trace: the trace.
        tables: input tables by name.
        observe: called with ``(step index, result)`` after each step.

    Returns:
        The result of the last step (its index is not reset).

    Raises:
        ValueError: a table is missing or lacks a column.
        ExecutionError: a step failed; the cause is chained.
    """
    inputs = iter(bind_tables(trace, tables))
    results: list[pd.DataFrame | None] = []
    last_use = _last_uses(trace)

    for index, step in enumerate(trace.steps):
        if isinstance(step, Source):
            out = next(inputs)
        else:
            args = [results[i] for i in step_inputs(step)]
            try:
                out = run_step(step, args)
            except Exception as exc:
                raise ExecutionError(
                    index, step_kind(step), step, exc
                ) from exc
        results.append(out)
        if observe is not None:
            observe(index, out)

        # drop tables no later step reads, to free memory early
        for i in step_inputs(step):
            if last_use[i] == index:
                results[i] = None
    return results[-1]


def _last_uses(trace: Trace) -> list[int]:
    """For every step, the index of the last step that reads it."""
    last = list(range(len(trace.steps)))
    last[-1] = len(trace.steps)  # the result is kept
    for index, step in enumerate(trace.steps):
        for i in step_inputs(step):
            last[i] = max(last[i], index)
    return last


class PandasExecutor(Executor):
    """Interpret the plan's steps with pandas on this process."""

    name = "pandas"

    def run(
        self, plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
    ) -> pd.DataFrame:
        out = run_trace(plan.trace, tables)
        return out.reset_index(drop=True)
