"""Planning: named stages, schemas, sharding, validation, explain text."""

from __future__ import annotations

import pandas as pd
import pytest

from datajax import Frame, Resource, djit, pjit, shard
from datajax.ir import IRError, Schema
from datajax.ir.serialize import trace_from_list, trace_to_list
from datajax.planner import plan_trace
from datajax.planner.sharding import Blocks, ByKey


@pytest.fixture(autouse=True)
def _no_env_counters(monkeypatch):
    monkeypatch.delenv("DATAJAX_RUNTIME_METRICS", raising=False)


def _logs() -> pd.DataFrame:
    return pd.DataFrame(
        {"user": ["a", "b", "a"], "size": [10, 2000, 3000]}
    )


def _users() -> pd.DataFrame:
    return pd.DataFrame({"user": ["a", "b"], "cc": ["de", "fr"]})


@pjit(
    out_shardings=shard.by_key("cc"),
    resources=Resource(mesh_axes=("data",), world_size=2),
)
def pipeline(logs, users):
    logs = logs.repartition(shard.by_key("user"))
    big = logs[logs["size"] > 100]
    big = big.assign(kb=big["size"] / 1024)
    joined = big.merge(users, on="user", how="inner")
    return joined.groupby("cc").agg(total=("kb", "sum"), n=("size", "count"))


EXPLAIN = """\
ExecutionPlan: 6 stages, 8 steps, mesh_axes=('data',), world_size=2
output t7 {cc: str, total: float64, n: int64}
  sharding by_key(cc)

stage s0_scan_logs
  in  table 'logs' {user: str, size: int64}
      sharding blocks
  exchange: none
    t0 = source 'logs' {user: str, size: int64}
  out {user: str, size: int64}
      sharding blocks

stage s1_scan_users
  in  table 'users' {user: str, cc: str}
      sharding blocks
  exchange: none
    t1 = source 'users' {user: str, cc: str}
  out {user: str, cc: str}
      sharding blocks

stage s2_repartition
  in  s0_scan_logs.t0 {user: str, size: int64}
      sharding blocks
  exchange: hash by [user] over 2 ranks on axis 'data'
    t2 = repartition t0 by_key(user)
    t3 = filter t2 where (size > 100)
    t4 = assign t3 kb = (size / 1024)
  out {user: str, size: int64, kb: float64}
      sharding by_key(user)

stage s3_join
  in  s2_repartition.t4 {user: str, size: int64, kb: float64}
      sharding by_key(user)
  in  s1_scan_users.t1 {user: str, cc: str}
      sharding blocks
  exchange: right hash by [user] over 2 ranks
    t5 = join inner t4, t1 on [user] suffixes ('_x', '_y')
  out {user: str, size: int64, kb: float64, cc: str}
      sharding by_key(user)

stage s4_aggregate
  in  s3_join.t5 {user: str, size: int64, kb: float64, cc: str}
      sharding by_key(user)
  exchange: partial aggregates hash by [cc] over 2 ranks
    t6 = aggregate t5 by [cc] {total = sum(kb), n = count(size)}
  out {cc: str, total: float64, n: int64}
      sharding by_key(cc)

stage s5_repartition
  in  s4_aggregate.t6 {cc: str, total: float64, n: int64}
      sharding by_key(cc)
  exchange: none (already by key)
    t7 = repartition t6 by_key(cc)
  out {cc: str, total: float64, n: int64}
      sharding by_key(cc)

metrics
  transform_steps: 2
  join_steps: 1
  aggregate_steps: 1
  repartition_steps: 2
  steps_total: 6
  estimated_input_rows: 5
  estimated_input_bytes: 33
  shuffle_bytes: 16
  row_width: 7
  occupancy_proxy: 0.0021
  l2_reuse_proxy: 0.5556
  pack_order_hint: size, user, cc, kb
  runtime_bytes_moved: -
  runtime_shuffle_bytes: -
  runtime_wgmma_occupancy: -
  runtime_l2_reuse: -
  column_usage: size=3, user=3, cc=2, kb=1
  notes:
    - repartition t7: the input is already by_key(cc); nothing moves
    - rows through the plan are estimates: filters and group-bys keep \
every row; joins give max(l, r) (inner), l (left), r (right), l + r (outer)
    - group-by exchanges are not counted in shuffle_bytes
    - occupancy_proxy=lane_fill*tile_fill with row_width=7, \
line_bytes=128, rows=5, tile_rows=128
    - l2_reuse_proxy=1-distinct/uses with distinct=4, uses=9"""


def test_explain_shows_stages_schemas_sharding_metrics():
    # bytes: logs 3 (user) + 24 (size), users 2 + 4; shuffle: logs 27 // 2
    # at the repartition, users 6 // 2 at the join
    out = pipeline(_logs(), _users())

    assert pipeline.explain() == EXPLAIN
    assert out.to_dict("list") == {
        "cc": ["de", "fr"],
        "total": [3000 / 1024, 2000 / 1024],
        "n": [1, 1],
    }


def test_plan_fields():
    plan = pipeline.lower(_logs(), _users())

    assert [s.name for s in plan.stages] == [
        "s0_scan_logs", "s1_scan_users", "s2_repartition", "s3_join",
        "s4_aggregate", "s5_repartition",
    ]
    assert [s.steps for s in plan.stages] == [
        (0,), (1,), (2, 3, 4), (5,), (6,), (7,)
    ]
    assert plan.stages[3].inputs == ("s2_repartition.t4", "s1_scan_users.t1")
    assert plan.sharding == ByKey(("cc",))
    assert plan.output_schema == Schema(
        (("cc", "str"), ("total", "float64"), ("n", "int64"))
    )
    assert plan.sources == ("logs", "users")
    assert plan.schemas[4].dtypes["kb"] == "float64"
    assert plan.resources.world_size == 2


