"""Throughput of datajax-export-wavespec beside pandas, DuckDB and Polars.

What it measures: rows per second of one query over one generated Parquet
access log (an int64 key column with a Zipf-like skew, an int64 size
column), computed by

* the job ``datajax-export-wavespec`` under ``mpiexec -n N`` (the
  launcher the scaling benchmark picks: ``mpiexec.gforker`` beside
  this Python when it is there, as in the README);
* plain vectorised pandas;
* DuckDB and Polars, at one or more thread counts.

The query is the job's WaveSpec core: every key's 64-bit hash as pandas'
``hash_pandas_object(keys, index=False)`` gives it; cohorts (count and
byte sum per 4-hex-digit hash prefix, top 64 by count descending then
prefix); extents (unique pages ``hash >> 20`` coalesced into runs of
consecutive pages); the row count and the byte total.  DuckDB and Polars
have no pandas hash, so their versions spell pandas' 64-bit integer hash
(the multiply-xorshift finalizer applied to the key's uint64 bits) in
their own expression language and do the same work.  Every result is
checked against the pandas result; a mismatch stops the benchmark.

Protocol: the data is written once (or reused with ``--data``); every
configuration runs once to warm up (page cache, imports, compiled
regexes), then ``--runs`` timed rounds visit every configuration in turn,
so a noisy neighbour on a shared machine hurts all of them alike.  Every
run is a fresh process, so peak memory is per run, not accumulated.

Two times are kept per run:

* ``compute``: measured inside the process, from before the file is
  opened to a finished result in memory.  For the job it is the
  ``elapsed_seconds`` of its runtime-metrics JSON (set-up, reading,
  hashing, the gather on rank 0, assembling and writing the WaveSpec;
  not the interpreter start, the imports or MPI start-up).
* ``wall``: the whole command as a user runs it, start-up included.

Rows per second and the ratio to pandas use the median compute time.
``cpu`` is user plus system time of the process tree over wall time, so
it shows how many cores a configuration really kept busy.

Usage::

    python benchmarks/export_bench.py                  # 10M rows, 3 runs
    python benchmarks/export_bench.py --rows 200000 --runs 1   # smoke test

Results go to ``--out-dir``: ``export_bench.json`` and a plot
``export_bench.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scaling import default_mpiexec, git_commit

from datajax.shm import remove_stale_segments

KEY = "key"
SIZE = "bytes"
PREFIX_LEN = 4
PAGE_BITS = 20
TOP_K = 64

# the 64-bit integer finalizer of pandas.core.util.hashing._hash_ndarray
MIX_STEPS = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB))
MIX_LAST_SHIFT = 31

PREFIX_SHIFT = 64 - 4 * PREFIX_LEN
UINT64_MASK = 2**64 - 1
ENGINES = ("pandas", "duckdb", "polars")
RESULT_NAME = "export_bench.json"
PLOT_NAME = "export_bench.png"


# ---------------------------------------------------------------------------
# the data


def zipf_ranks(
    rng: np.random.Generator, count: int, cdf: np.ndarray
) -> np.ndarray:
    """Draw ``count`` ranks 0..len(cdf)-1 from a bounded Zipf CDF."""
    return np.searchsorted(cdf, rng.random(count), side="right")


def rank_to_key(ranks: np.ndarray) -> np.ndarray:
    """Spread ranks over the whole int64 range (negative keys included)."""
    scrambled = (ranks.astype(np.uint64) + np.uint64(1)) * np.uint64(
        0x9E3779B97F4A7C15
    )
    return scrambled.view(np.int64)


def write_access_log(
    path: str,
    rows: int,
    distinct: int,
    skew: float,
    group_rows: int,
    seed: int,
) -> None:
    """Write a Parquet access log: int64 ``key`` (Zipf-like), ``bytes``.

    Rows are written one row group at a time, so memory stays at one
    group whatever ``rows`` is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = np.arange(1, distinct + 1, dtype=np.float64) ** -skew
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    schema = pa.schema([(KEY, pa.int64()), (SIZE, pa.int64())])
    temporary = path + ".partial"
    with pq.ParquetWriter(temporary, schema) as writer:
        for start in range(0, rows, group_rows):
            count = min(group_rows, rows - start)
            keys = rank_to_key(zipf_ranks(rng, count, cdf))
            sizes = rng.integers(1, 513, count, dtype=np.int64) * 512
            writer.write_table(
                pa.table({KEY: keys, SIZE: sizes}, schema=schema),
                row_group_size=group_rows,
            )
    os.replace(temporary, path)


def parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


# ---------------------------------------------------------------------------
# the query, once per engine (each runs inside a worker process)


@dataclass
class QueryResult:
    """What every engine must agree on."""

    cohorts: list[dict[str, Any]]
    starts: np.ndarray
    npages: np.ndarray
    row_count: int
    total_bytes: int


def _prefix_text(code: int) -> str:
    return format(int(code), f"0{PREFIX_LEN}x")


def _cohort_rows(
    codes: Sequence[int], counts: Sequence[int], sums: Sequence[int]
) -> list[dict[str, Any]]:
    return [
        {"prefix": _prefix_text(code), "count": int(count),
         "bytes": int(total)}
        for code, count, total in zip(codes, counts, sums, strict=True)
    ]


def query_pandas(path: str, threads: int) -> QueryResult:
    """The query in plain vectorised pandas (numpy for the page runs)."""
    import pandas as pd
    from pandas.util import hash_pandas_object

    frame = pd.read_parquet(path, columns=[KEY, SIZE])
    hashes = hash_pandas_object(frame[KEY], index=False).to_numpy()

    # cohorts: group by the first hex digits of the hash
    codes = hashes >> np.uint64(PREFIX_SHIFT)
    groups = (
        pd.DataFrame({"prefix": codes, SIZE: frame[SIZE].to_numpy()})
        .groupby("prefix", sort=False)[SIZE]
        .agg(["size", "sum"])
        .reset_index()
        .sort_values(["size", "prefix"], ascending=[False, True])
        .head(TOP_K)
    )

    # extents: sorted unique pages, split where a page does not follow on
    pages = np.unique(hashes >> np.uint64(PAGE_BITS))
    breaks = np.flatnonzero(np.diff(pages) != 1) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks, [pages.size]])

    return QueryResult(
        _cohort_rows(groups["prefix"], groups["size"], groups["sum"]),
        pages[first].astype(np.uint64),
        (last - first).astype(np.int64),
        int(len(frame)),
        int(frame[SIZE].sum()),
    )


def _duckdb_hash_sql(source: str) -> str:
    """SQL giving column ``h``: pandas' hash of ``key``, and ``size``.

    DuckDB checks integer overflow, so the wrapping 64-bit multiply goes
    through UHUGEINT and keeps the low 64 bits.  One projection per step
    keeps the expression tree linear.
    """
    mask = f"{UINT64_MASK}::UHUGEINT"
    query = (
        f"SELECT CASE WHEN {KEY} >= 0 THEN {KEY}::UBIGINT "
        f"ELSE ({KEY}::HUGEINT + {2**64})::UBIGINT END AS h, "
        f"{SIZE} AS size FROM {source}"
    )
    for shift, factor in MIX_STEPS:
        query = f"SELECT xor(h, h >> {shift}) AS h, size FROM ({query})"
        query = (
            f"SELECT ((h::UHUGEINT * {factor}::UHUGEINT) & {mask})"
            f"::UBIGINT AS h, size FROM ({query})"
        )
    return (
        f"SELECT xor(h, h >> {MIX_LAST_SHIFT}) AS h, size FROM ({query})"
    )


