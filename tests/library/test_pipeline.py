"""End to end: a pipeline with a repartition, filter, join and group-by
traces, plans, explains, runs, serializes, and takes runtime counters."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from datajax import Resource, pjit, shard
from datajax.ir.serialize import trace_from_list, trace_to_list
from datajax.planner import plan_trace
from datajax.planner.metrics import ENV_VAR, RuntimeMetricsError
from datajax.runtime import get_executor


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("DATAJAX_EXECUTOR", "pandas")


def _requests() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant": ["t1", "t2", "t1", "t3", "t2", None],
            "blocks": [4, 0, 16, 2, 8, 1],
            "latency": [1.0, 2.0, 0.5, None, 4.0, 3.0],
        }
    )


def _tenants() -> pd.DataFrame:
    return pd.DataFrame({"tenant": ["t1", "t2"], "tier": ["gold", "free"]})


@pjit(
    out_shardings=shard.by_key("tier"),
    resources=Resource(mesh_axes=("data",), world_size=4),
)
def usage_by_tier(requests, tenants):
    requests = requests.repartition(shard.by_key("tenant"))
    busy = requests[requests["blocks"] > 0]
    joined = busy.merge(tenants, on="tenant", how="inner")
    return joined.groupby("tier").agg(
        blocks=("blocks", "sum"), slowest=("latency", "max")
    )


def _expected() -> pd.DataFrame:
    req = _requests()
    busy = req[req["blocks"] > 0]
    joined = busy.merge(_tenants(), on="tenant", how="inner")
    return joined.groupby("tier").agg(
        blocks=("blocks", "sum"), slowest=("latency", "max")
    ).reset_index()


def test_traces_plans_explains_and_runs():
    out = usage_by_tier(_requests(), _tenants())
    plan = usage_by_tier.last_plan

    pd.testing.assert_frame_equal(out, _expected())
    assert [s.kind for s in plan.stages] == [
        "scan", "scan", "repartition", "join", "aggregate", "repartition"
    ]
    assert (plan.metrics.repartition_steps, plan.metrics.join_steps,
            plan.metrics.aggregate_steps, plan.metrics.transform_steps) == (
        2, 1, 1, 1)
    text = usage_by_tier.explain()
    assert "stage s3_join" in text
    assert "exchange: right hash by [tenant] over 4 ranks" in text
    assert "runtime_bytes_moved: -" in text


def test_the_trace_replays_from_json():
    usage_by_tier(_requests(), _tenants())
    data = json.loads(json.dumps(trace_to_list(usage_by_tier.last_trace)))

    trace = trace_from_list(data)
    tables = {"requests": _requests(), "tenants": _tenants()}
    plan = plan_trace(trace, Resource(world_size=4), tables=tables)
    out = get_executor("pandas").run(plan, tables)

    assert plan.stages == usage_by_tier.last_plan.stages
    assert plan.metrics == usage_by_tier.last_plan.metrics
    pd.testing.assert_frame_equal(out, _expected())


def test_runtime_counters_change_the_metrics(monkeypatch, tmp_path):
    usage_by_tier(_requests(), _tenants())
    before = usage_by_tier.last_plan.metrics

    path = tmp_path / "runtime.json"
    path.write_text(json.dumps({
        "bytes_moved": 4096, "bytes_shuffled": 1024,
        "notes": ["mpi_bytes=1048576"],
    }))
    monkeypatch.setenv(ENV_VAR, str(path))
    usage_by_tier(_requests(), _tenants())
    from_file = usage_by_tier.last_plan.metrics

    monkeypatch.setenv(ENV_VAR, '{"input_bytes": 8192, "cache_reuse": 0.5}')
    usage_by_tier(_requests(), _tenants())
    inline = usage_by_tier.last_plan.metrics

    assert before.runtime_bytes_moved is None
    assert (from_file.runtime_bytes_moved, from_file.runtime_shuffle_bytes,
            from_file.runtime_notes) == (4096, 1024, ("mpi_bytes=1048576",))
    assert (inline.runtime_bytes_moved, inline.runtime_l2_reuse,
            inline.runtime_shuffle_bytes) == (8192, 0.5, None)
    # the estimates do not move
    assert from_file.shuffle_bytes == inline.shuffle_bytes == (
        before.shuffle_bytes)


def test_invalid_counters_fail_clearly(monkeypatch, tmp_path):
    path = tmp_path / "runtime.json"
    path.write_text('{"bytes_moved": 1,,}')

    monkeypatch.setenv(ENV_VAR, str(path))
    with pytest.raises(RuntimeMetricsError) as info:
        usage_by_tier(_requests(), _tenants())

    assert str(info.value) == (
        f"{ENV_VAR}={str(path)!r}: invalid JSON at line 1, column 19: "
        "Expecting property name enclosed in double quotes"
    )
