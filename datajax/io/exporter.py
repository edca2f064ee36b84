"""WaveSpec math: hot key cohorts, coalesced page extents, pack order.

The same pieces serve the in-memory :func:`export_wave_spec` and the
streaming MPI job (``datajax-export-wavespec``): a :class:`WaveSpecState`
takes batches of accesses, states from several ranks merge exactly, and
:func:`finish_wave_spec` turns the merged state into the JSON object.

Definitions (see the project README for the full format):

* A key's hash is ``pandas.util.hash_pandas_object(keys, index=False)``;
  its prefix is the first ``prefix_len`` digits of the hash as 16
  zero-padded lowercase hex digits.
* Cohorts are the prefixes with their access counts and byte sums, sorted
  by count descending, then prefix ascending, cut to ``top_k``.
* Extents are the sorted unique pages (``hash >> page_bits``, or
  ``key >> page_bits``) coalesced into runs of consecutive pages.

Counts and byte sums are exact integers: byte sums are uint64 while they
fit and Python integers beyond that.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from datajax.io.accesses import (
    Accesses,
    AccessOptions,
    hash_key_array,
    prepare_accesses,
)
from datajax.io.sources import InputError

UINT64_MAX = 2**64 - 1
SUMMARY_QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.99)

__all__ = [
    "WaveSpecOptions",
    "WaveSpecState",
    "build_prefix_cohorts",
    "coalesce_kv_extents",
    "dumps_wave_spec",
    "export_wave_spec",
    "finish_wave_spec",
    "prefix_codes",
    "to_dlpack_columns",
    "wave_spec_pieces",
    "write_json_atomic",
]


# ---------------------------------------------------------------------------
# prefixes and cohorts


def prefix_codes(hashes: np.ndarray, prefix_len: int) -> np.ndarray:
    """The first ``prefix_len`` hex digits of each hash, as integers."""
    if not 1 <= prefix_len <= 16:
        raise ValueError(f"prefix_len must be 1 to 16, not {prefix_len!r}")
    shift = np.uint64(64 - 4 * prefix_len)
    return np.asarray(hashes, dtype=np.uint64) >> shift


def _exact_group_sums(
    codes: np.ndarray, sizes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sorted unique codes with counts and exact size sums."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(
        np.concatenate([[True], sorted_codes[1:] != sorted_codes[:-1]])
    ) if sorted_codes.size else np.zeros(0, dtype=np.int64)
    unique = sorted_codes[starts]
    counts = np.diff(np.append(starts, sorted_codes.size)).astype(np.int64)
    if sizes is None:
        return unique, counts, None

    sorted_sizes = sizes[order]
    if sorted_sizes.dtype != object and sorted_sizes.size and (
        int(sorted_sizes.max()) > UINT64_MAX // sorted_sizes.size
    ):
        sorted_sizes = sorted_sizes.astype(object)
    if sorted_sizes.size == 0:
        return unique, counts, np.zeros(0, dtype=np.uint64)
    sums = np.add.reduceat(sorted_sizes, starts)
    return unique, counts, sums


@dataclass
class CohortTable:
    """Access counts and byte sums per prefix code (codes sorted, unique)."""

    codes: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.uint64)
    )
    counts: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    sums: np.ndarray | None = None

    def add(
        self, codes: np.ndarray, sizes: np.ndarray | None
    ) -> None:
        """Count ``codes`` (one per access) with their sizes."""
        unique, counts, sums = _exact_group_sums(codes, sizes)
        self.merge(CohortTable(unique, counts, sums))

    def merge(self, other: CohortTable) -> None:
        """Fold another table into this one, exactly."""
        if other.codes.size == 0 and other.sums is None:
            return
        codes = np.concatenate([self.codes, other.codes])
        counts = np.concatenate([self.counts, other.counts])
        sums = None
        if other.sums is not None or self.sums is not None:
            mine = (
                self.sums if self.sums is not None
                else np.zeros(self.codes.size, dtype=np.uint64)
            )
            theirs = (
                other.sums if other.sums is not None
                else np.zeros(other.codes.size, dtype=np.uint64)
            )
            sums = _concat_exact(mine, theirs)

        unique, merged_counts, _ = _exact_group_sums(codes, None)
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], unique)
        self.codes = unique
        self.counts = (
            np.add.reduceat(counts[order], starts) if codes.size
            else merged_counts
        )
        if sums is not None:
            sorted_sums = sums[order]
            if sorted_sums.dtype != object and sorted_sums.size and (
                int(sorted_sums.max()) > UINT64_MAX // sorted_sums.size
            ):
                sorted_sums = sorted_sums.astype(object)
            self.sums = (
                np.add.reduceat(sorted_sums, starts) if codes.size
                else np.zeros(0, dtype=np.uint64)
            )


DENSE_PREFIX_LEN_MAX = 5
FLOAT_EXACT = 2**53


class DenseCohorts:
    """Counts and byte sums in one slot per possible prefix code.

    The fast path for short prefixes (up to 16**5 slots): a batch is
    counted with ``np.bincount``.  Byte sums go through float64 weights
    only while every partial sum stays below 2**53, where floats are exact
    integers; otherwise the batch is summed by sorting.  Once the running
    total could pass 2**64 the sums become Python integers.
    """

    def __init__(self, prefix_len: int, with_sizes: bool) -> None:
        self.slots = 16**prefix_len
        self.counts = np.zeros(self.slots, dtype=np.int64)
        self.sums = (
            np.zeros(self.slots, dtype=np.uint64) if with_sizes else None
        )
        self.total = 0

    def add(self, codes: np.ndarray, sizes: np.ndarray | None) -> None:
        if codes.size == 0:
            return
        self.counts += np.bincount(codes, minlength=self.slots)
        if self.sums is None or sizes is None:
            return

        largest = int(sizes.max())
        if largest * sizes.size < FLOAT_EXACT:
            batch = np.bincount(
                codes, weights=sizes.astype(np.float64), minlength=self.slots
            ).astype(np.uint64)
            batch_total = int(batch.sum(dtype=np.uint64))
            self.total += batch_total
            if self.sums.dtype != object and self.total <= UINT64_MAX:
                self.sums += batch
                return
            self.sums = self.sums.astype(object)
            self.sums += batch.astype(object)
            return

        unique, _, sums = _exact_group_sums(codes, sizes)
        self.total += sum(int(value) for value in sums)
        if self.sums.dtype != object and self.total > UINT64_MAX:
            self.sums = self.sums.astype(object)
        np.add.at(self.sums, unique.astype(np.int64), sums.astype(
            self.sums.dtype
        ))

    def table(self) -> CohortTable:
        """The non-empty slots as a sparse table."""
        used = np.flatnonzero(self.counts)
        return CohortTable(
            used.astype(np.uint64),
            self.counts[used],
            None if self.sums is None else self.sums[used],
        )


def _concat_exact(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    if first.dtype == object or second.dtype == object:
        return np.concatenate([first.astype(object), second.astype(object)])
    return np.concatenate([first, second])


def rank_cohorts(
    table: CohortTable, prefix_len: int, top_k: int | None
) -> list[dict[str, Any]]:
    """Cohorts sorted by count descending, then prefix; cut to ``top_k``."""
    order = np.lexsort((table.codes, -table.counts))
    if top_k is not None:
        order = order[:top_k]
    cohorts = []
    for index in order:
        cohorts.append({
            "prefix": format(int(table.codes[index]), f"0{prefix_len}x"),
            "count": int(table.counts[index]),
            "bytes": (
                None if table.sums is None else int(table.sums[index])
            ),
        })
    return cohorts


def prefix_histogram(codes: np.ndarray, prefix_len: int) -> dict[str, int]:
    """Number of distinct prefixes at each depth 1 to ``prefix_len``."""
    histogram = {}
    for depth in range(1, prefix_len + 1):
        shift = np.uint64(4 * (prefix_len - depth))
        histogram[str(depth)] = int(np.unique(codes >> shift).size)
    return histogram


def build_prefix_cohorts(
    keys: Sequence | np.ndarray | pd.Series,
    sizes: Sequence[int] | np.ndarray | pd.Series | None = None,
    *,
    prefix_len: int = 4,
    top_k: int | None = 64,
) -> list[dict[str, Any]]:
    """Group keys by hash prefix; return the hottest cohorts.

    Args:
        keys: one key per access (integers or strings, no nulls).
        sizes: bytes per access, non-negative integers, or None.
        prefix_len: hex digits of the hash that name a cohort (1 to 16).
        top_k: how many cohorts to keep; None keeps all.

    Returns:
        ``[{"prefix": str, "count": int, "bytes": int | None}, ...]``.
    """
    hashes = hash_key_array(keys)
    size_array = None
    if sizes is not None:
        size_array = np.asarray(sizes)
        if size_array.dtype.kind not in "ui":
            raise InputError("sizes must be integers")
        if size_array.size and size_array.min() < 0:
            raise InputError("sizes must be non-negative")
        size_array = size_array.astype(np.uint64)
    table = CohortTable()
    table.add(prefix_codes(hashes, prefix_len), size_array)
    return rank_cohorts(table, prefix_len, top_k)


# ---------------------------------------------------------------------------
# extents


@dataclass
class PageRuns:
    """Disjoint, sorted runs of pages: ``[first[i], last[i]]`` inclusive."""

    first: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.uint64)
    )
    last: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.uint64)
    )

    def add_pages(self, pages: np.ndarray) -> None:
        """Add pages (any order, repeats allowed)."""
        ordered = np.sort(np.asarray(pages, dtype=np.uint64))
        if ordered.size:
            changes = np.empty(ordered.size, dtype=bool)
            changes[0] = True
            np.not_equal(ordered[1:], ordered[:-1], out=changes[1:])
            ordered = ordered[changes]
        self.merge(_runs_of_sorted(ordered))

    def merge(self, other: PageRuns) -> None:
        """Union with another set of runs."""
        first = np.concatenate([self.first, other.first])
        last = np.concatenate([self.last, other.last])
        merged = _merge_runs(first, last)
        self.first, self.last = merged.first, merged.last


def _runs_of_sorted(pages: np.ndarray) -> PageRuns:
    if pages.size == 0:
        return PageRuns()
    breaks = np.flatnonzero(np.diff(pages) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [pages.size - 1]])
    return PageRuns(pages[starts], pages[ends])


def _merge_runs(first: np.ndarray, last: np.ndarray) -> PageRuns:
    """Union of inclusive runs; touching runs join."""
    if first.size == 0:
        return PageRuns()
    order = np.lexsort((last, first))
    first, last = first[order], last[order]
    reach = np.maximum.accumulate(last)
    previous = np.concatenate([[np.uint64(0)], reach[:-1]])
    gap = first > previous
    # first - previous only matters (and cannot wrap) where gap holds
    new_run = np.ones(first.size, dtype=bool)
    new_run[1:] = gap[1:] & ((first[1:] - previous[1:]) > 1)
    starts = np.flatnonzero(new_run)
    ends = np.concatenate([starts[1:] - 1, [first.size - 1]])
    return PageRuns(first[starts], reach[ends])


def extents_of(runs: PageRuns) -> list[dict[str, int]]:
    """The runs as ``[{"start_page", "npages"}]``."""
    return [
        {"start_page": int(first), "npages": int(last) - int(first) + 1}
        for first, last in zip(runs.first, runs.last, strict=True)
    ]


def coalesce_kv_extents(
    pages: Iterable[int] | np.ndarray,
) -> list[dict[str, int]]:
    """Coalesce page numbers into runs of consecutive pages.

    Args:
        pages: page numbers (non-negative, below 2**64), any order,
            repeats allowed; e.g. ``hash >> page_bits``.

    Returns:
        ``[{"start_page": int, "npages": int}, ...]`` sorted by start.
    """
    values = np.asarray(list(pages) if not isinstance(pages, np.ndarray)
                        else pages)
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        raise ValueError("page numbers must be non-negative")
    runs = PageRuns()
    runs.add_pages(values.astype(np.uint64))
    return extents_of(runs)


# ---------------------------------------------------------------------------
# numeric summaries


@dataclass
class ValueCounts:
    """Exact multiset of float values: sorted unique values and counts.

    Memory grows with the number of distinct values, not rows; a column of
    mostly distinct floats is held whole.
    """

    values: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.float64)
    )
    counts: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )

    def add(self, values: np.ndarray) -> None:
        unique, counts = np.unique(values, return_counts=True)
        self.merge(ValueCounts(unique, counts.astype(np.int64)))

    def merge(self, other: ValueCounts) -> None:
        values = np.concatenate([self.values, other.values])
        counts = np.concatenate([self.counts, other.counts])
        unique, inverse = np.unique(values, return_inverse=True)
        totals = np.zeros(unique.size, dtype=np.int64)
        np.add.at(totals, inverse, counts)
        self.values = unique
        self.counts = totals


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarize(counts: ValueCounts) -> dict[str, Any]:
    """count, mean, std (sample), min, max and quantiles, as pandas gives.

    Quantiles interpolate linearly between order statistics, like
    ``pandas.Series.quantile``.  Empty columns give nulls.
    """
    total = int(counts.counts.sum())
    summary: dict[str, Any] = {"count": total}
    names = ["mean", "std", "min", "max"] + [
        f"p{round(q * 100)}" for q in SUMMARY_QUANTILES
    ]
    if total == 0:
        summary.update({name: None for name in names})
        return summary

    values = counts.values
    weights = counts.counts
    pairs = list(zip(values.tolist(), weights.tolist(), strict=True))
    mean = math.fsum(v * w for v, w in pairs)
    mean /= total
    if total > 1:
        squares = math.fsum(
            w * (v - mean) ** 2
            for v, w in zip(values.tolist(), weights.tolist(), strict=True)
        )
        std = math.sqrt(squares / (total - 1))
    else:
        std = float("nan")

    summary["mean"] = _finite(mean)
    summary["std"] = _finite(std)
    summary["min"] = _finite(values[0])
    summary["max"] = _finite(values[-1])
    cumulative = np.cumsum(weights)
    for q in SUMMARY_QUANTILES:
        position = q * (total - 1)
        below = math.floor(position)
        fraction = position - below
        low = values[int(np.searchsorted(cumulative, below, side="right"))]
        high = values[
            int(np.searchsorted(cumulative, min(below + 1, total - 1),
                                side="right"))
        ]
        value = low + (high - low) * fraction if fraction else low
        summary[f"p{round(q * 100)}"] = _finite(value)
    return summary


# ---------------------------------------------------------------------------
# the whole spec


@dataclass(frozen=True)
class WaveSpecOptions:
    """What a WaveSpec is computed from; mirrors the job's flags."""

    key: str
    size: str | None = None
    prefix_len: int = 4
    page_bits: int = 20
    top_k: int | None = 64
    explode: bool = False
    extent_source: str = "hash"
    key_type: str = "auto"
    chunk_len: str | None = None
    window: str | None = None
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.prefix_len <= 16:
            raise InputError(
                f"--prefix-len must be 1 to 16, not {self.prefix_len!r}"
            )
        if not 0 <= self.page_bits <= 63:
            raise InputError(
                f"--page-bits must be 0 to 63, not {self.page_bits!r}"
            )
        if self.top_k is not None and self.top_k < 0:
            raise InputError(f"--top-k must be >= 0, not {self.top_k!r}")
        if self.extent_source not in ("hash", "key"):
            raise InputError(
                "--extent-source must be hash or key, "
                f"not {self.extent_source!r}"
            )
        if self.key_type not in ("auto", "text", "int"):
            raise InputError(
                f"--key-type must be text or int, not {self.key_type!r}"
            )

    @property
    def extra(self) -> tuple[str, ...]:
        return tuple(
            name for name in (self.chunk_len, self.window) if name is not None
        )

    def access_options(self) -> AccessOptions:
        return AccessOptions(
            key=self.key,
            size=self.size,
            extra=self.extra,
            explode=self.explode,
            key_type=self.key_type,
            key_extents=self.extent_source == "key",
            skip_bad_rows=self.skip_bad_rows,
        )


