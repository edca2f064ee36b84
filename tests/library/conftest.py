"""Library unit tests run on pandas unless a test names its backend.

Without DATAJAX_EXECUTOR the library's default is real Bodo wherever it
imports, which would compile every traced function here; the parity
suite runs every backend explicitly (tests/library/backends.py), and
tests/bodo checks the default itself.
"""

import pytest


@pytest.fixture(autouse=True)
def pandas_by_default(monkeypatch):
    monkeypatch.setenv("DATAJAX_EXECUTOR", "pandas")
