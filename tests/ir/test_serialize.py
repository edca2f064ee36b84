"""Trace serialization: exact JSON round trips and clear read errors."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datajax.ir import (
    BinOp,
    Col,
    IRError,
    Lit,
    Schema,
    Source,
    Trace,
    TraceFormatError,
    UnaryOp,
    format_trace,
)
from datajax.ir.check import step_columns
from datajax.ir.nodes import (
    AGG_FUNCS,
    BINARY_OPS,
    JOIN_HOWS,
    UNARY_OPS,
    Agg,
    Aggregate,
    Assign,
    Filter,
    Join,
    Rename,
    Repartition,
    Select,
    lit,
)
from datajax.ir.serialize import MAX_EXPR_DEPTH, trace_from_list, trace_to_list

# ---------------------------------------------------------------------------
# strategies: valid traces of every step and expression kind

NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
    min_size=1,
    max_size=5,
)
DTYPES = st.sampled_from(
    ["int64", "float64", "bool", "str", "object", "Int64", "datetime64[ns]"]
)
LITERALS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)


def column_exprs(columns):
    """Expressions whose every operator reads at least one column."""
    col = st.sampled_from(columns).map(Col)
    leaf = st.one_of(col, LITERALS.map(lit))

    def extend(inner):
        ops = st.sampled_from(sorted(BINARY_OPS))
        return st.one_of(
            st.builds(BinOp, ops, inner, st.one_of(leaf, inner)),
            st.builds(BinOp, ops, leaf, inner),
            st.builds(UnaryOp, st.sampled_from(sorted(UNARY_OPS)), inner),
        )

    return st.recursive(col, extend, max_leaves=6)


@st.composite
def schemas(draw):
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    return Schema(tuple((n, draw(DTYPES)) for n in names))


@st.composite
def traces(draw):
    steps: list = []
    columns: list = []

    def add(step) -> None:
        try:
            cols = step_columns([*steps, step], len(steps), columns)
        except IRError:
            return  # e.g. a rename onto a taken name: draw another step
        steps.append(step)
        columns.append(cols)

    for i in range(draw(st.integers(1, 3))):
        add(Source(f"table{i}", draw(schemas())))

    for _ in range(draw(st.integers(0, 8))):
        src = draw(st.integers(0, len(steps) - 1))
        cols = list(columns[src])
        some = st.lists(st.sampled_from(cols), min_size=1, unique=True)
        kind = draw(
            st.sampled_from(
                ["filter", "select", "rename", "assign", "aggregate",
                 "join", "repartition"]
            )
        )
        if kind == "filter":
            add(Filter(src, draw(column_exprs(cols))))
        elif kind == "select":
            add(Select(src, tuple(draw(some))))
        elif kind == "rename":
            old = draw(some)
            add(Rename(src, tuple((o, draw(NAMES)) for o in old)))
        elif kind == "assign":
            values = st.one_of(column_exprs(cols), LITERALS.map(lit))
            pairs = draw(
                st.lists(st.tuples(NAMES, values), min_size=1, max_size=3,
                         unique_by=lambda p: p[0])
            )
            add(Assign(src, tuple(pairs)))
        elif kind == "aggregate":
            aggs = tuple(
                Agg(draw(st.sampled_from(cols)),
                    draw(st.sampled_from(AGG_FUNCS)), draw(NAMES))
                for _ in range(draw(st.integers(1, 3)))
            )
            add(Aggregate(src, tuple(draw(some)), aggs, draw(st.booleans())))
        elif kind == "join":
            right = draw(st.integers(0, len(steps) - 1))
            n = draw(st.integers(1, 2))
            left_on = tuple(draw(st.sampled_from(cols)) for _ in range(n))
            right_on = tuple(
                draw(st.sampled_from(columns[right])) for _ in range(n)
            )
            suffixes = (draw(st.text(max_size=3)), draw(st.text(max_size=3)))
            how = draw(st.sampled_from(JOIN_HOWS))
            add(Join(src, right, how, left_on, right_on, suffixes))
        else:
            axis = draw(st.one_of(st.none(), NAMES))
            add(Repartition(src, tuple(draw(some)), axis))
    return Trace(tuple(steps))


# ---------------------------------------------------------------------------
# round trips


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(traces())
def test_round_trip_is_exact_through_json(trace):
    data = trace_to_list(trace)
    text = json.dumps(data, allow_nan=False, ensure_ascii=False)

    back = trace_from_list(json.loads(text))

    assert back == trace
    # byte-identical output also tells 1, 1.0, True and -0.0/0.0 apart
    assert json.dumps(trace_to_list(back), ensure_ascii=False) == text
    assert format_trace(back) == format_trace(trace)


def _sample_trace() -> Trace:
    schema = Schema((("user", "str"), ("bytes", "int64")))
    return Trace(
        (
            Source("logs", schema),
            Source("users", Schema((("user", "str"), ("cc", "str")))),
            Filter(0, BinOp("gt", Col("bytes"), Lit(1024, "int"))),
            Assign(
                2,
                (
                    ("kb", BinOp("div", Col("bytes"), Lit(1024.0, "float"))),
                    ("missing", UnaryOp("isna", Col("user"))),
                    ("flag", Lit(True, "bool")),
                ),
            ),
            Repartition(3, ("user",), "data"),
            Join(4, 1, "left", ("user",), ("user",), ("_l", "_r")),
            Rename(5, (("cc", "country"),)),
            Aggregate(
                6,
                ("country",),
                (Agg("kb", "sum", "total"), Agg("user", "count", "n")),
                False,
            ),
            Select(7, ("total", "country")),
        )
    )


def test_written_form_is_plain_and_names_tables_only():
    data = trace_to_list(_sample_trace())

    assert data[0] == {
        "kind": "source",
        "name": "logs",
        "schema": [["user", "str"], ["bytes", "int64"]],
    }
    assert data[2] == {
        "kind": "filter",
        "src": 0,
        "predicate": {
            "kind": "binary",
            "op": "gt",
            "left": {"kind": "col", "name": "bytes"},
            "right": {"kind": "lit", "type": "int", "value": 1024},
        },
    }
    assert data[5]["suffixes"] == ["_l", "_r"]
    assert [d["kind"] for d in data] == [
        "source", "source", "filter", "assign", "repartition", "join",
        "rename", "aggregate", "select",
    ]


def test_literal_types_survive():
    trace = Trace(
        (
            Source("t", Schema((("a", "float64"),))),
            Assign(
                0,
                tuple(
                    (f"c{i}", BinOp("add", Col("a"), value))
                    for i, value in enumerate(
                        [lit(1), lit(1.0), lit(True), lit(-0.0), lit(None),
                         lit(2**64 + 1), lit("1")]
                    )
                ),
            ),
        )
    )

    back = trace_from_list(json.loads(json.dumps(trace_to_list(trace))))

    values = [e.right for _, e in back.steps[1].columns]
    assert [(type(v.value), v.type) for v in values] == [
        (int, "int"), (float, "float"), (bool, "bool"), (float, "float"),
        (type(None), "null"), (int, "int"), (str, "str"),
    ]
    assert str(values[3].value) == "-0.0"
    assert values[5].value == 2**64 + 1


def test_nothing_is_evaluated():
    hostile = "__import__('os').system('false')"
    trace = Trace((Source(hostile, Schema(((hostile, "object"),))),))

    back = trace_from_list(trace_to_list(trace))

    assert back.sources == (hostile,)
    assert back.steps[0].schema.names == (hostile,)


# ---------------------------------------------------------------------------
# read errors


def _data():
    return trace_to_list(_sample_trace())


def _error(data) -> str:
    with pytest.raises(TraceFormatError) as info:
        trace_from_list(data)
    return str(info.value)


def test_unknown_step_kind_names_the_step():
    data = _data()
    data[3]["kind"] = "explode"

    message = _error(data)

    assert message.startswith("step 3: unknown step kind 'explode'")
    assert "'aggregate'" in message


def test_unknown_expression_kind_names_step_and_field():
    data = _data()
    data[2]["predicate"]["left"]["kind"] = "lambda"

    assert _error(data).startswith(
        "step 2 (filter): field 'predicate.left.kind' unknown expression "
        "kind 'lambda'"
    )


@pytest.mark.parametrize(
    ("index", "field", "expected"),
    [
        (7, "aggs", "step 7 (aggregate): field 'aggs' is missing"),
        (5, "how", "step 5 (join): field 'how' is missing"),
        (0, "schema", "step 0 (source): field 'schema' is missing"),
    ],
)
def test_missing_field(index, field, expected):
    data = _data()
    del data[index][field]

    assert _error(data) == expected


def test_missing_nested_field():
    data = _data()
    del data[3]["columns"][1]["expr"]["operand"]["name"]

    assert _error(data) == (
        "step 3 (assign): field 'columns[1].expr.operand.name' is missing"
    )


@pytest.mark.parametrize(
    ("index", "field", "value", "expected"),
    [
        (2, "src", "0", "field 'src' must be a step index (integer), "
                        "got '0'"),
        (2, "src", True, "field 'src' must be a step index (integer), "
                         "got True"),
        (4, "keys", "user", "field 'keys' must be a list, got 'user'"),
        (4, "keys", ["user", 3], "field 'keys[1]' must be a string, got 3"),
        (7, "dropna", "no", "field 'dropna' must be true or false, "
                            "got 'no'"),
        (5, "suffixes", ["_l"], "field 'suffixes' must hold two strings"),
        (0, "schema", [["a"]], "field 'schema[0]' must be a pair [a, b]"),
    ],
)
def test_wrong_type_names_step_and_field(index, field, value, expected):
    data = _data()
    data[index][field] = value

    message = _error(data)

    assert message.startswith(f"step {index} (")
    assert expected in message


def test_literal_value_must_match_its_type():
    data = _data()
    data[2]["predicate"]["right"] = {"kind": "lit", "type": "int",
                                     "value": 1.5}

    assert _error(data) == (
        "step 2 (filter): field 'predicate.right.value' 1.5 is not a "
        "valid 'int' literal"
    )


def test_unknown_field_is_refused():
    data = _data()
    data[6]["note"] = "hi"

    assert _error(data) == "step 6 (rename): field 'note' is not a known field"


def test_not_a_list_or_not_objects():
    assert "must be a list of steps" in _error({"steps": []})
    assert _error(["source"]) == "step 0: must be an object, got 'source'"


def test_deep_nesting_is_refused_not_overflowed():
    expr = {"kind": "col", "name": "bytes"}
    for _ in range(MAX_EXPR_DEPTH + 5):
        expr = {"kind": "unary", "op": "neg", "operand": expr}
    data = _data()[:1] + [{"kind": "filter", "src": 0, "predicate": expr}]

    assert "nests deeper than" in _error(data)


def test_checker_runs_after_reading():
    data = _data()
    data[2]["src"] = 5  # a later step

    with pytest.raises(IRError) as info:
        trace_from_list(data)

    assert str(info.value).startswith(
        "step 2 (filter): src=5 must name an earlier step (0 .. 1)"
    )
    assert "> t2 = filter t5 where (bytes > 1024)" in str(info.value)
    # the format itself was fine: without the check it reads
    assert trace_from_list(data, check=False).steps[2].src == 5


def test_input_is_not_modified():
    data = _data()
    kept = copy.deepcopy(data)

    trace_from_list(data)

    assert data == kept
