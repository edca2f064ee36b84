"""datajax-launch: mpiexec with the byte-counting PMPI interposer.

Builds ``datajax/native/pmpi_count.c`` if needed, then replaces itself
with ``mpiexec -genv LD_PRELOAD <interposer> [mpiexec flags] CMD ...``
so that every rank counts the bytes it hands to MPI, Bodo's shuffles
included (see ``datajax.native.pmpi``)::

    python -m jobs.launch -n 2 -- datajax-export-wavespec --logs ...
    python -m jobs.launch --print-preload      # the path, e.g. for srun

Everything before ``--`` that is not one of the options below goes to
mpiexec unchanged.  If the interposer cannot be built, the command still
runs, without it, and the reason is printed first.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from datajax.native.pmpi import build_interposer
from datajax.shm import remove_stale_segments

log = logging.getLogger("jobs.launch")

PROG = "datajax-launch"
EXIT_USAGE = 2
EXIT_NO_PRELOAD = 1

USAGE = f"""\
usage: {PROG} [--mpiexec PATH] [MPIEXEC FLAGS ...] -- CMD [ARGS ...]
       {PROG} --print-preload

Run CMD under mpiexec with the PMPI byte-counting interposer preloaded
into every rank.

options:
  --print-preload  build the interposer if needed, print its path and
                   exit (1 if it cannot be built); for srun:
                   srun --mpi=pmi2 --export=ALL,LD_PRELOAD=PATH ...
  --mpiexec PATH   the mpiexec to run (default: the one beside this
                   Python, then PATH)
  -h, --help       show this message and exit
"""


class UsageError(ValueError):
    """The command line cannot be understood."""


def split_command_line(
    argv: Sequence[str],
) -> tuple[dict[str, str | bool], list[str], list[str]]:
    """Split ``argv`` into our options, mpiexec flags and the command.

    Raises:
        UsageError: no ``--`` before the command, or no command.
    """
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        head, command = args[:cut], args[cut + 1:]
    else:
        head, command = args, []

    options: dict[str, str | bool] = {}
    flags: list[str] = []
    index = 0
    while index < len(head):
        word = head[index]
        if word in ("-h", "--help"):
            options["help"] = True
        elif word == "--print-preload":
            options["print_preload"] = True
        elif word == "--mpiexec":
            if index + 1 >= len(head):
                raise UsageError("--mpiexec needs a path")
            options["mpiexec"] = head[index + 1]
            index += 1
        elif word.startswith("--mpiexec="):
            options["mpiexec"] = word.split("=", 1)[1]
        else:
            flags.append(word)
        index += 1

    if options.get("help") or options.get("print_preload"):
        return options, flags, command
    if not command:
        if head and "--" not in args:
            raise UsageError(
                "put '--' between the mpiexec flags and the command, "
                f"as in: {PROG} -n 2 -- python job.py"
            )
        raise UsageError("no command to run after '--'")
    return options, flags, command


def find_mpiexec(given: str | None = None) -> str | None:
    """Resolve ``given``, else the mpiexec beside this Python, or PATH's."""
    if given:
        return shutil.which(given) or given
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def mpiexec_command(
    mpiexec: str,
    flags: Sequence[str],
    command: Sequence[str],
    preload: Path | None,
    environ: dict[str, str] | None = None,
) -> list[str]:
    """The mpiexec command line, preloading ``preload`` if not None.

    A preload already in the environment is kept after ours.
    """
    env = os.environ if environ is None else environ
    head = [mpiexec]
    if preload is not None:
        value = str(preload)
        if env.get("LD_PRELOAD"):
            value = f"{value}:{env['LD_PRELOAD']}"
        head += ["-genv", "LD_PRELOAD", value]
    return [*head, *flags, *command]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build, then exec mpiexec (or print the preload path)."""
    logging.basicConfig(format=f"{PROG}: %(message)s")
    try:
        options, flags, command = split_command_line(
            sys.argv[1:] if argv is None else argv
        )
    except UsageError as error:
        sys.stderr.write(f"{USAGE}\n{PROG}: error: {error}\n")
        return EXIT_USAGE
    if options.get("help"):
        sys.stdout.write(USAGE)
        return 0

    built = build_interposer()
    if options.get("print_preload"):
        if built.path is None:
            log.error("cannot build the PMPI interposer: %s", built.reason)
            return EXIT_NO_PRELOAD
        print(built.path)
        return 0

    mpiexec = find_mpiexec(options.get("mpiexec"))
    if mpiexec is None:
        sys.stderr.write(
            f"{PROG}: error: no mpiexec beside {sys.executable} or on "
            "PATH; pass --mpiexec PATH\n"
        )
        return EXIT_USAGE
    if built.path is None:
        log.warning(
            "running WITHOUT the PMPI byte counters: %s", built.reason
        )
    full = mpiexec_command(mpiexec, flags, command, built.path)
    for path in remove_stale_segments():
        log.info("removed %s, left by an MPI run that ended abnormally",
                 path)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(full[0], full)
    except OSError as error:
        sys.stderr.write(f"{PROG}: error: cannot run {mpiexec}: {error}\n")
        return EXIT_USAGE
    return 0  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main())
