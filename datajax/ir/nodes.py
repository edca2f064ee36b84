"""Immutable IR nodes: expressions, steps and the trace that holds them.

A trace is a flat tuple of steps. Step ``i`` produces the table ``t{i}``
and refers to earlier tables by their index, so the trace is a small
data-flow graph in topological order; its last step is the result.
Named input tables are ``Source`` steps that carry only a name and a
schema: the data is bound by name at run time, never stored in the trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------
# vocabularies

BINARY_OPS: Mapping[str, str] = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "and": "&",
    "or": "|",
}
ARITHMETIC_OPS = frozenset({"add", "sub", "mul", "div"})
COMPARISON_OPS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
LOGICAL_OPS = frozenset({"and", "or"})

UNARY_OPS: Mapping[str, str] = {
    "neg": "-",
    "not": "~",
    "isna": "isna",
    "notna": "notna",
}

AGG_FUNCS = ("sum", "count", "mean", "min", "max")
JOIN_HOWS = ("inner", "left", "right", "outer")
LITERAL_TYPES = ("int", "float", "bool", "str", "null")


# ---------------------------------------------------------------------------
# schema


@dataclass(frozen=True)
class Schema:
    """Column names and pandas dtype names of a table, in column order."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> Schema:
        """Build a schema from a ``{column: dtype}`` mapping."""
        return cls(tuple((str(k), str(v)) for k, v in mapping.items()))

    @classmethod
    def from_frame(cls, df) -> Schema:
        """Build the schema of a pandas DataFrame."""
        return cls(
            tuple((str(c), str(t)) for c, t in df.dtypes.items())
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    @property
    def dtypes(self) -> dict[str, str]:
        return dict(self.fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __str__(self) -> str:
        return "{" + ", ".join(f"{n}: {t}" for n, t in self.fields) + "}"


# ---------------------------------------------------------------------------
# expressions


@dataclass(frozen=True)
class Col:
    """A reference to a column of the table the expression is applied to."""

    name: str


@dataclass(frozen=True)
class Lit:
    """A scalar constant; ``type`` keeps 1, 1.0 and True apart."""

    value: int | float | str | bool | None
    type: str


@dataclass(frozen=True)
class BinOp:
    """``left <op> right``; ``op`` is a key of ``BINARY_OPS``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp:
    """``<op> operand``; ``op`` is a key of ``UNARY_OPS``."""

    op: str
    operand: Expr


Expr = Col | Lit | BinOp | UnaryOp


def lit(value: object) -> Lit:
    """Make a literal from a Python or NumPy scalar.

    Args:
        value: None, bool, int, finite float or str (NumPy scalars are
            converted to their Python value).

    Returns:
        The literal, typed by the value.

    Raises:
        TypeError: the value is not one of the supported scalars.
        ValueError: the value is a NaN or infinite float.
    """
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalar -> Python scalar

    if value is None:
        return Lit(None, "null")
    if isinstance(value, bool):
        return Lit(value, "bool")
    if isinstance(value, int):
        return Lit(value, "int")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"literal {value!r} is not finite; NaN and infinity are "
                "not supported in expressions, use isna()/notna() to test "
                "for missing values"
            )
        return Lit(value, "float")
    if isinstance(value, str):
        return Lit(value, "str")
    raise TypeError(
        f"cannot use {value!r} ({type(value).__name__}) in an expression; "
        "use None, bool, int, float or str"
    )


def expr_columns(expr: Expr) -> list[str]:
    """List the column names an expression reads, once per occurrence."""
    if isinstance(expr, Col):
        return [expr.name]
    if isinstance(expr, BinOp):
        return expr_columns(expr.left) + expr_columns(expr.right)
    if isinstance(expr, UnaryOp):
        return expr_columns(expr.operand)
    return []


# ---------------------------------------------------------------------------
# steps


@dataclass(frozen=True)
class Source:
    """A named input table; its rows are bound by name at run time."""

    name: str
    schema: Schema


@dataclass(frozen=True)
class Filter:
    """Keep the rows of ``src`` whose predicate is true (null drops)."""

    src: int
    predicate: Expr


@dataclass(frozen=True)
class Select:
    """Keep the listed columns of ``src``, in the listed order."""

    src: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Rename:
    """Rename columns of ``src``; ``mapping`` holds ``(old, new)`` pairs."""

    src: int
    mapping: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Assign:
    """Add (or replace) columns; ``columns`` holds ``(name, expr)`` pairs.

    Every expression reads the input table ``src``, not the columns
    added by the same step (as ``DataFrame.assign`` evaluates Series
    arguments before assigning).
    """

    src: int
    columns: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class Agg:
    """One reduction of a group-by: ``out = func(column)``."""

    column: str
    func: str
    out: str


@dataclass(frozen=True)
class Aggregate:
    """Group ``src`` by ``keys`` and reduce; the keys become columns.

    ``dropna`` drops groups whose key holds a null, as pandas does by
    default; set it to False to keep them as a group of their own.
    """

    src: int
    keys: tuple[str, ...]
    aggs: tuple[Agg, ...]
    dropna: bool = True


@dataclass(frozen=True)
class Join:
    """A pandas-style merge of two tables on key columns.

    Keys that carry the same name on both sides (``on``) appear once in
    the output; other columns present on both sides get ``suffixes``.
    Null keys match each other, as in ``pandas.merge``.
    """

    left: int
    right: int
    how: str
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    suffixes: tuple[str, str] = ("_x", "_y")


@dataclass(frozen=True)
class Repartition:
    """Move rows so that equal ``keys`` share a rank (hash partitioning).

    ``axis`` names the mesh axis the rows are spread over; None means the
    first axis of the mesh the plan is made for.
    """

    src: int
    keys: tuple[str, ...]
    axis: str | None = None


Step = (
    Source | Filter | Select | Rename | Assign | Aggregate | Join
    | Repartition
)

STEP_KINDS: Mapping[type, str] = {
    Source: "source",
    Filter: "filter",
    Select: "select",
    Rename: "rename",
    Assign: "assign",
    Aggregate: "aggregate",
    Join: "join",
    Repartition: "repartition",
}
TRANSFORM_KINDS = frozenset({"filter", "select", "rename", "assign"})


def step_kind(step: object) -> str:
    """Name the kind of a step (``"filter"``, ``"join"``, ...)."""
    try:
        return STEP_KINDS[type(step)]
    except KeyError:
        raise TypeError(
            f"{step!r} is not a DataJAX step; expected one of "
            f"{sorted(STEP_KINDS.values())}"
        ) from None


def step_inputs(step: Step) -> tuple[int, ...]:
    """Return the indices of the tables a step reads."""
    if isinstance(step, Source):
        return ()
    if isinstance(step, Join):
        return (step.left, step.right)
    return (step.src,)


# ---------------------------------------------------------------------------
# trace


@dataclass(frozen=True)
class Trace:
    """A recorded pipeline: steps in order, the last one is the result."""

    steps: tuple[Step, ...]

    @property
    def output(self) -> int:
        return len(self.steps) - 1

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of the input tables, in the order they were recorded."""
        return tuple(s.name for s in self.steps if isinstance(s, Source))

    def __len__(self) -> int:
        return len(self.steps)

    def __str__(self) -> str:
        from datajax.ir.printer import format_trace

        return format_trace(self)
