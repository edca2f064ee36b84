"""Finding input files and dividing them among ranks.

The partition math is pure: functions of file sizes, row-group sizes and
``(rank, size)``, with no MPI, so it is tested in one process.

All input files are laid end to end in one global byte space, in the order
they were named (a directory or glob expands to its files in sorted
order).  Rank ``r`` of ``n`` owns the bytes ``[r*T//n, (r+1)*T//n)`` of that
space, ``T`` being the total size.  A text record belongs to the rank whose
bytes hold its first byte; a Parquet row group belongs to the rank whose
bytes hold its first byte, measured by its share of the file's rows.  Every
record and row group therefore has exactly one owner, whatever ``n`` is.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FORMATS = ("csv", "json", "parquet")

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class InputError(ValueError):
    """Bad input: a message naming the file, column and row where known."""


@dataclass(frozen=True)
class InputFile:
    """One input file, as every rank sees it."""

    path: str
    format: str
    size: int


@dataclass(frozen=True)
class ByteShare:
    """The records of a text file whose first byte lies in [start, stop)."""

    file_index: int
    start: int
    stop: int


@dataclass(frozen=True)
class FileSpan:
    """The part of the global byte space one file occupies."""

    file_index: int
    offset: int
    size: int


def format_of(path: str, explicit: str | None) -> str:
    """Return the input format of ``path``: ``explicit`` or its suffix."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise InputError(
                f"--format must be one of {', '.join(FORMATS)}, "
                f"not {explicit!r}"
            )
        return explicit

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIX_FORMATS:
        raise InputError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; "
            "pass --format csv|json|parquet"
        )
    return _SUFFIX_FORMATS[suffix]


def _expand_one(spec: str) -> list[str]:
    if os.path.isdir(spec):
        names = []
        for dirpath, dirnames, filenames in os.walk(spec):
            # hidden and underscore folders (.git, _temporary) are skipped
            dirnames[:] = [
                name for name in dirnames if not name.startswith((".", "_"))
            ]
            names.extend(
                os.path.join(dirpath, name)
                for name in filenames
                if not name.startswith((".", "_"))
            )
        names.sort()
        if not names:
            raise InputError(f"{spec}: the directory holds no input files")
        return names

    if glob.has_magic(spec):
        names = sorted(
            name for name in glob.glob(spec, recursive=True)
            if os.path.isfile(name)
        )
        if not names:
            raise InputError(f"{spec}: the pattern matches no files")
        return names

    if not os.path.exists(spec):
        raise InputError(f"{spec}: no such file")
    if not os.path.isfile(spec):
        raise InputError(f"{spec}: not a regular file")
    return [spec]


def discover_inputs(
    specs: Sequence[str], explicit_format: str | None
) -> list[InputFile]:
    """Expand files, directories and globs into the ordered input list.

    Directories are walked recursively in sorted order; files and folders
    whose names start with ``.`` or ``_`` (``_SUCCESS``, ``.git``) are
    skipped there.  A
    file named twice is read once.  Raises InputError for anything that
    does not exist or cannot be typed.
    """
    if not specs:
        raise InputError("no input: pass --logs PATH at least once")

    seen: set[str] = set()
    files: list[InputFile] = []
    for spec in specs:
        for path in _expand_one(spec):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            fmt = format_of(path, explicit_format)
            try:
                size = os.path.getsize(path)
                with open(path, "rb"):
                    pass
            except OSError as error:
                raise InputError(
                    f"{path}: cannot be read ({error.strerror})"
                ) from error
            files.append(InputFile(path, fmt, size))
    return files


# ---------------------------------------------------------------------------
# pure partition math


def rank_byte_range(total: int, rank: int, size: int) -> tuple[int, int]:
    """Return the slice ``[start, stop)`` of ``total`` bytes rank owns."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"bad rank {rank} of world size {size}")
    return total * rank // size, total * (rank + 1) // size


def file_spans(sizes: Iterable[int]) -> list[FileSpan]:
    """Lay files end to end; return where each one sits."""
    spans = []
    offset = 0
    for index, size in enumerate(sizes):
        spans.append(FileSpan(index, offset, size))
        offset += size
    return spans


def text_shares(
    sizes: Sequence[int], rank: int, size: int
) -> list[ByteShare]:
    """Byte ranges of each text file whose records this rank reads.

    A file of zero bytes yields no share.
    """
    spans = file_spans(sizes)
    total = sum(sizes)
    lo, hi = rank_byte_range(total, rank, size)
    shares = []
    for span in spans:
        start = max(lo, span.offset) - span.offset
        stop = min(hi, span.offset + span.size) - span.offset
        if start < stop:
            shares.append(ByteShare(span.file_index, start, stop))
    return shares


def owns_offset(offset: int, total: int, rank: int, size: int) -> bool:
    """True if the byte at global ``offset`` lies in rank's slice."""
    lo, hi = rank_byte_range(total, rank, size)
    return lo <= offset < hi


def row_group_owner_offsets(
    span: FileSpan, row_group_rows: Sequence[int]
) -> list[int]:
    """Global offset that decides each row group's owner.

    A row group's position is its share of the file's rows mapped onto the
    file's bytes, so row groups spread over ranks the way the bytes do.
    """
    total_rows = sum(row_group_rows)
    offsets = []
    rows_before = 0
    for rows in row_group_rows:
        if total_rows == 0:
            local = 0
        else:
            local = span.size * rows_before // total_rows
        offsets.append(span.offset + min(local, max(span.size - 1, 0)))
        rows_before += rows
    return offsets
