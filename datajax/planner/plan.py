"""Turn a checked trace into an ExecutionPlan of named stages.

A stage is a run of steps that needs no data exchange between ranks.
A new stage starts at every input table, at every wide step (repartition,
join, group-by: rows may have to cross ranks first) and where a table
feeds more than one step. Stages are named ``s{n}_{kind}``, e.g.
``s0_scan_logs``, ``s2_join``.

Dtypes come from running the steps with pandas on empty tables of the
input dtypes (the way Dask keeps ``_meta``), so every step is also type
checked before any data is touched. Empty tables cannot show what nulls
do: a left join of int64 columns gives int64 here but float64 once
unmatched rows bring NaN.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from datajax.ir.check import check_trace, join_output_names
from datajax.ir.errors import IRError
from datajax.ir.nodes import (
    Aggregate,
    Assign,
    Join,
    Rename,
    Repartition,
    Schema,
    Select,
    Source,
    Trace,
    step_inputs,
    step_kind,
)
from datajax.ir.printer import format_step, table_name
from datajax.planner.metrics import (
    PlanMetrics,
    estimate_plan_metrics,
    metrics_to_dict,
)
from datajax.planner.sharding import Blocks, ByKey, Resource, Sharding
from datajax.runtime.base import ExecutionError
from datajax.runtime.pandas_backend import run_trace

logger = logging.getLogger(__name__)

WIDE_KINDS = frozenset({"repartition", "join", "aggregate"})


@dataclass(frozen=True)
class Stage:
    """Steps that run without an exchange between ranks.

    Attributes:
        name: ``s{n}_{kind}``, unique in the plan.
        kind: ``scan``, ``map``, ``repartition``, ``join`` or
            ``aggregate``: what the first step does.
        steps: indices of the steps, in order.
        inputs: what feeds the stage: ``table 'name'`` for a scan, else
            the producing stage and table, e.g. ``s0_scan_logs.t1``.
        input_schemas: the schema of each input.
        input_shardings: the sharding of each input.
        output_schema: the schema of the stage's last table.
        sharding: the sharding of the stage's last table.
        exchange: the data that crosses ranks before the first step.
    """

    name: str
    kind: str
    steps: tuple[int, ...]
    inputs: tuple[str, ...]
    input_schemas: tuple[Schema, ...]
    input_shardings: tuple[Sharding, ...]
    output_schema: Schema
    sharding: Sharding
    exchange: str


@dataclass(frozen=True)
class ExecutionPlan:
    """A trace with stages, schemas, shardings and metrics.

    Attributes:
        trace: the checked trace.
        stages: the stages in run order.
        schemas: the output schema of every step, by step index.
        step_shardings: the sharding of every step's output.
        resources: the mesh the plan is made for.
        metrics: estimated metrics (and runtime values once merged).
    """

    trace: Trace
    stages: tuple[Stage, ...]
    schemas: tuple[Schema, ...]
    step_shardings: tuple[Sharding, ...]
    resources: Resource
    metrics: PlanMetrics

    @property
    def sharding(self) -> Sharding:
        """Sharding of the result."""
        return self.step_shardings[-1]

    @property
    def output_schema(self) -> Schema:
        """Schema of the result."""
        return self.schemas[-1]

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of the input tables."""
        return self.trace.sources

    def with_metrics(self, metrics: PlanMetrics) -> ExecutionPlan:
        """Return the same plan with other metrics."""
        return dataclasses.replace(self, metrics=metrics)

    def explain(self) -> str:
        """Describe the plan: stages, schemas, sharding, metrics."""
        return format_plan(self)


# ---------------------------------------------------------------------------
# planning


