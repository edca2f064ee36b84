"""The real Mooncake KV-cache trace: the facts its README lists.

Skips, naming the missing path, where ../shared/data is absent.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tests.reference import reference_cohorts, without_run_fields

TRACE_REQUESTS = 12_031
TRACE_ACCESSES = 288_500
TRACE_DISTINCT_BLOCKS = 182_790
BLOCK_TOKENS = 512


@pytest.fixture(scope="module")
def trace_frame(mooncake_trace):
    return pd.read_json(mooncake_trace, lines=True)


def test_trace_facts_hold_in_plain_pandas(trace_frame):
    lengths = trace_frame["hash_ids"].map(len)
    blocks = trace_frame["hash_ids"].explode().astype("int64")

    assert len(trace_frame) == TRACE_REQUESTS
    assert (
        lengths == trace_frame["input_length"].map(
            lambda n: math.ceil(n / BLOCK_TOKENS)
        )
    ).all()
    assert len(blocks) == TRACE_ACCESSES
    assert blocks.nunique() == TRACE_DISTINCT_BLOCKS
    assert trace_frame["hash_ids"].map(lambda ids: 0 in ids).all()


@pytest.fixture(scope="module")
def specs(mooncake_trace, tmp_path_factory):
    """The job's WaveSpec of the trace at 1, 2 and 3 ranks."""
    from tests.conftest import run_job

    folder = tmp_path_factory.mktemp("mooncake")
    results = {}
    for ranks in (1, 2, 3):
        out = folder / f"spec-{ranks}.json"
        metrics = folder / f"metrics-{ranks}.json"
        run = run_job(
            "jobs.export_wavespec",
            ["--logs", mooncake_trace, "--key", "hash_ids", "--explode",
             "--extent-source", "key", "--page-bits", "0", "--top-k",
             "all", "--chunk-len", "input_length", "--window",
             "output_length", "--batch-bytes", "262144", "--out", out,
             "--metrics-out", metrics],
            ranks,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[ranks] = (
            json.loads(out.read_text()), json.loads(metrics.read_text())
        )
    return results


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_trace_facts_hold_in_the_wavespec(specs, ranks):
    spec, _ = specs[ranks]

    assert spec["meta"]["row_count"] == TRACE_ACCESSES
    assert spec["meta"]["input_rows"] == TRACE_REQUESTS
    assert spec["extents"] == [
        {"start_page": 0, "npages": TRACE_DISTINCT_BLOCKS}
    ]
    assert sum(c["count"] for c in spec["cohorts"]) == TRACE_ACCESSES
    assert spec["meta"]["chunk_len_summary"]["count"] == TRACE_REQUESTS


def test_trace_cohorts_equal_pandas(specs, trace_frame):
    spec, _ = specs[1]
    blocks = trace_frame["hash_ids"].explode().astype("int64")

    assert spec["cohorts"] == reference_cohorts(blocks, None, 4, None)
    # block 0 is in every request, so its cohort is the hottest
    assert spec["cohorts"][0]["count"] >= TRACE_REQUESTS


def test_trace_summaries_equal_pandas(specs, trace_frame):
    meta = specs[2][0]["meta"]
    for column, summary in (
        ("input_length", meta["chunk_len_summary"]),
        ("output_length", meta["window_summary"]),
    ):
        series = trace_frame[column]
        assert summary["mean"] == pytest.approx(series.mean(), rel=1e-12)
        assert summary["std"] == pytest.approx(series.std(), rel=1e-12)
        assert summary["p99"] == pytest.approx(series.quantile(0.99))
        assert summary["min"] == series.min()


def test_trace_spec_is_the_same_at_every_rank_count(specs):
    texts = {
        ranks: json.dumps(without_run_fields(spec))
        for ranks, (spec, _) in specs.items()
    }

    assert texts[1] == texts[2] == texts[3]


def test_trace_metrics_read_every_byte(specs, mooncake_trace):
    size = mooncake_trace.stat().st_size
    for ranks, (_, metrics) in specs.items():
        assert metrics["world_size"] == ranks
        assert size <= metrics["bytes_moved"] <= size + ranks * 2 * 65536
        assert sum(r["accesses"] for r in metrics["per_rank"]) == (
            TRACE_ACCESSES
        )
