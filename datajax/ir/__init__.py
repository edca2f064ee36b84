"""The DataJAX IR: immutable steps and expressions, checker, printer."""

from datajax.ir.check import check_trace, join_output_names
from datajax.ir.errors import IRError, TraceFormatError
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
    lit,
)
from datajax.ir.printer import format_expr, format_step, format_trace

__all__ = [
    "Agg",
    "Aggregate",
    "Assign",
    "BinOp",
    "Col",
    "Expr",
    "Filter",
    "IRError",
    "Join",
    "Lit",
    "Rename",
    "Repartition",
    "Schema",
    "Select",
    "Source",
    "Step",
    "Trace",
    "TraceFormatError",
    "UnaryOp",
    "check_trace",
    "format_expr",
    "format_step",
    "format_trace",
    "join_output_names",
    "lit",
]
