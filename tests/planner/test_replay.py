"""The replay library: trace files, shares of tables, stages, the report.

In one process (a world of one rank); the job's runs under mpiexec are in
tests/jobs/test_replay_tuner.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datajax import Frame, Resource, djit
from datajax.io.readers import count_quotes_in_range
from datajax.ir.nodes import Schema
from datajax.ir.serialize import trace_to_list
from datajax.planner.metrics import ENV_VAR as METRICS_ENV_VAR
from datajax.planner.plan import plan_trace
from datajax.planner.replay import (
    PipelineError,
    ReplayError,
    _read_share,
    dump_trace,
    load_trace,
    read_table,
    replay_and_tune,
    runtime_layers,
    stage_runs,
    table_file,
)
from datajax.runtime import run_trace
from datajax.runtime.pandas_backend import PandasExecutor


@pytest.fixture(autouse=True)
def _no_env_counters(monkeypatch):
    monkeypatch.delenv(METRICS_ENV_VAR, raising=False)


def pipeline(logs, users):
    ok = logs[logs["status"] == 200]
    ok = ok.assign(kb=ok["bytes"] / 1024)
    per_user = ok.groupby("user_id").agg(kb=("kb", "sum"))
    joined = ok.merge(users, on="user_id", how="left")
    by_country = joined.groupby("country").agg(n=("kb", "count"))
    both = per_user.merge(
        joined.groupby("user_id").agg(worst=("latency", "max")),
        on="user_id",
    )
    return both.merge(
        by_country.rename(columns={"country": "user_country"}),
        left_on="user_id", right_on="n", how="left",
    )


def tables(rows: int = 400, seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    logs = pd.DataFrame({
        "user_id": rng.integers(0, 30, rows),
        "bytes": rng.integers(0, 10_000, rows),
        "status": rng.choice(np.array([200, 404]), rows),
        "latency": rng.random(rows).round(4),
        "note": [
            f'say "hi",\nline {i}' if i % 5 == 0 else f"plain {i}"
            for i in range(rows)
        ],
    })
    users = pd.DataFrame({
        "user_id": np.arange(30),
        "country": [f"c{i % 4}" for i in range(30)],
    })
    return {"logs": logs, "users": users}


def sorted_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


# ---------------------------------------------------------------------------
# stages


def test_stages_run_one_after_another_give_the_whole_result():
    data = tables()
    trace = djit(pipeline).trace(**data)
    plan = plan_trace(trace, tables=data)
    runs = stage_runs(plan)

    outputs = {}
    for run in runs:
        inputs = {
            name: data[table] if table is not None else outputs[step]
            for name, table, step in run.inputs
        }
        outputs[run.output] = run_trace(run.trace, inputs)

    assert [r.stage.name for r in runs] == [s.name for s in plan.stages]
    assert runs[-1].output == len(trace.steps) - 1
    expected = run_trace(trace, data)
    pd.testing.assert_frame_equal(
        sorted_frame(outputs[runs[-1].output]), sorted_frame(expected)
    )


def test_stage_inputs_never_take_a_name_of_the_trace():
    frame = Frame.source(
        "stage_input_t1", {"k": "int64", "v": "float64"}
    )
    grouped = frame[frame["v"] > 0].groupby("k").agg(v=("v", "sum"))
    plan = plan_trace(grouped.trace)

    names = [name for run in stage_runs(plan) for name, _, _ in run.inputs]

    assert len(names) == len(set(names))
    assert "_stage_input_t1" in names


# ---------------------------------------------------------------------------
# shares of table files


def write(frame: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False, row_group_size=37)


def shares_of(file, size: int) -> list[pd.DataFrame]:
    """Every rank's share, with parities as the collective gives them."""
    parts = []
    for rank in range(size):
        start = file.size * rank // size
        stop = file.size * (rank + 1) // size
        parities = (
            count_quotes_in_range(file.path, 0, start) % 2,
            count_quotes_in_range(file.path, 0, stop) % 2,
        )
        parts.append(
            _read_share(file, rank, size, parities, {"input_bytes": 0})
        )
    return parts


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_shares_at_any_world_size_add_up_to_the_table(tmp_path, fmt):
    logs = tables()["logs"]
    suffix = {"csv": "csv", "json": "jsonl", "parquet": "parquet"}[fmt]
    path = tmp_path / f"logs.{suffix}"
    write(logs, path, fmt)
    schema = Schema.from_frame(logs)
    file = table_file("logs", str(path), None, schema)

    whole = read_table(file)
    pd.testing.assert_frame_equal(whole, logs)
    for size in (1, 2, 3, 7, 500):
        parts = shares_of(file, size)
        assert len(parts) == size
        pd.testing.assert_frame_equal(
            pd.concat(parts, ignore_index=True), logs, check_index_type=False
        )
        for part in parts:
            assert list(part.dtypes) == list(logs.dtypes)


