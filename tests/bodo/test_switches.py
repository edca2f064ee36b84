"""The switches that pick and shape the Bodo backends."""

from __future__ import annotations

import pandas as pd
import pytest

from datajax import djit
from datajax.runtime import get_executor
from datajax.runtime.bodo_backend import (
    BodoExecutor,
    bodo_import_allowed,
    cache_dir,
    env_flag,
)
from datajax.runtime.bodo_native import BodoLaunchError, check_launch


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


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"g": ["a", "b", "a", None], "v": [1.0, 2.0, None, 4.0]}
    )


def totals(t):
    return t.groupby("g").agg(total=("v", "sum"))


# ---------------------------------------------------------------------------
# reading the switches


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("", False),
     ("no", False)],
)
def test_env_flag(value, expected):
    assert env_flag("X", {"X": value}) is expected


def test_env_flag_rejects_other_values():
    with pytest.raises(ValueError, match=r"X='maybe' is not a switch"):
        env_flag("X", {"X": "maybe"})


def test_bodo_import_is_allowed_unless_switched_off():
    assert bodo_import_allowed({})
    assert bodo_import_allowed({"DATAJAX_ALLOW_BODO_IMPORT": "1"})
    assert not bodo_import_allowed({"DATAJAX_ALLOW_BODO_IMPORT": "0"})


def test_cache_dir_default_and_override(tmp_path):
    assert cache_dir({}).parts[-2:] == (".cache", "datajax")
    assert cache_dir({"DATAJAX_CACHE_DIR": str(tmp_path)}) == tmp_path


def test_executor_names_choose_the_bodo_backends(monkeypatch):
    monkeypatch.setenv("DATAJAX_EXECUTOR", "bodo")
    assert get_executor().name == "bodo"
    assert get_executor("bodo-native").name == "bodo-native"


def test_the_modes_of_the_bodo_executor():
    executor = BodoExecutor()
    assert executor.mode({}) == "replay"
    assert executor.mode({"DATAJAX_NATIVE_BODO": "1"}) == "native"
    # the stub wins: it never needs Bodo
    both = {"DATAJAX_NATIVE_BODO": "1", "DATAJAX_USE_BODO_STUB": "1"}
    assert executor.mode(both) == "stub"


def test_result_mode_is_checked():
    with pytest.raises(ValueError, match="'everywhere'"):
        BodoExecutor(result="everywhere")


# ---------------------------------------------------------------------------
# the stub and the import ban, in fresh processes (Bodo must stay out)


def test_the_stub_runs_pandas_without_bodo_and_says_so(python_script):
    got = python_script(
        """
        import json, sys
        import pandas as pd
        from datajax import djit
        from datajax.runtime import get_executor
        df = pd.DataFrame({"g": ["a", "b", "a"], "v": [1.0, 2.0, 4.0]})
        fn = djit(lambda t: t.groupby("g").agg(total=("v", "sum")))
        out = fn(df)
        notes = get_executor().annotate(fn.last_plan).metrics.notes
        print(json.dumps({
            "total": out["total"].tolist(),
            "bodo_imported": "bodo" in sys.modules,
            "notes": list(notes),
        }))
        """,
        env={
            "DATAJAX_EXECUTOR": "bodo",
            "DATAJAX_USE_BODO_STUB": "1",
            "DATAJAX_ALLOW_BODO_IMPORT": "0",
        },
    )

    assert got["total"] == [5.0, 2.0]
    assert not got["bodo_imported"]
    assert any("NOT Bodo" in note for note in got["notes"])


@pytest.mark.parametrize("name", ["bodo", "bodo-native"])
def test_forbidding_the_import_makes_choosing_bodo_an_error(
    python_script, name
):
    got = python_script(
        f"""
        import json, sys
        import pandas as pd
        from datajax import djit
        df = pd.DataFrame({{"v": [1.0]}})
        try:
            djit(lambda t: t[t["v"] > 0], executor={name!r})(df)
            error = None
        except Exception as exc:
            error = f"{{type(exc).__name__}}: {{exc}}"
        print(json.dumps({{
            "error": error, "bodo_imported": "bodo" in sys.modules,
        }}))
        """,
        env={"DATAJAX_ALLOW_BODO_IMPORT": "0"},
    )

    assert got["error"].startswith("BodoUnavailableError")
    assert "DATAJAX_ALLOW_BODO_IMPORT=0 forbids importing it" in got["error"]
    assert not got["bodo_imported"]


# ---------------------------------------------------------------------------
# the native path's launch check


def test_native_refuses_a_world_of_several_ranks():
    with pytest.raises(BodoLaunchError) as info:
        check_launch(3, {})

    message = str(info.value)
    assert "inside an MPI world of 3 ranks" in message
    assert "plain `python` process" in message
    assert "DATAJAX_EXECUTOR=bodo" in message


def test_native_refuses_an_srun_step_but_not_a_batch_script():
    with pytest.raises(BodoLaunchError, match="srun step"):
        check_launch(1, {"SLURM_STEP_ID": "0"})
    check_launch(1, {"SLURM_STEP_ID": "batch"})
    check_launch(1, {})


def test_native_switch_sends_the_bodo_executor_to_bodo_pandas(monkeypatch):
    monkeypatch.setenv("DATAJAX_NATIVE_BODO", "1")
    fn = djit(totals, executor="bodo")

    result = fn(frame())

    expected = djit(totals, executor="pandas")(frame())
    pd.testing.assert_frame_equal(result, expected)
    notes = BodoExecutor().annotate(fn.last_plan).metrics.notes
    assert any(n.startswith("executor=bodo-native") for n in notes)


def test_default_backend_is_real_bodo_wherever_it_imports(monkeypatch):
    from datajax.runtime import default_executor_name

    monkeypatch.delenv("DATAJAX_EXECUTOR", raising=False)

    assert default_executor_name({}) == "bodo"
    assert get_executor().name == "bodo"
    assert default_executor_name(
        {"DATAJAX_ALLOW_BODO_IMPORT": "0"}
    ) == "pandas"
