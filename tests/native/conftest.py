"""Fixtures for the PMPI interposer tests: a fresh build, MPI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datajax.native.pmpi import build_interposer
from tests.conftest import MPIEXEC, REPO, JobRun

# Seconds a job may run before mpiexec kills it.
TIMEOUT = 120


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A project cache folder for this session (interposer, Numba)."""
    return tmp_path_factory.mktemp("datajax-cache")


@pytest.fixture(scope="session")
def preload(cache_dir) -> Path:
    """The interposer, built once per session into the session cache."""
    built = build_interposer(cache_dir / "pmpi")
    if built.path is None:
        pytest.fail(f"the PMPI interposer does not build: {built.reason}")
    return built.path


def clean_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without a preload, with the session's caches."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update({
        "DATAJAX_CACHE_DIR": str(cache_dir),
        "NUMBA_CACHE_DIR": str(cache_dir / "numba"),
        "BODO_SPAWN_MODE": "0",
        "MPIEXEC_TIMEOUT": str(TIMEOUT),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run(command: list[str], env: dict[str, str]) -> JobRun:
    """Run a command from the repository root; never wait forever."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    return JobRun(
        done.returncode, done.stdout, done.stderr,
        time.perf_counter() - started,
    )


def mpiexec_preloaded(
    preload: Path | None, ranks: int, module: str, *args: object
) -> list[str]:
    """``mpiexec [-genv LD_PRELOAD preload] -n ranks python -m module``."""
    head = [str(MPIEXEC)]
    if preload is not None:
        head += ["-genv", "LD_PRELOAD", str(preload)]
    return [
        *head, "-n", str(ranks), sys.executable, "-m", module,
        *map(str, args),
    ]


def rank_reports(folder: Path, ranks: int) -> list[dict]:
    """The ``rank<r>.json`` every rank wrote, in rank order."""
    return [
        json.loads((folder / f"rank{rank}.json").read_text())
        for rank in range(ranks)
    ]