def test_text_columns_are_read_as_the_trace_types(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n1,2.5,x,true\n,3,,false\n")
    schema = Schema((("a", "float64"), ("b", "float64"), ("c", "str"),
                     ("d", "bool")))

    frame = read_table(table_file("t", str(path), None, schema))

    assert list(frame.dtypes.astype(str)) == ["float64", "float64", "str",
                                              "bool"]
    assert frame["a"].isna().tolist() == [False, True]
    assert frame["d"].tolist() == [True, False]


def test_a_value_of_the_wrong_type_names_file_and_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    schema = Schema((("a", "int64"), ("b", "int64")))

    with pytest.raises(ReplayError, match=r"t\.csv.*oops"):
        read_table(table_file("t", str(path), None, schema))


def test_nulls_in_an_integer_column_are_refused_clearly(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": null}\n')
    schema = Schema((("a", "int64"),))

    with pytest.raises(ReplayError, match=r"column 'a'.*int64"):
        read_table(table_file("t", str(path), None, schema))


def test_json_nulls_are_values_but_an_absent_key_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1, "b": null}\n{"a": 2, "b": null}\n')
    schema = Schema((("a", "int64"), ("b", "float64")))

    frame = read_table(table_file("t", str(path), None, schema))
    assert frame["b"].isna().all()

    missing = Schema((("a", "int64"), ("c", "float64")))
    with pytest.raises(ReplayError, match="'c' of table 't' is absent"):
        read_table(table_file("t", str(path), None, missing))


def test_a_missing_column_lists_the_present_ones(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(path)
    schema = Schema((("a", "int64"),))

    with pytest.raises(ReplayError, match=r"'a' of table 't'.*'x'"):
        read_table(table_file("t", str(path), None, schema))


def test_table_file_checks(tmp_path):
    schema = Schema((("a", "int64"),))
    with pytest.raises(ReplayError, match="no such file"):
        table_file("t", str(tmp_path / "nope.csv"), None, schema)
    (tmp_path / "t.txt").write_text("a\n1\n")
    with pytest.raises(ReplayError, match="--format|suffix"):
        table_file("t", str(tmp_path / "t.txt"), None, schema)
    odd = Schema((("a", "complex128"),))
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(ReplayError, match="Parquet"):
        table_file("t", str(tmp_path / "t.csv"), None, odd)


# ---------------------------------------------------------------------------
# trace files and runtime counters


def test_load_trace_reads_what_trace_to_list_wrote(tmp_path):
    trace = djit(pipeline).trace(**tables())
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace_to_list(trace)))

    assert load_trace(str(path)) == trace


@pytest.mark.parametrize(
    "text, pattern",
    [
        (None, "cannot read the trace"),
        ("[{", "line 1 column 3: the trace is not valid JSON"),
        ('{"steps": []}', "must be a list of steps"),
        ('[{"kind": "pivot"}]', "step 0: unknown step kind 'pivot'"),
        ('[{"kind": "filter", "src": 3, "predicate": '
         '{"kind": "col", "name": "a"}}]', "not valid"),
    ],
)
def test_load_trace_errors_name_the_file(tmp_path, text, pattern):
    path = tmp_path / "trace.json"
    if text is not None:
        path.write_text(text)

    with pytest.raises(ReplayError, match=pattern) as caught:
        load_trace(str(path))
    assert str(path) in str(caught.value)


