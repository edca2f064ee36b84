"""MPI calls with known byte counts, run under the PMPI interposer.

``python -m tests.native.mpi_counts OUT_DIR`` runs every case on every
rank: reset the interposer's counters, make the calls, read the counters.
Each rank writes ``OUT_DIR/rank<r>.json``.  ``expected(case, rank,
size)`` is the analytic answer (logical bytes to and from other ranks),
a pure function the tests call without MPI.

``python -m tests.native.mpi_counts --status OUT_DIR`` only writes each
rank's counter status.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

I8, F8, I4 = 8, 8, 4  # item sizes of int64, float64, int32


# ---------------------------------------------------------------------------
# the analytic answers: (bytes sent to others, bytes received from others)


def _others(rank: int, size: int) -> list[int]:
    return [i for i in range(size) if i != rank]


def expected(case: str, rank: int, size: int) -> tuple[int, int]:
    """Logical bytes ``case`` moves to and from other ranks on ``rank``."""
    others = _others(rank, size)
    ring = size > 1
    table: dict[str, tuple[int, int]] = {
        # ring: each rank sends to rank+1 and receives from rank-1
        "sendrecv_ring": (1000 * I8, 1000 * I8) if ring else (0, 0),
        "isend_irecv_ring": (500 * F8, 500 * F8) if ring else (0, 0),
        "persistent_ring_x3": (3 * 64 * I8, 3 * 64 * I8)
        if ring else (0, 0),
        # rank 0 sends 1000 items; rank 1 posts room for 2000 but the
        # status says 1000 arrived
        "send_recv_0_to_1": (
            1000 * I8 if rank == 0 and size > 1 else 0,
            1000 * I8 if rank == 1 else 0,
        ),
        "bcast_root0": (
            100 * I8 * (size - 1) if rank == 0 else 0,
            100 * I8 if rank != 0 else 0,
        ),
        "gatherv_root0": (
            (rank + 1) * F8 if rank != 0 else 0,
            sum((j + 1) * F8 for j in others) if rank == 0 else 0,
        ),
        "scatterv_root0": (
            sum((j + 2) * I4 for j in others) if rank == 0 else 0,
            (rank + 2) * I4 if rank != 0 else 0,
        ),
        "allgather": (10 * I8 * (size - 1), 10 * I8 * (size - 1)),
        "allgather_in_place": (10 * I8 * (size - 1), 10 * I8 * (size - 1)),
        "allgatherv": (
            (rank + 1) * F8 * (size - 1),
            sum((j + 1) * F8 for j in others),
        ),
        "alltoall": (7 * I4 * (size - 1), 7 * I4 * (size - 1)),
        "alltoallv": (
            sum((rank + 1) * (i + 1) * I8 for i in others),
            sum((j + 1) * (rank + 1) * I8 for j in others),
        ),
        "ialltoallv": (
            sum((rank + 1) * (i + 1) * I8 for i in others),
            sum((j + 1) * (rank + 1) * I8 for j in others),
        ),
        "alltoallw": (
            sum((rank + i + 1) * I4 for i in others),
            sum((j + rank + 1) * I4 for j in others),
        ),
        "reduce_root0": (
            16 * F8 if rank != 0 else 0,
            16 * F8 * (size - 1) if rank == 0 else 0,
        ),
        "allreduce": (16 * F8 * (size - 1), 16 * F8 * (size - 1)),
        "iallreduce": (16 * F8 * (size - 1), 16 * F8 * (size - 1)),
        "allreduce_init_x2": (
            2 * 16 * F8 * (size - 1), 2 * 16 * F8 * (size - 1)
        ),
        "reduce_scatter_block": (3 * I8 * (size - 1), 3 * I8 * (size - 1)),
        "reduce_scatter": (
            sum((i + 1) * I8 for i in others),
            (rank + 1) * I8 * (size - 1),
        ),
        "scan": (4 * I8 * (size - 1 - rank), 4 * I8 * rank),
        "exscan": (4 * I8 * (size - 1 - rank), 4 * I8 * rank),
    }
    return table[case]


def calls_mpi(case: str, rank: int, size: int) -> bool:
    """Whether ``rank`` makes any MPI call in ``case``."""
    if case == "send_recv_0_to_1":
        return size > 1 and rank in (0, 1)
    return True


# ---------------------------------------------------------------------------
# the calls (MPI is imported only when the program runs)


def _cases(MPI) -> dict[str, Callable]:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    nxt, prev = (rank + 1) % size, (rank - 1) % size

    def sendrecv_ring():
        out = np.arange(1000, dtype=np.int64)
        back = np.empty_like(out)
        comm.Sendrecv(out, dest=nxt, recvbuf=back, source=prev)

    def isend_irecv_ring():
        out = np.ones(500, dtype=np.float64)
        back = np.empty_like(out)
        requests = [comm.Irecv(back, source=prev), comm.Isend(out, nxt)]
        MPI.Request.Waitall(requests)

    def persistent_ring_x3():
        out = np.arange(64, dtype=np.int64)
        back = np.empty_like(out)
        requests = [
            comm.Recv_init(back, source=prev), comm.Send_init(out, nxt)
        ]
        for _ in range(3):
            MPI.Prequest.Startall(requests)
            MPI.Request.Waitall(requests)
        for request in requests:
            request.Free()

    def send_recv_0_to_1():
        if size < 2:
            return
        if rank == 0:
            comm.Send(np.arange(1000, dtype=np.int64), dest=1)
        elif rank == 1:
            room = np.empty(2000, dtype=np.int64)
            comm.Recv(room, source=0)

    def bcast_root0():
        comm.Bcast(np.arange(100, dtype=np.int64), root=0)

    def gatherv_root0():
        mine = np.ones(rank + 1, dtype=np.float64)
        if rank == 0:
            counts = [j + 1 for j in range(size)]
            room = np.empty(sum(counts), dtype=np.float64)
            comm.Gatherv(mine, [room, counts], root=0)
        else:
            comm.Gatherv(mine, None, root=0)

    def scatterv_root0():
        room = np.empty(rank + 2, dtype=np.int32)
        if rank == 0:
            counts = [j + 2 for j in range(size)]
            data = np.zeros(sum(counts), dtype=np.int32)
            comm.Scatterv([data, counts], room, root=0)
        else:
            comm.Scatterv(None, room, root=0)

    def allgather():
        room = np.empty(10 * size, dtype=np.int64)
        comm.Allgather(np.arange(10, dtype=np.int64), room)

    def allgather_in_place():
        room = np.zeros(10 * size, dtype=np.int64)
        comm.Allgather(MPI.IN_PLACE, room)

    def allgatherv():
        counts = [j + 1 for j in range(size)]
        room = np.empty(sum(counts), dtype=np.float64)
        comm.Allgatherv(np.ones(rank + 1), [room, counts])

    def alltoall():
        out = np.zeros(7 * size, dtype=np.int32)
        comm.Alltoall(out, np.empty_like(out))

    def alltoallv_buffers():
        send_counts = [(rank + 1) * (i + 1) for i in range(size)]
        recv_counts = [(j + 1) * (rank + 1) for j in range(size)]
        out = np.zeros(sum(send_counts), dtype=np.int64)
        room = np.empty(sum(recv_counts), dtype=np.int64)
        return [out, send_counts], [room, recv_counts]

    def alltoallv():
        comm.Alltoallv(*alltoallv_buffers())

    def ialltoallv():
        comm.Ialltoallv(*alltoallv_buffers()).Wait()

    def alltoallw():
        send_counts = [rank + i + 1 for i in range(size)]
        recv_counts = [j + rank + 1 for j in range(size)]
        out = np.zeros(sum(send_counts), dtype=np.int32)
        room = np.empty(sum(recv_counts), dtype=np.int32)
        displacements = [
            4 * int(d) for d in np.cumsum([0, *send_counts[:-1]])
        ]
        back = [4 * int(d) for d in np.cumsum([0, *recv_counts[:-1]])]
        types = [MPI.INT32_T] * size
        comm.Alltoallw(
            [out, send_counts, displacements, types],
            [room, recv_counts, back, types],
        )

    def reduce_root0():
        room = np.empty(16) if rank == 0 else None
        comm.Reduce(np.ones(16), room, op=MPI.SUM, root=0)

    def allreduce():
        comm.Allreduce(np.ones(16), np.empty(16), op=MPI.SUM)

    def iallreduce():
        comm.Iallreduce(np.ones(16), np.empty(16), op=MPI.SUM).Wait()

    def allreduce_init_x2():
        request = comm.Allreduce_init(np.ones(16), np.empty(16))
        for _ in range(2):
            request.Start()
            request.Wait()
        request.Free()

    def reduce_scatter_block():
        comm.Reduce_scatter_block(
            np.ones(3 * size, dtype=np.int64), np.empty(3, dtype=np.int64)
        )

    def reduce_scatter():
        counts = [i + 1 for i in range(size)]
        comm.Reduce_scatter(
            np.ones(sum(counts), dtype=np.int64),
            np.empty(rank + 1, dtype=np.int64),
            counts,
        )

    def scan():
        comm.Scan(np.ones(4, dtype=np.int64), np.empty(4, dtype=np.int64))

    def exscan():
        comm.Exscan(np.ones(4, dtype=np.int64), np.zeros(4, dtype=np.int64))

    return {
        "sendrecv_ring": sendrecv_ring,
        "isend_irecv_ring": isend_irecv_ring,
        "persistent_ring_x3": persistent_ring_x3,
        "send_recv_0_to_1": send_recv_0_to_1,
        "bcast_root0": bcast_root0,
        "gatherv_root0": gatherv_root0,
        "scatterv_root0": scatterv_root0,
        "allgather": allgather,
        "allgather_in_place": allgather_in_place,
        "allgatherv": allgatherv,
        "alltoall": alltoall,
        "alltoallv": alltoallv,
        "ialltoallv": ialltoallv,
        "alltoallw": alltoallw,
        "reduce_root0": reduce_root0,
        "allreduce": allreduce,
        "iallreduce": iallreduce,
        "allreduce_init_x2": allreduce_init_x2,
        "reduce_scatter_block": reduce_scatter_block,
        "reduce_scatter": reduce_scatter,
        "scan": scan,
        "exscan": exscan,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status_only = args[:1] == ["--status"]
    out_dir = Path(args[-1])

    from mpi4py import MPI

    from datajax.mpi import Comm, install_abort_hook
    from datajax.native.pmpi import read_counters, reset_counters

    install_abort_hook()
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    report: dict = {"rank": rank, "size": size}

    if status_only:
        report["status"] = read_counters().snapshot()
    else:
        cases = _cases(MPI)
        report["cases"] = {}
        for name, run in cases.items():
            world.Barrier()
            reset_counters()
            run()
            counters = read_counters()
            report["cases"][name] = {
                "sent": counters.bytes_sent,
                "received": counters.bytes_received,
                "uncounted": counters.uncounted_calls,
                "calls": counters.snapshot()["pmpi_calls"],
            }

        # the same allreduce through datajax.mpi.Comm: both counts agree
        comm = Comm()
        world.Barrier()
        reset_counters()
        comm.allreduce_array(np.ones(16), MPI.SUM)
        counters = read_counters()
        report["comm_allreduce"] = {
            "comm": [comm.counter.sent, comm.counter.received],
            "pmpi": [counters.bytes_sent, counters.bytes_received],
        }

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    world.Barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
