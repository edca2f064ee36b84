"""Bad and awkward input: one clear error, a non-zero exit, no output.

Each failing case checks that exactly one error line is printed, by rank
0, that the job exits with the bad-input code (2, from every rank: a rank
that died otherwise would make mpiexec report another code), and that no
output file exists afterwards.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import JOB_TIMEOUT
from tests.reference import reference_cohorts, reference_extents

EXIT_BAD_INPUT = 2


def assert_fails_cleanly(run, out, *patterns):
    """Exit 2, one error line from rank 0 naming everything, no output."""
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert run.returncode == EXIT_BAD_INPUT, run.stderr[-3000:]
    assert len(errors) == 1, run.stderr[-3000:]
    assert "[rank 0/" in errors[0]
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    assert not out.exists()
    assert not list(out.parent.glob(".tmp-*"))
    return errors[0]


def spec_of(out):
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------
# files and columns


@pytest.mark.parametrize("ranks", [1, 2])
def test_missing_file(tmp_path, export_job, ranks):
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", tmp_path / "nope.csv", "--key", "k", "--out", out], ranks
    )

    assert_fails_cleanly(run, out, "nope.csv", "no such file")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_column_names_the_present_ones(tmp_path, export_job, fmt):
    frame = pd.DataFrame({"user": ["a", "b"], "bytes": [1, 2]})
    path = tmp_path / f"log.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "user", "--size", "size", "--out", out], 2
    )

    assert_fails_cleanly(
        run, out, f"log.{fmt}", "'size' not found", "'user', 'bytes'"
    )


def test_empty_files_give_zero_rows_and_change_nothing(tmp_path, export_job):
    real = tmp_path / "real"
    real.mkdir()
    pd.DataFrame({"k": ["a", "b", "a"], "s": [1, 2, 3]}).to_csv(
        real / "log.csv", index=False
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "zero.csv").write_bytes(b"")
    (empty / "header.csv").write_text("k,s\n")
    pq.write_table(
        pa.table({"k": pa.array([], pa.string()),
                  "s": pa.array([], pa.int64())}),
        empty / "none.parquet",
    )
    args = ["--key", "k", "--size", "s"]

    alone = export_job(
        ["--logs", empty, *args, "--out", tmp_path / "alone.json"], 2
    )
    mixed = export_job(
        ["--logs", empty, "--logs", real, *args,
         "--out", tmp_path / "mixed.json"], 3
    )
    plain = export_job(
        ["--logs", real, *args, "--out", tmp_path / "plain.json"], 1
    )

    for run in (alone, mixed, plain):
        assert run.returncode == 0, run.stderr[-2000:]
    alone_spec = spec_of(tmp_path / "alone.json")
    assert alone_spec["meta"]["row_count"] == 0
    assert alone_spec["cohorts"] == [] and alone_spec["extents"] == []
    assert alone_spec["meta"]["approx_bytes"] == 0
    mixed_spec = spec_of(tmp_path / "mixed.json")
    plain_spec = spec_of(tmp_path / "plain.json")
    for spec in (mixed_spec, plain_spec):
        spec["meta"].pop("inputs")
        spec["meta"].pop("world_size")
    assert mixed_spec == plain_spec


# ---------------------------------------------------------------------------
# keys


def test_csv_keys_007_and_7_stay_different(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k\n007\n7\n7\n")

    text_run = export_job(
        ["--logs", path, "--key", "k", "--prefix-len", "16",
         "--out", tmp_path / "text.json"], 2
    )
    int_run = export_job(
        ["--logs", path, "--key", "k", "--prefix-len", "16",
         "--key-type", "int", "--out", tmp_path / "int.json"], 2
    )

    assert text_run.returncode == 0 and int_run.returncode == 0
    assert spec_of(tmp_path / "text.json")["cohorts"] == reference_cohorts(
        pd.Series(["007", "7", "7"]), None, 16, 64
    )
    assert spec_of(tmp_path / "int.json")["cohorts"] == reference_cohorts(
        pd.Series([7, 7, 7]), None, 16, 64
    )


@pytest.mark.parametrize("ranks", [1, 2])
def test_null_key_is_an_error_naming_file_and_line(tmp_path, export_job,
                                                   ranks):
    path = tmp_path / "log.csv"
    path.write_text("k,s\na,1\nb,2\n,3\nc,4\n")
    out = tmp_path / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out], ranks)

    assert_fails_cleanly(run, out, "log.csv", "line 4", "'k'", "null")


def test_null_keys_are_counted_with_skip(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"k": "a"}\n{"k": null}\n{"x": 1}\n{"k": "b"}\n{"k": "a"}\n'
    )
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--on-bad-row", "skip",
         "--out", out], 2
    )

    assert run.returncode == 0, run.stderr
    meta = spec_of(out)["meta"]
    assert meta["rows_rejected"] == {"null_key": 2}
    assert meta["row_count"] == 3 and meta["input_rows"] == 5


def test_json_ids_above_2_63_stay_exact(tmp_path, export_job):
    ids = [[2**63, 2**64 - 1], [2**63 + 1, 5], [2**64 - 1]]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps({"ids": row}) for row in ids))
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "ids", "--explode", "--prefix-len", "16",
         "--top-k", "all", "--extent-source", "key", "--page-bits", "0",
         "--out", out], 2
    )

    assert run.returncode == 0, run.stderr
    spec = spec_of(out)
    flat = pd.Series([v for row in ids for v in row], dtype=np.uint64)
    assert spec["cohorts"] == reference_cohorts(flat, None, 16, None)
    assert spec["extents"] == reference_extents(flat.tolist())
    assert spec["extents"] == [
        {"start_page": 5, "npages": 1},
        {"start_page": 2**63, "npages": 2},
        {"start_page": 2**64 - 1, "npages": 1},
    ]
    assert f"{2**64 - 1}" in out.read_text()


# ---------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize(
    "value, reason",
    [("-5", "negative"), ("2.5", "not a whole number"),
     ("18446744073709551616", "does not fit"), ("lots", "not a number")],
)
def test_bad_sizes_name_file_line_and_column(tmp_path, export_job, value,
                                             reason):
    path = tmp_path / "log.csv"
    path.write_text(f"k,size\na,1\nb,{value}\n")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "size", "--out", out], 1
    )

    assert_fails_cleanly(run, out, "log.csv", "line 3", "'size'", reason)


def test_bad_json_sizes_are_caught_too(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1, "s": 3}\n{"k": 2, "s": 1.5}\n')
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--out", out], 1
    )

    assert_fails_cleanly(run, out, "line 2", "'s'", "not a whole number")


def test_size_sums_beyond_64_bits_stay_exact(tmp_path, export_job):
    big = 2**64 - 1
    path = tmp_path / "log.csv"
    path.write_text("k,s\n" + "".join(f"k{i % 3},{big}\n" for i in range(9)))
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--out", out], 3
    )

    assert run.returncode == 0, run.stderr
    spec = spec_of(out)
    assert spec["meta"]["approx_bytes"] == 9 * big
    assert sorted(c["bytes"] for c in spec["cohorts"]) == [3 * big] * 3
    assert str(9 * big) in out.read_text()


def test_bad_sizes_are_counted_with_skip(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k,s\na,1\nb,-1\nc,0.5\nd,\ne,7\n")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--on-bad-row",
         "skip", "--out", out], 2
    )

    assert run.returncode == 0, run.stderr
    meta = spec_of(out)["meta"]
    assert meta["rows_rejected"] == {
        "negative_size": 1, "non_integer_size": 1, "null_size": 1
    }
    assert meta["approx_bytes"] == 8


# ---------------------------------------------------------------------------
# malformed text


def test_malformed_json_line_names_file_and_line(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}\n{"k": 3\n{"k": 4}\n')
    out = tmp_path / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out], 2)

    assert_fails_cleanly(run, out, "log.jsonl", "line 3", "malformed JSON")


def test_malformed_json_lines_are_counted_with_skip(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\nnot json\n[1]\n{"k": 4}\n')
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--on-bad-row", "skip", "--out", out]
    )

    assert run.returncode == 0, run.stderr
    meta = spec_of(out)["meta"]
    assert meta["rows_rejected"] == {"malformed_json": 2}
    assert meta["row_count"] == 2


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_csv_quoted_newlines_and_bom(tmp_path, export_job, ranks):
    path = tmp_path / "log.csv"
    rows = [("plain", 1), ("two\nlines", 2), ('say ""hi""', 3)] * 30
    body = "".join(f'"{key}",{size}\n' for key, size in rows)
    path.write_bytes(b"\xef\xbb\xbf" + f"key,size\n{body}".encode())
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "key", "--size", "size",
         "--batch-bytes", "64", "--out", out], ranks
    )

    assert run.returncode == 0, run.stderr
    keys = pd.Series([k.replace('""', '"') for k, _ in rows])
    sizes = pd.Series([s for _, s in rows])
    assert spec_of(out)["cohorts"] == reference_cohorts(keys, sizes, 4, 64)


def test_csv_row_with_extra_fields(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k,s\na,1\nb,2,3\nc,4\n")
    out = tmp_path / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out])

    assert_fails_cleanly(run, out, "log.csv", "line 3", "malformed CSV")


@pytest.mark.parametrize(
    ("ranks", "on_bad_row"), [(1, "error"), (1, "skip"), (3, "skip")]
)
def test_csv_quote_never_closed_is_an_error_even_with_skip(
    tmp_path, export_job, ranks, on_bad_row
):
    # line 40 opens a quote that nothing closes: lines 40 to 81 would be
    # one record, which skipping would drop without a word
    path = tmp_path / "log.csv"
    lines = [f"k{i},{i}" for i in range(80)]
    lines[39] = '"k39,7'
    path.write_text("k,s\n" + "\n".join(lines) + "\n")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--batch-bytes", "64",
         "--on-bad-row", on_bad_row, "--out", out], ranks
    )

    assert_fails_cleanly(
        run, out, "log.csv", "line 41", "never closed", "lines 41 to 81",
    )


@pytest.mark.parametrize("ranks", [1, 2])
def test_csv_bare_quote_in_an_unquoted_field_is_a_character(
    tmp_path, export_job, ranks
):
    # an odd number of quotes, but none opens a field: pyarrow (and
    # RFC 4180 readers generally) read the quote as part of the value
    path = tmp_path / "log.csv"
    path.write_text('k,s\n12" pizza,1\nb,2\n')
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--out", out], ranks
    )

    assert run.returncode == 0, run.stderr
    keys = pd.Series(['12" pizza', "b"])
    assert spec_of(out)["cohorts"] == reference_cohorts(
        keys, pd.Series([1, 2]), 4, 64
    )


def test_csv_quote_never_closed_on_the_last_line(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text('k,s\na,1\n"b,2\n\n\n')
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--on-bad-row",
         "skip", "--out", out]
    )

    assert_fails_cleanly(run, out, "log.csv", "line 3", "never closed.")


# ---------------------------------------------------------------------------
# failure on one rank only


def test_error_on_rank_1_only_ends_the_job(tmp_path, export_job):
    # many good rows for rank 0, one bad row at the very end (rank 1's)
    path = tmp_path / "log.csv"
    lines = [f"k{i},{i}" for i in range(20000)] + ["bad,-1"]
    path.write_text("k,s\n" + "\n".join(lines) + "\n")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", path, "--key", "k", "--size", "s", "--batch-bytes",
         "4096", "--out", out], 2
    )

    error = assert_fails_cleanly(run, out, "line 20002", "negative")
    assert "reported by rank 1" in error
    assert run.seconds < JOB_TIMEOUT / 2


def test_unwritable_output_folder_fails_before_reading(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k\na\n")
    out = tmp_path / "missing-folder" / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out], 2)

    assert run.returncode == EXIT_BAD_INPUT
    assert "missing-folder" in run.stderr and "does not exist" in run.stderr


# ---------------------------------------------------------------------------
# found by trying the product as a new user


def test_deeply_nested_json_is_a_bad_line_not_a_crash(tmp_path, export_job):
    path = tmp_path / "deep.jsonl"
    depth = 100_000
    path.write_text(
        '{"k": 1, "d": ' + "[" * depth + "]" * depth + "}\n" + '{"k": 2}\n'
    )
    out = tmp_path / "spec.json"

    failed = export_job(["--logs", path, "--key", "k", "--out", out], 2)
    assert_fails_cleanly(failed, out, "line 1", "nested too deeply")

    skipped = export_job(
        ["--logs", path, "--key", "k", "--on-bad-row", "skip",
         "--out", out], 2,
    )
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert spec_of(out)["meta"]["row_count"] == 1
    assert spec_of(out)["meta"]["rows_rejected"] == {"malformed_json": 1}


def test_infinite_summary_values_are_bad_rows(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k,c\na,1\nb,NaN\nc,Infinity\nd,-inf\ne,3\n")
    out = tmp_path / "spec.json"
    args = ["--logs", path, "--key", "k", "--chunk-len", "c"]

    failed = export_job([*args, "--out", out], 2)
    assert_fails_cleanly(failed, out, "line 4", "'c'", "infinite")
    skipped = export_job([*args, "--on-bad-row", "skip", "--out", out], 2)

    assert skipped.returncode == 0, skipped.stderr
    meta = spec_of(out)["meta"]
    assert meta["rows_rejected"] == {"infinite_number": 2}
    assert meta["chunk_len_summary"]["count"] == 2
    assert meta["chunk_len_summary"]["mean"] == 2.0


@pytest.mark.parametrize("case", ["directory", "input", "same-file"])
def test_outputs_that_would_destroy_something(tmp_path, export_job, case):
    path = tmp_path / "log.csv"
    path.write_text("k\na\n")
    before = path.read_text()
    out = {"directory": tmp_path, "input": path,
           "same-file": tmp_path / "x.json"}[case]
    extra = ["--metrics-out", out] if case == "same-file" else []

    run = export_job(
        ["--logs", path, "--key", "k", "--out", out, *extra], 2
    )

    assert run.returncode == EXIT_BAD_INPUT
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and str(out) in errors[0]
    assert path.read_text() == before
    assert not (tmp_path / "x.json").exists()


def test_hidden_and_underscore_folders_are_skipped(tmp_path, export_job):
    for folder in ("logs", "logs/.git", "logs/_temporary", "logs/sub"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.csv").write_text("k\nx\n")
    out = tmp_path / "spec.json"

    run = export_job(["--logs", tmp_path / "logs", "--key", "k",
                      "--out", out])

    assert run.returncode == 0, run.stderr
    assert spec_of(out)["meta"]["row_count"] == 2


def test_json_sizes_of_mixed_types_are_row_errors(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"k": 1, "s": 3}\n{"k": 2, "s": "abc"}\n{"k": 3, "s": 1.5}\n'
        '{"k": 4, "s": 99999999999999999999999}\n{"k": 5, "s": 4}\n'
    )
    out = tmp_path / "spec.json"
    args = ["--logs", path, "--key", "k", "--size", "s"]

    failed = export_job([*args, "--out", out])
    assert_fails_cleanly(failed, out, "line 2", "'s'", "not a number")
    skipped = export_job([*args, "--on-bad-row", "skip", "--out", out])

    assert skipped.returncode == 0, skipped.stderr
    assert spec_of(out)["meta"]["rows_rejected"] == {
        "invalid_size": 1, "non_integer_size": 1, "size_overflow": 1
    }
    assert spec_of(out)["meta"]["approx_bytes"] == 7


@pytest.mark.parametrize("ranks", [1, 3])
def test_invalid_utf8_in_csv_names_the_line(tmp_path, export_job, ranks):
    lines = [b"k,s"] + [b"%d,%d" % (i, i) for i in range(1000)]
    lines[500] = b"\xff\xfe,7"
    path = tmp_path / "log.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "spec.json"
    args = ["--logs", path, "--key", "k", "--size", "s"]

    failed = export_job([*args, "--out", out], ranks)
    assert_fails_cleanly(failed, out, "line 501", "'k'", "UTF8")
    skipped = export_job(
        [*args, "--on-bad-row", "skip", "--out", out], ranks
    )

    assert skipped.returncode == 0, skipped.stderr
    meta = spec_of(out)["meta"]
    assert meta["rows_rejected"] == {"malformed_csv": 1}
    assert meta["row_count"] == 999


def test_invalid_utf8_in_json_names_the_line(tmp_path, export_job):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"k": "a"}\n{"k": "\xff\xfe"}\n')
    out = tmp_path / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out])

    assert_fails_cleanly(run, out, "log.jsonl", "line 2", "malformed JSON")


def test_header_only_csv_without_final_newline(tmp_path, export_job):
    path = tmp_path / "log.csv"
    path.write_text("k,s")
    out = tmp_path / "spec.json"

    run = export_job(["--logs", path, "--key", "k", "--out", out], 2)

    assert run.returncode == 0, run.stderr
    assert spec_of(out)["meta"]["row_count"] == 0


def test_whole_float_sizes_are_accepted_in_every_format(tmp_path,
                                                        export_job):
    (tmp_path / "a.csv").write_text("k,s\na,2.0\nb,1e3\n")
    (tmp_path / "b.jsonl").write_text('{"k": "c", "s": 2.0}\n')
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", tmp_path / "a.csv", "--logs", tmp_path / "b.jsonl",
         "--key", "k", "--size", "s", "--out", out]
    )

    assert run.returncode == 0, run.stderr
    assert spec_of(out)["meta"]["approx_bytes"] == 1004
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_usage_errors_are_printed_once(tmp_path, export_job):
    run = export_job(["--key", "k", "--out", tmp_path / "o.json"], 3)

    assert run.returncode == 2
    assert run.stderr.count("the following arguments are required") == 1