def test_runtime_layers_env_first_then_the_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"shuffle_bytes": 5, "notes": ["file"]}))
    env = {METRICS_ENV_VAR: '{"shuffle_bytes": 9, "l2_reuse": 0.5}'}

    layers = runtime_layers(str(path), env)

    assert [origin for origin, _ in layers] == [
        METRICS_ENV_VAR, f"--metrics-in {path}",
    ]
    assert layers[0][1]["shuffle_bytes"] == 9
    assert layers[1][1]["shuffle_bytes"] == 5
    assert runtime_layers(None, {}) == []


def test_runtime_layers_refuse_bad_counters(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"bytes_moved": -1}')
    with pytest.raises(ReplayError, match="must not be negative"):
        runtime_layers(str(path), {})
    with pytest.raises(ReplayError, match=METRICS_ENV_VAR):
        runtime_layers(None, {METRICS_ENV_VAR: "{oops"})


# ---------------------------------------------------------------------------
# replay_and_tune in one process


def test_replay_and_tune_reports_metrics_policy_and_stages():
    data = tables()
    trace = djit(pipeline).trace(**data)
    layers = [
        ("env", {"shuffle_bytes": 7, "wgmma_occupancy": 0.25}),
        ("file", {"shuffle_bytes": 100, "bytes_moved": 400}),
    ]

    report = replay_and_tune(
        trace_to_list(trace), data,
        resources=Resource(("data", "model"), 8),
        executor="pandas", runtime=layers, repeats=2,
    )

    doc = report.to_dict()
    metrics = doc["metrics"]
    assert metrics["runtime_shuffle_bytes"] == 100
    assert metrics["runtime_bytes_moved"] == 400
    assert metrics["runtime_wgmma_occupancy"] == 0.25
    assert doc["runtime_counters"] == {
        "bytes_moved": "file", "shuffle_bytes": "file",
        "wgmma_occupancy": "env",
    }
    assert doc["policy"]["BK"] == 32  # round(8 * 0.25) = 2
    assert doc["policy"]["stage_depth"] == 4  # ceil(8 * 100 / 400) = 2
    assert doc["mesh"] == {"mesh_axes": ["data", "model"], "world_size": 8}
    assert doc["tables"] == {"logs": 400, "users": 30}
    assert metrics["estimated_input_rows"] == 430

    run = doc["run"]
    assert run["ranks"] == 1 and run["timed_rounds"] == 2
    assert run["models_target_mesh"] is True
    assert [s["name"] for s in run["stages"]] == [
        s["name"] for s in doc["stages"]
    ]
    for stage in run["stages"]:
        assert stage["seconds_min"] <= stage["seconds"]
        assert stage["seconds"] <= stage["seconds_max"]
    scans = [s for s in run["stages"] if s["kind"] == "scan"]
    assert sum(s["rows_in"] for s in scans) == 430
    expected = run_trace(trace, data)
    assert run["stages"][-1]["rows_out"] == len(expected)
    json.dumps(doc, allow_nan=False)

    counters = report.runtime_metrics()
    assert counters["job"] == "datajax-replay-tuner"
    assert counters["world_size"] == 1


def test_the_estimate_comes_from_the_whole_tables():
    data = tables()
    trace = djit(pipeline).trace(**data)
    half = {"logs": data["logs"].iloc[:200], "users": data["users"]}

    report = replay_and_tune(
        trace, half, executor=PandasExecutor(), whole_tables=data,
    )

    assert report.metrics.estimated_input_rows == 430
    assert report.to_dict()["run"]["stages"][0]["rows_in"] == 200


def test_replay_and_tune_refuses_a_missing_table():
    data = tables()
    trace = djit(pipeline).trace(**data)

    with pytest.raises(ReplayError, match="no table bound to 'users'"):
        replay_and_tune(trace, {"logs": data["logs"]}, executor="pandas")