@dataclass
class WaveSpecState:
    """Everything a WaveSpec needs, mergeable across batches and ranks."""

    options: WaveSpecOptions
    cohorts: CohortTable = field(default_factory=CohortTable)
    pages: PageRuns = field(default_factory=PageRuns)
    extras: dict[str, ValueCounts] = field(default_factory=dict)
    rows_in: int = 0
    row_count: int = 0
    total_bytes: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    key_kinds: set[str] = field(default_factory=set)
    has_negative_key: bool = False
    has_large_key: bool = False

    def __post_init__(self) -> None:
        if self.options.size is not None and self.cohorts.sums is None:
            self.cohorts.sums = np.zeros(0, dtype=np.uint64)
        for name in self.options.extra:
            self.extras.setdefault(name, ValueCounts())
        self._dense: DenseCohorts | None = None
        if self.options.prefix_len <= DENSE_PREFIX_LEN_MAX:
            self._dense = DenseCohorts(
                self.options.prefix_len, self.options.size is not None
            )

    def flush(self) -> None:
        """Fold the fast-path counters into ``cohorts``; call before reading
        ``cohorts``."""
        if self._dense is not None and self._dense.counts.any():
            self.cohorts.merge(self._dense.table())
            self._dense = DenseCohorts(
                self.options.prefix_len, self.options.size is not None
            )

    def add(self, accesses: Accesses) -> None:
        """Fold one prepared batch in."""
        options = self.options
        self.rows_in += accesses.rows_in
        self.row_count += int(accesses.hashes.size)
        for reason, count in accesses.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count
        if accesses.key_kind is not None and accesses.hashes.size:
            self.key_kinds.add(accesses.key_kind)
        self.has_negative_key |= accesses.has_negative_key
        self.has_large_key |= accesses.has_large_key

        if accesses.sizes is not None and accesses.sizes.size:
            sizes = accesses.sizes
            if int(sizes.max()) > UINT64_MAX // sizes.size:
                self.total_bytes += sum(int(value) for value in sizes)
            else:
                self.total_bytes += int(sizes.sum(dtype=np.uint64))

        codes = prefix_codes(accesses.hashes, options.prefix_len)
        if self._dense is not None:
            self._dense.add(codes, accesses.sizes)
        else:
            self.cohorts.add(codes, accesses.sizes)
        if options.extent_source == "key" and accesses.int_keys is not None:
            source = accesses.int_keys.astype(np.uint64)
        else:
            source = accesses.hashes
        self.pages.add_pages(source >> np.uint64(options.page_bits))

        for name, values in accesses.extra.items():
            self.extras[name].add(values)

    def merge(self, other: WaveSpecState) -> None:
        """Fold another state (another rank's) in."""
        self.rows_in += other.rows_in
        self.row_count += other.row_count
        self.total_bytes += other.total_bytes
        for reason, count in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count
        self.key_kinds |= other.key_kinds
        self.has_negative_key |= other.has_negative_key
        self.has_large_key |= other.has_large_key
        self.flush()
        other.flush()
        self.cohorts.merge(other.cohorts)
        self.pages.merge(other.pages)
        for name, counts in other.extras.items():
            self.extras.setdefault(name, ValueCounts()).merge(counts)

    def check_keys(self) -> None:
        """Raise if keys of different kinds or signs met across inputs."""
        if len(self.key_kinds) > 1:
            raise InputError(
                f"column {self.options.key!r} holds integer keys in some "
                "inputs and text keys in others (CSV keys are text unless "
                "--key-type int); pass --key-type text or --key-type int"
            )
        if self.has_negative_key and self.has_large_key:
            raise InputError(
                f"column {self.options.key!r} holds negative keys beside "
                f"keys above {2**63 - 1}; 64-bit keys must be all signed "
                "or all unsigned"
            )


