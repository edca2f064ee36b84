"""Fixtures shared by the whole suite: the real shared data, job runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from datajax.shm import remove_stale_segments

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# MPICH's single-node launcher: unlike the default Hydra ``mpiexec``, whose
# control port listens on every address, gforker keeps to loopback.  It
# honours MPIEXEC_TIMEOUT and passes on the ranks' exit codes.
MPIEXEC = BIN / "mpiexec.gforker"

# The real inputs live beside the repository (../shared/data) on the
# developers' machines and in CI; elsewhere the tests that need them skip
# and say so.
SHARED_DATA = Path(
    os.environ.get("DATAJAX_SHARED_DATA", REPO.parent / "shared" / "data")
)
MOONCAKE = SHARED_DATA / "mooncake_conversation_trace.jsonl"

# MPICH's network modules would otherwise listen on the machine's outside
# address; the tests keep every MPI socket on loopback.
LOOPBACK_ENV = {
    "UCX_NET_DEVICES": "lo",
    "FI_TCP_IFACE": "lo",
    "FI_SOCKETS_IFACE": "lo",
}
for _name, _value in LOOPBACK_ENV.items():
    os.environ.setdefault(_name, _value)

# The native Bodo path spawns BODO_NUM_WORKERS workers (default: every
# core); two keep the single-process tests quick on any machine.
os.environ.setdefault("BODO_NUM_WORKERS", "2")

# Seconds an MPI job may take before mpiexec kills it: far above the normal
# run time, far below "hangs".
JOB_TIMEOUT = 120


def pytest_sessionstart(session):
    """Remove MPICH segments that earlier crashed runs left behind."""
    remove_stale_segments()


@pytest.fixture(autouse=True, scope="module")
def _stop_bodo_workers_after_each_module():
    """Bodo's spawned workers busy-wait, a core each, while idle: stop
    them when a module that used the native path is done, so they do
    not slow every later test."""
    yield
    if "bodo.spawn.spawner" in sys.modules:
        from datajax.runtime.bodo_native import stop_workers

        try:
            stop_workers()
        except Exception as error:  # a teardown must not fail a test
            sys.stderr.write(f"could not stop Bodo's workers: {error!r}\n")


@pytest.fixture(scope="session")
def mooncake_trace() -> Path:
    """The real Mooncake trace, or a skip naming where it was looked for."""
    if not MOONCAKE.is_file():
        pytest.skip(
            f"real input absent: {MOONCAKE} not found (set "
            "DATAJAX_SHARED_DATA to the folder holding it)"
        )
    return MOONCAKE


@dataclass
class JobRun:
    """What one job run left behind."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self, path: Path) -> dict:
        return json.loads(Path(path).read_text())


def run_job(
    module: str,
    args: list[str],
    ranks: int = 1,
    timeout: float = JOB_TIMEOUT,
    env: dict[str, str] | None = None,
) -> JobRun:
    """Run ``python -m module args`` under ``mpiexec -n ranks``.

    ``MPIEXEC_TIMEOUT`` makes mpiexec kill a hung job; the subprocess
    timeout is the last line of defence.
    """
    environment = dict(os.environ)
    environment.update(
        {"MPIEXEC_TIMEOUT": str(int(timeout)), "PYTHONUNBUFFERED": "1"}
    )
    environment.update(env or {})
    command = [
        str(MPIEXEC), "-n", str(ranks),
        sys.executable, "-m", module, *map(str, args),
    ]
    # aborted jobs (several tests abort on purpose) leave MPICH segments
    # that a later launch with a reused process id would attach to
    remove_stale_segments()
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=environment,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    return JobRun(
        done.returncode,
        done.stdout,
        done.stderr,
        time.perf_counter() - started,
    )


@pytest.fixture
def export_job():
    """Run ``datajax-export-wavespec`` at a given rank count."""

    def run(args: list[str], ranks: int = 1, **kwargs) -> JobRun:
        return run_job("jobs.export_wavespec", args, ranks, **kwargs)

    return run
