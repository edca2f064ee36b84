"""The line width and lint rules in pyproject.toml are enforced here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"

    done = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "."],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
