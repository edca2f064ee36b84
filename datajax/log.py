"""Logging tagged with rank and world size; console output from rank 0."""

from __future__ import annotations

import logging
import sys

_FORMAT = (
    "%(asctime)s [rank %(rank)d/%(world_size)d] %(levelname)s "
    "%(name)s: %(message)s"
)


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        record.world_size = self.world_size
        return True


def setup_logging(rank: int, world_size: int, verbose: bool = False) -> None:
    """Send DataJAX log records to stderr, tagged with the rank.

    Rank 0 logs at INFO (DEBUG with ``verbose``); the other ranks only
    report warnings and errors, so a job's console reads as one program.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RankFilter(rank, world_size))
    handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))

    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING

    root = logging.getLogger("datajax")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in ("jobs",):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
