"""Run the in-world suite (tests/mpi) under mpiexec at 1, 2 and 3 ranks.

Each world runs the whole tests/mpi session on every rank with
``--with-mpi``; a failing rank aborts the world (see tests/mpi/conftest),
and MPIEXEC_TIMEOUT bounds a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import MPIEXEC, REPO

WORLD_TIMEOUT = 240


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_in_world_suite(ranks, tmp_path):
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(WORLD_TIMEOUT))
    command = [
        str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "pytest",
        "--with-mpi", "-m", "mpi", "-q", "-p", "no:cacheprovider",
        "--basetemp", str(tmp_path / "base"), "tests/mpi",
    ]

    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env,
        timeout=WORLD_TIMEOUT + 30, stdin=subprocess.DEVNULL,
    )

    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    # every rank prints its own summary; all must have passed
    summaries = [
        line for line in done.stdout.splitlines() if " passed" in line
    ]
    assert len(summaries) == ranks, report[-6000:]
    assert all("failed" not in line for line in summaries)
