"""Sharding specs and the device mesh a plan is made for.

Used as ``from datajax import shard, Resource``::

    pjit(fn, out_shardings=shard.by_key("user"),
         resources=Resource(mesh_axes=("data",), world_size=4))

The mesh is flat: a by-key sharding spreads rows over all
``world_size`` ranks whichever axis it names. Several axes are accepted
and checked by name, but no axis is given a size of its own yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Blocks", "ByKey", "Resource", "Sharding", "blocks", "by_key"]


@dataclass(frozen=True)
class ByKey:
    """Rows with equal ``keys`` live on the same rank (hash partitioned)."""

    keys: tuple[str, ...]
    axis: str | None = None

    def __str__(self) -> str:
        axis = "" if self.axis is None else f" over {self.axis!r}"
        return f"by_key({', '.join(self.keys)}){axis}"


@dataclass(frozen=True)
class Blocks:
    """Rows are spread as they were read: any row may be on any rank."""

    def __str__(self) -> str:
        return "blocks"


Sharding = ByKey | Blocks


def by_key(*columns: str | Sequence[str], axis: str | None = None) -> ByKey:
    """Shard rows by the hash of one or more key columns.

    Args:
        *columns: key column names (or one list of names).
        axis: the mesh axis to spread over; None means the first one.

    Returns:
        The sharding spec.

    Raises:
        ValueError: no column, an empty or repeated name.
        TypeError: a name is not a string.
    """
    if len(columns) == 1 and isinstance(columns[0], (list, tuple)):
        columns = tuple(columns[0])
    if not columns:
        raise ValueError("shard.by_key() needs at least one key column")
    for c in columns:
        if not isinstance(c, str):
            raise TypeError(
                f"shard.by_key: column names must be strings, got {c!r}"
            )
        if not c:
            raise ValueError("shard.by_key: a column name is empty")
    if len(set(columns)) != len(columns):
        raise ValueError(f"shard.by_key: repeated column in {columns!r}")
    if axis is not None and (not isinstance(axis, str) or not axis):
        raise ValueError(
            f"shard.by_key: axis must be a non-empty string, got {axis!r}"
        )
    return ByKey(tuple(columns), axis)


def blocks() -> Blocks:
    """Rows spread as read (the sharding of every input table)."""
    return Blocks()


@dataclass(frozen=True)
class Resource:
    """The mesh a plan targets: named axes and the number of ranks.

    Args:
        mesh_axes: axis names, e.g. ``("data",)``.
        world_size: number of ranks, at least 1.

    Raises:
        ValueError: no axis, a repeated or empty axis name, or
            ``world_size`` below 1.
        TypeError: ``world_size`` is not an integer or an axis name is
            not a string.
    """

    mesh_axes: tuple[str, ...] = ("data",)
    world_size: int = 1

    def __post_init__(self) -> None:
        axes = self.mesh_axes
        if isinstance(axes, str):
            axes = (axes,)
        axes = tuple(axes)
        if not axes:
            raise ValueError(
                "Resource(mesh_axes=()): the mesh needs at least one axis, "
                "e.g. mesh_axes=('data',)"
            )
        for a in axes:
            if not isinstance(a, str):
                raise TypeError(
                    f"Resource: mesh axis names must be strings, got {a!r}"
                )
            if not a:
                raise ValueError("Resource: a mesh axis name is empty")
        if len(set(axes)) != len(axes):
            raise ValueError(f"Resource: repeated mesh axis in {axes!r}")

        size = self.world_size
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(
                f"Resource(world_size={size!r}): world_size must be an "
                f"integer, not {type(size).__name__}"
            )
        if size < 1:
            raise ValueError(
                f"Resource(world_size={size!r}): world_size must be at "
                "least 1"
            )
        object.__setattr__(self, "mesh_axes", axes)

    def resolve_axis(self, axis: str | None) -> str:
        """Return ``axis``, or the first mesh axis when it is None.

        Raises:
            ValueError: the axis is not one of the mesh axes.
        """
        if axis is None:
            return self.mesh_axes[0]
        if axis not in self.mesh_axes:
            raise ValueError(
                f"unknown mesh axis {axis!r}; the mesh has axes "
                f"{self.mesh_axes!r}. Name one of them, or add it to "
                "Resource(mesh_axes=...)"
            )
        return axis

    def __str__(self) -> str:
        return (
            f"mesh_axes={self.mesh_axes!r}, world_size={self.world_size}"
        )
