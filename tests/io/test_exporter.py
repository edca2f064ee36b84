"""Exporter math against independent computations with plain pandas."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.util import hash_pandas_object

from datajax.io import exporter
from datajax.io.exporter import (
    CohortTable,
    DenseCohorts,
    PageRuns,
    ValueCounts,
    build_prefix_cohorts,
    coalesce_kv_extents,
    dumps_wave_spec,
    export_wave_spec,
    extents_of,
    prefix_codes,
    summarize,
    to_dlpack_columns,
    wave_spec_pieces,
    write_json_atomic,
)
from datajax.io.sources import InputError


def pandas_prefixes(keys: pd.Series, prefix_len: int) -> pd.Series:
    """The spec's definition, written the slow obvious way."""
    hashes = hash_pandas_object(keys, index=False)
    return hashes.map(lambda value: f"{int(value):016x}"[:prefix_len])


def pandas_cohorts(keys, sizes, prefix_len, top_k):
    frame = pd.DataFrame({
        "prefix": pandas_prefixes(pd.Series(keys), prefix_len),
        "size": sizes if sizes is not None else 0,
    })
    grouped = frame.groupby("prefix").agg(
        count=("size", "size"), bytes=("size", "sum")
    ).reset_index()
    grouped = grouped.sort_values(
        ["count", "prefix"], ascending=[False, True]
    )
    if top_k is not None:
        grouped = grouped.head(top_k)
    return [
        {
            "prefix": row.prefix,
            "count": int(row.count),
            "bytes": None if sizes is None else int(row.bytes),
        }
        for row in grouped.itertuples()
    ]


KEY_CASES = {
    "strings": pd.Series(["a", "b", "a", "7", "007", "", "zz", "a"] * 5),
    "non_ascii": pd.Series(["é", "ключ", "鍵", "é", "🔑", "e"] * 4),
    "int64": pd.Series([0, 1, -1, 2**63 - 1, -(2**63), 5, 5, 5]),
    "uint64": pd.Series(
        [0, 1, 2**63, 2**64 - 1, 2**63, 12345], dtype=np.uint64
    ),
}


@pytest.mark.parametrize("case", sorted(KEY_CASES))
@pytest.mark.parametrize("prefix_len", [1, 4, 16])
def test_cohort_prefixes_equal_pandas_hash(case, prefix_len):
    keys = KEY_CASES[case]
    sizes = np.arange(len(keys), dtype=np.int64) * 7

    cohorts = build_prefix_cohorts(
        keys, sizes, prefix_len=prefix_len, top_k=None
    )

    assert cohorts == pandas_cohorts(keys, sizes, prefix_len, None)
    assert sum(c["count"] for c in cohorts) == len(keys)


def test_integer_width_does_not_change_the_hash():
    narrow = pd.Series([1, 2, 300], dtype=np.int16)
    wide = pd.Series([1, 2, 300], dtype=np.int64)
    unsigned = pd.Series([1, 2, 300], dtype=np.uint64)

    expected = build_prefix_cohorts(wide, prefix_len=16, top_k=None)

    assert build_prefix_cohorts(narrow, prefix_len=16, top_k=None) == expected
    assert build_prefix_cohorts(
        unsigned, prefix_len=16, top_k=None
    ) == expected


def test_top_k_cuts_after_sorting_by_count_then_prefix():
    keys = pd.Series([f"k{i % 50}" for i in range(1000)] + ["hot"] * 300)

    cohorts = build_prefix_cohorts(keys, prefix_len=2, top_k=5)

    assert cohorts == pandas_cohorts(keys, None, 2, 5)
    assert cohorts[0]["count"] >= 300
    assert all(c["bytes"] is None for c in cohorts)


def test_byte_sums_stay_exact_beyond_64_bits():
    big = 2**63 + 11
    keys = pd.Series([1, 1, 1, 2])
    sizes = np.array([big, big, big, 5], dtype=np.uint64)

    cohorts = build_prefix_cohorts(keys, sizes, prefix_len=16, top_k=None)

    by_count = {c["count"]: c["bytes"] for c in cohorts}
    assert by_count[3] == 3 * big
    assert by_count[1] == 5
    assert isinstance(by_count[3], int)


def test_cohort_table_merge_is_exact_and_order_free():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 50, 10_000).astype(np.uint64)
    sizes = rng.integers(0, 2**40, 10_000).astype(np.uint64)

    whole = CohortTable()
    whole.add(codes, sizes)
    parts = CohortTable()
    for chunk in np.array_split(np.arange(codes.size), 7)[::-1]:
        part = CohortTable()
        part.add(codes[chunk], sizes[chunk])
        parts.merge(part)

    assert np.array_equal(whole.codes, parts.codes)
    assert np.array_equal(whole.counts, parts.counts)
    assert [int(v) for v in whole.sums] == [int(v) for v in parts.sums]
    frame = pd.DataFrame({"c": codes, "s": sizes.astype(object)})
    expected = frame.groupby("c")["s"].apply(lambda s: sum(map(int, s)))
    assert [int(v) for v in whole.sums] == expected.tolist()