def pack_order(
    usage: Mapping[str, int] | None, key_column: str
) -> list[str]:
    """Columns by usage count descending, then name."""
    if not usage:
        return [key_column]
    return sorted(usage, key=lambda name: (-usage[name], name))


def finish_wave_spec(
    state: WaveSpecState,
    usage: Mapping[str, int] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    with_extents: bool = True,
) -> dict[str, Any]:
    """Assemble the WaveSpec JSON object from a (merged) state.

    With ``with_extents=False`` the ``extents`` entry is None: pass
    ``state.pages`` to :func:`dumps_wave_spec` to write them.
    """
    state.check_keys()
    state.flush()
    options = state.options
    kind = next(iter(state.key_kinds), None)
    meta: dict[str, Any] = {
        "page_bits": options.page_bits,
        "row_count": state.row_count,
        "approx_bytes": state.total_bytes if options.size else None,
        "key_column": options.key,
        "size_column": options.size,
        "prefix_len": options.prefix_len,
        "top_k": options.top_k,
        "explode": options.explode,
        "extent_source": options.extent_source,
        "key_type": kind,
        "chunk_len_column": options.chunk_len,
        "chunk_len_summary": (
            summarize(state.extras[options.chunk_len])
            if options.chunk_len else None
        ),
        "window_column": options.window,
        "window_summary": (
            summarize(state.extras[options.window])
            if options.window else None
        ),
        "input_rows": state.rows_in,
        "rows_rejected": dict(sorted(state.rejected.items())),
        "distinct_prefixes": int(state.cohorts.codes.size),
        "extent_count": int(state.pages.first.size),
    }
    if extra_meta:
        meta.update(extra_meta)

    return {
        "cohorts": rank_cohorts(
            state.cohorts, options.prefix_len, options.top_k
        ),
        "extents": extents_of(state.pages) if with_extents else None,
        "pack_order": pack_order(usage, options.key),
        "meta": meta,
        "prefix_histogram": prefix_histogram(
            state.cohorts.codes, options.prefix_len
        ),
    }


