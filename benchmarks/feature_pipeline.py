"""A feature pipeline on pandas, the Bodo replay path and Bodo native.

What it measures: seconds per run of one DataJAX pipeline (filter,
derived columns, an inner join with a user table, a group-by with five
reductions) called through ``djit`` on generated data, for every backend
that is registered:

* ``pandas``: the reference, one process;
* ``bodo``: the replay path, the plan's pandas code compiled by
  ``bodo.jit`` and run SPMD (every rank passes its share of the rows);
* ``bodo-native``: the plan lowered onto ``bodo.pandas``, which spawns
  its own workers.

Every backend's result is compared with pandas' (rows sorted by the
group keys, floats to 1e-9 relative); a mismatch stops the benchmark.

Protocol: every rank generates the same data from ``--seed`` and keeps
its share (rows ``[r*n//N, (r+1)*n//N)``).  Each backend runs once
untimed (Bodo compiles, or loads its cache, there), then ``--runs``
rounds visit every backend in turn, so a noisy neighbour on a shared
machine hurts all of them alike.  The exception is ``bodo-native``: its
spawned workers busy-wait between calls, a core each, so it is warmed
up and timed after the other backends are done, and its workers are
stopped before the policies are tuned.  A run's time is rank 0's, from a
barrier before the call to a barrier after it (so it spans the slowest
rank); reported are the median and the min-max.  Under ``mpiexec -n N``
pandas runs on rank 0 over the whole data while the other ranks wait
(it is a one-process engine: its time is the one-core baseline), the
``bodo`` backend runs on every rank, and ``bodo-native`` is skipped
(it must be started from one plain process; its own error says so).
With the PMPI interposer preloaded (``python -m jobs.launch``), the
bytes each backend handed to MPI per run are shown too.

Policies: ``--tune-policy`` replays the pipeline's trace stage by stage
with each backend (``datajax.planner.replay.replay_and_tune``) and
prints the suggested staged policy; ``--policy-dir DIR`` writes one JSON
per backend with the baseline (this benchmark's timings), the plan
metrics and the recommended policy.  ``DATAJAX_RUNTIME_METRICS`` is
merged into the metrics as it is by the tuner.  ``--dump-trace DIR``
writes the trace, the generated logs as the sample and the user table,
ready for ``datajax-replay-tuner`` (see ``dump.json`` there).
``--out-dir DIR`` keeps the timings as JSON and a bar plot.

Usage::

    python benchmarks/feature_pipeline.py --rows 1000000
    mpiexec -n 2 python benchmarks/feature_pipeline.py --rows 1000000 \\
        --tune-policy --policy-dir /tmp/policies
    python benchmarks/feature_pipeline.py --rows 20000 --runs 1 \\
        --skip-native --dump-trace /tmp/feature-dump
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

BACKENDS = ("pandas", "bodo", "bodo-native")
GROUP_KEYS = ["country", "tier"]
RESULT_NAME = "feature_pipeline.json"
PLOT_NAME = "feature_pipeline.png"


# ---------------------------------------------------------------------------
# the pipeline and its data


def feature_pipeline(logs, users):
    """Per country and tier: requests, traffic and latency of good calls."""
    ok = logs[(logs["status"] == 200) & (logs["bytes"] > 0)]
    ok = ok.assign(kb=ok["bytes"] / 1024.0, cost=ok["latency_ms"] * 0.001)
    joined = ok.merge(users, on="user_id", how="inner")
    joined = joined.assign(weighted_kb=joined["kb"] * joined["tier"])
    return joined.groupby(GROUP_KEYS).agg(
        requests=("kb", "count"),
        total_kb=("kb", "sum"),
        weighted_kb=("weighted_kb", "sum"),
        mean_ms=("latency_ms", "mean"),
        max_cost=("cost", "max"),
    )


def make_data(rows: int, users: int, seed: int) -> dict[str, pd.DataFrame]:
    """Access logs with a skew over users, and the user table."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, users + 1, dtype=np.float64) ** -0.8
    cdf = np.cumsum(weights) / weights.sum()
    user = np.minimum(
        np.searchsorted(cdf, rng.random(rows), side="right"), users - 1
    )
    logs = pd.DataFrame({
        "user_id": user.astype(np.int64),
        "bytes": rng.integers(0, 1 << 22, rows, dtype=np.int64),
        "status": rng.choice(
            np.array([200, 200, 200, 200, 304, 404, 500]), rows
        ).astype(np.int64),
        "latency_ms": rng.gamma(2.0, 30.0, rows),
    })
    countries = np.array(["br", "de", "fr", "in", "jp", "ng", "us"])
    table = pd.DataFrame({
        "user_id": np.arange(users, dtype=np.int64),
        "country": countries[rng.integers(0, len(countries), users)],
        "tier": rng.integers(1, 4, users, dtype=np.int64),
    })
    table["country"] = table["country"].astype("str")
    return {"logs": logs, "users": table}