def query_duckdb(path: str, threads: int) -> QueryResult:
    """The query in DuckDB SQL over ``read_parquet``.

    The hashed column is materialised once in a temporary table and the
    three answers are read from it.
    """
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    source = "read_parquet(" + _sql_text(path) + ")"
    con.execute(
        "CREATE TEMP TABLE hashed AS " + _duckdb_hash_sql(source)
    )

    cohorts = con.execute(
        f"SELECT h >> {PREFIX_SHIFT} AS prefix, count(*) AS n, "
        "sum(size)::HUGEINT AS total FROM hashed GROUP BY prefix "
        f"ORDER BY n DESC, prefix LIMIT {TOP_K}"
    ).fetchall()

    # a run of consecutive pages has one value of page - row_number
    extents = con.execute(
        f"WITH pages AS (SELECT DISTINCT h >> {PAGE_BITS} AS page "
        "FROM hashed), "
        "numbered AS (SELECT page, page::HUGEINT - row_number() OVER "
        "(ORDER BY page) AS run FROM pages) "
        "SELECT min(page) AS start, count(*) AS npages FROM numbered "
        "GROUP BY run ORDER BY start"
    ).fetchnumpy()

    row_count, total = con.execute(
        "SELECT count(*), coalesce(sum(size), 0)::HUGEINT FROM hashed"
    ).fetchone()
    con.close()
    return QueryResult(
        _cohort_rows(*zip(*cohorts, strict=True)) if cohorts else [],
        np.asarray(extents["start"], dtype=np.uint64),
        np.asarray(extents["npages"], dtype=np.int64),
        int(row_count),
        int(total),
    )


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _polars_hash(polars):
    """Polars expression: pandas' hash of ``key`` as UInt64.

    UInt64 arithmetic in Polars wraps, and floor division by a power of
    two is the logical right shift.
    """
    pl = polars
    value = pl.col(KEY).reinterpret(signed=False)
    for shift, factor in MIX_STEPS:
        value = value ^ (value // pl.lit(1 << shift, pl.UInt64))
        value = value * pl.lit(factor, pl.UInt64)
    return value ^ (value // pl.lit(1 << MIX_LAST_SHIFT, pl.UInt64))


def query_polars(path: str, threads: int) -> QueryResult:
    """The query as three lazy Polars queries collected together.

    ``collect_all`` shares the common scan and hash between them.
    """
    import polars as pl

    hashed = pl.scan_parquet(path).select(
        _polars_hash(pl).alias("h"), pl.col(SIZE)
    )
    cohorts = (
        hashed.group_by(
            (pl.col("h") // pl.lit(1 << PREFIX_SHIFT, pl.UInt64))
            .alias("prefix")
        )
        .agg(pl.len().alias("n"), pl.col(SIZE).sum().alias("total"))
        .sort(["n", "prefix"], descending=[True, False])
        .head(TOP_K)
    )
    extents = (
        hashed.select(
            (pl.col("h") // pl.lit(1 << PAGE_BITS, pl.UInt64))
            .unique()
            .sort()
            .cast(pl.Int64)
            .alias("page")
        )
        .with_columns(
            (pl.col("page") - pl.int_range(pl.len(), dtype=pl.Int64))
            .alias("run")
        )
        .group_by("run")
        .agg(pl.col("page").min().alias("start"), pl.len().alias("npages"))
        .sort("start")
    )
    totals = hashed.select(
        pl.len().alias("rows"), pl.col(SIZE).sum().alias("total")
    )
    top, runs, sums = pl.collect_all([cohorts, extents, totals])
    return QueryResult(
        _cohort_rows(top["prefix"], top["n"], top["total"]),
        runs["start"].to_numpy().astype(np.uint64),
        runs["npages"].to_numpy().astype(np.int64),
        int(sums["rows"][0]),
        int(sums["total"][0] or 0),
    )


QUERIES = {
    "pandas": query_pandas,
    "duckdb": query_duckdb,
    "polars": query_polars,
}


def _peak_rss_self() -> int:
    """Peak resident memory of this process, in bytes.

    On Linux ``ru_maxrss`` carries the parent's high-water mark across
    fork and exec (a worker started by this fat driver would report the
    driver's peak), so the kernel's ``VmHWM`` of this image comes first.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak if sys.platform == "darwin" else peak * 1024


# imported before the clock starts, as the job has its imports done
# before it starts its own clock
ENGINE_MODULES = {
    "pandas": ("pandas", "pandas.util", "pyarrow.parquet"),
    "duckdb": ("duckdb",),
    "polars": ("polars",),
}


def run_worker(engine: str, path: str, threads: int, out: str) -> None:
    """Run one engine once in this process; write timing and result."""
    import importlib

    for module in ENGINE_MODULES[engine]:
        importlib.import_module(module)
    query = QUERIES[engine]
    started = time.perf_counter()
    result = query(path, threads)
    seconds = time.perf_counter() - started
    np.save(out + ".starts.npy", result.starts)
    np.save(out + ".npages.npy", result.npages)
    with open(out, "w", encoding="utf-8") as stream:
        json.dump({
            "seconds": seconds,
            "peak_rss_bytes": _peak_rss_self(),
            "cohorts": result.cohorts,
            "row_count": result.row_count,
            "total_bytes": result.total_bytes,
        }, stream)


def load_worker_result(out: str) -> tuple[dict[str, Any], QueryResult]:
    with open(out, encoding="utf-8") as stream:
        info = json.load(stream)
    result = QueryResult(
        info["cohorts"],
        np.load(out + ".starts.npy"),
        np.load(out + ".npages.npy"),
        info["row_count"],
        info["total_bytes"],
    )
    return info, result


def load_job_result(spec_path: str) -> QueryResult:
    with open(spec_path, encoding="utf-8") as stream:
        spec = json.load(stream)
    extents = spec["extents"]
    return QueryResult(
        spec["cohorts"],
        np.array([e["start_page"] for e in extents], dtype=np.uint64),
        np.array([e["npages"] for e in extents], dtype=np.int64),
        spec["meta"]["row_count"],
        spec["meta"]["approx_bytes"],
    )


def differences(got: QueryResult, want: QueryResult) -> list[str]:
    """What differs between two results (empty when they agree)."""
    problems = []
    if got.row_count != want.row_count:
        problems.append(f"row_count {got.row_count} != {want.row_count}")
    if got.total_bytes != want.total_bytes:
        problems.append(
            f"total bytes {got.total_bytes} != {want.total_bytes}"
        )
    if got.cohorts != want.cohorts:
        problems.append(
            f"cohorts differ (first: {got.cohorts[:2]!r} vs "
            f"{want.cohorts[:2]!r})"
        )
    if not (np.array_equal(got.starts, want.starts)
            and np.array_equal(got.npages, want.npages)):
        problems.append(
            f"extents differ ({got.starts.size} vs {want.starts.size} runs)"
        )
    return problems


# ---------------------------------------------------------------------------
# running one configuration once


@dataclass(frozen=True)
class Config:
    """One thing to time: the job at N ranks or an engine at T threads."""

    engine: str
    width: int  # ranks for the job, threads for an engine

    @property
    def name(self) -> str:
        if self.engine == "job":
            return f"datajax-export-wavespec -n {self.width}"
        if self.engine == "pandas":
            return "pandas"
        return f"{self.engine} threads={self.width}"


@dataclass
class Run:
    compute_seconds: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: list[int]
    result: QueryResult = field(repr=False)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_command(
    command: list[str], env: dict[str, str], timeout: float
) -> tuple[float, float]:
    """Run a command; return its wall and CPU seconds (tree, reaped)."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout,
    )
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n"
            f"{done.stderr[-4000:]}"
        )
    return wall, cpu


def _job_command() -> list[str]:
    script = shutil.which(
        "datajax-export-wavespec", path=os.path.dirname(sys.executable)
    )
    if script is not None:
        return [script]
    return [sys.executable, "-m", "jobs.export_wavespec"]


def run_config(
    config: Config, data: str, work: str, timeout: float
) -> Run:
    """Run one configuration once, in fresh processes."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if config.engine == "job":
        spec = os.path.join(work, "spec.json")
        metrics = os.path.join(work, "metrics.json")
        command = [
            default_mpiexec(), "-n", str(config.width), *_job_command(),
            "--logs", data, "--key", KEY, "--size", SIZE,
            "--prefix-len", str(PREFIX_LEN), "--page-bits", str(PAGE_BITS),
            "--top-k", str(TOP_K), "--out", spec, "--metrics-out", metrics,
        ]
        env["MPIEXEC_TIMEOUT"] = str(int(timeout))
        remove_stale_segments()
        wall, cpu = _run_command(command, env, timeout + 30)
        with open(metrics, encoding="utf-8") as stream:
            info = json.load(stream)
        peaks = [entry["peak_rss_bytes"] for entry in info["per_rank"]]
        return Run(info["elapsed_seconds"], wall, cpu, peaks,
                   load_job_result(spec))

    out = os.path.join(work, f"{config.engine}.json")
    if config.engine == "polars":
        env["POLARS_MAX_THREADS"] = str(config.width)
    command = [
        sys.executable, os.path.abspath(__file__), "--worker",
        config.engine, "--threads", str(config.width), "--data", data,
        "--worker-out", out,
    ]
    wall, cpu = _run_command(command, env, timeout)
    info, result = load_worker_result(out)
    return Run(info["seconds"], wall, cpu, [info["peak_rss_bytes"]], result)


# ---------------------------------------------------------------------------
# summary and report


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def summarize(
    configs: Sequence[Config], runs: dict[Config, list[Run]], rows: int
) -> list[dict[str, Any]]:
    """One row of figures per configuration."""
    baseline = next(
        (statistics.median(r.compute_seconds for r in runs[c])
         for c in configs if c.engine == "pandas"),
        None,
    )
    summary = []
    for config in configs:
        timed = runs[config]
        compute = _stats([run.compute_seconds for run in timed])
        wall = _stats([run.wall_seconds for run in timed])
        cores = statistics.median(
            run.cpu_seconds / run.wall_seconds for run in timed
        )
        peaks = [max(values) for values in zip(
            *(run.peak_rss_bytes for run in timed), strict=False
        )]
        summary.append({
            "config": config.name,
            "engine": config.engine,
            "ranks" if config.engine == "job" else "threads": config.width,
            "compute_seconds": compute,
            "wall_seconds": wall,
            "rows_per_second": rows / compute["median"],
            "rows_per_second_wall": rows / wall["median"],
            "vs_pandas": (
                baseline / compute["median"] if baseline else None
            ),
            "busy_cores": cores,
            "peak_rss_bytes_per_process": peaks,
            "runs": [
                {"compute_seconds": run.compute_seconds,
                 "wall_seconds": run.wall_seconds,
                 "cpu_seconds": run.cpu_seconds,
                 "peak_rss_bytes": run.peak_rss_bytes}
                for run in timed
            ],
        })
    return summary


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| configuration | compute s median (min-max) | Mrows/s | "
        "x pandas | wall s median | Mrows/s wall | busy cores "
        "| peak RSS MiB per process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        compute = row["compute_seconds"]
        ratio = row["vs_pandas"]
        lines.append(
            f"| {row['config']} "
            f"| {compute['median']:.2f} ({compute['min']:.2f}-"
            f"{compute['max']:.2f}) "
            f"| {row['rows_per_second'] / 1e6:.2f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {row['wall_seconds']['median']:.2f} "
            f"| {row['rows_per_second_wall'] / 1e6:.2f} "
            f"| {row['busy_cores']:.2f} "
            f"| {' / '.join(map(_mib, row['peak_rss_bytes_per_process']))} |"
        )
    return "\n".join(lines)


def plot(summary: Sequence[dict[str, Any]], rows: int, path: str) -> bool:
    """Bar chart of rows/s (median, whiskers min-max); False if no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [row["config"] for row in summary]
    medians = [row["rows_per_second"] / 1e6 for row in summary]
    fastest = [rows / row["compute_seconds"]["min"] / 1e6 for row in summary]
    slowest = [rows / row["compute_seconds"]["max"] / 1e6 for row in summary]
    errors = [
        [m - s for m, s in zip(medians, slowest, strict=True)],
        [f - m for m, f in zip(medians, fastest, strict=True)],
    ]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    axes.barh(names, medians, xerr=errors, capsize=3, color="tab:blue")
    axes.invert_yaxis()
    axes.set_xlabel("million rows per second (compute, median; min-max)")
    axes.set_title(f"WaveSpec export query, {rows:,} rows")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# ---------------------------------------------------------------------------
# command line


def _counts(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, not {text!r}"
        )
    return values


def _engines(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Rows per second of datajax-export-wavespec at several rank "
            "counts beside pandas, DuckDB and Polars on the same file."
        ),
    )
    parser.add_argument("--rows", type=int, default=10_000_000,
                        help="rows to generate (default 10,000,000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs per configuration (default 3)")
    parser.add_argument(
        "--out-dir",
        default=os.path.join(tempfile.gettempdir(), "datajax-export-bench"),
        help="where the results JSON and plot go (default: %(default)s)",
    )
    parser.add_argument("--data", metavar="PATH",
                        help="reuse this Parquet file instead of generating "
                        f"one (columns {KEY!r}, {SIZE!r})")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the generated file (its path is printed)")
    parser.add_argument("--ranks", type=_counts, default=[1, 2],
                        help="job rank counts (default 1,2)")
    parser.add_argument("--threads", type=_counts, default=[1, 2],
                        help="DuckDB and Polars thread counts "
                        "(default 1,2)")
    parser.add_argument("--engines", type=_engines, default=list(ENGINES),
                        help="in-process engines to compare "
                        "(default pandas,duckdb,polars)")
    parser.add_argument("--distinct", type=int, default=1 << 20,
                        help="key universe of the generator "
                        "(default 1048576)")
    parser.add_argument("--skew", type=float, default=1.1,
                        help="Zipf exponent of the keys (default 1.1)")
    parser.add_argument("--row-group-rows", type=int, default=1 << 20,
                        help="rows per Parquet row group (default 1048576)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one run may take (default 1800)")
    # a worker process runs one engine once
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser


def _validate(parser: argparse.ArgumentParser, args) -> None:
    if args.rows < 1:
        parser.error(f"--rows must be >= 1, not {args.rows}")
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, not {args.runs}")
    if args.distinct < 1:
        parser.error(f"--distinct must be >= 1, not {args.distinct}")
    if args.row_group_rows < 1:
        parser.error(
            f"--row-group-rows must be >= 1, not {args.row_group_rows}"
        )
    if args.data is not None and not os.path.isfile(args.data):
        parser.error(f"--data {args.data!r}: no such file")


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.data, args.threads[0], args.worker_out)
        return 0
    _validate(parser, args)
    os.makedirs(args.out_dir, exist_ok=True)

    # -- the data, written once ----------------------------------------------
    scratch = tempfile.mkdtemp(prefix="export-bench-")
    data = args.data
    generated = data is None
    if generated:
        data = os.path.join(scratch, "accesses.parquet")
        _say(f"writing {args.rows:,} rows to {data}")
        started = time.perf_counter()
        write_access_log(data, args.rows, args.distinct, args.skew,
                         args.row_group_rows, args.seed)
        _say(f"  {time.perf_counter() - started:.1f} s, "
             f"{os.path.getsize(data) / 2**20:,.0f} MiB")
    rows = parquet_rows(data)

    configs = [Config(engine, 1) for engine in args.engines
               if engine == "pandas"]
    configs += [Config("job", n) for n in args.ranks]
    configs += [
        Config(engine, threads)
        for engine in args.engines if engine != "pandas"
        for threads in args.threads
    ]

    load_before = _load_average()
    try:
        # -- warm-up, and the check that everyone computes the same -----
        reference: QueryResult | None = None
        reference_name = ""
        for config in configs:
            work = tempfile.mkdtemp(dir=scratch)
            _say(f"warm-up  {config.name}")
            run = run_config(config, data, work, args.timeout)
            if reference is None:
                reference, reference_name = run.result, config.name
                continue
            problems = differences(run.result, reference)
            if problems:
                raise SystemExit(
                    f"{config.name} disagrees with {reference_name}: "
                    + "; ".join(problems)
                )
        _say(f"all {len(configs)} configurations agree "
             f"({reference.row_count:,} rows, {reference.starts.size:,} "
             "extents)")

        # -- timed rounds, every configuration once per round ------------
        runs: dict[Config, list[Run]] = {config: [] for config in configs}
        for round_index in range(args.runs):
            for config in configs:
                work = tempfile.mkdtemp(dir=scratch)
                run = run_config(config, data, work, args.timeout)
                problems = differences(run.result, reference)
                if problems:
                    raise SystemExit(
                        f"{config.name} (run {round_index + 1}) disagrees "
                        f"with {reference_name}: " + "; ".join(problems)
                    )
                run.result = None
                runs[config].append(run)
                _say(f"run {round_index + 1}/{args.runs}  {config.name}: "
                     f"{run.compute_seconds:.2f} s compute, "
                     f"{run.wall_seconds:.2f} s wall")
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if generated and not args.keep_data:
            os.unlink(data)
        elif generated:
            _say(f"data kept at {data}")
        for entry in os.listdir(scratch):
            full = os.path.join(scratch, entry)
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
        if not os.listdir(scratch):
            os.rmdir(scratch)

    # -- report ---------------------------------------------------------
    summary = summarize(configs, runs, rows)
    table = markdown_table(summary)
    cores = os.cpu_count()
    _say("")
    load_after = _load_average()
    _say(f"{rows:,} rows, {args.runs} timed run(s) each, {cores} cores "
         f"({platform.processor() or platform.machine()}); 1-minute load "
         f"average {load_before} before the runs, {load_after} after "
         "(other work on the machine slows every configuration)")
    _say("")
    _say(table)

    report = {
        "benchmark": "datajax-export-wavespec",
        "git_commit": git_commit(),
        "rows": rows,
        "data": data if (not generated or args.keep_data) else None,
        "generator": None if not generated else {
            "distinct": args.distinct, "skew": args.skew,
            "row_group_rows": args.row_group_rows, "seed": args.seed,
        },
        "extents": int(reference.starts.size),
        "runs": args.runs,
        "cpu_count": cores,
        "mpiexec": default_mpiexec(),
        "load_average_1min": {"before": load_before, "after": load_after},
        "python": platform.python_version(),
        "versions": _versions(),
        "results": summary,
        "table": table,
    }
    result_path = os.path.join(args.out_dir, RESULT_NAME)
    with open(result_path, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2)
        stream.write("\n")
    plot_path = os.path.join(args.out_dir, PLOT_NAME)
    _say("")
    _say(f"results: {result_path}")
    if plot(summary, rows, plot_path):
        _say(f"plot: {plot_path}")
    return 0


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("pandas", "numpy", "pyarrow", "duckdb", "polars",
                 "mpi4py", "datajax"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


if __name__ == "__main__":
    sys.exit(main())