_EXTENTS_MARK = "__datajax_extents__"
_EXTENT_HEAD = '    {\n      "start_page": '
_EXTENT_MIDDLE = ',\n      "npages": '
_EXTENT_TAIL = "\n    }"
_EXTENT_ITEM = _EXTENT_HEAD + "%d" + _EXTENT_MIDDLE + "%d" + _EXTENT_TAIL

# bytes-like pieces that, joined, make one text file
Pieces = Iterable[bytes | memoryview]

# extents formatted per piece: about 4 MB of text, so the job never holds
# the whole extents text (tens of MB) at once
EXTENTS_PER_PIECE = 1 << 16


def _extents_pieces(runs: PageRuns) -> Iterator[bytes | memoryview]:
    """``runs`` as ``json.dumps(extents_of(runs), indent=2)`` nested one
    level deep would write them, without building one dict per extent.

    The numbers are formatted and joined by pyarrow in C++, a slice of
    ``EXTENTS_PER_PIECE`` runs at a time: about 0.07 s for half a million
    extents, where Python string formatting takes 0.3.
    """
    if runs.first.size == 0:
        yield b"[]"
        return
    spans = runs.last - runs.first
    if bool((spans == np.uint64(UINT64_MAX)).any()):
        # one run holds all 2**64 pages: npages does not fit in 64 bits
        lengths = spans.astype(object) + 1
        items = ",\n".join(
            _EXTENT_ITEM % pair
            for pair in zip(runs.first.tolist(), lengths, strict=True)
        )
        yield from (b"[\n", items.encode("ascii"), b"\n  ]")
        return

    def text(value: str) -> pa.Scalar:
        return pa.scalar(value, type=pa.large_string())

    head, middle = text(_EXTENT_HEAD), text(_EXTENT_MIDDLE)
    tail, nothing = text(_EXTENT_TAIL + ",\n"), text("")
    yield b"[\n"
    for begin in range(0, runs.first.size, EXTENTS_PER_PIECE):
        end = begin + EXTENTS_PER_PIECE
        starts = pa.array(runs.first[begin:end]).cast(pa.large_string())
        lengths = pa.array(spans[begin:end] + np.uint64(1)).cast(
            pa.large_string()
        )
        items = pc.binary_join_element_wise(
            head, starts, middle, lengths, tail, nothing
        )
        # the items lie end to end in the array's data buffer
        _, offsets_buffer, data = items.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int64)
        first = int(offsets[items.offset])
        stop = int(offsets[items.offset + len(items)])
        if end >= runs.first.size:
            stop -= len(",\n")
        yield memoryview(data)[first:stop]
    yield b"\n  ]"


