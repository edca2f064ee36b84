"""The batch scripts in slurm/ on the local Slurm cluster.

The export script runs the real job on real Slurm: its WaveSpec must be
the very file that ``mpiexec -n 2`` writes from the same input, a failing
or cancelled job must leave no output behind, and tasks started so that
they do not form one MPI world must stop with a clear error. The
reference runs use MPICH's ``mpiexec.gforker`` from the environment (it
forks the ranks on this machine and, unlike Hydra's ``mpiexec``, opens
no network port).

The first tests only read the scripts and run without a cluster; the
``slurm``-marked ones need ``DATAJAX_SLURM=1`` (see conftest.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import JOB_TIMEOUT, MPIEXEC

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "slurm"
EXPORT_SCRIPT = SCRIPTS / "export_wavespec.sbatch"
REPLAY_SCRIPT = SCRIPTS / "replay_tuner.sbatch"
BIN = pathlib.Path(sys.executable).parent
GFORKER = BIN / "mpiexec.gforker"
VENV = {"DATAJAX_VENV": sys.prefix}

# the README's flags for KV-cache traces
TRACE_FLAGS = [
    "--key", "hash_ids", "--explode", "--extent-source", "key",
    "--page-bits", "0", "--chunk-len", "input_length",
]
EXIT_BAD_INPUT = 2


# ---------------------------------------------------------------------
# helpers


def write_requests(path: pathlib.Path, rows: int, seed: int = 7) -> None:
    """Write a small KV-cache trace: block-id lists, sizes, lengths."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="ascii") as stream:
        for i in range(rows):
            blocks = [0, *rng.integers(1, 5000, rng.integers(1, 9))]
            listed = ", ".join(str(int(block)) for block in blocks)
            stream.write(
                f'{{"timestamp": {i}, '
                f'"input_length": {int(rng.integers(1, 4096))}, '
                f'"bytes": {int(rng.integers(0, 1 << 20))}, '
                f'"hash_ids": [{listed}]}}\n'
            )


