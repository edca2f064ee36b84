"""datajax-replay-tuner end to end, under mpiexec at 1, 2 and 3 ranks.

The trace and sample come from ``dump_trace`` on a small feature
pipeline; the runtime counters from a real run of the export job.  Every
job runs as a subprocess through ``run_job`` (with ``MPIEXEC_TIMEOUT``
and a subprocess timeout).  The launcher is MPICH's ``mpiexec.gforker``
where it exists: it starts the ranks by fork and opens no listening
socket of its own, where Hydra's ``mpiexec`` listens on every address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from datajax.planner.metrics import ENV_VAR as METRICS_ENV_VAR
from datajax.planner.replay import dump_trace
from tests import conftest
from tests.conftest import JOB_TIMEOUT, run_job

EXIT_BAD_INPUT = 2
JOB = "jobs.replay_tuner"
EXPORT = "jobs.export_wavespec"
# what a run of the tuner writes apart from its measurements
STABLE_KEYS = (
    "job", "inputs", "mesh", "executor", "tables", "stages",
    "runtime_counters", "metrics", "policy",
)
RUN_KEYS = (
    "ranks", "models_target_mesh", "notes", "elapsed_seconds",
    "replay_seconds", "input_bytes", "mpi_bytes_sent",
    "mpi_bytes_received", "pmpi_status", "stages", "per_rank",
)
METRICS_KEYS = (
    "job", "bytes_moved", "shuffle_bytes", "input_bytes",
    "mpi_bytes_sent", "mpi_bytes_received", "world_size",
    "elapsed_seconds", "per_rank", "notes",
)


@pytest.fixture(autouse=True)
def _loopback_launcher(monkeypatch):
    """Launch with gforker (no listening socket) when it is there."""
    gforker = conftest.BIN / "mpiexec.gforker"
    if gforker.is_file():
        monkeypatch.setattr(conftest, "MPIEXEC", gforker)
    monkeypatch.delenv(METRICS_ENV_VAR, raising=False)
    monkeypatch.delenv("DATAJAX_EXECUTOR", raising=False)


def features(logs, users):
    """The pipeline under test: filter, derive, join, aggregate."""
    ok = logs[(logs["status"] == 200) & (logs["bytes"] > 0)]
    ok = ok.assign(kb=ok["bytes"] / 1024, slow=ok["latency_ms"] > 50.0)
    joined = ok.merge(users, on="user_id", how="inner")
    return joined.groupby("country").agg(
        total_kb=("kb", "sum"), requests=("kb", "count"),
        worst_ms=("latency_ms", "max"),
    )


def feature_tables(rows: int = 3000, seed: int = 5):
    rng = np.random.default_rng(seed)
    logs = pd.DataFrame({
        "user_id": rng.integers(0, 120, rows),
        "bytes": rng.integers(0, 1 << 20, rows),
        "status": rng.choice(np.array([200, 200, 200, 404]), rows),
        "latency_ms": rng.gamma(2.0, 20.0, rows).round(3),
        "path": [f"/objects/{int(k)}" for k in rng.integers(0, 50, rows)],
    })
    users = pd.DataFrame({
        "user_id": np.arange(120),
        "country": [f"c{i % 9}" for i in range(120)],
    })
    return {"logs": logs, "users": users}


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    """A dumped pipeline with a CSV sample (quoted fields included)."""
    folder = tmp_path_factory.mktemp("dump")
    tables = feature_tables()
    tables["logs"].loc[::7, "path"] = "/a,\"quoted\"\nname"
    dump_trace(features, tables, str(folder), sample_format="csv")
    return folder


def tuner_args(folder, out, *extra):
    return [
        "--trace", folder / "trace.json",
        "--sample", folder / "sample.csv",
        "--table", f"users={folder / 'tables' / 'users.parquet'}",
        "--executor", "pandas", "--warmup", "0",
        "--out", out, *extra,
    ]


def check_ok(run):
    assert run.returncode == 0, run.stderr[-3000:]


def errors_of(run):
    return [line for line in run.stderr.splitlines() if " ERROR " in line]


def assert_fails_cleanly(run, out, *patterns):
    """Exit 2 from every rank, one error line from rank 0, no output."""
    errors = errors_of(run)
    assert run.returncode == EXIT_BAD_INPUT, run.stderr[-3000:]
    assert len(errors) == 1, run.stderr[-3000:]
    assert "[rank 0/" in errors[0]
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    assert not out.exists()
    assert not list(out.parent.glob(".tmp-*"))


# ---------------------------------------------------------------------------
# export metrics in, policy out


@pytest.mark.timeout(2 * JOB_TIMEOUT + 60)
@pytest.mark.parametrize("ranks", [1, 2])
def test_export_metrics_merge_into_the_policy(tmp_path, dumped, ranks):
    metrics_file = tmp_path / "export-metrics.json"
    export = run_job(
        EXPORT,
        ["--logs", conftest.REPO / "examples" / "mooncake_sample.jsonl",
         "--key", "hash_ids", "--explode", "--extent-source", "key",
         "--page-bits", "0", "--chunk-len", "input_length",
         "--out", tmp_path / "wavespec.json",
         "--metrics-out", metrics_file],
        ranks,
    )
    check_ok(export)
    counters = json.loads(metrics_file.read_text())
    out = tmp_path / "policy.json"

    run = run_job(
        JOB, tuner_args(dumped, out, "--metrics-in", metrics_file), ranks
    )

    check_ok(run)
    doc = json.loads(out.read_text())
    metrics = doc["metrics"]
    assert metrics["runtime_bytes_moved"] == counters["bytes_moved"]
    assert metrics["runtime_shuffle_bytes"] == counters["shuffle_bytes"]
    assert metrics["runtime_wgmma_occupancy"] is None
    assert metrics["runtime_l2_reuse"] is None
    for note in counters["notes"]:
        assert note in metrics["runtime_notes"]
    origin = f"--metrics-in {metrics_file}"
    assert doc["runtime_counters"] == {
        "bytes_moved": origin, "shuffle_bytes": origin,
    }

    policy = doc["policy"]
    inputs = policy["inputs"]
    for name in ("shuffle_bytes", "bytes_moved"):
        assert inputs[name]["source"] == "runtime"
        assert inputs[name]["value"] == counters[name]
        assert str(metrics_file) in inputs[name]["origin"]
    for name in ("occupancy", "l2_reuse", "rows_per_rank", "row_width",
                 "columns_read"):
        assert inputs[name]["source"] == "estimate", name
    assert inputs["occupancy"]["value"] == pytest.approx(
        metrics["occupancy_proxy"]
    )
    notes = "\n".join(policy["notes"])
    assert "stage_depth=" in notes and "(runtime)" in notes
    assert "shuffle_bytes=runtime" in notes
    assert "occupancy=estimate" in notes
    # the export moved few bytes between ranks next to what it read
    shuffle, moved = counters["shuffle_bytes"], counters["bytes_moved"]
    assert policy["stage_depth"] == 2 + min(4, -(-8 * shuffle // moved))


@pytest.mark.timeout(3 * JOB_TIMEOUT + 60)
def test_policy_json_is_the_same_at_1_2_and_3_ranks(tmp_path, dumped):
    docs = []
    for ranks in (1, 2, 3):
        out = tmp_path / f"policy-{ranks}.json"
        run = run_job(JOB, tuner_args(dumped, out, "--world-size", "4"),
                      ranks)
        check_ok(run)
        docs.append(json.loads(out.read_text()))

    stable = [
        json.dumps({k: doc[k] for k in STABLE_KEYS}, indent=2)
        for doc in docs
    ]
    assert stable[0] == stable[1] == stable[2]
    assert [list(doc) for doc in docs] == [[*STABLE_KEYS, "run"]] * 3
    for ranks, doc in zip((1, 2, 3), docs, strict=True):
        run = doc["run"]
        for key in RUN_KEYS:
            assert key in run, key
        assert run["ranks"] == ranks
        assert run["models_target_mesh"] is True
        assert "target mesh of 4" in run["notes"][0]
        assert len(run["per_rank"]) == ranks
        # every rank read its share: the scan sees every sample row
        scan = run["stages"][0]
        assert scan["name"] == "s0_scan_logs"
        assert scan["rows_in"] == 3000
        assert sum(
            entry["rows"]["logs"] for entry in run["per_rank"]
        ) == 3000
    assert docs[0]["tables"] == {"logs": 3000, "users": 120}
    assert docs[0]["mesh"] == {"mesh_axes": ["data"], "world_size": 4}


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_world_size_defaults_to_the_ranks(tmp_path, dumped):
    out = tmp_path / "policy.json"

    run = run_job(JOB, tuner_args(dumped, out), 2)

    check_ok(run)
    doc = json.loads(out.read_text())
    assert doc["mesh"]["world_size"] == 2
    assert doc["run"]["models_target_mesh"] is False
    assert not any("target mesh" in n for n in doc["run"]["notes"])


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_env_counters_apply_and_metrics_in_wins(tmp_path, dumped):
    metrics_in = tmp_path / "m.json"
    metrics_in.write_text(json.dumps({
        "bytes_moved": 1000, "shuffle_bytes": 250, "notes": ["from file"],
    }))
    env_counters = {"shuffle_bytes": 999, "l2_reuse": 1.0,
                    "wgmma_occupancy": 0.0, "notes": ["from env"]}
    out = tmp_path / "policy.json"

    run = run_job(
        JOB, tuner_args(dumped, out, "--metrics-in", metrics_in), 2,
        env={METRICS_ENV_VAR: json.dumps(env_counters)},
    )

    check_ok(run)
    doc = json.loads(out.read_text())
    metrics, policy = doc["metrics"], doc["policy"]
    assert metrics["runtime_shuffle_bytes"] == 250  # the file wins
    assert metrics["runtime_bytes_moved"] == 1000
    assert metrics["runtime_l2_reuse"] == 1.0  # the env fills in
    assert metrics["runtime_notes"] == ["from env", "from file"]
    assert doc["runtime_counters"]["l2_reuse"] == METRICS_ENV_VAR
    assert doc["runtime_counters"]["shuffle_bytes"].startswith(
        "--metrics-in"
    )
    assert policy["swizzle_size"] == 16
    assert policy["BK"] == 16
    assert policy["stage_depth"] == 4  # 2 + ceil(8 * 250 / 1000)
    assert policy["inputs"]["l2_reuse"]["source"] == "runtime"
    assert METRICS_ENV_VAR in policy["inputs"]["l2_reuse"]["origin"]


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_metrics_out_has_the_export_format(tmp_path, dumped):
    out = tmp_path / "policy.json"
    metrics_out = tmp_path / "metrics.json"

    run = run_job(
        JOB, tuner_args(dumped, out, "--metrics-out", metrics_out), 2
    )

    check_ok(run)
    metrics = json.loads(metrics_out.read_text())
    for key in METRICS_KEYS:
        assert key in metrics, key
    assert metrics["job"] == "datajax-replay-tuner"
    assert metrics["world_size"] == 2
    assert metrics["bytes_moved"] == sum(
        entry["input_bytes"] for entry in metrics["per_rank"]
    )
    assert metrics["bytes_moved"] > 0
    assert metrics["mpi_bytes_sent"] == sum(
        entry["mpi_bytes_sent"] for entry in metrics["per_rank"]
    )
    assert metrics["mpi_bytes_sent"] > 0
    assert f"mpi_bytes={metrics['mpi_bytes_sent']}" in metrics["notes"]
    # it is a runtime-metrics file the tuner itself accepts
    again = tmp_path / "again.json"
    check_ok(run_job(
        JOB, tuner_args(dumped, again, "--metrics-in", metrics_out), 1
    ))
    doc = json.loads(again.read_text())
    assert doc["metrics"]["runtime_bytes_moved"] == metrics["bytes_moved"]


@pytest.mark.timeout(JOB_TIMEOUT + 90)
def test_dump_trace_command_then_the_tuner(tmp_path):
    module = tmp_path / "my_pipelines.py"
    module.write_text(textwrap.dedent("""
        from datajax import djit

        @djit
        def spend(logs, users):
            ok = logs[logs["bytes"] > 0]
            joined = ok.merge(users, on="user_id")
            return joined.groupby("country").agg(total=("bytes", "sum"))
    """))
    tables = feature_tables(rows=500)
    tables["logs"].to_csv(tmp_path / "logs.csv", index=False)
    tables["users"].to_json(
        tmp_path / "users.jsonl", orient="records", lines=True
    )
    dump = tmp_path / "dump"

    done = subprocess.run(
        [sys.executable, "-m", "jobs.dump_trace", "my_pipelines:spend",
         "--table", "logs=logs.csv", "--table", "users=users.jsonl",
         "--sample-rows", "300", "--sample-format", "json",
         "--out-dir", str(dump)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(conftest.REPO)},
    )

    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((dump / "dump.json").read_text())
    assert manifest["sample"] == {
        "table": "logs", "path": "sample.jsonl", "format": "json",
        "rows": 300,
    }
    out = tmp_path / "policy.json"
    run = run_job(
        JOB,
        ["--trace", dump / "trace.json", "--sample", dump / "sample.jsonl",
         "--table", f"users={dump / 'tables' / 'users.parquet'}",
         "--executor", "pandas", "--out", out],
        2,
    )
    check_ok(run)
    doc = json.loads(out.read_text())
    assert doc["tables"] == {"logs": 300, "users": 120}
    assert doc["inputs"]["sample"]["format"] == "json"


DUMP_PIPELINES = """
from datajax import djit

