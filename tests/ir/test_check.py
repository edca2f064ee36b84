"""The IR checker, the printer and the error that shows the bad step."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from datajax.ir import (
    Agg,
    Aggregate,
    Assign,
    BinOp,
    Col,
    Filter,
    IRError,
    Join,
    Lit,
    Rename,
    Repartition,
    Schema,
    Select,
    Source,
    Trace,
    UnaryOp,
    check_trace,
    format_trace,
    join_output_names,
    lit,
)

LOGS = Source("logs", Schema((("user", "str"), ("bytes", "int64"))))
USERS = Source("users", Schema((("user", "str"), ("bytes", "int64"),
                                ("cc", "str"))))


def _error(*steps) -> str:
    with pytest.raises(IRError) as info:
        check_trace(Trace(steps))
    return str(info.value)


def test_printer_gives_stable_short_names():
    trace = Trace(
        (
            LOGS,
            USERS,
            Filter(0, BinOp("and", BinOp("gt", Col("bytes"), lit(0)),
                            UnaryOp("not", UnaryOp("isna", Col("user"))))),
            Assign(2, (("kb", BinOp("div", Col("bytes"), lit(1024.0))),
                       ("neg", UnaryOp("neg", Col("bytes"))))),
            Join(3, 1, "outer", ("user",), ("user",), ("", "_u")),
            Rename(4, (("cc", "country"),)),
            Aggregate(5, ("country",), (Agg("kb", "mean", "avg kb"),),
                      dropna=False),
            Repartition(6, ("country",), "data"),
            Select(7, ("country",)),
        )
    )

    assert format_trace(trace) == "\n".join(
        [
            "t0 = source 'logs' {user: str, bytes: int64}",
            "t1 = source 'users' {user: str, bytes: int64, cc: str}",
            "t2 = filter t0 where ((bytes > 0) & ~isna(user))",
            "t3 = assign t2 kb = (bytes / 1024.0), neg = -bytes",
            "t4 = join outer t3, t1 on [user] suffixes ('', '_u')",
            "t5 = rename t4 {cc -> country}",
            "t6 = aggregate t5 by [country] {'avg kb' = mean(kb)} "
            "keep_null_keys",
            "t7 = repartition t6 by_key(country) over 'data'",
            "t8 = select t7 [country]",
            "return t8",
        ]
    )
    cols = check_trace(trace)
    assert cols[4] == ("user", "bytes", "kb", "neg", "bytes_u", "cc")
    assert cols[6] == ("country", "avg kb")


def test_error_marks_the_bad_step_with_context():
    message = _error(
        LOGS,
        Filter(0, BinOp("gt", Col("bytes"), lit(1))),
        Select(1, ("user",)),
        Filter(2, BinOp("gt", Col("bytes"), lit(2))),
        Select(3, ("user",)),
    )

    assert message == "\n".join(
        [
            "step 3 (filter): predicate.left: column 'bytes' not found; "
            "the table has ['user']",
            "    t1 = filter t0 where (bytes > 1)",
            "    t2 = select t1 [user]",
            "  > t3 = filter t2 where (bytes > 2)",
            "    t4 = select t3 [user]",
        ]
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (Select(0, ("nope",)), "columns: column 'nope' not found"),
        (Select(0, ("user", "user")), "columns lists ['user'] more than"),
        (Select(0, ()), "columns must be a non-empty tuple"),
        (Rename(0, (("user", "bytes"),)), "duplicate columns ['bytes']"),
        (Rename(0, ()), "the mapping is empty"),
        (Filter(0, Lit(True, "bool")), "the predicate reads no column"),
        (Filter(0, BinOp("pow", Col("bytes"), lit(2))),
         "unknown operator 'pow'"),
        (Filter(0, UnaryOp("not", Lit(True, "bool"))),
         "the operator 'not' reads no column"),
        (Assign(0, (("a", lit(1)), ("a", lit(2)))),
         "columns ['a'] are assigned twice"),
        (Assign(0, (("a", Lit(1.5, "int")),)),
         "literal 1.5 does not match its type 'int'"),
        (Assign(0, (("a", Lit(float("nan"), "float")),)),
         "NaN and infinity are not allowed"),
        (Aggregate(0, ("user",), ()), "needs at least one reduction"),
        (Aggregate(0, ("user",), (Agg("bytes", "median", "m"),)),
         "unknown reduction 'median'"),
        (Aggregate(0, ("user",), (Agg("bytes", "sum", "user"),)),
         "output columns ['user'] appear twice"),
        (Repartition(0, ("region",)), "keys: column 'region' not found"),
        (Filter(3, Col("user")), "src=3 must name an earlier step (0 .. 0)"),
        (Filter(True, Col("user")), "src=True must name an earlier step"),
    ],
)
def test_broken_rules(step, expected):
    message = _error(LOGS, step)

    assert message.startswith("step 1 (")
    assert expected in message.splitlines()[0]


@pytest.mark.parametrize(
    ("join", "expected"),
    [
        (Join(0, 1, "cross", ("user",), ("user",)), "how='cross' is not"),
        (Join(0, 1, "inner", ("user",), ("user", "cc")),
         "must have the same length"),
        (Join(0, 1, "inner", ("cc",), ("cc",)), "left_on: column 'cc'"),
        (Join(0, 1, "inner", ("user",), ("user",), ("_a", "_a")),
         "columns ['bytes'] are on both sides and the suffixes"),
    ],
)
def test_join_rules(join, expected):
    assert expected in _error(LOGS, USERS, join).splitlines()[0]


def test_suffix_collision_names_the_clashing_column():
    left = Source("l", Schema((("k", "int64"), ("v", "int64"),
                               ("v_x", "int64"))))
    right = Source("r", Schema((("k", "int64"), ("v", "int64"))))

    message = _error(left, right, Join(0, 1, "inner", ("k",), ("k",)))

    assert message.splitlines()[0] == (
        "step 2 (join): the suffixes ('_x', '_y') give output columns "
        "['v_x'] twice (a suffixed name is already a column); choose "
        "other suffixes, or rename or select the columns first"
    )


def test_duplicate_source_names_are_refused():
    assert "already bound by step 0" in _error(LOGS, LOGS)


def test_empty_trace_and_foreign_steps():
    assert "has no steps" in _error()
    assert "is not a DataJAX step" in _error(LOGS, "filter")


@pytest.mark.parametrize(
    ("left", "right", "left_on", "right_on"),
    [
        (("k", "a", "b"), ("k", "a", "c"), ("k",), ("k",)),
        (("a", "b", "c"), ("b", "a", "c"), ("a", "b"), ("b", "a")),
        (("a", "b", "c"), ("b", "a", "c"), ("a", "b"), ("a", "c")),
        (("k", "a"), ("kk", "k"), ("k",), ("kk",)),
        (("a", "b"), ("a", "b"), ("a", "a"), ("a", "b")),
        (("x", "y"), ("x", "y"), ("x", "y"), ("x", "y")),
    ],
)
def test_join_names_match_pandas(left, right, left_on, right_on):
    lf = pd.DataFrame({c: pd.Series([], dtype="int64") for c in left})
    rf = pd.DataFrame({c: pd.Series([], dtype="int64") for c in right})
    expected = pd.merge(lf, rf, left_on=list(left_on),
                        right_on=list(right_on), suffixes=("_l", "_r"))

    names, _, _ = join_output_names(left, right, left_on, right_on,
                                    ("_l", "_r"))

    assert list(names) == list(expected.columns)


def test_nodes_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOGS.name = "other"  # type: ignore[misc]


def test_lit_rejects_what_json_cannot_hold():
    with pytest.raises(ValueError, match="not finite"):
        lit(float("inf"))
    with pytest.raises(TypeError, match="cannot use b'x'"):
        lit(b"x")
    assert lit(True) != lit(1)
    assert lit(1) != lit(1.0)
