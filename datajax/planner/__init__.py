"""The DataJAX planner: stages, schemas, sharding and metrics."""

from datajax.planner.metrics import (
    PlanMetrics,
    RuntimeMetricsError,
    estimate_plan_metrics,
    load_runtime_counters,
    merge_runtime_counters,
    metrics_to_dict,
)
from datajax.planner.plan import ExecutionPlan, Stage, format_plan, plan_trace
from datajax.planner.sharding import Blocks, ByKey, Resource

__all__ = [
    "Blocks",
    "ByKey",
    "ExecutionPlan",
    "PlanMetrics",
    "Resource",
    "RuntimeMetricsError",
    "Stage",
    "estimate_plan_metrics",
    "format_plan",
    "load_runtime_counters",
    "merge_runtime_counters",
    "metrics_to_dict",
    "plan_trace",
]
