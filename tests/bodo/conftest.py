"""Helpers for the single-process Bodo tests.

Some switches act at import time (``DATAJAX_ALLOW_BODO_IMPORT=0`` must
keep Bodo out of the process; Bodo's spawner fixes its worker count when
it starts), so those tests run a short script in a fresh Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

# a fresh interpreter importing Bodo, maybe compiling one small plan
SCRIPT_TIMEOUT = 180


@pytest.fixture
def python_script(tmp_path):
    """Run Python code in a new process; return what it printed as JSON.

    The script prints one JSON object as its last line of output. The
    cache folder defaults to one private to the test.
    """

    def run(code: str, env: dict[str, str] | None = None) -> dict:
        environment = dict(os.environ)
        for name in (
            "DATAJAX_EXECUTOR",
            "DATAJAX_USE_BODO_STUB",
            "DATAJAX_NATIVE_BODO",
            "DATAJAX_ALLOW_BODO_IMPORT",
            "NUMBA_CACHE_DIR",
        ):
            environment.pop(name, None)
        environment["DATAJAX_CACHE_DIR"] = str(tmp_path / "cache")
        environment.update(env or {})
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=environment,
            timeout=SCRIPT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run
