"""The Bodo replay backend inside one MPI world, against pandas.

Run by tests/test_mpi_worlds.py at 1, 2 and 3 ranks. Every rank builds
the same tables, passes its own contiguous share of each (shares are
empty where there are more ranks than rows) and gets the whole result
back; it must equal the pandas executor on the whole tables, after a
deterministic sort where pandas leaves the order open.

Compiling is the slow part (seconds per plan), so the plans are few and
fixed and the data varies: each plan compiles once per session, or
loads from the cache folder when an earlier session (e.g. the 1-rank
world) compiled it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from datajax import djit, shard
from datajax.runtime.bodo_backend import BodoExecutor

# the first test of a plan compiles it: far above a warm run, far below
# a hang (the world itself is bounded by MPIEXEC_TIMEOUT)
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(150)]

WORLD = MPI.COMM_WORLD


# ---------------------------------------------------------------------------
# data: same dtypes in every data set, so one compiled plan fits all


def logs(rows: int, seed: int) -> pd.DataFrame:
    """A table like the parity suite's ``left``, with nulls."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 4, rows).astype("float64")
    k[rng.random(rows) < 0.2] = np.nan
    v = rng.normal(size=rows).round(3)
    v[rng.random(rows) < 0.2] = np.nan
    g = pd.Series(rng.choice(["a", "b", "c"], rows), dtype="str")
    g[rng.random(rows) < 0.2] = None
    return pd.DataFrame(
        {
            "k": k,
            "g": g,
            "v": v,
            "n": rng.integers(-5, 50, rows).astype("int64"),
            "flag": rng.random(rows) < 0.5,
        }
    )


def users(rows: int, seed: int) -> pd.DataFrame:
    """A table like the parity suite's ``right``."""
    rng = np.random.default_rng(seed + 1000)
    k = rng.integers(0, 5, rows).astype("float64")
    k[rng.random(rows) < 0.2] = np.nan
    g = pd.Series(rng.choice(["a", "b", "d"], rows), dtype="str")
    g[rng.random(rows) < 0.2] = None
    v = rng.normal(size=rows).round(3)
    return pd.DataFrame(
        {
            "k": k,
            "g": g,
            "w": rng.integers(0, 100, rows).astype("int64"),
            "v": v,
        }
    )


def typed(rows: int, seed: int) -> pd.DataFrame:
    """Extension dtypes: categorical, nullable int, string, datetime."""
    rng = np.random.default_rng(seed + 2000)
    missing = rng.random(rows) < 0.25
    num = pd.array(rng.integers(0, 9, rows), dtype="Int64")
    num[missing] = pd.NA
    txt = pd.array(rng.choice(["x", "y", "z"], rows), dtype="string")
    txt[rng.random(rows) < 0.25] = pd.NA
    when = pd.to_datetime("2024-01-01") + pd.to_timedelta(
        rng.integers(0, 5, rows), unit="D"
    )
    return pd.DataFrame(
        {
            "key": pd.Categorical(
                rng.choice(["p", "q", "r"], rows), categories=["r", "q", "p"]
            ),
            "num": num,
            "txt": txt,
            "when": when,
        }
    )


# (rows of logs, rows of users, seed): one row and two rows leave ranks
# without data at 2 and 3 ranks; no rows at all is valid too
SIZES = [(0, 0, 1), (1, 2, 2), (2, 1, 3), (7, 5, 4), (150, 40, 5)]
SIZE_IDS = [f"{a}x{b}" for a, b, _ in SIZES]


