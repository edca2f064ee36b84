"""Plan metrics: step counts, size estimates, proxies, runtime counters.

Estimates (``estimate_plan_metrics``)
-------------------------------------
* Step counts: ``transform_steps`` (filter, select, rename, assign),
  ``join_steps``, ``aggregate_steps``, ``repartition_steps``;
  ``steps_total`` is their sum (sources are not counted).
* ``estimated_input_rows`` / ``estimated_input_bytes``: summed over the
  input tables that have a sample. Bytes per column come from the real
  dtypes: the item size of fixed-width dtypes (plus one mask byte for
  pandas' nullable dtypes, the code size for categoricals) and, for
  strings and other objects, the measured UTF-8 length of the values.
  Tables of up to ``SAMPLE_ROWS`` rows are measured whole (exact); larger
  ones on ``SAMPLE_ROWS`` evenly spaced rows, scaled to the row count.
* ``row_width``: ``ceil(estimated_input_bytes / estimated_input_rows)``;
  without rows, the sum of the fixed widths of the input columns.
* ``shuffle_bytes``: bytes that cross ranks in repartition and join
  steps, ``bytes * (W - 1) // W`` for world size ``W`` (a uniform hash
  keeps ``1/W`` of the rows in place). A side already sharded by its
  keys moves nothing. Rows through the plan are estimated, not measured:
  filters and group-bys keep every row (an upper bound), joins give
  ``max(l, r)`` (inner), ``l`` (left), ``r`` (right) or ``l + r``
  (outer) rows (right for joins on keys unique on one side; joins that
  multiply rows are underestimated). Group-by
  exchanges are not counted (a local pre-aggregation shrinks them to an
  unknown size).
* ``occupancy_proxy = lane_fill * tile_fill``, where
  ``lane_fill = row_width / (128 * ceil(row_width / 128))`` (the share of
  128-byte lines a packed row fills) and
  ``tile_fill = rows / (128 * ceil(rows / 128))`` (the share of 128-row
  tiles filled); 0 without rows. In [0, 1].
* ``l2_reuse_proxy = 1 - distinct / uses`` over the column references of
  the plan (a column read again is likely still cached); 0 without
  references. In [0, 1).
* ``column_usage``: references per column (input columns read by no step
  count 0); ``pack_order_hint``: those columns by count descending, then
  by name.

Runtime counters
----------------
A runtime-metrics object (written by the jobs) holds ``bytes_moved``,
``shuffle_bytes``, optionally ``wgmma_occupancy`` and ``l2_reuse`` (GPU
profiler values, passed through as given) and ``notes`` (strings such as
``mpi_bytes=1048576``). Aliases: ``input_bytes``, ``bytes_shuffled``,
``occupancy``, ``cache_reuse``. Other keys are kept as ``key=value``
notes. ``DATAJAX_RUNTIME_METRICS`` names such a file or holds the object
inline (text starting with ``{``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from datajax.ir.check import join_output_names
from datajax.ir.nodes import (
    TRANSFORM_KINDS,
    Aggregate,
    Assign,
    Col,
    Filter,
    Join,
    Rename,
    Repartition,
    Schema,
    Select,
    Source,
    expr_columns,
    step_kind,
)
from datajax.planner.sharding import ByKey

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan

logger = logging.getLogger(__name__)

ENV_VAR = "DATAJAX_RUNTIME_METRICS"

# Largest number of rows measured per table; bigger tables are sampled.
SAMPLE_ROWS = 4096
LINE_BYTES = 128
TILE_ROWS = 128

# canonical key -> accepted aliases (the canonical name first)
_ALIASES: dict[str, tuple[str, ...]] = {
    "bytes_moved": ("bytes_moved", "input_bytes"),
    "shuffle_bytes": ("shuffle_bytes", "bytes_shuffled"),
    "wgmma_occupancy": ("wgmma_occupancy", "occupancy"),
    "l2_reuse": ("l2_reuse", "cache_reuse"),
}
_BYTE_KEYS = ("bytes_moved", "shuffle_bytes")
_FRACTION_KEYS = ("wgmma_occupancy", "l2_reuse")


class RuntimeMetricsError(ValueError):
    """Runtime counters cannot be read or hold a wrong value."""


# ---------------------------------------------------------------------------
# the metrics record


@dataclass(frozen=True)
class PlanMetrics:
    """Estimated (and, once merged, measured) figures of one plan."""

    transform_steps: int = 0
    join_steps: int = 0
    aggregate_steps: int = 0
    repartition_steps: int = 0
    steps_total: int = 0
    estimated_input_rows: int = 0
    estimated_input_bytes: int = 0
    shuffle_bytes: int = 0
    row_width: int = 0
    occupancy_proxy: float = 0.0
    l2_reuse_proxy: float = 0.0
    pack_order_hint: tuple[str, ...] = ()
    column_usage: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    runtime_bytes_moved: int | None = None
    runtime_shuffle_bytes: int | None = None
    runtime_wgmma_occupancy: float | None = None
    runtime_l2_reuse: float | None = None
    runtime_notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# column widths


def dtype_width(dtype: Any) -> int | None:
    """Bytes per value of a fixed-width dtype; None for variable width.

    Args:
        dtype: a pandas or NumPy dtype, or its name.

    Returns:
        The width, or None for strings, objects and unknown dtypes.
    """
    try:
        dtype = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return None

    if isinstance(dtype, np.dtype):
        return dtype.itemsize if dtype.kind in "biufcmM" else None
    if isinstance(dtype, pd.CategoricalDtype):
        n = len(dtype.categories) if dtype.categories is not None else 0
        return 1 if n < 2**7 else 2 if n < 2**15 else 4
    if isinstance(dtype, pd.DatetimeTZDtype):
        return 8
    if isinstance(dtype, pd.ArrowDtype):
        bits = getattr(dtype.pyarrow_dtype, "bit_width", None)
        try:
            return max(1, int(bits) // 8) if bits else None
        except ValueError:  # variable-width arrow types have no width
            return None
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and isinstance(numpy_dtype, np.dtype)
        and numpy_dtype.kind in "biuf"
    ):
        return numpy_dtype.itemsize + 1  # masked arrays: one mask byte
    return None


def _value_bytes(value: Any) -> int:
    """Bytes of one value of a variable-width column."""
    if value is None or value is pd.NA or value is pd.NaT:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, (bool, np.bool_)):
        return 1
    if isinstance(value, float) and math.isnan(value):
        return 0
    if isinstance(value, (int, float, np.number)):
        return 8
    if isinstance(value, (list, tuple, np.ndarray)):
        return sum(_value_bytes(v) for v in value)
    return len(str(value).encode("utf-8", "surrogatepass"))


def _sample_positions(n: int) -> np.ndarray | None:
    """Evenly spaced row positions to measure, or None for all rows."""
    if n <= SAMPLE_ROWS:
        return None
    return np.linspace(0, n - 1, SAMPLE_ROWS).astype(np.int64)


def measure_frame(df: pd.DataFrame) -> tuple[int, dict[str, float], int]:
    """Measure the bytes of a DataFrame column by column.

    Args:
        df: the table.

    Returns:
        ``(rows, mean bytes per row by column, total bytes)``; the total
        is exact for tables of up to ``SAMPLE_ROWS`` rows.
    """
    rows = len(df)
    positions = _sample_positions(rows)
    widths: dict[str, float] = {}
    total = 0

    for name, series in df.items():
        fixed = dtype_width(series.dtype)
        if isinstance(series.dtype, pd.CategoricalDtype):
            fixed = series.cat.codes.dtype.itemsize
        if fixed is not None:
            widths[str(name)] = float(fixed)
            total += fixed * rows
            continue

        values = series if positions is None else series.iloc[positions]
        measured = sum(_value_bytes(v) for v in values.tolist())
        if positions is None:
            total += measured
            widths[str(name)] = measured / rows if rows else 0.0
        else:
            mean = measured / len(positions)
            widths[str(name)] = mean
            total += round(mean * rows)
    return rows, widths, int(total)


# ---------------------------------------------------------------------------
# estimation


def _sample_tables(
    plan: ExecutionPlan, sample_df: Any
) -> dict[str, pd.DataFrame]:
    sources = plan.trace.sources
    if sample_df is None:
        return {}
    if isinstance(sample_df, pd.DataFrame):
        if len(sources) != 1:
            raise ValueError(
                f"the plan reads {len(sources)} tables {list(sources)!r}; "
                "pass sample_df as a mapping {table name: DataFrame}"
            )
        return {sources[0]: sample_df}
    if isinstance(sample_df, Mapping):
        unknown = sorted(set(sample_df) - set(sources))
        if unknown:
            raise ValueError(
                f"sample_df has tables {unknown!r} that the plan does not "
                f"read; it reads {list(sources)!r}"
            )
        return dict(sample_df)
    raise TypeError(
        "sample_df must be None, a DataFrame or a mapping of table name "
        f"to DataFrame, not {type(sample_df).__name__}"
    )


def estimate_plan_metrics(
    plan: ExecutionPlan, sample_df: Any = None
) -> PlanMetrics:
    """Estimate the metrics of a plan (formulas in the module docstring).

    Args:
        plan: the plan.
        sample_df: a DataFrame (for a plan with one input table) or a
            mapping of table name to DataFrame; tables without a sample
            count 0 rows and bytes.

    Returns:
        The metrics, with no runtime values.

    Raises:
        ValueError: ``sample_df`` names tables the plan does not read, or
            is a single DataFrame for a plan with several inputs.
    """
    trace = plan.trace
    samples = _sample_tables(plan, sample_df)
    world = plan.resources.world_size
    notes: list[str] = []

    # walk the steps, carrying (rows, column widths) of every table
    rows: list[int] = []
    widths: list[dict[str, float]] = []
    counts: Counter[str] = Counter()
    usage: Counter[str] = Counter()
    input_rows = input_bytes = 0
    shuffle = 0

    for index, step in enumerate(trace.steps):
        kind = step_kind(step)
        counts[kind] += 1
        schema = plan.schemas[index]
        for name in _step_reads(step):
            usage[name] += 1

        if isinstance(step, Source):
            n, w, nbytes = _source_estimate(step, schema, samples, notes)
            input_rows += n
            input_bytes += nbytes
            for name in step.schema.names:
                usage.setdefault(name, 0)
        elif isinstance(step, Join):
            n, w = _join_estimate(step, rows, widths)
            moved = _join_moved(plan, step, rows, widths)
            shuffle += moved * (world - 1) // world
        else:
            n, w = _unary_estimate(step, schema, rows, widths)
            if isinstance(step, Repartition):
                if _already_by(plan.step_shardings[step.src], step.keys):
                    notes.append(
                        f"repartition t{index}: the input is already "
                        f"by_key({', '.join(step.keys)}); nothing moves"
                    )
                else:
                    moved = _table_bytes(rows[step.src], widths[step.src])
                    shuffle += moved * (world - 1) // world
        rows.append(n)
        widths.append(w)

    # widths and proxies
    if input_rows:
        row_width = math.ceil(input_bytes / input_rows)
    else:
        row_width = sum(
            dtype_width(t) or 0
            for s in trace.steps
            if isinstance(s, Source)
            for _, t in s.schema
        )
    occupancy = _occupancy_proxy(row_width, input_rows)
    uses = sum(usage.values())
    reuse = 1.0 - len([c for c in usage if usage[c]]) / uses if uses else 0.0

    # notes that say how the figures were made
    if counts["filter"] or counts["aggregate"] or counts["join"]:
        notes.append(
            "rows through the plan are estimates: filters and group-bys "
            "keep every row; joins give max(l, r) (inner), l (left), r "
            "(right), l + r (outer)"
        )
    if world == 1 and (counts["join"] or counts["repartition"]):
        notes.append("world_size=1: no bytes cross ranks")
    if world > 1 and counts["aggregate"]:
        notes.append("group-by exchanges are not counted in shuffle_bytes")
    notes.append(
        f"occupancy_proxy=lane_fill*tile_fill with row_width={row_width}, "
        f"line_bytes={LINE_BYTES}, rows={input_rows}, "
        f"tile_rows={TILE_ROWS}"
    )
    notes.append(
        f"l2_reuse_proxy=1-distinct/uses with "
        f"distinct={len([c for c in usage if usage[c]])}, uses={uses}"
    )

    transform = sum(counts[k] for k in TRANSFORM_KINDS)
    steps_total = (
        transform + counts["join"] + counts["aggregate"]
        + counts["repartition"]
    )
    pack_order = tuple(sorted(usage, key=lambda c: (-usage[c], c)))
    metrics = PlanMetrics(
        transform_steps=transform,
        join_steps=counts["join"],
        aggregate_steps=counts["aggregate"],
        repartition_steps=counts["repartition"],
        steps_total=steps_total,
        estimated_input_rows=int(input_rows),
        estimated_input_bytes=int(input_bytes),
        shuffle_bytes=int(shuffle),
        row_width=int(row_width),
        occupancy_proxy=_unit(occupancy),
        l2_reuse_proxy=_unit(reuse),
        pack_order_hint=pack_order,
        column_usage={c: int(usage[c]) for c in pack_order},
        notes=tuple(notes),
    )
    logger.debug("estimated plan metrics: %s", metrics)
    return metrics


def _step_reads(step: Any) -> list[str]:
    """Column names a step reads, once per reference."""
    if isinstance(step, Filter):
        return expr_columns(step.predicate)
    if isinstance(step, Select):
        return list(step.columns)
    if isinstance(step, Rename):
        return [old for old, _ in step.mapping]
    if isinstance(step, Assign):
        return [c for _, e in step.columns for c in expr_columns(e)]
    if isinstance(step, Aggregate):
        return list(step.keys) + [a.column for a in step.aggs]
    if isinstance(step, Join):
        return list(step.left_on) + list(step.right_on)
    if isinstance(step, Repartition):
        return list(step.keys)
    return []


def _source_estimate(
    step: Source,
    schema: Schema,
    samples: Mapping[str, pd.DataFrame],
    notes: list[str],
) -> tuple[int, dict[str, float], int]:
    """Rows, column widths and bytes of one input table."""
    sample = samples.get(step.name)
    if sample is not None:
        missing = [c for c in step.schema.names if c not in sample.columns]
        if missing:
            raise ValueError(
                f"the sample of table {step.name!r} lacks column "
                f"{missing[0]!r}; it has {list(sample.columns)!r}"
            )
        return measure_frame(sample[list(step.schema.names)])

    notes.append(
        f"no sample for table {step.name!r}: its rows and bytes count as 0"
    )
    widths = {}
    for name, dtype in schema:
        width = dtype_width(dtype)
        if width is None:
            notes.append(
                f"column {name!r} of table {step.name!r} has variable "
                f"width ({dtype}) and no sample; its width counts as 0"
            )
        widths[name] = float(width or 0)
    return 0, widths, 0


def _unary_estimate(
    step: Any,
    schema: Schema,
    rows: Sequence[int],
    widths: Sequence[dict[str, float]],
) -> tuple[int, dict[str, float]]:
    """Rows and column widths after a one-input step."""
    n = rows[step.src]
    w_in = widths[step.src]

    if isinstance(step, Select):
        return n, {c: w_in[c] for c in step.columns}
    if isinstance(step, Rename):
        mapping = dict(step.mapping)
        return n, {mapping.get(c, c): v for c, v in w_in.items()}
    if isinstance(step, Assign):
        w = dict(w_in)
        for name, expr in step.columns:
            fixed = dtype_width(schema.dtypes[name])
            if isinstance(expr, Col):
                w[name] = w_in[expr.name]
            elif fixed is not None:
                w[name] = float(fixed)
            else:  # e.g. joined strings: as wide as what they read
                w[name] = float(sum(w_in[c] for c in expr_columns(expr)))
        return n, w
    if isinstance(step, Aggregate):
        w = {k: w_in[k] for k in step.keys}
        for agg in step.aggs:
            fixed = dtype_width(schema.dtypes[agg.out])
            w[agg.out] = (
                float(fixed) if fixed is not None else w_in[agg.column]
            )
        return n, w
    return n, dict(w_in)  # filter, repartition: same columns


def _join_estimate(
    step: Join, rows: Sequence[int], widths: Sequence[dict[str, float]]
) -> tuple[int, dict[str, float]]:
    """Rows and column widths after a join."""
    lw, rw = widths[step.left], widths[step.right]
    _, lmap, rmap = join_output_names(
        tuple(lw), tuple(rw), step.left_on, step.right_on, step.suffixes
    )
    w = {lmap[c]: v for c, v in lw.items()}
    for c, v in rw.items():
        w.setdefault(rmap[c], v)

    nl, nr = rows[step.left], rows[step.right]
    n = {
        "inner": max(nl, nr),
        "left": nl,
        "right": nr,
        "outer": nl + nr,
    }[step.how]
    return n, w


def _join_moved(
    plan: ExecutionPlan,
    step: Join,
    rows: Sequence[int],
    widths: Sequence[dict[str, float]],
) -> int:
    """Bytes of the join sides that are not yet sharded by their keys."""
    moved = 0
    for src, keys in ((step.left, step.left_on), (step.right, step.right_on)):
        if not _already_by(plan.step_shardings[src], keys):
            moved += _table_bytes(rows[src], widths[src])
    return moved


def _already_by(sharding: Any, keys: Sequence[str]) -> bool:
    return isinstance(sharding, ByKey) and sharding.keys == tuple(keys)


def _table_bytes(rows: int, widths: Mapping[str, float]) -> int:
    return int(round(rows * sum(widths.values())))


def _occupancy_proxy(row_width: int, rows: int) -> float:
    if row_width <= 0 or rows <= 0:
        return 0.0
    lane_fill = row_width / (LINE_BYTES * math.ceil(row_width / LINE_BYTES))
    tile_fill = rows / (TILE_ROWS * math.ceil(rows / TILE_ROWS))
    return lane_fill * tile_fill


def _unit(value: float) -> float:
    """Clamp to [0, 1]; a non-finite value becomes 0."""
    if not math.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, value)))


# ---------------------------------------------------------------------------
# runtime counters


def normalize_runtime_counters(
    counters: Any, source: str = "runtime counters", text: str | None = None
) -> dict[str, Any]:
    """Check runtime counters and bring them to their canonical keys.

    Args:
        counters: the parsed JSON object.
        source: names where the counters came from, for error messages.
        text: the JSON text, to point errors at a line and column.

    Returns:
        A dict with ``notes`` (list of str) and those of ``bytes_moved``,
        ``shuffle_bytes`` (int), ``wgmma_occupancy``, ``l2_reuse``
        (float) that were given. Unknown keys become ``key=value`` notes.

    Raises:
        RuntimeMetricsError: not an object, a value of the wrong type or
            out of range, or two aliases with different values.
    """
    if not isinstance(counters, Mapping):
        raise RuntimeMetricsError(
            f"{source}: runtime metrics must be a JSON object, got "
            f"{type(counters).__name__}"
        )

    def fail(key: str, message: str) -> RuntimeMetricsError:
        where = _locate_key(text, key) if text is not None else ""
        return RuntimeMetricsError(
            f"{source}: key {key!r}{where} {message}"
        )

    out: dict[str, Any] = {}
    known = {alias for names in _ALIASES.values() for alias in names}
    for canonical, names in _ALIASES.items():
        given = [(k, counters[k]) for k in names if k in counters]
        if not given:
            continue
        key, value = given[0]
        for other, other_value in given[1:]:
            if other_value != value:
                raise fail(
                    other,
                    f"= {other_value!r} disagrees with {key!r} = "
                    f"{value!r}; they are aliases, give one of them",
                )
        if canonical in _BYTE_KEYS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise fail(
                    key,
                    f"must be a JSON integer (a byte count), got "
                    f"{value!r}",
                )
            if value < 0:
                raise fail(key, f"must not be negative, got {value!r}")
            out[canonical] = int(value)
        else:
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise fail(
                    key,
                    f"must be a fraction between 0 and 1, got {value!r} "
                    "(divide a percentage by 100)",
                )
            out[canonical] = float(value)

    notes = counters.get("notes", [])
    if not isinstance(notes, list) or not all(
        isinstance(n, str) for n in notes
    ):
        raise fail("notes", f"must be a list of strings, got {notes!r}")
    notes = list(notes)
    for key in counters:
        if key not in known and key != "notes":
            value = counters[key]
            shown = value if isinstance(value, str) else json.dumps(
                value, sort_keys=True, separators=(",", ":")
            )
            notes.append(f"{key}={shown}")
    out["notes"] = notes
    return out


def _locate_key(text: str, key: str) -> str:
    """Point at the first ``"key":`` in the text as ' at line L, column C'."""
    needle = json.dumps(key)
    pos = text.find(needle)
    if pos < 0:
        return ""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f" (line {line}, column {column})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write a number or null")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_runtime_counters(
    text: str, source: str = "runtime counters"
) -> dict[str, Any]:
    """Parse and check runtime counters given as JSON text.

    Args:
        text: a JSON object.
        source: names where the text came from, for error messages.

    Returns:
        The canonical counters (see ``normalize_runtime_counters``).

    Raises:
        RuntimeMetricsError: invalid JSON (with line and column), or a
            wrong value.
    """
    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise RuntimeMetricsError(
            f"{source}: invalid JSON at line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # from the hooks above
        raise RuntimeMetricsError(f"{source}: {exc}") from None
    return normalize_runtime_counters(data, source=source, text=text)


def load_runtime_counters(
    text_or_path: str | os.PathLike[str], source: str | None = None
) -> dict[str, Any]:
    """Read runtime counters from a file or from inline JSON.

    Args:
        text_or_path: a path, or JSON text starting with ``{``.
        source: names where the value came from (e.g. an environment
            variable), for error messages.

    Returns:
        The canonical counters (see ``normalize_runtime_counters``).

    Raises:
        RuntimeMetricsError: the file cannot be read, the JSON is invalid
            (line and column given) or a value is wrong.
    """
    if not isinstance(text_or_path, (str, os.PathLike)):
        raise TypeError(
            "runtime counters must be given as a path or JSON text, not "
            f"{type(text_or_path).__name__}"
        )
    label = source or "runtime metrics"

    inline = isinstance(text_or_path, str) and text_or_path.lstrip()
    if inline and inline[0] in "{[":
        if inline[0] == "[":
            raise RuntimeMetricsError(
                f"{label} (inline JSON): runtime metrics must be a JSON "
                "object starting with '{', not a list"
            )
        return parse_runtime_counters(
            text_or_path, source=f"{label} (inline JSON)"
        )

    path = os.fspath(text_or_path)
    where = f"{label}={path!r}" if source else repr(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeMetricsError(
            f"{where}: cannot read the runtime metrics file ({exc}); give "
            "a readable JSON file, or inline JSON starting with '{'"
        ) from None
    return parse_runtime_counters(text, source=where)


def runtime_counters_from_env(
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """Read the counters named by ``DATAJAX_RUNTIME_METRICS``, if set.

    An unset or blank variable means no counters.

    Returns:
        The canonical counters, or None.

    Raises:
        RuntimeMetricsError: the variable names an unreadable file or
            holds invalid JSON or values; the message names the variable.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR, "")
    if not value.strip():
        return None
    return load_runtime_counters(value, source=ENV_VAR)


def merge_runtime_counters(
    metrics: PlanMetrics, counters: Mapping[str, Any]
) -> PlanMetrics:
    """Merge measured runtime counters into plan metrics.

    Values given replace the previous runtime values; values not given
    keep them. Notes are appended.

    Args:
        metrics: the estimated metrics.
        counters: a runtime-metrics object (aliases accepted).

    Returns:
        New metrics with the ``runtime_*`` fields set.

    Raises:
        RuntimeMetricsError: a counter has a wrong type or value.
    """
    canon = normalize_runtime_counters(counters)
    changes: dict[str, Any] = {
        f"runtime_{key}": canon[key]
        for key in (*_BYTE_KEYS, *_FRACTION_KEYS)
        if key in canon
    }
    changes["runtime_notes"] = tuple(metrics.runtime_notes) + tuple(
        canon["notes"]
    )
    return dataclasses.replace(metrics, **changes)


def metrics_to_dict(metrics: PlanMetrics) -> dict[str, Any]:
    """Turn metrics into JSON-ready data (no NaN or infinity, ints kept).

    Args:
        metrics: the metrics.

    Returns:
        A dict of JSON types; non-finite floats become None.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(metrics):
        out[f.name] = _json_value(getattr(metrics, f.name))
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value