def test_prefix_codes_take_leading_hex_digits():
    hashes = np.array([0xABCDEF0123456789, 0x0FFF000000000000], np.uint64)

    assert prefix_codes(hashes, 4).tolist() == [0xABCD, 0x0FFF]
    assert prefix_codes(hashes, 16).tolist() == hashes.tolist()
    with pytest.raises(ValueError, match="prefix_len"):
        prefix_codes(hashes, 17)


def reference_runs(pages):
    """Runs of consecutive pages, by a plain Python loop."""
    runs = []
    for page in sorted(set(int(p) for p in pages)):
        if runs and page == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([page, 1])
    return [{"start_page": s, "npages": n} for s, n in runs]


@pytest.mark.parametrize("seed", range(5))
def test_extents_match_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    pages = rng.integers(0, 300, rng.integers(1, 400))

    assert coalesce_kv_extents(pages) == reference_runs(pages)


def test_page_runs_merge_touching_and_overlapping_runs():
    runs = PageRuns()
    for chunk in ([5, 6, 7], [8], [1, 2], [2, 3], [20], [2**64 - 1]):
        runs.add_pages(np.array(chunk, dtype=np.uint64))

    extents = [
        (int(a), int(b) - int(a) + 1)
        for a, b in zip(runs.first, runs.last, strict=True)
    ]
    assert extents == [(1, 3), (5, 4), (20, 1), (2**64 - 1, 1)]


def test_extents_of_hash_pages_equal_pandas():
    keys = pd.Series([f"user{i}" for i in range(2000)])
    hashes = hash_pandas_object(keys, index=False).to_numpy(np.uint64)

    spec = export_wave_spec(
        pd.DataFrame({"k": keys}), "k", page_bits=54, top_k=3
    )

    assert spec["extents"] == reference_runs(hashes >> np.uint64(54))
    assert spec["meta"]["row_count"] == 2000


def test_summary_matches_pandas():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 1000, 5000).astype(float)
    counts = ValueCounts()
    for chunk in np.array_split(values, 4):
        part = ValueCounts()
        part.add(chunk)
        counts.merge(part)

    summary = summarize(counts)
    series = pd.Series(values)

    assert summary["count"] == 5000
    assert summary["mean"] == pytest.approx(series.mean(), rel=1e-12)
    assert summary["std"] == pytest.approx(series.std(), rel=1e-12)
    assert summary["min"] == series.min()
    assert summary["max"] == series.max()
    for q in (0.25, 0.5, 0.75, 0.9, 0.99):
        key = f"p{round(q * 100)}"
        assert summary[key] == pytest.approx(series.quantile(q), rel=1e-12)


def test_summary_of_nothing_and_of_one_value_has_no_nan():
    empty = summarize(ValueCounts())
    one = ValueCounts()
    one.add(np.array([4.0]))

    assert empty["count"] == 0 and empty["mean"] is None
    assert summarize(one)["std"] is None
    assert summarize(one)["p99"] == 4.0
    json.dumps(summarize(one), allow_nan=False)


def test_export_wave_spec_meta_and_pack_order(tmp_path):
    frame = pd.DataFrame({
        "key": ["a", "b", "a", "c"],
        "bytes": [10, 20, 30, 40],
        "chunk": [1, 2, 3, 4],
    })
    out = tmp_path / "spec.json"

    spec = export_wave_spec(
        frame, "key", "bytes", chunk_len_column="chunk",
        usage={"bytes": 3, "key": 3, "chunk": 9}, out=str(out),
    )

    assert json.loads(out.read_text()) == spec
    assert spec["pack_order"] == ["chunk", "bytes", "key"]
    meta = spec["meta"]
    assert meta["approx_bytes"] == 100
    assert meta["row_count"] == 4
    assert meta["key_type"] == "text"
    assert meta["chunk_len_summary"]["mean"] == 2.5
    assert spec["prefix_histogram"]["4"] == 3
    assert sum(c["bytes"] for c in spec["cohorts"]) == 100


