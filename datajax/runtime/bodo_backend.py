"""The Bodo backend: a plan's pandas code compiled by ``bodo.jit``, SPMD.

The plan is written out as a plain pandas function (one statement per
step, as ``datajax.runtime.codegen`` does, in the forms Bodo compiles),
saved as a module file named by a hash of its text in the project's
cache folder, imported, and compiled with ``bodo.jit(spawn=False,
cache=True, distributed=[every input])``. Numba's cache keys on that
file, so a later process with the same plan loads the machine code
instead of compiling it again.

SPMD contract: under ``mpiexec -n N`` every rank calls ``run`` with the
same plan and *its own share* of every input table (any split of the
rows; empty shares are fine). Bodo treats the shares as one distributed
table, moves rows between ranks where a join or a group-by needs it, and
leaves the result spread over the ranks. ``run`` then gathers it: with
``result="all"`` (the registered ``bodo`` backend) every rank returns
the whole result, with pandas' dtypes; with ``result="local"`` each rank
returns its own part of it (the parts, concatenated in rank order, are
the whole result). On one process the share is the whole table. All
ranks must run the same plan on shares of the same dtypes; one small
allgather checks it first, so a mismatch is the same error on every
rank rather than a hang. With ``result="all"`` a plan ending in a
group-by comes back sorted by its keys, nulls last, as pandas sorts it.

Switches (read at every run):

- ``DATAJAX_USE_BODO_STUB=1``: run the plan with pandas behind this
  backend's interface, without importing Bodo; the plan's notes say the
  run was not Bodo.
- ``DATAJAX_NATIVE_BODO=1``: run the plan on ``bodo.pandas`` instead
  (``datajax.runtime.bodo_native``).
- ``DATAJAX_ALLOW_BODO_IMPORT=0``: never import Bodo; running this
  backend (other than the stub) is then an error that says so.
- ``DATAJAX_CACHE_DIR``: the cache folder (default
  ``~/.cache/datajax``); generated modules go to ``bodo-plans/`` in it
  and, unless ``NUMBA_CACHE_DIR`` is already set, compiled code to
  ``numba/``.
- ``BODO_SPAWN_MODE`` is Bodo's own default; the replay path always
  passes ``spawn=False`` (spawn mode breaks under ``mpiexec -n N`` and
  ``srun``), and ``bodo.pandas`` always spawns.

Known gaps, where Bodo's result would differ from pandas:

- A repartition keeps the rows on their rank. Bodo's joins and
  group-bys shuffle by key themselves, so results do not change, but a
  ``result="local"`` part is not split by the repartition keys.
- pandas turns an int or bool column into float or object when a join
  fills it with nulls. The result's columns follow that rule (a column
  of the result holding nulls where pandas' dtype cannot hold them is
  widened as pandas widens it), but a column whose nulls are gone again
  by the end (e.g. reduced by a later group-by) keeps its narrow dtype,
  where pandas would keep the widened one.
- Bodo's group-by cannot average a boolean column (pandas can); the
  plan fails with an error naming the step. Its mean of a group with
  no values is 0.0, so every mean is masked where the group's count
  of values is zero, which gives pandas' NaN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from datajax._compat import check_bodo_pandas, installed_version
from datajax.ir.check import check_trace
from datajax.ir.nodes import (
    BINARY_OPS,
    COMPARISON_OPS,
    Aggregate,
    Assign,
    BinOp,
    Col,
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
    UnaryOp,
    step_kind,
)
from datajax.ir.printer import format_step, table_name
from datajax.runtime.base import ExecutionError, Executor, bind_tables
from datajax.runtime.pandas_backend import eval_expr, join_kwargs, run_trace

if TYPE_CHECKING:
    from datajax.mpi import Comm
    from datajax.planner.plan import ExecutionPlan

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOW_IMPORT_VAR",
    "CACHE_DIR_VAR",
    "NATIVE_VAR",
    "STUB_VAR",
    "BodoBackendError",
    "BodoExecutor",
    "BodoSource",
    "BodoUnavailableError",
    "bodo_source",
    "cache_dir",
    "import_bodo",
    "restore_pandas_dtypes",
]

STUB_VAR = "DATAJAX_USE_BODO_STUB"
NATIVE_VAR = "DATAJAX_NATIVE_BODO"
ALLOW_IMPORT_VAR = "DATAJAX_ALLOW_BODO_IMPORT"
CACHE_DIR_VAR = "DATAJAX_CACHE_DIR"

FUNC_NAME = "datajax_plan"
# bump when the generated code changes shape, so old modules are not used
SOURCE_FORMAT = 1
MODULE_PREFIX = "datajax_bodo_plan_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class BodoUnavailableError(RuntimeError):
    """The Bodo backend was chosen but Bodo may not or cannot be used."""


class BodoBackendError(RuntimeError):
    """Bodo cannot run (a step of) a plan; names the backend and step."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Read a boolean switch: ``1``/``true``/``yes``/``on`` or the opposite.

    Raises:
        ValueError: the variable holds something else.
    """
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or value == "":
        return False
    raise ValueError(
        f"{name}={env.get(name)!r} is not a switch; use 1 or 0"
    )


def bodo_import_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``DATAJAX_ALLOW_BODO_IMPORT=0`` forbids importing Bodo."""
    env = os.environ if environ is None else environ
    if env.get(ALLOW_IMPORT_VAR, "").strip() == "":
        return True
    return env_flag(ALLOW_IMPORT_VAR, env)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder DataJAX keeps generated code and compiled code in."""
    env = os.environ if environ is None else environ
    configured = env.get(CACHE_DIR_VAR, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path("~/.cache/datajax").expanduser()


_import_lock = threading.Lock()


def import_bodo(what: str = "the bodo executor") -> Any:
    """Import Bodo for a backend, after the switch and version checks.

    Points ``NUMBA_CACHE_DIR`` into the DataJAX cache folder when it is
    not set, so compiled code does not land beside the sources or in
    site-packages.

    Args:
        what: the backend asking, for the error messages.

    Raises:
        BodoUnavailableError: ``DATAJAX_ALLOW_BODO_IMPORT=0``, or Bodo
            is not installed.
        IncompatibleVersionsError: the installed Bodo and pandas are a
            known broken pair.
    """
    if not bodo_import_allowed():
        raise BodoUnavailableError(
            f"{what} needs Bodo, but {ALLOW_IMPORT_VAR}=0 forbids importing "
            f"it; unset {ALLOW_IMPORT_VAR}, choose DATAJAX_EXECUTOR=pandas, "
            f"or set {STUB_VAR}=1 for pandas execution behind the Bodo "
            "backend's interface"
        )
    with _import_lock:
        if "bodo" not in sys.modules:
            check_bodo_pandas()
            if not os.environ.get("NUMBA_CACHE_DIR"):
                numba_dir = cache_dir() / "numba"
                os.environ["NUMBA_CACHE_DIR"] = str(numba_dir)
                _point_numba_cache(numba_dir)
        try:
            import bodo
        except ModuleNotFoundError as exc:
            if exc.name != "bodo":
                raise
            raise BodoUnavailableError(
                f"{what} needs Bodo, which is not installed; pip install "
                "bodo==2026.10, or choose DATAJAX_EXECUTOR=pandas"
            ) from None
    return bodo


def _point_numba_cache(path: Path) -> None:
    """Tell an already imported numba about the new cache folder."""
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = str(path)


# ---------------------------------------------------------------------------
# code generation


@dataclass(frozen=True)
class BodoSource:
    """The module a plan is compiled from.

    Attributes:
        text: the module's source.
        digest: hex SHA-256 of ``text``; names the module file.
        step_lines: ``{line number: step index}`` for the statements.
        params: the function's parameters (``src0``, ``src1``, ...).
        order_keys: the columns that order the result (the keys of a
            final group-by, as pandas sorts them), or ``()``.
    """

    text: str
    digest: str
    step_lines: Mapping[int, int]
    params: tuple[str, ...]
    order_keys: tuple[str, ...]

    @property
    def module_name(self) -> str:
        return f"{MODULE_PREFIX}{self.digest[:24]}"

    @property
    def file_name(self) -> str:
        return f"{self.module_name}.py"


def expr_code(expr: Expr, table: str, sample: pd.DataFrame) -> str:
    """Write an expression as code Bodo compiles, with pandas' nulls.

    A comparison involving a null is False in pandas (True for ``!=``)
    whenever the result is a numpy bool; Bodo's nullable arrays give a
    null instead, which a later ``~`` or ``|`` would carry on. Such
    comparisons get a ``fillna``; ``sample`` is an empty table of the
    input's dtypes that tells what pandas' result is.
    """
    if isinstance(expr, Col):
        return f"{table}[{expr.name!r}]"
    if isinstance(expr, BinOp):
        left = expr_code(expr.left, table, sample)
        right = expr_code(expr.right, table, sample)
        code = f"({left} {BINARY_OPS[expr.op]} {right})"
        if expr.op in COMPARISON_OPS and _numpy_bool(expr, sample):
            code = f"{code}.fillna({expr.op == 'ne'!r})"
        return code
    if isinstance(expr, UnaryOp):
        inner = expr_code(expr.operand, table, sample)
        if expr.op == "neg":
            return f"(-{inner})"
        if expr.op == "not":
            return f"(~{inner})"
        return f"{inner}.{expr.op}()"
    return repr(expr.value)  # a literal


def _numpy_bool(expr: Expr, sample: pd.DataFrame) -> bool:
    result = eval_expr(expr, sample)
    return isinstance(result, pd.Series) and result.dtype == np.dtype(bool)


def _hidden_name(base: str, taken: set[str]) -> str:
    """A column name starting with ``base`` that no table uses."""
    name = base
    while name in taken:
        name = f"_{name}"
    taken.add(name)
    return name


def _frame_literal(items: Sequence[tuple[str, str]]) -> str:
    """``pd.DataFrame({...})`` from (name, code) pairs, in order."""
    body = ", ".join(f"{name!r}: {code}" for name, code in items)
    return f"pd.DataFrame({{{body}}})"


def _step_lines(
    index: int,
    step: Step,
    params: Mapping[int, str],
    columns: Sequence[tuple[str, ...]],
    samples: Sequence[pd.DataFrame],
    taken: set[str],
) -> list[str]:
    """Write one step as statements Bodo compiles."""
    out = table_name(index)

    if isinstance(step, Source):
        return [f"{out} = {params[index]}"]

    if isinstance(step, Filter):
        src = table_name(step.src)
        pred = expr_code(step.predicate, src, samples[step.src])
        # a null predicate drops the row; Bodo cannot cast nullable
        # booleans with astype(bool), and fillna already removes nulls
        return [f"{out} = {src}[{pred}.fillna(False)]"]

    if isinstance(step, Select):
        return [f"{out} = {table_name(step.src)}[{list(step.columns)!r}]"]

    if isinstance(step, Rename):
        mapping = dict(step.mapping)
        return [f"{out} = {table_name(step.src)}.rename(columns={mapping!r})"]

    if isinstance(step, Assign):
        for name, expr in step.columns:
            if isinstance(expr, Lit) and expr.value is None:
                raise ExecutionError(
                    index,
                    "assign",
                    step,
                    BodoBackendError(
                        f"the bodo backend (bodo.jit) cannot add the "
                        f"all-null column {name!r}: Bodo has no type for a "
                        "column of None"
                    ),
                )
        # numba has no **{...} (DICT_MERGE), so build the frame whole;
        # this also allows column names that are not identifiers
        src = table_name(step.src)
        sample = samples[step.src]
        values = {n: expr_code(e, src, sample) for n, e in step.columns}
        items = [
            (name, values.get(name, f"{src}[{name!r}]"))
            for name in columns[index]
        ]
        return [f"{out} = {_frame_literal(items)}"]

    if isinstance(step, Aggregate):
        return _aggregate_lines(index, step, taken)

    if isinstance(step, Join):
        kwargs = ", ".join(
            f"{k}={v!r}" for k, v in join_kwargs(step).items()
        )
        left, right = table_name(step.left), table_name(step.right)
        return [f"{out} = pd.merge({left}, {right}, {kwargs})"]

    if isinstance(step, Repartition):
        # rows stay on their rank; Bodo shuffles by key where it must
        return [f"{out} = {table_name(step.src)}"]

    raise BodoBackendError(
        f"the bodo backend cannot write code for step {index} "
        f"({step_kind(step)}): {step!r}"
    )


def _aggregate_lines(
    index: int, step: Aggregate, taken: set[str]
) -> list[str]:
    """A group-by, with outputs under hidden names, then renamed.

    Named aggregation needs identifier keywords, so every output is
    computed as a hidden identifier and the frame rebuilt with the real
    names. Bodo's ``mean`` gives 0.0 for a group with no non-null value
    where pandas gives NaN, so each mean also counts its values and is
    masked where the count is zero.
    """
    out = table_name(index)
    src = table_name(step.src)
    # Bodo refuses the same reduction of the same column twice
    hidden: dict[tuple[str, str], str] = {}

    def reduce(column: str, func: str) -> str:
        if (column, func) not in hidden:
            name = _hidden_name(f"_dj_{len(hidden)}", taken)
            hidden[column, func] = name
        return f"{out}[{hidden[column, func]!r}]"

    items: list[tuple[str, str]] = [(k, f"{out}[{k!r}]") for k in step.keys]
    for agg in step.aggs:
        value = reduce(agg.column, agg.func)
        if agg.func == "mean":
            count = reduce(agg.column, "count")
            value = f"{value}.where({count} > 0)"
        items.append((agg.out, value))
    specs = ", ".join(
        f"{name}=({column!r}, {func!r})"
        for (column, func), name in hidden.items()
    )
    return [
        f"{out} = {src}.groupby({list(step.keys)!r}, as_index=False, "
        f"sort=False, dropna={step.dropna!r}).agg({specs})",
        f"{out} = {_frame_literal(items)}",
    ]


def bodo_source(
    trace: Trace, samples: Sequence[pd.DataFrame] | None = None
) -> BodoSource:
    """Write a trace as a module holding one function Bodo can compile.

    The function ``datajax_plan(src0, src1, ...)`` takes one DataFrame
    per input table, in source order, and returns the result with a
    fresh index. A comment above each statement prints its step.

    Args:
        trace: the trace.
        samples: every step's result on empty inputs (``empty_results``);
            made from the trace's source schemas if None.

    Raises:
        IRError: the trace is not valid.
        BodoBackendError: a step has no Bodo form.
    """
    columns = check_trace(trace)
    if samples is None:
        samples = empty_results(trace)
    taken = {name for cols in columns for name in cols}
    params: dict[int, str] = {}
    for index, step in enumerate(trace.steps):
        if isinstance(step, Source):
            params[index] = f"src{len(params)}"

    header = [
        "# Generated by DataJAX for the Bodo backend; do not edit.",
        f"# format {SOURCE_FORMAT}; bodo {installed_version('bodo')}, "
        f"pandas {pd.__version__}",
        "import pandas as pd",
        "",
        "",
        f"def {FUNC_NAME}({', '.join(params.values())}):",
    ]
    lines = list(header)
    step_lines: dict[int, int] = {}
    for index, step in enumerate(trace.steps):
        lines.append(f"    # {format_step(index, step)}")
        statements = _step_lines(
            index, step, params, columns, samples, taken
        )
        for statement in statements:
            lines.append(f"    {statement}")
            step_lines[len(lines)] = index  # 1-based line numbers
    result = table_name(trace.output)
    lines.append(f"    return {result}.reset_index(drop=True)")
    text = "\n".join(lines) + "\n"

    last = trace.steps[-1]
    order_keys = last.keys if isinstance(last, Aggregate) else ()
    return BodoSource(
        text=text,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        step_lines=step_lines,
        params=tuple(params.values()),
        order_keys=tuple(order_keys),
    )


# ---------------------------------------------------------------------------
# the module files


def plans_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where generated plan modules are kept."""
    return cache_dir(environ) / "bodo-plans"


