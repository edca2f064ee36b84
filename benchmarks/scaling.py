"""World-size scaling of the DataJAX jobs: strong and weak, 1 to 4 ranks.

What it measures: how the time of one job changes with the number of MPI
ranks,

* strong scaling: the same input at every world size N; parallel
  efficiency ``T1 / (N * TN)``;
* weak scaling: an input that grows with N (N parts of the strong input's
  size, one more part per rank); efficiency ``T1 / TN``;

with rows per second and the bytes the ranks sent to each other, read
from the job's ``--metrics-out`` JSON (``shuffle_bytes`` and every
``per_rank[*].mpi_bytes_sent``).  World sizes above this machine's core
count (``os.cpu_count()``) are marked oversubscribed: ranks then share
cores, and their times say more about the scheduler than the job.

The input is a generated KV-cache trace in the shape of the Mooncake
trace (JSON Lines by default, or Parquet): each request lists the block
ids of its prompt, a shared root block, a prefix shared by the requests
of one conversation (conversations drawn with a Zipf-like skew), then
blocks of its own; plus ``input_length`` and ``output_length``.  The
export job reads it as the README's main example does (``--key hash_ids
--explode --extent-source key --page-bits 0``, both length columns
summarised).  Part k is part 0 with its block ids moved to a range of
their own, so the N parts of a weak input are equal in size and work,
and hold N times the rows, accesses and distinct blocks of one part.

Protocol: inputs are written once (or reused with ``--data-dir``); every
configuration runs once untimed to warm up (page cache, byte-code,
imports); then ``--runs`` rounds each visit every configuration in turn,
so a noisy neighbour on a shared machine hurts all of them alike.  Inside
each run every rank imports the job, waits at a barrier, starts the
clock, calls the job's ``main`` and waits at a second barrier; rank 0's
time between the barriers is the run's time.  Reported: the median and
the min-max of the runs.  The job's own clock (``elapsed_seconds`` of its
metrics; it starts without a barrier, so late ranks count) and the wall
time of the whole launch (interpreter start, imports, MPI start-up and
the launcher's own delays included: gforker was seen to add up to 2 s
while it waits for the ranks to end) are kept beside it.  Every
strong-scaling WaveSpec is compared with the one-rank WaveSpec (all
fields but ``meta.world_size``); a difference stops the benchmark.

Launchers:

* ``mpiexec`` (default): MPICH's ``mpiexec.gforker`` from the
  environment's ``bin/`` when it is there, else ``mpiexec``.  gforker
  starts the ranks on this machine by fork and opens no network port;
  Hydra's ``mpiexec`` listens on every address for its proxies.  Choose
  another with ``--mpiexec PATH``.  Source ``scripts/local-mpi-env``
  first so that the ranks' own sockets stay on loopback.
* ``srun``: ``srun --mpi=pmi2 --kill-on-bad-exit=1 --ntasks=N`` inside an
  allocation (``slurm/scaling_sweep.sbatch`` runs this script so).

Usage::

    python benchmarks/scaling.py                   # 1-4 ranks, 3 runs
    python benchmarks/scaling.py --rows 20000 --runs 1 --world-sizes 1,2
    sbatch --ntasks=4 --overcommit slurm/scaling_sweep.sbatch

Results go to ``--out-dir`` (default ``benchmarks/results``):
``scaling.json``, ``scaling.md`` (the table) and ``scaling.png``.

The replay tuner (``--jobs replay``, or ``--jobs export,replay``)
replays the feature pipeline of ``benchmarks/feature_pipeline.py`` (a
filter, an assign, a join with a 50,000-row user table and a group-by)
with its default executor, Bodo: its input is that pipeline's trace and
a sample of ``--rows`` access-log rows per part.  Its time includes
loading the compiled plan from Bodo's cache (the warm-up compiles it)
and the tuner's own warm-up and timed replay round.  Its strong-scaling
outputs, all but ``run``, must equal the one-rank output; the target
mesh is fixed (``--world-size 4``) so that the policy does not follow N.

Adding a job: give :data:`JOBS` one more :class:`BenchJob` (its module,
how to make its input for a number of parts, its flags, and what of its
output must not depend on N); ``--jobs`` then selects it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datajax.shm import remove_stale_segments

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT_NAMES = ("scaling.json", "scaling.md", "scaling.png")

# tokens per KV-cache block in the trace's model (Mooncake: 512)
BLOCK_TOKENS = 512
# part k is part 0 with every block id moved up by k * PART_ID_STEP: the
# parts are equal in rows, accesses and bytes (ids keep their digit count
# up to 9 parts) and share no block
PART_ID_STEP = 10**8
TRACE_SEED = 20261204
PARQUET_GROUP_ROWS = 8192


# ---------------------------------------------------------------------------
# the input: a generated KV-cache trace, one part per rank for weak scaling


def trace_columns(requests: int, seed: int, first_id: int) -> dict:
    """Generate one part of the trace as numpy arrays.

    Returns:
        ``offsets`` (requests + 1) into ``block_ids``, ``block_ids``,
        ``input_length``, ``output_length`` and ``timestamp`` columns.
    """
    rng = np.random.default_rng(seed)

    # conversations: a prefix of shared blocks each, drawn with a skew
    sessions = max(1, requests // 4)
    prefix = np.minimum(rng.geometric(1 / 12, sessions), 64)
    prefix_base = first_id + 1 + np.concatenate(
        [[0], np.cumsum(prefix)[:-1]]
    )
    weights = np.arange(1, sessions + 1, dtype=np.float64) ** -1.1
    cdf = np.cumsum(weights) / weights.sum()
    session = np.minimum(
        np.searchsorted(cdf, rng.random(requests), side="right"),
        sessions - 1,
    )

    # each request: the root block, its conversation's prefix, new blocks
    own = np.minimum(rng.geometric(1 / 8, requests), 128)
    shared = prefix[session]
    lengths = 1 + shared + own
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    own_base = first_id + 1 + int(prefix.sum()) + np.concatenate(
        [[0], np.cumsum(own)[:-1]]
    )
    row = np.repeat(np.arange(requests), lengths)
    at = np.arange(offsets[-1]) - offsets[row]
    block_ids = np.where(
        at == 0,
        first_id,
        np.where(
            at <= shared[row],
            prefix_base[session[row]] + at - 1,
            own_base[row] + at - 1 - shared[row],
        ),
    ).astype(np.int64)

    tokens = lengths * BLOCK_TOKENS - rng.integers(0, BLOCK_TOKENS, requests)
    return {
        "offsets": offsets,
        "block_ids": block_ids,
        "input_length": tokens.astype(np.int64),
        "output_length": rng.integers(1, 1024, requests, dtype=np.int64),
        "timestamp": np.cumsum(rng.integers(0, 4, requests)),
    }


def write_trace_part(path: Path, requests: int, part: int, fmt: str) -> None:
    """Write part ``part`` of the trace to ``path`` (jsonl or parquet).

    Written to a temporary name and renamed, so a half-written part is
    never taken for a finished one.
    """
    columns = trace_columns(requests, seed=TRACE_SEED,
                            first_id=(part + 1) * PART_ID_STEP)
    temporary = path.with_name(path.name + ".partial")
    offsets, ids = columns["offsets"], columns["block_ids"]
    if fmt == "jsonl":
        bounds = offsets.tolist()
        blocks = ids.tolist()
        records = zip(
            columns["timestamp"].tolist(),
            columns["input_length"].tolist(),
            columns["output_length"].tolist(),
            strict=True,
        )
        with open(temporary, "w", encoding="ascii") as stream:
            for i, (stamp, tokens, answer) in enumerate(records):
                listed = ", ".join(
                    map(str, blocks[bounds[i]:bounds[i + 1]])
                )
                stream.write(
                    f'{{"timestamp": {stamp}, "input_length": {tokens}, '
                    f'"output_length": {answer}, "hash_ids": [{listed}]}}'
                    "\n"
                )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "timestamp": columns["timestamp"],
            "input_length": columns["input_length"],
            "output_length": columns["output_length"],
            "hash_ids": pa.ListArray.from_arrays(
                pa.array(offsets.astype(np.int32)), pa.array(ids)
            ),
        })
        pq.write_table(table, temporary, row_group_size=PARQUET_GROUP_ROWS)
    os.replace(temporary, path)


def trace_parts(folder: Path, requests: int, count: int,
                fmt: str) -> list[Path]:
    """The first ``count`` parts of ``requests`` rows each; make missing."""
    suffix = "jsonl" if fmt == "jsonl" else "parquet"
    paths = []
    for part in range(count):
        path = folder / f"trace-{requests}-part{part}.{suffix}"
        if not path.exists():
            print(f"writing {path}", file=sys.stderr, flush=True)
            write_trace_part(path, requests, part, fmt)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# the jobs this benchmark knows


@dataclass(frozen=True)
class BenchJob:
    """How to run one job in this benchmark.

    Args:
        name: the name ``--jobs`` selects it by.
        module: the module whose ``main(argv)`` runs the job on every rank.
        inputs: job flags naming the input of ``parts`` parts of
            ``rows`` rows each (made on first use in ``folder``):
            ``(folder, rows, parts, fmt) -> flags``.
        flags: the job's other flags, the same at every world size.
        invariant: the part of its output that must not depend on the
            world size.
        input_rows: the number of input rows, from its output.
    """

    name: str
    module: str
    inputs: Callable[[Path, int, int, str], list[str]]
    flags: tuple[str, ...]
    invariant: Callable[[dict], dict]
    input_rows: Callable[[dict], int]
    accesses: Callable[[dict], int] = field(default=lambda spec: 0)


def _export_inputs(folder: Path, rows: int, parts: int,
                   fmt: str) -> list[str]:
    flags = []
    for path in trace_parts(folder, rows, parts, fmt):
        flags += ["--logs", str(path)]
    return flags


def _without_world_size(spec: dict) -> dict:
    meta = {k: v for k, v in spec["meta"].items() if k != "world_size"}
    return {**spec, "meta": meta}


# the replay tuner's input: the feature pipeline of feature_pipeline.py
# (filter, assign, join with a user table, group-by), its trace, and a
# sample of access-log rows, one part of ``rows`` rows per weak-scaling
# rank; the user table is the same at every size
REPLAY_USERS = 50_000
REPLAY_SEED = 20261205
REPLAY_TARGET_MESH = 4


def _replay_inputs(folder: Path, rows: int, parts: int,
                   fmt: str) -> list[str]:
    import pandas as pd
    from feature_pipeline import feature_pipeline, make_data

    from datajax.planner.replay import dump_trace

    dump = folder / f"replay-{rows}"
    trace = dump / "trace.json"
    users = dump / "tables" / "users.parquet"
    if not trace.exists():
        print(f"writing {dump}", file=sys.stderr, flush=True)
        data = make_data(rows, REPLAY_USERS, REPLAY_SEED)
        # the trace needs only the tables' columns; the sample it writes
        # is empty, the parts below are the sample
        dump_trace(feature_pipeline, data, str(dump), sample_rows=0)

    suffix = "jsonl" if fmt == "jsonl" else "parquet"
    sample = folder / f"replay-{rows}-logs-x{parts}.{suffix}"
    if not sample.exists():
        print(f"writing {sample}", file=sys.stderr, flush=True)
        logs = pd.concat(
            [make_data(rows, REPLAY_USERS, REPLAY_SEED + part)["logs"]
             for part in range(parts)],
            ignore_index=True,
        )
        temporary = sample.with_name(sample.name + ".partial")
        if fmt == "jsonl":
            logs.to_json(temporary, orient="records", lines=True,
                         double_precision=15)
        else:
            logs.to_parquet(temporary, row_group_size=PARQUET_GROUP_ROWS)
        os.replace(temporary, sample)
    return ["--trace", str(trace), "--sample", str(sample),
            "--sample-format", "json" if fmt == "jsonl" else "parquet",
            "--table", f"users={users}"]


def _without_run(doc: dict) -> dict:
    return {key: value for key, value in doc.items() if key != "run"}


JOBS: dict[str, BenchJob] = {
    "export": BenchJob(
        name="export",
        module="jobs.export_wavespec",
        inputs=_export_inputs,
        flags=(
            "--key", "hash_ids", "--explode", "--extent-source", "key",
            "--page-bits", "0", "--chunk-len", "input_length",
            "--window", "output_length",
        ),
        invariant=_without_world_size,
        input_rows=lambda spec: spec["meta"]["input_rows"],
        accesses=lambda spec: spec["meta"]["row_count"],
    ),
    "replay": BenchJob(
        name="replay",
        module="jobs.replay_tuner",
        inputs=_replay_inputs,
        # a fixed target mesh, so the policy cannot depend on N
        flags=("--world-size", str(REPLAY_TARGET_MESH)),
        invariant=_without_run,
        input_rows=lambda doc: doc["tables"]["logs"],
    ),
}


# ---------------------------------------------------------------------------
# inside one rank: barrier, clock, the job's main, barrier


def rank_main(job_name: str, timing_out: str, argv: list[str]) -> int:
    """Run one job on this rank between two barriers; rank 0 times it."""
    job = JOBS[job_name]
    module = importlib.import_module(job.module)

    # the job's own communicator; barriers on it are not byte-counted
    from datajax.mpi import world

    comm = world().mpi_comm
    comm.Barrier()
    started = time.perf_counter()
    code = module.main(argv)
    comm.Barrier()
    seconds = time.perf_counter() - started

    if comm.Get_rank() == 0 and code == 0:
        with open(timing_out, "w", encoding="utf-8") as stream:
            json.dump({"seconds": seconds, "ranks": comm.Get_size()},
                      stream)
    return code


# ---------------------------------------------------------------------------
# launching one run


def default_mpiexec() -> str:
    """gforker beside this Python, else mpiexec beside it or on PATH."""
    folder = Path(sys.executable).parent
    for name in ("mpiexec.gforker", "mpiexec"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec beside python or on PATH; pass "
                         "--mpiexec PATH")
    return found


@dataclass(frozen=True)
class Launcher:
    """Starts N ranks of a Python program: mpiexec or srun."""

    kind: str
    mpiexec: str = ""
    allocated_cpus: int = 0

    def command(self, ranks: int, program: list[str],
                timeout: float) -> list[str]:
        if self.kind == "mpiexec":
            return [self.mpiexec, "-n", str(ranks), *program]
        minutes = max(1, int(timeout // 60) + 1)
        command = [
            "srun", "--mpi=pmi2", "--kill-on-bad-exit=1",
            f"--ntasks={ranks}", f"--time={minutes}",
        ]
        if self.allocated_cpus and ranks > self.allocated_cpus:
            command.append("--overcommit")
        return [*command, *program]

    def describe(self) -> dict[str, Any]:
        if self.kind == "mpiexec":
            return {"kind": "mpiexec", "path": self.mpiexec}
        return {
            "kind": "srun",
            "options": "--mpi=pmi2 --kill-on-bad-exit=1",
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "allocated_cpus": self.allocated_cpus,
        }


def make_launcher(kind: str, mpiexec: str | None) -> Launcher:
    if kind == "mpiexec":
        return Launcher("mpiexec", mpiexec=mpiexec or default_mpiexec())
    if "SLURM_JOB_ID" not in os.environ:
        raise SystemExit(
            "--launcher srun runs job steps inside an allocation; start "
            "this script with sbatch (slurm/scaling_sweep.sbatch) or "
            "inside salloc"
        )
    cpus = os.environ.get("SLURM_CPUS_ON_NODE", "0")
    return Launcher("srun", allocated_cpus=int(cpus or 0))


@dataclass
class Run:
    """What one timed run left: times, byte counters, its output."""

    seconds: float
    job_seconds: float
    wall_seconds: float
    shuffle_bytes: int
    sent_per_rank: list[int]
    input_bytes: int
    peak_rss_bytes: int
    load_1min: float
    output: dict = field(repr=False)


def run_once(
    job: BenchJob,
    launcher: Launcher,
    ranks: int,
    inputs: list[str],
    timeout: float,
) -> Run:
    """Run the job once at ``ranks`` ranks in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="scaling-") as work:
        out = os.path.join(work, "out.json")
        metrics = os.path.join(work, "metrics.json")
        timing = os.path.join(work, "timing.json")
        program = [
            sys.executable, "-u", str(Path(__file__).resolve()),
            "--rank-main", job.name, "--timing-out", timing, "--",
            *inputs, *job.flags, "--out", out, "--metrics-out", metrics,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   MPIEXEC_TIMEOUT=str(int(timeout)))
        # a stale MPICH segment whose name a new launch reuses makes
        # MPI_Init fail ("Message truncated"); see datajax/shm.py
        remove_stale_segments()
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(
            launcher.command(ranks, program, timeout), env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout + 30, check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0 or not os.path.exists(timing):
            raise RuntimeError(
                f"{job.name} at {ranks} rank(s) exited with "
                f"{done.returncode}:\n{done.stderr[-4000:]}"
            )
        with open(timing, encoding="utf-8") as stream:
            seconds = json.load(stream)["seconds"]
        with open(metrics, encoding="utf-8") as stream:
            counters = json.load(stream)
        with open(out, encoding="utf-8") as stream:
            output = json.load(stream)

    per_rank = counters["per_rank"]
    return Run(
        seconds=seconds,
        job_seconds=counters["elapsed_seconds"],
        wall_seconds=wall,
        shuffle_bytes=counters["shuffle_bytes"],
        sent_per_rank=[entry["mpi_bytes_sent"] for entry in per_rank],
        input_bytes=counters["input_bytes"],
        peak_rss_bytes=max(entry["peak_rss_bytes"] for entry in per_rank),
        load_1min=load,
        output=output,
    )


# ---------------------------------------------------------------------------
# the protocol: warm-up, then rounds over every configuration


@dataclass(frozen=True)
class Case:
    """One configuration: a job, strong or weak, at one world size."""

    job: str
    mode: str
    ranks: int

    @property
    def parts(self) -> int:
        return self.ranks if self.mode == "weak" else 1


def measure(
    cases: Sequence[Case],
    launcher: Launcher,
    folder: Path,
    rows: int,
    fmt: str,
    runs: int,
    timeout: float,
) -> dict[Case, list[Run]]:
    """Warm every case up once, then time ``runs`` rounds of all cases."""
    inputs = {
        case: JOBS[case.job].inputs(folder, rows, case.parts, fmt)
        for case in cases
    }

    def one(case: Case, label: str) -> Run:
        print(f"{label}: {case.job} {case.mode} -n {case.ranks}",
              file=sys.stderr, flush=True)
        return run_once(JOBS[case.job], launcher, case.ranks,
                        inputs[case], timeout)

    for case in cases:
        one(case, "warm-up")
    timed: dict[Case, list[Run]] = {case: [] for case in cases}
    for round_index in range(runs):
        for case in cases:
            timed[case].append(one(case, f"run {round_index + 1}/{runs}"))
    return timed


def check_strong_outputs(timed: dict[Case, list[Run]]) -> None:
    """Every strong-scaling output equals the one-rank output.

    Raises:
        SystemExit: an output differs (a job bug, not a timing matter).
    """
    for case, case_runs in timed.items():
        if case.mode != "strong":
            continue
        job = JOBS[case.job]
        base = timed.get(Case(case.job, "strong", 1))
        reference = job.invariant((base or case_runs)[0].output)
        for run in case_runs:
            if job.invariant(run.output) != reference:
                raise SystemExit(
                    f"{case.job} at {case.ranks} ranks gave another "
                    "output than at 1 rank on the same input"
                )


# ---------------------------------------------------------------------------
# summary


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def summarize(
    timed: dict[Case, list[Run]], cores: int
) -> list[dict[str, Any]]:
    """One row of figures per case, with rows/s and efficiency."""
    rows = []
    for case, case_runs in timed.items():
        job = JOBS[case.job]
        first = case_runs[0]
        seconds = _spread([run.seconds for run in case_runs])
        input_rows = job.input_rows(first.output)
        rows.append({
            "job": case.job,
            "mode": case.mode,
            "ranks": case.ranks,
            "oversubscribed": case.ranks > cores,
            "input_parts": case.parts,
            "input_rows": input_rows,
            "accesses": job.accesses(first.output),
            "input_bytes": first.input_bytes,
            "seconds": seconds,
            "job_clock_seconds": _spread(
                [run.job_seconds for run in case_runs]),
            "wall_seconds": _spread(
                [run.wall_seconds for run in case_runs]),
            "rows_per_second": input_rows / seconds["median"],
            "shuffle_bytes": first.shuffle_bytes,
            "mpi_bytes_sent_per_rank": first.sent_per_rank,
            "mpi_bytes_vary_between_runs": any(
                run.sent_per_rank != first.sent_per_rank
                for run in case_runs
            ),
            "peak_rss_bytes_per_rank_max": max(
                run.peak_rss_bytes for run in case_runs),
            # the machine's 1-minute load average as each run started
            # (the benchmark's own earlier runs count in it too)
            "load_1min_at_start": _spread(
                [run.load_1min for run in case_runs]),
        })

    # efficiency against the same job and mode at one rank
    for row in rows:
        base = next(
            (other for other in rows
             if (other["job"], other["mode"], other["ranks"])
             == (row["job"], row["mode"], 1)),
            None,
        )
        # from the medians; from the fastest runs (on a shared machine
        # other work only ever adds time); from the wall times
        measures = (
            ("efficiency", "seconds", "median"),
            ("efficiency_best", "seconds", "min"),
            ("efficiency_wall", "wall_seconds", "median"),
        )
        for name, key, stat in measures:
            row[name] = None
            if base is not None:
                scale = row["ranks"] if row["mode"] == "strong" else 1
                row[name] = base[key][stat] / (scale * row[key][stat])
    return rows


# ---------------------------------------------------------------------------
# report: JSON, Markdown table, plot


def _runs_text(count: int) -> str:
    return f"{count} timed run{'' if count == 1 else 's'}"


def _kib(value: int) -> str:
    return f"{value / 1024:,.1f}"


def markdown_table(rows: Sequence[dict[str, Any]], meta: dict) -> str:
    """The results as Markdown: a header of facts, then one table."""
    lines = [
        "# World-size scaling",
        "",
        f"{meta['created']}, {meta['machine']['cores']} cores "
        f"({meta['machine']['processor'] or 'unknown CPU'}), launcher "
        f"`{meta['launcher']['kind']}`, "
        f"{_runs_text(meta['protocol']['runs'])} after one warm-up; input "
        f"{meta['input']['rows_per_part']:,} rows per part "
        f"({meta['input']['format']}). Produced by "
        "`benchmarks/scaling.py`.",
        "",
        "Time: rank 0 between a barrier before the job's `main` and one "
        "after it, median (min-max). Efficiency: strong T1/(N*TN), weak "
        "T1/TN, from the median times (and from the fastest runs). "
        "Wall: the whole launch, median. MPI KiB: bytes the ranks sent "
        "to other ranks (`shuffle_bytes`), then per rank. Rows marked * "
        "run more ranks than the machine has cores.",
        "",
        "| job | scaling | ranks | input MiB | rows | time s | rows/s "
        "| efficiency (best) | wall s | MPI KiB sent | per rank KiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = row["seconds"]
        ranks = f"{row['ranks']}{' *' if row['oversubscribed'] else ''}"
        efficiency = (
            "-" if row["efficiency"] is None
            else f"{row['efficiency']:.2f} ({row['efficiency_best']:.2f})"
        )
        lines.append(
            f"| {row['job']} | {row['mode']} | {ranks} "
            f"| {row['input_bytes'] / 2**20:,.1f} "
            f"| {row['input_rows']:,} "
            f"| {seconds['median']:.2f} ({seconds['min']:.2f}-"
            f"{seconds['max']:.2f}) "
            f"| {row['rows_per_second']:,.0f} "
            f"| {efficiency} "
            f"| {row['wall_seconds']['median']:.2f} "
            f"| {_kib(row['shuffle_bytes'])} "
            f"| {' / '.join(map(_kib, row['mpi_bytes_sent_per_rank']))} |"
        )
    loads = [value for row in rows
             for value in row["load_1min_at_start"]["runs"]]
    lines += [
        "",
        f"1-minute load average as the timed runs started: "
        f"{min(loads):.2f}-{max(loads):.2f} on "
        f"{meta['machine']['cores']} cores (this benchmark's own earlier "
        "runs count in it, and so does any other work on the machine).",
    ]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], meta: dict, path: Path) -> None:
    """Time, efficiency and MPI bytes against world size, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = meta["machine"]["cores"]
    figure, (time_ax, eff_ax, bytes_ax) = plt.subplots(
        1, 3, figsize=(14, 4.4)
    )
    colors = {
        ("export", "strong"): "tab:blue", ("export", "weak"): "tab:orange",
        ("replay", "strong"): "tab:green", ("replay", "weak"): "tab:red",
    }
    markers = {"strong": "o", "weak": "s"}
    ranks_seen = sorted({row["ranks"] for row in rows})

    for (job, mode) in sorted({(row["job"], row["mode"]) for row in rows}):
        series = sorted(
            (row for row in rows if (row["job"], row["mode"]) == (job, mode)),
            key=lambda row: row["ranks"],
        )
        color = colors.get((job, mode), "tab:gray")
        marker = markers.get(mode, "^")
        label = f"{job}, {mode}"
        ranks = [row["ranks"] for row in series]
        medians = [row["seconds"]["median"] for row in series]
        errors = [
            [row["seconds"]["median"] - row["seconds"]["min"]
             for row in series],
            [row["seconds"]["max"] - row["seconds"]["median"]
             for row in series],
        ]
        time_ax.errorbar(ranks, medians, yerr=errors, color=color,
                         marker=marker, capsize=3, label=label)
        if mode == "strong" and ranks[0] == 1:
            time_ax.plot(ranks, [medians[0] / n for n in ranks],
                         color=color, linestyle=":", linewidth=1,
                         label=f"{job}, strong ideal T1/N")
        efficiency = [row["efficiency"] for row in series]
        eff_ax.plot(ranks, efficiency, color=color, marker=marker,
                    label=f"{label} (medians)")
        eff_ax.plot(ranks, [row["efficiency_best"] for row in series],
                    color=color, marker=marker, linestyle="--",
                    linewidth=1, markerfacecolor="none",
                    label=f"{label} (fastest runs)")
        bytes_ax.plot(ranks, [row["shuffle_bytes"] / 2**20
                              for row in series],
                      color=color, marker=marker, label=label)

    eff_ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--",
                   label="ideal")
    time_ax.set_title("time (median; min-max)")
    time_ax.set_ylabel("seconds")
    time_ax.set_ylim(bottom=0)
    eff_ax.set_title("parallel efficiency")
    eff_ax.set_ylabel("strong T1/(N*TN), weak T1/TN")
    eff_ax.set_ylim(0, 1.15)
    bytes_ax.set_title("bytes sent between ranks")
    bytes_ax.set_ylabel("MiB (shuffle_bytes)")
    bytes_ax.set_ylim(bottom=0)
    for axes in (time_ax, eff_ax, bytes_ax):
        axes.set_xlabel("ranks (world size)")
        axes.set_xticks(ranks_seen)
        axes.grid(True, alpha=0.3)
        if max(ranks_seen) > cores:
            axes.axvspan(cores + 0.5, max(ranks_seen) + 0.5,
                         color="0.85", zorder=0,
                         label=f"oversubscribed (> {cores} cores)")
        axes.set_xlim(min(ranks_seen) - 0.5, max(ranks_seen) + 0.5)
    time_ax.legend(loc="best", fontsize=8)
    eff_ax.legend(loc="lower left", fontsize=8)
    figure.suptitle(
        f"DataJAX world-size scaling: {meta['input']['rows_per_part']:,} "
        f"trace rows per part ({meta['input']['format']}), "
        f"{cores} cores, {meta['launcher']['kind']}, "
        f"median of {_runs_text(meta['protocol']['runs'])}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    return {
        "cores": os.cpu_count() or 1,
        "processor": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------
# command line


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, not {text!r}"
        )
    return sorted(set(values))


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(JOBS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown job(s) {unknown or text!r}; known: {sorted(JOBS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Strong and weak world-size scaling of the DataJAX "
        "jobs; writes a JSON, a Markdown table and a plot.",
    )
    parser.add_argument("--jobs", type=_names, default=["export"],
                        help=f"jobs to run, of {sorted(JOBS)}, comma "
                        "separated (default export)")
    parser.add_argument("--world-sizes", type=_counts, default=[1, 2, 3, 4],
                        metavar="N,N,...",
                        help="rank counts (default 1,2,3,4; 1 is added, "
                        "efficiency needs it)")
    parser.add_argument("--modes", default="strong,weak",
                        help="strong, weak or both (default)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs per configuration (default 3)")
    parser.add_argument("--rows", type=int, default=300_000,
                        help="trace rows of the strong input, and of each "
                        "rank's part of the weak input (default 300000)")
    parser.add_argument("--format", choices=("jsonl", "parquet"),
                        default="jsonl", help="input format (default "
                        "jsonl)")
    parser.add_argument("--data-dir", type=Path,
                        help="keep and reuse the generated inputs here "
                        "(default: a temporary folder)")
    parser.add_argument("--out-dir", type=Path,
                        default=HERE / "results",
                        help="where the results go (default "
                        "benchmarks/results)")
    parser.add_argument("--launcher", choices=("mpiexec", "srun"),
                        default="mpiexec",
                        help="mpiexec (default) or srun inside an "
                        "allocation")
    parser.add_argument("--mpiexec", metavar="PATH",
                        help="the mpiexec to use (default: "
                        "mpiexec.gforker beside python, else mpiexec)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds one run may take (default 600)")
    # internal: the program each rank runs
    parser.add_argument("--rank-main", metavar="JOB",
                        help=argparse.SUPPRESS)
    parser.add_argument("--timing-out", help=argparse.SUPPRESS)
    parser.add_argument("job_args", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rank_main:
        return rank_main(args.rank_main, args.timing_out, args.job_args)
    if args.job_args:
        raise SystemExit(f"unexpected arguments: {args.job_args!r}")

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"strong", "weak"}:
        raise SystemExit(f"--modes takes strong and/or weak, not "
                         f"{args.modes!r}")
    if args.runs < 1 or args.rows < 1:
        raise SystemExit("--runs and --rows must be at least 1")
    launcher = make_launcher(args.launcher, args.mpiexec)
    sizes = sorted({1, *args.world_sizes})
    cases = [
        Case(job, mode, ranks)
        for job in args.jobs for mode in modes for ranks in sizes
        # the one-rank weak case is the one-rank strong case
        if not (mode == "weak" and ranks == 1 and "strong" in modes)
    ]

    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "machine": machine_facts(),
        "launcher": launcher.describe(),
        "protocol": {
            "runs": args.runs,
            "warm_up_runs": 1,
            "time": "rank 0, barrier to barrier around the job's main",
            "order": "rounds over all configurations",
        },
        "input": {"format": args.format, "rows_per_part": args.rows},
    }
    cores = meta["machine"]["cores"]
    if args.launcher == "srun" and launcher.allocated_cpus:
        cores = min(cores, launcher.allocated_cpus)
        meta["machine"]["cores"] = cores

    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        folder_context = None
        folder = args.data_dir
    else:
        folder_context = tempfile.TemporaryDirectory(prefix="scaling-data-")
        folder = Path(folder_context.name)
    try:
        timed = measure(cases, launcher, folder, args.rows, args.format,
                        args.runs, args.timeout)
    finally:
        if folder_context is not None:
            folder_context.cleanup()
    check_strong_outputs(timed)

    # the one-rank strong case stands in for the one-rank weak case
    if "weak" in modes and "strong" in modes:
        for job in args.jobs:
            timed_weak = {Case(job, "weak", 1): timed[Case(job, "strong", 1)]}
            timed = {**timed_weak, **timed}
    rows = summarize(timed, cores)
    rows.sort(key=lambda row: (row["job"], row["mode"], row["ranks"]))

    meta["machine"]["load_average_at_end"] = list(os.getloadavg())
    result = {"meta": meta, "results": rows}
    json_path, table_path, plot_path = (
        args.out_dir / name for name in RESULT_NAMES
    )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(rows, meta)
    table_path.write_text(table)
    plot(rows, meta, plot_path)
    print(table)
    print(f"wrote {json_path}, {table_path}, {plot_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
