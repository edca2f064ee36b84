"""Frame: a pandas-like table that records what is done to it.

Every operation on a ``Frame`` adds a step to a trace instead of touching
data; ``djit`` runs the trace, ``Frame.to_pandas`` runs it outside a jit.
The API follows pandas where it can::

    def pipeline(logs, users):
        big = logs[logs["bytes"] > 1024]
        big = big.assign(kb=big["bytes"] / 1024)
        joined = big.merge(users, on="user_id", how="left")
        return joined.groupby("country").agg(total=("kb", "sum"))

Frames carry no index: an unnamed index of an input DataFrame is ignored
and results come back with a fresh ``RangeIndex``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from datajax.ir.check import step_columns
from datajax.ir.errors import IRError
from datajax.ir.nodes import (
    AGG_FUNCS,
    JOIN_HOWS,
    Agg,
    Aggregate,
    Assign,
    BinOp,
    Col,
    Expr,
    Filter,
    Join,
    Rename,
    Repartition,
    Schema,
    Select,
    Source,
    Step,
    Trace,
    UnaryOp,
    expr_columns,
    lit,
    step_inputs,
)
from datajax.ir.printer import format_expr, table_name
from datajax.planner.sharding import ByKey

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan
    from datajax.planner.sharding import Resource

logger = logging.getLogger(__name__)

__all__ = ["ColumnExpr", "Frame", "GroupBy", "col"]


# ---------------------------------------------------------------------------
# the recorder behind a group of frames


class _Recorder:
    """Holds the steps recorded by frames that may be combined."""

    def __init__(self, tables: Mapping[str, pd.DataFrame] | None = None):
        self.steps: list[Step] = []
        self.columns: list[tuple[str, ...]] = []
        self.sources: dict[str, int] = {}
        self.tables: dict[str, pd.DataFrame] = dict(tables or {})

    def add(self, step: Step) -> int:
        """Check a step against the steps so far and record it."""
        index = len(self.steps)
        steps = [*self.steps, step]
        cols = step_columns(steps, index, self.columns)  # raises IRError
        self.steps.append(step)
        self.columns.append(cols)
        return index

    def source(self, name: str, schema: Schema) -> int:
        """Record an input table (once per name)."""
        if name in self.sources:
            index = self.sources[name]
            known = self.steps[index].schema
            if known != schema:
                raise IRError(
                    f"input table {name!r} is already bound with schema "
                    f"{known}, not {schema}; use another name",
                    self.steps,
                    index,
                )
            return index
        index = self.add(Source(name, schema))
        self.sources[name] = index
        return index

    def adopt(self, other: _Recorder, index: int) -> int:
        """Copy the steps behind ``other``'s table ``index`` into this one.

        Input tables are matched by name; their data comes along.

        Raises:
            ValueError: two different tables share a name.
        """
        trace = other.trace_for(index)
        new: dict[int, int] = {}
        for i, step in enumerate(trace.steps):
            if isinstance(step, Source):
                table = other.tables.get(step.name)
                mine = self.tables.get(step.name)
                if table is not None and mine is not None and (
                    table is not mine
                ):
                    raise ValueError(
                        f"two different tables are named {step.name!r}; "
                        "give them their own names, e.g. "
                        "Frame(df, name='users')"
                    )
                if table is not None:
                    self.tables[step.name] = table
                new[i] = self.source(step.name, step.schema)
                continue
            changes = {
                f: new[getattr(step, f)]
                for f in ("src", "left", "right")
                if hasattr(step, f)
            }
            new[i] = self.add(dataclasses.replace(step, **changes))
        return new[len(trace.steps) - 1]

    def trace_for(self, index: int) -> Trace:
        """The trace of the steps ``index`` depends on, renumbered."""
        needed = {index}
        for i in range(index, -1, -1):
            if i in needed:
                needed.update(step_inputs(self.steps[i]))
        order = sorted(needed)
        new = {old: pos for pos, old in enumerate(order)}

        steps = []
        for old in order:
            step = self.steps[old]
            changes = {
                f: new[getattr(step, f)]
                for f in ("src", "left", "right")
                if hasattr(step, f)
            }
            steps.append(dataclasses.replace(step, **changes))
        return Trace(tuple(steps))


# the recorder of the djit call being traced, if any
_ACTIVE: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar(
    "datajax_active_recorder", default=None
)


def schema_of(df: pd.DataFrame, name: str) -> Schema:
    """The schema of an input DataFrame, checking it can be traced.

    Raises:
        TypeError: ``df`` is not a DataFrame or a column name is not a
            string.
        ValueError: repeated column names, or a named index (which would
            be lost).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"table {name!r} must be a pandas DataFrame, not "
            f"{type(df).__name__}"
        )
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise TypeError(
            f"table {name!r}: column names must be strings, got {bad[0]!r};"
            " try df.columns = df.columns.astype(str)"
        )
    if df.columns.has_duplicates:
        dups = sorted(set(df.columns[df.columns.duplicated()]))
        raise ValueError(f"table {name!r} has repeated columns {dups!r}")
    if isinstance(df.index, pd.MultiIndex) or df.index.name is not None:
        raise ValueError(
            f"table {name!r} has a named index {list(df.index.names)!r}, "
            "which a Frame would drop; call df.reset_index() first to "
            "keep it as columns"
        )
    return Schema.from_frame(df)


