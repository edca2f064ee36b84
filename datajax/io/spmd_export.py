"""The WaveSpec export as an SPMD program: every rank reads its share.

The driver behind ``datajax-export-wavespec``.  Under ``mpiexec -n N`` each
rank reads the records and row groups it owns (see
:mod:`datajax.io.sources`), in batches, into a
:class:`~datajax.io.exporter.WaveSpecState`.  The ranks step through their
batches in lockstep: after every batch one small allreduce tells all ranks
whether any rank failed, so a bad row on one rank stops the whole job
within one batch and every rank leaves with the same error.  At the end
the states are gathered on rank 0, merged in rank order, and rank 0 writes
the WaveSpec and the runtime metrics, each through a temporary file.

Known limits: the distinct prefixes and the page runs of a rank are held
in memory (runs, not pages, so dense keys cost little; random hashes cost
one run per distinct page), and rank 0 receives every rank's runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from datajax.io import readers
from datajax.io.accesses import prepare_accesses
from datajax.io.exporter import (
    CohortTable,
    PageRuns,
    ValueCounts,
    WaveSpecOptions,
    WaveSpecState,
    extents_of,
    finish_wave_spec,
    wave_spec_pieces,
    write_json_atomic,
)
from datajax.io.sources import (
    InputError,
    InputFile,
    discover_inputs,
    file_spans,
    owns_offset,
    row_group_owner_offsets,
    text_shares,
)
from datajax.mpi import Comm, first_error, share_from_root
from datajax.native.pmpi import read_counters, summarize_ranks
from datajax.process import peak_rss_bytes

log = logging.getLogger(__name__)

DEFAULT_BATCH_BYTES = 32 << 20
DEFAULT_BATCH_ROWS = 1 << 20


class JobError(RuntimeError):
    """The job failed on some rank; the message is that rank's."""

    def __init__(self, message: str, rank: int = 0) -> None:
        super().__init__(message)
        self.rank = rank


@dataclass(frozen=True)
class ExportJob:
    """One run of the export: inputs, options and outputs."""

    logs: tuple[str, ...]
    options: WaveSpecOptions
    out: str
    format: str | None = None
    usage_json: str | None = None
    metrics_out: str | None = None
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_rows: int = DEFAULT_BATCH_ROWS


@dataclass
class _Setup:
    files: list[InputFile]
    usage: dict[str, int] | None


# ---------------------------------------------------------------------------
# set-up on rank 0, shared with every rank


def load_usage(path: str) -> dict[str, int]:
    """Read a usage JSON: an object mapping column name to count."""
    try:
        with open(path, encoding="utf-8") as stream:
            usage = json.load(stream)
    except OSError as error:
        raise InputError(
            f"{path}: cannot read the usage JSON ({error.strerror})"
        ) from error
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: line {error.lineno} column {error.colno}: malformed "
            f"JSON ({error.msg})"
        ) from error
    if not isinstance(usage, dict):
        raise InputError(
            f"{path}: the usage JSON must be an object mapping column "
            f"names to counts, not a {type(usage).__name__}"
        )
    for name, count in usage.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError(
                f"{path}: usage of column {name!r} must be a non-negative "
                f"integer, not {count!r}"
            )
    return usage


def _check_output(path: str, flag: str) -> None:
    if os.path.isdir(path):
        raise InputError(f"{flag} {path}: is a directory; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{flag} {path}: the folder {folder} is not writable")


def _setup(job: ExportJob) -> _Setup:
    _check_output(job.out, "--out")
    if job.metrics_out is not None:
        _check_output(job.metrics_out, "--metrics-out")
    if job.metrics_out is not None and os.path.realpath(
        job.metrics_out
    ) == os.path.realpath(job.out):
        raise InputError(
            f"--out and --metrics-out both name {job.out}; name two files"
        )
    usage = load_usage(job.usage_json) if job.usage_json else None
    files = discover_inputs(job.logs, job.format)
    outputs = {os.path.realpath(job.out)}
    if job.metrics_out is not None:
        outputs.add(os.path.realpath(job.metrics_out))
    for file in files:
        if os.path.realpath(file.path) in outputs:
            raise InputError(
                f"{file.path} is both an input and an output; writing it "
                "would destroy the input"
            )
    return _Setup(files, usage)


