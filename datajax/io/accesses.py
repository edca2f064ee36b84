"""Typing and checking the rows of an access log, one batch at a time.

:func:`prepare_accesses` turns a pyarrow table (as a reader or a caller
gives it) into flat numpy arrays, one element per access: the key's 64-bit
pandas hash, the integer key itself where keys are integers, and the size.
Bad rows (null keys, negative, fractional or overflowing sizes, keys that
are not integers under ``--key-type int``) raise one :class:`InputError`
naming the file, column and line, or are counted by reason and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.util import hash_array, hash_pandas_object

from datajax.io.sources import InputError

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
FLOAT_EXACT_MAX = 2**53

KEY_TYPES = ("auto", "text", "int")

_REASON_TEXT = {
    "null_key": "the key is null",
    "bad_int_key": "the key is not a 64-bit integer",
    "negative_key": "--extent-source key needs non-negative integer keys",
    "null_size": "the size is null",
    "negative_size": "the size is negative",
    "non_integer_size": "the size is not a whole number",
    "invalid_size": "the size is not a number",
    "size_overflow": "the size does not fit an unsigned 64-bit integer",
    "size_list_length": "the size list and the key list differ in length",
    "invalid_number": "the value is not a number",
    "infinite_number": "the value is infinite; summaries need finite "
    "numbers",
}


@dataclass(frozen=True)
class AccessOptions:
    """How a batch's columns are read."""

    key: str
    size: str | None = None
    extra: tuple[str, ...] = ()
    explode: bool = False
    key_type: str = "auto"
    key_extents: bool = False
    skip_bad_rows: bool = False


@dataclass
class Accesses:
    """One batch of accesses, flat: element ``i`` is one access."""

    hashes: np.ndarray
    int_keys: np.ndarray | None
    sizes: np.ndarray | None
    key_kind: str | None
    rows_in: int
    rows_kept: int
    rejected: dict[str, int] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    has_negative_key: bool = False
    has_large_key: bool = False


