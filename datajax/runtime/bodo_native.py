"""The native Bodo path: a plan lowered onto ``bodo.pandas``.

``bodo.pandas`` (Bodo DataFrames) builds a lazy plan from pandas-like
calls and runs it on worker processes that Bodo spawns with ``mpiexec``
(always spawn mode, whatever ``BODO_SPAWN_MODE`` says). So this path
runs from one plain ``python`` process; ``BODO_NUM_WORKERS`` sets the
number of workers (default: the MPI universe size, else the physical
cores). Inside an MPI world of more than one rank, or under ``srun``,
it stops with an error saying how to run it instead.

How each step is lowered:

- select, rename: Bodo projections;
- filter, assign: the step's expressions run as pandas code on each
  worker's partition (``map_partitions``) after the partition is given
  pandas' dtypes back, so nulls and comparisons behave as in pandas;
  Bodo keeps the rows where they are;
- group-by: Bodo's ``groupby(...).agg``;
- join: Bodo's ``merge``, on keys made null-safe first. Bodo joins as
  SQL does (a null key matches nothing), pandas matches null keys with
  each other; each key is therefore joined as a pair (the key with
  nulls filled, and whether it was null), and the shared keys of a
  right or outer join are taken from the right side where the left one
  is missing, as pandas does;
- repartition: nothing; Bodo shuffles by key where it must.

Bodo falls back to pandas (with a warning) for calls it cannot run
itself; here every such fallback is an error naming the step and the
backend, so a plan never runs silently on the driver instead.

Known cost: Bodo 2026.10's spawned workers busy-wait for their next
command (a blocking MPI broadcast; Bodo's own code marks it as a TODO),
so once a plan has run they keep a core each busy until the process
ends. The workers stay up so that later plans start at once; call
:func:`stop_workers` when a process is done with this backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from datajax.ir.check import check_trace, join_output_names
from datajax.ir.nodes import (
    Aggregate,
    Assign,
    Expr,
    Filter,
    Join,
    Lit,
    Rename,
    Repartition,
    Select,
    Source,
    Step,
    Trace,
    step_kind,
)
from datajax.runtime.base import ExecutionError, Executor, bind_tables
from datajax.runtime.bodo_backend import (
    STUB_VAR,
    BodoBackendError,
    empty_results,
    env_flag,
    import_bodo,
    null_columns,
    restore_pandas_dtypes,
)
from datajax.runtime.pandas_backend import eval_expr, filter_mask, run_trace

if TYPE_CHECKING:
    from datajax.planner.plan import ExecutionPlan

logger = logging.getLogger(__name__)

__all__ = [
    "BodoLaunchError",
    "BodoNativeExecutor",
    "check_launch",
    "native_notes",
    "stop_workers",
]

BACKEND = "the bodo-native backend (bodo.pandas)"


class BodoLaunchError(BodoBackendError):
    """bodo.pandas cannot run in the way this process was started."""


# ---------------------------------------------------------------------------
# where it can run


def check_launch(
    world_size: int, environ: Mapping[str, str] | None = None
) -> None:
    """Fail unless this process may spawn Bodo's workers.

    Args:
        world_size: the size of ``MPI.COMM_WORLD`` as this process sees it.
        environ: the environment (default ``os.environ``).

    Raises:
        BodoLaunchError: inside an MPI world of several ranks, or in an
            ``srun`` step; the message says how to run the plan instead.
    """
    env = os.environ if environ is None else environ
    how = (
        "run it from one plain `python` process (Bodo spawns "
        "BODO_NUM_WORKERS workers itself), or use the SPMD replay path "
        "(DATAJAX_EXECUTOR=bodo without DATAJAX_NATIVE_BODO) under mpiexec "
        "or srun"
    )
    if world_size > 1:
        raise BodoLaunchError(
            f"{BACKEND} always runs in Bodo's spawn mode and cannot run "
            f"inside an MPI world of {world_size} ranks (every rank would "
            f"spawn its own workers); {how}"
        )
    if env.get("SLURM_STEP_ID") not in (None, "", "batch", "4294967294"):
        raise BodoLaunchError(
            f"{BACKEND} cannot spawn its workers inside an srun step "
            f"(Slurm refuses the step they need, and the run hangs); {how}"
        )


def _mpiexec_on_path() -> None:
    """Make sure Bodo finds the environment's ``mpiexec`` to spawn with.

    Bodo's wheel installs MPICH's ``mpiexec`` beside this Python; a
    virtual environment used without activation lacks it on PATH, so
    that folder is put first on PATH for the spawn.

    Raises:
        BodoLaunchError: no ``mpiexec`` to be found.
    """
    if shutil.which("mpiexec"):
        return
    here = Path(sys.executable).parent
    if (here / "mpiexec").exists():
        os.environ["PATH"] = os.pathsep.join(
            [str(here), os.environ.get("PATH", "")]
        )
        logger.debug("bodo-native: using %s/mpiexec to spawn", here)
        return
    raise BodoLaunchError(
        f"{BACKEND} spawns its workers with mpiexec, which is not on PATH "
        f"nor beside {sys.executable}; install bodo (it brings MPICH) or "
        "put its bin folder on PATH"
    )


def stop_workers() -> bool:
    """Stop the workers Bodo spawned for this process, if any.

    They busy-wait between plans, a core each. The next native plan
    spawns new ones (a few seconds). Does not import Bodo.

    Returns:
        True if workers were running and are now stopped.
    """
    spawner_module = sys.modules.get("bodo.spawn.spawner")
    if spawner_module is None or spawner_module.spawner is None:
        return False
    spawner_module.destroy_spawner()
    return True


def native_notes(plan: ExecutionPlan) -> list[str]:
    """Plan notes saying how the native path runs the plan."""
    workers = os.environ.get("BODO_NUM_WORKERS", "").strip() or "default"
    return [
        "executor=bodo-native: bodo.pandas lazy DataFrames in Bodo's spawn "
        f"mode (BODO_NUM_WORKERS={workers}); filters and assignments run "
        "as pandas code on each worker's partition, joins on null-safe "
        "keys",
    ]


# ---------------------------------------------------------------------------
# code that runs on the workers (pickled by reference: keep it top level)


def _as_pandas(df: pd.DataFrame, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """A worker's partition as the step's input, in pandas' dtypes.

    The input's columns come first, in order, then any hidden ones this
    step added. They are taken by position: Bodo 2026.10 hands a
    partition to ``map_partitions`` under the column names from before
    the latest rename or column copy.
    """
    part = df.iloc[:, : len(dtypes)].set_axis(list(dtypes), axis=1)
    return restore_pandas_dtypes(part, dtypes, null_columns(part, dtypes))


def filter_rows(
    df: pd.DataFrame, predicate: Expr, dtypes: Mapping[str, Any]
) -> pd.Series:
    """The row mask of a filter on one partition, as pandas makes it."""
    part = _as_pandas(df, dtypes)
    return filter_mask(eval_expr(predicate, part))


def column_values(
    df: pd.DataFrame, expr: Expr, dtypes: Mapping[str, Any]
) -> pd.Series:
    """One assigned column on one partition, as pandas computes it."""
    part = _as_pandas(df, dtypes)
    value = eval_expr(expr, part)
    if not isinstance(value, pd.Series):
        value = pd.Series([value] * len(part), index=part.index)
    return value


# ---------------------------------------------------------------------------
# lowering


def _hidden(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name = f"_{name}"
    taken.add(name)
    return name


def _fill_value(dtype: Any, column: str) -> Any:
    """A stand-in for nulls in a join key of this dtype."""
    if isinstance(dtype, pd.CategoricalDtype):
        raise BodoBackendError(
            f"{BACKEND} cannot join on the categorical key {column!r}; "
            "cast it first (e.g. astype('str'))"
        )
    if pd.api.types.is_bool_dtype(dtype):
        return False
    if pd.api.types.is_numeric_dtype(dtype):
        return 0
    if pd.api.types.is_string_dtype(dtype):
        return ""
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return pd.Timestamp(0)
    raise BodoBackendError(
        f"{BACKEND} cannot join on key {column!r} of dtype {dtype}"
    )


class _Lowering:
    """Builds the bodo.pandas frame of every step of one plan."""

    def __init__(self, trace: Trace, samples: Sequence[pd.DataFrame]):
        self.trace = trace
        self.samples = samples
        self.columns = check_trace(trace)
        self.taken = {n for cols in self.columns for n in cols}
        self.frames: list[Any] = []

    def dtypes(self, index: int) -> dict[str, Any]:
        return dict(self.samples[index].dtypes.items())

    def step(self, index: int, step: Step, source: Any) -> Any:
        if isinstance(step, Source):
            return source
        if isinstance(step, Select):
            return self.frames[step.src][list(step.columns)]
        if isinstance(step, Rename):
            return self.frames[step.src].rename(columns=dict(step.mapping))
        if isinstance(step, Repartition):
            return self.frames[step.src]
        if isinstance(step, Filter):
            df = self.frames[step.src]
            mask = df.map_partitions(
                filter_rows, step.predicate, self.dtypes(step.src)
            )
            return df[mask]
        if isinstance(step, Assign):
            return self.assign(index, step)
        if isinstance(step, Aggregate):
            return self.aggregate(index, step)
        if isinstance(step, Join):
            return self.join(index, step)
        raise BodoBackendError(f"{BACKEND} has no lowering for {step!r}")

    def assign(self, index: int, step: Assign) -> Any:
        # a new frame (a projection), so the input itself is not changed
        # for other steps that read it
        df = self.frames[step.src]
        df = df[list(df.columns)]
        dtypes = self.dtypes(step.src)
        for name, expr in step.columns:
            if isinstance(expr, Lit) and expr.value is None:
                raise BodoBackendError(
                    f"{BACKEND} cannot add the all-null column {name!r}"
                )
        # every expression reads the input: compute all under hidden
        # names first, then move them to their names
        hidden = []
        for name, expr in step.columns:
            tmp = _hidden(f"_dj_{name}", self.taken)
            df[tmp] = df.map_partitions(column_values, expr, dtypes)
            hidden.append((name, tmp))
        for name, tmp in hidden:
            df[name] = df[tmp]
        return df[list(self.columns[index])]

    def aggregate(self, index: int, step: Aggregate) -> Any:
        df = self.frames[step.src]
        dtypes = self.dtypes(step.src)
        names: dict[tuple[str, str], str] = {}
        for agg in step.aggs:
            if agg.func in ("min", "max") and isinstance(
                dtypes[agg.column], pd.CategoricalDtype
            ):
                raise BodoBackendError(
                    f"{BACKEND} cannot take the {agg.func} of the "
                    f"categorical column {agg.column!r} (it holds the "
                    "values, not the category order)"
                )
            if (agg.column, agg.func) not in names:
                names[agg.column, agg.func] = _hidden(
                    f"_dj_{len(names)}", self.taken
                )
        out = df.groupby(
            list(step.keys), as_index=False, dropna=step.dropna
        ).agg(**{h: pair for pair, h in names.items()})
        for agg in step.aggs:
            out[agg.out] = out[names[agg.column, agg.func]]
        return out[list(self.columns[index])]

    def join(self, index: int, step: Join) -> Any:
        left, right = self.frames[step.left], self.frames[step.right]
        lcols, rcols = self.columns[step.left], self.columns[step.right]
        names, lmap, rmap = join_output_names(
            lcols, rcols, step.left_on, step.right_on, step.suffixes
        )
        shared = [
            a
            for a, b in zip(step.left_on, step.right_on, strict=True)
            if a == b
        ]
        ldtypes, rdtypes = self.dtypes(step.left), self.dtypes(step.right)

        # output names on both sides; a shared right key stays hidden
        # until the join tells whether the left side is there
        rkeep = {c: rmap[c] for c in rcols if c not in shared}
        rshared = {c: _hidden(f"_dj_r_{c}", self.taken) for c in shared}
        left = left.rename(columns={c: lmap[c] for c in lcols})
        right = right.rename(columns={**rkeep, **rshared})

        # null-safe keys: (value with nulls filled, was it null)
        lkeys, rkeys = [], []
        pairs = zip(step.left_on, step.right_on, strict=True)
        for i, (lk, rk) in enumerate(pairs):
            lname = lmap[lk]
            rname = rshared.get(rk, rkeep.get(rk))
            fill = _fill_value(ldtypes[lk], lk)
            _fill_value(rdtypes[rk], rk)
            for side, name, keys in (
                (left, lname, lkeys),
                (right, rname, rkeys),
            ):
                value = _hidden(f"_dj_k{i}_{len(keys)}", self.taken)
                null = _hidden(f"_dj_n{i}_{len(keys)}", self.taken)
                side[value] = side[name].fillna(fill)
                side[null] = side[name].isna()
                keys.extend([value, null])
        present = _hidden("_dj_left", self.taken)
        left[present] = True

        out = left.merge(right, how=step.how, left_on=lkeys, right_on=rkeys)
        for lk in shared:
            name = lmap[lk]
            if step.how in ("right", "outer"):
                out[name] = out[name].where(
                    out[present].notna(), out[rshared[lk]]
                )
        return out[list(names)]


# ---------------------------------------------------------------------------
# the executor


@contextlib.contextmanager
def _no_fallback(bodo_warning: type[Warning]) -> Iterator[None]:
    """Turn Bodo's fall-back-to-pandas warnings into errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", bodo_warning)
        # bodo.pandas.from_pandas calls select_dtypes(include=["object"]),
        # which pandas 3 flags as deprecated for str columns; the call is
        # Bodo's, not the user's, and nothing here can change it
        warnings.filterwarnings(
            "ignore",
            message=r"For backward compatibility, 'str' dtypes are included",
            module=r"bodo\.pandas\.base",
        )
        yield