@djit
def spend(logs):
    return logs.groupby("user_id").agg(total=("bytes", "sum"))

@djit
def broken(logs):
    return logs.groupby("no_such_column").agg(n=("bytes", "count"))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("function", "extra", "expected"),
    [
        ("dump_pipelines:broken", [],
         "tracing broken raised"),
        ("dump_pipelines:spend", ["--table", "users=logs.csv"],
         "table 'users' is given but the pipeline does not read it"),
        ("dump_pipelines:spend", ["--out-dir", "taken"],
         "taken: exists and is not a folder"),
        ("dump_pipelines:nope", [],
         "'dump_pipelines' has no function 'nope'"),
    ],
    ids=["pipeline-raises", "unused-table", "out-dir-is-a-file",
         "no-such-function"],
)
def test_dump_trace_command_bad_input(tmp_path, function, extra, expected):
    (tmp_path / "dump_pipelines.py").write_text(DUMP_PIPELINES)
    feature_tables(rows=50)["logs"].to_csv(
        tmp_path / "logs.csv", index=False
    )
    (tmp_path / "taken").write_text("mine\n")

    done = subprocess.run(
        [sys.executable, "-m", "jobs.dump_trace", function,
         "--table", "logs=logs.csv", "--out-dir", "dump", *extra],
        capture_output=True, text=True, cwd=tmp_path, timeout=90,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(conftest.REPO)},
    )

    assert done.returncode == EXIT_BAD_INPUT, done.stderr[-3000:]
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "dump").exists()
    assert (tmp_path / "taken").read_text() == "mine\n"


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.timeout(JOB_TIMEOUT + 30)
@pytest.mark.parametrize("ranks", [1, 2])
def test_missing_trace(tmp_path, dumped, ranks):
    out = tmp_path / "policy.json"
    args = tuner_args(dumped, out)
    args[1] = tmp_path / "nope.json"

    run = run_job(JOB, args, ranks)

    assert_fails_cleanly(run, out, "nope.json", "cannot read the trace")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