def share(df: pd.DataFrame) -> pd.DataFrame:
    """This rank's contiguous share of a table."""
    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    rows = len(df)
    return df.iloc[rank * rows // size : (rank + 1) * rows // size]


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(
        list(df.columns), na_position="last", kind="mergesort"
    ).reset_index(drop=True)


def check(fn, tables, ordered=False, executor="bodo"):
    """Run ``fn`` on this rank's shares; compare with pandas on all."""
    expected = djit(fn, executor="pandas")(*tables)
    result = djit(fn, executor=executor)(*[share(t) for t in tables])
    if ordered:
        pd.testing.assert_frame_equal(result, expected)
    else:
        pd.testing.assert_frame_equal(canonical(result), canonical(expected))
    return result


# ---------------------------------------------------------------------------
# the plans


def columns_and_filter(t):
    t = t.assign(
        add=t["v"] + t["n"],
        ratio=t["v"] / t["n"],
        neg=-t["v"],
        big=t["v"] > 0.5,
        text=t["g"] != "b",
        missing=t["k"].isna(),
    )
    return t[((t["v"] > 0) & t["flag"]) | ~(t["n"] < 20)]


def group_with_null_keys(t):
    return t.groupby(["g", "k"], dropna=False).agg(
        total=("v", "sum"),
        n=("v", "count"),
        avg=("v", "mean"),
        lo=("v", "min"),
        hi=("n", "max"),
        names=("g", "count"),
    )


def group_text(t):
    return t.groupby("flag").agg(
        first=("g", "min"), last=("g", "max"), total=("n", "sum")
    )


def typed_groups(t):
    t = t.assign(twice=t["num"] * 2, late=t["when"] > "2024-01-02")
    return t.groupby("key").agg(
        total=("twice", "sum"), last=("when", "max"), n=("txt", "count")
    )


def join(how):
    def fn(lt, rt):
        return lt.merge(rt, on=["k", "g"], how=how, suffixes=("_l", None))

    fn.__name__ = f"join_{how}"
    return fn


def pipeline(lt, rt):
    lt = lt.repartition(shard.by_key("g"))
    big = lt[lt["n"] > 1]
    big = big.assign(score=big["v"] * big["n"])
    joined = big.merge(rt, on=["g", "k"], how="left", suffixes=("", "_r"))
    return joined.groupby("g", dropna=False).agg(
        total=("score", "sum"), hits=("w", "count"), best=("v_r", "max")
    )


# ---------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("rows", "_", "seed"), SIZES, ids=SIZE_IDS)
def test_columns_and_filter_keep_row_order(rows, _, seed):
    check(columns_and_filter, [logs(rows, seed)], ordered=True)


@pytest.mark.parametrize(("rows", "_", "seed"), SIZES, ids=SIZE_IDS)
def test_group_by_with_null_keys(rows, _, seed):
    result = check(group_with_null_keys, [logs(rows, seed)], ordered=True)

    # the groups are spread over the ranks before the gather
    assert result["n"].sum() == logs(rows, seed)["v"].notna().sum()


@pytest.mark.parametrize(("rows", "_", "seed"), SIZES, ids=SIZE_IDS)
def test_group_by_text(rows, _, seed):
    check(group_text, [logs(rows, seed)], ordered=True)


@pytest.mark.parametrize(("rows", "_", "seed"), SIZES, ids=SIZE_IDS)
def test_extension_dtypes(rows, _, seed):
    check(typed_groups, [typed(rows, seed)], ordered=True)


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize(("rows", "urows", "seed"), SIZES, ids=SIZE_IDS)
def test_joins_with_null_keys(how, rows, urows, seed):
    check(join(how), [logs(rows, seed), users(urows, seed)])


@pytest.mark.parametrize(("rows", "urows", "seed"), SIZES, ids=SIZE_IDS)
def test_pipeline(rows, urows, seed):
    check(pipeline, [logs(rows, seed), users(urows, seed)], ordered=True)


@pytest.mark.parametrize(
    ("rows", "urows", "seed"), SIZES[2:], ids=SIZE_IDS[2:]
)
def test_local_parts_make_the_whole_result(rows, urows, seed):
    tables = [logs(rows, seed), users(urows, seed)]
    fn = join("outer")

    local = djit(fn, executor=BodoExecutor(result="local"))(
        *[share(t) for t in tables]
    )

    parts = WORLD.allgather(local)
    whole = pd.concat(parts, ignore_index=True)
    expected = djit(fn, executor="pandas")(*tables)
    pd.testing.assert_frame_equal(canonical(whole), canonical(expected))


def test_every_rank_gets_the_same_result():
    result = djit(pipeline, executor="bodo")(
        share(logs(150, 5)), share(users(40, 5))
    )

    results = WORLD.allgather(result)
    for other in results:
        pd.testing.assert_frame_equal(other, results[0])


def test_shares_of_different_dtypes_fail_on_every_rank():
    from datajax.runtime.bodo_backend import BodoBackendError

    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    part = share(logs(7, 4))
    if rank == size - 1 and size > 1:
        part = part.astype({"n": "float64"})
    fn = djit(columns_and_filter, executor="bodo")

    if size == 1:
        fn(part)
        return
    with pytest.raises(BodoBackendError, match=r"table 't' differs"):
        fn(part)
