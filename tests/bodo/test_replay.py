"""The Bodo replay path on one process: code, cache, errors, results."""

from __future__ import annotations

import os
import threading

import pandas as pd
import pytest

from datajax import djit
from datajax.ir import IRError
from datajax.runtime.base import ExecutionError
from datajax.runtime.bodo_backend import (
    BodoBackendError,
    BodoExecutor,
    bodo_source,
    write_module,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (
        "DATAJAX_EXECUTOR",
        "DATAJAX_USE_BODO_STUB",
        "DATAJAX_NATIVE_BODO",
        "DATAJAX_ALLOW_BODO_IMPORT",
        "DATAJAX_RUNTIME_METRICS",
    ):
        monkeypatch.delenv(name, raising=False)


def logs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "g": ["a", "b", "a", None, "c"],
            "v": [1.0, 2.0, None, 4.0, 0.5],
            "n": [1, 2, 3, 4, 5],
            "ok": [True, False, True, True, False],
        }
    )


def per_group(t):
    t = t[t["v"] > 0.75]
    return t.groupby("g", dropna=False).agg(
        total=("v", "sum"), avg=("v", "mean"), rows=("n", "count")
    )


# ---------------------------------------------------------------------------
# the generated code


def test_the_code_has_one_statement_per_step_and_no_star_star():
    plan = djit(per_group).lower(logs())

    source = bodo_source(plan.trace)

    assert "def datajax_plan(src0):" in source.text
    assert "# t1 = filter t0 where (v > 0.75)" in source.text
    assert "sort=False" in source.text
    # numba cannot compile dict unpacking into keyword arguments
    assert "**" not in source.text
    assert set(source.step_lines.values()) == {0, 1, 2}
    assert source.file_name.startswith("datajax_bodo_plan_")


def test_the_code_is_shown_with_the_plan():
    plan = djit(per_group).lower(logs())
    executor = BodoExecutor()

    text = executor.explain(plan)

    assert text.startswith("ExecutionPlan:")
    assert "executor=bodo: bodo.jit(spawn=False, cache=True)" in text
    assert executor.source_of(plan) in text


def test_same_plan_same_module_name():
    first = bodo_source(djit(per_group).lower(logs()).trace)
    second = bodo_source(djit(per_group).lower(logs().iloc[:2]).trace)

    assert first.digest == second.digest


# ---------------------------------------------------------------------------
# module files


def test_a_module_is_written_once(tmp_path):
    source = bodo_source(djit(per_group).lower(logs()).trace)

    path = write_module(source, tmp_path)
    stamp = path.stat().st_mtime_ns
    again = write_module(source, tmp_path)

    assert again == path
    assert path.read_text() == source.text
    assert path.stat().st_mtime_ns == stamp  # numba's cache keys on it


def test_a_damaged_module_is_replaced(tmp_path):
    source = bodo_source(djit(per_group).lower(logs()).trace)
    path = write_module(source, tmp_path)
    path.write_text(source.text[:20])

    write_module(source, tmp_path)

    assert path.read_text() == source.text


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    source = bodo_source(djit(per_group).lower(logs()).trace)
    start = threading.Barrier(8)
    paths = []

    def write():
        start.wait()
        paths.append(write_module(source, tmp_path))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(paths)) == 1
    assert paths[0].read_text() == source.text
    assert os.listdir(tmp_path) == [source.file_name]  # no temporaries


# ---------------------------------------------------------------------------
# running


def test_results_match_pandas_and_carry_no_bodo_tag():
    result = djit(per_group, executor="bodo")(logs())

    expected = djit(per_group, executor="pandas")(logs())
    pd.testing.assert_frame_equal(result, expected)
    assert getattr(result, "_bodo_meta", None) is None


def test_a_second_process_loads_the_compiled_plan(python_script):
    code = """
        import json, time
        import pandas as pd
        from datajax import djit
        from datajax.runtime import bodo_backend
        df = pd.DataFrame({"g": ["a", "b", "a"], "v": [1.0, 2.0, 4.0]})
        fn = djit(lambda t: t.groupby("g").agg(s=("v", "max")),
                  executor="bodo")
        started = time.perf_counter()
        out = fn(df)
        seconds = time.perf_counter() - started
        (func,) = bodo_backend._compiled.values()
        import os
        print(json.dumps({
            "s": out["s"].tolist(),
            "hits": sum(func.stats.cache_hits.values()),
            "misses": sum(func.stats.cache_misses.values()),
            "numba_cache": os.environ["NUMBA_CACHE_DIR"],
            "seconds": seconds,
        }))
    """
    first = python_script(code)
    second = python_script(code)

    assert first["s"] == second["s"] == [4.0, 2.0]
    assert first["misses"] == 1 and first["hits"] == 0
    assert second["hits"] == 1 and second["misses"] == 0
    # numba's cache went under DATAJAX_CACHE_DIR, not beside the code
    assert first["numba_cache"].endswith(os.path.join("cache", "numba"))


# ---------------------------------------------------------------------------
# what Bodo cannot do


def test_an_all_null_column_is_refused_naming_the_step():
    with pytest.raises(ExecutionError) as info:
        djit(lambda t: t.assign(x=None), executor="bodo")(logs())

    assert info.value.index == 1
    assert isinstance(info.value.cause, BodoBackendError)
    assert "bodo backend" in str(info.value)
    assert "all-null column 'x'" in str(info.value)


def test_a_step_bodo_cannot_compile_is_named():
    # pandas averages booleans; Bodo's group-by mean refuses them
    with pytest.raises(ExecutionError) as info:
        djit(
            lambda t: t.groupby("g").agg(share=("ok", "mean")),
            executor="bodo",
        )(logs())

    message = str(info.value)
    assert message.startswith("step 1 (aggregate) failed")
    assert "the bodo backend (bodo.jit) cannot run this aggregate step" in (
        message
    )
    assert "does not support boolean column" in message


def test_bad_plans_still_fail_in_the_planner():
    with pytest.raises(IRError):
        djit(lambda t: t.assign(x=t["g"] * t["ok"]), executor="bodo")(
            logs()
        )