# ---------------------------------------------------------------------------
# this rank's batches


def _csv_parities(
    files: Sequence[InputFile], comm: Comm, stats: dict[str, int]
) -> dict[tuple[int, int], int]:
    """Quote parity at the start of each CSV share of this rank.

    Under several ranks this reads each CSV share twice (once to count
    quotes, once to parse); the bytes of both reads are counted.
    """
    if comm.size == 1:
        # one rank reads every file from its start: parity 0 everywhere
        return {(index, 0): 0 for index in range(len(files))}
    sizes = [file.size for file in files]
    shares = text_shares(sizes, comm.rank, comm.size)
    counts = [
        (share.file_index, share.start,
         readers.count_quotes_in_range(
             files[share.file_index].path, share.start, share.stop))
        for share in shares
        if files[share.file_index].format == "csv"
    ]
    stats["input_bytes"] += sum(
        share.stop - share.start for share in shares
        if files[share.file_index].format == "csv"
    )
    every_rank = comm.allgather(counts)
    parities = {}
    for share in shares:
        if files[share.file_index].format != "csv":
            continue
        before = sum(
            count
            for rank_counts in every_rank
            for index, start, count in rank_counts
            if index == share.file_index and start < share.start
        )
        parities[(share.file_index, share.start)] = before % 2
    return parities


def _rank_batches(
    job: ExportJob,
    files: Sequence[InputFile],
    parities: Mapping[tuple[int, int], int],
    comm: Comm,
    stats: dict[str, int],
) -> Iterator[readers.Batch]:
    """The batches this rank owns, in input order."""
    options = job.options
    columns = readers.Columns(options.key, options.size, options.extra)
    skip = options.skip_bad_rows
    sizes = [file.size for file in files]
    total = sum(sizes)
    spans = file_spans(sizes)
    shares = {
        share.file_index: share
        for share in text_shares(sizes, comm.rank, comm.size)
    }

    for index, file in enumerate(files):
        if file.format == "parquet":
            span = spans[index]
            first_byte = span.offset if span.size else -1
            if index not in shares and not owns_offset(
                first_byte, total, comm.rank, comm.size
            ):
                continue
            rows, _ = readers.parquet_row_groups(file.path)
            owners = row_group_owner_offsets(span, rows)
            mine = [
                group for group, offset in enumerate(owners)
                if owns_offset(offset, total, comm.rank, comm.size)
            ]
            check = owns_offset(first_byte, total, comm.rank, comm.size)
            yield from readers.iter_parquet_batches(
                file, mine, columns, job.batch_rows, check, stats
            )
        elif index in shares:
            share = shares[index]
            if file.format == "csv":
                parity = parities[(index, share.start)]
                yield from readers.iter_csv_batches(
                    file, share, parity, columns, job.batch_bytes, skip,
                    stats,
                )
            else:
                yield from readers.iter_json_batches(
                    file, share, columns, job.batch_bytes, skip, stats
                )


# ---------------------------------------------------------------------------
# merging states on rank 0


def _state_arrays(state: WaveSpecState) -> dict[str, np.ndarray]:
    state.flush()
    arrays = {
        "codes": state.cohorts.codes.astype(np.uint64),
        "counts": state.cohorts.counts.astype(np.int64),
        "first": state.pages.first.astype(np.uint64),
        "last": state.pages.last.astype(np.uint64),
    }
    for name, counts in state.extras.items():
        arrays[f"values:{name}"] = counts.values.astype(np.float64)
        arrays[f"counts:{name}"] = counts.counts.astype(np.int64)
    return arrays


def _state_scalars(state: WaveSpecState) -> dict[str, Any]:
    sums = state.cohorts.sums
    return {
        "rows_in": state.rows_in,
        "row_count": state.row_count,
        "total_bytes": state.total_bytes,
        "rejected": state.rejected,
        "key_kinds": sorted(state.key_kinds),
        "has_negative_key": state.has_negative_key,
        "has_large_key": state.has_large_key,
        # byte sums beyond 64 bits travel pickled, as Python integers
        "object_sums": (
            sums.tolist() if sums is not None and sums.dtype == object
            else None
        ),
    }


