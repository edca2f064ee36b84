"""datajax-dump-trace: turn a djit pipeline into replay-tuner inputs.

Imports ``MODULE:FUNCTION`` (a ``djit``/``pjit`` function or a plain
function of frames), traces it on the tables given with ``--table``, and
writes into ``--out-dir`` the trace (``trace.json``, the
``trace_to_list`` JSON), the sample (``sample.parquet``, ``.csv`` or
``.jsonl``), every other input table under ``tables/`` and ``dump.json``
with the ``datajax-replay-tuner`` command that replays it::

    datajax-dump-trace examples.pipelines:features \\
        --table logs=logs.parquet --table users=users.csv \\
        --sample logs --sample-rows 100000 --out-dir dump/
    cd dump && mpiexec -n 4 datajax-replay-tuner --trace trace.json \\
        --sample sample.parquet --table users=tables/users.parquet \\
        --out policy.json

A one-process tool: it does not use MPI.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from datajax.io.sources import FORMATS, format_of
from datajax.ir.errors import IRError
from datajax.log import setup_logging

log = logging.getLogger("jobs.dump_trace")

PROG = "datajax-dump-trace"
EXIT_BAD_INPUT = 2


class DumpError(ValueError):
    """Bad input for the dump: a message naming what is wrong."""


def _binding(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE, not {text!r}"
        )
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command line of the dump tool."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Trace a DataJAX pipeline and write the trace, a sample and "
            "the join tables for datajax-replay-tuner."
        ),
    )
    parser.add_argument(
        "function", metavar="MODULE:FUNCTION",
        help="the pipeline: an importable module (or a .py file) and the "
        "name of a djit function or plain function of frames in it",
    )
    parser.add_argument(
        "--table", action="append", type=_binding, default=[],
        metavar="NAME=PATH", required=True,
        help="an input table: a DataFrame parameter of the function by "
        "its name, or a Frame.source table; format from the suffix; "
        "repeatable",
    )
    parser.add_argument(
        "--arg", action="append", type=_binding, default=[],
        metavar="NAME=JSON",
        help="another argument of the function, as a JSON value",
    )
    parser.add_argument(
        "--sample", metavar="NAME",
        help="the table that becomes the sample (default: the trace's "
        "first input table)",
    )
    parser.add_argument(
        "--sample-rows", type=int, metavar="N",
        help="keep only the first N rows of the sample",
    )
    parser.add_argument(
        "--sample-format", choices=FORMATS, default="parquet",
        help="the sample's file format (default parquet, which keeps "
        "dtypes exactly)",
    )
    parser.add_argument("--out-dir", required=True, metavar="DIR",
                        help="where to write the files")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with the traceback of a "
                        "pipeline that raises")
    return parser


def load_function(spec: str) -> Any:
    """Import ``module:function`` or ``path/to/file.py:function``.

    Raises:
        DumpError: malformed spec, module or name not found.
    """
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise DumpError(
            f"expected MODULE:FUNCTION (e.g. my_pipelines:features), not "
            f"{spec!r}"
        )
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise DumpError(f"{module_name}: no such file")
            loader = importlib.util.spec_from_file_location(
                "datajax_dumped_pipeline", module_name
            )
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise DumpError(f"cannot import {module_name!r}: {error}") from None
    except DumpError:
        raise
    except Exception as error:
        raise DumpError(
            f"importing {module_name!r} raised {type(error).__name__}: "
            f"{error}"
        ) from error
    function = getattr(module, name, None)
    if function is None or not callable(function):
        raise DumpError(
            f"{module_name!r} has no function {name!r}"
        )
    return function


def read_input(path: str) -> pd.DataFrame:
    """Read a whole table file with pandas (format from the suffix)."""
    try:
        fmt = format_of(path, None)
    except ValueError as error:
        raise DumpError(str(error)) from None
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "csv":
            return pd.read_csv(path)
        return pd.read_json(path, lines=True)
    except FileNotFoundError:
        raise DumpError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise DumpError(f"{path}: cannot be read ({error})") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Dump a pipeline; return the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(0, 1, args.verbose)
    from datajax.planner.replay import PipelineError, dump_trace

    try:
        function = load_function(args.function)
        tables = {}
        for name, path in args.table:
            if name in tables:
                raise DumpError(f"--table {name!r} is given twice")
            tables[name] = read_input(path)
        extra = {}
        for name, text in args.arg:
            try:
                extra[name] = json.loads(text)
            except json.JSONDecodeError as error:
                raise DumpError(
                    f"--arg {name}: not a JSON value ({error.msg})"
                ) from None
        manifest = dump_trace(
            function,
            tables,
            args.out_dir,
            sample=args.sample,
            sample_rows=args.sample_rows,
            sample_format=args.sample_format,
            args=extra,
        )
    except TypeError as error:
        log.error(
            "%s: %s; give every DataFrame parameter as --table NAME=PATH "
            "and other parameters as --arg NAME=JSON",
            args.function, error,
        )
        return EXIT_BAD_INPUT
    except PipelineError as error:
        log.debug("the pipeline's traceback", exc_info=error.__cause__)
        log.error(
            "%s; fix the pipeline (--verbose shows its traceback)", error,
        )
        return EXIT_BAD_INPUT
    except (DumpError, IRError, ValueError) as error:
        log.error("%s", error)
        return EXIT_BAD_INPUT
    except OSError as error:
        log.error(
            "cannot write into --out-dir %s: %s", args.out_dir,
            error.strerror or error,
        )
        return EXIT_BAD_INPUT
    log.info(
        "wrote %s: %d steps, sample %s (%d rows); replay with: %s",
        args.out_dir, manifest["steps"], manifest["sample"]["path"],
        manifest["sample"]["rows"], manifest["replay_command"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
