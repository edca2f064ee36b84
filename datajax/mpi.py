"""The one module that talks to MPI.

Everything else in DataJAX takes a ``comm`` argument (a :class:`Comm`) that
defaults to :func:`world`.  A :class:`Comm` wraps a duplicate of
``MPI.COMM_WORLD`` and counts the bytes that this process hands to other
ranks and gets from them, at the call site:

* buffer calls (upper-case mpi4py methods): element count times item size,
  only for the parts that go to or come from *other* ranks;
* object calls (lower-case methods): the length of the pickled object.

The counts are *logical* bytes: what this rank's data contributes to other
ranks and what it receives from them, as if every collective were written
with point-to-point messages.  MPICH may route a collective through a tree
or a ring and put more bytes on the wire; those wire bytes, and the bytes
Bodo's own shuffles move, are not seen here.  The PMPI interposer of
:mod:`datajax.native.pmpi` counts the latter by the same rule, for every
MPI call of the process, when the job is started with ``datajax-launch``.

Launcher detection (mpiexec, srun, none) also lives here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

log = logging.getLogger(__name__)

__all__ = [
    "ByteCounter",
    "Comm",
    "LaunchError",
    "detect_launcher",
    "install_abort_hook",
    "launcher_rank",
    "world",
]


class LaunchError(RuntimeError):
    """The processes were started so that they do not form one world."""


# ---------------------------------------------------------------------------
# byte counting


@dataclass
class ByteCounter:
    """Bytes this rank sent to and received from other ranks, per call."""

    sent: int = 0
    received: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, sent: int, received: int) -> None:
        """Record one call of ``op``."""
        self.sent += int(sent)
        self.received += int(received)
        self.calls[op] = self.calls.get(op, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Return a JSON-safe copy of the counters."""
        return {
            "mpi_bytes_sent": self.sent,
            "mpi_bytes_received": self.received,
            "mpi_calls": dict(sorted(self.calls.items())),
        }


def _pickled_size(obj: Any) -> int:
    return len(MPI.pickle.dumps(obj))


# ---------------------------------------------------------------------------
# the communicator