def share(frame: pd.DataFrame, rank: int, size: int) -> pd.DataFrame:
    """Rows ``[rank*n//size, (rank+1)*n//size)`` of a table."""
    n = len(frame)
    lo, hi = n * rank // size, n * (rank + 1) // size
    return frame.iloc[lo:hi].reset_index(drop=True)


# ---------------------------------------------------------------------------
# measuring


def _pmpi_sent() -> int | None:
    try:
        from datajax.native.pmpi import read_counters
    except ImportError:
        return None
    counters = read_counters()
    return counters.bytes_sent if counters.available else None


def _pmpi_status() -> str:
    try:
        from datajax.native.pmpi import read_counters
    except ImportError:
        return "unavailable: datajax.native.pmpi is missing"
    return read_counters().status


class Backend:
    """One backend: how it is called on this rank, and what it measured."""

    def __init__(self, name: str, comm, data, shares) -> None:
        self.name = name
        self.comm = comm
        self.data = data
        self.shares = shares
        self.skip: str | None = None
        self.seconds: list[float] = []
        self.mpi_bytes: list[int | None] = []
        self.result: pd.DataFrame | None = None
        self.compiled = None

    @property
    def active(self) -> bool:
        """Whether this rank calls the backend at all."""
        if self.skip is not None:
            return False
        # pandas: one process engine, on rank 0 over the whole data
        return self.name != "pandas" or self.comm.rank == 0

    def prepare(self) -> None:
        from datajax import djit
        from datajax.runtime import executor_names, get_executor

        if self.name not in executor_names():
            self.skip = "not registered in datajax.runtime yet"
            return
        if self.name == "bodo-native" and self.comm.size > 1:
            self.skip = (
                "runs in Bodo's spawn mode from one plain process, not "
                f"inside an MPI world of {self.comm.size} ranks; run the "
                "benchmark without mpiexec to time it"
            )
            return
        try:
            executor = get_executor(self.name)
        except Exception as error:  # report and go on without it
            self.skip = f"{type(error).__name__}: {error}"
            return
        self.compiled = djit(feature_pipeline, executor=executor)

    def call(self) -> pd.DataFrame:
        tables = self.data if self.name == "pandas" else self.shares
        if self.name == "bodo-native":
            tables = self.data
        return self.compiled(tables["logs"], tables["users"])


def _agree_skip(backend: Backend, problem: str | None) -> None:
    """Every rank skips a backend that failed on any rank."""
    from datajax.mpi import first_error

    failure = first_error(backend.comm, problem)
    if failure is not None:
        backend.skip = f"failed on rank {failure[0]}: {failure[1]}"


def run_round(backends: Sequence[Backend], timed: bool) -> None:
    """Call every backend once, between barriers."""
    for backend in backends:
        if backend.skip is not None:
            continue
        comm = backend.comm
        comm.barrier()
        sent0 = _pmpi_sent()
        started = time.perf_counter()
        problem = None
        result = None
        if backend.active:
            try:
                result = backend.call()
            except Exception as error:  # a failing backend is reported
                problem = f"{type(error).__name__}: {error}"
        sent1 = _pmpi_sent()
        comm.barrier()
        seconds = time.perf_counter() - started
        _agree_skip(backend, problem)
        if backend.skip is not None:
            continue
        if timed:
            backend.seconds.append(seconds)
            sent = None if sent0 is None or sent1 is None else sent1 - sent0
            every = comm.gather(sent)
            if comm.rank == 0:
                backend.mpi_bytes.append(
                    None if any(v is None for v in every) else sum(every)
                )
        if comm.rank == 0 and result is not None:
            backend.result = result


def check_results(backends: Sequence[Backend]) -> dict[str, str]:
    """Rank 0: compare every result with pandas'; raise on a mismatch."""
    reference = next(
        (b.result for b in backends if b.name == "pandas"), None
    )
    verdicts = {}
    for backend in backends:
        if backend.skip is not None or backend.result is None:
            continue
        if backend.name == "pandas":
            verdicts[backend.name] = "reference"
            continue
        if reference is None:
            verdicts[backend.name] = "unchecked (no pandas run)"
            continue
        expected = reference.sort_values(GROUP_KEYS).reset_index(drop=True)
        got = backend.result.sort_values(GROUP_KEYS).reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(
                got, expected, check_exact=False, rtol=1e-9
            )
        except AssertionError as error:
            raise SystemExit(
                f"{backend.name} disagrees with pandas:\n{error}"
            ) from None
        verdicts[backend.name] = "matches pandas"
    return verdicts


