"""Native helpers built on the machine that runs the job.

:mod:`datajax.native.pmpi` builds and reads ``pmpi_count.c``, a PMPI
interposer that counts every byte a process hands to MPI, Bodo's own
shuffles included.  Importing this package neither imports mpi4py nor
starts MPI.
"""

from datajax.native.pmpi import (
    BuildResult,
    PmpiCounters,
    build_interposer,
    interposer_path,
    read_counters,
    reset_counters,
    summarize_ranks,
)

__all__ = [
    "BuildResult",
    "PmpiCounters",
    "build_interposer",
    "interposer_path",
    "read_counters",
    "reset_counters",
    "summarize_ranks",
]
