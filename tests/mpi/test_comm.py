"""The counting communicator and the SPMD export, inside one MPI world.

Run by tests/test_mpi_worlds.py at 1, 2 and 3 ranks; each assertion holds
at any world size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from datajax.io.exporter import WaveSpecOptions, export_wave_spec
from datajax.io.spmd_export import ExportJob, JobError, run_export
from datajax.mpi import Comm, first_error

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(60)]


@pytest.fixture
def comm():
    return Comm()


def total(comm, value):
    return int(comm.mpi_comm.allreduce(value))


def test_gatherv_counts_the_bytes_of_other_ranks(comm):
    values = np.arange(comm.rank + 1, dtype=np.uint64)

    parts = comm.gatherv_array(values)

    own = 8 * (comm.rank + 1)
    others = 8 * sum(r + 1 for r in range(comm.size) if r != 0)
    gatherv = comm.counter
    if comm.rank == 0:
        assert [p.tolist() for p in parts] == [
            list(range(r + 1)) for r in range(comm.size)
        ]
        assert gatherv.calls["Gatherv"] == 1
    else:
        assert parts is None
    sent = total(comm, gatherv.sent)
    received = total(comm, gatherv.received)
    # the element counts travel first, pickled, then the data
    assert received == sent
    assert sent >= others
    if comm.size == 1:
        assert sent == 0
    elif comm.rank != 0:
        assert gatherv.sent >= own


def test_allreduce_counts_one_buffer_per_other_rank(comm):
    result = comm.allreduce_array(np.ones(10, dtype=np.int64), MPI.SUM)

    assert result.tolist() == [comm.size] * 10
    assert comm.counter.sent == 80 * (comm.size - 1)
    assert comm.counter.received == 80 * (comm.size - 1)


def test_allgather_and_bcast_count_pickled_bytes(comm):
    gathered = comm.allgather("x" * comm.rank)
    value = comm.bcast({"from": "root"} if comm.rank == 0 else None)

    assert gathered == ["x" * r for r in range(comm.size)]
    assert value == {"from": "root"}
    assert total(comm, comm.counter.sent) == total(
        comm, comm.counter.received
    )
    if comm.size == 1:
        assert comm.counter.sent == comm.counter.received == 0


def test_first_error_is_the_lowest_failing_rank(comm):
    last = comm.size - 1
    message = f"rank {comm.rank} broke" if comm.rank == last else None

    assert first_error(comm, None) is None
    assert first_error(comm, message) == (last, f"rank {last} broke")


def test_run_export_in_process_equals_the_in_memory_export(
    comm, tmp_path_factory
):
    folder = None
    if comm.rank == 0:
        folder = tmp_path_factory.mktemp("spmd")
        rng = np.random.default_rng(5)
        frame = pd.DataFrame({
            "k": rng.integers(0, 500, 3000),
            "s": rng.integers(0, 10**12, 3000),
        })
        frame.to_json(folder / "log.jsonl", orient="records", lines=True)
        expected = export_wave_spec(frame, "k", "s", top_k=None)
    else:
        expected = None
    folder = comm.bcast(str(folder))
    expected = comm.bcast(expected)

    job = ExportJob(
        logs=(f"{folder}/log.jsonl",),
        options=WaveSpecOptions(key="k", size="s", top_k=None),
        out=f"{folder}/spec.json",
        batch_bytes=4096,
    )
    spec = run_export(job, comm)
    comm.barrier()

    if comm.rank == 0:
        on_disk = json.loads(Path(job.out).read_text())
        assert on_disk == spec
        assert spec["cohorts"] == expected["cohorts"]
        assert spec["extents"] == expected["extents"]
        assert spec["meta"]["approx_bytes"] == expected["meta"][
            "approx_bytes"
        ]
    else:
        assert spec is None


def test_run_export_raises_the_same_error_on_every_rank(
    comm, tmp_path_factory
):
    folder = comm.bcast(
        str(tmp_path_factory.mktemp("bad")) if comm.rank == 0 else None
    )
    if comm.rank == 0:
        lines = [f'{{"k": {i}}}' for i in range(500)] + ['{"k": null}']
        Path(folder, "log.jsonl").write_text("\n".join(lines) + "\n")
    comm.barrier()

    job = ExportJob(
        logs=(f"{folder}/log.jsonl",),
        options=WaveSpecOptions(key="k"),
        out=f"{folder}/spec.json",
        batch_bytes=512,
    )
    with pytest.raises(JobError, match="line 501: column 'k'") as caught:
        run_export(job, comm)

    assert caught.value.rank == comm.size - 1