def write_module(source: BodoSource, folder: Path) -> Path:
    """Save a plan module once, atomically, safe for concurrent ranks.

    Every rank may call this at the same time: each writes a private
    temporary file and links it to the final name only if that name is
    free, so readers never see a partial file and an existing file is
    not rewritten (numba's cache keys on the file's time stamp). A file
    whose text differs (damaged) is replaced by a rename.

    Returns:
        The module's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / source.file_name
    if _holds(path, source.text):
        return path

    fd, tmp = tempfile.mkstemp(
        prefix=f".{source.module_name}.", suffix=".tmp", dir=folder
    )
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; others may read
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(source.text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            if not _holds(path, source.text):
                logger.warning("replacing damaged plan module %s", path)
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except FileNotFoundError:
        return False


def load_function(path: Path, module_name: str) -> Any:
    """Import a plan module from its file; return its plan function."""
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise BodoBackendError(f"cannot import the plan module {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return getattr(module, FUNC_NAME)


# ---------------------------------------------------------------------------
# results back in pandas' dtypes


def empty_results(
    trace: Trace, inputs: Sequence[pd.DataFrame] | None = None
) -> list[pd.DataFrame]:
    """Every step's result when pandas runs the plan on empty inputs.

    Their dtypes are what pandas gives, as the planner finds them, but
    from the exact input dtypes where inputs are given (a schema keeps
    only dtype names, which lose the categories of a categorical).
    """
    sources = [s for s in trace.steps if isinstance(s, Source)]
    if inputs is None:
        inputs = [_empty_frame(s) for s in sources]
    empty = {
        s.name: df.iloc[:0] for s, df in zip(sources, inputs, strict=True)
    }
    results: list[pd.DataFrame] = []
    run_trace(trace, empty, observe=lambda _, df: results.append(df))
    return results


def _empty_frame(step: Source) -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.Series([], dtype=dtype) for name, dtype in step.schema}
    )


def _narrow(dtype: Any) -> bool:
    """True for a numpy dtype that cannot hold a null (int, uint, bool)."""
    return isinstance(dtype, np.dtype) and dtype.kind in "iub"


def _widened(dtype: np.dtype) -> np.dtype:
    """The dtype pandas turns a narrow dtype into when nulls appear."""
    return np.dtype(object) if dtype.kind == "b" else np.dtype("float64")


def null_columns(df: pd.DataFrame, expected: Mapping[str, Any]) -> list[str]:
    """Columns of narrow expected dtype that hold nulls here."""
    return [
        name
        for name, dtype in expected.items()
        if _narrow(dtype) and bool(df[name].isna().any())
    ]


def restore_pandas_dtypes(
    df: pd.DataFrame,
    expected: Mapping[str, Any],
    widen: Sequence[str] = (),
) -> pd.DataFrame:
    """Give Bodo's result the dtypes pandas would have given it.

    Bodo returns nullable (often Arrow-backed) arrays where pandas keeps
    numpy ones, and strings with ``pd.NA`` where pandas 3 has ``str``
    with NaN. Each column is cast to ``expected``; columns named in
    ``widen`` (narrow in ``expected`` but holding nulls on some rank)
    become float64, or object holding True, False and NaN, as pandas
    widens them.

    Raises:
        BodoBackendError: Bodo's columns are not the expected ones.
    """
    if list(df.columns) != list(expected):
        raise BodoBackendError(
            f"the bodo backend returned columns {list(df.columns)!r} where "
            f"pandas gives {list(expected)!r}"
        )
    converted = {}
    for name, dtype in expected.items():
        target = _widened(dtype) if name in widen else dtype
        converted[name] = _cast(df[name], target)
    return pd.DataFrame(converted, index=df.index)


def _cast(series: pd.Series, dtype: Any) -> pd.Series:
    if series.dtype == dtype:
        return series
    if dtype == np.dtype(object):
        values = series.astype(object)
        return values.where(series.notna(), np.nan)
    return series.astype(dtype)


def _strip_bodo_meta(df: pd.DataFrame) -> pd.DataFrame:
    """A frame that Bodo will not mistake for one of its own results.

    Bodo tags the frames it returns with ``_bodo_meta`` (their
    distribution) and trusts the tag when the frame comes back; pandas
    copies it through ``copy``, ``iloc`` and friends, so a share cut
    from a gathered result could claim to be something it is not.
    """
    out = df.reset_index(drop=True)
    if getattr(out, "_bodo_meta", None) is not None:
        out._bodo_meta = None
    return out


# ---------------------------------------------------------------------------
# error messages


def _failed_step(source: BodoSource, path: Path, text: str) -> int | None:
    """The step at the deepest line of the plan module an error names."""
    name = re.escape(path.name)
    lines = [
        int(m.group(1))
        for m in re.finditer(
            rf"{name}\"?(?:, line |:| \()(\d+)", text
        )
    ]
    for line in reversed(lines):
        if line in source.step_lines:
            return source.step_lines[line]
    return None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def _reason(text: str, limit: int = 400) -> str:
    """Bodo's message without the source excerpt it wraps around it."""
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line[:1].isspace()
        and not line.startswith(("File \"", "def ", "During:"))
    ]
    reason = " ".join(kept) or _first_line(text)
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _compile_error(
    source: BodoSource, path: Path, trace: Trace, exc: Exception
) -> Exception:
    """Turn Bodo's error into one naming the backend and the step."""
    text = str(exc)
    index = _failed_step(source, path, text)
    reason = _reason(text)
    if index is None:
        return BodoBackendError(
            f"the bodo backend (bodo.jit) cannot run this plan: "
            f"{type(exc).__name__}: {reason}\n    generated code: {path}"
        )
    step = trace.steps[index]
    cause = BodoBackendError(
        f"the bodo backend (bodo.jit) cannot run this "
        f"{step_kind(step)} step: {type(exc).__name__}: {reason}; "
        f"generated code: {path}"
    )
    error = ExecutionError(index, step_kind(step), step, cause)
    error.__cause__ = exc
    return error


