"""Staged policies: bounds, sources and the direction each counter drives.

Property tests over random plan metrics: every knob stays on its grid
and within its bounds; each runtime counter moves only the knob it
drives, in the documented direction; runtime values win over estimates.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datajax.planner.metrics import PlanMetrics
from datajax.planner.policy import (
    BK_MAX,
    BK_MIN,
    BM_MAX,
    BM_MIN,
    BN_MAX,
    BN_MIN,
    STAGE_DEPTH_MAX,
    STAGE_DEPTH_MIN,
    SWIZZLE_SIZES,
    TILE_MULTIPLE,
    tune_policy,
)

KNOBS = ("BM", "BN", "BK", "swizzle_size", "stage_depth")
SOURCES = {"runtime", "estimate", "default"}

fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
byte_counts = st.integers(min_value=0, max_value=2**62)


@st.composite
def plan_metrics(draw, runtime: bool | None = None):
    """PlanMetrics as the planner could make them; runtime values maybe."""
    columns = draw(st.lists(
        st.text("abcdefgh", min_size=1, max_size=4),
        max_size=40, unique=True,
    ))
    usage = {c: draw(st.integers(0, 6)) for c in columns}
    with_runtime = draw(st.booleans()) if runtime is None else runtime

    def maybe(strategy):
        if not with_runtime:
            return None
        return draw(st.one_of(st.none(), strategy))

    return PlanMetrics(
        estimated_input_rows=draw(st.integers(0, 10**12)),
        estimated_input_bytes=draw(byte_counts),
        shuffle_bytes=draw(byte_counts),
        row_width=draw(st.integers(0, 10**6)),
        occupancy_proxy=draw(fractions),
        l2_reuse_proxy=draw(fractions),
        column_usage=usage,
        runtime_bytes_moved=maybe(byte_counts),
        runtime_shuffle_bytes=maybe(byte_counts),
        runtime_wgmma_occupancy=maybe(fractions),
        runtime_l2_reuse=maybe(fractions),
    )


world_sizes = st.integers(1, 4096)


def knobs(policy) -> dict[str, int]:
    return {k: getattr(policy, k) for k in KNOBS}


def others(policy, knob: str) -> dict[str, int]:
    return {k: v for k, v in knobs(policy).items() if k != knob}


# ---------------------------------------------------------------------------
# bounds and grid


@settings(max_examples=300, deadline=None)
@given(plan_metrics(), world_sizes)
def test_every_knob_stays_on_its_grid_and_in_bounds(metrics, world):
    policy = tune_policy(metrics, world)

    assert BM_MIN <= policy.BM <= BM_MAX
    assert BN_MIN <= policy.BN <= BN_MAX
    assert BK_MIN <= policy.BK <= BK_MAX
    for tile in (policy.BM, policy.BN, policy.BK):
        assert tile % TILE_MULTIPLE == 0
    assert policy.swizzle_size in SWIZZLE_SIZES
    assert STAGE_DEPTH_MIN <= policy.stage_depth <= STAGE_DEPTH_MAX
    for knob in KNOBS:
        assert any(n.startswith(f"{knob}=") for n in policy.notes), knob
    for value in policy.inputs.values():
        assert value.source in SOURCES
    # JSON-safe, no NaN
    json.dumps(policy.to_dict(), allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(plan_metrics(), world_sizes)
def test_the_same_inputs_give_the_same_policy(metrics, world):
    copy = dataclasses.replace(metrics, column_usage=dict(
        reversed(list(metrics.column_usage.items()))
    ))
    assert tune_policy(metrics, world) == tune_policy(copy, world)


# ---------------------------------------------------------------------------
# each runtime counter drives one knob, in one direction


@settings(max_examples=200, deadline=None)
@given(plan_metrics(), world_sizes, fractions, fractions)
def test_occupancy_drives_bk_upwards_only(metrics, world, a, b):
    low, high = sorted((a, b))
    first = tune_policy(
        dataclasses.replace(metrics, runtime_wgmma_occupancy=low), world
    )
    second = tune_policy(
        dataclasses.replace(metrics, runtime_wgmma_occupancy=high), world
    )

    assert first.BK <= second.BK
    assert others(first, "BK") == others(second, "BK")
    assert second.inputs["occupancy"].source == "runtime"
    assert second.inputs["occupancy"].value == high


@settings(max_examples=200, deadline=None)
@given(plan_metrics(), world_sizes, fractions, fractions)
def test_l2_reuse_drives_swizzle_upwards_only(metrics, world, a, b):
    low, high = sorted((a, b))
    first = tune_policy(
        dataclasses.replace(metrics, runtime_l2_reuse=low), world
    )
    second = tune_policy(
        dataclasses.replace(metrics, runtime_l2_reuse=high), world
    )

    assert first.swizzle_size <= second.swizzle_size
    assert others(first, "swizzle_size") == others(second, "swizzle_size")
    assert second.inputs["l2_reuse"].source == "runtime"


@settings(max_examples=200, deadline=None)
@given(plan_metrics(), world_sizes, byte_counts, byte_counts, byte_counts)
def test_shuffle_bytes_raise_and_bytes_moved_lower_stage_depth(
    metrics, world, moved, a, b
):
    low, high = sorted((a, b))

    def depth_policy(shuffle, bytes_moved):
        return tune_policy(
            dataclasses.replace(
                metrics,
                runtime_shuffle_bytes=shuffle,
                runtime_bytes_moved=bytes_moved,
            ),
            world,
        )

    less, more = depth_policy(low, moved), depth_policy(high, moved)
    assert less.stage_depth <= more.stage_depth
    assert others(less, "stage_depth") == others(more, "stage_depth")

    small, large = depth_policy(moved, low), depth_policy(moved, high)
    assert small.stage_depth >= large.stage_depth
    assert others(small, "stage_depth") == others(large, "stage_depth")
    assert more.inputs["shuffle_bytes"].source == "runtime"
    assert more.inputs["bytes_moved"].source == "runtime"


@settings(max_examples=100, deadline=None)
@given(plan_metrics(runtime=False), world_sizes)
def test_each_counter_moves_its_knob_across_its_whole_range(metrics, world):
    def with_counters(**counters):
        return tune_policy(dataclasses.replace(metrics, **counters), world)

    assert with_counters(runtime_wgmma_occupancy=0.0).BK == BK_MIN
    assert with_counters(runtime_wgmma_occupancy=1.0).BK == BK_MAX
    assert with_counters(runtime_l2_reuse=0.0).swizzle_size == 1
    assert with_counters(runtime_l2_reuse=1.0).swizzle_size == 16
    none = with_counters(runtime_shuffle_bytes=0, runtime_bytes_moved=10)
    assert none.stage_depth == STAGE_DEPTH_MIN
    half = with_counters(runtime_shuffle_bytes=5, runtime_bytes_moved=10)
    assert half.stage_depth == STAGE_DEPTH_MAX


@settings(max_examples=200, deadline=None)
@given(plan_metrics(runtime=False), world_sizes, world_sizes)
def test_more_ranks_never_raise_bm(metrics, a, b):
    few, many = sorted((a, b))
    first, second = tune_policy(metrics, few), tune_policy(metrics, many)

    assert first.BM >= second.BM
    assert others(first, "BM") == others(second, "BM")


@settings(max_examples=200, deadline=None)
@given(plan_metrics(runtime=False), world_sizes,
       st.integers(1, 10**6), st.integers(1, 10**6))
def test_wider_rows_never_raise_bm(metrics, world, a, b):
    narrow, wide = sorted((a, b))
    first = tune_policy(dataclasses.replace(metrics, row_width=narrow), world)
    second = tune_policy(dataclasses.replace(metrics, row_width=wide), world)

    assert first.BM >= second.BM


# ---------------------------------------------------------------------------
# where each input comes from


def test_estimates_are_used_without_runtime_values():
    metrics = PlanMetrics(
        estimated_input_rows=10_000,
        estimated_input_bytes=400_000,
        shuffle_bytes=100_000,
        row_width=40,
        occupancy_proxy=0.3,
        l2_reuse_proxy=0.5,
        column_usage={"a": 2, "b": 1, "c": 0},
    )

    policy = tune_policy(metrics, 4)

    assert {n: v.source for n, v in policy.inputs.items()} == {
        "rows_per_rank": "estimate",
        "row_width": "estimate",
        "columns_read": "estimate",
        "occupancy": "estimate",
        "l2_reuse": "estimate",
        "shuffle_bytes": "estimate",
        "bytes_moved": "estimate",
    }
    assert policy.inputs["rows_per_rank"].value == 2500
    assert policy.BM == 256  # 32768 / 40 = 819 -> 256; share 2500
    assert policy.BN == 32  # two columns read
    assert policy.BK == 32  # round(8 * 0.3) = 2
    assert policy.swizzle_size == 4  # round(4 * 0.5) = 2
    assert policy.stage_depth == 4  # 2 + ceil(8 * 0.25)


def test_runtime_values_win_and_say_where_they_came_from():
    metrics = PlanMetrics(
        estimated_input_rows=100,
        estimated_input_bytes=4000,
        shuffle_bytes=0,
        row_width=40,
        occupancy_proxy=0.3,
        l2_reuse_proxy=0.0,
        column_usage={"a": 1},
        runtime_bytes_moved=1000,
        runtime_shuffle_bytes=1000,
        runtime_wgmma_occupancy=1.0,
        runtime_l2_reuse=1.0,
    )
    origins = {key: "--metrics-in m.json" for key in (
        "bytes_moved", "shuffle_bytes", "wgmma_occupancy", "l2_reuse",
    )}

    policy = tune_policy(metrics, 1, origins)

    for name in ("occupancy", "l2_reuse", "shuffle_bytes", "bytes_moved"):
        assert policy.inputs[name].source == "runtime"
        assert "m.json" in policy.inputs[name].origin
    assert (policy.BK, policy.swizzle_size, policy.stage_depth) == (
        128, 16, 6,
    )
    assert policy.BM == 112  # capped at ceil16(100 rows per rank)


def test_defaults_without_rows_or_columns():
    policy = tune_policy(PlanMetrics(), 2)

    assert (policy.BM, policy.BN, policy.BK) == (128, 64, 64)
    assert (policy.swizzle_size, policy.stage_depth) == (1, 2)
    for name in ("rows_per_rank", "row_width", "columns_read",
                 "occupancy", "l2_reuse"):
        assert policy.inputs[name].source == "default", name


def test_one_runtime_byte_counter_alone_is_not_mixed_with_estimates():
    metrics = PlanMetrics(
        estimated_input_bytes=1000, shuffle_bytes=0,
        runtime_shuffle_bytes=10**9,
    )

    policy = tune_policy(metrics, 2)

    assert policy.stage_depth == 2
    assert policy.inputs["shuffle_bytes"].source == "estimate"
    assert any("without its partner" in n for n in policy.notes)


def test_zero_bytes_moved_with_a_shuffle_gives_the_deepest_pipeline():
    metrics = PlanMetrics(runtime_shuffle_bytes=5, runtime_bytes_moved=0)

    assert tune_policy(metrics, 1).stage_depth == STAGE_DEPTH_MAX


@pytest.mark.parametrize("world", [0, -1, 1.5, True, "2"])
def test_world_size_must_be_a_positive_integer(world):
    with pytest.raises(ValueError, match="world_size"):
        tune_policy(PlanMetrics(), world)


def test_metrics_must_be_plan_metrics():
    with pytest.raises(TypeError, match="PlanMetrics"):
        tune_policy({"row_width": 4}, 1)
