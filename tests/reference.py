"""Independent reference computations in plain pandas, for comparisons.

Written the obvious way, sharing no code with datajax.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.util import hash_pandas_object


def reference_cohorts(keys, sizes=None, prefix_len=4, top_k=64):
    """Cohorts as the spec defines them, via pandas groupby."""
    keys = pd.Series(keys).reset_index(drop=True)
    hashes = hash_pandas_object(keys, index=False)
    prefixes = hashes.map(lambda value: f"{int(value):016x}"[:prefix_len])
    frame = pd.DataFrame({
        "prefix": prefixes,
        "size": (
            pd.Series(sizes, dtype=object).reset_index(drop=True)
            if sizes is not None else 0
        ),
    })
    grouped = frame.groupby("prefix")["size"].agg(
        count="size", total=lambda s: sum(int(v) for v in s)
    ).reset_index()
    grouped = grouped.sort_values(["count", "prefix"], ascending=[False, True])
    if top_k is not None:
        grouped = grouped.head(top_k)
    return [
        {
            "prefix": row.prefix,
            "count": int(row.count),
            "bytes": None if sizes is None else int(row.total),
        }
        for row in grouped.itertuples()
    ]


def reference_extents(pages):
    """Runs of consecutive pages, by a plain Python loop."""
    runs = []
    for page in sorted(set(int(p) for p in pages)):
        if runs and page == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([page, 1])
    return [{"start_page": s, "npages": n} for s, n in runs]


def reference_hash_pages(keys, page_bits):
    hashes = hash_pandas_object(pd.Series(keys), index=False)
    return (hashes.to_numpy(np.uint64) >> np.uint64(page_bits)).tolist()


def without_run_fields(spec):
    """A WaveSpec minus the fields documented to depend on the run."""
    copy = {**spec, "meta": dict(spec["meta"])}
    copy["meta"].pop("world_size", None)
    return copy
