"""The PMPI interposer counts exactly the analytic bytes, Bodo's included.

Every MPI job here runs as a subprocess under ``mpiexec -genv LD_PRELOAD
<interposer>`` with ``MPIEXEC_TIMEOUT`` set.
"""

from __future__ import annotations

import sys

import pytest

from tests.native.conftest import (
    clean_env,
    mpiexec_preloaded,
    rank_reports,
    run,
)
from tests.native.mpi_counts import calls_mpi, expected

# ---------------------------------------------------------------------------
# mpi4py calls with known sizes


@pytest.fixture(scope="module")
def counted(preload, cache_dir, tmp_path_factory):
    """Run tests.native.mpi_counts once per world size; its reports."""
    runs: dict[int, list[dict]] = {}

    def reports(ranks: int) -> list[dict]:
        if ranks not in runs:
            folder = tmp_path_factory.mktemp(f"counts{ranks}")
            done = run(
                mpiexec_preloaded(
                    preload, ranks, "tests.native.mpi_counts", folder
                ),
                clean_env(cache_dir),
            )
            assert done.returncode == 0, done.stderr[-4000:]
            runs[ranks] = rank_reports(folder, ranks)
        return runs[ranks]

    return reports


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_mpi4py_calls_count_the_analytic_bytes(ranks, counted):
    reports = counted(ranks)

    wrong = []
    for report in reports:
        rank = report["rank"]
        assert report["size"] == ranks
        for case, got in report["cases"].items():
            want = expected(case, rank, ranks)
            if (got["sent"], got["received"]) != want:
                wrong.append(
                    f"rank {rank} {case}: measured "
                    f"{(got['sent'], got['received'])}, expected {want}, "
                    f"calls {got['calls']}"
                )
            # every call reached a wrapper, and none went uncounted
            reached = sum(got["calls"].values()) >= 1
            assert reached == calls_mpi(case, rank, ranks), (rank, case)
            assert got["uncounted"] == 0, (rank, case)
    assert not wrong, "\n".join(wrong)

    # what the ranks send to others, the others receive
    for case in reports[0]["cases"]:
        sent = sum(r["cases"][case]["sent"] for r in reports)
        received = sum(r["cases"][case]["received"] for r in reports)
        assert sent == received, case


@pytest.mark.timeout(120)
def test_one_rank_moves_no_bytes_between_ranks(counted):
    (report,) = counted(1)

    for case, got in report["cases"].items():
        assert (got["sent"], got["received"]) == (0, 0), case
        if calls_mpi(case, 0, 1):
            assert sum(got["calls"].values()) >= 1, case


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_interposer_agrees_with_the_counting_comm(ranks, counted):
    nbytes = 16 * 8 * (ranks - 1)

    for report in counted(ranks):
        both = report["comm_allreduce"]
        assert both["pmpi"] == both["comm"] == [nbytes, nbytes]


# ---------------------------------------------------------------------------
# a real Bodo shuffle

BODO_ROWS = 20_000
# Besides the rows, Bodo's group-by exchanges a few scalars: one Alltoall
# of an int64 row count per peer, three Allreduce of 4-byte flags and
# sizes, one Exscan of an int64 row offset.  That is 28 bytes sent (20
# received) per rank at 2 ranks; the bound leaves room for a few more
# such scalars but not for a single extra row batch.
BODO_CONTROL_BYTES = 256


@pytest.mark.timeout(240)
def test_bodo_groupby_shuffle_counts_every_row_that_moves(
    preload, cache_dir, tmp_path
):
    ranks = 2
    done = run(
        mpiexec_preloaded(
            preload, ranks, "tests.native.bodo_shuffle", BODO_ROWS,
            tmp_path,
        ),
        clean_env(cache_dir),
    )
    assert done.returncode == 0, done.stderr[-4000:]

    for report in rank_reports(tmp_path, ranks):
        rank = report["rank"]
        assert report["status"] == "ok"
        # the group-by is right: every distinct key once, each v summed
        assert report["result_rows"] == BODO_ROWS
        assert report["result_sum"] == BODO_ROWS

        # every row left its rank and as many arrived: key and sum
        payload = BODO_ROWS * report["row_bytes"]
        rows = report["by_call"]["MPI_Alltoallv"]
        assert (rows["sent"], rows["received"]) == (payload, payload), rank
        for measured in (report["sent"], report["received"]):
            assert payload <= measured <= payload + BODO_CONTROL_BYTES, (
                f"rank {rank}: {measured} bytes, {payload} of rows, "
                f"calls {report['by_call']}"
            )

    # the jit cache went where it was told, not beside the source
    assert any((cache_dir / "numba").rglob("bodo_shuffle.group_sum*"))


# ---------------------------------------------------------------------------
# without the preload there is no measurement, and the reader says so


@pytest.mark.timeout(120)
def test_ranks_without_the_preload_report_unavailable(cache_dir, tmp_path):
    done = run(
        mpiexec_preloaded(
            None, 2, "tests.native.mpi_counts", "--status", tmp_path
        ),
        clean_env(cache_dir),
    )
    assert done.returncode == 0, done.stderr[-4000:]

    for report in rank_reports(tmp_path, 2):
        status = report["status"]
        assert status["pmpi_status"].startswith("unavailable: ")
        assert "not loaded" in status["pmpi_status"]
        assert status["pmpi_bytes_sent"] is None
        assert status["pmpi_bytes_received"] is None


READ_STATUS = (
    "from datajax.native.pmpi import read_counters, reset_counters\n"
    "counters = read_counters()\n"
    "print(counters.status)\n"
    "assert (counters.bytes_sent, counters.bytes_received) == (None, None)"
    "\nassert not reset_counters()\n"
)


@pytest.mark.timeout(60)
def test_a_plain_process_reads_unavailable(cache_dir):
    done = run([sys.executable, "-c", READ_STATUS], clean_env(cache_dir))

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unavailable: the PMPI interposer is not")
    assert "jobs.launch" in done.stdout


@pytest.mark.timeout(60)
def test_loaded_after_the_mpi_library_reads_unavailable(preload, cache_dir):
    # mpi4py binds to libmpi first; the interposer then arrives too late
    script = (
        "import ctypes, sys\n"
        "import mpi4py\n"
        "mpi4py.rc.initialize = False\n"
        "from mpi4py import MPI\n"
        "ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)\n" + READ_STATUS
    )
    done = run(
        [sys.executable, "-c", script, preload], clean_env(cache_dir)
    )

    assert done.returncode == 0, done.stderr
    assert "loaded after the MPI library" in done.stdout


@pytest.mark.timeout(60)
def test_preload_variable_set_too_late_is_named(preload, cache_dir):
    script = (
        "import os, sys\n"
        "os.environ['LD_PRELOAD'] = sys.argv[1]\n" + READ_STATUS
    )
    done = run(
        [sys.executable, "-c", script, preload], clean_env(cache_dir)
    )

    assert done.returncode == 0, done.stderr
    assert "names the interposer but this process did not load it" in (
        done.stdout
    )
