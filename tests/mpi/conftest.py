"""In-world tests: collected with ``--with-mpi`` under ``mpiexec -n N``.

Every rank runs the whole session.  A test that fails on one rank while
the others wait in a collective would hang the world, so a failing
``mpi`` test prints its report and aborts COMM_WORLD at once.
"""

from __future__ import annotations

import os
import sys

import pytest


def pytest_configure(config):
    """Give each rank its own temporary folder under --basetemp."""
    if config.option.basetemp:
        from mpi4py import MPI

        os.makedirs(config.option.basetemp, exist_ok=True)
        rank = MPI.COMM_WORLD.Get_rank()
        config.option.basetemp = f"{config.option.basetemp}/rank{rank}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or item.get_closest_marker("mpi") is None:
        return
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if world.Get_size() > 1:
        sys.stderr.write(
            f"\n[rank {world.Get_rank()}] {item.nodeid} failed:\n"
            f"{report.longreprtext}\n[rank {world.Get_rank()}] aborting "
            "the world so the other ranks do not hang\n"
        )
        sys.stderr.flush()
        world.Abort(1)