def plan_trace(
    trace: Trace,
    resources: Resource | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> ExecutionPlan:
    """Plan a trace for a mesh.

    Args:
        trace: the trace.
        resources: the target mesh; one rank on axis ``data`` if None.
        tables: the input tables, if known; their dtypes replace the
            trace's schemas and their rows feed the metrics estimate.

    Returns:
        The plan, with estimated metrics.

    Raises:
        IRError: the trace breaks an IR rule, or pandas rejects a step
            for the input dtypes.
        ValueError: a repartition names an axis the mesh does not have,
            or a table lacks a column.
    """
    resources = Resource() if resources is None else resources
    tables = {} if tables is None else dict(tables)
    check_trace(trace)

    for index, step in enumerate(trace.steps):
        if isinstance(step, Repartition):
            try:
                resources.resolve_axis(step.axis)
            except ValueError as exc:
                raise ValueError(
                    f"step {index} (repartition): {exc}"
                ) from None

    schemas = _infer_schemas(trace, tables)
    shardings = _infer_shardings(trace)
    stages = _make_stages(trace, schemas, shardings, resources)

    plan = ExecutionPlan(
        trace=trace,
        stages=stages,
        schemas=schemas,
        step_shardings=shardings,
        resources=resources,
        metrics=PlanMetrics(),
    )
    sample = {n: tables[n] for n in trace.sources if n in tables}
    plan = plan.with_metrics(estimate_plan_metrics(plan, sample))
    logger.debug("planned %d steps in %d stages", len(trace), len(stages))
    return plan


def _empty_table(step: Source, tables: Mapping[str, pd.DataFrame]):
    """An empty DataFrame with the dtypes of an input table."""
    if step.name in tables:
        df = tables[step.name]
        return df.iloc[:0]

    columns = {}
    for name, dtype in step.schema:
        try:
            columns[name] = pd.Series([], dtype=dtype)
        except TypeError as exc:
            raise IRError(
                f"source {step.name!r}: column {name!r} has dtype "
                f"{dtype!r}, which pandas does not know ({exc})"
            ) from None
    return pd.DataFrame(columns)


def _infer_schemas(
    trace: Trace, tables: Mapping[str, pd.DataFrame]
) -> tuple[Schema, ...]:
    """Run the trace on empty tables and read every step's dtypes."""
    empty = {
        s.name: _empty_table(s, tables)
        for s in trace.steps
        if isinstance(s, Source)
    }
    schemas: list[Schema] = []
    try:
        run_trace(
            trace,
            empty,
            observe=lambda i, df: schemas.append(Schema.from_frame(df)),
        )
    except ExecutionError as exc:
        raise IRError(
            f"step {exc.index} ({exc.kind}): pandas rejects this step for "
            f"the input dtypes: {exc.cause}",
            trace.steps,
            exc.index,
        ) from None
    return tuple(schemas)


def _infer_shardings(trace: Trace) -> tuple[Sharding, ...]:
    """Follow how each step keeps, renames or changes the sharding."""
    out: list[Sharding] = []
    columns = check_trace(trace)

    for step in trace.steps:
        if isinstance(step, Source):
            out.append(Blocks())
            continue
        if isinstance(step, Repartition):
            out.append(ByKey(step.keys, step.axis))
            continue
        if isinstance(step, Join):
            out.append(_join_sharding(step, columns, out))
            continue
        if isinstance(step, Aggregate):
            src = out[step.src]
            if isinstance(src, ByKey) and set(src.keys) <= set(step.keys):
                out.append(src)
            else:
                out.append(ByKey(step.keys))
            continue

        src = out[step.src]
        if not isinstance(src, ByKey):
            out.append(src)
        elif isinstance(step, Rename):
            mapping = dict(step.mapping)
            keys = tuple(mapping.get(k, k) for k in src.keys)
            out.append(ByKey(keys, src.axis))
        elif isinstance(step, Select) and not set(src.keys) <= set(
            step.columns
        ):
            out.append(Blocks())
        elif isinstance(step, Assign) and any(
            name in src.keys for name, _ in step.columns
        ):
            out.append(Blocks())  # a key was overwritten
        else:
            out.append(src)
    return tuple(out)


def _join_sharding(
    step: Join, columns: Sequence[tuple[str, ...]], done: Sequence[Sharding]
) -> Sharding:
    """The output sharding of a join: by the keys that survive whole."""
    _, lmap, rmap = join_output_names(
        columns[step.left],
        columns[step.right],
        step.left_on,
        step.right_on,
        step.suffixes,
    )
    left_keys = tuple(lmap[k] for k in step.left_on)
    right_keys = tuple(rmap[k] for k in step.right_on)
    axis = _join_axis(done[step.left], done[step.right])

    if left_keys == right_keys or step.how in ("inner", "left"):
        return ByKey(left_keys, axis)
    if step.how == "right":
        return ByKey(right_keys, axis)
    return Blocks()  # outer join on differently named keys


def _join_axis(left: Sharding, right: Sharding) -> str | None:
    for s in (left, right):
        if isinstance(s, ByKey) and s.axis is not None:
            return s.axis
    return None


def _make_stages(
    trace: Trace,
    schemas: Sequence[Schema],
    shardings: Sequence[Sharding],
    resources: Resource,
) -> tuple[Stage, ...]:
    """Group the steps into stages."""
    readers = [0] * len(trace.steps)
    for step in trace.steps:
        for i in step_inputs(step):
            readers[i] += 1

    groups: list[dict[str, Any]] = []
    stage_of: dict[int, int] = {}
    for index, step in enumerate(trace.steps):
        kind = step_kind(step)
        srcs = step_inputs(step)
        current = groups[stage_of[srcs[0]]] if srcs else None
        if (
            kind not in WIDE_KINDS
            and current is not None
            and current["steps"][-1] == srcs[0]
            and readers[srcs[0]] == 1
        ):
            current["steps"].append(index)
            stage_of[index] = stage_of[srcs[0]]
            continue

        stage_kind = "scan" if kind == "source" else (
            kind if kind in WIDE_KINDS else "map"
        )
        suffix = f"_{step.name}" if isinstance(step, Source) else ""
        groups.append(
            {
                "name": f"s{len(groups)}_{stage_kind}{suffix}",
                "kind": stage_kind,
                "steps": [index],
                "srcs": srcs,
            }
        )
        stage_of[index] = len(groups) - 1

    stages = []
    for group in groups:
        first = trace.steps[group["steps"][0]]
        if isinstance(first, Source):
            inputs = (f"table {first.name!r}",)
            in_schemas = (schemas[group["steps"][0]],)
            in_shardings: tuple[Sharding, ...] = (Blocks(),)
        else:
            inputs = tuple(
                f"{groups[stage_of[i]]['name']}.{table_name(i)}"
                for i in group["srcs"]
            )
            in_schemas = tuple(schemas[i] for i in group["srcs"])
            in_shardings = tuple(shardings[i] for i in group["srcs"])
        last = group["steps"][-1]
        stages.append(
            Stage(
                name=group["name"],
                kind=group["kind"],
                steps=tuple(group["steps"]),
                inputs=inputs,
                input_schemas=in_schemas,
                input_shardings=in_shardings,
                output_schema=schemas[last],
                sharding=shardings[last],
                exchange=_exchange(first, shardings, resources),
            )
        )
    return tuple(stages)


def _exchange(step: Any, shardings: Sequence[Sharding], res: Resource) -> str:
    """Describe the rows that cross ranks before ``step`` runs."""
    world = res.world_size

    def moves(src: int, keys: tuple[str, ...]) -> bool:
        s = shardings[src]
        return not (isinstance(s, ByKey) and s.keys == keys)

    def hashed(keys: tuple[str, ...]) -> str:
        return f"hash by [{', '.join(keys)}] over {world} ranks"

    if isinstance(step, Repartition):
        if not moves(step.src, step.keys):
            return "none (already by key)"
        axis = res.resolve_axis(step.axis)
        return f"{hashed(step.keys)} on axis {axis!r}"
    if isinstance(step, Join):
        sides = []
        if moves(step.left, step.left_on):
            sides.append(f"left {hashed(step.left_on)}")
        if moves(step.right, step.right_on):
            sides.append(f"right {hashed(step.right_on)}")
        return "; ".join(sides) if sides else "none (co-partitioned)"
    if isinstance(step, Aggregate):
        s = shardings[step.src]
        if isinstance(s, ByKey) and set(s.keys) <= set(step.keys):
            return "none (already by key)"
        return f"partial aggregates {hashed(step.keys)}"
    return "none"


# ---------------------------------------------------------------------------
# printing


def format_plan(plan: ExecutionPlan) -> str:
    """Describe a plan as readable text (stable, so tests compare it)."""
    trace = plan.trace
    lines = [
        f"ExecutionPlan: {len(plan.stages)} stages, {len(trace)} steps, "
        f"{plan.resources}",
        f"output {table_name(trace.output)} {plan.output_schema}",
        f"  sharding {plan.sharding}",
    ]

    for stage in plan.stages:
        lines.append("")
        lines.append(f"stage {stage.name}")
        for name, schema, sharding in zip(
            stage.inputs,
            stage.input_schemas,
            stage.input_shardings,
            strict=True,
        ):
            lines.append(f"  in  {name} {schema}")
            lines.append(f"      sharding {sharding}")
        lines.append(f"  exchange: {stage.exchange}")
        for index in stage.steps:
            lines.append(f"    {format_step(index, trace.steps[index])}")
        lines.append(f"  out {stage.output_schema}")
        lines.append(f"      sharding {stage.sharding}")

    lines.append("")
    lines.append("metrics")
    for key, value in metrics_to_dict(plan.metrics).items():
        if key in ("notes", "runtime_notes", "column_usage"):
            continue
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, list):
            value = ", ".join(value) if value else "-"
        elif value is None:
            value = "-"
        lines.append(f"  {key}: {value}")
    usage = ", ".join(f"{c}={n}" for c, n in plan.metrics.column_usage.items())
    lines.append(f"  column_usage: {usage or '-'}")
    for key in ("notes", "runtime_notes"):
        notes = getattr(plan.metrics, key)
        if notes:
            lines.append(f"  {key}:")
            lines.extend(f"    - {n}" for n in notes)
    return "\n".join(lines)