@pytest.mark.parametrize("ranks", [1, 2])
def test_unknown_step_kind(tmp_path, dumped, ranks):
    steps = json.loads((dumped / "trace.json").read_text())
    steps.append({"kind": "pivot", "src": len(steps) - 1})
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(steps))
    out = tmp_path / "policy.json"
    args = tuner_args(dumped, out)
    args[1] = trace

    run = run_job(JOB, args, ranks)

    assert_fails_cleanly(
        run, out, str(trace), f"step {len(steps) - 1}",
        "unknown step kind 'pivot'",
    )


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_invalid_trace_json(tmp_path, dumped):
    trace = tmp_path / "trace.json"
    trace.write_text('[{"kind": "source",\n')
    out = tmp_path / "policy.json"
    args = tuner_args(dumped, out)
    args[1] = trace

    run = run_job(JOB, args, 2)

    assert_fails_cleanly(run, out, str(trace), "line 2", "not valid JSON")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
@pytest.mark.parametrize("ranks", [1, 2])
def test_missing_table_binding(tmp_path, dumped, ranks):
    out = tmp_path / "policy.json"
    args = [a for a in tuner_args(dumped, out)]
    where = args.index("--table")
    del args[where:where + 2]

    run = run_job(JOB, args, ranks)

    assert_fails_cleanly(
        run, out, "'logs'", "'users'", "--table NAME=PATH"
    )


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_table_bound_to_an_unknown_name(tmp_path, dumped):
    out = tmp_path / "policy.json"
    users = dumped / "tables" / "users.parquet"

    run = run_job(
        JOB, tuner_args(dumped, out, "--table", f"people={users}"), 2
    )

    assert_fails_cleanly(run, out, "people", "no table named")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