# ---------------------------------------------------------------------------
# column expressions


def _node(value: Any) -> Expr:
    if isinstance(value, ColumnExpr):
        return value.node
    if isinstance(value, (pd.Series, pd.DataFrame, Frame)):
        raise TypeError(
            f"cannot mix a {type(value).__name__} into a column "
            "expression; use columns of the frame (f['a']) and scalars"
        )
    return lit(value)


class ColumnExpr:
    """An expression over the columns of a frame, e.g. ``f["a"] * 2``.

    Supports ``+ - * /``, comparisons, ``&``, ``|``, ``~``, unary ``-``,
    ``isna()`` and ``notna()``. Use ``&``/``|``/``~``, not ``and``/``or``
    /``not``: like a pandas Series, an expression has no truth value.
    """

    __slots__ = ("node", "owner")
    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def __init__(self, node: Expr, owner: tuple[_Recorder, int] | None):
        self.node = node
        self.owner = owner

    # -- building

    def _binary(self, op: str, other: Any, reflected: bool = False):
        owner = self.owner
        if isinstance(other, ColumnExpr):
            owner = _common_owner(self, other)
        left, right = self.node, _node(other)
        if reflected:
            left, right = right, left
        return ColumnExpr(BinOp(op, left, right), owner)

    def __add__(self, other):
        return self._binary("add", other)

    def __radd__(self, other):
        return self._binary("add", other, reflected=True)

    def __sub__(self, other):
        return self._binary("sub", other)

    def __rsub__(self, other):
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other):
        return self._binary("mul", other)

    def __rmul__(self, other):
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other):
        return self._binary("div", other)

    def __rtruediv__(self, other):
        return self._binary("div", other, reflected=True)

    def __eq__(self, other):  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other):  # type: ignore[override]
        return self._binary("ne", other)

    def __lt__(self, other):
        return self._binary("lt", other)

    def __le__(self, other):
        return self._binary("le", other)

    def __gt__(self, other):
        return self._binary("gt", other)

    def __ge__(self, other):
        return self._binary("ge", other)

    def __and__(self, other):
        return self._binary("and", other)

    def __rand__(self, other):
        return self._binary("and", other, reflected=True)

    def __or__(self, other):
        return self._binary("or", other)

    def __ror__(self, other):
        return self._binary("or", other, reflected=True)

    def __neg__(self):
        return ColumnExpr(UnaryOp("neg", self.node), self.owner)

    def __invert__(self):
        return ColumnExpr(UnaryOp("not", self.node), self.owner)

    def isna(self) -> ColumnExpr:
        """True where the value is null (None, NaN, NA, NaT)."""
        return ColumnExpr(UnaryOp("isna", self.node), self.owner)

    def notna(self) -> ColumnExpr:
        """True where the value is not null."""
        return ColumnExpr(UnaryOp("notna", self.node), self.owner)

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of the expression {self} is not known while "
            "tracing; combine conditions with & | ~ (not and/or/not), "
            "with parentheses: (f['a'] > 1) & (f['b'] < 2)"
        )

    def __str__(self) -> str:
        return format_expr(self.node)

    def __repr__(self) -> str:
        return f"ColumnExpr({format_expr(self.node)})"


