"""What every job's command line shares: number types, quiet ranks,
SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Sequence

from datajax.log import setup_logging
from datajax.mpi import Comm, install_abort_hook, launcher_rank, world


def whole_number(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number, not {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be >= {minimum}, not {value}"
            )
        return value

    return parse


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse the command line; only rank 0 prints usage errors.

    Every rank parses the same arguments and exits with the same code, but
    N copies of one usage message help nobody.
    """
    if launcher_rank() == 0:
        return parser.parse_args(argv)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        return parser.parse_args(argv)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (scancel, srun) into SystemExit.

    The default action kills the process at once; through SystemExit a
    write in progress removes its temporary file.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def start_job(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, Comm]:
    """The opening every job shares: arguments, SIGTERM, world, logging.

    The parser must define ``--verbose``.  After this an uncaught
    exception on any rank aborts the whole world.
    """
    args = parse_arguments(parser, argv)
    exit_cleanly_on_sigterm()
    comm = world()
    setup_logging(comm.rank, comm.size, args.verbose)
    install_abort_hook()
    return args, comm