def gather_states(
    state: WaveSpecState, comm: Comm
) -> WaveSpecState | None:
    """Merge every rank's state on rank 0 (in rank order)."""
    arrays = _state_arrays(state)
    sums = state.cohorts.sums
    if sums is not None and sums.dtype != object:
        arrays["sums"] = sums.astype(np.uint64)
    else:
        arrays["sums"] = np.zeros(0, dtype=np.uint64)

    gathered = {
        name: comm.gatherv_array(values) for name, values in arrays.items()
    }
    scalars = comm.gather(_state_scalars(state))
    if comm.rank != 0:
        return None

    merged = WaveSpecState(state.options)
    for rank in range(comm.size):
        part = WaveSpecState(state.options)
        info = scalars[rank]
        part.rows_in = info["rows_in"]
        part.row_count = info["row_count"]
        part.total_bytes = info["total_bytes"]
        part.rejected = info["rejected"]
        part.key_kinds = set(info["key_kinds"])
        part.has_negative_key = info["has_negative_key"]
        part.has_large_key = info["has_large_key"]

        part_sums = None
        if state.options.size is not None:
            if info["object_sums"] is not None:
                part_sums = np.array(info["object_sums"], dtype=object)
            else:
                part_sums = gathered["sums"][rank]
        part.cohorts = CohortTable(
            gathered["codes"][rank], gathered["counts"][rank], part_sums
        )
        part.pages = PageRuns(gathered["first"][rank], gathered["last"][rank])
        for name in state.options.extra:
            part.extras[name] = ValueCounts(
                gathered[f"values:{name}"][rank],
                gathered[f"counts:{name}"][rank],
            )
        merged.merge(part)
    return merged


# ---------------------------------------------------------------------------
# the run


def run_export(
    job: ExportJob, comm: Comm, return_spec: bool = True
) -> dict[str, Any] | None:
    """Run the export on every rank; rank 0 returns the WaveSpec.

    With ``return_spec=False`` nothing is returned and the extents are
    never built as Python objects (the job's path: they go straight from
    the page runs into the file).

    Raises:
        JobError: on every rank, with the first failing rank's message,
            if any rank met bad input.  Nothing is written then.
    """
    # the clock starts when every rank is here, not when the first one is
    comm.barrier()
    started = time.perf_counter()
    setup = share_from_root(comm, lambda: _setup(job), InputError, JobError)
    files = setup.files
    log.info(
        "reading %d input file(s), %d bytes, on %d rank(s)",
        len(files), sum(file.size for file in files), comm.size,
    )

    # quote parities for CSV shares need every rank's quote counts
    parities: dict[tuple[int, int], int] = {}
    problem: str | None = None
    stats = {"input_bytes": 0}
    try:
        parities = _csv_parities(files, comm, stats)
    except OSError as error:
        problem = f"cannot read an input ({error})"

    state = WaveSpecState(job.options)
    batches = _rank_batches(job, files, parities, comm, stats)
    batch_count = 0
    active = problem is None
    while True:
        if active:
            try:
                batch = next(batches)
                accesses = prepare_accesses(
                    batch.table,
                    job.options.access_options(),
                    batch.file.path,
                    batch.locate,
                )
                for reason, count in batch.rejected.items():
                    accesses.rejected[reason] = (
                        accesses.rejected.get(reason, 0) + count
                    )
                    accesses.rows_in += count
                state.add(accesses)
                batch_count += 1
            except StopIteration:
                active = False
            except InputError as error:
                problem = str(error)
                active = False
            except OSError as error:
                problem = f"{error.filename}: cannot be read ({error})"
                active = False

        flags = comm.allreduce_array(
            np.array([int(problem is not None), int(active)]), MPI.SUM
        )
        if flags[0] or not flags[1]:
            break

    failure = first_error(comm, problem)
    if failure is not None:
        raise JobError(failure[1], failure[0])
    log.debug(
        "read %d batch(es), %d accesses", batch_count, state.row_count
    )

    merged = gather_states(state, comm)
    spec = None
    problem = None
    if comm.rank == 0:
        try:
            spec = finish_wave_spec(
                merged,
                setup.usage,
                {
                    "inputs": [
                        {"path": file.path, "format": file.format,
                         "bytes": file.size}
                        for file in files
                    ],
                    "world_size": comm.size,
                },
                with_extents=False,
            )
        except InputError as error:
            problem = str(error)
    failure = first_error(comm, problem)
    if failure is not None:
        raise JobError(failure[1], failure[0])

    if comm.rank == 0:
        write_json_atomic(job.out, wave_spec_pieces(spec, merged.pages))
    elapsed = time.perf_counter() - started
    own = {
        "rank": comm.rank,
        "input_bytes": stats["input_bytes"],
        "rows": state.rows_in,
        "accesses": state.row_count,
        "batches": batch_count,
        "elapsed_seconds": round(elapsed, 6),
        "peak_rss_bytes": peak_rss_bytes(),
        **comm.counter.snapshot(),
        **read_counters().snapshot(),
    }
    per_rank = comm.gather(own)

    if comm.rank == 0:
        if job.metrics_out is not None:
            metrics = runtime_metrics(per_rank, comm.size, elapsed)
            write_json_atomic(
                job.metrics_out,
                json.dumps(metrics, indent=2, allow_nan=False) + "\n",
            )
        log.info(
            "wrote %s: %d accesses, %d cohorts, %d extents in %.2f s",
            job.out, spec["meta"]["row_count"], len(spec["cohorts"]),
            spec["meta"]["extent_count"], elapsed,
        )
        if return_spec:
            spec["extents"] = extents_of(merged.pages)
            return spec
    return None


