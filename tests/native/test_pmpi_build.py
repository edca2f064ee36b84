"""Building the PMPI interposer: cache, races, and failing cleanly."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from datajax.native import pmpi
from datajax.native.pmpi import build_interposer, cache_root, find_mpicc
from tests.native.conftest import clean_env, run

READERS = (
    "datajax_pmpi_bytes_sent", "datajax_pmpi_bytes_received",
    "datajax_pmpi_calls", "datajax_pmpi_reset", "datajax_pmpi_interposing",
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fake_mpicc(folder: Path, body: str) -> Path:
    script = folder / "mpicc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.timeout(180)
def test_build_once_then_reuse(tmp_path, cache_dir):
    first = build_interposer(tmp_path)
    again = build_interposer(tmp_path)

    assert first.path is not None, first.reason
    assert not first.cached and again.cached
    assert again.path == first.path
    assert re.fullmatch(
        r"pmpi_count-mpich[0-9.]+-[0-9a-f]{16}\.so", first.path.name
    )
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]

    # the readers are there with C linkage (checked in a child process,
    # which loads the MPI library, not in this one)
    check = (
        "import ctypes, sys\n"
        "lib = ctypes.CDLL(sys.argv[1])\n"
        f"for name in {READERS!r}:\n"
        "    getattr(lib, name)\n"
    )
    done = run(
        [sys.executable, "-c", check, first.path], clean_env(cache_dir)
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(180)
def test_source_compiles_without_warnings(tmp_path):
    mpicc, why = find_mpicc()
    assert mpicc is not None, why
    source = Path(pmpi.__file__).with_name(pmpi.SOURCE)

    done = subprocess.run(
        [mpicc, *pmpi.COMPILE_FLAGS, "-Wall", "-Wextra", "-Werror",
         "-o", tmp_path / "strict.so", source, *pmpi.LINK_FLAGS],
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(300)
def test_ranks_racing_to_build_all_get_one_whole_file(tmp_path, cache_dir):
    folder = tmp_path / "shared"
    script = (
        "import sys\n"
        "from datajax.native.pmpi import build_interposer\n"
        "print(build_interposer(sys.argv[1]).path)\n"
    )
    env = clean_env(cache_dir)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, stdin=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    answers = [racer.communicate(timeout=240) for racer in racers]

    assert all(r.returncode == 0 for r in racers), answers
    paths = {out.strip() for out, _ in answers}
    assert len(paths) == 1
    (built,) = paths
    assert Path(built).is_file()
    assert [p.name for p in folder.iterdir()] == [Path(built).name]


def test_missing_mpicc_gives_a_reason_not_an_exception(tmp_path):
    result = build_interposer(tmp_path, mpicc=tmp_path / "no-mpicc")

    assert result.path is None
    assert "no-mpicc" in result.reason
    assert "not an executable" in result.reason


def test_no_mpicc_anywhere_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin/python"))

    found, why = find_mpicc(environ={})

    assert found is None
    assert str(tmp_path / "bin" / "mpicc") in why


@pytest.mark.timeout(60)
def test_missing_c_compiler_gives_a_reason(tmp_path, monkeypatch):
    tools = tmp_path / "tools"
    tools.mkdir()
    broken = fake_mpicc(
        tools,
        'if [ "$1" = -show ]; then echo "cc -I/nowhere -lmpi"; exit 0; fi\n'
        'echo "mpicc: line 1: cc: command not found" >&2\nexit 127',
    )
    monkeypatch.setenv("DATAJAX_MPICC", str(broken))
    folder = tmp_path / "cache"

    result = build_interposer(folder)

    assert result.path is None
    assert "could not compile pmpi_count.c (exit 127)" in result.reason
    assert "cc: command not found" in result.reason
    assert leftovers(folder) == []


@pytest.mark.timeout(60)
def test_unwritable_cache_gives_a_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    result = build_interposer(blocker / "pmpi")

    assert result.path is None
    assert "cannot build pmpi_count.c" in result.reason


def test_cache_root_follows_the_environment(tmp_path):
    home = Path.home()

    assert cache_root({"DATAJAX_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "datajax"
    )
    assert cache_root({}) == home / ".cache" / "datajax"
