"""The local Slurm cluster runs MPI jobs the way the product needs.

Real Slurm, real MPICH (the one bundled with the bodo wheel) and real
mpi4py; see conftest.py for when these tests run.
"""

from __future__ import annotations

import shlex
import sys

import pytest

pytestmark = pytest.mark.slurm

# Each rank prints "<rank> <size>" in one write.
RANK_CODE = (
    "from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "print(c.Get_rank(), c.Get_size(), flush=True)"
)

# Each rank lists the addresses of its own TCP sockets that are not on
# loopback, once MPI has connected the ranks (after a collective).
LOOPBACK_PROBE = """\
import os

from mpi4py import MPI

comm = MPI.COMM_WORLD
comm.allreduce(1)

mine = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        mine.add(target[len("socket:["):-1])

V6_LOOPBACK = "0" * 24 + "01000000"
V4_MAPPED = "0" * 16 + "FFFF0000"
outside = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as lines:
        next(lines)
        for line in lines:
            cols = line.split()
            host = cols[1].split(":")[0]
            if cols[9] not in mine:
                continue
            if len(host) == 8:
                loopback = host.endswith("7F")
            else:
                loopback = host == V6_LOOPBACK or (
                    host.startswith(V4_MAPPED) and host.endswith("7F")
                )
            if not loopback:
                outside.append(cols[1])
print(comm.Get_rank(), comm.Get_size(), *sorted(outside), flush=True)
"""


def _rank_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.strip())


def _srun(slurm, mpi: str, *program: str) -> list[str]:
    """Run a Python program as 2 tasks; return their sorted lines."""
    proc = slurm.run(
        [
            "srun",
            f"--mpi={mpi}",
            "--ntasks=2",
            "--time=2",
            "--kill-on-bad-exit=1",
            sys.executable,
            *program,
        ],
        timeout=90,
    )
    return _rank_lines(proc.stdout)


# ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_srun_pmi2_is_one_world(slurm):
    assert _srun(slurm, "pmi2", "-c", RANK_CODE) == ["0 2", "1 2"]


@pytest.mark.timeout(120)
def test_srun_mpi_none_gives_singletons(slurm):
    # Without PMI each task is a world of its own; jobs must detect this.
    assert _srun(slurm, "none", "-c", RANK_CODE) == ["0 1", "0 1"]


@pytest.mark.timeout(120)
def test_sbatch_job_runs_pmi2_world(slurm):
    script = (
        "#!/bin/bash\n"
        "#SBATCH --job-name=world\n"
        "#SBATCH --ntasks=2\n"
        "#SBATCH --time=2\n"
        "set -euo pipefail\n"
        "srun --mpi=pmi2 --kill-on-bad-exit=1 "
        f"{shlex.quote(sys.executable)} -u -c {shlex.quote(RANK_CODE)}\n"
    )
    job_id = slurm.submit(script)
    result = slurm.wait(job_id, timeout=90)

    assert (result.state, result.exit_code) == ("COMPLETED", 0)
    assert result.output.name == f"world-{job_id}.out"
    assert _rank_lines(result.text()) == ["0 2", "1 2"]


@pytest.mark.timeout(120)
def test_sbatch_reports_exit_code(slurm):
    job_id = slurm.submit("#!/bin/bash\necho failing\nexit 3\n")
    result = slurm.wait(job_id, timeout=90)

    assert (result.state, result.exit_code) == ("FAILED", 3)
    assert result.text() == "failing\n"


@pytest.mark.timeout(120)
def test_scancel_ends_job_cancelled(slurm):
    job_id = slurm.submit("#!/bin/bash\nsleep 300\n", "--time=10")
    slurm.wait_state(job_id, {"RUNNING"}, timeout=60)

    slurm.run(["scancel", job_id])
    result = slurm.wait(job_id, timeout=60)
    assert result.state == "CANCELLED"


@pytest.mark.timeout(120)
def test_mpi_ranks_stay_on_loopback(slurm):
    # The cluster's TaskProlog points MPICH's transports at "lo".
    probe = slurm.workdir / "loopback_probe.py"
    probe.write_text(LOOPBACK_PROBE)
    assert _srun(slurm, "pmi2", str(probe)) == ["0 2", "1 2"]
