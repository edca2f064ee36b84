"""The export job's runtime metrics carry the interposer's counters.

Needs ``runtime_metrics`` to record the ``pmpi_*`` fields (the change to
``datajax/io/spmd_export.py`` that goes with ``datajax.native.pmpi``);
until then these tests skip after the run and say so.  (The check reads
the job's output: importing the job here would start MPI in pytest.)
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import MPIEXEC
from tests.native.conftest import clean_env, run

LAUNCH = [sys.executable, "-m", "jobs.launch"]
EXPORT = [sys.executable, "-m", "jobs.export_wavespec"]

RECORDS = 4000


def read_metrics(path):
    metrics = json.loads(path.read_text())
    if "pmpi_status" not in metrics:
        pytest.skip(
            "runtime_metrics does not record pmpi_* fields yet (the "
            "datajax/io/spmd_export.py change is not applied)"
        )
    return metrics


@pytest.fixture
def access_log(tmp_path):
    path = tmp_path / "accesses.csv"
    rows = [f"{i % 997},{64 + i % 7}" for i in range(RECORDS)]
    path.write_text("key,bytes\n" + "\n".join(rows) + "\n")
    return path


def export_args(log, folder):
    return [
        "--logs", log, "--key", "key", "--size", "bytes",
        "--out", folder / "spec.json", "--metrics-out", folder / "m.json",
    ]


@pytest.mark.timeout(180)
def test_launched_export_reports_pmpi_bytes(access_log, cache_dir, tmp_path):
    done = run(
        [*LAUNCH, "-n", "2", "--", *EXPORT,
         *export_args(access_log, tmp_path)],
        clean_env(cache_dir),
    )
    assert done.returncode == 0, done.stderr[-4000:]

    metrics = read_metrics(tmp_path / "m.json")
    assert metrics["pmpi_status"] == "ok"
    assert metrics["pmpi_bytes_sent"] == metrics["pmpi_bytes_received"]
    assert f"pmpi_bytes={metrics['pmpi_bytes_sent']}" in metrics["notes"]
    for entry in metrics["per_rank"]:
        # the job's own call sites are a part of what MPI was handed;
        # mpi4py adds the sizes of pickled objects
        assert entry["pmpi_status"] == "ok"
        assert entry["pmpi_bytes_sent"] >= entry["mpi_bytes_sent"] > 0
        assert entry["pmpi_bytes_received"] >= entry["mpi_bytes_received"]
    assert metrics["pmpi_bytes_sent"] >= metrics["mpi_bytes_sent"]


@pytest.mark.timeout(180)
def test_plain_export_says_pmpi_is_unavailable(
    access_log, cache_dir, tmp_path
):
    done = run(
        [MPIEXEC, "-n", "2", *EXPORT, *export_args(access_log, tmp_path)],
        clean_env(cache_dir),
    )
    assert done.returncode == 0, done.stderr[-4000:]

    metrics = read_metrics(tmp_path / "m.json")
    assert metrics["pmpi_bytes_sent"] is None
    assert metrics["pmpi_bytes_received"] is None
    assert metrics["pmpi_status"].startswith("unavailable on rank(s) 0, 1")
    assert any(
        note.startswith("pmpi bytes unavailable") for note in metrics["notes"]
    )