def _common_owner(a: ColumnExpr, b: ColumnExpr):
    if a.owner is None:
        return b.owner
    if b.owner is None or _same_owner(a.owner, b.owner):
        return a.owner
    raise ValueError(
        f"cannot combine {a} (from {table_name(a.owner[1])}) with {b} "
        f"(from {table_name(b.owner[1])}); expressions must come from one "
        "frame. Use datajax.col('name') for a column of whatever frame "
        "the expression is applied to"
    )


def _same_owner(a, b) -> bool:
    return a[0] is b[0] and a[1] == b[1]


def col(name: str) -> ColumnExpr:
    """Refer to a column of whichever frame the expression is used on.

    Example: ``f.filter(col("bytes") > 0)``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"col() needs a column name, got {name!r}")
    return ColumnExpr(Col(name), None)


# ---------------------------------------------------------------------------
# frames


class Frame:
    """A traced table; operations record steps, ``djit`` runs them.

    ``Frame(df, name)`` wraps a DataFrame outside a jit (run it with
    ``to_pandas``); inside a ``djit`` function the DataFrame arguments
    arrive already wrapped, and ``Frame.source(name)`` reads a table
    passed by name (``tables={name: df}``).
    """

    __slots__ = ("_rec", "_index")

    def __init__(self, data: pd.DataFrame, name: str = "df") -> None:
        schema = schema_of(data, name)
        rec = _Recorder({name: data})
        self._rec = rec
        self._index = rec.source(name, schema)

    @classmethod
    def _at(cls, rec: _Recorder, index: int) -> Frame:
        frame = object.__new__(cls)
        frame._rec = rec
        frame._index = index
        return frame

    @classmethod
    def source(
        cls,
        name: str,
        schema: Schema | Mapping[str, str] | None = None,
    ) -> Frame:
        """Refer to an input table by name; its rows are bound at run time.

        Inside a ``djit`` function the table comes from the call's
        ``tables={name: df}``. Outside, give a ``schema`` (``{column:
        dtype}``) to trace without data.

        Raises:
            ValueError: no table of that name and no schema.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"a table name must be a non-empty string, got {name!r}"
            )
        if isinstance(schema, Mapping):
            schema = Schema.of(schema)

        rec = _ACTIVE.get()
        if rec is not None and name in rec.tables:
            schema = schema_of(rec.tables[name], name)
        if schema is None:
            where = "in this call" if rec is not None else "outside djit"
            raise ValueError(
                f"Frame.source({name!r}): no table of that name {where}; "
                f"pass it as tables={{{name!r}: df}}, or give "
                "schema={column: dtype} to trace without data"
            )
        rec = rec if rec is not None else _Recorder()
        return cls._at(rec, rec.source(name, schema))

    # -- introspection

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in order."""
        return self._rec.columns[self._index]

    @property
    def trace(self) -> Trace:
        """The steps that make this frame."""
        return self._rec.trace_for(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __repr__(self) -> str:
        name = table_name(self._index)
        return f"Frame({name}, columns={list(self.columns)!r})"

    # -- recording

    def _add(self, step: Step) -> Frame:
        return Frame._at(self._rec, self._rec.add(step))

    def _expr(self, value: Any, what: str) -> Expr:
        """Turn a ColumnExpr, callable or scalar into an IR expression."""
        if callable(value) and not isinstance(value, ColumnExpr):
            value = value(self)
        if isinstance(value, ColumnExpr):
            if value.owner is not None and not _same_owner(
                value.owner, (self._rec, self._index)
            ):
                raise ValueError(
                    f"{what}: the expression {value} was built from "
                    f"{table_name(value.owner[1])}, not from "
                    f"{table_name(self._index)} it is used on; build it "
                    "from this frame, pass a function (lambda d: "
                    "d['a'] > 0) or use datajax.col('a')"
                )
            return value.node
        return _node(value)

    def __getitem__(self, key: Any) -> Any:
        """``f["a"]`` a column, ``f[["a", "b"]]`` a selection, ``f[cond]``
        the rows where a condition holds."""
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(
                    f"column {key!r} not found; the frame has "
                    f"{list(self.columns)!r}"
                )
            return ColumnExpr(Col(key), (self._rec, self._index))
        if isinstance(key, ColumnExpr) or callable(key):
            return self.filter(key)
        if isinstance(key, (list, tuple)):
            return self.select(*key)
        raise TypeError(
            f"cannot index a Frame with {key!r}; use a column name, a list "
            "of names or a condition"
        )

    def filter(self, predicate: Any) -> Frame:
        """Keep the rows where ``predicate`` is true; null drops the row.

        Args:
            predicate: a boolean expression, or a function of the frame
                returning one.
        """
        return self._add(Filter(self._index, self._expr(predicate, "filter")))

    def select(self, *columns: str | Sequence[str]) -> Frame:
        """Keep the given columns, in the given order."""
        if len(columns) == 1 and isinstance(columns[0], (list, tuple)):
            columns = tuple(columns[0])
        return self._add(Select(self._index, tuple(columns)))

    def drop(self, *columns: str | Sequence[str]) -> Frame:
        """Remove the given columns.

        Raises:
            KeyError: a column does not exist.
        """
        if len(columns) == 1 and isinstance(columns[0], (list, tuple)):
            columns = tuple(columns[0])
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(
                f"cannot drop {missing[0]!r}: not a column of "
                f"{list(self.columns)!r}"
            )
        return self.select(*[c for c in self.columns if c not in columns])

    def rename(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        columns: Mapping[str, str] | None = None,
    ) -> Frame:
        """Rename columns: ``f.rename(columns={"old": "new"})``."""
        given = columns if columns is not None else mapping
        if given is None or not isinstance(given, Mapping):
            raise TypeError(
                "rename needs a mapping, e.g. f.rename(columns={'a': 'b'})"
            )
        pairs = tuple((old, new) for old, new in given.items())
        return self._add(Rename(self._index, pairs))

    def assign(self, **columns: Any) -> Frame:
        """Add or replace columns, like ``DataFrame.assign``.

        Values are expressions of this frame, scalars, or functions of the
        frame so far: as in pandas, ``lambda d: d["c"] * 2`` can read a
        column ``c`` added earlier in the same call, while expressions
        read this frame as it is.
        """
        if not columns:
            return self

        # Expressions of this frame share one step (evaluated together);
        # a function starts a new step so that it sees what came before.
        frame, pending, replaced = self, [], set()
        for name, value in columns.items():
            what = f"column {name!r}"
            if callable(value) and not isinstance(value, ColumnExpr):
                if pending:
                    frame = frame._add(Assign(frame._index, tuple(pending)))
                    replaced.update(n for n, _ in pending)
                    pending = []
                node = frame._expr(value(frame), what)
            else:
                node = self._expr(value, what)
                stale = sorted(set(expr_columns(node)) & replaced)
                if stale:
                    raise ValueError(
                        f"{what}: the expression reads {stale[0]!r}, which "
                        "an earlier function in this assign() replaced; "
                        "split the call in two or use a function here too"
                    )
            pending.append((name, node))
        return frame._add(Assign(frame._index, tuple(pending)))

    def with_column(self, name: str, value: Any) -> Frame:
        """Add or replace one column (an expression, scalar or function)."""
        if not isinstance(name, str):
            raise TypeError(f"column names must be strings, got {name!r}")
        return self.assign(**{name: value})

    def groupby(
        self, by: str | Sequence[str], dropna: bool = True
    ) -> GroupBy:
        """Group rows by key columns (reduce with ``agg``, ``sum``, ...).

        Args:
            by: one key column or several.
            dropna: drop rows whose key is null (the pandas default);
                False keeps them as a group of their own.
        """
        keys = (by,) if isinstance(by, str) else tuple(by)
        missing = [k for k in keys if k not in self.columns]
        if missing:
            raise KeyError(
                f"group-by key {missing[0]!r} not found; the frame has "
                f"{list(self.columns)!r}"
            )
        return GroupBy(self, keys, dropna)

    def merge(
        self,
        right: Frame,
        how: str = "inner",
        on: str | Sequence[str] | None = None,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        suffixes: tuple[str | None, str | None] = ("_x", "_y"),
    ) -> Frame:
        """Join with another frame on key columns, like ``pandas.merge``.

        Args:
            right: the right table (an input or a frame derived from one
                of this trace).
            how: ``inner``, ``left``, ``right`` or ``outer``.
            on: key columns present on both sides.
            left_on: left key columns (with ``right_on``).
            right_on: right key columns, pairwise with ``left_on``.
            suffixes: added to columns present on both sides that are
                not shared keys; None means no suffix.

        Raises:
            ValueError: bad ``how``, keys given both ways or not at all,
                two different tables of one name.
            IRError: a key is missing or the suffixes collide.
        """
        if not isinstance(right, Frame):
            raise TypeError(
                f"merge needs a Frame on the right, not "
                f"{type(right).__name__}; inside djit pass the table as an "
                "argument or use Frame.source(name)"
            )
        if how not in JOIN_HOWS:
            raise ValueError(
                f"how={how!r} is not a join kind; use one of {JOIN_HOWS}"
            )
        if on is not None and (left_on is not None or right_on is not None):
            raise ValueError("give either on= or left_on=/right_on=, not both")
        if on is not None:
            left_keys = right_keys = _as_names(on)
        elif left_on is not None and right_on is not None:
            left_keys, right_keys = _as_names(left_on), _as_names(right_on)
        else:
            raise ValueError(
                "merge needs keys: on='k', or left_on='a' with right_on='b'"
            )
        if not isinstance(suffixes, (list, tuple)) or len(suffixes) != 2:
            raise ValueError(f"suffixes must be a pair, got {suffixes!r}")
        sfx = tuple("" if s is None else s for s in suffixes)

        # a frame of another trace (e.g. another Frame(df)) joins in
        right_index = right._index
        if right._rec is not self._rec:
            right_index = self._rec.adopt(right._rec, right._index)

        return self._add(
            Join(
                left=self._index,
                right=right_index,
                how=how,
                left_on=left_keys,
                right_on=right_keys,
                suffixes=sfx,  # type: ignore[arg-type]
            )
        )

    join = merge

    def repartition(self, sharding: ByKey | str | Sequence[str]) -> Frame:
        """Move rows so that equal keys share a rank.

        Args:
            sharding: ``shard.by_key("k")``, or the key column name(s).
        """
        if isinstance(sharding, str):
            sharding = ByKey((sharding,))
        elif isinstance(sharding, (list, tuple)):
            sharding = ByKey(tuple(sharding))
        if not isinstance(sharding, ByKey):
            raise TypeError(
                f"repartition needs shard.by_key(...), not {sharding!r}"
            )
        return self._add(
            Repartition(self._index, sharding.keys, sharding.axis)
        )

    # -- running outside djit

    def plan(
        self,
        resources: Resource | None = None,
        tables: Mapping[str, pd.DataFrame] | None = None,
    ) -> ExecutionPlan:
        """Plan this frame's trace (see ``datajax.planner.plan_trace``)."""
        from datajax.planner.plan import plan_trace

        trace = self.trace
        bound = {**self._rec.tables, **(tables or {})}
        known = {n: bound[n] for n in trace.sources if n in bound}
        return plan_trace(trace, resources=resources, tables=known)

    def explain(self, resources: Resource | None = None) -> str:
        """Describe the plan of this frame."""
        return self.plan(resources).explain()

    def to_pandas(
        self,
        tables: Mapping[str, pd.DataFrame] | None = None,
        executor: str | None = None,
    ) -> pd.DataFrame:
        """Run the steps that make this frame and return the result.

        Args:
            tables: tables for ``Frame.source`` names without data.
            executor: a backend name (default ``DATAJAX_EXECUTOR``).

        Raises:
            RuntimeError: called while a ``djit`` function is traced.
        """
        if _ACTIVE.get() is not None:
            raise RuntimeError(
                "to_pandas() cannot run inside a djit function, where "
                "frames hold no data yet; return the frame instead"
            )
        from datajax.runtime import get_executor

        plan = self.plan(tables=tables)
        bound = {**self._rec.tables, **(tables or {})}
        return get_executor(executor).run(plan, bound)