class BodoNativeExecutor(Executor):
    """Run plans on ``bodo.pandas`` (see the module notes).

    ``run`` returns the whole result, with pandas' dtypes, on the one
    process that called it.
    """

    name = "bodo-native"

    def annotate(self, plan: ExecutionPlan) -> ExecutionPlan:
        """The plan with this backend's notes added to its metrics."""
        import dataclasses

        if env_flag(STUB_VAR):
            from datajax.runtime.bodo_backend import BodoExecutor

            return BodoExecutor().annotate(plan)
        metrics = dataclasses.replace(
            plan.metrics,
            notes=tuple(plan.metrics.notes) + tuple(native_notes(plan)),
        )
        return plan.with_metrics(metrics)

    def explain(self, plan: ExecutionPlan) -> str:
        """The plan's explanation with this backend's notes."""
        return self.annotate(plan).explain()

    def run(
        self, plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
    ) -> pd.DataFrame:
        if env_flag(STUB_VAR):
            return run_trace(plan.trace, tables).reset_index(drop=True)

        import_bodo(BACKEND)
        from mpi4py import MPI

        check_launch(MPI.COMM_WORLD.Get_size())
        _mpiexec_on_path()
        import bodo.pandas as bd
        from bodo.pandas.utils import BodoLibFallbackWarning

        trace = plan.trace
        inputs = bind_tables(trace, tables)
        samples = empty_results(trace, inputs)
        expected = dict(samples[-1].dtypes.items())
        lowering = _Lowering(trace, samples)
        sources = iter(inputs)

        with _no_fallback(BodoLibFallbackWarning):
            for index, step in enumerate(trace.steps):
                try:
                    source = None
                    if isinstance(step, Source):
                        source = bd.from_pandas(_plain(next(sources)))
                    lowering.frames.append(
                        lowering.step(index, step, source)
                    )
                except Exception as exc:
                    raise _step_error(index, step, exc) from exc
            try:
                result = pd.DataFrame(lowering.frames[-1])
            except Exception as exc:
                raise BodoBackendError(
                    f"{BACKEND} failed running the plan: "
                    f"{type(exc).__name__}: {_short(exc)}"
                ) from exc

        result = result.reset_index(drop=True)
        result = restore_pandas_dtypes(
            result, expected, null_columns(result, expected)
        )
        last = trace.steps[-1]
        if isinstance(last, Aggregate):
            result = result.sort_values(
                list(last.keys), na_position="last", kind="mergesort"
            )
        return result.reset_index(drop=True)


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of an input with categoricals as their values.

    bodo.pandas cannot take pandas' categoricals (int8 codes); the
    values keep every comparison, and the result's dtypes are restored
    to pandas' at the end (a categorical key comes back categorical).
    """
    out = df.copy(deep=False)
    for name, dtype in df.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            out[name] = df[name].astype(dtype.categories.dtype)
    return out


def _short(exc: Exception, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _step_error(index: int, step: Step, exc: Exception) -> Exception:
    """An error naming the step, the backend and Bodo's reason."""
    if isinstance(exc, ExecutionError):
        return exc
    kind = step_kind(step)
    if isinstance(exc, Warning):  # a fallback turned into an error
        reason = f"Bodo would fall back to pandas: {_short(exc)}"
    else:
        reason = f"{type(exc).__name__}: {_short(exc)}"
    cause = BodoBackendError(
        f"{BACKEND} cannot run this {kind} step; {reason}"
    )
    return ExecutionError(index, kind, step, cause)
