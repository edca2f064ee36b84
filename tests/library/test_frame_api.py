"""The Frame API, djit/pjit calls, tables by name and backend selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import datajax
from datajax import Frame, Resource, col, djit, pjit, shard
from datajax.ir import IRError, Lit, format_trace
from datajax.ir.serialize import trace_to_list
from datajax.runtime import (
    ExecutionError,
    Executor,
    PandasExecutor,
    executor_names,
    get_executor,
    register_executor,
    trace_to_source,
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("DATAJAX_RUNTIME_METRICS", raising=False)
    monkeypatch.setenv("DATAJAX_EXECUTOR", "pandas")


def _logs() -> pd.DataFrame:
    return pd.DataFrame(
        {"user": ["a", "b", "a", "c"], "size": [10, 2000, 3000, 5],
         "ok": [True, False, True, True]}
    )


def test_public_names():
    assert datajax.__version__ == "0.1.0"
    assert {"Frame", "Resource", "djit", "pjit", "shard"} <= set(
        datajax.__all__
    )
    assert shard.by_key("k").keys == ("k",)


# ---------------------------------------------------------------------------
# building expressions and steps


def test_expressions_record_as_written():
    f = Frame(_logs(), "logs")

    expr = f["size"] + f["size"] * 2 - 1
    cond = (f["size"] > 3) & ~f["ok"] | f["user"].isna()

    assert str(expr) == "((size + (size * 2)) - 1)"
    assert str(cond) == "(((size > 3) & ~ok) | isna(user))"
    assert str(10 / f["size"]) == "(10 / size)"
    assert repr(-f["size"]) == "ColumnExpr(-size)"


def test_numpy_scalars_become_python_literals():
    f = Frame(_logs(), "logs")

    node = (f["size"] > np.int64(3)).node

    assert node.right == Lit(3, "int")
    assert type(node.right.value) is int


def test_expressions_have_no_truth_value():
    f = Frame(_logs(), "logs")

    with pytest.raises(TypeError, match="combine conditions with & | ~"):
        if f["size"] > 1 and f["ok"]:
            pass


def test_missing_column_is_a_key_error():
    f = Frame(_logs(), "logs")

    with pytest.raises(KeyError, match="column 'bytes' not found; the "
                                       "frame has"):
        _ = f["bytes"]


def test_unsupported_values_in_expressions():
    f = Frame(_logs(), "logs")

    with pytest.raises(TypeError, match="cannot mix a Series"):
        _ = f["size"] + _logs()["size"]
    with pytest.raises(TypeError, match="cannot use"):
        _ = f["size"] + [1, 2]


def test_expression_from_another_frame_is_refused():
    f = Frame(_logs(), "logs")
    g = f.rename(columns={"user": "who"})

    with pytest.raises(ValueError) as info:
        _ = g[f["size"] > 1]

    assert str(info.value).startswith(
        "filter: the expression (size > 1) was built from t0, not from t1"
    )
    # a free column or a function works
    assert g[col("size") > 1].columns == ("who", "size", "ok")
    assert g[lambda d: d["size"] > 1].columns == ("who", "size", "ok")


def test_step_methods_and_columns():
    f = Frame(_logs(), "logs")

    assert f[["size", "user"]].columns == ("size", "user")
    assert f.select("ok").columns == ("ok",)
    assert f.drop("ok").columns == ("user", "size")
    assert f.rename({"user": "u"}).columns == ("u", "size", "ok")
    assert f.with_column("kb", f["size"] / 1024).columns[-1] == "kb"
    assert f.assign(size=0).columns == ("user", "size", "ok")
    assert list(f) == ["user", "size", "ok"]
    assert "size" in f
    assert repr(f) == "Frame(t0, columns=['user', 'size', 'ok'])"


def test_assign_groups_expressions_and_orders_functions():
    f = Frame(_logs(), "logs")

    out = f.assign(
        size=f["size"] + 1,
        old=f["size"],
        new=lambda d: d["size"],
    )

    assert format_trace(out.trace).splitlines()[1:3] == [
        "t1 = assign t0 size = (size + 1), old = size",
        "t2 = assign t1 new = size",
    ]
    result = out.to_pandas()
    assert result["old"].tolist() == [10, 2000, 3000, 5]
    assert result["new"].tolist() == [11, 2001, 3001, 6]


def test_assign_refuses_a_stale_read():
    f = Frame(_logs(), "logs")

    with pytest.raises(ValueError, match="reads 'size', which an earlier"):
        f.assign(
            size=lambda d: d["size"] * 2,
            half=lambda d: d["size"] / 2,
            copy=f["size"],
        )


def test_groupby_and_merge_argument_errors():
    f = Frame(_logs(), "logs")

    with pytest.raises(KeyError, match="group-by key 'nope'"):
        f.groupby("nope")
    with pytest.raises(ValueError, match="unknown reduction 'median'"):
        f.groupby("user").agg(m=("size", "median"))
    with pytest.raises(ValueError, match="needs a reduction"):
        f.groupby("user").agg()
    with pytest.raises(TypeError, match=r"agg\(m=...\) needs a \(column"):
        f.groupby("user").agg(m="sum")
    with pytest.raises(ValueError, match="how='cross' is not a join kind"):
        f.merge(f, on="user", how="cross")
    with pytest.raises(ValueError, match="merge needs keys"):
        f.merge(f, left_on="user")
    with pytest.raises(ValueError, match="not both"):
        f.merge(f, on="user", left_on="user", right_on="user")
    with pytest.raises(ValueError, match="two different tables are named"):
        f.merge(Frame(_logs(), "logs"), on="user")
    with pytest.raises(TypeError, match="needs a Frame on the right"):
        f.merge(_logs(), on="user")


def test_ir_errors_show_the_steps_so_far():
    f = Frame(_logs(), "logs")
    g = f[f["size"] > 1]

    with pytest.raises(IRError) as info:
        g.rename(columns={"user": "size"})

    assert str(info.value) == "\n".join(
        [
            "step 2 (rename): renaming gives duplicate columns ['size']; "
            "choose new names that are not already taken",
            "    t0 = source 'logs' {user: str, size: int64, ok: bool}",
            "    t1 = filter t0 where (size > 1)",
            "  > t2 = rename t1 {user -> size}",
        ]
    )


def test_frame_input_checks():
    with pytest.raises(ValueError, match=r"named index \['user'\]"):
        Frame(_logs().set_index("user"), "logs")
    with pytest.raises(TypeError, match="column names must be strings"):
        Frame(pd.DataFrame({0: [1]}), "t")
    with pytest.raises(ValueError, match=r"repeated columns \['a'\]"):
        Frame(pd.DataFrame([[1, 2]], columns=["a", "a"]), "t")


def test_frames_of_separate_traces_join():
    users = pd.DataFrame({"user": ["a", "b"], "cc": ["de", "fr"]})
    f = Frame(_logs(), "logs")
    u = Frame(users, "users")
    u = u[u["cc"] != "fr"]
    abstract = Frame.source("extra", {"user": "str", "w": "int64"})

    joined = f.merge(u, on="user").merge(abstract, on="user", how="left")
    extra = pd.DataFrame({"user": ["a"], "w": [7]})
    out = joined.to_pandas(tables={"extra": extra})

    assert joined.trace.sources == ("logs", "users", "extra")
    assert out.to_dict("list") == {
        "user": ["a", "a"], "size": [10, 3000], "ok": [True, True],
        "cc": ["de", "de"], "w": [7, 7],
    }
    # the frames that were joined in are unchanged
    assert u.trace.sources == ("users",)


def test_frames_outside_djit_run_with_to_pandas():
    df = _logs()
    f = Frame(df, "logs")

    out = f[f["size"] > 8].groupby("user").agg(n=("size", "count"))

    assert out.to_pandas().to_dict("list") == {"user": ["a", "b"],
                                               "n": [2, 1]}
    assert "stage s0_scan_logs" in out.explain()


# ---------------------------------------------------------------------------
# djit calls


def test_djit_wraps_dataframes_and_passes_other_arguments():
    @djit
    def top(logs, limit, *, column="size"):
        return logs[logs[column] > limit]

    out = top(_logs(), 100, column="size")

    assert out["size"].tolist() == [2000, 3000]
    assert out.index.equals(pd.RangeIndex(2))
    assert top.last_trace.sources == ("logs",)
    assert top.__name__ == "top"


def test_var_positional_tables_are_named_by_position():
    @djit
    def union_keys(*frames):
        return frames[0].merge(frames[1], on="user")

    trace = union_keys.trace(_logs(), _logs()[["user"]])

    assert trace.sources == ("frames0", "frames1")


def test_djit_must_return_a_frame_of_its_inputs():
    with pytest.raises(TypeError, match="must return a Frame made from"):
        djit(lambda logs: 3)(_logs())
    with pytest.raises(TypeError, match="must return a Frame made from"):
        djit(lambda logs: Frame(_logs(), "x"))(_logs())
    with pytest.raises(TypeError, match="argument 'logs' is a Frame"):
        djit(lambda logs: logs)(Frame(_logs()))


def test_to_pandas_inside_djit_is_refused():
    with pytest.raises(RuntimeError, match="cannot run inside a djit"):
        djit(lambda logs: logs.to_pandas())(_logs())


def test_the_tables_parameter_name_is_reserved():
    def fn(tables):
        return tables

    with pytest.raises(ValueError, match="parameter named 'tables'"):
        djit(fn)


def test_tables_by_name_are_not_embedded_in_the_trace():
    secret = "do-not-embed-this-value"
    users = pd.DataFrame({"user": ["a"], "note": [secret]})

    @djit
    def enrich(logs):
        return logs.merge(Frame.source("users"), on="user", how="left")

    out = enrich(_logs(), tables={"users": users})
    text = json.dumps(trace_to_list(enrich.last_trace))

    assert out["note"].tolist()[0] == secret
    assert secret not in text
    assert '"kind": "source", "name": "users"' in text


def test_missing_named_table():
    @djit
    def enrich(logs):
        return logs.merge(Frame.source("users"), on="user")

    with pytest.raises(ValueError) as info:
        enrich(_logs())

    assert str(info.value).startswith(
        "Frame.source('users'): no table of that name in this call; pass "
        "it as tables={'users': df}"
    )


def test_a_table_given_twice_is_refused():
    @djit
    def same(logs):
        return logs

    with pytest.raises(ValueError, match="both as an argument and in"):
        same(_logs(), tables={"logs": _logs()})


def test_explain_needs_a_call_or_arguments():
    @djit
    def f(logs):
        return logs[["user"]]

    with pytest.raises(RuntimeError, match="has not been called yet"):
        f.explain()
    assert "t1 = select t0 [user]" in f.explain(_logs())
    assert f.last_plan is not None


def test_pjit_keeps_resources_in_the_plan():
    @pjit(out_shardings=shard.by_key("user"),
          resources=Resource(mesh_axes=("data", "model"), world_size=6))
    def f(logs):
        return logs

    out = f(_logs())

    assert f.last_plan.resources.world_size == 6
    assert f.last_plan.sharding == shard.by_key("user")
    pd.testing.assert_frame_equal(out, _logs())


def test_run_time_errors_name_the_step():
    df = pd.DataFrame({"a": pd.Series([1, 2], dtype="object")})

    with pytest.raises(ExecutionError) as info:
        djit(lambda t: t.assign(b=t["a"] - "x"))(df)

    assert str(info.value).startswith("step 1 (assign) failed: TypeError")
    assert "t1 = assign t0 b = (a - 'x')" in str(info.value)


# ---------------------------------------------------------------------------
# backends


def test_executor_selection(monkeypatch):
    assert isinstance(get_executor(), PandasExecutor)
    assert get_executor("pandas-codegen").name == "pandas-codegen"
    assert {"pandas", "pandas-codegen"} <= set(executor_names())

    monkeypatch.setenv("DATAJAX_EXECUTOR", "pandas-codegen")
    assert get_executor().name == "pandas-codegen"

    monkeypatch.setenv("DATAJAX_EXECUTOR", "spark")
    with pytest.raises(ValueError) as info:
        djit(lambda t: t)(_logs())
    assert str(info.value).startswith(
        "unknown executor DATAJAX_EXECUTOR='spark'; choose one of"
    )


def test_registering_a_backend():
    class Recording(Executor):
        name = "recording-test"

        def __init__(self):
            self.plans = []

        def run(self, plan, tables):
            self.plans.append(plan)
            return PandasExecutor().run(plan, tables)

    register_executor("recording-test", Recording)
    with pytest.raises(ValueError, match="already registered"):
        register_executor("recording-test", Recording)

    out = djit(lambda t: t[["user"]], executor="recording-test")(_logs())

    backend = get_executor("recording-test")
    assert out.columns.tolist() == ["user"]
    assert [len(p.trace) for p in backend.plans] == [2]


def test_generated_source_is_plain_pandas():
    f = Frame(_logs(), "logs")
    g = f[f["size"] > 5].assign(kb=lambda d: d["size"] / 1024)
    g = g.merge(f, on="user", how="left").groupby("user").agg(
        n=("kb", "count"))

    source = trace_to_source(g.trace)

    assert source.splitlines()[0] == "def datajax_plan(src0):"
    assert "    t1 = t0[(t0['size'] > 5).fillna(False).astype(bool)]" in (
        source.splitlines()
    )
    assert ("    t3 = pd.merge(t2, t0, how='left', on=['user'], "
            "suffixes=('_x', '_y'))") in source.splitlines()
    assert source.splitlines()[-1] == "    return t4.reset_index(drop=True)"