def _as_names(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


# ---------------------------------------------------------------------------
# group-by


class GroupBy:
    """Rows grouped by key columns, waiting for a reduction.

    ``g.agg(total=("bytes", "sum"), n=("bytes", "count"))`` names each
    output; ``g.sum()`` (or ``g["bytes"].sum()``) reduces every selected
    non-key column and keeps its name. ``count`` counts non-null values.
    """

    def __init__(
        self,
        frame: Frame,
        keys: tuple[str, ...],
        dropna: bool,
        selection: tuple[str, ...] | None = None,
    ) -> None:
        self._frame = frame
        self._keys = keys
        self._dropna = dropna
        self._selection = selection

    def __getitem__(self, key: str | Sequence[str]) -> GroupBy:
        names = _as_names(key)
        missing = [c for c in names if c not in self._frame.columns]
        if missing:
            raise KeyError(
                f"column {missing[0]!r} not found; the frame has "
                f"{list(self._frame.columns)!r}"
            )
        return GroupBy(self._frame, self._keys, self._dropna, names)

    def _targets(self) -> tuple[str, ...]:
        if self._selection is not None:
            return self._selection
        return tuple(c for c in self._frame.columns if c not in self._keys)

    def agg(self, spec: Any = None, /, **named: tuple[str, str]) -> Frame:
        """Reduce each group.

        Args:
            spec: a reduction name for every selected column (``"sum"``),
                or a ``{column: name}`` mapping; outputs keep the column
                names.
            **named: ``out=(column, name)`` pairs.

        Raises:
            ValueError: no reduction, both forms given, or an unknown
                reduction name.
        """
        aggs: list[Agg] = []
        if spec is not None and named:
            raise ValueError(
                "give reductions positionally or by name, not both"
            )
        if isinstance(spec, str):
            aggs = [Agg(c, spec, c) for c in self._targets()]
        elif isinstance(spec, Mapping):
            aggs = [Agg(c, f, c) for c, f in spec.items()]
        elif spec is not None:
            raise TypeError(
                f"agg() takes a reduction name or a mapping, not {spec!r}"
            )
        for out, pair in named.items():
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(
                    f"agg({out}=...) needs a (column, reduction) pair, "
                    f"got {pair!r}"
                )
            aggs.append(Agg(pair[0], pair[1], out))

        if not aggs:
            raise ValueError(
                "agg() needs a reduction, e.g. agg(total=('bytes', 'sum'))"
            )
        for a in aggs:
            if a.func not in AGG_FUNCS:
                raise ValueError(
                    f"unknown reduction {a.func!r}; use one of {AGG_FUNCS}"
                )
        frame = self._frame
        return frame._add(
            Aggregate(frame._index, self._keys, tuple(aggs), self._dropna)
        )

    def sum(self) -> Frame:
        """Sum every selected column per group."""
        return self.agg("sum")

    def count(self) -> Frame:
        """Count the non-null values of every selected column per group."""
        return self.agg("count")

    def mean(self) -> Frame:
        """Average every selected column per group."""
        return self.agg("mean")

    def min(self) -> Frame:
        """Smallest value of every selected column per group."""
        return self.agg("min")

    def max(self) -> Frame:
        """Largest value of every selected column per group."""
        return self.agg("max")
