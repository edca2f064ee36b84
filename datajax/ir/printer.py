"""Print traces and expressions as short, stable text.

Step ``i`` is always printed as ``t{i}``, so the same trace prints the
same way every time; tests compare printed traces and plans.
"""

from __future__ import annotations

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


def table_name(index: int) -> str:
    """Name the table produced by step ``index``."""
    return f"t{index}"


def format_name(name: str) -> str:
    """Print a column name bare when it is an identifier, else quoted."""
    return name if name.isidentifier() else repr(name)


def format_names(names: tuple[str, ...]) -> str:
    """Print a list of column names as ``[a, b]``."""
    return "[" + ", ".join(format_name(n) for n in names) + "]"


def format_expr(expr: Expr) -> str:
    """Print an expression in infix form, fully parenthesised."""
    if isinstance(expr, Col):
        return format_name(expr.name)
    if isinstance(expr, Lit):
        return repr(expr.value)
    if isinstance(expr, BinOp):
        left = format_expr(expr.left)
        right = format_expr(expr.right)
        return f"({left} {BINARY_OPS.get(expr.op, expr.op)} {right})"
    if isinstance(expr, UnaryOp):
        inner = format_expr(expr.operand)
        if expr.op == "neg":
            return f"-{inner}"
        if expr.op == "not":
            return f"~{inner}"
        return f"{expr.op}({inner})"
    return f"<not an expression: {expr!r}>"


def format_step(index: int, step: Step) -> str:
    """Print one step as ``t{index} = kind args``."""
    out = table_name(index)

    if isinstance(step, Source):
        return f"{out} = source {step.name!r} {step.schema}"
    if isinstance(step, Filter):
        pred = format_expr(step.predicate)
        return f"{out} = filter {table_name(step.src)} where {pred}"
    if isinstance(step, Select):
        cols = format_names(step.columns)
        return f"{out} = select {table_name(step.src)} {cols}"
    if isinstance(step, Rename):
        pairs = ", ".join(
            f"{format_name(a)} -> {format_name(b)}" for a, b in step.mapping
        )
        return f"{out} = rename {table_name(step.src)} {{{pairs}}}"
    if isinstance(step, Assign):
        body = ", ".join(
            f"{format_name(name)} = {format_expr(expr)}"
            for name, expr in step.columns
        )
        return f"{out} = assign {table_name(step.src)} {body}"
    if isinstance(step, Aggregate):
        aggs = ", ".join(
            f"{format_name(a.out)} = {a.func}({format_name(a.column)})"
            for a in step.aggs
        )
        text = (
            f"{out} = aggregate {table_name(step.src)} "
            f"by {format_names(step.keys)} {{{aggs}}}"
        )
        return text if step.dropna else text + " keep_null_keys"
    if isinstance(step, Join):
        if step.left_on == step.right_on:
            keys = f"on {format_names(step.left_on)}"
        else:
            keys = (
                f"on {format_names(step.left_on)} = "
                f"{format_names(step.right_on)}"
            )
        return (
            f"{out} = join {step.how} {table_name(step.left)}, "
            f"{table_name(step.right)} {keys} suffixes {step.suffixes!r}"
        )
    if isinstance(step, Repartition):
        axis = "" if step.axis is None else f" over {step.axis!r}"
        keys = ", ".join(format_name(k) for k in step.keys)
        return (
            f"{out} = repartition {table_name(step.src)} "
            f"by_key({keys}){axis}"
        )
    return f"{out} = <not a step: {step!r}>"


def format_trace(trace: Trace) -> str:
    """Print a whole trace, one step per line, ending with its result."""
    lines = [format_step(i, s) for i, s in enumerate(trace.steps)]
    lines.append(f"return {table_name(trace.output)}")
    return "\n".join(lines)