def wave_spec_pieces(
    spec: Mapping[str, Any], runs: PageRuns | None = None
) -> Iterator[bytes | memoryview]:
    """The canonical JSON of a WaveSpec as bytes-like pieces, made as they
    are consumed.

    With ``runs`` the extents come straight from the page runs
    (``spec["extents"]`` is ignored): the same bytes as ``json.dumps``
    would write, much faster when there are millions of extents, and
    never held whole in memory.
    """
    if runs is None:
        yield (json.dumps(spec, indent=2, allow_nan=False) + "\n").encode()
        return
    marked = {**spec, "extents": _EXTENTS_MARK}
    text = json.dumps(marked, indent=2, allow_nan=False) + "\n"
    head, mark, tail = text.partition(f'"{_EXTENTS_MARK}"')
    if not mark:
        raise AssertionError("the extents mark is missing from the JSON")
    yield head.encode("utf-8")
    yield from _extents_pieces(runs)
    yield tail.encode("utf-8")


def dumps_wave_spec(
    spec: Mapping[str, Any], runs: PageRuns | None = None
) -> str:
    """The canonical JSON text of a WaveSpec (no NaN, stable layout).

    With ``runs`` the extents are written straight from the page runs;
    see :func:`wave_spec_pieces`, which the job uses to write the file
    without building this string.
    """
    return b"".join(wave_spec_pieces(spec, runs)).decode("utf-8")


