"""A Bodo hash shuffle whose size is known, run under the PMPI interposer.

``python -m tests.native.bodo_shuffle ROWS OUT_DIR`` under ``mpiexec -n
P`` (SPMD mode, ``BODO_SPAWN_MODE=0``):

1. Learn which rank owns which key: a group-by over keys ``0..K-1``
   leaves each key on the rank that Bodo's hash partitioning gives it.
   This is also the first call of the jit function, so its time is the
   compile (or cache load) time.
2. Rank r takes ``ROWS`` distinct keys that rank ``(r + 1) % P`` owns and
   groups them again.  Every key is distinct, so no local pre-aggregation
   can shrink the data, and none of the rows is at home: all ``ROWS``
   rows of two int64 columns (16 bytes a row) must leave the rank, and
   as many arrive from rank ``r - 1``.  Only this call is measured.

Each rank writes ``OUT_DIR/rank<r>.json`` with the counters of step 2 and
the timings.  Point ``NUMBA_CACHE_DIR`` at a cache folder: the jit
function is cached, and without it the cache lands beside this file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bodo
import numpy as np
import pandas as pd

ROW_BYTES = 16  # key and sum, both int64


@bodo.jit(spawn=False, distributed=["frame"], cache=True)
def group_sum(frame):
    """Sum ``v`` per key ``k``; the result is spread over the ranks."""
    return frame.groupby("k", as_index=False).sum()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rows, out_dir = int(args[0]), Path(args[1])

    from mpi4py import MPI

    from datajax.native.pmpi import read_counters, reset_counters

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()

    # 1. who owns which key (first call: compile or cache load)
    keys = np.arange(3 * rows * size, dtype=np.int64)[rank::size]
    probe = pd.DataFrame({"k": keys, "v": np.zeros_like(keys)})
    world.Barrier()
    started = time.perf_counter()
    owned = group_sum(probe)
    first_call = time.perf_counter() - started
    owners = world.allgather(np.sort(owned["k"].to_numpy()))
    target = owners[(rank + 1) % size]
    if len(target) < rows:
        raise RuntimeError(
            f"rank {(rank + 1) % size} owns {len(target)} of the probe "
            f"keys, fewer than the {rows} rows asked for"
        )

    # 2. every row away from home; measure only this call
    frame = pd.DataFrame(
        {"k": target[:rows], "v": np.ones(rows, dtype=np.int64)}
    )
    world.Barrier()
    reset_counters()
    started = time.perf_counter()
    result = group_sum(frame)
    warm_call = time.perf_counter() - started
    counters = read_counters()

    by_call = {
        name: {"calls": calls, "sent": sent, "received": received}
        for name, (calls, sent, received) in counters.by_call.items()
    }
    report = {
        "rank": rank,
        "size": size,
        "rows": rows,
        "row_bytes": ROW_BYTES,
        "result_rows": len(result),
        "result_sum": int(result["v"].sum()),
        "status": counters.status,
        "sent": counters.bytes_sent,
        "received": counters.bytes_received,
        "by_call": by_call,
        "first_call_seconds": round(first_call, 3),
        "warm_call_seconds": round(warm_call, 4),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    world.Barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
