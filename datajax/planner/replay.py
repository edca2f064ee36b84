"""Replay a trace on a sample, measure every stage, suggest a policy.

``replay_and_tune`` is what ``datajax-replay-tuner`` runs.  Every rank
calls it with its own share of each input table.  It

1. plans the trace for the target mesh (``Resource(mesh_axes,
   world_size)``) and, on rank 0, estimates the plan's metrics from the
   *whole* tables (so the estimates, and the policy, do not depend on how
   many ranks replay it), then merges the runtime counters given to it
   (a runtime-metrics JSON, e.g. ``--metrics-in`` or
   ``DATAJAX_RUNTIME_METRICS``) and derives the staged policy
   (:mod:`datajax.planner.policy`);
2. replays the plan stage by stage with the chosen backend: each stage
   becomes a small plan of its own whose inputs are the shares of the
   input tables or the outputs of earlier stages, run between two
   synchronisation points so that its wall time is the slowest rank's;
3. gathers on rank 0 what was measured: seconds per stage (median, min
   and max over the timed rounds), rows in and out per stage (summed over
   ranks), the bytes the ranks sent to each other through the tuner's own
   calls (:class:`datajax.mpi.Comm` counters) and, when the PMPI
   interposer is preloaded, every byte handed to MPI (Bodo's shuffles
   included), per stage and per rank.

What is rank-count independent: the metrics (estimates and runtime
values) and the policy depend on the trace, the whole tables, the runtime
counters and the target mesh only, never on the number of ranks that
replay it.  Everything under ``run`` in :meth:`ReplayReport.to_dict` is a
measurement of this run (timings, per-rank counters, rows through wide
stages) and changes from run to run.

With a backend that keeps rows on their rank (``pandas``), joins and
group-bys run on each rank's share alone: the rows out of those stages
under N > 1 ranks are per-rank partial results.  With an SPMD backend
(``bodo``) the shares form one distributed table and rows move between
ranks where a stage needs it.

Reading shares: ``read_share`` gives rank r of N its part of a table
file, typed by the trace's schema: Parquet rows ``[r*n//N, (r+1)*n//N)``
(only the row groups that overlap are read); CSV and JSON Lines records
whose first byte lies in the rank's byte range ``[r*T//N, (r+1)*T//N)``
(see :mod:`datajax.io.sources`; CSV quote parity as the export job
finds it, so a quoted field holding newlines stays whole).

Known limits: rank 0 reads every input table whole once more for the
estimates (it holds the whole sample in memory for that while);
intermediate stage results are held in memory until their last reader
has run.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import math
import os
import shlex
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from datajax.io.exporter import write_json_atomic
from datajax.io.readers import (
    BOM,
    LOOKAHEAD_BYTES,
    boundary_newlines,
    count_quotes_in_range,
    read_csv_header,
)
from datajax.io.sources import FORMATS, format_of, rank_byte_range
from datajax.ir.errors import IRError, TraceFormatError
from datajax.ir.nodes import Schema, Source, Trace, step_inputs
from datajax.ir.serialize import trace_from_list, trace_to_list
from datajax.planner.metrics import (
    ENV_VAR as METRICS_ENV_VAR,
)
from datajax.planner.metrics import (
    PlanMetrics,
    RuntimeMetricsError,
    load_runtime_counters,
    merge_runtime_counters,
    metrics_to_dict,
    normalize_runtime_counters,
)
from datajax.planner.plan import ExecutionPlan, Stage, plan_trace
from datajax.planner.policy import StagedPolicy, tune_policy
from datajax.planner.sharding import Resource
from datajax.process import peak_rss_bytes

log = logging.getLogger(__name__)

__all__ = [
    "JOB_NAME",
    "ReplayError",
    "ReplayReport",
    "StageRun",
    "TableFile",
    "dump_trace",
    "load_trace",
    "read_share",
    "read_table",
    "replay_and_tune",
    "runtime_layers",
    "stage_runs",
]

JOB_NAME = "datajax-replay-tuner"
STAGE_INPUT_PREFIX = "stage_input_"
CANONICAL_COUNTERS = (
    "bytes_moved", "shuffle_bytes", "wgmma_occupancy", "l2_reuse",
)


class PipelineError(ValueError):
    """A user's pipeline raised while ``dump_trace`` traced it."""