@pytest.mark.parametrize("ranks", [1, 2])
def test_malformed_metrics_in(tmp_path, dumped, ranks):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"bytes_moved": 10,\n "shuffle_bytes": }\n')
    out = tmp_path / "policy.json"

    run = run_job(JOB, tuner_args(dumped, out, "--metrics-in", bad), ranks)

    assert_fails_cleanly(run, out, str(bad), "invalid JSON", "line 2")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_malformed_metrics_env(tmp_path, dumped):
    out = tmp_path / "policy.json"

    run = run_job(
        JOB, tuner_args(dumped, out), 2,
        env={METRICS_ENV_VAR: '{"l2_reuse": 1.5}'},
    )

    assert_fails_cleanly(run, out, METRICS_ENV_VAR, "'l2_reuse'")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_sample_value_of_the_wrong_type(tmp_path, dumped):
    text = (dumped / "sample.csv").read_text().splitlines(keepends=True)
    header = text[0].rstrip("\n").split(",")
    column = header.index("status")
    # a record near the end, so that the last rank meets it
    fields = text[-1].split(",")
    fields[column] = "oops"
    text[-1] = ",".join(fields)
    sample = tmp_path / "sample.csv"
    sample.write_text("".join(text))
    out = tmp_path / "policy.json"
    args = tuner_args(dumped, out)
    args[3] = sample

    run = run_job(JOB, args, 3)

    assert_fails_cleanly(run, out, str(sample), "oops")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_default_executor_that_cannot_run_says_what_to_do(
    tmp_path, dumped
):
    out = tmp_path / "policy.json"
    args = [a for a in tuner_args(dumped, out)]
    where = args.index("--executor")
    del args[where:where + 2]

    # Bodo may not be imported here: the default backend cannot run
    run = run_job(
        JOB, args, 2,
        env={"DATAJAX_ALLOW_BODO_IMPORT": "0",
             "DATAJAX_USE_BODO_STUB": "0"},
    )

    assert_fails_cleanly(run, out, "bodo", "--executor pandas")