# ---------------------------------------------------------------------------
# the executor


RESULT_MODES = ("all", "local")

# compiled plan functions of this process, shared by every executor, by
# (source digest, module path); a function compiles once per process and
# argument types, or loads from numba's cache
_compiled: dict[tuple[str, str], Any] = {}
_compiled_lock = threading.Lock()


class BodoExecutor(Executor):
    """Run plans with ``bodo.jit`` in SPMD mode (see the module notes).

    Args:
        result: ``"all"``: every rank returns the whole result;
            ``"local"``: each rank returns its part of it.
        comm: the communicator results are gathered over (default
            ``datajax.mpi.world()``); it must span the ranks Bodo runs
            on, i.e. the world.
    """

    name = "bodo"

    def __init__(self, result: str = "all", comm: Comm | None = None):
        if result not in RESULT_MODES:
            raise ValueError(
                f"result must be one of {RESULT_MODES}, not {result!r}"
            )
        self.result = result
        self._comm = comm

    # -- what a plan turns into

    def mode(self, environ: Mapping[str, str] | None = None) -> str:
        """``stub``, ``native`` or ``replay``: what ``run`` will do."""
        if env_flag(STUB_VAR, environ):
            return "stub"
        if env_flag(NATIVE_VAR, environ):
            return "native"
        return "replay"

    def source_of(self, plan: ExecutionPlan) -> str:
        """The generated module a plan is compiled from."""
        return bodo_source(plan.trace).text

    def module_path(self, plan: ExecutionPlan) -> Path:
        """Where the plan's module file is (or will be) kept."""
        return plans_dir() / bodo_source(plan.trace).file_name

    def notes(self, plan: ExecutionPlan) -> list[str]:
        """Plan notes saying how this backend runs the plan."""
        mode = self.mode()
        if mode == "stub":
            return [
                f"executor=bodo-stub ({STUB_VAR}=1): pandas execution, NOT "
                "Bodo; results and timings are pandas'"
            ]
        if mode == "native":
            from datajax.runtime.bodo_native import native_notes

            return native_notes(plan)
        notes = [
            "executor=bodo: bodo.jit(spawn=False, cache=True) in SPMD mode; "
            "every rank passes its share of each input",
            f"bodo: generated code {self.module_path(plan)}",
        ]
        if any(isinstance(s, Repartition) for s in plan.trace.steps):
            notes.append(
                "bodo: repartition keeps rows on their rank; Bodo's joins "
                "and group-bys shuffle by key themselves"
            )
        return notes

    def annotate(self, plan: ExecutionPlan) -> ExecutionPlan:
        """The plan with this backend's notes added to its metrics."""
        metrics = dataclasses.replace(
            plan.metrics,
            notes=tuple(plan.metrics.notes) + tuple(self.notes(plan)),
        )
        return plan.with_metrics(metrics)

    def explain(self, plan: ExecutionPlan) -> str:
        """The plan's explanation with this backend's notes and code."""
        text = self.annotate(plan).explain()
        if self.mode() != "replay":
            return text
        return f"{text}\n\nbodo code:\n{self.source_of(plan)}"

    # -- running

    def run(
        self, plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
    ) -> pd.DataFrame:
        mode = self.mode()
        if mode == "stub":
            return _run_stub(plan, tables)
        if mode == "native":
            from datajax.runtime.bodo_native import BodoNativeExecutor

            return BodoNativeExecutor().run(plan, tables)

        bodo = import_bodo("the bodo executor")
        bound = bind_tables(plan.trace, tables)
        inputs = [_strip_bodo_meta(df) for df in bound]
        _check_typable(bodo, plan.trace, inputs)
        samples = empty_results(plan.trace, inputs)
        expected = dict(samples[-1].dtypes.items())

        source = bodo_source(plan.trace, samples)
        self._agree(source, plan.trace, inputs)
        func, path = self._function(bodo, source)
        try:
            local = func(*inputs)
        except ExecutionError:
            raise
        except Exception as exc:
            if _is_compile_error(exc):
                raise _compile_error(source, path, plan.trace, exc) from exc
            raise
        local = _strip_bodo_meta(local)
        return self._finish(local, expected, source)

    def _agree(
        self, source: BodoSource, trace: Trace, inputs: Sequence[pd.DataFrame]
    ) -> None:
        """Check that every rank runs the same plan on the same dtypes.

        Bodo's collectives assume it: ranks that disagree would wait for
        each other forever, or exchange data of different layouts. One
        small allgather lets every rank raise the same error instead.

        Raises:
            BodoBackendError: on every rank, naming the first difference.
        """
        comm = self._world()
        if comm.size == 1:
            return
        names = [s.name for s in trace.steps if isinstance(s, Source)]
        mine = (
            source.digest,
            [
                [(c, repr(t)) for c, t in df.dtypes.items()]
                for df in inputs
            ],
        )
        every = comm.allgather(mine)
        for rank, (_, dtypes) in enumerate(every):
            for name, ours, theirs in zip(
                names, every[0][1], dtypes, strict=True
            ):
                if ours != theirs:
                    raise BodoBackendError(
                        f"the bodo backend needs one dtype per column on "
                        f"all ranks, but table {name!r} differs between "
                        f"rank 0 {dict(ours)!r} and rank {rank} "
                        f"{dict(theirs)!r}; give every rank's share the "
                        "same dtypes (e.g. astype on the whole table "
                        "before splitting it)"
                    )
        for rank, (digest, _) in enumerate(every):
            if digest != every[0][0]:
                raise BodoBackendError(
                    f"the bodo backend runs one plan on all ranks, but rank "
                    f"{rank} runs another plan than rank 0; call it with "
                    "the same plan on every rank"
                )

    def _function(self, bodo: Any, source: BodoSource) -> tuple[Any, Path]:
        """The compiled plan function, from this process or the cache."""
        path = write_module(source, plans_dir())
        key = (source.digest, str(path))
        with _compiled_lock:
            func = _compiled.get(key)
            if func is None:
                py_func = load_function(path, source.module_name)
                func = bodo.jit(
                    py_func,
                    spawn=False,
                    cache=True,
                    distributed=list(source.params),
                )
                _compiled[key] = func
        return func, path

    def _world(self) -> Comm:
        if self._comm is None:
            from datajax.mpi import world

            self._comm = world()
        return self._comm

    def _finish(
        self,
        local: pd.DataFrame,
        expected: Mapping[str, Any],
        source: BodoSource,
    ) -> pd.DataFrame:
        """Gather (or not) and restore pandas' dtypes and order."""
        comm = self._world()
        if self.result == "local":
            widen = null_columns(local, expected)
            if comm.size > 1:
                every = comm.allgather(widen)
                widen = sorted({c for part in every for c in part})
            return restore_pandas_dtypes(local, expected, widen)

        parts = comm.allgather(local) if comm.size > 1 else [local]
        full = [p for p in parts if len(p)] or parts[:1]
        whole = pd.concat(full, ignore_index=True) if len(full) > 1 else (
            full[0]
        )
        whole = restore_pandas_dtypes(
            whole, expected, null_columns(whole, expected)
        )
        if source.order_keys:
            # pandas sorts group-by results by key, nulls last
            whole = whole.sort_values(
                list(source.order_keys), na_position="last", kind="mergesort"
            )
        return whole.reset_index(drop=True)


