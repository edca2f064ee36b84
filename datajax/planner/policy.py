"""Staged policies: tile sizes and pipeline depth from plan metrics.

A staged policy suggests how a kernel that streams a plan's rows should be
tiled: ``BM`` rows per tile, ``BN`` column lanes per tile, ``BK`` the depth
of one step of the inner loop, ``swizzle_size`` how many neighbouring tiles
are scheduled together so that they share what sits in L2, and
``stage_depth`` how many tiles are in flight at once (buffers loading while
one is computed).  Each knob is a function of named metrics; a measured
runtime value is used where the metrics carry one, else the planner's
estimate, else a stated default.  ``notes`` say which, knob by knob, and
``inputs`` holds every input with its source (``runtime``, ``estimate`` or
``default``).

The formulas (``ceil16``/``floor16`` round to a multiple of 16; every
tile size is a multiple of 16):

``BM`` (16 to 256)
    ``rows_per_rank = ceil(estimated_input_rows / world_size)`` over the
    target mesh, ``row_width`` the estimated bytes per input row.
    ``BM = clamp(floor16(32768 / row_width), 16, 256)``: a tile of BM
    packed rows fits 32 KiB, so wider rows give fewer rows per tile.  It
    is then capped at ``max(16, ceil16(rows_per_rank))``: a rank never
    gets a tile taller than its share.  Without rows the cap is dropped
    (``rows_per_rank`` is a default); without a row width BM is 128.
    More ranks or fewer rows never raise BM; wider rows never raise it.

``BN`` (16 to 256)
    ``columns_read`` = columns (input or derived) the plan reads at
    least once (``column_usage`` > 0).  ``BN = clamp(16 * columns_read,
    16, 256)``: 16 lanes per column read.  64 when the plan reads no
    column.  Never decreases as the plan reads more columns.

``BK`` (16 to 128)
    ``occupancy`` = ``runtime_wgmma_occupancy``, else the estimated
    ``occupancy_proxy`` (when the plan has rows), else 0.5.
    ``BK = 16 * clamp(round(8 * occupancy), 1, 8)``: busy units afford a
    deeper step; low occupancy asks for a shallow one so that more warps
    fit.  Never decreases as occupancy rises.

``swizzle_size`` (1, 2, 4, 8 or 16)
    ``l2_reuse`` = ``runtime_l2_reuse``, else the estimated
    ``l2_reuse_proxy`` (when the plan reads any column), else 0.
    ``swizzle_size = 2 ** clamp(round(4 * l2_reuse), 0, 4)``: the more a
    column is read again, the more tiles are grouped to share it.  Never
    decreases as reuse rises.

``stage_depth`` (2 to 6)
    ``shuffle_ratio = shuffle_bytes / bytes_moved``: the runtime values
    when both ``runtime_shuffle_bytes`` and ``runtime_bytes_moved`` are
    present (the two must describe the same run; one alone is noted and
    not used), else the estimates ``shuffle_bytes`` and
    ``estimated_input_bytes``.  ``stage_depth = 2 + min(4,
    ceil(8 * shuffle_ratio))``, computed on the integers (no rounding):
    2 when nothing crosses ranks, one more stage per eighth of the bytes
    that cross ranks, up to 6.  Rises with shuffle bytes, falls with
    bytes moved; zero bytes moved with a shuffle gives 6.

Each runtime counter drives exactly one knob; ``world_size`` only enters
``BM``.  The policy is a pure function of the metrics and the target world
size, so the same inputs give the same policy whatever ran them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datajax.planner.metrics import PlanMetrics

__all__ = [
    "BK_MAX",
    "BK_MIN",
    "BM_MAX",
    "BM_MIN",
    "BN_MAX",
    "BN_MIN",
    "STAGE_DEPTH_MAX",
    "STAGE_DEPTH_MIN",
    "SWIZZLE_SIZES",
    "TILE_MULTIPLE",
    "PolicyInput",
    "StagedPolicy",
    "tune_policy",
]

TILE_MULTIPLE = 16
BM_MIN, BM_MAX, BM_DEFAULT = 16, 256, 128
BN_MIN, BN_MAX, BN_DEFAULT = 16, 256, 64
BK_MIN, BK_MAX = 16, 128
SWIZZLE_SIZES = (1, 2, 4, 8, 16)
STAGE_DEPTH_MIN, STAGE_DEPTH_MAX = 2, 6

# a BM-row tile of packed rows fits this many bytes
TILE_BYTES = 32 * 1024
LANES_PER_COLUMN = 16
# steps of BK and of stage_depth per unit of their input
BK_STEPS = 8
SHUFFLE_STEPS = 8
SWIZZLE_STEPS = 4
DEFAULT_OCCUPANCY = 0.5
DEFAULT_L2_REUSE = 0.0

SOURCES = ("runtime", "estimate", "default")


@dataclass(frozen=True)
class PolicyInput:
    """One input of the policy: its value and where it came from.

    Attributes:
        value: the number used.
        source: ``runtime`` (a measured counter), ``estimate`` (the
            planner's) or ``default``.
        origin: a readable detail: the file or variable of a runtime
            value, the metric of an estimate, why a default was taken.
    """

    value: int | float | None
    source: str
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "source": self.source,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class StagedPolicy:
    """Tile sizes and pipeline depth, with the inputs behind them."""

    BM: int
    BN: int
    BK: int
    swizzle_size: int
    stage_depth: int
    notes: tuple[str, ...] = ()
    inputs: Mapping[str, PolicyInput] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the knobs, ``notes`` and ``inputs``."""
        return {
            "BM": self.BM,
            "BN": self.BN,
            "BK": self.BK,
            "swizzle_size": self.swizzle_size,
            "stage_depth": self.stage_depth,
            "notes": list(self.notes),
            "inputs": {
                name: value.to_dict()
                for name, value in sorted(self.inputs.items())
            },
        }


# ---------------------------------------------------------------------------
# arithmetic


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def _floor16(value: float) -> int:
    return TILE_MULTIPLE * math.floor(value / TILE_MULTIPLE)


def _ceil16(value: float) -> int:
    return TILE_MULTIPLE * math.ceil(value / TILE_MULTIPLE)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _fraction(value: Any) -> float:
    """A finite number clamped to [0, 1]; anything else counts as 0."""
    if value is None or isinstance(value, bool):
        return 0.0
    number = float(value)
    if not math.isfinite(number):
        return 0.0
    return min(1.0, max(0.0, number))


def _runtime_label(key: str, origins: Mapping[str, str]) -> str:
    where = origins.get(key)
    return f"runtime_{key}" + (f" from {where}" if where else "")


# ---------------------------------------------------------------------------
# one function per knob: (knob, inputs, note)


def _bm(metrics: PlanMetrics, world_size: int):
    rows = int(metrics.estimated_input_rows)
    width = int(metrics.row_width)
    inputs = {}
    if rows > 0:
        per_rank = -(-rows // world_size)
        inputs["rows_per_rank"] = PolicyInput(
            per_rank, "estimate",
            f"ceil(estimated_input_rows={rows} / world_size={world_size})",
        )
    else:
        per_rank = None
        inputs["rows_per_rank"] = PolicyInput(
            None, "default", "no sample rows: the share is not capped"
        )
    if width > 0:
        inputs["row_width"] = PolicyInput(
            width, "estimate", "row_width (bytes per input row)"
        )
    else:
        inputs["row_width"] = PolicyInput(
            None, "default", f"no row width: BM={BM_DEFAULT}"
        )
        return BM_DEFAULT, inputs, (
            f"BM={BM_DEFAULT}: default, the plan has no row width"
        )

    by_width = _clamp(_floor16(TILE_BYTES / width), BM_MIN, BM_MAX)
    bm = by_width
    note = (
        f"BM={{bm}}: clamp(floor16({TILE_BYTES} / row_width={width}), "
        f"{BM_MIN}, {BM_MAX})={by_width}"
    )
    if per_rank is not None:
        cap = max(BM_MIN, _ceil16(per_rank))
        bm = min(by_width, cap)
        note += f", cap ceil16(rows_per_rank={per_rank})={cap}"
    return bm, inputs, note.format(bm=bm)


def _bn(metrics: PlanMetrics):
    read = sum(1 for count in metrics.column_usage.values() if count > 0)
    if read == 0:
        value = PolicyInput(
            0, "default", f"the plan reads no column: BN={BN_DEFAULT}"
        )
        return BN_DEFAULT, {"columns_read": value}, (
            f"BN={BN_DEFAULT}: default, the plan reads no column"
        )
    bn = _clamp(LANES_PER_COLUMN * read, BN_MIN, BN_MAX)
    value = PolicyInput(
        read, "estimate", "columns with column_usage > 0"
    )
    return bn, {"columns_read": value}, (
        f"BN={bn}: clamp({LANES_PER_COLUMN} * columns_read={read}, "
        f"{BN_MIN}, {BN_MAX}) (estimate)"
    )


def _bk(metrics: PlanMetrics, origins: Mapping[str, str]):
    if metrics.runtime_wgmma_occupancy is not None:
        occupancy = _fraction(metrics.runtime_wgmma_occupancy)
        value = PolicyInput(
            occupancy, "runtime",
            _runtime_label("wgmma_occupancy", origins),
        )
    elif metrics.estimated_input_rows > 0:
        occupancy = _fraction(metrics.occupancy_proxy)
        value = PolicyInput(occupancy, "estimate", "occupancy_proxy")
    else:
        occupancy = DEFAULT_OCCUPANCY
        value = PolicyInput(
            occupancy, "default",
            "no runtime occupancy and no rows to estimate it",
        )
    steps = _clamp(_round_half_up(BK_STEPS * occupancy), 1, BK_STEPS)
    bk = TILE_MULTIPLE * steps
    return bk, {"occupancy": value}, (
        f"BK={bk}: 16 * clamp(round({BK_STEPS} * occupancy={occupancy:.4g})"
        f", 1, {BK_STEPS}) ({value.source})"
    )


def _swizzle(metrics: PlanMetrics, origins: Mapping[str, str]):
    if metrics.runtime_l2_reuse is not None:
        reuse = _fraction(metrics.runtime_l2_reuse)
        value = PolicyInput(
            reuse, "runtime", _runtime_label("l2_reuse", origins)
        )
    elif any(count > 0 for count in metrics.column_usage.values()):
        reuse = _fraction(metrics.l2_reuse_proxy)
        value = PolicyInput(reuse, "estimate", "l2_reuse_proxy")
    else:
        reuse = DEFAULT_L2_REUSE
        value = PolicyInput(
            reuse, "default",
            "no runtime l2_reuse and no column reads to estimate it",
        )
    power = _clamp(_round_half_up(SWIZZLE_STEPS * reuse), 0, SWIZZLE_STEPS)
    size = SWIZZLE_SIZES[power]
    return size, {"l2_reuse": value}, (
        f"swizzle_size={size}: 2 ** clamp(round({SWIZZLE_STEPS} * "
        f"l2_reuse={reuse:.4g}), 0, {SWIZZLE_STEPS}) ({value.source})"
    )


def _stage_depth(metrics: PlanMetrics, origins: Mapping[str, str]):
    runtime_shuffle = metrics.runtime_shuffle_bytes
    runtime_moved = metrics.runtime_bytes_moved
    extra = ""
    if runtime_shuffle is not None and runtime_moved is not None:
        shuffle, moved, source = int(runtime_shuffle), int(runtime_moved), (
            "runtime"
        )
        inputs = {
            "shuffle_bytes": PolicyInput(
                shuffle, "runtime", _runtime_label("shuffle_bytes", origins)
            ),
            "bytes_moved": PolicyInput(
                moved, "runtime", _runtime_label("bytes_moved", origins)
            ),
        }
    else:
        shuffle = int(metrics.shuffle_bytes)
        moved = int(metrics.estimated_input_bytes)
        source = "estimate"
        inputs = {
            "shuffle_bytes": PolicyInput(
                shuffle, "estimate", "shuffle_bytes (planner)"
            ),
            "bytes_moved": PolicyInput(
                moved, "estimate", "estimated_input_bytes"
            ),
        }
        alone = [
            key for key, given in (
                ("shuffle_bytes", runtime_shuffle),
                ("bytes_moved", runtime_moved),
            )
            if given is not None
        ]
        if alone:
            extra = (
                f"; runtime_{alone[0]} was given without its partner, so "
                "the ratio uses the estimates (the two must describe one "
                "run)"
            )

    if shuffle == 0:
        eighths = 0
    elif moved == 0:
        eighths = SHUFFLE_STEPS
    else:
        eighths = -(-SHUFFLE_STEPS * shuffle // moved)  # exact ceil
    depth = STAGE_DEPTH_MIN + min(
        STAGE_DEPTH_MAX - STAGE_DEPTH_MIN, eighths
    )
    return depth, inputs, (
        f"stage_depth={depth}: 2 + min(4, ceil({SHUFFLE_STEPS} * "
        f"shuffle_bytes={shuffle} / bytes_moved={moved})) ({source})"
        f"{extra}"
    )


# ---------------------------------------------------------------------------
# public


def tune_policy(
    metrics: PlanMetrics,
    world_size: int,
    runtime_origins: Mapping[str, str] | None = None,
) -> StagedPolicy:
    """Suggest a staged policy from plan metrics (formulas above).

    Args:
        metrics: the plan's metrics, runtime values merged where known.
        world_size: ranks of the target mesh.
        runtime_origins: where each runtime counter came from, by its
            canonical name (``shuffle_bytes``, ``bytes_moved``,
            ``wgmma_occupancy``, ``l2_reuse``), for the notes.

    Returns:
        The policy; every knob within its bounds.

    Raises:
        TypeError: ``metrics`` is not a PlanMetrics.
        ValueError: ``world_size`` is not a positive integer.
    """
    if not isinstance(metrics, PlanMetrics):
        raise TypeError(
            f"tune_policy needs PlanMetrics, not {type(metrics).__name__}"
        )
    if (
        not isinstance(world_size, int)
        or isinstance(world_size, bool)
        or world_size < 1
    ):
        raise ValueError(
            f"world_size must be a positive integer, not {world_size!r}"
        )
    origins = dict(runtime_origins or {})

    bm, bm_in, bm_note = _bm(metrics, world_size)
    bn, bn_in, bn_note = _bn(metrics)
    bk, bk_in, bk_note = _bk(metrics, origins)
    swizzle, sw_in, sw_note = _swizzle(metrics, origins)
    depth, depth_in, depth_note = _stage_depth(metrics, origins)

    inputs = {**bm_in, **bn_in, **bk_in, **sw_in, **depth_in}
    sources = ", ".join(
        f"{name}={value.source}" for name, value in sorted(inputs.items())
    )
    notes = (
        bm_note,
        bn_note,
        bk_note,
        sw_note,
        depth_note,
        f"inputs: {sources}",
    )
    return StagedPolicy(
        BM=bm,
        BN=bn,
        BK=bk,
        swizzle_size=swizzle,
        stage_depth=depth,
        notes=notes,
        inputs=inputs,
    )