def run_mpiexec(args: list[str], ranks: int = 2) -> None:
    """Run the export job under mpiexec; fail the test if it fails."""
    launcher = GFORKER if GFORKER.exists() else MPIEXEC
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(JOB_TIMEOUT))
    done = subprocess.run(
        [str(launcher), "-n", str(ranks), sys.executable, "-m",
         "jobs.export_wavespec", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True,
        timeout=JOB_TIMEOUT + 30, stdin=subprocess.DEVNULL, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def folder_listing(folder: pathlib.Path) -> list[str]:
    """Names in a folder, hidden ones (such as .tmp-*) included."""
    return sorted(entry.name for entry in folder.iterdir())


def export_script() -> str:
    return EXPORT_SCRIPT.read_text()


def check_completed(result) -> str:
    text = result.text()
    assert (result.state, result.exit_code) == ("COMPLETED", 0), text
    assert re.search(r"^export-wavespec: start \d{4}-", text, re.M), text
    assert re.search(r"^export-wavespec: end \S+ exit 0$", text, re.M), text
    return text


# ---------------------------------------------------------------------
# the scripts as text: the conventions every batch script keeps


@pytest.mark.parametrize(
    "script", sorted(SCRIPTS.glob("*.sbatch")), ids=lambda p: p.name
)
def test_batch_script_conventions(script):
    text = script.read_text()
    lines = text.splitlines()
    code = [line for line in lines if not line.lstrip().startswith("#")]

    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert lines[0] == "#!/bin/bash"
    assert "sbatch" in "\n".join(lines[1:25]), "header says how to submit"
    assert "#SBATCH --output=%x-%j.out" in lines
    assert "set -euo pipefail" in code
    assert re.search(r"start \$\(date -u", text)
    assert re.search(r"end \$\(date -u", text)
    # what a site must change carries a mark
    for line in lines:
        if re.match(r"#+SBATCH --(time|partition|account|exclusive)", line):
            assert "SITE:" in line, line
    # ranks start under srun with PMI-2, never under mpiexec
    assert not [line for line in code if "mpiexec" in line]
    if script != SCRIPTS / "scaling_sweep.sbatch":
        assert re.search(
            r"srun --mpi=pmi2 --kill-on-bad-exit=1 \\\n\s+\"\$python\" -u -m"
            r" jobs\.", text,
        )


def test_sweep_launches_steps_with_pmi2():
    # the sweep's steps come from the benchmark's srun launcher
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import scaling
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    launcher = scaling.Launcher("srun", allocated_cpus=2)
    command = launcher.command(3, ["python", "-u", "x.py"], timeout=60)
    assert command[:3] == ["srun", "--mpi=pmi2", "--kill-on-bad-exit=1"]
    assert "--ntasks=3" in command and "--overcommit" in command
    assert "--overcommit" not in launcher.command(2, ["p"], timeout=60)


# ---------------------------------------------------------------------
# the export script on the cluster


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_sbatch_spec_equals_mpiexec_spec(slurm, tmp_path):
    logs = tmp_path / "requests.jsonl"
    write_requests(logs, 3000)
    flags = [*TRACE_FLAGS, "--size", "bytes", "--batch-bytes", "20000"]
    (tmp_path / "sbatch").mkdir()
    (tmp_path / "mpiexec").mkdir()

    # inputs and outputs through the environment, the rest as arguments
    job_id = slurm.submit(
        export_script(), "--ntasks=2", args=flags,
        env={**VENV, "DATAJAX_LOGS": str(logs),
             "DATAJAX_OUT": str(tmp_path / "sbatch" / "spec.json"),
             "DATAJAX_METRICS_OUT": str(tmp_path / "sbatch" / "m.json")},
    )
    result = slurm.wait(job_id, timeout=120)
    run_mpiexec(["--logs", logs, *flags,
                 "--out", tmp_path / "mpiexec" / "spec.json"])

    check_completed(result)
    assert result.output.name == f"export-wavespec-{job_id}.out"
    got = (tmp_path / "sbatch" / "spec.json").read_text()
    assert got == (tmp_path / "mpiexec" / "spec.json").read_text()
    spec = json.loads(got)
    assert spec["meta"]["world_size"] == 2
    assert spec["meta"]["input_rows"] == 3000
    metrics = json.loads((tmp_path / "sbatch" / "m.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["shuffle_bytes"] > 0
    assert folder_listing(tmp_path / "sbatch") == ["m.json", "spec.json"]


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_sbatch_spec_equals_mpiexec_spec_on_real_trace(
    slurm, tmp_path, mooncake_trace
):
    flags = ["--logs", str(mooncake_trace), *TRACE_FLAGS, "--window",
             "output_length", "--top-k", "all"]
    job_id = slurm.submit(
        export_script(), "--ntasks=2",
        args=[*flags, "--out", str(tmp_path / "sbatch.json")], env=VENV,
    )
    result = slurm.wait(job_id, timeout=180)
    run_mpiexec([*flags, "--out", tmp_path / "mpiexec.json"])

    check_completed(result)
    got = (tmp_path / "sbatch.json").read_text()
    assert got == (tmp_path / "mpiexec.json").read_text()
    assert json.loads(got)["meta"]["row_count"] == 288_500


@pytest.mark.slurm
@pytest.mark.timeout(180)
@pytest.mark.parametrize("problem", ["missing column", "malformed line"])
def test_bad_input_fails_the_job_and_writes_nothing(
    slurm, tmp_path, problem
):
    logs = tmp_path / "requests.jsonl"
    write_requests(logs, 2000)
    key = "hash_ids"
    if problem == "missing column":
        key, expected = "no_such_column", "no_such_column"
    else:
        # a broken record in the second half: rank 1 meets it
        lines = logs.read_text().splitlines(keepends=True)
        lines[1500] = '{"timestamp": 1, "hash_ids": [1, 2\n'
        logs.write_text("".join(lines))
        expected = "line 1501"
    out = tmp_path / "out"
    out.mkdir()

    job_id = slurm.submit(
        export_script(), "--ntasks=2",
        args=["--logs", str(logs), "--key", key, "--explode",
              "--batch-bytes", "8192", "--out", str(out / "spec.json"),
              "--metrics-out", str(out / "metrics.json")],
        env=VENV,
    )
    result = slurm.wait(job_id, timeout=120)

    text = result.text()
    assert (result.state, result.exit_code) == (
        "FAILED", EXIT_BAD_INPUT), text
    assert expected in text
    assert re.search(r"^export-wavespec: end \S+ exit 2$", text, re.M)
    assert folder_listing(out) == []


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_no_job_arguments_is_an_error(slurm):
    job_id = slurm.submit(export_script(), "--ntasks=1", env=VENV)
    result = slurm.wait(job_id, timeout=60)

    assert (result.state, result.exit_code) == ("FAILED", 2)
    assert "no job arguments" in result.text()


def _processes_naming(text: str) -> list[int]:
    """PIDs of live processes whose command line holds ``text``."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in command:
            found.append(int(entry.name))
    return found


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_scancel_mid_run_leaves_no_output(slurm, tmp_path):
    # one record per batch, and one allreduce per batch: tens of seconds
    logs = tmp_path / "requests.jsonl"
    write_requests(logs, 20000)
    out = tmp_path / "out"
    out.mkdir()

    job_id = slurm.submit(
        export_script(), "--ntasks=2",
        args=["--logs", str(logs), *TRACE_FLAGS, "--batch-bytes", "16",
              "--out", str(out / "spec.json"),
              "--metrics-out", str(out / "metrics.json")],
        env=VENV,
    )
    # wait until rank 0 has started reading: the job is mid-run
    slurm.wait_state(job_id, {"RUNNING"}, timeout=60)
    log = tmp_path / f"export-wavespec-{job_id}.out"
    deadline = time.monotonic() + 60
    while "reading 1 input file" not in (
        log.read_text() if log.exists() else ""
    ):
        assert time.monotonic() < deadline, "the job never started reading"
        time.sleep(0.05)
    time.sleep(1.0)

    slurm.run(["scancel", job_id])
    result = slurm.wait(job_id, timeout=60)

    assert result.state == "CANCELLED", result.text()
    # no rank survives the cancel, and none leaves a file
    deadline = time.monotonic() + 30
    while _processes_naming(str(out / "spec.json")):
        assert time.monotonic() < deadline, "ranks outlived scancel"
        time.sleep(0.1)
    assert folder_listing(out) == []
    # the script logs the signal and ends 143 at once: srun runs in the
    # background, so the trap does not wait for srun, which may outlive
    # the KillWait seconds after which Slurm kills the batch shell
    signalled = re.compile(
        r"^export-wavespec: SIGTERM.*\n(?:.*\n)*"
        r"export-wavespec: end \S+ exit 143$", re.M,
    )
    while not signalled.search(result.text()):
        assert time.monotonic() < deadline, result.text()
        time.sleep(0.1)
    assert "wrote" not in result.text()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_srun_without_pmi_stops_with_a_clear_error(slurm, tmp_path):
    logs = tmp_path / "requests.jsonl"
    write_requests(logs, 500)
    out = tmp_path / "out"
    out.mkdir()

    done = subprocess.run(
        ["srun", "--mpi=none", "-n", "2", "--time=2", sys.executable,
         "-m", "jobs.export_wavespec", "--logs", str(logs), *TRACE_FLAGS,
         "--out", str(out / "spec.json")],
        env=slurm.env, cwd=tmp_path, capture_output=True, text=True,
        timeout=90, check=False,
    )

    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "srun --mpi=pmi2" in done.stderr
    assert "world of size 1" in done.stderr
    assert folder_listing(out) == []


# ---------------------------------------------------------------------
# the replay tuner script, once the job exists


def _find_key(value, key):
    """The first value stored under ``key`` anywhere in JSON data."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


@pytest.mark.slurm
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    shutil.which("datajax-replay-tuner", path=str(BIN)) is None,
    reason="datajax-replay-tuner not built yet",
)
def test_sbatch_replay_tuner_writes_a_policy(slurm, tmp_path):
    import pandas as pd

    from datajax.ir.nodes import (
        Agg,
        Aggregate,
        BinOp,
        Col,
        Filter,
        Schema,
        Source,
        Trace,
        lit,
    )
    from datajax.ir.serialize import trace_to_list

    sample = pd.DataFrame({
        "key": np.arange(4000) % 97,
        "bytes": np.arange(4000) * 7,
    })
    sample.to_parquet(tmp_path / "sample.parquet")
    trace = Trace((
        Source("accesses", Schema.from_frame(sample)),
        Filter(0, BinOp("gt", Col("bytes"), lit(100))),
        Aggregate(1, ("key",), (Agg("bytes", "sum", "total"),)),
    ))
    (tmp_path / "trace.json").write_text(json.dumps(trace_to_list(trace)))
    out = tmp_path / "out"
    out.mkdir()

    job_id = slurm.submit(
        REPLAY_SCRIPT.read_text(), "--ntasks=2",
        env={**VENV,
             "DATAJAX_TRACE": str(tmp_path / "trace.json"),
             "DATAJAX_SAMPLE": str(tmp_path / "sample.parquet"),
             "DATAJAX_SAMPLE_FORMAT": "parquet",
             "DATAJAX_MESH_AXES": "data",
             "DATAJAX_OUT": str(out / "policy.json"),
             "DATAJAX_METRICS_OUT": str(out / "metrics.json"),
             "DATAJAX_CACHE": str(tmp_path / "cache")},
    )
    result = slurm.wait(job_id, timeout=540)

    assert (result.state, result.exit_code) == ("COMPLETED", 0), (
        result.text())
    policy = json.loads((out / "policy.json").read_text())
    for key in ("BM", "BN", "BK", "swizzle_size", "stage_depth", "notes"):
        assert _find_key(policy, key) is not None, key
    metrics = json.loads((out / "metrics.json").read_text())
    assert "shuffle_bytes" in metrics
    assert folder_listing(out) == ["metrics.json", "policy.json"]