# ---------------------------------------------------------------------------
# policies


def tune(backends, data, shares, comm, args) -> dict[str, Any]:
    """Replay the trace with each backend; rank 0 gets one report each."""
    from datajax import djit
    from datajax.planner.replay import ReplayError, replay_and_tune
    from datajax.planner.sharding import Resource

    trace = djit(feature_pipeline).trace(data["logs"], data["users"])
    reports = {}
    for backend in backends:
        if backend.skip is not None:
            continue
        # the tuner replays every rank's share with the backend
        tables = shares if comm.size > 1 else data
        try:
            report = replay_and_tune(
                trace, tables,
                resources=Resource(("data",), comm.size),
                executor=backend.compiled.executor,
                runtime=_env_counters(),
                comm=comm,
                whole_tables=data if comm.rank == 0 else None,
            )
        except ReplayError as error:
            if comm.rank == 0:
                print(f"policy for {backend.name}: not made: {error}")
            continue
        if comm.rank == 0:
            reports[backend.name] = report
    return reports


def _env_counters():
    from datajax.planner.replay import runtime_layers

    return runtime_layers(None)


def write_policy(directory, backend, report, summary, args) -> str:
    from datajax.io.exporter import write_json_atomic

    doc = {
        "benchmark": "feature_pipeline",
        "backend": backend.name,
        "ranks": backend.comm.size,
        "rows": args.rows,
        "users": args.users,
        "baseline": summary,
        "mesh": report.to_dict()["mesh"],
        "metrics": report.to_dict()["metrics"],
        "policy": report.policy.to_dict(),
        "replay": report.run_dict(),
    }
    path = os.path.join(directory, f"feature_pipeline.{backend.name}.json")
    write_json_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


# ---------------------------------------------------------------------------
# the table


def _fmt_bytes(values: Sequence[int | None]) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    return f"{int(statistics.median(values)):,}"


def summarize(backend: Backend, rows: int, reference: float | None):
    if not backend.seconds:
        return None
    median = statistics.median(backend.seconds)
    return {
        "seconds_median": round(median, 6),
        "seconds_min": round(min(backend.seconds), 6),
        "seconds_max": round(max(backend.seconds), 6),
        "runs": len(backend.seconds),
        "rows_per_second": round(rows / median) if median else None,
        "speedup_vs_pandas": (
            round(reference / median, 3) if reference and median else None
        ),
        "mpi_bytes_per_run": (
            None if _fmt_bytes(backend.mpi_bytes) == "n/a"
            else int(statistics.median(backend.mpi_bytes))
        ),
        "result_rows": (
            None if backend.result is None else len(backend.result)
        ),
    }


def print_table(backends, summaries, verdicts, comm, args) -> None:
    header = (
        f"{'backend':<12} {'ranks':>5} {'median s':>9} {'min-max s':>15} "
        f"{'rows/s':>12} {'vs pandas':>9} {'MPI bytes/run':>14}  result"
    )
    print(
        f"feature_pipeline: {args.rows:,} log rows, {args.users:,} users, "
        f"{comm.size} rank(s), {args.runs} timed run(s) after 1 warm-up; "
        f"{platform.node()} ({os.cpu_count()} cores)"
    )
    print(header)
    print("-" * len(header))
    for backend in backends:
        summary = summaries.get(backend.name)
        if summary is None:
            print(f"{backend.name:<12} skipped: {backend.skip}")
            continue
        ranks = 1 if backend.name == "pandas" else comm.size
        spread = f"{summary['seconds_min']:.3f}-{summary['seconds_max']:.3f}"
        speedup = summary["speedup_vs_pandas"]
        print(
            f"{backend.name:<12} {ranks:>5} "
            f"{summary['seconds_median']:>9.3f} {spread:>15} "
            f"{summary['rows_per_second']:>12,} "
            f"{(f'{speedup:.2f}x' if speedup else '-'):>9} "
            f"{_fmt_bytes(backend.mpi_bytes):>14}  "
            f"{verdicts.get(backend.name, '-')}"
        )
    if any(not b.mpi_bytes or None in b.mpi_bytes for b in backends
           if b.seconds):
        print(f"MPI bytes: {_pmpi_status()}")


def print_policies(reports) -> None:
    for name, report in reports.items():
        policy = report.policy
        print(
            f"\nsuggested policy ({name}, target mesh "
            f"{report.plan.resources.world_size} rank(s)): "
            f"BM={policy.BM} BN={policy.BN} BK={policy.BK} "
            f"swizzle_size={policy.swizzle_size} "
            f"stage_depth={policy.stage_depth}"
        )
        for note in policy.notes:
            print(f"  - {note}")