def test_export_wave_spec_explodes_lists_with_per_element_sizes():
    frame = pa.table({
        "ids": pa.array([[1, 2, 3], [3], []], pa.list_(pa.int64())),
        "sizes": pa.array([[1, 1, 2], [5], []], pa.list_(pa.int64())),
    })

    spec = export_wave_spec(
        frame, "ids", "sizes", explode=True, extent_source="key",
        page_bits=0, prefix_len=16, top_k=None,
    )

    assert spec["meta"]["row_count"] == 4
    assert spec["meta"]["approx_bytes"] == 9
    assert spec["extents"] == [{"start_page": 1, "npages": 3}]
    three = f"{int(hash_pandas_object(pd.Series([3]), index=False)[0]):016x}"
    assert {c["prefix"]: c["bytes"] for c in spec["cohorts"]}[three] == 7


def test_export_wave_spec_rejects_null_keys_naming_the_row():
    frame = pd.DataFrame({"k": ["a", None, "b"]})

    with pytest.raises(InputError, match=r"row 2: column 'k'.*null"):
        export_wave_spec(frame, "k")


def test_export_wave_spec_names_missing_columns():
    with pytest.raises(InputError, match=r"'nope' not found.*'k'"):
        export_wave_spec(pd.DataFrame({"k": [1]}), "k", "nope")


def test_dumps_never_writes_nan():
    with pytest.raises(ValueError):
        dumps_wave_spec({"x": math.nan})


def test_to_dlpack_columns_round_trip():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})

    columns = to_dlpack_columns(frame)

    assert np.from_dlpack(columns["a"]).tolist() == [1, 2, 3]
    assert np.from_dlpack(columns["b"]).tolist() == [0.5, 1.5, 2.5]
    with pytest.raises(TypeError, match="nulls"):
        to_dlpack_columns(pd.DataFrame({"x": [1.0, None]}))
    with pytest.raises(TypeError, match="dtype"):
        to_dlpack_columns(pd.DataFrame({"s": ["a"]}))


@pytest.mark.parametrize("largest", [2**20, 2**60, 2**64 - 1])
def test_dense_cohorts_equal_the_sorting_table(largest):
    rng = np.random.default_rng(largest % 1000)
    codes = rng.integers(0, 16**3, 5000).astype(np.uint64)
    sizes = rng.integers(0, largest, 5000, dtype=np.uint64)
    dense = DenseCohorts(3, with_sizes=True)
    table = CohortTable()
    for chunk in np.array_split(np.arange(codes.size), 3):
        dense.add(codes[chunk], sizes[chunk])
        table.add(codes[chunk], sizes[chunk])

    sparse = dense.table()

    assert sparse.codes.tolist() == table.codes.tolist()
    assert sparse.counts.tolist() == table.counts.tolist()
    assert [int(v) for v in sparse.sums] == [int(v) for v in table.sums]


def _random_pages(count: int) -> list[int]:
    rng = np.random.default_rng(count)
    near_top = 2**64 - 1 - rng.integers(0, 50, 20, dtype=np.uint64)
    spread = rng.integers(0, 2**63, count, dtype=np.uint64) * np.uint64(2)
    dense = rng.integers(0, 3000, count, dtype=np.uint64)
    return np.concatenate([near_top, spread, dense]).tolist()


@pytest.mark.parametrize(
    "pages",
    [[], [3], [0, 1, 2, 9, 2**64 - 1], _random_pages(5000)],
    ids=["none", "one", "ends-of-range", "random"],
)
@pytest.mark.parametrize("per_piece", [1, 7, 1 << 16])
def test_fast_extents_text_equals_json_dumps(
    pages, per_piece, tmp_path, monkeypatch
):
    monkeypatch.setattr(exporter, "EXTENTS_PER_PIECE", per_piece)
    runs = PageRuns()
    runs.add_pages(np.array(pages, dtype=np.uint64))
    spec = {"cohorts": [], "extents": extents_of(runs), "meta": {"a": 1}}
    expected = json.dumps(spec, indent=2) + "\n"

    fast = dumps_wave_spec({**spec, "extents": None}, runs)
    out = tmp_path / "spec.json"
    write_json_atomic(str(out), wave_spec_pieces(spec, runs))
    as_bytes = tmp_path / "bytes.json"
    write_json_atomic(str(as_bytes), expected.encode())

    assert fast == expected
    assert out.read_text() == expected
    assert as_bytes.read_text() == expected
    # runs that are views into larger arrays give the same text
    half = PageRuns(runs.first[1:], runs.last[1:])
    assert json.loads(dumps_wave_spec(spec, half))["extents"] == (
        spec["extents"][1:]
    )


def test_extents_text_of_a_run_of_all_2_64_pages():
    # npages = 2**64 does not fit in 64 bits: the slow path writes it
    runs = PageRuns(
        np.array([0], dtype=np.uint64), np.array([2**64 - 1], dtype=np.uint64)
    )

    spec = json.loads(dumps_wave_spec({"extents": None}, runs))

    assert spec["extents"] == [{"start_page": 0, "npages": 2**64}]
