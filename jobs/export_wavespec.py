"""datajax-export-wavespec: access logs in, WaveSpec JSON out.

Runs on one process or under ``mpiexec -n N`` / ``srun --mpi=pmi2``; each
rank reads its share of the inputs and the result does not depend on N.
See ``datajax.io.spmd_export`` for how the work is split.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from datajax.io.exporter import WaveSpecOptions
from datajax.io.sources import FORMATS, InputError
from datajax.io.spmd_export import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    ExportJob,
    JobError,
    run_export,
)
from datajax.mpi import (
    LaunchError,
    detect_launcher,
)
from jobs._cli import start_job, whole_number

log = logging.getLogger("jobs.export_wavespec")

EXIT_BAD_INPUT = 2


def _top_k(text: str) -> int | None:
    if text.lower() in ("none", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, 'none' or 'all', not {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of the export job."""
    parser = argparse.ArgumentParser(
        prog="datajax-export-wavespec",
        description=(
            "Read access logs (CSV, JSON Lines, Parquet) and write a "
            "WaveSpec: hot key cohorts by hash prefix, coalesced page "
            "extents, a pack order and meta. Run alone or under "
            "mpiexec -n N / srun --mpi=pmi2."
        ),
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--logs", action="append", required=True, metavar="PATH",
        help="a file, directory or glob; repeat for more",
    )
    inputs.add_argument(
        "--format", choices=FORMATS,
        help="input format (default: from each file's suffix; .jsonl, "
        ".ndjson and .json are JSON Lines)",
    )
    inputs.add_argument("--key", required=True, metavar="COL",
                        help="the key column")
    inputs.add_argument("--size", metavar="COL",
                        help="bytes per access (non-negative integers)")
    inputs.add_argument(
        "--key-type", choices=("text", "int"),
        help="read keys as text or as 64-bit integers (default: CSV keys "
        "are text, JSON and Parquet keys keep the file's type)",
    )
    inputs.add_argument(
        "--explode", action="store_true",
        help="the key column holds lists; each element is one access",
    )
    inputs.add_argument("--chunk-len", metavar="COL",
                        help="numeric column summarised in meta")
    inputs.add_argument("--window", metavar="COL",
                        help="numeric column summarised in meta")
    inputs.add_argument(
        "--usage-json", metavar="PATH",
        help="JSON object column -> usage count, for the pack order",
    )
    inputs.add_argument(
        "--on-bad-row", choices=("error", "skip"), default="error",
        help="stop at the first bad row (default) or count and drop "
        "bad rows by reason in meta.rows_rejected",
    )

    spec = parser.add_argument_group("WaveSpec")
    spec.add_argument("--prefix-len", type=int, default=4, metavar="N",
                      help="hex digits of the hash per cohort (default 4)")
    spec.add_argument("--page-bits", type=int, default=20, metavar="N",
                      help="page = source >> N (default 20)")
    spec.add_argument("--top-k", type=_top_k, default=64, metavar="N",
                      help="cohorts to keep: a number, none or all "
                      "(default 64)")
    spec.add_argument(
        "--extent-source", choices=("hash", "key"), default="hash",
        help="pages from the key's hash (default) or the integer key",
    )

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", required=True, metavar="PATH",
                         help="where to write the WaveSpec JSON")
    outputs.add_argument("--metrics-out", metavar="PATH",
                         help="where to write the runtime-metrics JSON")

    tuning = parser.add_argument_group("memory per rank")
    tuning.add_argument(
        "--batch-bytes", type=whole_number(1), default=DEFAULT_BATCH_BYTES,
        metavar="N", help="text read per batch (default 32 MiB)",
    )
    tuning.add_argument(
        "--batch-rows", type=whole_number(1), default=DEFAULT_BATCH_ROWS,
        metavar="N", help="Parquet rows per batch (default 1048576)",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging on rank 0")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit code (the same on every rank)."""
    args, comm = start_job(build_parser(), argv)

    try:
        launch = detect_launcher(comm.size)
        options = WaveSpecOptions(
            key=args.key,
            size=args.size,
            prefix_len=args.prefix_len,
            page_bits=args.page_bits,
            top_k=args.top_k,
            explode=args.explode,
            extent_source=args.extent_source,
            key_type=args.key_type or "auto",
            chunk_len=args.chunk_len,
            window=args.window,
            skip_bad_rows=args.on_bad_row == "skip",
        )
    except (InputError, LaunchError) as error:
        # every rank sees the same arguments, so every rank stops here
        if comm.rank == 0:
            log.error("%s", error)
        return EXIT_BAD_INPUT
    log.debug("launcher %s, world size %d", launch.launcher, comm.size)

    job = ExportJob(
        logs=tuple(args.logs),
        options=options,
        out=args.out,
        format=args.format,
        usage_json=args.usage_json,
        metrics_out=args.metrics_out,
        batch_bytes=args.batch_bytes,
        batch_rows=args.batch_rows,
    )
    try:
        run_export(job, comm, return_spec=False)
    except JobError as error:
        if comm.rank == 0:
            where = (
                f" (reported by rank {error.rank})" if comm.size > 1 else ""
            )
            log.error("%s%s", error, where)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