def plot(summaries, path: str, title: str) -> str:
    """A bar per backend: median seconds, min-max as error bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install .[bench])"
    names = list(summaries)
    medians = [summaries[n]["seconds_median"] for n in names]
    low = [m - summaries[n]["seconds_min"] for n, m in zip(
        names, medians, strict=True)]
    high = [summaries[n]["seconds_max"] - m for n, m in zip(
        names, medians, strict=True)]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.bar(names, medians, yerr=[low, high], capsize=4, color="#4a7ab5")
    axes.set_ylabel("seconds per run (median, min-max)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return f"wrote {path}"


# ---------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time a DataJAX feature pipeline on every backend."
    )
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="access-log rows (default 1000000)")
    parser.add_argument("--users", type=int, default=50_000,
                        help="rows of the user table (default 50000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--skip-native", action="store_true",
                        help="do not run the bodo-native backend")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {BACKENDS}")
    parser.add_argument("--tune-policy", action="store_true",
                        help="print the suggested staged policy")
    parser.add_argument("--policy-dir", metavar="DIR",
                        help="write one policy JSON per backend here")
    parser.add_argument("--dump-trace", metavar="DIR",
                        help="write the trace, sample and user table for "
                        "datajax-replay-tuner here")
    parser.add_argument("--out-dir", metavar="DIR",
                        help=f"write {RESULT_NAME} (timings) and "
                        f"{PLOT_NAME} here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rows < 1 or args.users < 1 or args.runs < 1:
        print("--rows, --users and --runs must be >= 1", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        print(f"unknown backend {unknown[0]!r}; choose from {BACKENDS}",
              file=sys.stderr)
        return 2
    from datajax.mpi import install_abort_hook, world

    install_abort_hook()
    comm = world()
    for folder in (args.policy_dir, args.out_dir):
        if folder and comm.rank == 0:
            os.makedirs(folder, exist_ok=True)

    # the data: the same everywhere, a share per rank
    data = make_data(args.rows, args.users, args.seed)
    shares = {
        name: share(frame, comm.rank, comm.size)
        for name, frame in data.items()
    }
    if args.dump_trace and comm.rank == 0:
        from datajax.planner.replay import dump_trace

        manifest = dump_trace(feature_pipeline, data, args.dump_trace)
        print(f"dumped the trace to {args.dump_trace}: "
              f"{manifest['replay_command']}")

    backends = [Backend(name, comm, data, shares) for name in names]
    for backend in backends:
        if backend.name == "bodo-native" and args.skip_native:
            backend.skip = "--skip-native"
            continue
        backend.prepare()

    # warm-up, then the timed rounds; the native backend's idle workers
    # would take the cores from the others, so it runs last, alone
    in_process = [b for b in backends if b.name != "bodo-native"]
    native = [b for b in backends if b.name == "bodo-native"]
    for group in (in_process, native):
        run_round(group, timed=False)
        for _ in range(args.runs):
            run_round(group, timed=True)
    if native and comm.size == 1:
        from datajax.runtime.bodo_native import stop_workers

        stop_workers()

    reports = {}
    if args.tune_policy or args.policy_dir:
        reports = tune(backends, data, shares, comm, args)
    if comm.rank != 0:
        return 0

    verdicts = check_results(backends)
    reference = next(
        (statistics.median(b.seconds) for b in backends
         if b.name == "pandas" and b.seconds), None,
    )
    summaries = {}
    for backend in backends:
        summary = summarize(backend, args.rows, reference)
        if summary is not None:
            summary["result"] = verdicts.get(backend.name)
            summaries[backend.name] = summary
    print_table(backends, summaries, verdicts, comm, args)
    if args.tune_policy:
        print_policies(reports)
    if args.policy_dir:
        for backend in backends:
            if backend.name in reports:
                path = write_policy(
                    args.policy_dir, backend, reports[backend.name],
                    summaries.get(backend.name), args,
                )
                print(f"wrote {path}")
    if args.out_dir:
        from datajax.io.exporter import write_json_atomic

        path = os.path.join(args.out_dir, RESULT_NAME)
        write_json_atomic(path, json.dumps({
            "rows": args.rows, "users": args.users, "ranks": comm.size,
            "runs": args.runs, "machine": platform.node(),
            "cores": os.cpu_count(),
            "backends": {
                b.name: summaries.get(b.name) or {"skipped": b.skip}
                for b in backends
            },
        }, indent=2, allow_nan=False) + "\n")
        print(f"wrote {path}")
        if summaries:
            print(plot(
                summaries, os.path.join(args.out_dir, PLOT_NAME),
                f"feature_pipeline: {args.rows:,} rows, {comm.size} "
                "rank(s)",
            ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
