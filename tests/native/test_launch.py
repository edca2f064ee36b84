"""datajax-launch: command-line splitting, the preload path, real runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobs.launch import UsageError, mpiexec_command, split_command_line
from tests.native.conftest import clean_env, rank_reports, run

LAUNCH = [sys.executable, "-m", "jobs.launch"]


# ---------------------------------------------------------------------------
# the command line


def test_flags_before_the_separator_go_to_mpiexec():
    options, flags, command = split_command_line(
        ["-n", "2", "-ppn", "1", "--mpiexec", "/x/mpiexec", "--",
         "datajax-export-wavespec", "--out", "o.json"]
    )

    assert options == {"mpiexec": "/x/mpiexec"}
    assert flags == ["-n", "2", "-ppn", "1"]
    assert command == ["datajax-export-wavespec", "--out", "o.json"]


def test_everything_after_the_separator_is_the_command():
    _, flags, command = split_command_line(
        ["-n", "2", "--", "python", "--print-preload", "--", "-n"]
    )

    assert flags == ["-n", "2"]
    assert command == ["python", "--print-preload", "--", "-n"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "2", "python", "job.py"], "put '--' between"),
        (["-n", "2", "--"], "no command"),
        ([], "no command"),
        (["--mpiexec"], "needs a path"),
    ],
)
def test_bad_command_lines_say_what_to_do(argv, message):
    with pytest.raises(UsageError, match=message):
        split_command_line(argv)


def test_print_preload_needs_no_command():
    options, _, command = split_command_line(["--print-preload"])

    assert options == {"print_preload": True}
    assert command == []


def test_preload_comes_first_and_keeps_an_existing_one():
    full = mpiexec_command(
        "mpiexec", ["-n", "2"], ["python", "x.py"], Path("/c/p.so"),
        environ={"LD_PRELOAD": "/other.so"},
    )

    assert full == [
        "mpiexec", "-genv", "LD_PRELOAD", "/c/p.so:/other.so",
        "-n", "2", "python", "x.py",
    ]
    assert mpiexec_command("mpiexec", [], ["a"], None, environ={}) == [
        "mpiexec", "a",
    ]


# ---------------------------------------------------------------------------
# real runs


@pytest.mark.timeout(120)
def test_print_preload_prints_the_built_library(cache_dir):
    done = run([*LAUNCH, "--print-preload"], clean_env(cache_dir))

    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.is_file()
    assert path.parent == cache_dir / "pmpi"


@pytest.mark.timeout(120)
def test_print_preload_fails_clearly_without_mpicc(cache_dir, tmp_path):
    env = clean_env(cache_dir, DATAJAX_MPICC=str(tmp_path / "none"))

    done = run([*LAUNCH, "--print-preload"], env)

    assert done.returncode == 1
    assert done.stdout == ""
    assert "cannot build the PMPI interposer" in done.stderr


@pytest.mark.timeout(180)
def test_launched_ranks_are_counted(cache_dir, tmp_path):
    done = run(
        [*LAUNCH, "-n", "2", "--", sys.executable, "-m",
         "tests.native.mpi_counts", "--status", tmp_path],
        clean_env(cache_dir),
    )

    assert done.returncode == 0, done.stderr[-4000:]
    for report in rank_reports(tmp_path, 2):
        assert report["status"]["pmpi_status"] == "ok"
        assert report["status"]["pmpi_bytes_sent"] is not None


@pytest.mark.timeout(180)
def test_without_a_build_the_job_still_runs_and_says_so(
    cache_dir, tmp_path
):
    env = clean_env(cache_dir, DATAJAX_MPICC=str(tmp_path / "none"))

    done = run(
        [*LAUNCH, "-n", "2", "--", sys.executable, "-m",
         "tests.native.mpi_counts", "--status", tmp_path / "out"],
        env,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    assert "running WITHOUT the PMPI byte counters" in done.stderr
    for report in rank_reports(tmp_path / "out", 2):
        assert report["status"]["pmpi_status"].startswith("unavailable")


@pytest.mark.timeout(60)
def test_usage_error_exits_2(cache_dir):
    done = run([*LAUNCH, "-n", "2", "python"], clean_env(cache_dir))

    assert done.returncode == 2
    assert "put '--' between" in done.stderr
