"""DataJAX: MPI batch jobs and a small tracing dataframe library."""

from datajax.frame import ColumnExpr, Frame, GroupBy, col
from datajax.planner import sharding as shard
from datajax.planner.sharding import Resource
from datajax.tracing import djit, pjit

__version__ = "0.1.0"

__all__ = [
    "ColumnExpr",
    "Frame",
    "GroupBy",
    "Resource",
    "__version__",
    "col",
    "djit",
    "pjit",
    "shard",
]