class ReplayError(ValueError):
    """The replay cannot go on; the message is the failing rank's.

    Attributes:
        rank: the rank that reported it first.
        internal: True when a backend failed in a way bad input does not
            explain (the job exits 1 instead of 2).
    """

    def __init__(
        self, message: str, rank: int = 0, internal: bool = False
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.internal = internal


# ---------------------------------------------------------------------------
# trace files


def load_trace(path: str) -> Trace:
    """Read a trace file written by ``trace_to_list`` (a JSON list).

    Raises:
        ReplayError: the file is missing or unreadable, not JSON, not a
            list of steps, has an unknown step kind or breaks an IR rule;
            the message names the file and, where known, the step.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise ReplayError(
            f"{path}: cannot read the trace ({error.strerror})"
        ) from None
    except UnicodeDecodeError as error:
        raise ReplayError(
            f"{path}: the trace is not UTF-8 text ({error.reason})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReplayError(
            f"{path}: line {error.lineno} column {error.colno}: the trace "
            f"is not valid JSON ({error.msg})"
        ) from None
    try:
        return trace_from_list(data)
    except TraceFormatError as error:
        raise ReplayError(f"{path}: {error}") from None
    except IRError as error:
        raise ReplayError(f"{path}: the trace is not valid: {error}") from None


# ---------------------------------------------------------------------------
# table files and their shares


@dataclass(frozen=True)
class TableFile:
    """An input table of the trace, bound to a file.

    Attributes:
        name: the trace's name for the table (a source step).
        path: the file.
        format: ``csv``, ``json`` (JSON Lines) or ``parquet``.
        schema: the columns and dtypes the trace expects; the file's
            values are read as these dtypes.
        size: the file's size in bytes.
    """

    name: str
    path: str
    format: str
    schema: Schema
    size: int = 0


def table_file(
    name: str, path: str, fmt: str | None, schema: Schema
) -> TableFile:
    """Check that a table file exists and can be typed.

    Raises:
        ReplayError: missing or unreadable file, unknown format.
    """
    try:
        fmt = format_of(path, fmt)
    except ValueError as error:
        raise ReplayError(f"table {name!r}: {error}") from None
    if not os.path.exists(path):
        raise ReplayError(f"{path}: no such file (table {name!r})")
    if not os.path.isfile(path):
        raise ReplayError(f"{path}: not a regular file (table {name!r})")
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ReplayError(
            f"{path}: cannot be read ({error.strerror})"
        ) from None
    for column, dtype in schema:
        _arrow_type(dtype, path, column, fmt)  # fail early
    return TableFile(name, path, fmt, schema, size)


def _arrow_type(
    dtype: str, path: str, column: str, fmt: str
) -> pa.DataType | None:
    """The Arrow type a text file's column is parsed as, for a dtype.

    Parquet files carry their own types (cast afterwards), so any dtype
    pandas knows is fine there; text needs a type to parse into.
    """
    try:
        resolved = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        raise ReplayError(
            f"{path}: column {column!r} has dtype {dtype!r} in the trace, "
            "which pandas does not know"
        ) from None
    if fmt == "parquet":
        return None
    numpy_dtype = getattr(resolved, "numpy_dtype", resolved)
    if isinstance(resolved, pd.StringDtype) or (
        isinstance(resolved, np.dtype) and resolved.kind == "O"
    ):
        return pa.string()
    if isinstance(numpy_dtype, np.dtype):
        if numpy_dtype.kind == "b":
            return pa.bool_()
        if numpy_dtype.kind in "iuf":
            return pa.from_numpy_dtype(numpy_dtype)
        if numpy_dtype.kind == "M":
            unit, _ = np.datetime_data(numpy_dtype)
            return pa.timestamp(unit)
    raise ReplayError(
        f"{path}: column {column!r} has dtype {dtype!r}, which cannot be "
        f"read from {fmt.upper()} text; give the table as Parquet"
    )


def _typed(
    table: pa.Table, file: TableFile, where: str
) -> pd.DataFrame:
    """Turn what was read into a DataFrame of the trace's dtypes."""
    frame = table.to_pandas()
    columns = {}
    for column, dtype in file.schema:
        series = frame[column]
        if str(series.dtype) != dtype:
            try:
                series = series.astype(dtype)
            except (TypeError, ValueError) as error:
                raise ReplayError(
                    f"{file.path}: column {column!r}{where} cannot be read "
                    f"as {dtype} as the trace expects ({error})"
                ) from None
        columns[column] = series.reset_index(drop=True)
    return pd.DataFrame(columns)


def _missing(file: TableFile, present: Sequence[str]) -> ReplayError | None:
    missing = [c for c in file.schema.names if c not in present]
    if not missing:
        return None
    return ReplayError(
        f"{file.path}: column {missing[0]!r} of table {file.name!r} not "
        f"found; the file has columns "
        f"{', '.join(repr(c) for c in present) or '(none)'}"
    )


def _read_parquet_rows(
    file: TableFile, lo: int | None, hi: int | None, stats: dict[str, int]
) -> pd.DataFrame:
    """Rows ``[lo, hi)`` of a Parquet file (all rows if ``lo`` is None)."""
    try:
        parquet = pq.ParquetFile(file.path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ReplayError(
            f"{file.path}: not a readable Parquet file ({error})"
        ) from None
    error = _missing(file, parquet.schema_arrow.names)
    if error is not None:
        raise error
    metadata = parquet.metadata
    total = metadata.num_rows
    lo = 0 if lo is None else lo
    hi = total if hi is None else hi
    wanted = set(file.schema.names)

    pieces = []
    first = 0
    stats["input_bytes"] += metadata.serialized_size + 8
    for group in range(metadata.num_row_groups):
        meta = metadata.row_group(group)
        last = first + meta.num_rows
        if first < hi and lo < last and meta.num_rows:
            for index in range(meta.num_columns):
                chunk = meta.column(index)
                if chunk.path_in_schema.split(".")[0] in wanted:
                    stats["input_bytes"] += chunk.total_compressed_size
            try:
                part = parquet.read_row_group(
                    group, columns=list(file.schema.names)
                )
            except (pa.ArrowInvalid, OSError) as error:
                raise ReplayError(
                    f"{file.path}: row group {group} cannot be read "
                    f"({error})"
                ) from None
            start = max(lo, first) - first
            stop = min(hi, last) - first
            pieces.append(part.slice(start, stop - start))
        first = last
    if pieces:
        table = pa.concat_tables(pieces)
    else:
        table = parquet.schema_arrow.empty_table().select(
            list(file.schema.names)
        )
    where = "" if lo == 0 else f" (rows {lo + 1} to {hi})"
    return _typed(table, file, where)


def _record_start(
    handle, position: int, parity: int, csv: bool, first: int, size: int,
    stats: dict[str, int],
) -> int:
    """The first record start at or after ``position``.

    Args:
        parity: quotes before ``position``, modulo 2 (CSV only).
        first: where the first record starts (after a CSV header).
    """
    if position <= first:
        return first
    if position >= size:
        return size
    offset = position - 1
    handle.seek(offset)
    previous = handle.read(1)
    stats["input_bytes"] += 1
    parity = (parity - (1 if previous == b'"' else 0)) % 2
    handle.seek(offset)
    while True:
        block = handle.read(LOOKAHEAD_BYTES)
        stats["input_bytes"] += len(block)
        if not block:
            return size
        array = np.frombuffer(block, dtype=np.uint8)
        ends = boundary_newlines(array, parity, csv)
        if ends.size:
            return offset + int(ends[0]) + 1
        if csv:
            parity = (parity + block.count(b'"')) % 2
        offset += len(block)


def _read_text_range(
    file: TableFile,
    start: int,
    stop: int,
    parities: tuple[int, int],
    stats: dict[str, int],
) -> pd.DataFrame:
    """The records of a text file whose first byte is in [start, stop)."""
    csv = file.format == "csv"
    header = b""
    first = 0
    if csv:
        try:
            header, first = read_csv_header(file.path)
        except OSError as error:
            raise ReplayError(
                f"{file.path}: cannot be read ({error.strerror})"
            ) from None
        stats["input_bytes"] += first
    with open(file.path, "rb") as handle:
        begin = _record_start(
            handle, start, parities[0], csv, first, file.size, stats
        )
        end = _record_start(
            handle, stop, parities[1], csv, first, file.size, stats
        )
        handle.seek(begin)
        data = handle.read(max(0, end - begin))
    stats["input_bytes"] += len(data)
    line = 1 + _newlines_before(file.path, begin) if begin else 1
    where = "" if begin <= first else f" (records from line {line})"

    types = {
        column: _arrow_type(dtype, file.path, column, file.format)
        for column, dtype in file.schema
    }
    if csv:
        return _parse_csv(file, header, data, types, where)
    return _parse_json(file, data, types, where)


def _newlines_before(path: str, offset: int) -> int:
    count = 0
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 24))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def _parse_csv(
    file: TableFile,
    header: bytes,
    data: bytes,
    types: Mapping[str, pa.DataType],
    where: str,
) -> pd.DataFrame:
    present = []
    if header.strip(BOM + b"\r\n"):
        present = pa_csv.read_csv(
            io.BytesIO(header),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        ).column_names
    error = _missing(file, present)
    if error is not None:
        raise error
    names = list(file.schema.names)
    if not data.strip(b"\r\n"):
        return _typed(
            pa.table({n: pa.array([], type=types[n]) for n in names}),
            file, where,
        )
    try:
        table = pa_csv.read_csv(
            io.BytesIO(header + data),
            read_options=pa_csv.ReadOptions(
                use_threads=False, block_size=len(header) + len(data) + 1
            ),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                include_columns=names,
                column_types=dict(types),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise ReplayError(
            f"{file.path}: malformed CSV or a value of the wrong type"
            f"{where}: {error}"
        ) from None
    return _typed(table, file, where)


def _parse_json(
    file: TableFile,
    data: bytes,
    types: Mapping[str, pa.DataType],
    where: str,
) -> pd.DataFrame:
    names = list(file.schema.names)
    schema = pa.schema([(n, types[n]) for n in names])
    if not data.strip():
        return _typed(schema.empty_table(), file, where)
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(
                use_threads=False, block_size=len(data) + 1
            ),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid as error:
        raise ReplayError(
            f"{file.path}: malformed JSON Lines or a value of the wrong "
            f"type{where}: {error}"
        ) from None
    # a key named in no record at all is a missing column (not nulls)
    absent = [
        n for n in names
        if table.column(n).null_count == len(table)
        and json.dumps(n, ensure_ascii=False).encode() not in data
    ]
    if absent and len(table):
        raise ReplayError(
            f"{file.path}: column {absent[0]!r} of table {file.name!r} is "
            f"absent from every record{where}"
        )
    return _typed(table.select(names), file, where)


def read_table(
    file: TableFile, stats: dict[str, int] | None = None
) -> pd.DataFrame:
    """Read a whole table file, typed by the trace's schema.

    The result equals the concatenation, in rank order, of the shares
    ``read_share`` gives at any world size.

    Args:
        file: the table file.
        stats: ``input_bytes`` in it grows by the bytes read.

    Raises:
        ReplayError: unreadable file, missing column, bad value.
    """
    stats = {"input_bytes": 0} if stats is None else stats
    try:
        return _read_share(file, 0, 1, (0, 0), stats)
    except OSError as error:
        raise ReplayError(
            f"{file.path}: cannot be read ({error.strerror})"
        ) from None


def _read_share(
    file: TableFile,
    rank: int,
    size: int,
    parities: tuple[int, int],
    stats: dict[str, int],
) -> pd.DataFrame:
    if file.format == "parquet":
        try:
            rows = pq.ParquetFile(file.path).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as error:
            raise ReplayError(
                f"{file.path}: not a readable Parquet file ({error})"
            ) from None
        lo, hi = rank_byte_range(rows, rank, size)
        return _read_parquet_rows(file, lo, hi, stats)
    start, stop = rank_byte_range(file.size, rank, size)
    return _read_text_range(file, start, stop, parities, stats)


def _quote_parities(
    files: Sequence[TableFile], comm: Any
) -> list[tuple[int, int]]:
    """Quote parity at the start and the end of this rank's byte range.

    A collective: every rank counts the quotes in its range of every CSV
    file; the ranks before it give the parity at its start.
    """
    ranges = [
        rank_byte_range(file.size, comm.rank, comm.size) for file in files
    ]
    if comm.size == 1:
        return [(0, 0) for _ in files]
    counts = []
    for file, (start, stop) in zip(files, ranges, strict=True):
        if file.format != "csv":
            counts.append(0)
            continue
        try:
            counts.append(count_quotes_in_range(file.path, start, stop))
        except OSError:
            counts.append(0)  # the read that follows reports it
    every = comm.allgather(counts)
    parities = []
    for index in range(len(files)):
        before = sum(every[r][index] for r in range(comm.rank))
        mine = every[comm.rank][index]
        parities.append((before % 2, (before + mine) % 2))
    return parities


def read_share(
    files: Sequence[TableFile], comm: Any
) -> tuple[dict[str, pd.DataFrame], int]:
    """Read this rank's share of every table file.

    A collective (CSV quote parities); every rank gets the same error.

    Returns:
        ``({name: DataFrame}, bytes read by this rank)``.

    Raises:
        ReplayError: on every rank, with the first failing rank's message.
    """
    from datajax.mpi import first_error

    parities = _quote_parities(files, comm)
    stats = {"input_bytes": 0}
    shares: dict[str, pd.DataFrame] = {}
    problem = None
    try:
        for file, parity in zip(files, parities, strict=True):
            shares[file.name] = _read_share(
                file, comm.rank, comm.size, parity, stats
            )
    except ReplayError as error:
        problem = str(error)
    except OSError as error:
        problem = f"{error.filename}: cannot be read ({error.strerror})"
    failure = first_error(comm, problem)
    if failure is not None:
        raise ReplayError(failure[1], failure[0])
    return shares, stats["input_bytes"]


# ---------------------------------------------------------------------------
# runtime counters in layers


def runtime_layers(
    metrics_in: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The runtime counters to merge, lowest precedence first.

    ``DATAJAX_RUNTIME_METRICS`` (a file or inline JSON) comes first and
    ``metrics_in`` second, so a counter both give is taken from
    ``metrics_in``; a counter only the variable gives still applies.

    Raises:
        ReplayError: a file cannot be read or holds invalid JSON or
            values (the message names the file or variable).
    """
    env = os.environ if environ is None else environ
    layers = []
    value = env.get(METRICS_ENV_VAR, "")
    try:
        if value.strip():
            layers.append((
                METRICS_ENV_VAR,
                load_runtime_counters(value, source=METRICS_ENV_VAR),
            ))
        if metrics_in is not None:
            layers.append((
                f"--metrics-in {metrics_in}",
                load_runtime_counters(metrics_in, source="--metrics-in"),
            ))
    except RuntimeMetricsError as error:
        raise ReplayError(str(error)) from None
    return layers


def _merge_layers(
    metrics: PlanMetrics,
    layers: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[PlanMetrics, dict[str, str]]:
    """Merge the layers in order; say where each counter came from."""
    origins: dict[str, str] = {}
    for origin, counters in layers:
        canon = normalize_runtime_counters(counters, source=origin)
        metrics = merge_runtime_counters(metrics, canon)
        for key in CANONICAL_COUNTERS:
            if key in canon:
                origins[key] = origin
    return metrics, origins


def _as_layers(runtime: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if runtime is None:
        return []
    if isinstance(runtime, Mapping):
        return [("runtime counters", runtime)]
    layers = []
    for item in runtime:
        if (
            not isinstance(item, (tuple, list))
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], Mapping)
        ):
            raise TypeError(
                "runtime must be a mapping of counters or a sequence of "
                f"(origin, counters) pairs, not {item!r}"
            )
        layers.append((item[0], item[1]))
    return layers


# ---------------------------------------------------------------------------
# stages as plans of their own


@dataclass(frozen=True)
class StageRun:
    """One stage of a plan, written as a trace that runs on its own.

    Attributes:
        stage: the stage of the whole plan.
        trace: the stage's steps behind source steps for its inputs.
        inputs: ``(source name in trace, table name or None, step)``
            for each input: an input table of the whole plan (by name) or
            the output of an earlier stage (the step index).
        output: the index, in the whole trace, of the stage's last step.
    """

    stage: Stage
    trace: Trace
    inputs: tuple[tuple[str, str | None, int], ...]
    output: int


def stage_runs(plan: ExecutionPlan) -> list[StageRun]:
    """Cut a plan into one runnable trace per stage, in run order."""
    trace = plan.trace
    taken = set(trace.sources)
    runs = []
    for stage in plan.stages:
        first = trace.steps[stage.steps[0]]
        new: dict[int, int] = {}
        steps = []
        inputs = []
        if isinstance(first, Source):
            new[stage.steps[0]] = 0
            steps.append(first)
            inputs.append((first.name, first.name, stage.steps[0]))
            body = stage.steps[1:]
        else:
            for index in step_inputs(first):
                if index in new:
                    continue
                name = f"{STAGE_INPUT_PREFIX}t{index}"
                while name in taken:
                    name = f"_{name}"
                new[index] = len(steps)
                steps.append(Source(name, plan.schemas[index]))
                inputs.append((name, None, index))
            body = stage.steps
        for index in body:
            step = trace.steps[index]
            changes = {
                f: new[getattr(step, f)]
                for f in ("src", "left", "right")
                if hasattr(step, f)
            }
            new[index] = len(steps)
            steps.append(dataclasses.replace(step, **changes))
        runs.append(
            StageRun(stage, Trace(tuple(steps)), tuple(inputs),
                     stage.steps[-1])
        )
    return runs


def _last_readers(runs: Sequence[StageRun]) -> dict[int, int]:
    """For every stage output, the last stage (position) that reads it."""
    last: dict[int, int] = {}
    for position, run in enumerate(runs):
        for _, table, step in run.inputs:
            if table is None:
                last[step] = position
    return last


# ---------------------------------------------------------------------------
# counters of this process


def _pmpi_reader() -> Callable[[], Any] | None:
    """``read_counters`` of the PMPI interposer module, if importable."""
    try:
        from datajax.native.pmpi import read_counters
    except ImportError:
        return None
    return read_counters


def _pmpi_bytes(reader) -> tuple[int | None, int | None, str]:
    if reader is None:
        return None, None, "unavailable: datajax.native.pmpi is missing"
    counters = reader()
    if not counters.available:
        return None, None, counters.status
    return counters.bytes_sent, counters.bytes_received, "ok"


def _delta(after: int | None, before: int | None) -> int | None:
    if after is None or before is None:
        return None
    return after - before


def _sum_or_none(values: Sequence[int | None]) -> int | None:
    if any(v is None for v in values):
        return None
    return sum(values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the report


@dataclass
class ReplayReport:
    """What ``replay_and_tune`` found (complete on rank 0).

    Attributes:
        plan: the plan of the whole trace for the target mesh, its
            metrics estimated from the whole tables, runtime counters
            merged.
        policy: the staged policy.
        runtime_origins: where each merged runtime counter came from.
        executor: the backend's name.
        ranks: how many ranks replayed it.
        stages: one record per stage (timings, rows, bytes).
        per_rank: one record per rank (counters of this run).
        totals: input bytes, MPI bytes and time summed over ranks.
        notes: how the run was made (target mesh, backend notes).
        tables: rows of every input table, by name.
    """

    plan: ExecutionPlan
    policy: StagedPolicy
    runtime_origins: dict[str, str]
    executor: str
    ranks: int
    stages: list[dict[str, Any]]
    per_rank: list[dict[str, Any]]
    totals: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    warmup: int = 0
    repeats: int = 1

    @property
    def metrics(self) -> PlanMetrics:
        return self.plan.metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; only ``run`` depends on the run itself."""
        resources = self.plan.resources
        return {
            "job": JOB_NAME,
            "mesh": {
                "mesh_axes": list(resources.mesh_axes),
                "world_size": resources.world_size,
            },
            "executor": self.executor,
            "tables": dict(self.tables),
            "stages": [
                {"name": s.name, "kind": s.kind, "steps": list(s.steps),
                 "exchange": s.exchange}
                for s in self.plan.stages
            ],
            "runtime_counters": {
                key: self.runtime_origins[key]
                for key in CANONICAL_COUNTERS
                if key in self.runtime_origins
            },
            "metrics": metrics_to_dict(self.metrics),
            "policy": self.policy.to_dict(),
            "run": self.run_dict(),
        }

    def run_dict(self) -> dict[str, Any]:
        """This run's measurements (timings and per-rank counters)."""
        target = self.plan.resources.world_size
        return {
            "ranks": self.ranks,
            "models_target_mesh": target != self.ranks,
            "notes": list(self.notes),
            "warmup_rounds": self.warmup,
            "timed_rounds": self.repeats,
            **self.totals,
            "stages": self.stages,
            "per_rank": self.per_rank,
        }

    def runtime_metrics(self) -> dict[str, Any]:
        """This run's counters as a runtime-metrics JSON object.

        The format of ``datajax-export-wavespec --metrics-out``:
        ``bytes_moved`` is what the ranks read from the input files,
        ``shuffle_bytes`` what they sent to each other through MPI (the
        PMPI interposer's count when every rank has it, else the tuner's
        own calls).
        """
        totals = self.totals
        pmpi = totals.get("pmpi_bytes_sent")
        shuffle = pmpi if pmpi is not None else totals["mpi_bytes_sent"]
        how = (
            "PMPI interposer (every byte handed to MPI, backend shuffles "
            "included)" if pmpi is not None else
            "the tuner's own MPI calls (logical bytes to and from other "
            "ranks; backend shuffles not included: "
            f"{totals.get('pmpi_status')})"
        )
        return {
            "job": JOB_NAME,
            "bytes_moved": totals["input_bytes"],
            "shuffle_bytes": shuffle,
            "input_bytes": totals["input_bytes"],
            "mpi_bytes_sent": totals["mpi_bytes_sent"],
            "mpi_bytes_received": totals["mpi_bytes_received"],
            "pmpi_bytes_sent": totals.get("pmpi_bytes_sent"),
            "pmpi_bytes_received": totals.get("pmpi_bytes_received"),
            "world_size": self.ranks,
            "elapsed_seconds": totals["elapsed_seconds"],
            "replay_seconds": totals["replay_seconds"],
            "executor": self.executor,
            "per_rank": self.per_rank,
            "notes": [
                f"mpi_bytes={totals['mpi_bytes_sent']}",
                f"input_bytes={totals['input_bytes']}",
                f"world_size={self.ranks}",
                f"shuffle_bytes counted by {how}",
            ],
        }


# ---------------------------------------------------------------------------
# the replay


def _resolve_executor(executor: Any):
    from datajax.runtime import Executor, get_executor

    if isinstance(executor, Executor):
        return executor
    return get_executor(executor)


def _local_variant(executor: Any, comm: Any) -> tuple[Any, bool]:
    """An executor that leaves each rank its own part of a stage result.

    A backend that returns the whole result on every rank (``result ==
    "all"``, as the registered ``bodo`` backend does) is asked for its
    ``result="local"`` form; if it has none, each rank keeps its row
    range of the whole result (the second value is then True).
    """
    if comm.size == 1 or getattr(executor, "result", None) != "all":
        return executor, False
    try:
        return type(executor)(result="local", comm=comm), False
    except TypeError:
        return executor, True


def _agree(comm: Any, problem: str | None, internal: bool = False) -> None:
    from datajax.mpi import first_error

    failure = first_error(comm, problem)
    if failure is not None:
        raise ReplayError(failure[1], failure[0], internal)


def _gather_whole(
    shares: Mapping[str, pd.DataFrame], comm: Any
) -> dict[str, pd.DataFrame] | None:
    parts = comm.gather(dict(shares))
    if comm.rank != 0:
        return None
    return {
        name: pd.concat([p[name] for p in parts], ignore_index=True)
        for name in shares
    }


def replay_and_tune(
    trace: Trace | Sequence[Mapping[str, Any]],
    tables: Mapping[str, pd.DataFrame],
    *,
    resources: Resource | None = None,
    executor: Any = None,
    runtime: Any = None,
    comm: Any = None,
    whole_tables: Mapping[str, pd.DataFrame] | None = None,
    warmup: int = 0,
    repeats: int = 1,
    input_bytes: int = 0,
) -> ReplayReport | None:
    """Replay a trace stage by stage, measure it, suggest a policy.

    Every rank of ``comm`` must call it (it is collective).

    Args:
        trace: a Trace, or its ``trace_to_list`` form.
        tables: this rank's share of every input table, by name (on one
            rank, the whole tables).
        resources: the target mesh; one rank on axis ``data`` if None.
        executor: a backend name or instance (``None``: as
            ``get_executor`` picks).
        runtime: runtime counters to merge: a mapping, or ``(origin,
            mapping)`` pairs merged in order (a later one wins per
            counter); see :func:`runtime_layers`.
        comm: a :class:`datajax.mpi.Comm` (default: the world).
        whole_tables: the whole tables, for the estimates; read on
            rank 0 only (the other ranks may pass None). If rank 0
            passes None they are gathered from the shares (their bytes
            then count as MPI bytes of the run).
        warmup: untimed rounds before the timed ones (compilation,
            caches).
        repeats: timed rounds; each stage's time is the median.
        input_bytes: bytes this rank read to make its shares, for the
            counters.

    Returns:
        The report on rank 0; None on the other ranks.

    Raises:
        ReplayError: on every rank, when any rank failed (bad trace,
            missing table, a step the data cannot run, bad counters).
    """
    from datajax.mpi import world

    started = time.perf_counter()
    comm = world() if comm is None else comm
    resources = Resource() if resources is None else resources
    if not isinstance(resources, Resource):
        raise TypeError(f"resources must be a Resource, not {resources!r}")
    if warmup < 0 or repeats < 1:
        raise ValueError(
            f"need warmup >= 0 and repeats >= 1, got {warmup}, {repeats}"
        )
    layers = _as_layers(runtime)

    # the trace, the backend and this rank's plan
    problem = None
    plan = None
    backend = None
    try:
        if not isinstance(trace, Trace):
            trace = trace_from_list(trace)
        unbound = [n for n in trace.sources if n not in tables]
        if unbound:
            raise ReplayError(
                f"no table bound to {unbound[0]!r}; the trace reads "
                f"{list(trace.sources)!r}, got {sorted(tables)!r}"
            )
        shares = {n: tables[n] for n in trace.sources}
        plan = plan_trace(trace, resources=resources, tables=shares)
        backend = _resolve_executor(executor)
    except (ReplayError, IRError, ValueError, TypeError) as error:
        problem = str(error)
    except (ImportError, RuntimeError) as error:  # a backend's factory
        problem = f"the executor cannot be used: {error}"
    _agree(comm, problem)

    # rank 0: estimates from the whole tables, counters, policy
    given = whole_tables is not None
    if comm.size > 1:
        given = comm.bcast(given if comm.rank == 0 else None)
    if not given:
        whole = shares if comm.size == 1 else _gather_whole(shares, comm)
    elif comm.rank == 0:
        whole = {n: whole_tables[n] for n in trace.sources}
    else:
        whole = None
    tuned = None
    problem = None
    if comm.rank == 0:
        try:
            estimated = plan_trace(trace, resources=resources, tables=whole)
            merged, origins = _merge_layers(estimated.metrics, layers)
            policy = tune_policy(merged, resources.world_size, origins)
            tuned = (estimated.with_metrics(merged), policy, origins)
            rows = {n: len(whole[n]) for n in trace.sources}
        except (RuntimeMetricsError, IRError, ValueError) as error:
            problem = str(error)
    whole = None
    _agree(comm, problem)

    # the replay, stage by stage
    runner, slice_whole = _local_variant(backend, comm)
    runs = stage_runs(plan)
    last_reader = _last_readers(runs)
    pmpi = _pmpi_reader()
    records = [
        {"compute": [], "wall": [], "rows_in": 0, "rows_out": 0,
         "pmpi_sent": None, "pmpi_received": None}
        for _ in runs
    ]
    replay_started = time.perf_counter()
    for round_index in range(warmup + repeats):
        timed = round_index >= warmup
        outputs: dict[int, pd.DataFrame] = {}
        for position, run in enumerate(runs):
            inputs = {
                name: shares[table] if table is not None else outputs[step]
                for name, table, step in run.inputs
            }
            problem = None
            internal = False
            sub_plan = None
            try:
                sub_plan = plan_trace(
                    run.trace, resources=resources, tables=inputs
                )
            except (IRError, ValueError) as error:
                problem = f"stage {run.stage.name}: {error}"
            _agree(comm, problem)

            comm.barrier()
            sent0, received0, _ = _pmpi_bytes(pmpi)
            begin = time.perf_counter()
            out = None
            try:
                out = runner.run(sub_plan, inputs)
            except (ValueError, TypeError, KeyError) as error:
                problem = f"stage {run.stage.name}: {error}"
            except Exception as error:  # a backend failure: report, no hang
                problem = (
                    f"stage {run.stage.name}: the {backend.name} backend "
                    f"failed: {type(error).__name__}: {error}"
                )
                internal = True
            done = time.perf_counter()
            sent1, received1, _ = _pmpi_bytes(pmpi)
            _agree(comm, problem, internal)
            wall = time.perf_counter() - begin

            if slice_whole:
                lo, hi = rank_byte_range(len(out), comm.rank, comm.size)
                out = out.iloc[lo:hi].reset_index(drop=True)
            record = records[position]
            if timed:
                record["compute"].append(done - begin)
                record["wall"].append(wall)
            record["rows_in"] = sum(len(df) for df in inputs.values())
            record["rows_out"] = len(out)
            record["pmpi_sent"] = _delta(sent1, sent0)
            record["pmpi_received"] = _delta(received1, received0)
            outputs[run.output] = out
            for _, table, step in run.inputs:
                if table is None and last_reader.get(step) == position:
                    outputs.pop(step, None)
    replay_seconds = time.perf_counter() - replay_started
    outputs = {}

    # every rank's counters, to rank 0
    backend_notes = []
    notes_of = getattr(backend, "notes", None)
    if callable(notes_of):
        try:
            backend_notes = [str(n) for n in notes_of(plan)]
        except Exception as error:  # notes must not fail the run
            backend_notes = [f"backend notes unavailable: {error}"]
    pmpi_sent, pmpi_received, pmpi_status = _pmpi_bytes(pmpi)
    own = {
        "rank": comm.rank,
        "input_bytes": int(input_bytes),
        "rows": {n: len(shares[n]) for n in trace.sources},
        "stages": [
            {
                "compute_seconds": _median(r["compute"]),
                "rows_in": r["rows_in"],
                "rows_out": r["rows_out"],
                "pmpi_bytes_sent": r["pmpi_sent"],
                "pmpi_bytes_received": r["pmpi_received"],
                "wall": r["wall"],
            }
            for r in records
        ],
        "elapsed_seconds": round(time.perf_counter() - started, 6),
        "peak_rss_bytes": peak_rss_bytes(),
        "pmpi_status": pmpi_status,
        "pmpi_bytes_sent": pmpi_sent,
        "pmpi_bytes_received": pmpi_received,
        **comm.counter.snapshot(),
    }
    every = comm.gather(own)
    if comm.rank != 0:
        return None

    merged_plan, policy, origins = tuned
    return _report(
        merged_plan, policy, origins, backend, comm.size, runs, every,
        backend_notes, rows, warmup, repeats, replay_seconds,
        time.perf_counter() - started,
    )


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


def _report(
    plan: ExecutionPlan,
    policy: StagedPolicy,
    origins: dict[str, str],
    backend: Any,
    ranks: int,
    runs: Sequence[StageRun],
    every: Sequence[dict[str, Any]],
    backend_notes: list[str],
    rows: dict[str, int],
    warmup: int,
    repeats: int,
    replay_seconds: float,
    elapsed: float,
) -> ReplayReport:
    """Rank 0: sum the per-rank records into the report."""
    stages = []
    for position, run in enumerate(runs):
        parts = [entry["stages"][position] for entry in every]
        # rank 0's wall time spans the slowest rank (the agreement waits)
        wall = parts[0]["wall"]
        stages.append({
            "name": run.stage.name,
            "kind": run.stage.kind,
            "seconds": _median(wall),
            "seconds_min": round(min(wall), 6),
            "seconds_max": round(max(wall), 6),
            "rows_in": sum(p["rows_in"] for p in parts),
            "rows_out": sum(p["rows_out"] for p in parts),
            "pmpi_bytes_sent": _sum_or_none(
                [p["pmpi_bytes_sent"] for p in parts]
            ),
            "per_rank_compute_seconds": [
                p["compute_seconds"] for p in parts
            ],
            "per_rank_rows_out": [p["rows_out"] for p in parts],
        })
    per_rank = []
    for entry in every:
        record = {k: v for k, v in entry.items() if k != "stages"}
        per_rank.append(record)

    pmpi_ok = all(e["pmpi_status"] == "ok" for e in every)
    bad = [e for e in every if e["pmpi_status"] != "ok"]
    totals = {
        "elapsed_seconds": round(elapsed, 6),
        "replay_seconds": round(
            sum(s["seconds"] or 0.0 for s in stages), 6
        ),
        "replay_loop_seconds": round(replay_seconds, 6),
        "input_bytes": sum(e["input_bytes"] for e in every),
        "mpi_bytes_sent": sum(e["mpi_bytes_sent"] for e in every),
        "mpi_bytes_received": sum(e["mpi_bytes_received"] for e in every),
        "pmpi_status": "ok" if pmpi_ok else (
            f"unavailable on rank(s) "
            f"{', '.join(str(e['rank']) for e in bad)}: "
            f"{bad[0]['pmpi_status'].removeprefix('unavailable: ')}"
        ),
        "pmpi_bytes_sent": (
            sum(e["pmpi_bytes_sent"] for e in every) if pmpi_ok else None
        ),
        "pmpi_bytes_received": (
            sum(e["pmpi_bytes_received"] for e in every) if pmpi_ok
            else None
        ),
    }
    target = plan.resources.world_size
    notes = []
    if target != ranks:
        notes.append(
            f"models a target mesh of {target} rank(s) "
            f"({', '.join(plan.resources.mesh_axes)}); replayed on "
            f"{ranks} rank(s): timings and rows per rank are this run's"
        )
    if getattr(backend, "result", None) is None and ranks > 1:
        notes.append(
            f"the {backend.name} backend keeps rows on their rank: joins "
            "and group-bys ran on each rank's share alone, so their rows "
            "out are per-rank partial results"
        )
    notes.extend(backend_notes)
    return ReplayReport(
        plan=plan,
        policy=policy,
        runtime_origins=origins,
        executor=backend.name,
        ranks=ranks,
        stages=stages,
        per_rank=per_rank,
        totals=totals,
        notes=notes,
        tables=rows,
        warmup=warmup,
        repeats=repeats,
    )


# ---------------------------------------------------------------------------
# dumping a djit pipeline


def _write_table(df: pd.DataFrame, path: str, fmt: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{os.path.basename(path)}")
    try:
        if fmt == "parquet":
            pq.write_table(
                pa.Table.from_pandas(df, preserve_index=False),
                temporary,
                row_group_size=max(1, math.ceil(len(df) / 16)),
            )
        elif fmt == "csv":
            df.to_csv(temporary, index=False)
        else:
            df.to_json(temporary, orient="records", lines=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


_SUFFIXES = {"parquet": ".parquet", "csv": ".csv", "json": ".jsonl"}


def dump_trace(
    fn: Callable[..., Any],
    tables: Mapping[str, pd.DataFrame],
    out_dir: str,
    *,
    sample: str | None = None,
    sample_rows: int | None = None,
    sample_format: str = "parquet",
    args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Trace a pipeline and write what the replay tuner reads.

    Writes into ``out_dir``: ``trace.json`` (``trace_to_list``),
    ``sample.<ext>`` (the sample table, cut to its first ``sample_rows``
    rows), ``tables/<name>.parquet`` for every other input table (the
    join right-hand sides, bound by name), and ``dump.json``: what was
    written and the ``datajax-replay-tuner`` command line that replays
    it.

    Args:
        fn: a ``djit``/``pjit`` function or a plain function of frames.
        tables: the input tables by name: a DataFrame parameter of
            ``fn`` by its parameter name, a ``Frame.source`` table by
            its source name.
        out_dir: the folder (created if missing).
        sample: the table that becomes the sample (default: the trace's
            first input table).
        sample_rows: keep only the first rows of the sample.
        sample_format: ``parquet``, ``csv`` or ``json`` (JSON Lines).
        args: other (non-table) arguments of ``fn``.

    Returns:
        The manifest written to ``dump.json``.

    Raises:
        ValueError: unknown sample table or format, a table of the trace
            not given, a table given that the trace does not read,
            ``out_dir`` naming a file.
        PipelineError: the pipeline raised while being traced.
    """
    from datajax.tracing import Compiled, djit

    if sample_format not in FORMATS:
        raise ValueError(
            f"sample_format must be one of {FORMATS}, not {sample_format!r}"
        )
    if sample_rows is not None and sample_rows < 0:
        raise ValueError(f"sample_rows must be >= 0, not {sample_rows}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(
            f"{out_dir}: exists and is not a folder; name a folder (it is "
            f"created if missing)"
        )
    compiled = fn if isinstance(fn, Compiled) else djit(fn)
    params = inspect.signature(compiled.fn).parameters
    kwargs = dict(args or {})
    named = {}
    for name, df in tables.items():
        if name in params:
            kwargs[name] = df
        else:
            named[name] = df
    # a TypeError here is the caller's (a parameter not given); one from
    # tracing below is the pipeline's own
    inspect.signature(compiled.fn).bind(**kwargs)
    try:
        trace = compiled.trace(tables=named, **kwargs)
    except IRError:
        raise
    except Exception as error:
        raise PipelineError(
            f"tracing {compiled.fn.__qualname__} raised "
            f"{type(error).__name__}: {error}"
        ) from error

    sources = list(trace.sources)
    # parameters may go unused; a named source table nobody reads is a
    # mistake in the command line
    unused = [name for name in named if name not in sources]
    if unused:
        raise ValueError(
            f"table {unused[0]!r} is given but the pipeline does not read "
            f"it; it reads {sources!r}"
        )
    sample = sources[0] if sample is None else sample
    if sample not in sources:
        raise ValueError(
            f"sample={sample!r} is not an input table of the trace; it "
            f"reads {sources!r}"
        )
    missing = [n for n in sources if n not in tables]
    if missing:
        raise ValueError(
            f"the trace reads table {missing[0]!r}, which was not given"
        )

    os.makedirs(out_dir, exist_ok=True)
    trace_path = os.path.join(out_dir, "trace.json")
    steps = [json.dumps(step) for step in trace_to_list(trace)]
    write_json_atomic(trace_path, "[\n" + ",\n".join(steps) + "\n]\n")

    frame = tables[sample]
    if sample_rows is not None:
        frame = frame.iloc[:sample_rows]
    sample_name = f"sample{_SUFFIXES[sample_format]}"
    _write_table(
        frame.reset_index(drop=True),
        os.path.join(out_dir, sample_name),
        sample_format,
    )
    others = {}
    for name in sources:
        if name == sample:
            continue
        os.makedirs(os.path.join(out_dir, "tables"), exist_ok=True)
        relative = os.path.join("tables", f"{name}.parquet")
        _write_table(
            tables[name].reset_index(drop=True),
            os.path.join(out_dir, relative),
            "parquet",
        )
        others[name] = relative

    command = [
        JOB_NAME, "--trace", "trace.json", "--sample", sample_name,
        *[part for name, path in others.items()
          for part in ("--table", f"{name}={path}")],
        "--out", "policy.json",
    ]
    manifest = {
        "trace": "trace.json",
        "sample": {
            "table": sample,
            "path": sample_name,
            "format": sample_format,
            "rows": len(frame),
        },
        "tables": others,
        "steps": len(trace.steps),
        "replay_command": shlex.join(command),
        "notes": [
            "paths are relative to this folder; run the command in it",
        ],
    }
    write_json_atomic(
        os.path.join(out_dir, "dump.json"),
        json.dumps(manifest, indent=2) + "\n",
    )
    return manifest