@pytest.mark.timeout(JOB_TIMEOUT + 30)
def test_unknown_executor(tmp_path, dumped):
    out = tmp_path / "policy.json"
    args = [a for a in tuner_args(dumped, out)]
    args[args.index("pandas")] = "nope"

    run = run_job(JOB, args, 2)

    assert_fails_cleanly(run, out, "unknown executor 'nope'")


# ---------------------------------------------------------------------------
# the real backend


@pytest.mark.timeout(2 * JOB_TIMEOUT + 60)
def test_bodo_replay_gives_the_pandas_policy_and_global_groups(
    tmp_path, dumped
):
    from datajax.runtime import executor_names

    if "bodo" not in executor_names():
        pytest.skip("the bodo backend is not registered")
    docs = {}
    for name in ("pandas", "bodo"):
        out = tmp_path / f"{name}.json"
        args = tuner_args(dumped, out, "--world-size", "2")
        args[args.index("pandas")] = name
        run = run_job(JOB, args, 2, timeout=2 * JOB_TIMEOUT)
        check_ok(run)
        docs[name] = json.loads(out.read_text())

    pandas_doc, bodo_doc = docs["pandas"], docs["bodo"]
    assert bodo_doc["executor"] == "bodo"
    assert bodo_doc["policy"] == pandas_doc["policy"]
    assert bodo_doc["metrics"] == pandas_doc["metrics"]
    # Bodo moves rows between ranks: the group-by's rows out are the
    # global groups, once each; pandas groups each rank's share alone
    tables = feature_tables()
    logs, users = tables["logs"], tables["users"]
    ok = logs[(logs["status"] == 200) & (logs["bytes"] > 0)]
    groups = ok.merge(users, on="user_id")["country"].nunique()
    last = bodo_doc["run"]["stages"][-1]
    assert last["kind"] == "aggregate"
    assert last["rows_out"] == groups