def runtime_metrics(
    per_rank: Sequence[Mapping[str, Any]], world_size: int, elapsed: float
) -> dict[str, Any]:
    """The runtime-metrics JSON object of one run.

    ``bytes_moved`` is the input bytes read by all ranks; ``shuffle_bytes``
    the bytes all ranks sent to other ranks through the job's own MPI
    calls (counted at the call site, before this gather of the counters).
    ``pmpi_bytes_sent`` and ``pmpi_bytes_received`` are what the PMPI
    interposer saw every process hand to MPI (mpi4py's and Bodo's calls
    included), or None with ``pmpi_status`` saying why.
    """
    input_bytes = sum(entry["input_bytes"] for entry in per_rank)
    sent = sum(entry["mpi_bytes_sent"] for entry in per_rank)
    received = sum(entry["mpi_bytes_received"] for entry in per_rank)
    pmpi = summarize_ranks(per_rank)
    if pmpi["pmpi_status"] == "ok":
        pmpi_notes = [
            f"pmpi_bytes={pmpi['pmpi_bytes_sent']}",
            "pmpi bytes are counted by the PMPI interposer: every MPI "
            "call of each rank (the job's, mpi4py's, Bodo's shuffles) up "
            "to that rank's snapshot, as logical bytes to and from other "
            "ranks",
        ]
    else:
        pmpi_notes = [f"pmpi bytes {pmpi['pmpi_status']}"]
    return {
        "job": "datajax-export-wavespec",
        "bytes_moved": input_bytes,
        "shuffle_bytes": sent,
        "input_bytes": input_bytes,
        "mpi_bytes_sent": sent,
        "mpi_bytes_received": received,
        **pmpi,
        "world_size": world_size,
        "elapsed_seconds": round(elapsed, 6),
        "per_rank": list(per_rank),
        "notes": [
            f"mpi_bytes={sent}",
            f"input_bytes={input_bytes}",
            f"world_size={world_size}",
            "mpi bytes are counted at the job's own call sites (logical "
            "bytes to and from other ranks); bytes inside MPICH "
            "algorithms or Bodo shuffles are not included",
            *pmpi_notes,
        ],
    }
