"""datajax-export-wavespec end to end, under mpiexec at 1, 2 and 3 ranks.

Every result is compared with plain pandas on the same data and across
rank counts.  The job runs as a real subprocess under the MPICH that Bodo
bundles; each run has a timeout.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reference import (
    reference_cohorts,
    reference_extents,
    reference_hash_pages,
    without_run_fields,
)

RANKS = [1, 2, 3]


@pytest.fixture(scope="module")
def access_log():
    """A skewed access log: text keys, sizes, a chunk and a window column."""
    rng = np.random.default_rng(11)
    rows = 4000
    keys = [f"obj-{int(k)}" for k in rng.zipf(1.3, rows) % 700]
    return pd.DataFrame({
        "key": keys,
        "bytes": rng.integers(0, 1 << 40, rows),
        "chunk": rng.integers(1, 64, rows),
        "window": rng.normal(100.0, 15.0, rows).round(3),
    })


def write_inputs(frame: pd.DataFrame, folder, fmt: str) -> list[str]:
    """Write ``frame`` as three files of one format; return --logs args."""
    folder.mkdir(exist_ok=True)
    parts = np.array_split(np.arange(len(frame)), 3)
    for index, rows in enumerate(parts):
        part = frame.iloc[rows]
        path = folder / f"part-{index}"
        if fmt == "csv":
            part.to_csv(f"{path}.csv", index=False)
        elif fmt == "json":
            part.to_json(f"{path}.jsonl", orient="records", lines=True)
        else:
            pq.write_table(
                pa.Table.from_pandas(part, preserve_index=False),
                f"{path}.parquet",
                row_group_size=300,
            )
    return ["--logs", str(folder)]


def check_ok(run):
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_spec_equals_pandas_for_every_format(
    tmp_path, access_log, export_job, fmt, ranks
):
    logs = write_inputs(access_log, tmp_path / "logs", fmt)
    out = tmp_path / "spec.json"

    run = export_job(
        [*logs, "--key", "key", "--size", "bytes", "--chunk-len", "chunk",
         "--window", "window", "--page-bits", "50", "--top-k", "all",
         "--batch-bytes", "20000", "--batch-rows", "256", "--out", out],
        ranks,
    )

    check_ok(run)
    spec = json.loads(out.read_text())
    assert spec["cohorts"] == reference_cohorts(
        access_log["key"], access_log["bytes"], 4, None
    )
    assert spec["extents"] == reference_extents(
        reference_hash_pages(access_log["key"], 50)
    )
    meta = spec["meta"]
    assert meta["row_count"] == len(access_log)
    assert meta["approx_bytes"] == int(access_log["bytes"].sum())
    assert meta["world_size"] == ranks
    assert meta["key_type"] == "text"
    summary = meta["chunk_len_summary"]
    assert summary["mean"] == pytest.approx(access_log["chunk"].mean())
    assert summary["p90"] == pytest.approx(access_log["chunk"].quantile(0.9))
    assert meta["window_summary"]["std"] == pytest.approx(
        access_log["window"].std()
    )
    assert spec["pack_order"] == ["key"]
    assert spec["prefix_histogram"]["4"] == meta["distinct_prefixes"]


def test_spec_bytes_do_not_depend_on_rank_count(
    tmp_path, access_log, export_job
):
    logs = write_inputs(access_log, tmp_path / "logs", "csv")
    texts = []
    for ranks in RANKS:
        out = tmp_path / f"spec-{ranks}.json"
        run = export_job(
            [*logs, "--key", "key", "--size", "bytes", "--window", "window",
             "--batch-bytes", "7000", "--out", out],
            ranks,
        )
        check_ok(run)
        spec = json.loads(out.read_text())
        texts.append(json.dumps(without_run_fields(spec), indent=2))

    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("ranks", RANKS)
def test_metrics_count_input_and_mpi_bytes(tmp_path, access_log, export_job,
                                           ranks):
    logs = write_inputs(access_log, tmp_path / "logs", "json")
    input_size = sum(p.stat().st_size for p in (tmp_path / "logs").iterdir())
    metrics_path = tmp_path / "metrics.json"

    run = export_job(
        [*logs, "--key", "key", "--out", tmp_path / "spec.json",
         "--metrics-out", metrics_path],
        ranks,
    )

    check_ok(run)
    metrics = json.loads(metrics_path.read_text())
    per_rank = metrics["per_rank"]
    assert [entry["rank"] for entry in per_rank] == list(range(ranks))
    # every byte is read once, plus at most a small read-ahead past the
    # end of each rank's share to finish its last record
    assert input_size <= metrics["bytes_moved"] <= input_size + (
        (ranks - 1) * 2 * 65536
    )
    if ranks == 1:
        assert metrics["bytes_moved"] == input_size
    assert sum(e["rows"] for e in per_rank) == len(access_log)
    sent = sum(e["mpi_bytes_sent"] for e in per_rank)
    received = sum(e["mpi_bytes_received"] for e in per_rank)
    assert sent == received == metrics["shuffle_bytes"]
    if ranks == 1:
        assert sent == 0
    else:
        # at least every non-root rank's cohort codes reached rank 0
        assert all(e["mpi_bytes_sent"] > 0 for e in per_rank[1:])
    assert f"mpi_bytes={sent}" in metrics["notes"]


def test_usage_json_sets_the_pack_order(tmp_path, access_log, export_job):
    logs = write_inputs(access_log.head(50), tmp_path / "logs", "csv")
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps({"key": 5, "bytes": 9, "chunk": 5}))
    out = tmp_path / "spec.json"

    run = export_job(
        [*logs, "--key", "key", "--usage-json", usage, "--out", out], 2
    )

    check_ok(run)
    assert json.loads(out.read_text())["pack_order"] == [
        "bytes", "chunk", "key"
    ]


def test_glob_and_repeated_logs_flags(tmp_path, access_log, export_job):
    write_inputs(access_log, tmp_path / "logs", "csv")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", tmp_path / "logs" / "part-0.csv",
         "--logs", str(tmp_path / "logs" / "part-[12].csv"),
         "--key", "key", "--top-k", "5", "--out", out],
        2,
    )

    check_ok(run)
    spec = json.loads(out.read_text())
    assert spec["meta"]["row_count"] == len(access_log)
    assert spec["cohorts"] == reference_cohorts(access_log["key"], None, 4, 5)
    assert len(spec["meta"]["inputs"]) == 3


@pytest.mark.parametrize("ranks", [1, 3])
def test_integer_keys_in_parquet_hash_as_integers(tmp_path, export_job,
                                                  ranks):
    keys = pd.Series(
        np.array([0, 1, 2**63, 2**64 - 1, 77, 77] * 40, dtype=np.uint64)
    )
    pq.write_table(pa.table({"k": keys}), tmp_path / "a.parquet",
                   row_group_size=50)
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", tmp_path / "a.parquet", "--key", "k", "--prefix-len",
         "16", "--top-k", "none", "--out", out],
        ranks,
    )

    check_ok(run)
    spec = json.loads(out.read_text())
    assert spec["cohorts"] == reference_cohorts(keys, None, 16, None)
    assert spec["meta"]["key_type"] == "int"


def test_more_ranks_than_rows(tmp_path, export_job):
    (tmp_path / "one.csv").write_text("key\nonly\n")
    out = tmp_path / "spec.json"

    run = export_job(
        ["--logs", tmp_path / "one.csv", "--key", "key", "--out", out], 3
    )

    check_ok(run)
    spec = json.loads(out.read_text())
    assert spec["meta"]["row_count"] == 1
    assert spec["cohorts"] == reference_cohorts(["only"], None, 4, 64)


def test_python_dash_m_and_console_script_agree(tmp_path, access_log):
    import subprocess
    import sys
    from pathlib import Path

    logs = write_inputs(access_log.head(100), tmp_path / "logs", "csv")
    outputs = []
    for command in (
        [sys.executable, "-m", "jobs.export_wavespec"],
        [str(Path(sys.executable).parent / "datajax-export-wavespec")],
    ):
        out = tmp_path / f"spec-{len(outputs)}.json"
        subprocess.run(
            [*command, *logs, "--key", "key", "--out", str(out)],
            check=True, timeout=120, capture_output=True,
        )
        outputs.append(out.read_text())

    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["meta"]["row_count"] == 100


def test_job_metrics_merge_into_every_plan(tmp_path, access_log, export_job,
                                           monkeypatch):
    from datajax import djit
    from datajax.planner.metrics import metrics_to_dict

    logs = write_inputs(access_log, tmp_path / "logs", "parquet")
    metrics_path = tmp_path / "metrics.json"
    run = export_job(
        [*logs, "--key", "key", "--size", "bytes", "--out",
         tmp_path / "spec.json", "--metrics-out", metrics_path],
        2,
    )
    check_ok(run)
    counters = json.loads(metrics_path.read_text())
    monkeypatch.setenv("DATAJAX_RUNTIME_METRICS", str(metrics_path))

    @djit
    def heavy_keys(log):
        big = log[log["bytes"] > 1 << 39]
        return big.groupby("key").agg(total=("bytes", "sum"))

    result = heavy_keys(access_log)

    merged = metrics_to_dict(heavy_keys.last_plan.metrics)
    assert merged["runtime_bytes_moved"] == counters["bytes_moved"]
    assert merged["runtime_shuffle_bytes"] == counters["shuffle_bytes"]
    assert counters["shuffle_bytes"] > 0
    expected = (
        access_log[access_log["bytes"] > 1 << 39]
        .groupby("key")["bytes"].sum()
    )
    assert result.set_index("key")["total"].sort_index().tolist() == (
        expected.sort_index().tolist()
    )