def _plain(array: pa.Array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = (
            array.combine_chunks()
            if array.num_chunks
            else pa.array([], array.type)
        )
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    return array


def _is_list(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
    )


def _is_text(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    )


class _RowFaults:
    """The first fault of every bad row, by row index."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.reason: np.ndarray | None = None

    def mark(
        self, rows: np.ndarray, reason: str, column: str, values=None
    ) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        if self.reason is None:
            # made on the first fault only: clean batches pay nothing
            self.reason = np.full(self.rows, "", dtype=object)
            self.column = np.full(self.rows, "", dtype=object)
            self.value = np.full(self.rows, None, dtype=object)
        fresh = self.reason[rows] == ""
        rows = rows[fresh]
        self.reason[rows] = reason
        self.column[rows] = column
        if values is not None:
            self.value[rows] = np.asarray(values, dtype=object)[fresh]

    def bad(self) -> np.ndarray:
        if self.reason is None:
            return np.zeros(self.rows, dtype=bool)
        return self.reason != ""


def _int_values(values: pa.Array) -> np.ndarray:
    """Integers as int64, or uint64 when a value exceeds int64."""
    kind = values.type
    if pa.types.is_unsigned_integer(kind):
        array = values.cast(pa.uint64()).to_numpy(zero_copy_only=False)
        if array.size and int(array.max()) <= INT64_MAX:
            return array.astype(np.int64)
        return array
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _parse_int_text(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse decimal text to 64-bit integers; return (values, ok mask)."""
    stripped = pc.utf8_trim_whitespace(values)
    ok = pc.match_substring_regex(stripped, r"^[+-]?[0-9]+$")
    ok = ok.fill_null(False).to_numpy(zero_copy_only=False)
    text = stripped.to_numpy(zero_copy_only=False)
    result = np.zeros(len(values), dtype=object)
    for index in np.flatnonzero(ok):
        number = int(text[index])
        if -(2**63) <= number <= UINT64_MAX:
            result[index] = number
        else:
            ok[index] = False
    return result, ok


def _to_int_array(numbers: np.ndarray) -> np.ndarray:
    if numbers.size == 0:
        return np.zeros(0, dtype=np.int64)
    if max(numbers) > INT64_MAX:
        return numbers.astype(np.uint64)
    return numbers.astype(np.int64)


def hash_key_array(keys: np.ndarray | pd.Series | pa.Array) -> np.ndarray:
    """pandas' stable 64-bit hash of each key, as ``hash_pandas_object``.

    Integer keys are widened to 64 bits first (int64, or uint64 above
    2**63 - 1), so a key hashes the same whatever width a file stored it
    in; int64 and uint64 give equal hashes for equal non-negative values.
    """
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        # the integer branch of hash_pandas_object, without a Series
        wide = keys.astype(np.uint64 if keys.dtype.kind == "u" else np.int64)
        return hash_array(wide).astype(np.uint64, copy=False)
    if isinstance(keys, pa.Array | pa.ChunkedArray):
        keys = keys.to_pandas()
    series = keys if isinstance(keys, pd.Series) else pd.Series(keys)
    if pd.api.types.is_integer_dtype(series.dtype):
        if pd.api.types.is_unsigned_integer_dtype(series.dtype):
            series = series.astype(np.uint64)
        else:
            series = series.astype(np.int64)
    hashed = hash_pandas_object(series, index=False)
    return hashed.to_numpy(dtype=np.uint64)


def _size_values(
    values: pa.Array, rows: np.ndarray, column: str, faults: _RowFaults
) -> np.ndarray:
    """Check sizes and return them as uint64 (0 where the row is bad)."""
    kind = values.type
    sizes = np.zeros(len(values), dtype=np.uint64)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    faults.mark(rows[nulls], "null_size", column)

    if pa.types.is_null(kind):
        return sizes
    if pa.types.is_integer(kind):
        if values.null_count == 0 and len(values):
            plain = values.to_numpy(zero_copy_only=False)
            if plain.dtype.kind == "u" or plain.min() >= 0:
                # the common case: no nulls, no negatives, no copies
                return plain.astype(np.uint64, copy=False)
        if pa.types.is_signed_integer(kind):
            signed = values.cast(pa.int64()).fill_null(0).to_numpy()
            negative = signed < 0
            faults.mark(rows[negative], "negative_size", column,
                        signed[negative])
            sizes = np.where(negative, 0, signed).astype(np.uint64)
        else:
            sizes = values.cast(pa.uint64()).fill_null(0).to_numpy()
        return sizes

    if pa.types.is_floating(kind):
        floats = values.cast(pa.float64()).fill_null(0).to_numpy()
        negative = floats < 0
        fractional = ~negative & (np.floor(floats) != floats)
        too_big = ~negative & ~fractional & (floats > FLOAT_EXACT_MAX)
        faults.mark(rows[negative], "negative_size", column, floats[negative])
        faults.mark(rows[fractional], "non_integer_size", column,
                    floats[fractional])
        faults.mark(rows[too_big], "size_overflow", column, floats[too_big])
        good = ~(negative | fractional | too_big)
        sizes[good] = floats[good].astype(np.uint64)
        return sizes

    if _is_text(kind):
        stripped = pc.utf8_trim_whitespace(values)
        text = stripped.to_numpy(zero_copy_only=False)
        digits = pc.match_substring_regex(stripped, r"^\+?[0-9]+$")
        digits = digits.fill_null(False).to_numpy(zero_copy_only=False)
        for index in np.flatnonzero(~digits & ~nulls):
            value = text[index]
            whole = _whole_number(value)
            if whole is not None:
                # "2.0" or "1e3": a whole number written as a float, as
                # JSON and Parquet floats are accepted
                digits[index] = True
                text[index] = str(whole)
                continue
            if _looks_negative(value):
                reason = "negative_size"
            elif _looks_number(value):
                reason = "non_integer_size"
            else:
                reason = "invalid_size"
            faults.mark(rows[[index]], reason, column, [value])
        fits = digits.copy()
        for index in np.flatnonzero(digits):
            if int(text[index]) > UINT64_MAX:
                fits[index] = False
                faults.mark(rows[[index]], "size_overflow", column,
                            [text[index]])
        cleaned = pa.array(text, pa.string())
        if fits.all():
            return pc.cast(cleaned, pa.uint64()).to_numpy(
                zero_copy_only=False
            )
        sizes[fits] = pc.cast(
            cleaned.filter(pa.array(fits)), pa.uint64()
        ).to_numpy(zero_copy_only=False)
        return sizes

    raise InputError(
        f"column {column!r} holds {kind}; sizes must be integers"
    )


def _whole_number(text: str) -> int | None:
    """The value of a float literal that is a whole number, exactly."""
    try:
        value = float(text)
    except ValueError:
        return None
    if value < 0 or not value.is_integer() or value > FLOAT_EXACT_MAX:
        return None
    return int(value)


def _looks_negative(text: str) -> bool:
    try:
        return float(text) < 0
    except ValueError:
        return False


def _looks_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_values(
    values: pa.Array, rows: np.ndarray, column: str, faults: _RowFaults
) -> np.ndarray:
    """A numeric column as float64, NaN where null."""
    kind = values.type
    if pa.types.is_null(kind):
        return np.full(len(values), np.nan)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        result = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    elif _is_text(kind):
        text = values.to_numpy(zero_copy_only=False)
        result = np.full(len(values), np.nan)
        for index, value in enumerate(text):
            if value is None:
                continue
            try:
                result[index] = float(value)
            except ValueError:
                faults.mark(rows[[index]], "invalid_number", column, [value])
    else:
        raise InputError(f"column {column!r} holds {kind}, not numbers")

    # NaN counts as null (pandas skips it); an infinity has no summary
    infinite = np.isinf(result)
    faults.mark(rows[infinite], "infinite_number", column, result[infinite])
    return result


def prepare_accesses(
    table: pa.Table,
    options: AccessOptions,
    where: str,
    locate: Callable[[int], str],
) -> Accesses:
    """Type, check and flatten one batch of an access log.

    Args:
        table: the batch; must hold the key, size and extra columns.
        options: how to read the columns.
        where: the file name, for messages.
        locate: names the line or row of a row index, for messages.

    Raises:
        InputError: a column has the wrong type, or a row is bad and
            ``options.skip_bad_rows`` is False.
    """
    rows_in = table.num_rows
    faults = _RowFaults(rows_in)
    row_index = np.arange(rows_in, dtype=np.int64)
    key_column = _plain(table.column(options.key))

    # -- flatten lists -----------------------------------------------------
    if _is_list(key_column.type):
        if not options.explode:
            raise InputError(
                f"{where}: column {options.key!r} holds lists "
                f"({key_column.type}); pass --explode to count each element "
                "as one access"
            )
        null_lists = key_column.is_null().to_numpy(zero_copy_only=False)
        faults.mark(row_index[null_lists], "null_key", options.key)
        key_values = _plain(pc.list_flatten(key_column))
        parents = pc.list_parent_indices(key_column).to_numpy(
            zero_copy_only=False
        ).astype(np.int64)
        lengths = pc.list_value_length(key_column).fill_null(0)
        lengths = lengths.to_numpy(zero_copy_only=False)
    elif options.explode and not pa.types.is_null(key_column.type):
        raise InputError(
            f"{where}: --explode needs a list column, but {options.key!r} "
            f"holds {key_column.type}"
        )
    else:
        key_values = key_column
        parents = row_index
        lengths = np.ones(rows_in, dtype=np.int64)

    # -- type the keys -----------------------------------------------------
    kind = key_values.type
    null_keys = key_values.is_null().to_numpy(zero_copy_only=False)
    faults.mark(parents[null_keys], "null_key", options.key)
    key_kind: str | None
    if pa.types.is_null(kind):
        key_kind = None
        keys = np.zeros(len(key_values), dtype=np.int64)
    elif pa.types.is_integer(kind):
        if options.key_type == "text":
            key_kind = "text"
            keys = key_values.cast(pa.string())
        else:
            key_kind = "int"
            keys = _int_values(key_values.fill_null(0))
    elif _is_text(kind):
        if options.key_type == "int":
            key_kind = "int"
            numbers, ok = _parse_int_text(key_values)
            bad = ~ok & ~null_keys
            faults.mark(
                parents[bad], "bad_int_key", options.key,
                key_values.filter(pa.array(bad)).to_pylist(),
            )
            numbers[~ok] = 0
            keys = _to_int_array(numbers)
            if keys.dtype == np.uint64 and any(
                number < 0 for number in numbers
            ):
                raise InputError(
                    f"{where}: column {options.key!r} holds negative keys "
                    f"beside keys above {INT64_MAX}; 64-bit keys must be "
                    "all signed or all unsigned"
                )
        else:
            key_kind = "text"
            keys = key_values
    else:
        raise InputError(
            f"{where}: column {options.key!r} holds {kind}; keys must be "
            "integers or text (--key-type text|int)"
        )

    if options.key_extents and key_kind == "text":
        raise InputError(
            f"{where}: --extent-source key needs integer keys, but column "
            f"{options.key!r} holds text; pass --key-type int if the text "
            "is decimal integers, or use --extent-source hash"
        )
    if options.key_extents and key_kind == "int" and keys.dtype == np.int64:
        negative = (keys < 0) & ~null_keys
        faults.mark(parents[negative], "negative_key", options.key,
                    keys[negative])

    # -- sizes -------------------------------------------------------------
    sizes = None
    if options.size is not None:
        size_column = _plain(table.column(options.size))
        if _is_list(size_column.type):
            size_lengths = pc.list_value_length(size_column).fill_null(-1)
            size_lengths = size_lengths.to_numpy(zero_copy_only=False)
            mismatch = size_lengths != lengths
            faults.mark(row_index[mismatch], "size_list_length",
                        options.size)
            if mismatch.any():
                # keep element positions aligned: per-row sizes of bad rows
                # are never used, so pad or cut each list to the key length
                per_element = np.zeros(len(key_values), dtype=np.uint64)
                flat = _plain(pc.list_flatten(size_column))
                flat_parents = pc.list_parent_indices(size_column).to_numpy(
                    zero_copy_only=False
                )
                flat_sizes = _size_values(
                    flat, flat_parents.astype(np.int64), options.size, faults
                )
                good_rows = ~mismatch
                element_good = good_rows[parents]
                source_good = good_rows[flat_parents]
                per_element[element_good] = flat_sizes[source_good]
                sizes = per_element
            else:
                flat = _plain(pc.list_flatten(size_column))
                sizes = _size_values(flat, parents, options.size, faults)
        else:
            row_sizes = _size_values(
                size_column, row_index, options.size, faults
            )
            sizes = row_sizes[parents]

    # -- extra numeric columns (summaries are per input row) ----------------
    extra_values = {
        name: _number_values(
            _plain(table.column(name)), row_index, name, faults
        )
        for name in options.extra
    }

    # -- bad rows ----------------------------------------------------------
    bad_rows = faults.bad()
    rejected: dict[str, int] = {}
    if bad_rows.any():
        first = int(np.flatnonzero(bad_rows)[0])
        if not options.skip_bad_rows:
            reason = faults.reason[first]
            value = faults.value[first]
            shown = "" if value is None else f" (value {value!r})"
            raise InputError(
                f"{where}: {locate(first)}: column "
                f"{faults.column[first]!r}: {_REASON_TEXT[reason]}{shown}. "
                "Fix the input or pass --on-bad-row skip to count and drop "
                "such rows."
            )
        reasons, counts = np.unique(
            faults.reason[bad_rows].astype(str), return_counts=True
        )
        rejected = {
            str(reason): int(count)
            for reason, count in zip(reasons, counts, strict=True)
        }
        keep_elements = ~bad_rows[parents]
        parents = parents[keep_elements]
        if isinstance(keys, np.ndarray):
            keys = keys[keep_elements]
        else:
            keys = keys.filter(pa.array(keep_elements))
        if sizes is not None:
            sizes = sizes[keep_elements]

    # -- hash --------------------------------------------------------------
    if isinstance(keys, np.ndarray):
        hashes = hash_key_array(keys) if key_kind else keys.astype(np.uint64)
        int_keys = keys
    else:
        hashes = hash_key_array(keys)
        int_keys = None

    good_rows = ~bad_rows
    extras = {
        name: values[good_rows & ~np.isnan(values)]
        for name, values in extra_values.items()
    }
    return Accesses(
        hashes=hashes,
        int_keys=int_keys if key_kind == "int" else None,
        sizes=sizes,
        key_kind=key_kind,
        rows_in=rows_in,
        rows_kept=int(good_rows.sum()),
        rejected=rejected,
        extra=extras,
        has_negative_key=bool(
            int_keys is not None
            and int_keys.dtype == np.int64
            and int_keys.size
            and int_keys.min() < 0
        ),
        has_large_key=bool(
            int_keys is not None
            and int_keys.dtype == np.uint64
            and int_keys.size
            and int_keys.max() > INT64_MAX
        ),
    )