class Comm:
    """A duplicated communicator whose every call counts its bytes.

    Args:
        base: the communicator to duplicate; ``MPI.COMM_WORLD`` by default.
    """

    def __init__(self, base: MPI.Comm | None = None) -> None:
        self._comm = (base if base is not None else MPI.COMM_WORLD).Dup()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.counter = ByteCounter()

    @property
    def mpi_comm(self) -> MPI.Comm:
        """The underlying mpi4py communicator (calls on it are not counted)."""
        return self._comm

    # -- object calls ------------------------------------------------------

    def allgather(self, obj: Any) -> list[Any]:
        """Gather a small picklable object from every rank on every rank."""
        result = self._comm.allgather(obj)
        others = sum(
            _pickled_size(item)
            for rank, item in enumerate(result)
            if rank != self.rank
        )
        own = _pickled_size(obj) * (self.size - 1)
        self.counter.add("allgather", own, others)
        return result

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        """Gather a small picklable object on ``root``."""
        result = self._comm.gather(obj, root=root)
        if self.rank == root:
            received = sum(
                _pickled_size(item)
                for rank, item in enumerate(result)
                if rank != root
            )
            self.counter.add("gather", 0, received)
        else:
            self.counter.add("gather", _pickled_size(obj), 0)
        return result

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Broadcast a small picklable object from ``root``."""
        result = self._comm.bcast(obj, root=root)
        nbytes = _pickled_size(result) if self.size > 1 else 0
        if self.rank == root:
            self.counter.add("bcast", nbytes * (self.size - 1), 0)
        else:
            self.counter.add("bcast", 0, nbytes)
        return result

    # -- buffer calls ------------------------------------------------------

    def allreduce_array(self, values: np.ndarray, op: MPI.Op) -> np.ndarray:
        """Element-wise reduce a numeric array over all ranks.

        Counted like an allgather of the array: every rank's buffer reaches
        the ``size - 1`` others.
        """
        send = np.ascontiguousarray(values)
        recv = np.empty_like(send)
        self._comm.Allreduce(send, recv, op=op)
        nbytes = send.nbytes * (self.size - 1)
        self.counter.add("Allreduce", nbytes, nbytes)
        return recv

    def any_flag(self, flag: bool) -> bool:
        """Return True on every rank if ``flag`` is True on any rank."""
        total = self.allreduce_array(np.array([int(bool(flag))]), MPI.SUM)
        return bool(total[0])

    def gatherv_array(
        self, values: np.ndarray, root: int = 0
    ) -> list[np.ndarray] | None:
        """Gather 1-D arrays of one numeric dtype; ``root`` gets one per rank.

        Object arrays are not buffers; use :meth:`gather` for those.
        """
        send = np.ascontiguousarray(values)
        if send.ndim != 1 or send.dtype == object:
            raise TypeError(
                "gatherv_array takes a 1-D numeric array, "
                f"not {send.dtype} with shape {send.shape}"
            )
        counts = self.gather(int(send.size), root=root)
        if self.rank != root:
            self._comm.Gatherv(send, None, root=root)
            self.counter.add("Gatherv", send.nbytes, 0)
            return None

        recv = np.empty(sum(counts), dtype=send.dtype)
        displacements = [0, *np.cumsum(counts)[:-1].tolist()]
        self._comm.Gatherv(
            send, [recv, (counts, displacements)], root=root
        )
        received = (sum(counts) - counts[root]) * send.itemsize
        self.counter.add("Gatherv", 0, received)
        return [
            recv[start : start + count]
            for start, count in zip(displacements, counts, strict=True)
        ]

    def barrier(self) -> None:
        """Wait for every rank."""
        self._comm.Barrier()
        self.counter.add("Barrier", 0, 0)

    def abort(self, code: int = 1) -> None:
        """End every rank of the world now."""
        self._comm.Abort(code)


_WORLD: Comm | None = None
_WORLD_LOCK = threading.Lock()


def world() -> Comm:
    """Return the process-wide counting duplicate of ``MPI.COMM_WORLD``."""
    global _WORLD
    with _WORLD_LOCK:
        if _WORLD is None:
            _WORLD = Comm()
        return _WORLD


# ---------------------------------------------------------------------------
# launcher detection


@dataclass(frozen=True)
class Launch:
    """How this process was started."""

    launcher: str
    world_size: int
    tasks_expected: int


def detect_launcher(
    world_size: int, environ: os._Environ | dict | None = None
) -> Launch:
    """Name the launcher and check that its tasks form one MPI world.

    Args:
        world_size: the size of ``MPI.COMM_WORLD`` as this process sees it.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        LaunchError: srun started several tasks but each is a world of its
            own (``srun --mpi=none``), so every task would run the whole job
            and write the same output.
    """
    env = os.environ if environ is None else environ
    try:
        step_tasks = int(env.get("SLURM_STEP_NUM_TASKS", "0") or 0)
    except ValueError:
        # not set by Slurm then; nothing to check
        step_tasks = 0
    if "PMI_RANK" in env or "PMI_SIZE" in env or "HYDRA_CONTROL_FD" in env:
        launcher = "srun" if step_tasks > 1 else "mpiexec"
    elif step_tasks > 0:
        launcher = "srun"
    else:
        launcher = "none"

    if step_tasks > 1 and world_size == 1:
        raise LaunchError(
            f"srun started {step_tasks} tasks but MPI sees a world of size "
            "1 in each, so every task would run the whole job and write the "
            "same output. Launch with 'srun --mpi=pmi2' (the MPICH that "
            "Bodo bundles speaks PMI-2) or with mpiexec inside the "
            "allocation."
        )
    return Launch(launcher, world_size, max(step_tasks, world_size))


def launcher_rank(environ: os._Environ | dict | None = None) -> int:
    """This process's rank as the launcher says, before MPI starts.

    For quieting ranks other than 0 while arguments are parsed; 0 when no
    launcher variable is set.
    """
    env = os.environ if environ is None else environ
    for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK",
                 "SLURM_PROCID"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


# ---------------------------------------------------------------------------
# failure handling


def install_abort_hook() -> None:
    """Make an uncaught exception on any rank end the whole world.

    Without it, a rank that dies while the others wait in a collective
    leaves them waiting forever.  The hook logs the traceback, then calls
    ``MPI.COMM_WORLD.Abort(1)``; on one rank it only logs.
    """
    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        previous(kind, value, traceback)
        if MPI.COMM_WORLD.Get_size() > 1:
            sys.stderr.write(
                f"[rank {MPI.COMM_WORLD.Get_rank()}] uncaught "
                f"{kind.__name__}; aborting all ranks\n"
            )
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)

    sys.excepthook = hook


def share_from_root(
    comm: Comm,
    make: Callable[[], Any],
    catch: type[BaseException] | tuple[type[BaseException], ...],
    raise_as: Callable[[str], BaseException],
) -> Any:
    """Run ``make`` on rank 0 and give its result to every rank.

    If ``make`` raises one of ``catch``, every rank raises
    ``raise_as(message)`` instead, so set-up errors found on rank 0 (a
    missing file, a bad flag value) stop all ranks alike.
    """
    outcome: tuple[bool, Any] = (True, None)
    if comm.rank == 0:
        try:
            outcome = (True, make())
        except catch as error:
            outcome = (False, str(error))
    ok, value = comm.bcast(outcome, root=0)
    if not ok:
        raise raise_as(value)
    return value


def first_error(
    comm: Comm, message: str | None
) -> tuple[int, str] | None:
    """Agree on the first error among the ranks, or None if none failed.

    Every rank must call this at the same point.  The lowest rank that
    reports a message wins, so the answer is the same on every rank.
    """
    if not comm.any_flag(message is not None):
        return None
    messages: Sequence[str | None] = comm.allgather(message)
    for rank, text in enumerate(messages):
        if text is not None:
            return rank, text
    raise AssertionError("a rank flagged an error but sent no message")
