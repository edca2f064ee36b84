"""Streaming readers: each rank reads its share of the inputs in batches.

A reader yields :class:`Batch` objects: a pyarrow table holding only the
columns the job asked for, the file it came from, and a way to name the
line (text) or row (Parquet) of any of its rows for error messages.

Text files are split into byte ranges (see :mod:`datajax.io.sources`).
JSON Lines records end at every newline.  CSV records end at newlines
outside quotes: the quote parity at the start of a rank's range comes from
the quote counts of the ranks before it, so quoted fields that hold
newlines are read whole by exactly one rank.  That rule assumes RFC 4180
quoting (quotes only around fields, doubled inside them).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from datajax.io.sources import ByteShare, InputError, InputFile

log = logging.getLogger(__name__)

NEWLINE = 0x0A
QUOTE = 0x22
BOM = b"\xef\xbb\xbf"
LOOKAHEAD_BYTES = 1 << 16


@dataclass
class Batch:
    """Rows of one file, with their provenance."""

    table: pa.Table
    file: InputFile
    locate: Callable[[int], str]
    rejected: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# record boundaries in text


def boundary_newlines(
    buf: np.ndarray, parity: int, csv: bool
) -> np.ndarray:
    """Positions of the newlines in ``buf`` that end a record.

    Args:
        buf: the bytes, as a uint8 array.
        parity: number of quotes before ``buf[0]``, modulo 2 (CSV only).
        csv: if False every newline ends a record.
    """
    newlines = np.flatnonzero(buf == NEWLINE)
    if not csv:
        return newlines
    quotes = np.flatnonzero(buf == QUOTE)
    if quotes.size == 0:
        return newlines if parity == 0 else newlines[:0]
    quotes_before = np.searchsorted(quotes, newlines)
    return newlines[(quotes_before + parity) % 2 == 0]


def quote_count(data: bytes) -> int:
    """Number of quote characters in ``data``."""
    return data.count(b'"')


def count_quotes_in_range(path: str, start: int, stop: int) -> int:
    """Quotes in bytes ``[start, stop)`` of a file, read in blocks."""
    total = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = stop - start
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 24))
            if not block:
                break
            total += quote_count(block)
            remaining -= len(block)
    return total


class _TextScanner:
    """Reads whole records of one file from a record start onwards."""

    def __init__(
        self, handle, offset: int, parity: int, csv: bool, block_bytes: int
    ) -> None:
        self.handle = handle
        self.csv = csv
        self.block_bytes = block_bytes
        self.buffer = b""
        self.offset = offset
        self.parity = parity
        self.eof = False
        self.bytes_read = 0
        handle.seek(offset)

    def _fill(self, stop: int | None = None) -> bool:
        want = self.block_bytes
        buffer_end = self.offset + len(self.buffer)
        if stop is not None:
            if buffer_end < stop:
                want = min(want, stop - buffer_end)
            else:
                # past the share's end only the rest of one record is
                # needed: read ahead in small steps
                want = min(want, LOOKAHEAD_BYTES)
        block = self.handle.read(want)
        self.bytes_read += len(block)
        if not block:
            self.eof = True
            return False
        self.buffer += block
        return True

    def _advance(self, count: int) -> bytes:
        taken = self.buffer[:count]
        self.buffer = self.buffer[count:]
        self.offset += count
        if self.csv:
            self.parity = (self.parity + quote_count(taken)) % 2
        return taken

    def skip_to_record_start(self, position: int) -> None:
        """Move to the first record that starts at or after ``position``.

        The scanner must stand at ``position - 1`` with the right parity.
        """
        while True:
            array = np.frombuffer(self.buffer, dtype=np.uint8)
            ends = boundary_newlines(array, self.parity, self.csv)
            if ends.size:
                self._advance(int(ends[0]) + 1)
                return
            if not self._fill(self.offset):
                self._advance(len(self.buffer))
                return

    def chunks(self, stop: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, bytes)`` of whole records that start before stop.

        Each chunk holds at least one record and about ``block_bytes``.
        """
        while self.offset < stop:
            buffer_end = self.offset + len(self.buffer)
            if (
                not self.eof
                and len(self.buffer) < self.block_bytes
                and buffer_end < stop
            ):
                self._fill(stop)
                continue

            array = np.frombuffer(self.buffer, dtype=np.uint8)
            ends = boundary_newlines(array, self.parity, self.csv)
            starts = ends + 1 + self.offset
            inside = int(np.searchsorted(starts, stop))
            if inside < ends.size:
                # a record starts at or past ``stop``: our share ends there
                chunk_end = int(ends[inside]) + 1
                offset = self.offset
                yield offset, self._advance(chunk_end)
                return

            if self.eof:
                if self.buffer:
                    offset = self.offset
                    yield offset, self._advance(len(self.buffer))
                return

            if ends.size and buffer_end < stop:
                offset = self.offset
                yield offset, self._advance(int(ends[-1]) + 1)
            elif not self._fill(stop):
                continue