def write_json_atomic(path: str, text: str | bytes | Pieces) -> None:
    """Write ``text`` (a string, bytes, or bytes-like pieces) to ``path``
    through a temporary file and a rename."""
    if isinstance(text, str):
        pieces: Pieces = [text.encode("utf-8")]
    elif isinstance(text, bytes | bytearray | memoryview):
        pieces = [text]
    else:
        pieces = text
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        prefix=".tmp-", suffix=".json", dir=folder
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            for piece in pieces:
                stream.write(piece)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file 0600; give it the mode open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def export_wave_spec(
    frame: pd.DataFrame | pa.Table,
    key_column: str,
    size_column: str | None = None,
    *,
    prefix_len: int = 4,
    page_bits: int = 20,
    top_k: int | None = 64,
    usage: Mapping[str, int] | None = None,
    explode: bool = False,
    extent_source: str = "hash",
    key_type: str = "auto",
    chunk_len_column: str | None = None,
    window_column: str | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Compute a WaveSpec from a table in memory (one process).

    The job ``datajax-export-wavespec`` computes the same object from files,
    in batches and across ranks.  Arguments mirror its flags.  With ``out``
    the JSON is also written there atomically.
    """
    options = WaveSpecOptions(
        key=key_column,
        size=size_column,
        prefix_len=prefix_len,
        page_bits=page_bits,
        top_k=top_k,
        explode=explode,
        extent_source=extent_source,
        key_type=key_type,
        chunk_len=chunk_len_column,
        window=window_column,
    )
    table = (
        frame if isinstance(frame, pa.Table)
        else pa.Table.from_pandas(frame, preserve_index=False)
    )
    missing = [
        name for name in (key_column, size_column, *options.extra)
        if name is not None and name not in table.column_names
    ]
    if missing:
        raise InputError(
            f"column {missing[0]!r} not found; the table has columns "
            f"{', '.join(map(repr, table.column_names))}"
        )

    state = WaveSpecState(options)
    accesses = prepare_accesses(
        table, options.access_options(), "<table>",
        lambda row: f"row {row + 1}",
    )
    state.add(accesses)
    spec = finish_wave_spec(state, usage)
    if out is not None:
        write_json_atomic(out, dumps_wave_spec(spec))
    return spec


def to_dlpack_columns(
    frame: pd.DataFrame, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Numeric columns as contiguous arrays that speak DLPack.

    Each value supports ``__dlpack__`` (``numpy.from_dlpack`` or
    ``torch.from_dlpack`` take it without copying).  Columns with nulls,
    strings or objects cannot cross DLPack and raise TypeError.
    """
    names = list(frame.columns if columns is None else columns)
    result = {}
    for name in names:
        series = frame[name]
        if series.isna().any():
            raise TypeError(
                f"column {name!r} has nulls; DLPack has no null mask"
            )
        array = series.to_numpy()
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"column {name!r} has dtype {series.dtype}; DLPack takes "
                "booleans, integers and floats"
            )
        result[name] = np.ascontiguousarray(array)
    return result