def _is_compile_error(exc: Exception) -> bool:
    """True for errors numba or Bodo raise while compiling."""
    kinds = {type(exc).__name__} | {
        k.__name__ for k in type(exc).__mro__
    }
    return bool(
        kinds
        & {
            "BodoError",
            "TypingError",
            "NumbaError",
            "UnsupportedError",
            "UnsupportedBytecodeError",
            "LoweringError",
        }
    )


def _check_typable(
    bodo: Any, trace: Trace, inputs: Sequence[pd.DataFrame]
) -> None:
    """Fail clearly on input columns Bodo cannot type (mixed objects).

    Raises:
        BodoBackendError: names the table, the column and its dtype.
    """
    names = [s.name for s in trace.steps if isinstance(s, Source)]
    for name, df in zip(names, inputs, strict=True):
        for column, dtype in df.dtypes.items():
            if dtype != np.dtype(object):
                continue
            try:
                bodo.typeof(df[column])
            except Exception as exc:
                raise BodoBackendError(
                    f"the bodo backend cannot type column {column!r} of "
                    f"table {name!r} (dtype object: {_first_line(str(exc))})"
                    "; give it one type, e.g. df[col].astype('str') or "
                    "astype('boolean')"
                ) from None


def _run_stub(
    plan: ExecutionPlan, tables: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """The stub: pandas runs the plan; Bodo is not imported."""
    logger.debug("%s=1: running the plan with pandas, not Bodo", STUB_VAR)
    return run_trace(plan.trace, tables).reset_index(drop=True)
