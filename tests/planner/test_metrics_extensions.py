"""Plan metrics: estimates from real dtypes, runtime counters, the env var."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from datajax import Frame, Resource, djit, pjit, shard
from datajax.planner import metrics as m
from datajax.planner.metrics import (
    ENV_VAR,
    PlanMetrics,
    RuntimeMetricsError,
    estimate_plan_metrics,
    load_runtime_counters,
    merge_runtime_counters,
    metrics_to_dict,
    runtime_counters_from_env,
)


@pytest.fixture(autouse=True)
def _no_env_counters(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _logs() -> pd.DataFrame:
    # bytes per row: user 1 (or 2 for "é"), size 8, ok 1, path 2-3
    return pd.DataFrame(
        {
            "user": ["a", "é", "a", None],
            "size": np.array([10, 2000, 3000, 5], dtype="int64"),
            "ok": [True, False, True, True],
            "path": ["/x", "/yy", "/ü", "/z"],
        }
    )


def _users() -> pd.DataFrame:
    return pd.DataFrame({"user": ["a", "é"], "cc": ["de", "fr"]})


LOGS_BYTES = (1 + 2 + 1 + 0) + 4 * 8 + 4 * 1 + (2 + 3 + 3 + 2)  # 50
USERS_BYTES = (1 + 2) + (2 + 2)  # 7


def _pipeline(world_size: int = 4):
    @pjit(resources=Resource(mesh_axes=("data",), world_size=world_size))
    def pipeline(logs, users):
        logs = logs.repartition(shard.by_key("user"))
        big = logs[logs["size"] > 100]
        joined = big.merge(users, on="user", how="left")
        return joined.groupby("cc").agg(total=("size", "sum"))

    return pipeline


# ---------------------------------------------------------------------------
# estimates


def test_step_counts_and_sizes_of_a_pipeline():
    plan = _pipeline().lower(_logs(), _users())
    met = plan.metrics

    assert (met.transform_steps, met.join_steps, met.aggregate_steps,
            met.repartition_steps, met.steps_total) == (1, 1, 1, 1, 4)
    assert met.estimated_input_rows == 6
    assert met.estimated_input_bytes == LOGS_BYTES + USERS_BYTES
    assert met.row_width == math.ceil((LOGS_BYTES + USERS_BYTES) / 6)


def test_shuffle_bytes_scale_with_world_size():
    # the repartition moves all of logs; the join then moves only users
    # (logs is already by_key(user)); scaled by (W - 1) / W
    for world in (1, 2, 3, 4):
        met = _pipeline(world).lower(_logs(), _users()).metrics
        expected = (LOGS_BYTES * (world - 1) // world
                    + USERS_BYTES * (world - 1) // world)
        assert met.shuffle_bytes == expected, world

    one = _pipeline(1).lower(_logs(), _users()).metrics
    assert "world_size=1: no bytes cross ranks" in one.notes


def test_a_repartition_on_sharded_data_moves_nothing():
    @pjit(resources=Resource(world_size=2))
    def twice(logs):
        return logs.repartition("user").repartition(shard.by_key("user"))

    met = twice.lower(_logs()).metrics

    assert met.shuffle_bytes == LOGS_BYTES // 2
    assert any("repartition t2" in n and "nothing moves" in n
               for n in met.notes)


def test_join_shuffle_counts_both_unsharded_sides():
    @pjit(resources=Resource(world_size=4))
    def joined(logs, users):
        return logs.merge(users, on="user")

    met = joined.lower(_logs(), _users()).metrics

    assert met.shuffle_bytes == (LOGS_BYTES + USERS_BYTES) * 3 // 4


def test_row_width_uses_real_dtypes():
    df = pd.DataFrame(
        {
            "i8": np.array([1, 2], dtype="int8"),
            "f32": np.array([1.0, 2.0], dtype="float32"),
            "nullable": pd.array([1, None], dtype="Int64"),
            "cat": pd.Categorical(["x", "y"]),
            "when": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "text": ["日本", "abc"],  # 6 and 3 UTF-8 bytes
            "obj": pd.Series([[1, 2], b"xyz"], dtype=object),
        }
    )
    plan = Frame(df, "t").plan()

    # 1 + 4 + (8 + 1 mask) + 1 code + 8, per row; then measured bytes
    fixed = 2 * (1 + 4 + 9 + 1 + 8)
    assert plan.metrics.estimated_input_bytes == fixed + 6 + 3 + 16 + 3
    assert plan.metrics.row_width == math.ceil((fixed + 9 + 19) / 2)


def test_large_tables_are_measured_on_a_sample():
    n = m.SAMPLE_ROWS * 3 + 7
    df = pd.DataFrame({"k": np.arange(n), "s": ["abcd"] * n})

    met = Frame(df, "big").plan().metrics

    assert met.estimated_input_rows == n
    assert met.estimated_input_bytes == n * 8 + n * 4
    assert met.row_width == 12


def test_without_a_sample_sizes_are_zero_and_said():
    met = Frame.source("t", {"a": "int64", "s": "str"}).plan().metrics

    assert (met.estimated_input_rows, met.estimated_input_bytes) == (0, 0)
    assert met.row_width == 8
    assert met.occupancy_proxy == 0.0
    assert "no sample for table 't': its rows and bytes count as 0" in (
        met.notes
    )
    assert any("'s' of table 't' has variable width" in n
               for n in met.notes)


def test_sample_df_argument():
    plan = Frame.source("t", {"a": "int64"}).plan()
    df = pd.DataFrame({"a": np.arange(200, dtype="int64")})

    met = estimate_plan_metrics(plan, sample_df=df)
    same = estimate_plan_metrics(plan, sample_df={"t": df})

    assert met == same
    assert met.estimated_input_rows == 200
    assert met.estimated_input_bytes == 1600
    with pytest.raises(ValueError, match="does not read"):
        estimate_plan_metrics(plan, sample_df={"other": df})
    with pytest.raises(ValueError, match="lacks column 'a'"):
        estimate_plan_metrics(plan, sample_df=pd.DataFrame({"b": [1]}))


def test_proxies_follow_their_formulas():
    # 16-byte rows (two int64), 200 rows
    df = pd.DataFrame({"a": np.arange(200), "b": np.arange(200)})
    f = Frame(df, "t")
    met = f.assign(c=f["a"] + f["b"] * f["a"]).plan().metrics

    lane_fill = 16 / 128
    tile_fill = 200 / 256
    assert met.occupancy_proxy == pytest.approx(lane_fill * tile_fill)
    # uses: a twice, b once -> 1 - 2 / 3
    assert met.l2_reuse_proxy == pytest.approx(1 / 3)
    assert met.column_usage == {"a": 2, "b": 1}
    assert met.pack_order_hint == ("a", "b")
    assert 0.0 <= met.occupancy_proxy <= 1.0


def test_pack_order_hint_by_usage_then_name():
    df = pd.DataFrame({"z": [1], "y": [1], "x": [1], "w": [1]})
    f = Frame(df, "t")
    g = f[(f["y"] > 0) & (f["z"] > 0)]
    g = g.assign(q=g["y"] * 2)

    met = g.groupby("z").agg(s=("x", "sum")).plan().metrics

    assert met.column_usage == {"y": 2, "z": 2, "x": 1, "w": 0}
    assert met.pack_order_hint == ("y", "z", "x", "w")


def test_integers_stay_ints_and_dict_is_strict_json():
    met = _pipeline().lower(_logs(), _users()).metrics
    data = metrics_to_dict(met)

    for key in ("transform_steps", "steps_total", "estimated_input_rows",
                "estimated_input_bytes", "shuffle_bytes", "row_width"):
        assert type(data[key]) is int, key
    assert all(type(v) is int for v in data["column_usage"].values())
    assert data["runtime_bytes_moved"] is None
    json.dumps(data, allow_nan=False)


def test_metrics_to_dict_never_emits_nan():
    met = PlanMetrics(occupancy_proxy=float("nan"),
                      runtime_l2_reuse=float("inf"))

    data = metrics_to_dict(met)

    assert data["occupancy_proxy"] is None
    assert data["runtime_l2_reuse"] is None
    json.dumps(data, allow_nan=False)


# ---------------------------------------------------------------------------
# merging runtime counters


def test_merge_sets_runtime_fields_and_keeps_estimates():
    met = _pipeline().lower(_logs(), _users()).metrics

    merged = merge_runtime_counters(
        met,
        {"bytes_moved": 1 << 40, "shuffle_bytes": 4096,
         "wgmma_occupancy": 0.5, "l2_reuse": 1,
         "notes": ["mpi_bytes=1048576"]},
    )

    assert merged.runtime_bytes_moved == 1 << 40
    assert type(merged.runtime_bytes_moved) is int
    assert merged.runtime_shuffle_bytes == 4096
    assert merged.runtime_wgmma_occupancy == 0.5
    assert merged.runtime_l2_reuse == 1.0
    assert merged.runtime_notes == ("mpi_bytes=1048576",)
    assert merged.shuffle_bytes == met.shuffle_bytes
    assert met.runtime_bytes_moved is None  # the input is not changed


def test_aliases_and_unknown_keys():
    merged = merge_runtime_counters(
        PlanMetrics(),
        {"input_bytes": 10, "bytes_shuffled": 3, "occupancy": 0.25,
         "cache_reuse": 0.75, "ranks": 3, "host": "n01",
         "per_rank": {"b": [1, 2]}},
    )

    assert (merged.runtime_bytes_moved, merged.runtime_shuffle_bytes) == (
        10, 3)
    assert merged.runtime_wgmma_occupancy == 0.25
    assert merged.runtime_l2_reuse == 0.75
    assert merged.runtime_notes == (
        "ranks=3", "host=n01", 'per_rank={"b":[1,2]}'
    )


def test_optional_values_are_not_invented():
    merged = merge_runtime_counters(PlanMetrics(), {"bytes_moved": 1})

    assert merged.runtime_wgmma_occupancy is None
    assert merged.runtime_l2_reuse is None
    assert merged.runtime_shuffle_bytes is None


def test_merging_twice_keeps_earlier_values_and_notes():
    once = merge_runtime_counters(
        PlanMetrics(), {"bytes_moved": 1, "notes": ["a=1"]})

    twice = merge_runtime_counters(
        once, {"shuffle_bytes": 2, "notes": ["b=2"]})

    assert (twice.runtime_bytes_moved, twice.runtime_shuffle_bytes) == (1, 2)
    assert twice.runtime_notes == ("a=1", "b=2")


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        ({"bytes_moved": 1.5}, "'bytes_moved' must be a JSON integer"),
        ({"bytes_moved": True}, "'bytes_moved' must be a JSON integer"),
        ({"shuffle_bytes": -1}, "'shuffle_bytes' must not be negative"),
        ({"occupancy": 85.0}, "'occupancy' must be a fraction between 0 "
                              "and 1, got 85.0 (divide a percentage"),
        ({"l2_reuse": "high"}, "'l2_reuse' must be a fraction"),
        ({"notes": "x=1"}, "'notes' must be a list of strings"),
        ({"bytes_moved": 1, "input_bytes": 2},
         "'input_bytes' = 2 disagrees with 'bytes_moved' = 1"),
    ],
)
def test_bad_counter_values(counters, expected):
    with pytest.raises(RuntimeMetricsError) as info:
        merge_runtime_counters(PlanMetrics(), counters)

    assert expected in str(info.value)


def test_agreeing_aliases_are_fine():
    merged = merge_runtime_counters(
        PlanMetrics(), {"bytes_moved": 5, "input_bytes": 5})

    assert merged.runtime_bytes_moved == 5


# ---------------------------------------------------------------------------
# loading: files, inline JSON, the environment variable


def test_load_inline_and_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"bytes_moved": 7, "notes": ["mpi_bytes=3"]}')

    assert load_runtime_counters(str(path)) == {
        "bytes_moved": 7, "notes": ["mpi_bytes=3"]}
    assert load_runtime_counters(path) == load_runtime_counters(str(path))
    assert load_runtime_counters('  {"input_bytes": 7}') == {
        "bytes_moved": 7, "notes": []}


def test_invalid_inline_json_names_line_and_column():
    with pytest.raises(RuntimeMetricsError) as info:
        load_runtime_counters('{"bytes_moved": 1,\n "x": }', source=ENV_VAR)

    assert str(info.value) == (
        "DATAJAX_RUNTIME_METRICS (inline JSON): invalid JSON at line 2, "
        "column 7: Expecting value"
    )


def test_invalid_file_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{\n  "bytes_moved": 1\n  "shuffle_bytes": 2\n}\n')

    with pytest.raises(RuntimeMetricsError) as info:
        load_runtime_counters(str(path), source=ENV_VAR)

    assert str(info.value) == (
        f"DATAJAX_RUNTIME_METRICS={str(path)!r}: invalid JSON at line 3, "
        "column 3: Expecting ',' delimiter"
    )


def test_bad_value_in_file_points_at_its_key(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{\n  "notes": [],\n  "shuffle_bytes": -4\n}\n')

    with pytest.raises(RuntimeMetricsError) as info:
        load_runtime_counters(str(path))

    assert str(info.value) == (
        f"{str(path)!r}: key 'shuffle_bytes' (line 3, column 3) must not "
        "be negative, got -4"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"bytes_moved": NaN}', "NaN is not valid JSON"),
        ('{"a": 1, "a": 2}', "key 'a' appears twice"),
        ("[1, 2]", "must be a JSON object starting with '{', not a list"),
        ('{"bytes_moved": 1} trailing', "invalid JSON at line 1, column 20"),
    ],
)
def test_other_invalid_inline_values(text, expected):
    with pytest.raises(RuntimeMetricsError) as info:
        load_runtime_counters(text)

    assert expected in str(info.value)


def test_unreadable_file(tmp_path):
    missing = tmp_path / "absent.json"

    with pytest.raises(RuntimeMetricsError) as info:
        load_runtime_counters(str(missing), source=ENV_VAR)
    message = str(info.value)

    assert message.startswith(f"DATAJAX_RUNTIME_METRICS={str(missing)!r}: "
                              "cannot read the runtime metrics file")
    assert "No such file" in message
    with pytest.raises(RuntimeMetricsError, match="cannot read"):
        load_runtime_counters(str(tmp_path))  # a directory


def test_env_var_unset_blank_file_inline(monkeypatch, tmp_path):
    assert runtime_counters_from_env({}) is None
    assert runtime_counters_from_env({ENV_VAR: "  "}) is None

    path = tmp_path / "m.json"
    path.write_text('{"bytes_moved": 9}')
    assert runtime_counters_from_env({ENV_VAR: str(path)}) == {
        "bytes_moved": 9, "notes": []}

    monkeypatch.setenv(ENV_VAR, '{"bytes_shuffled": 4}')
    assert runtime_counters_from_env() == {"shuffle_bytes": 4, "notes": []}


def test_djit_merges_counters_from_a_file(monkeypatch, tmp_path):
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps({
        "bytes_moved": 123456, "shuffle_bytes": 789,
        "l2_reuse": 0.4, "notes": ["mpi_bytes=1048576"], "ranks": 2,
    }))
    monkeypatch.setenv(ENV_VAR, str(path))
    pipeline = _pipeline()

    pipeline(_logs(), _users())
    met = pipeline.last_plan.metrics

    assert met.runtime_bytes_moved == 123456
    assert met.runtime_shuffle_bytes == 789
    assert met.runtime_l2_reuse == 0.4
    assert met.runtime_wgmma_occupancy is None
    assert met.runtime_notes == ("mpi_bytes=1048576", "ranks=2")
    assert "runtime_bytes_moved: 123456" in pipeline.explain()


def test_djit_merges_inline_counters_on_every_call(monkeypatch):
    pipeline = _pipeline()
    pipeline(_logs(), _users())
    assert pipeline.last_plan.metrics.runtime_bytes_moved is None

    monkeypatch.setenv(ENV_VAR, '{"input_bytes": 1, "occupancy": 0.9}')
    pipeline(_logs(), _users())
    first = pipeline.last_plan.metrics

    monkeypatch.setenv(ENV_VAR, '{"input_bytes": 2}')
    pipeline(_logs(), _users())
    second = pipeline.last_plan.metrics

    assert (first.runtime_bytes_moved, first.runtime_wgmma_occupancy) == (
        1, 0.9)
    # each call starts from fresh estimates: nothing leaks between calls
    assert (second.runtime_bytes_moved, second.runtime_wgmma_occupancy) == (
        2, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"bytes_moved": }', "DATAJAX_RUNTIME_METRICS (inline JSON): "
                              "invalid JSON at line 1, column 17"),
        ("/no/such/runtime.json", "DATAJAX_RUNTIME_METRICS="
                                  "'/no/such/runtime.json': cannot read"),
        ('{"bytes_moved": "many"}', "key 'bytes_moved' (line 1, column 2) "
                                    "must be a JSON integer"),
    ],
)
def test_djit_fails_before_any_work(monkeypatch, value, expected):
    traced = []

    @djit
    def pipeline(logs):
        traced.append(True)
        return logs

    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(RuntimeMetricsError) as info:
        pipeline(_logs())

    assert expected in str(info.value)
    assert traced == []
    assert pipeline.last_plan is None
