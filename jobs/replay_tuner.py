"""datajax-replay-tuner: replay a trace on a sample, write a staged policy.

Runs on one process or under ``mpiexec -n N`` / ``srun --mpi=pmi2``:
every rank reads its share of the sample (and of every ``--table``),
replays the trace stage by stage with the backend, and rank 0 writes one
JSON holding the plan metrics (estimated from the whole sample, runtime
counters merged), the staged policy and this run's measurements.  See
``datajax.planner.replay`` and ``datajax.planner.policy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from datajax.io.exporter import write_json_atomic
from datajax.io.sources import FORMATS
from datajax.ir.nodes import Source
from datajax.ir.serialize import trace_to_list
from datajax.mpi import (
    LaunchError,
    detect_launcher,
    first_error,
    share_from_root,
)
from datajax.planner.metrics import ENV_VAR as METRICS_ENV_VAR
from datajax.planner.replay import (
    JOB_NAME,
    ReplayError,
    TableFile,
    load_trace,
    read_share,
    read_table,
    replay_and_tune,
    runtime_layers,
    table_file,
)
from datajax.planner.sharding import Resource
from jobs._cli import start_job, whole_number

log = logging.getLogger("jobs.replay_tuner")

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
DEFAULT_EXECUTOR = "bodo"
EXECUTOR_ENV_VAR = "DATAJAX_EXECUTOR"


def _mesh_axes(text: str) -> tuple[str, ...]:
    axes = tuple(part.strip() for part in text.split(","))
    if not all(axes):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated axis names such as 'data,model', "
            f"not {text!r}"
        )
    return axes


def _binding(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH (a table name of the trace and its file), "
            f"not {text!r}"
        )
    return name, path


def build_parser() -> argparse.ArgumentParser:
    """The command line of the replay tuner."""
    parser = argparse.ArgumentParser(
        prog=JOB_NAME,
        description=(
            "Replay a serialized DataJAX trace on a sample with the real "
            "backend, measure every stage, merge runtime counters into "
            "the plan metrics and write a staged policy (BM, BN, BK, "
            "swizzle_size, stage_depth) as JSON. Run alone or under "
            "mpiexec -n N / srun --mpi=pmi2."
        ),
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--trace", required=True, metavar="PATH",
        help="the trace: the JSON list trace_to_list writes (see "
        "datajax-dump-trace)",
    )
    inputs.add_argument(
        "--sample", required=True, metavar="PATH",
        help="the sample of the trace's input table that no --table binds",
    )
    inputs.add_argument(
        "--sample-format", choices=FORMATS,
        help="csv, json (JSON Lines) or parquet (default: from the "
        "suffix)",
    )
    inputs.add_argument(
        "--table", action="append", type=_binding, default=[],
        metavar="NAME=PATH",
        help="bind the trace's table NAME (e.g. a join's right-hand "
        "side) to a file; format from the suffix; repeatable",
    )
    inputs.add_argument(
        "--metrics-in", metavar="PATH",
        help="a runtime-metrics JSON whose counters are merged into the "
        f"plan metrics; {METRICS_ENV_VAR} applies too, and where both "
        "give a counter --metrics-in wins",
    )

    mesh = parser.add_argument_group("target mesh")
    mesh.add_argument(
        "--mesh-axes", type=_mesh_axes, default=("data",), metavar="A,B",
        help="mesh axis names (default: data)",
    )
    mesh.add_argument(
        "--world-size", type=whole_number(1), metavar="N",
        help="ranks of the target mesh (default: the ranks of this run); "
        "the policy depends on it, not on the ranks that replay",
    )

    run = parser.add_argument_group("replay")
    run.add_argument(
        "--executor", metavar="NAME",
        help=f"backend: --executor, else ${EXECUTOR_ENV_VAR}, else "
        f"{DEFAULT_EXECUTOR} (an error if Bodo is not usable: pass "
        "--executor pandas)",
    )
    run.add_argument(
        "--warmup", type=whole_number(0), default=1, metavar="N",
        help="untimed rounds first (default 1)",
    )
    run.add_argument(
        "--repeats", type=whole_number(1), default=1, metavar="N",
        help="timed rounds; stage times are medians (default 1)",
    )

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", required=True, metavar="PATH",
                         help="where to write the policy JSON")
    outputs.add_argument(
        "--metrics-out", metavar="PATH",
        help="where to write this run's runtime-metrics JSON",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging on rank 0")
    return parser


# ---------------------------------------------------------------------------
# set-up on rank 0


def _check_output(path: str, flag: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ReplayError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ReplayError(
            f"{flag} {path}: the folder {folder} is not writable"
        )


def _bind(
    sources: Sequence[str], bindings: Sequence[tuple[str, str]]
) -> tuple[str, dict[str, str]]:
    """Which table the sample binds, and the --table files by name."""
    tables: dict[str, str] = {}
    for name, path in bindings:
        if name not in sources:
            raise ReplayError(
                f"--table {name}={path}: the trace has no table named "
                f"{name!r}; it reads {list(sources)!r}"
            )
        if name in tables and tables[name] != path:
            raise ReplayError(
                f"--table {name!r} is bound twice ({tables[name]} and "
                f"{path})"
            )
        tables[name] = path
    left = [name for name in sources if name not in tables]
    if not left:
        raise ReplayError(
            f"every table the trace reads ({list(sources)!r}) is bound by "
            "--table, so --sample binds none; drop the --table of the "
            "sample's table"
        )
    if len(left) > 1:
        raise ReplayError(
            f"the trace reads tables {left!r} that no --table binds; "
            "--sample binds one of them, bind the others with --table "
            "NAME=PATH"
        )
    return left[0], tables


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    _check_output(args.out, "--out")
    if args.metrics_out is not None:
        _check_output(args.metrics_out, "--metrics-out")
    trace = load_trace(args.trace)
    layers = runtime_layers(args.metrics_in)
    sample, bound = _bind(trace.sources, args.table)
    schemas = {
        step.name: step.schema
        for step in trace.steps
        if isinstance(step, Source)
    }
    files = [table_file(sample, args.sample, args.sample_format,
                        schemas[sample])]
    files += [
        table_file(name, path, None, schemas[name])
        for name, path in bound.items()
    ]
    return {
        "trace": trace_to_list(trace),
        "files": files,
        "sample": sample,
        "layers": layers,
    }


# ---------------------------------------------------------------------------
# the backend


def choose_executor(
    name: str | None, environ: Mapping[str, str] | None = None
):
    """--executor, else DATAJAX_EXECUTOR, else bodo; checked usable.

    A backend that needs Bodo is checked by importing Bodo now (on every
    rank), so a missing or forbidden Bodo is one clear error before any
    work instead of a failure in the first stage.

    Raises:
        ReplayError: an unknown name, or a backend that cannot be used
            (the message says how to replay with pandas instead).
    """
    from datajax.runtime import executor_names, get_executor

    env = os.environ if environ is None else environ
    given = name or env.get(EXECUTOR_ENV_VAR, "").strip() or None
    chosen = given or DEFAULT_EXECUTOR
    what = "executor" if given else "the default executor"
    hint = (
        f"pass --executor pandas (or set {EXECUTOR_ENV_VAR}=pandas) to "
        "replay with pandas"
    )
    if given is None and DEFAULT_EXECUTOR not in executor_names():
        raise ReplayError(
            f"the default executor {DEFAULT_EXECUTOR!r} is not registered "
            f"here (executors: {list(executor_names())!r}); {hint}"
        )
    try:
        executor = get_executor(chosen)
    except ValueError as error:
        raise ReplayError(str(error)) from None
    except Exception as error:
        raise ReplayError(
            f"{what} {chosen!r} cannot be used: {type(error).__name__}: "
            f"{error}; {hint}"
        ) from None
    try:
        module = sys.modules.get(type(executor).__module__)
        importer = getattr(module, "import_bodo", None)
        mode = getattr(executor, "mode", None)
        stub = callable(mode) and mode() == "stub"
        if importer is not None and not stub:
            importer(f"{JOB_NAME} ({what} {chosen!r})")
    except Exception as error:
        raise ReplayError(
            f"{what} {chosen!r} cannot be used: {type(error).__name__}: "
            f"{error}; {hint}"
        ) from None
    return executor


# ---------------------------------------------------------------------------
# the run


def _output(report, args, setup) -> dict[str, Any]:
    doc = report.to_dict()
    files: list[TableFile] = setup["files"]
    doc["inputs"] = {
        "trace": args.trace,
        "sample": {
            "table": files[0].name, "path": files[0].path,
            "format": files[0].format,
        },
        "tables": {
            f.name: {"path": f.path, "format": f.format} for f in files[1:]
        },
        "metrics_in": args.metrics_in,
        "metrics_env": bool(os.environ.get(METRICS_ENV_VAR, "").strip()),
        "precedence": (
            f"--metrics-in over {METRICS_ENV_VAR}, counter by counter"
        ),
    }
    order = ["job", "inputs", "mesh", "executor", "tables", "stages",
             "runtime_counters", "metrics", "policy", "run"]
    return {key: doc[key] for key in order}


def _run(args: argparse.Namespace, comm) -> None:
    setup = share_from_root(
        comm, lambda: _setup(args), ReplayError, ReplayError
    )

    problem = None
    executor = None
    try:
        executor = choose_executor(args.executor)
    except ReplayError as error:
        problem = str(error)
    failure = first_error(comm, problem)
    if failure is not None:
        raise ReplayError(failure[1], failure[0])

    files: list[TableFile] = setup["files"]
    shares, nbytes = read_share(files, comm)
    whole = None
    problem = None
    if comm.size > 1 and comm.rank == 0:
        # the estimates describe the whole tables: rank 0 reads them
        stats = {"input_bytes": 0}
        try:
            whole = {file.name: read_table(file, stats) for file in files}
        except ReplayError as error:
            problem = str(error)
        nbytes += stats["input_bytes"]
    failure = first_error(comm, problem)
    if failure is not None:
        raise ReplayError(failure[1], failure[0])
    log.info(
        "replaying %d step(s) with %s on %d rank(s), target mesh %s",
        len(setup["trace"]), executor.name, comm.size,
        f"{args.world_size or comm.size} rank(s)",
    )

    resources = Resource(args.mesh_axes, args.world_size or comm.size)
    report = replay_and_tune(
        setup["trace"],
        shares,
        resources=resources,
        executor=executor,
        runtime=setup["layers"],
        comm=comm,
        whole_tables=whole,
        warmup=args.warmup,
        repeats=args.repeats,
        input_bytes=nbytes,
    )
    if comm.rank != 0:
        return

    doc = _output(report, args, setup)
    write_json_atomic(
        args.out, json.dumps(doc, indent=2, allow_nan=False) + "\n"
    )
    if args.metrics_out is not None:
        write_json_atomic(
            args.metrics_out,
            json.dumps(report.runtime_metrics(), indent=2, allow_nan=False)
            + "\n",
        )
    policy = report.policy
    log.info(
        "wrote %s: BM=%d BN=%d BK=%d swizzle_size=%d stage_depth=%d "
        "(replay %.3f s)",
        args.out, policy.BM, policy.BN, policy.BK, policy.swizzle_size,
        policy.stage_depth, report.totals["replay_seconds"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit code (the same on every rank)."""
    args, comm = start_job(build_parser(), argv)

    try:
        launch = detect_launcher(comm.size)
        Resource(args.mesh_axes, args.world_size or comm.size)
    except (LaunchError, ValueError, TypeError) as error:
        # every rank sees the same arguments, so every rank stops here
        if comm.rank == 0:
            log.error("%s", error)
        return EXIT_BAD_INPUT
    log.debug("launcher %s, world size %d", launch.launcher, comm.size)

    try:
        _run(args, comm)
    except ReplayError as error:
        if comm.rank == 0:
            where = (
                f" (reported by rank {error.rank})" if comm.size > 1 else ""
            )
            log.error("%s%s", error, where)
        return EXIT_FAILED if error.internal else EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
