"""`scan` (layout, dtypes, deduplication): one lazy frame over every result row, one attempt per config."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from store import scan as scans
from store.schema import records_to_table


def _ok(synth, n=3, **fields):
    rng = np.random.default_rng(0)
    return [synth.planted(synth.Costs(), crops=fields.pop("crops", 2), tokens=120, rng=rng, repeat=i, **fields)
            for i in range(n)]


def test_scan_root_run_dir_and_list_with_schema_dtypes(tmp_path, synth):
    synth.write_part(tmp_path, _ok(synth, run_id="run-a", config_id="x"))
    synth.write_part(tmp_path, _ok(synth, run_id="run-b", config_id="x"))
    # A half-written part (temporary name) must never be read.
    (tmp_path / "run-a" / ".tmp-part-y-1.parquet").write_bytes(b"not parquet")

    every = scans.scan(tmp_path).collect()
    assert every.schema == scans.POLARS_SCHEMA
    assert every.height == 6
    assert sorted(every["run_id"].unique()) == ["run-a", "run-b"]

    one = scans.scan(tmp_path / "run-b").collect()
    assert one.height == 3 and set(one["run_id"]) == {"run-b"}

    both = scans.scan([tmp_path / "run-a", tmp_path / "run-b"]).collect()
    assert both.height == 6


def test_scan_keeps_latest_ok_attempt_else_latest_failed(tmp_path, synth):
    # retried after a failure: attempt 2 is the one to keep
    synth.write_part(tmp_path, [synth.failed(config_id="retried", attempt=1)])
    synth.write_part(tmp_path, _ok(synth, config_id="retried", attempt=2, n=2))
    # ok, then a later attempt failed: the ok attempt stays
    synth.write_part(tmp_path, _ok(synth, config_id="regressed", attempt=1, n=4))
    synth.write_part(tmp_path, [synth.failed(config_id="regressed", attempt=2)])
    # never ok: the latest failure, with its error
    synth.write_part(tmp_path, [synth.failed(config_id="broken", attempt=1, error="first")])
    synth.write_part(tmp_path, [synth.failed(config_id="broken", attempt=3, error="latest")])
    # two ok attempts: the later one
    synth.write_part(tmp_path, _ok(synth, config_id="twice", attempt=1, n=2))
    synth.write_part(tmp_path, _ok(synth, config_id="twice", attempt=2, n=5))

    df = scans.scan(tmp_path).collect()
    kept = {cid: sorted(set(g["attempt"])) for (cid,), g in df.group_by("config_id")}
    assert kept == {"retried": [2], "regressed": [1], "broken": [3], "twice": [2]}
    counts = dict(df.group_by("config_id").len().iter_rows())
    assert counts == {"retried": 2, "regressed": 4, "broken": 1, "twice": 5}
    assert df.filter(pl.col("config_id") == "broken")["error"].to_list() == ["latest"]


def test_scan_empty_and_missing_paths(tmp_path, synth):
    (tmp_path / "run-empty").mkdir()
    lf = scans.scan(tmp_path / "run-empty")
    assert lf.collect_schema() == scans.POLARS_SCHEMA
    assert lf.collect().height == 0
    with pytest.raises(ValueError, match="nope"):
        scans.scan(tmp_path / "nope")


def test_scan_reads_parts_that_lack_a_newer_column(tmp_path, synth):
    synth.write_part(tmp_path, _ok(synth, config_id="new"))
    old = records_to_table(_ok(synth, config_id="old")).drop(["extra", "t_tpot_ms"])
    pq.write_table(old, tmp_path / "run-a" / "part-old-1.parquet")
    df = scans.scan(tmp_path).collect()
    assert df.schema == scans.POLARS_SCHEMA
    assert df.filter(pl.col("config_id") == "old")["t_tpot_ms"].null_count() == 3
    assert df.height == 6


def test_energy_and_gpu_identity_are_nullable_columns_and_old_parts_read_them_as_null(tmp_path, synth):
    import pyarrow as pa

    from store.schema import SCHEMA

    for name, kind in (("energy_j_per_forward", pa.float64()), ("power_mean_w", pa.float64()),
                       ("energy_forwards", pa.int64()), ("gpu_uuid", pa.string()), ("mig_enabled", pa.bool_()),
                       ("hooked_first", pa.bool_()), ("torch_threads", pa.int64()), ("load_avg_1m", pa.float64())):
        assert SCHEMA.field(name).type == kind and SCHEMA.field(name).nullable, name
    # A part written before these columns existed reads them as null, never as zero.
    path = synth.write_part(tmp_path, _ok(synth, run_id="old", config_id="x"))
    table = pq.read_table(path)
    table = table.drop_columns(["energy_j_per_forward", "gpu_uuid", "mig_enabled"])
    pq.write_table(table, path)
    frame = scans.scan(tmp_path).collect()
    assert frame.height == 3
    assert frame["energy_j_per_forward"].null_count() == 3 and frame["gpu_uuid"].null_count() == 3
