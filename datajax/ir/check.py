"""Check a trace and work out the columns every step produces.

The checker knows column names only; dtypes are the planner's business
(it runs the steps on empty frames). Every rule broken raises ``IRError``
naming the step and showing the printed IR around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from datajax.ir.errors import IRError
from datajax.ir.nodes import (
    AGG_FUNCS,
    BINARY_OPS,
    JOIN_HOWS,
    LITERAL_TYPES,
    UNARY_OPS,
    Aggregate,
    Assign,
    BinOp,
    Col,
    Filter,
    Join,
    Lit,
    Rename,
    Repartition,
    Schema,
    Select,
    Source,
    Step,
    Trace,
    UnaryOp,
    expr_columns,
    step_kind,
)

Columns = tuple[str, ...]


def check_trace(trace: Trace) -> list[Columns]:
    """Check every step of a trace.

    Args:
        trace: the trace to check.

    Returns:
        The output column names of every step, by step index.

    Raises:
        IRError: a step breaks a rule; the message shows where.
    """
    if not isinstance(trace, Trace):
        raise IRError(f"expected a Trace, got {type(trace).__name__}")
    steps = trace.steps
    if not steps:
        raise IRError("the trace has no steps; it needs at least a source")

    columns: list[Columns] = []
    seen_sources: dict[str, int] = {}
    for index, step in enumerate(steps):
        if isinstance(step, Source) and isinstance(step.name, str):
            first = seen_sources.setdefault(step.name, index)
            if first != index:
                raise IRError(
                    f"step {index} (source): the name {step.name!r} is "
                    f"already bound by step {first}; every input table "
                    "needs its own name",
                    steps,
                    index,
                )
        columns.append(step_columns(steps, index, columns))
    return columns


def step_columns(
    steps: Sequence[Step], index: int, columns: Sequence[Columns]
) -> Columns:
    """Check one step against the columns of the steps before it.

    Args:
        steps: the steps of the trace (at least up to ``index``).
        index: the step to check.
        columns: output columns of steps ``0 .. index - 1``.

    Returns:
        The output column names of step ``index``.

    Raises:
        IRError: the step breaks a rule.
    """
    step = steps[index]
    try:
        kind = step_kind(step)
    except TypeError as exc:
        raise IRError(f"step {index}: {exc}", steps, index) from None

    def fail(message: str) -> IRError:
        return IRError(f"step {index} ({kind}): {message}", steps, index)

    def table(ref: object, field: str) -> Columns:
        if (
            not isinstance(ref, int)
            or isinstance(ref, bool)
            or not 0 <= ref < index
        ):
            raise fail(
                f"{field}={ref!r} must name an earlier step "
                f"(0 .. {index - 1})"
            )
        return columns[ref]

    try:
        return _step_columns(step, table)
    except _StepRuleError as exc:
        raise fail(str(exc)) from None


class _StepRuleError(Exception):
    """Internal: a rule broken inside one step (turned into IRError)."""


def _step_columns(step: Step, table) -> Columns:
    """Dispatch on the step kind; ``table(ref, field)`` reads inputs."""
    if isinstance(step, Source):
        return _source_columns(step)

    if isinstance(step, Filter):
        cols = table(step.src, "src")
        _check_expr(step.predicate, cols, "predicate")
        if not expr_columns(step.predicate):
            raise _StepRuleError(
                "the predicate reads no column; a constant filter keeps "
                "all rows or none, drop the step or compare a column"
            )
        return cols

    if isinstance(step, Select):
        cols = table(step.src, "src")
        wanted = _names(step.columns, "columns")
        _require(wanted, cols, "columns")
        return wanted

    if isinstance(step, Rename):
        return _rename_columns(step, table(step.src, "src"))

    if isinstance(step, Assign):
        return _assign_columns(step, table(step.src, "src"))

    if isinstance(step, Aggregate):
        return _aggregate_columns(step, table(step.src, "src"))

    if isinstance(step, Join):
        left = table(step.left, "left")
        right = table(step.right, "right")
        return _join_columns(step, left, right)

    if isinstance(step, Repartition):
        cols = table(step.src, "src")
        _require(_names(step.keys, "keys"), cols, "keys")
        if step.axis is not None:
            _name(step.axis, "axis")
        return cols

    raise _StepRuleError(f"unknown step {step!r}")


# ---------------------------------------------------------------------------
# per-kind rules


def _source_columns(step: Source) -> Columns:
    _name(step.name, "name")
    if not isinstance(step.schema, Schema):
        raise _StepRuleError(
            f"schema must be a Schema, got {type(step.schema).__name__}"
        )
    names = []
    for field in step.schema.fields:
        if (
            not isinstance(field, tuple)
            or len(field) != 2
            or not all(isinstance(x, str) and x for x in field)
        ):
            raise _StepRuleError(
                f"schema field {field!r} must be a (column, dtype) pair "
                "of non-empty strings"
            )
        names.append(field[0])
    return _names(tuple(names), "schema")


def _rename_columns(step: Rename, cols: Columns) -> Columns:
    mapping = {}
    for pair in step.mapping:
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(x, str) and x for x in pair)
        ):
            raise _StepRuleError(
                f"mapping entry {pair!r} must be an (old, new) pair of "
                "non-empty strings"
            )
        old, new = pair
        if old in mapping:
            raise _StepRuleError(f"column {old!r} is renamed twice")
        mapping[old] = new
    if not mapping:
        raise _StepRuleError("the mapping is empty")
    _require(tuple(mapping), cols, "mapping")

    out = tuple(mapping.get(c, c) for c in cols)
    dups = _duplicates(out)
    if dups:
        raise _StepRuleError(
            f"renaming gives duplicate columns {dups!r}; choose new names "
            "that are not already taken"
        )
    return out


def _assign_columns(step: Assign, cols: Columns) -> Columns:
    if not isinstance(step.columns, tuple) or not step.columns:
        raise _StepRuleError(
            f"columns must be a non-empty tuple of (name, expression) "
            f"pairs, got {step.columns!r}"
        )
    names = []
    for i, pair in enumerate(step.columns):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise _StepRuleError(
                f"columns[{i}] must be a (name, expression) pair, got "
                f"{pair!r}"
            )
        name, expr = pair
        _name(name, f"columns[{i}].name")
        _check_expr(expr, cols, f"columns[{i}].expr")
        names.append(name)
    dups = _duplicates(names)
    if dups:
        raise _StepRuleError(f"columns {dups!r} are assigned twice")
    return cols + tuple(n for n in names if n not in cols)


def _aggregate_columns(step: Aggregate, cols: Columns) -> Columns:
    keys = _names(step.keys, "keys")
    _require(keys, cols, "keys")
    if not isinstance(step.dropna, bool):
        raise _StepRuleError(f"dropna must be a bool, got {step.dropna!r}")
    if not isinstance(step.aggs, tuple) or not step.aggs:
        raise _StepRuleError(
            "a group-by needs at least one reduction, e.g. "
            "agg(total=('bytes', 'sum'))"
        )

    outs = []
    for agg in step.aggs:
        if not hasattr(agg, "func") or not hasattr(agg, "out"):
            raise _StepRuleError(f"{agg!r} is not an Agg")
        if agg.func not in AGG_FUNCS:
            raise _StepRuleError(
                f"unknown reduction {agg.func!r}; use one of {AGG_FUNCS}"
            )
        _name(agg.column, "aggs.column")
        _name(agg.out, "aggs.out")
        _require((agg.column,), cols, "aggs.column")
        outs.append(agg.out)

    out = keys + tuple(outs)
    dups = _duplicates(out)
    if dups:
        raise _StepRuleError(
            f"output columns {dups!r} appear twice (a reduction named "
            "like a key or like another reduction); rename the reduction"
        )
    return out


def _join_columns(step: Join, left: Columns, right: Columns) -> Columns:
    if step.how not in JOIN_HOWS:
        raise _StepRuleError(
            f"how={step.how!r} is not a join kind; use one of {JOIN_HOWS}"
        )
    left_on = _names(step.left_on, "left_on", unique=False)
    right_on = _names(step.right_on, "right_on", unique=False)
    if len(left_on) != len(right_on):
        raise _StepRuleError(
            f"left_on {left_on!r} and right_on {right_on!r} must have the "
            "same length"
        )
    _require(left_on, left, "left_on")
    _require(right_on, right, "right_on")
    if (
        not isinstance(step.suffixes, tuple)
        or len(step.suffixes) != 2
        or not all(isinstance(s, str) for s in step.suffixes)
    ):
        raise _StepRuleError(
            f"suffixes {step.suffixes!r} must be a pair of strings"
        )

    try:
        names, _, _ = join_output_names(
            left, right, left_on, right_on, step.suffixes
        )
    except ValueError as exc:
        raise _StepRuleError(str(exc)) from None
    return names


def join_output_names(
    left: Columns,
    right: Columns,
    left_on: Columns,
    right_on: Columns,
    suffixes: tuple[str, str],
) -> tuple[Columns, dict[str, str], dict[str, str]]:
    """Name the output columns of a join as ``pandas.merge`` does.

    A key named the same on both sides at the same position is shared
    and appears once (the left copy). Every other name present on both
    sides gets the left or right suffix.

    Args:
        left: columns of the left table.
        right: columns of the right table.
        left_on: left key columns.
        right_on: right key columns, pairwise with ``left_on``.
        suffixes: appended to overlapping left and right names.

    Returns:
        The output names, and maps from left and from right input names
        to their output names (a shared right key maps to the left one).

    Raises:
        ValueError: the suffixes leave two output columns with one name.
    """
    shared = {a for a, b in zip(left_on, right_on, strict=True) if a == b}
    overlap = (set(left) & set(right)) - shared
    lsuf, rsuf = suffixes
    if overlap and lsuf == rsuf:
        raise ValueError(
            f"columns {sorted(overlap)!r} are on both sides and the "
            f"suffixes {suffixes!r} do not tell them apart; pass two "
            "different suffixes, or rename or select the columns first"
        )

    left_map = {c: c + lsuf if c in overlap else c for c in left}
    right_map = {c: c + rsuf if c in overlap else c for c in right}
    names = tuple(left_map[c] for c in left) + tuple(
        right_map[c] for c in right if c not in shared
    )
    for c in shared:
        right_map[c] = left_map[c]

    dups = _duplicates(names)
    if dups:
        raise ValueError(
            f"the suffixes {suffixes!r} give output columns {dups!r} "
            "twice (a suffixed name is already a column); choose other "
            "suffixes, or rename or select the columns first"
        )
    return names, left_map, right_map


# ---------------------------------------------------------------------------
# expressions and names


def check_expr(expr: object, columns: Columns, field: str = "expr") -> None:
    """Check an expression against the columns it may read.

    Raises:
        IRError: the expression is malformed or reads a missing column.
    """
    try:
        _check_expr(expr, columns, field)
    except _StepRuleError as exc:
        raise IRError(str(exc)) from None


def _check_expr(expr: object, columns: Columns, field: str) -> None:
    if isinstance(expr, Col):
        _name(expr.name, f"{field}.name")
        _require((expr.name,), columns, field)
        return

    if isinstance(expr, Lit):
        _check_lit(expr, field)
        return

    if isinstance(expr, BinOp):
        if expr.op not in BINARY_OPS:
            raise _StepRuleError(
                f"{field}: unknown operator {expr.op!r}; use one of "
                f"{sorted(BINARY_OPS)}"
            )
        _check_expr(expr.left, columns, f"{field}.left")
        _check_expr(expr.right, columns, f"{field}.right")
    elif isinstance(expr, UnaryOp):
        if expr.op not in UNARY_OPS:
            raise _StepRuleError(
                f"{field}: unknown operator {expr.op!r}; use one of "
                f"{sorted(UNARY_OPS)}"
            )
        _check_expr(expr.operand, columns, f"{field}.operand")
    else:
        raise _StepRuleError(
            f"{field}: {expr!r} is not an expression (Col, Lit, BinOp or "
            "UnaryOp)"
        )

    # Operators over constants only would be evaluated by Python rules
    # (``~True == -2``), not column rules; the tracer never makes them.
    if not expr_columns(expr):
        raise _StepRuleError(
            f"{field}: the operator {expr.op!r} reads no column; compute "
            "constants in Python before tracing"
        )


def _check_lit(expr: Lit, field: str) -> None:
    value, kind = expr.value, expr.type
    ok = {
        "null": value is None,
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, float) and math.isfinite(value),
        "str": isinstance(value, str),
    }
    if kind not in LITERAL_TYPES:
        raise _StepRuleError(
            f"{field}: unknown literal type {kind!r}; use one of "
            f"{LITERAL_TYPES}"
        )
    if not ok[kind]:
        raise _StepRuleError(
            f"{field}: literal {value!r} does not match its type {kind!r}"
            + (" (NaN and infinity are not allowed)" if kind == "float"
               else "")
        )


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _StepRuleError(
            f"{field} must be a non-empty string, got {value!r}"
        )
    return value


def _names(values: object, field: str, unique: bool = True) -> Columns:
    if not isinstance(values, tuple) or not values:
        raise _StepRuleError(
            f"{field} must be a non-empty tuple of column names, "
            f"got {values!r}"
        )
    for v in values:
        _name(v, field)
    dups = _duplicates(values)
    if unique and dups:
        raise _StepRuleError(f"{field} lists {dups!r} more than once")
    return values


def _require(names: Columns, columns: Columns, field: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise _StepRuleError(
            f"{field}: column {missing[0]!r} not found; the table has "
            f"{list(columns)!r}"
        )


def _duplicates(names) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    return dups
