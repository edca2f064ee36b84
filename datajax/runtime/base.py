"""The executor interface every DataJAX backend implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from datajax.ir.nodes import Source, Trace
from datajax.ir.printer import format_step

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan


class ExecutionError(RuntimeError):
    """A step failed while a backend ran it; names the step."""

    def __init__(self, index: int, kind: str, step: object, cause: Exception):
        self.index = index
        self.kind = kind
        self.cause = cause
        super().__init__(
            f"step {index} ({kind}) failed: {type(cause).__name__}: "
            f"{cause}\n    {format_step(index, step)}"
        )


class Executor(abc.ABC):
    """Runs an ``ExecutionPlan`` on tables bound by name.

    A backend subclasses this, implements ``run`` and registers a factory
    with ``datajax.runtime.register_executor``. It must give the same
    rows as the pandas executor (the parity suite checks it); row order
    is only defined where the plan ends with an ordered step.
    """

    #: the name the backend is registered under
    name: str = ""

    @abc.abstractmethod
    def run(
        self, plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
    ) -> pd.DataFrame:
        """Run a plan.

        Args:
            plan: the plan (its trace, schemas and sharding).
            tables: the input tables by name; extra columns are ignored.

        Returns:
            The result, with a fresh ``RangeIndex``.

        Raises:
            ValueError: a table is missing or lacks a column.
            ExecutionError: a step failed.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def bind_tables(
    trace: Trace, tables: Mapping[str, pd.DataFrame]
) -> list[pd.DataFrame]:
    """Pick the input tables of a trace, in source order.

    Each table is cut to the columns of its source schema, so columns
    the trace does not know cannot change the result (e.g. by making a
    join add suffixes the plan did not expect).

    Args:
        trace: the trace.
        tables: DataFrames by name.

    Returns:
        One DataFrame per ``Source`` step, in step order.

    Raises:
        ValueError: a table is missing, is not a DataFrame, or lacks a
            column the trace reads.
    """
    bound = []
    for step in trace.steps:
        if not isinstance(step, Source):
            continue
        if step.name not in tables:
            raise ValueError(
                f"no table bound to the name {step.name!r}; the trace "
                f"reads {list(trace.sources)!r}, got "
                f"{sorted(tables)!r}"
            )
        df = tables[step.name]
        if not isinstance(df, pd.DataFrame):
            raise ValueError(
                f"table {step.name!r} must be a pandas DataFrame, not "
                f"{type(df).__name__}"
            )
        names = list(step.schema.names)
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise ValueError(
                f"table {step.name!r} lacks column {missing[0]!r} that "
                f"the trace reads; it has {list(df.columns)!r}"
            )
        bound.append(df if list(df.columns) == names else df[names])
    return bound