def read_csv_header(path: str) -> tuple[bytes, int]:
    """Return the header record of a CSV file and the offset after it."""
    with open(path, "rb") as handle:
        scanner = _TextScanner(handle, 0, 0, True, 1 << 16)
        scanner.skip_to_record_start(0)
        header_end = scanner.offset
        handle.seek(0)
        header = handle.read(header_end)
    if header.strip(BOM + b"\r\n") and not header.endswith(b"\n"):
        # a header-only file without a final newline
        header += b"\n"
    return header, header_end


def _newlines_before(path: str, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n")


def _record_starts(
    chunk: bytes, parity: int, csv: bool
) -> list[int]:
    """Offsets in ``chunk`` of its non-blank records, in order."""
    array = np.frombuffer(chunk, dtype=np.uint8)
    ends = boundary_newlines(array, parity, csv).tolist()
    starts = [0, *[end + 1 for end in ends]]
    bounds = [*[end + 1 for end in ends], len(chunk)]
    kept = []
    for start, end in zip(starts, bounds, strict=True):
        if chunk[start:end].strip(b"\r\n" if csv else b" \t\r\n"):
            kept.append(start)
    return kept


def _text_locator(
    path: str, chunk_offset: int, chunk: bytes, parity: int, csv: bool
) -> Callable[[int], str]:
    """Return a function naming the line of row ``i`` of a parsed chunk."""
    cache: dict[str, list[int]] = {}

    def locate(row: int) -> str:
        if "starts" not in cache:
            cache["starts"] = _record_starts(chunk, parity, csv)
        starts = cache["starts"]
        if row >= len(starts):
            return f"near line {_newlines_before(path, chunk_offset) + 1}"
        record = chunk_offset + starts[row]
        return f"line {_newlines_before(path, record) + 1}"

    return locate


# ---------------------------------------------------------------------------
# CSV


@dataclass(frozen=True)
class Columns:
    """The columns a job reads, by role."""

    key: str
    size: str | None = None
    extra: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        names = [self.key]
        if self.size is not None:
            names.append(self.size)
        names.extend(name for name in self.extra if name not in names)
        return names


def _missing_columns_error(
    path: str, wanted: Sequence[str], present: Sequence[str]
) -> InputError | None:
    missing = [name for name in wanted if name not in present]
    if not missing:
        return None
    return InputError(
        f"{path}: column {missing[0]!r} not found; the file has columns "
        f"{', '.join(repr(name) for name in present) or '(none)'}"
    )


def _csv_header_names(path: str, header: bytes) -> list[str]:
    if not header.strip(BOM + b"\r\n"):
        return []
    table = pa_csv.read_csv(
        io.BytesIO(header),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
    )
    return table.column_names


class _InvalidRows:
    """Collects CSV rows with the wrong number of fields."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.count = 0
        self.first: str | None = None

    def __call__(self, row) -> str:
        self.count += 1
        if self.first is None:
            self.first = (
                f"expected {row.expected_columns} fields, "
                f"got {row.actual_columns}: {row.text[:80]!r}"
            )
        return "skip" if self.skip else "error"


def iter_csv_batches(
    file: InputFile,
    share: ByteShare,
    parity: int,
    columns: Columns,
    block_bytes: int,
    skip_bad_rows: bool,
    stats: dict[str, int],
) -> Iterator[Batch]:
    """Yield the CSV records of one share in batches.

    Every column is read as text; the caller types them, so errors can
    name the row.  Only the empty field counts as null.
    """
    header, header_end = read_csv_header(file.path)
    stats["input_bytes"] += header_end
    names = _csv_header_names(file.path, header)
    if share.start == 0:
        error = _missing_columns_error(file.path, columns.names, names)
        if error is not None:
            raise error
    if not names:
        return
    if any(name not in names for name in columns.names):
        # the owner of byte 0 reports the missing column
        return

    convert = pa_csv.ConvertOptions(
        include_columns=columns.names,
        column_types={name: pa.string() for name in columns.names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )

    with open(file.path, "rb") as handle:
        if share.start == 0:
            scanner = _TextScanner(handle, header_end, 0, True, block_bytes)
        else:
            handle.seek(share.start - 1)
            before = handle.read(1)
            quote_before = 1 if before == b'"' else 0
            scanner = _TextScanner(
                handle,
                share.start - 1,
                (parity - quote_before) % 2,
                True,
                block_bytes,
            )
            scanner.skip_to_record_start(share.start)

        for offset, chunk in scanner.chunks(share.stop):
            # an odd number of quotes in the file; pyarrow decides below
            # whether one of them really opens a field that never closes
            # (a quote inside an unquoted field is an ordinary character)
            if scanner.eof and not scanner.buffer and scanner.parity:
                _check_final_quote(file.path, header, offset, chunk, convert)
            invalid = _InvalidRows(skip_bad_rows)
            parse = pa_csv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=invalid
            )
            read = pa_csv.ReadOptions(
                use_threads=False, block_size=len(header) + len(chunk) + 1
            )
            # a chunk is whole records, so it starts outside any quotes
            locate = _text_locator(file.path, offset, chunk, 0, True)
            try:
                table = pa_csv.read_csv(
                    io.BytesIO(header + chunk),
                    read_options=read,
                    parse_options=parse,
                    convert_options=convert,
                )
            except pa.ArrowInvalid as error:
                # find the culprits record by record (the error path only)
                bad = _bad_csv_records(header, chunk, convert, names)
                if not bad:
                    raise InputError(
                        f"{file.path}: near line "
                        f"{_newlines_before(file.path, offset) + 1}: "
                        f"malformed CSV ({error})"
                    ) from error
                if not skip_bad_rows:
                    start, _, reason = bad[0]
                    line = _newlines_before(file.path, offset + start) + 1
                    raise InputError(
                        f"{file.path}: line {line}: malformed CSV record: "
                        f"{reason}. Fix the record or pass --on-bad-row "
                        "skip."
                    ) from error
                kept = bytearray()
                previous = 0
                for start, end, _ in bad:
                    kept += chunk[previous:start]
                    previous = end
                kept += chunk[previous:]
                table = pa_csv.read_csv(
                    io.BytesIO(header + bytes(kept)),
                    read_options=read,
                    parse_options=parse,
                    convert_options=convert,
                )
                invalid.count += len(bad)

            rejected = (
                {"malformed_csv": invalid.count} if invalid.count else {}
            )
            if invalid.count:
                # skipped rows shift the row-to-line map; name lines near
                locate = _coarse_locator(file.path, offset)
            yield Batch(table, file, locate, rejected)
        stats["input_bytes"] += scanner.bytes_read


def _check_final_quote(
    path: str,
    header: bytes,
    offset: int,
    chunk: bytes,
    convert: pa_csv.ConvertOptions,
) -> None:
    """Raise if the file's last record opens a quote it never closes.

    Called when the file holds an odd number of quotes. A quote inside an
    unquoted field is an ordinary character to pyarrow, so the last
    record (by quote parity) is parsed alone: only if pyarrow rejects it
    does a field really run to the end of the file. Record boundaries
    after such a quote are unknowable, so ``--on-bad-row skip`` cannot
    skip it: it would drop the rest of the file as one bad record.
    """
    record = _record_starts(chunk, 0, True)[-1]
    error = _csv_record_error(header, chunk[record:], convert)
    if error is not None:
        raise _unclosed_quote_error(path, offset, chunk, record) from error


def _csv_record_error(
    header: bytes, record: bytes, convert: pa_csv.ConvertOptions
) -> pa.ArrowInvalid | None:
    """pyarrow's error for one CSV record read alone, or None."""
    try:
        pa_csv.read_csv(
            io.BytesIO(header + record),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
    except pa.ArrowInvalid as error:
        return error
    return None


def _unclosed_quote_error(
    path: str, offset: int, chunk: bytes, record: int
) -> InputError:
    """The error for a CSV file whose last record never closes a quote."""
    line = _newlines_before(path, offset + record) + 1
    # the line of the file's last character that is not a line break
    last_line = _newlines_before(
        path, offset + len(chunk.rstrip(b"\r\n"))
    ) + 1
    spread = (
        f", so lines {line} to {last_line} read as one field"
        if last_line > line else ""
    )
    return InputError(
        f"{path}: line {line}: a quote opened in this record is never "
        f"closed{spread}. Fix "
        f"the quote (a quote inside a quoted field is written twice: \"\"); "
        f"--on-bad-row skip cannot skip it, since the record's end is "
        f"unknown."
    )


def _coarse_locator(path: str, offset: int) -> Callable[[int], str]:
    def locate(row: int) -> str:
        line = _newlines_before(path, offset) + 1
        return f"row {row + 1} of the batch starting at line {line}"

    return locate


def _bad_csv_records(
    header: bytes,
    chunk: bytes,
    convert: pa_csv.ConvertOptions,
    names: Sequence[str],
) -> list[tuple[int, int, str]]:
    """``(start, end, reason)`` of each record pyarrow cannot read alone."""
    starts = _record_starts(chunk, 0, True)
    bounds = [*starts[1:], len(chunk)]
    bad = []
    for start, end in zip(starts, bounds, strict=True):
        error = _csv_record_error(header, chunk[start:end], convert)
        if error is None:
            continue
        reason = str(error).splitlines()[0]
        for index, name in enumerate(names):
            reason = reason.replace(f"column #{index}", repr(name))
        bad.append((start, end, reason))
    return bad


# ---------------------------------------------------------------------------
# JSON Lines


def _json_needs_exact_parse(table: pa.Table, columns: Columns) -> bool:
    """True if pyarrow typed a wanted column in a way that may lose data."""
    for name in columns.names:
        if name not in table.column_names:
            continue
        kind = table.schema.field(name).type
        while pa.types.is_list(kind) or pa.types.is_large_list(kind):
            kind = kind.value_type
        if pa.types.is_floating(kind) and name in (columns.key, columns.size):
            return True
        if pa.types.is_struct(kind) or pa.types.is_boolean(kind):
            return True
    return False


def _integer_type(numbers: list) -> pa.DataType | None:
    """int64, or uint64 when a value exceeds int64; None if neither fits."""
    if not numbers:
        return pa.int64()
    low, high = min(numbers), max(numbers)
    if low >= -(2**63) and high <= 2**63 - 1:
        return pa.int64()
    if low >= 0 and high <= 2**64 - 1:
        return pa.uint64()
    return None


def _as_text(values: list) -> pa.Array | None:
    """Scalars as their JSON text, for row-by-row checks; None for lists."""
    if any(isinstance(value, list | dict) for value in values):
        return None
    return pa.array(
        [
            value if value is None or isinstance(value, str)
            else json.dumps(value)
            for value in values
        ],
        pa.string(),
    )


def _exact_array(
    values: list,
    path: str,
    column: str,
    lines: list[int],
    lenient: bool = False,
):
    """Build a pyarrow array from parsed JSON values, integers kept exact.

    With ``lenient`` (sizes and summary columns) a column whose values do
    not share one type comes back as text, so the row checks can name and
    count each bad row instead of failing the whole batch.
    """
    try:
        return _strict_array(values, path, column, lines)
    except InputError:
        text = _as_text(values) if lenient else None
        if text is None:
            raise
        return text


def _strict_array(values: list, path: str, column: str, lines: list[int]):
    kinds: dict[str, int] = {}
    for value, line in zip(values, lines, strict=True):
        kinds.setdefault(_json_kind(value), line)
    kinds.pop("null", None)
    kinds.pop("list", None)

    if set(kinds) <= {"integer", "list of integer"} and len(kinds) <= 1:
        nested = "list of integer" in kinds
        numbers = [
            item
            for value in values if value is not None
            for item in (value if nested else [value])
            if item is not None
        ]
        kind = _integer_type(numbers)
        if kind is None:
            outside = [
                (line, number)
                for line, value in zip(lines, values, strict=True)
                if value is not None
                for number in (value if nested else [value])
                if number is not None
                and not -(2**63) <= number <= 2**64 - 1
            ]
            if outside:
                line, number = outside[0]
                raise InputError(
                    f"{path}: line {line}: column {column!r}: {number} does "
                    "not fit a 64-bit integer"
                )
            raise InputError(
                f"{path}: column {column!r} holds negative integers beside "
                f"integers above {2**63 - 1} (near line {lines[0]}); they "
                "fit no single 64-bit integer type"
            )
        return pa.array(values, pa.list_(kind) if nested else kind)

    if set(kinds) in ({"integer", "number"}, {"list of integer/number"}):
        # whole numbers beside fractions: floats are exact up to 2**53,
        # and the fractions are reported by the size or key checks
        nested = "list of integer/number" in kinds
        numbers = [
            item
            for value in values if value is not None
            for item in (value if nested else [value])
            if isinstance(item, int)
        ]
        if all(abs(number) <= 2**53 for number in numbers):
            kind = pa.float64()
            return pa.array(values, pa.list_(kind) if nested else kind)

    if len(kinds) > 1:
        first, second = sorted(kinds.items(), key=lambda item: item[1])[:2]
        raise InputError(
            f"{path}: line {second[1]}: column {column!r} holds "
            f"{_article(second[0])} where line {first[1]} holds "
            f"{_article(first[0])}; a column must hold one kind of value"
        )
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise InputError(
            f"{path}: column {column!r} near line {lines[0]}: {error}"
        ) from error


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = {_json_kind(item) for item in value} - {"null"}
        return "list of " + "/".join(sorted(inner)) if inner else "list"
    return "object"


def parse_json_lines_exact(
    path: str,
    chunk: bytes,
    first_line: int,
    columns: Columns,
    skip_bad_rows: bool,
) -> tuple[pa.Table, list[int], dict[str, int]]:
    """Parse JSON Lines with Python's json module, integers kept exact.

    The slow path, used when pyarrow fails or would turn integers into
    floats.  Returns the table, the line number of each row, and the count
    of rejected lines by reason.
    """
    values: dict[str, list] = {name: [] for name in columns.names}
    lines: list[int] = []
    rejected: dict[str, int] = {}
    for number, raw in enumerate(chunk.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError(
                    f"expected a JSON object, got {_json_kind(record)}"
                )
        except RecursionError as error:
            if skip_bad_rows:
                rejected["malformed_json"] = (
                    rejected.get("malformed_json", 0) + 1
                )
                continue
            raise InputError(
                f"{path}: line {number}: JSON nested too deeply to read. "
                "Fix the line or pass --on-bad-row skip."
            ) from error
        except ValueError as error:
            if skip_bad_rows:
                rejected["malformed_json"] = (
                    rejected.get("malformed_json", 0) + 1
                )
                continue
            raise InputError(
                f"{path}: line {number}: malformed JSON ({error}). Fix the "
                "line or pass --on-bad-row skip."
            ) from error
        for name in columns.names:
            values[name].append(record.get(name))
        lines.append(number)

    arrays = {
        name: _exact_array(
            column, path, name, lines, lenient=name != columns.key
        )
        for name, column in values.items()
    }
    return pa.table(arrays), lines, rejected


JSON_SAMPLE_LINES = 1000

# the sample met a line Python's json cannot read: pyarrow must not see it
# either (a field nested 100,000 deep crashes its type inference), so the
# chunk goes to the exact parser, which names the line
EXACT_PARSE = pa.schema([])


def _value_type(values: list) -> pa.DataType | None:
    """The Arrow type of sampled JSON values, or None if unsure."""
    kinds = {type(value) for value in values if value is not None}
    if not kinds:
        return None
    if kinds == {int}:
        high = max(values, key=lambda v: -1 if v is None else v)
        return pa.uint64() if high > 2**63 - 1 else pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {str}:
        return pa.string()
    if kinds == {list}:
        items = [item for value in values if value for item in value]
        inner = _value_type(items)
        return None if inner is None else pa.list_(inner)
    return None


def sample_json_schema(
    chunk: bytes, columns: Columns
) -> pa.Schema | None:
    """Arrow types of the wanted columns, from the first records of a chunk.

    With this schema pyarrow reads only the wanted columns and skips the
    rest unparsed; without it pyarrow infers a type for every field, and
    a pathological unused field (say, nested 100,000 deep) can crash it.
    None when the sample cannot tell (then pyarrow infers, and anything
    odd goes to the exact parser).
    """
    samples: dict[str, list] = {name: [] for name in columns.names}
    for raw in chunk.split(b"\n", JSON_SAMPLE_LINES)[:JSON_SAMPLE_LINES]:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            return EXACT_PARSE
        if not isinstance(record, dict):
            return EXACT_PARSE
        for name in columns.names:
            samples[name].append(record.get(name))
    fields = []
    for name in columns.names:
        kind = _value_type(samples[name])
        if kind is None:
            return None
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _fast_json(chunk: bytes, schema: pa.Schema | None) -> pa.Table | None:
    """pyarrow's parse of a chunk, or None to take the exact path."""
    if schema is EXACT_PARSE:
        return None
    parse = (
        pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        )
        if schema is not None
        else pa_json.ParseOptions()
    )
    try:
        table = pa_json.read_json(
            io.BytesIO(chunk),
            read_options=pa_json.ReadOptions(
                use_threads=False, block_size=len(chunk) + 1
            ),
            parse_options=parse,
        )
        # pyarrow does not check UTF-8 while parsing; bad bytes must go to
        # the exact parser, which names their line
        for column in table.columns:
            if pa.types.is_string(column.type):
                column.validate(full=True)
    except pa.ArrowException:
        return None
    return table


def iter_json_batches(
    file: InputFile,
    share: ByteShare,
    columns: Columns,
    block_bytes: int,
    skip_bad_rows: bool,
    stats: dict[str, int],
) -> Iterator[Batch]:
    """Yield the JSON Lines records of one share in batches."""
    with open(file.path, "rb") as handle:
        scanner = _TextScanner(
            handle, max(share.start - 1, 0), 0, False, block_bytes
        )
        if share.start > 0:
            scanner.skip_to_record_start(share.start)

        checked_columns = share.start != 0
        schema: pa.Schema | None = None
        for offset, chunk in scanner.chunks(share.stop):
            if schema is None or schema is EXACT_PARSE:
                schema = sample_json_schema(chunk, columns)
            table = _fast_json(chunk, schema)
            if table is not None and table.num_rows == 0:
                continue
            if table is not None and _json_needs_exact_parse(table, columns):
                table = None

            if table is None:
                first_line = _newlines_before(file.path, offset) + 1
                table, lines, rejected = parse_json_lines_exact(
                    file.path, chunk, first_line, columns, skip_bad_rows
                )
                locate = _line_list_locator(lines)
                present = _json_present(chunk, columns)
            else:
                rejected = {}
                locate = _text_locator(file.path, offset, chunk, 0, False)
                present = table.column_names

            if table.num_rows == 0:
                # every line was rejected: nothing to check or count yet
                yield Batch(table, file, locate, rejected)
                continue
            if not checked_columns:
                error = _missing_columns_error(
                    file.path, columns.names, present
                )
                if error is not None:
                    raise error
                checked_columns = True
            missing = [n for n in columns.names if n not in present]
            if missing:
                raise InputError(
                    f"{file.path}: column {missing[0]!r} is absent from "
                    f"every record near line "
                    f"{_newlines_before(file.path, offset) + 1}"
                )
            yield Batch(table.select(columns.names), file, locate, rejected)
        stats["input_bytes"] += scanner.bytes_read


def _json_present(chunk: bytes, columns: Columns) -> list[str]:
    """Columns named in at least one record of a chunk (slow path)."""
    present = set()
    for raw in chunk.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            present.update(name for name in columns.names if name in record)
    return sorted(present)


def _line_list_locator(lines: list[int]) -> Callable[[int], str]:
    def locate(row: int) -> str:
        return f"line {lines[row]}"

    return locate


# ---------------------------------------------------------------------------
# Parquet


def parquet_row_groups(path: str) -> tuple[list[int], list[str]]:
    """Rows per row group and column names of a Parquet file."""
    try:
        metadata = pq.ParquetFile(path).metadata
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(
            f"{path}: not a readable Parquet file ({error})"
        ) from error
    rows = [
        metadata.row_group(i).num_rows
        for i in range(metadata.num_row_groups)
    ]
    return rows, names


def iter_parquet_batches(
    file: InputFile,
    row_groups: Sequence[int],
    columns: Columns,
    batch_rows: int,
    check_columns: bool,
    stats: dict[str, int],
) -> Iterator[Batch]:
    """Yield the rows of some row groups of one Parquet file in batches."""
    try:
        parquet = pq.ParquetFile(file.path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(
            f"{file.path}: not a readable Parquet file ({error})"
        ) from error

    names = parquet.schema_arrow.names
    if check_columns or row_groups:
        error = _missing_columns_error(file.path, columns.names, names)
        if error is not None:
            raise error
    if not row_groups:
        return

    metadata = parquet.metadata
    stats["input_bytes"] += metadata.serialized_size + 8
    rows_before = [0]
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        rows_before.append(rows_before[-1] + rows)

    wanted = set(columns.names)
    for group in row_groups:
        meta = metadata.row_group(group)
        for index in range(meta.num_columns):
            chunk = meta.column(index)
            top = chunk.path_in_schema.split(".")[0]
            if top in wanted:
                stats["input_bytes"] += chunk.total_compressed_size

        first_row = rows_before[group]
        batches = parquet.iter_batches(
            batch_size=batch_rows, row_groups=[group], columns=columns.names
        )
        for batch in batches:
            yield Batch(
                pa.Table.from_batches([batch]),
                file,
                _row_locator(first_row),
            )
            first_row += batch.num_rows


def _row_locator(first_row: int) -> Callable[[int], str]:
    def locate(row: int) -> str:
        return f"row {first_row + row + 1}"

    return locate
