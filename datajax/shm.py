"""Stale MPICH shared-memory segments: find them, remove them.

MPICH (the build Bodo's wheel bundles) keeps the shared memory of the
ranks on one node in a file ``/dev/shm/mpich_shm_<id>_<n>``, where the
id is derived from the launch (under ``mpiexec.gforker``, from the
launcher's process id). The file is removed at ``MPI_Finalize``; a rank
that is killed or aborts leaves it behind. When a later launch derives
the same id (process ids wrap at ``/proc/sys/kernel/pid_max``, 32768 on
many machines), its ranks attach to the stale file and ``MPI_Init``
fails with "Message truncated".

A segment is stale here when no process maps it and it was last changed
more than ``min_age`` seconds ago (a launch maps its segment within
``MPI_Init``, so a young unmapped one may be a launch starting now).

    python -m datajax.shm            # list the stale segments
    python -m datajax.shm --remove   # and remove them
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Sequence

SHM_FOLDER = "/dev/shm"
SEGMENT_PATTERN = "mpich_shm_*"
DEFAULT_MIN_AGE = 60.0


def _mapped_paths(folder: str) -> set[str]:
    """Every file in ``folder`` that some process maps (that we may
    see)."""
    prefix = folder.rstrip("/") + "/"
    mapped = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps, encoding="utf-8", errors="replace") as stream:
                for line in stream:
                    at = line.find(prefix)
                    if at >= 0:
                        path = line[at:].rstrip("\n")
                        mapped.add(path.removesuffix(" (deleted)"))
        except OSError:
            # the process ended, or is not ours to read
            continue
    return mapped


def stale_segments(
    min_age: float = DEFAULT_MIN_AGE, folder: str = SHM_FOLDER
) -> list[str]:
    """MPICH segments in ``folder`` that no process maps, oldest first."""
    # /proc/*/maps names files by their resolved path
    folder = os.path.realpath(folder)
    now = time.time()
    candidates = []
    for path in glob.glob(os.path.join(folder, SEGMENT_PATTERN)):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        if info.st_uid == os.getuid() and now - info.st_mtime > min_age:
            candidates.append((info.st_mtime, path))
    if not candidates:
        return []
    mapped = _mapped_paths(folder)
    return [path for _, path in sorted(candidates) if path not in mapped]


def remove_stale_segments(
    min_age: float = DEFAULT_MIN_AGE, folder: str = SHM_FOLDER
) -> list[str]:
    """Remove the stale segments; return the paths removed."""
    removed = []
    for path in stale_segments(min_age, folder):
        try:
            # a launch that reused the name since the scan has touched it
            if time.time() - os.stat(path).st_mtime <= min_age:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datajax.shm",
        description="List (or remove) MPICH shared-memory segments that "
        "crashed or aborted MPI runs left in /dev/shm.",
    )
    parser.add_argument("--remove", action="store_true",
                        help="remove them")
    parser.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE,
                        metavar="SECONDS",
                        help="only segments unchanged for this long "
                        f"(default {DEFAULT_MIN_AGE:g})")
    args = parser.parse_args(argv)
    if args.remove:
        paths = remove_stale_segments(args.min_age)
        verb = "removed"
    else:
        paths = stale_segments(args.min_age)
        verb = "stale"
    for path in paths:
        print(f"{verb} {path}")
    print(f"{len(paths)} segment(s) {verb}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
