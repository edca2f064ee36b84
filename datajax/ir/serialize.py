"""Write a trace as plain JSON data and read it back exactly.

``trace_to_list`` gives one JSON object per step, tagged by ``kind``;
expressions are nested objects tagged the same way. Only names, numbers,
strings and booleans are written: input tables appear as a name and a
schema, never as data, and reading evaluates or unpickles nothing.

Example step::

    {"kind": "filter", "src": 0,
     "predicate": {"kind": "binary", "op": "gt",
                   "left": {"kind": "col", "name": "bytes"},
                   "right": {"kind": "lit", "type": "int", "value": 0}}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from datajax.ir.check import check_trace
from datajax.ir.errors import TraceFormatError
from datajax.ir.nodes import (
    Agg,
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
    Schema,
    Select,
    Source,
    Step,
    Trace,
    UnaryOp,
    step_kind,
)

# Deeper expressions are refused rather than overflowing the stack.
MAX_EXPR_DEPTH = 200


class _Bad(Exception):
    """Internal: a field is wrong; carries the field path and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


# ---------------------------------------------------------------------------
# field readers: (value, path) -> IR value, raising _Bad


def _read_ref(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(path, f"must be a step index (integer), got {value!r}")
    return value


def _read_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Bad(path, f"must be a string, got {value!r}")
    return value


def _read_opt_str(value: Any, path: str) -> str | None:
    return None if value is None else _read_str(value, path)


def _read_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(path, f"must be true or false, got {value!r}")
    return value


def _read_list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise _Bad(path, f"must be a list, got {value!r}")
    return value


def _read_names(value: Any, path: str) -> tuple[str, ...]:
    items = _read_list(value, path)
    return tuple(_read_str(v, f"{path}[{i}]") for i, v in enumerate(items))


def _read_pairs(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for i, item in enumerate(_read_list(value, path)):
        where = f"{path}[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise _Bad(where, f"must be a pair [a, b], got {item!r}")
        pairs.append((_read_str(item[0], where), _read_str(item[1], where)))
    return tuple(pairs)


def _read_schema(value: Any, path: str) -> Schema:
    return Schema(_read_pairs(value, path))


def _read_suffixes(value: Any, path: str) -> tuple[str, str]:
    items = _read_list(value, path)
    if len(items) != 2:
        raise _Bad(path, f"must hold two strings, got {value!r}")
    return (_read_str(items[0], path), _read_str(items[1], path))


def _read_aggs(value: Any, path: str) -> tuple[Agg, ...]:
    aggs = []
    for i, item in enumerate(_read_list(value, path)):
        fields = _fields(item, f"{path}[{i}]", ("column", "func", "out"))
        aggs.append(
            Agg(
                column=_read_str(fields["column"], f"{path}[{i}].column"),
                func=_read_str(fields["func"], f"{path}[{i}].func"),
                out=_read_str(fields["out"], f"{path}[{i}].out"),
            )
        )
    return tuple(aggs)


def _read_assignments(
    value: Any, path: str
) -> tuple[tuple[str, Expr], ...]:
    out = []
    for i, item in enumerate(_read_list(value, path)):
        where = f"{path}[{i}]"
        fields = _fields(item, where, ("name", "expr"))
        out.append(
            (
                _read_str(fields["name"], f"{where}.name"),
                _read_expr(fields["expr"], f"{where}.expr"),
            )
        )
    return tuple(out)


def _read_expr(value: Any, path: str, depth: int = 0) -> Expr:
    if depth > MAX_EXPR_DEPTH:
        raise _Bad(path, f"nests deeper than {MAX_EXPR_DEPTH} levels")
    if not isinstance(value, dict):
        raise _Bad(path, f"must be an expression object, got {value!r}")
    kind = value.get("kind")
    if kind not in _EXPR_FIELDS:
        raise _Bad(
            f"{path}.kind",
            f"unknown expression kind {kind!r}; expected one of "
            f"{sorted(_EXPR_FIELDS)}",
        )
    fields = _fields(value, path, _EXPR_FIELDS[kind], tagged=True)

    if kind == "col":
        return Col(_read_str(fields["name"], f"{path}.name"))
    if kind == "lit":
        return _read_lit(fields, path)
    if kind == "binary":
        return BinOp(
            op=_read_str(fields["op"], f"{path}.op"),
            left=_read_expr(fields["left"], f"{path}.left", depth + 1),
            right=_read_expr(fields["right"], f"{path}.right", depth + 1),
        )
    return UnaryOp(
        op=_read_str(fields["op"], f"{path}.op"),
        operand=_read_expr(fields["operand"], f"{path}.operand", depth + 1),
    )


def _read_lit(fields: Mapping[str, Any], path: str) -> Lit:
    kind = _read_str(fields["type"], f"{path}.type")
    value = fields["value"]
    expected: dict[str, Callable[[Any], bool]] = {
        "null": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, float),
        "str": lambda v: isinstance(v, str),
    }
    if kind not in expected:
        raise _Bad(
            f"{path}.type",
            f"unknown literal type {kind!r}; expected one of "
            f"{sorted(expected)}",
        )
    if not expected[kind](value):
        raise _Bad(
            f"{path}.value", f"{value!r} is not a valid {kind!r} literal"
        )
    return Lit(value, kind)


def _fields(
    value: Any,
    path: str,
    names: Sequence[str],
    tagged: bool = False,
) -> dict[str, Any]:
    """Check that an object has exactly the expected fields."""
    if not isinstance(value, dict):
        raise _Bad(path, f"must be an object, got {value!r}")
    allowed = set(names) | ({"kind"} if tagged else set())
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise _Bad(where, "is not a known field")
    for name in names:
        if name not in value:
            where = f"{path}.{name}" if path else name
            raise _Bad(where, "is missing")
    return value


# ---------------------------------------------------------------------------
# field writers: IR value -> JSON value


def _write_expr(expr: Expr) -> dict[str, Any]:
    if isinstance(expr, Col):
        return {"kind": "col", "name": expr.name}
    if isinstance(expr, Lit):
        return {"kind": "lit", "type": expr.type, "value": expr.value}
    if isinstance(expr, BinOp):
        return {
            "kind": "binary",
            "op": expr.op,
            "left": _write_expr(expr.left),
            "right": _write_expr(expr.right),
        }
    if isinstance(expr, UnaryOp):
        return {
            "kind": "unary",
            "op": expr.op,
            "operand": _write_expr(expr.operand),
        }
    raise TypeError(f"{expr!r} is not an expression")


def _write_assignments(
    columns: Sequence[tuple[str, Expr]],
) -> list[dict[str, Any]]:
    return [{"name": n, "expr": _write_expr(e)} for n, e in columns]


def _same(value: Any) -> Any:
    return value


def _write_list(values: Sequence[Any]) -> list[Any]:
    return list(values)


def _write_pairs(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[a, b] for a, b in pairs]


def _write_schema(schema: Schema) -> list[list[str]]:
    return _write_pairs(schema.fields)


def _write_aggs(aggs: Sequence[Agg]) -> list[dict[str, str]]:
    return [{"column": a.column, "func": a.func, "out": a.out} for a in aggs]


# ---------------------------------------------------------------------------
# the format: kind -> (class, [(field, reader, writer)])

_Field = tuple[str, Callable[[Any, str], Any], Callable[[Any], Any]]

_STEP_FORMAT: dict[str, tuple[type, tuple[_Field, ...]]] = {
    "source": (Source, (
        ("name", _read_str, _same),
        ("schema", _read_schema, _write_schema),
    )),
    "filter": (Filter, (
        ("src", _read_ref, _same),
        ("predicate", _read_expr, _write_expr),
    )),
    "select": (Select, (
        ("src", _read_ref, _same),
        ("columns", _read_names, _write_list),
    )),
    "rename": (Rename, (
        ("src", _read_ref, _same),
        ("mapping", _read_pairs, _write_pairs),
    )),
    "assign": (Assign, (
        ("src", _read_ref, _same),
        ("columns", _read_assignments, _write_assignments),
    )),
    "aggregate": (Aggregate, (
        ("src", _read_ref, _same),
        ("keys", _read_names, _write_list),
        ("aggs", _read_aggs, _write_aggs),
        ("dropna", _read_bool, _same),
    )),
    "join": (Join, (
        ("left", _read_ref, _same),
        ("right", _read_ref, _same),
        ("how", _read_str, _same),
        ("left_on", _read_names, _write_list),
        ("right_on", _read_names, _write_list),
        ("suffixes", _read_suffixes, _write_list),
    )),
    "repartition": (Repartition, (
        ("src", _read_ref, _same),
        ("keys", _read_names, _write_list),
        ("axis", _read_opt_str, _same),
    )),
}

_EXPR_FIELDS: dict[str, tuple[str, ...]] = {
    "col": ("name",),
    "lit": ("type", "value"),
    "binary": ("op", "left", "right"),
    "unary": ("op", "operand"),
}


# ---------------------------------------------------------------------------
# public API


def trace_to_list(trace: Trace) -> list[dict[str, Any]]:
    """Write a trace as a list of JSON-ready step objects.

    Args:
        trace: the trace to write.

    Returns:
        One dict per step, holding only JSON types.

    Raises:
        TypeError: ``trace`` is not a Trace or holds a foreign object.
    """
    if not isinstance(trace, Trace):
        raise TypeError(f"expected a Trace, got {type(trace).__name__}")

    out = []
    for step in trace.steps:
        kind = step_kind(step)
        _, fields = _STEP_FORMAT[kind]
        item: dict[str, Any] = {"kind": kind}
        for name, _, write in fields:
            item[name] = write(getattr(step, name))
        out.append(item)
    return out


def trace_from_list(data: Sequence[Any], check: bool = True) -> Trace:
    """Read a trace written by ``trace_to_list`` (e.g. after ``json.load``).

    Args:
        data: a list with one object per step.
        check: also run the IR checker (column names, step references).

    Returns:
        The trace, equal to the one that was written.

    Raises:
        TraceFormatError: a step has an unknown kind, a missing or unknown
            field or a wrong type; the message names the step index and
            the field.
        IRError: ``check`` is set and the trace breaks an IR rule.
    """
    if not isinstance(data, (list, tuple)):
        raise TraceFormatError(
            f"a serialized trace must be a list of steps, got "
            f"{type(data).__name__}"
        )

    steps: list[Step] = []
    for index, item in enumerate(data):
        steps.append(_read_step(index, item))

    trace = Trace(tuple(steps))
    if check:
        check_trace(trace)
    return trace


def _read_step(index: int, item: Any) -> Step:
    if not isinstance(item, dict):
        raise TraceFormatError(
            f"step {index}: must be an object, got {item!r}"
        )
    kind = item.get("kind")
    if kind not in _STEP_FORMAT:
        raise TraceFormatError(
            f"step {index}: unknown step kind {kind!r}; expected one of "
            f"{sorted(_STEP_FORMAT)}"
        )

    cls, fields = _STEP_FORMAT[kind]
    try:
        _fields(item, "", [name for name, _, _ in fields], tagged=True)
        values = {name: read(item[name], name) for name, read, _ in fields}
    except _Bad as bad:
        raise TraceFormatError(
            f"step {index} ({kind}): field {bad.path!r} {bad.reason}"
        ) from None
    return cls(**values)
