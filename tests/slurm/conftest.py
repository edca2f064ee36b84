"""Fixtures for the tests that run jobs on the local Slurm cluster.

When these tests run: only with ``DATAJAX_SLURM=1`` in the environment.
Without it every ``slurm``-marked test here is skipped, so that a plain
``pytest`` never submits jobs to whatever cluster ``sinfo`` happens to
reach (a site cluster, say). CI starts the cluster, then sets it::

    scripts/slurm-cluster-start
    DATAJAX_SLURM=1 pytest -m slurm tests/slurm
    scripts/slurm-cluster-stop

With ``DATAJAX_SLURM=1`` a cluster that does not answer is an error,
not a skip: the caller said there is one, and a broken cluster must not
pass as a row of skips.

``SLURM_CONF`` names the cluster's configuration. When it is unset, the
``slurm.conf`` that ``scripts/slurm-cluster-start`` wrote into its state
folder (``$DATAJAX_SLURM_DIR``, else ``/tmp/datajax-slurm``) is used.

The ``slurm`` fixture submits batch scripts with ``sbatch --parsable``
and polls ``scontrol show job`` every 50 ms (``sbatch --wait`` polls
every 2 s and later every 8 s), with a timeout on every wait.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

# Job states after which a job never changes again.
FINAL_STATES = frozenset({
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
})

POLL_SECONDS = 0.05
DEFAULT_STATE_DIR = "/tmp/datajax-slurm"

_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)")


def pytest_collection_modifyitems(config, items):
    """Skip the ``slurm`` tests unless ``DATAJAX_SLURM=1``."""
    if os.environ.get("DATAJAX_SLURM") == "1":
        return
    skip = pytest.mark.skip(
        reason="needs the local Slurm cluster: run "
        "scripts/slurm-cluster-start, then set DATAJAX_SLURM=1"
    )
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(skip)


# ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobResult:
    """How a batch job ended: its final state, exit code and output."""

    job_id: str
    state: str
    exit_code: int
    signal: int
    output: pathlib.Path

    def text(self) -> str:
        """Return the job's standard output (and error) file."""
        return self.output.read_text()


class Slurm:
    """Run Slurm commands and batch jobs on the local cluster.

    Args:
        env: environment for every Slurm command (holds SLURM_CONF).
        workdir: folder for batch scripts and job output files.
    """

    def __init__(self, env: dict[str, str], workdir: pathlib.Path):
        self.env = env
        self.workdir = workdir
        self.submitted: list[str] = []

    def run(
        self,
        args: list[str],
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the cluster's environment; raise on failure.

        ``env`` adds to (or overrides) the cluster's environment.

        Raises:
            AssertionError: the command fails; its stderr is shown.
        """
        proc = subprocess.run(
            args,
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, (
            f"{' '.join(args)!r} exited with {proc.returncode}:\n"
            f"{proc.stderr}"
        )
        return proc

    def submit(
        self,
        script: str,
        *options: str,
        args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
    ) -> str:
        """Submit a batch script with ``sbatch --parsable``; return its id.

        ``options`` go to sbatch, ``args`` to the script; ``env`` adds to
        the environment sbatch passes on to the job. Output goes to
        ``<workdir>/<job name>-<job id>.out``.
        """
        path = self.workdir / f"job{len(self.submitted)}.sbatch"
        path.write_text(script)
        proc = self.run(
            [
                "sbatch",
                "--parsable",
                f"--chdir={self.workdir}",
                f"--output={self.workdir}/%x-%j.out",
                *options,
                str(path),
                *args,
            ],
            env=env,
        )
        job_id = proc.stdout.strip().split(";")[0]
        assert job_id.isdigit(), f"sbatch printed {proc.stdout!r}"
        self.submitted.append(job_id)
        return job_id

    def show(self, job_id: str) -> dict[str, str]:
        """Return the fields of ``scontrol show job`` for one job."""
        proc = self.run(["scontrol", "show", "job", "--oneliner", job_id])
        return dict(_FIELD.findall(proc.stdout))

    def wait_state(
        self,
        job_id: str,
        states: frozenset[str] | set[str],
        timeout: float = 60.0,
    ) -> dict[str, str]:
        """Poll the job until its state is one of ``states``.

        Returns:
            The job's ``scontrol show job`` fields at that moment.

        Raises:
            AssertionError: the job is not there within ``timeout``
                seconds, or ends in a state outside ``states``.
        """
        deadline = time.monotonic() + timeout
        while True:
            fields = self.show(job_id)
            state = fields.get("JobState", "")
            if state in states:
                return fields
            assert state not in FINAL_STATES, (
                f"job {job_id} ended {state}, waited for "
                f"{sorted(states)}"
            )
            assert time.monotonic() < deadline, (
                f"job {job_id} still {state} after {timeout} s "
                f"(reason {fields.get('Reason')!r})"
            )
            time.sleep(POLL_SECONDS)

    def wait(self, job_id: str, timeout: float = 60.0) -> JobResult:
        """Wait for a job to end; return its state, exit code, output."""
        fields = self.wait_state(job_id, FINAL_STATES, timeout)
        code, _, signal = fields["ExitCode"].partition(":")
        return JobResult(
            job_id=job_id,
            state=fields["JobState"],
            exit_code=int(code),
            signal=int(signal or 0),
            output=pathlib.Path(fields["StdOut"]),
        )

    def cancel_leftovers(self) -> None:
        """Cancel every job submitted here that has not ended yet."""
        left = []
        for job_id in self.submitted:
            proc = subprocess.run(
                ["squeue", "--noheader", "--format=%i", f"--jobs={job_id}"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.stdout.strip():
                left.append(job_id)
        if left:
            subprocess.run(
                ["scancel", *left],
                env=self.env,
                capture_output=True,
                timeout=30,
                check=False,
            )


# ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment that reaches the local cluster; fail if none answers."""
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        state = env.get("DATAJAX_SLURM_DIR") or DEFAULT_STATE_DIR
        conf = pathlib.Path(state, "slurm.conf")
        if conf.is_file():
            env["SLURM_CONF"] = str(conf)

    # sinfo answers with the node's state once the cluster is up
    if shutil.which("sinfo", path=env.get("PATH")) is None:
        pytest.fail(
            "DATAJAX_SLURM=1 but there is no sinfo on PATH; run "
            "scripts/slurm-cluster-start (as root) first"
        )
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%N %T"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("DATAJAX_SLURM=1 but sinfo did not answer in 20 s")
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(
            "DATAJAX_SLURM=1 but the cluster does not answer "
            f"(SLURM_CONF={env.get('SLURM_CONF')!r}): sinfo exited "
            f"with {proc.returncode}: {proc.stderr.strip()}"
        )
    return env


@pytest.fixture
def slurm(slurm_env, tmp_path):
    """A :class:`Slurm` whose jobs are cancelled when the test ends."""
    cluster = Slurm(slurm_env, tmp_path)
    yield cluster
    cluster.cancel_leftovers()
