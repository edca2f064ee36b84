"""An uncaught exception on one rank ends the whole world promptly."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import MPIEXEC, REPO

SCRIPT = """
from datajax.mpi import install_abort_hook, world
install_abort_hook()
comm = world()
if comm.rank == 1:
    raise RuntimeError("rank 1 fails on purpose")
comm.barrier()  # rank 0 would wait here forever without the hook
print("rank 0 passed the barrier", flush=True)
"""


def test_exception_on_rank_1_aborts_rank_0_waiting_in_a_barrier():
    hang_limit = 120
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(hang_limit))

    done = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, cwd=REPO, env=env,
        timeout=hang_limit + 30, stdin=subprocess.DEVNULL,
    )

    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert "aborting all ranks" in done.stderr
    assert "passed the barrier" not in done.stdout
    # MPIEXEC_TIMEOUT kills a hung job with its own message; an abort
    # from the hook does not mention the timeout
    assert "timeout" not in done.stderr.lower()