def test_a_table_read_twice_starts_new_stages():
    @djit
    def fan_out(logs):
        small = logs[logs["size"] < 100]
        large = logs[logs["size"] >= 100]
        return small.merge(large, on="user", how="outer")

    plan = fan_out.lower(_logs())

    assert [(s.name, s.steps) for s in plan.stages] == [
        ("s0_scan_logs", (0,)),
        ("s1_map", (1,)),
        ("s2_map", (2,)),
        ("s3_join", (3,)),
    ]
    assert plan.stages[1].inputs == ("s0_scan_logs.t0",)


def test_sharding_follows_renames_selects_and_overwrites():
    @djit
    def steps(logs):
        by_user = logs.repartition("user")
        renamed = by_user.rename(columns={"user": "who"})
        kept = renamed[["who", "size"]]
        dropped = kept[["size"]]
        overwritten = kept.assign(who=kept["size"] * 0)
        return dropped.assign(size2=dropped["size"]).merge(
            overwritten, on="size"
        )

    shardings = steps.lower(_logs()).step_shardings

    assert shardings[:6] == (
        Blocks(),
        ByKey(("user",)),
        ByKey(("who",)),
        ByKey(("who",)),
        Blocks(),
        Blocks(),
    )


def test_join_output_sharding_by_kind():
    users = _users().rename(columns={"user": "uid"})
    cases = {"inner": ByKey(("user",)), "left": ByKey(("user",)),
             "right": ByKey(("uid",)), "outer": Blocks()}
    for how, expected in cases.items():
        @djit
        def joined(logs, users, how=how):
            return logs.merge(users, left_on="user", right_on="uid", how=how)

        assert joined.lower(_logs(), users).sharding == expected, how


def test_plan_a_deserialized_trace_without_data():
    trace = trace_from_list(trace_to_list(pipeline.trace(_logs(), _users())))

    plan = plan_trace(trace, Resource(world_size=3))

    assert plan.output_schema.names == ("cc", "total", "n")
    assert plan.metrics.estimated_input_rows == 0
    assert plan.stages[2].exchange == (
        "hash by [user] over 3 ranks on axis 'data'"
    )


def test_real_dtypes_replace_the_trace_schema():
    trace = Frame.source("t", {"a": "int64"}).trace
    tables = {"t": pd.DataFrame({"a": [1.5, None]})}

    plan = plan_trace(trace, tables=tables)

    assert plan.schemas[0] == Schema((("a", "float64"),))


def test_dtype_errors_surface_at_plan_time_with_the_step():
    @djit
    def bad(logs):
        return logs.assign(x=logs["user"] * logs["user"])

    with pytest.raises(IRError) as info:
        bad(_logs())

    first = str(info.value).splitlines()[0]
    assert first.startswith(
        "step 1 (assign): pandas rejects this step for the input dtypes:"
    )
    assert "> t1 = assign t0 x = (user * user)" in str(info.value)


def test_unknown_dtype_in_a_trace():
    trace = Frame.source("t", {"a": "int64"}).trace
    data = trace_to_list(trace)
    data[0]["schema"][0][1] = "quaternion"

    with pytest.raises(IRError, match="'quaternion', which pandas does"):
        plan_trace(trace_from_list(data))


# ---------------------------------------------------------------------------
# mesh validation


def test_resource_validation():
    with pytest.raises(ValueError, match=r"world_size=0\): world_size must "
                                         "be at least 1"):
        Resource(world_size=0)
    with pytest.raises(TypeError, match="must be an integer, not float"):
        Resource(world_size=2.0)
    with pytest.raises(TypeError, match="not bool"):
        Resource(world_size=True)
    with pytest.raises(ValueError, match="at least one axis"):
        Resource(mesh_axes=())
    with pytest.raises(ValueError, match="repeated mesh axis"):
        Resource(mesh_axes=("data", "data"))
    assert Resource(mesh_axes=["data", "model"]).mesh_axes == (
        "data", "model")
    assert Resource(mesh_axes="data").mesh_axes == ("data",)


def test_pjit_rejects_an_unknown_axis():
    with pytest.raises(ValueError) as info:
        pjit(
            lambda t: t,
            out_shardings=shard.by_key("k", axis="model"),
            resources=Resource(mesh_axes=("data",), world_size=2),
        )

    assert str(info.value).startswith(
        "unknown mesh axis 'model'; the mesh has axes ('data',)"
    )


def test_repartition_on_an_unknown_axis_fails_when_planned():
    compiled = pjit(
        lambda logs: logs.repartition(shard.by_key("user", axis="x")),
        resources=Resource(world_size=2),
    )

    with pytest.raises(ValueError, match=r"step 1 \(repartition\): unknown "
                                         "mesh axis 'x'"):
        compiled(_logs())


def test_pjit_argument_types():
    with pytest.raises(TypeError, match="out_shardings must be"):
        pjit(lambda t: t, out_shardings="k")
    with pytest.raises(TypeError, match="resources must be"):
        pjit(lambda t: t, resources={"world_size": 2})
    with pytest.raises(ValueError, match="at least one key"):
        shard.by_key()
    assert shard.by_key(["a", "b"], axis="data") == ByKey(("a", "b"),
                                                          "data")


def test_out_shardings_adds_one_repartition_only_when_needed():
    spec = shard.by_key("user")

    already = pjit(lambda logs: logs.repartition(spec), out_shardings=spec)
    other = pjit(lambda logs: logs[["user"]], out_shardings=spec)

    assert len(already.trace(_logs())) == 2
    assert [type(s).__name__ for s in other.trace(_logs()).steps] == [
        "Source", "Select", "Repartition"
    ]
