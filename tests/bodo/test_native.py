"""The native path (bodo.pandas) with one, two and three spawned workers.

Bodo's spawner starts its workers once per process, with
``BODO_NUM_WORKERS`` of them, so each worker count runs in its own
process. The parity suite (tests/library) runs the native path too,
with Bodo's default worker count.
"""

from __future__ import annotations

import pytest

NATIVE_PLANS = """
    import json
    import pandas as pd
    from datajax import djit, shard
    from tests.library.test_parity import canonical, left, right

    def columns(t):
        t = t.assign(r=t["v"] / t["n"], text=t["g"] != "b",
                     gone=t["k"].isna())
        return t[((t["v"] > 0) & t["flag"]) | ~(t["n"] < 4)]

    def groups(t):
        return t.groupby(["g", "k"], dropna=False).agg(
            total=("v", "sum"), avg=("v", "mean"), n=("g", "count"))

    def join(how):
        return lambda a, b: a.merge(b, on=["k", "g"], how=how,
                                    suffixes=("_l", None))

    def pipeline(a, b):
        a = a.repartition(shard.by_key("g"))
        a = a[a["n"] > 1]
        a = a.assign(score=a["v"] * 2)
        j = a.merge(b, on=["g", "k"], how="left", suffixes=("", "_r"))
        return j.groupby("g", dropna=False).agg(best=("v_r", "max"))

    cases = {"columns": (columns, [left()]), "groups": (groups, [left()]),
             "pipeline": (pipeline, [left(), right()])}
    for how in ("inner", "left", "right", "outer"):
        cases[f"join_{how}"] = (join(how), [left(), right()])

    failed = {}
    for name, (fn, tables) in cases.items():
        got = djit(fn, executor="bodo-native")(*tables)
        want = djit(fn, executor="pandas")(*tables)
        try:
            pd.testing.assert_frame_equal(canonical(got), canonical(want))
        except AssertionError as exc:
            failed[name] = str(exc)

    import bodo.spawn.spawner
    workers = bodo.spawn.spawner.get_spawner().worker_intercomm
    print(json.dumps({"failed": failed, "cases": len(cases),
                      "workers": workers.Get_remote_size()}))
"""


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_native_plans_match_pandas(python_script, workers):
    got = python_script(NATIVE_PLANS, env={"BODO_NUM_WORKERS": str(workers)})

    assert got["workers"] == workers
    assert got["cases"] == 7
    assert got["failed"] == {}


def test_a_fallback_to_pandas_is_an_error_naming_step_and_backend():
    import pandas as pd

    from datajax import djit
    from datajax.runtime.base import ExecutionError

    df = pd.DataFrame({"g": ["a", "b"], "ok": [True, False]})
    with pytest.raises(ExecutionError) as info:
        djit(
            lambda t: t.groupby("g").agg(share=("ok", "mean")),
            executor="bodo-native",
        )(df)

    message = str(info.value)
    assert message.startswith("step 1 (aggregate) failed")
    assert "the bodo-native backend (bodo.pandas) cannot run this " in message
    assert "Bodo would fall back to pandas" in message
