"""Partition math and record boundaries, checked in one process.

Ranks are simulated by calling the readers with each rank's share, so
every split point of a small file can be tried quickly.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datajax.io import readers
from datajax.io.sources import (
    InputError,
    discover_inputs,
    file_spans,
    format_of,
    owns_offset,
    rank_byte_range,
    row_group_owner_offsets,
    text_shares,
)


@pytest.mark.parametrize("total", [0, 1, 7, 1000])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_rank_byte_ranges_tile_the_total(total, size):
    ranges = [rank_byte_range(total, rank, size) for rank in range(size)]

    assert ranges[0][0] == 0 and ranges[-1][1] == total
    for (_, stop), (start, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert stop == start


def test_text_shares_cover_every_byte_once():
    sizes = [10, 0, 3, 25]
    for size in (1, 2, 3, 4, 9):
        covered = {}
        for rank in range(size):
            for share in text_shares(sizes, rank, size):
                for offset in range(share.start, share.stop):
                    key = (share.file_index, offset)
                    assert key not in covered
                    covered[key] = rank
        assert len(covered) == sum(sizes)


def test_row_groups_have_exactly_one_owner():
    spans = file_spans([100, 40])
    total = 140
    for rows in ([10, 10, 10], [1], [0, 5], [3, 0, 0, 9]):
        for size in (1, 2, 3, 7):
            offsets = row_group_owner_offsets(spans[1], rows)
            owners = [
                [rank for rank in range(size)
                 if owns_offset(offset, total, rank, size)]
                for offset in offsets
            ]
            assert all(len(found) == 1 for found in owners)


def test_formats_from_suffix_and_flag():
    assert format_of("a.jsonl", None) == "json"
    assert format_of("a.CSV", None) == "csv"
    assert format_of("a.parquet", None) == "parquet"
    assert format_of("a.log", "csv") == "csv"
    with pytest.raises(InputError, match="--format"):
        format_of("a.log", None)


def test_discover_expands_directories_and_globs_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("d/b.csv", "d/a.csv", "d/_SUCCESS", "c.csv"):
        (tmp_path / name).write_text("k\n1\n")

    files = discover_inputs(
        [str(tmp_path / "d"), str(tmp_path / "*.csv"),
         str(tmp_path / "c.csv")],
        None,
    )

    names = [f.path.rsplit("/", 1)[1] for f in files]
    assert names == ["a.csv", "b.csv", "c.csv"]


@pytest.mark.parametrize(
    "spec, message",
    [("missing.csv", "no such file"), ("*.nothing", "matches no files")],
)
def test_discover_errors_name_the_input(tmp_path, spec, message):
    with pytest.raises(InputError, match=message):
        discover_inputs([str(tmp_path / spec)], None)


# ---------------------------------------------------------------------------
# simulated ranks


def read_all_ranks(path, fmt, size, block_bytes, columns):
    """Rows of every simulated rank, in rank order, plus per-rank counts."""
    file = discover_inputs([str(path)], fmt)[0]
    tables = []
    per_rank = []
    quote_counts = {}
    for rank in range(size):
        for share in text_shares([file.size], rank, size):
            quote_counts[share.start] = readers.count_quotes_in_range(
                file.path, share.start, share.stop
            )
    for rank in range(size):
        rows = 0
        for share in text_shares([file.size], rank, size):
            stats = {"input_bytes": 0}
            parity = sum(
                count for start, count in quote_counts.items()
                if start < share.start
            ) % 2
            if fmt == "csv":
                batches = readers.iter_csv_batches(
                    file, share, parity, columns, block_bytes, False, stats
                )
            else:
                batches = readers.iter_json_batches(
                    file, share, columns, block_bytes, False, stats
                )
            for batch in batches:
                tables.append(batch.table)
                rows += batch.table.num_rows
        per_rank.append(rows)
    return tables, per_rank


CSV_TEXT = (
    '\ufeffkey,size,note\n'
    'a,1,plain\n'
    '"b\nwith newline",2,"quoted, comma"\n'
    '"c ""quoted""",3,x\n'
    '\n'
    'd,4,"multi\nline\nnote"\n'
    '007,5,y\n'
    '7,6,z\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 13])
@pytest.mark.parametrize("block_bytes", [1, 5, 64, 1 << 20])
def test_csv_records_with_quoted_newlines_are_read_once(
    tmp_path, size, block_bytes
):
    path = tmp_path / "log.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    columns = readers.Columns("key", "size", ("note",))

    tables, _ = read_all_ranks(path, "csv", size, block_bytes, columns)

    got = pa.concat_tables(tables).to_pandas() if tables else None
    expected = pd.read_csv(io.StringIO(CSV_TEXT), dtype=str)
    expected.columns = [c.lstrip("\ufeff") for c in expected.columns]
    assert got["key"].tolist() == expected["key"].tolist()
    assert got["size"].tolist() == expected["size"].tolist()
    assert got["note"].tolist() == expected["note"].tolist()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("block_bytes", [3, 40, 1 << 20])
def test_json_lines_split_anywhere_are_read_once(tmp_path, size, block_bytes):
    records = [{"k": i, "s": i * 2} for i in range(37)]
    lines = "\n".join(json.dumps(r) for r in records) + "\n\n"
    path = tmp_path / "log.jsonl"
    path.write_text(lines)

    tables, per_rank = read_all_ranks(
        path, "json", size, block_bytes, readers.Columns("k", "s")
    )

    got = pa.concat_tables(tables).to_pylist()
    assert got == records
    assert sum(per_rank) == 37


def test_json_integers_above_int64_stay_exact(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(
        '{"ids": [1, 18446744073709551615]}\n'
        '{"ids": [9223372036854775808]}\n'
    )

    tables, _ = read_all_ranks(
        path, "json", 1, 1 << 20, readers.Columns("ids")
    )

    table = pa.concat_tables(tables)
    assert table.schema.field("ids").type.value_type == pa.uint64()
    assert table.column("ids").to_pylist() == [
        [1, 2**64 - 1], [2**63]
    ]


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}\n{"k": 3,,}\n{"k": 4}\n')

    with pytest.raises(InputError, match=r"bad\.jsonl: line 3: malformed"):
        read_all_ranks(path, "json", 1, 1 << 20, readers.Columns("k"))


def test_csv_missing_column_lists_the_present_ones(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("key,bytes\n1,2\n")

    with pytest.raises(InputError, match=r"'size' not found.*'key', 'bytes'"):
        read_all_ranks(path, "csv", 2, 1 << 20, readers.Columns("key", "size"))


def test_parquet_batches_follow_row_groups(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(
        pa.table({"k": list(range(100))}), path, row_group_size=30
    )
    file = discover_inputs([str(path)], None)[0]
    rows, names = readers.parquet_row_groups(file.path)

    batches = list(readers.iter_parquet_batches(
        file, [1, 3], readers.Columns("k"), 7, True, {"input_bytes": 0}
    ))

    assert rows == [30, 30, 30, 10] and names == ["k"]
    values = [v for b in batches for v in b.table.column("k").to_pylist()]
    assert values == list(range(30, 60)) + list(range(90, 100))
    assert batches[0].locate(0) == "row 31"