def test_replay_and_tune_refuses_bad_runtime_counters():
    data = tables()
    trace = djit(pipeline).trace(**data)

    with pytest.raises(ReplayError, match="fraction"):
        replay_and_tune(
            trace, data, executor="pandas",
            runtime={"l2_reuse": 2.0},
        )


# ---------------------------------------------------------------------------
# dumping a pipeline


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_dump_trace_writes_what_the_tuner_reads(tmp_path, fmt):
    data = tables()
    out = tmp_path / "dump"

    manifest = dump_trace(
        pipeline, data, str(out), sample_rows=100, sample_format=fmt,
    )

    trace = load_trace(str(out / "trace.json"))
    assert trace == djit(pipeline).trace(**data)
    assert manifest["sample"]["table"] == "logs"
    assert manifest["sample"]["rows"] == 100
    assert manifest["tables"] == {"users": "tables/users.parquet"}
    assert "--table users=tables/users.parquet" in manifest[
        "replay_command"
    ]
    assert json.loads((out / "dump.json").read_text()) == manifest

    source = {s.name: s for s in trace.steps if hasattr(s, "schema")}
    sample = read_table(table_file(
        "logs", str(out / manifest["sample"]["path"]), None,
        source["logs"].schema,
    ))
    pd.testing.assert_frame_equal(sample, data["logs"].iloc[:100])
    users = read_table(table_file(
        "users", str(out / "tables" / "users.parquet"), None,
        source["users"].schema,
    ))
    pd.testing.assert_frame_equal(users, data["users"])


def test_dump_trace_reads_source_tables_by_name(tmp_path):
    @djit
    def lookup(logs):
        users = Frame.source("users")
        return logs.merge(users, on="user_id")

    data = tables()
    manifest = dump_trace(lookup, data, str(tmp_path), sample="logs")

    assert manifest["tables"] == {"users": "tables/users.parquet"}


def test_dump_trace_refuses_an_unknown_sample(tmp_path):
    with pytest.raises(ValueError, match="sample='nope'"):
        dump_trace(pipeline, tables(), str(tmp_path), sample="nope")


def test_dump_trace_refuses_a_table_the_pipeline_does_not_read(tmp_path):
    data = {**tables(), "extra": pd.DataFrame({"a": [1]})}

    with pytest.raises(ValueError, match="table 'extra' is given but"):
        dump_trace(pipeline, data, str(tmp_path / "dump"))

    assert not (tmp_path / "dump").exists()


def test_dump_trace_refuses_an_out_dir_that_is_a_file(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine\n")

    with pytest.raises(ValueError, match="exists and is not a folder"):
        dump_trace(pipeline, tables(), str(taken))

    assert taken.read_text() == "mine\n"


def test_dump_trace_names_the_pipeline_that_raised(tmp_path):
    @djit
    def broken(logs, users):
        raise KeyError("no_such_column")

    with pytest.raises(PipelineError, match="broken raised KeyError") as info:
        dump_trace(broken, tables(), str(tmp_path / "dump"))

    assert isinstance(info.value.__cause__, KeyError)
    assert not (tmp_path / "dump").exists()


def test_dump_trace_wraps_a_type_error_of_the_pipeline_itself(tmp_path):
    @djit
    def returns_a_number(logs, users):
        return 3

    with pytest.raises(
        PipelineError, match="returns_a_number raised TypeError"
    ):
        dump_trace(returns_a_number, tables(), str(tmp_path / "dump"))


def test_dump_trace_still_blames_a_missing_parameter(tmp_path):
    data = tables()
    del data["users"]

    with pytest.raises(TypeError, match="users"):
        dump_trace(pipeline, data, str(tmp_path / "dump"))


def test_dump_trace_accepts_a_parameter_the_pipeline_ignores(tmp_path):
    @djit
    def ignores_users(logs, users):
        return logs.groupby("user_id").agg(n=("bytes", "count"))

    manifest = dump_trace(ignores_users, tables(), str(tmp_path / "dump"))

    assert manifest["sample"]["table"] == "logs"
    assert manifest["tables"] == {}
