"""Sharded summaries: stable shard assignment, per-shard files, partial re-runs, stale-shard detection.

Runs the real asr_summaries asset (with ``run_llm=False``, no LLM) through Dagster partitions;
the LLM-call counts of a partial re-run are covered in test_pipeline_e2e.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

from ampere.asr.prompts import DEFAULT_PROMPT_ID
from ampere.asr.shards import SHARD_COUNT, shard_keys, shard_of
from ampere.data.synth import generate
from orchestration.assets.summaries import current_summaries
from orchestration.definitions import build_defs, dataset_key
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB
from orchestration.summary_shards import ALL_SHARDS_TAGS

SKIP_LLM = {"ops": {"asr_summaries": {"config": {"run_llm": False}}}}
SELECTION = [AssetKey("raw_items"), AssetKey("asr_summaries")]


def test_shards_are_stable_and_cover_all_keys() -> None:
    ids = [f"p{i:05d}-live-0" for i in range(2000)]
    assert [shard_of(i) for i in ids] == [shard_of(i) for i in ids]
    assert {shard_of(i) for i in ids} == set(shard_keys()) and len(shard_keys()) == SHARD_COUNT
    assert shard_of("p00001-live-0", count=4) in {"00", "01", "02", "03"}


@pytest.fixture()
def sharded(tmp_path: Path):
    generate(tmp_path / "data", products=8, seed=5, clip_frames=4)
    defs = build_defs(
        workspace=str(tmp_path / "ws"),
        dataset=str(tmp_path / "data"),
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=str(tmp_path / "artifacts"),
    )
    files = tmp_path / "ws" / "summaries" / dataset_key(str(tmp_path / "data")) / "asr_summaries"  # per dataset
    return {"data": tmp_path / "data", "files": files, "defs": defs}


def _run(sharded, instance: DagsterInstance, **kwargs):
    job = sharded["defs"].resolve_job_def(PIPELINE_JOB)
    result = execute_in_process(job, run_config=SKIP_LLM, instance=instance, asset_selection=SELECTION, **kwargs)
    assert result.success
    return result


def _items(data: Path) -> pd.DataFrame:
    return pd.read_json(data / "items.jsonl", lines=True)


def test_one_shard_run_writes_only_its_shard(sharded) -> None:
    instance = DagsterInstance.ephemeral()
    items = _items(sharded["data"])
    clips = items[items["domain"] != "page"]
    shard = shard_of(clips["item_id"].iloc[0])
    _run(sharded, instance, partition_key=shard)
    assert [p.name for p in sharded["files"].iterdir()] == [f"shard-{shard}.parquet"]
    written = pd.read_parquet(sharded["files"] / f"shard-{shard}.parquet")
    expected = sorted(i for i in clips["item_id"] if shard_of(i) == shard)
    assert sorted(written["item_id"]) == expected and set(written["shard"]) == {shard}
    event = instance.get_latest_materialization_event(AssetKey("asr_summaries"))
    assert event.asset_materialization.partition == shard
    with pytest.raises(ValueError, match="without a summary") as error:
        current_summaries(_raw(items), written)
    others = sorted({shard_of(i) for i in clips["item_id"]} - {shard})
    assert f"shards {', '.join(others)}" in str(error.value)


def _raw(items: pd.DataFrame) -> pd.DataFrame:
    return items[["item_id", "domain", "asr"]]


def test_full_run_materialises_every_shard_and_a_partial_rerun_rewrites_one(sharded) -> None:
    instance = DagsterInstance.ephemeral()
    _run(sharded, instance, tags=ALL_SHARDS_TAGS)
    assert sorted(p.name for p in sharded["files"].iterdir()) == [f"shard-{k}.parquet" for k in shard_keys()]
    for key in shard_keys():  # each shard's materialisation describes that shard
        records = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, AssetKey("asr_summaries"), asset_partitions=[key]),
            limit=1,
        )
        metadata = records[0].asset_materialization.metadata
        rows = len(pd.read_parquet(sharded["files"] / f"shard-{key}.parquet"))
        assert metadata["shard"].value == key and metadata["transcripts"].value == metadata["skipped"].value == rows
    partitions = instance.get_materialized_partitions(AssetKey("asr_summaries"))
    assert partitions == set(shard_keys())

    items_path = sharded["data"] / "items.jsonl"
    rows = [json.loads(line) for line in items_path.read_text().splitlines()]
    clips = [row for row in rows if row["domain"] != "page"]
    first = clips[0]
    second = next(row for row in clips if shard_of(row["item_id"]) != shard_of(first["item_id"]))
    for row in (first, second):
        row["asr"] = "brand new transcript " + row["asr"]
    items_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    untouched = sharded["files"] / f"shard-{shard_of(second['item_id'])}.parquet"
    before = untouched.read_bytes()

    _run(sharded, instance, partition_key=shard_of(first["item_id"]))
    assert untouched.read_bytes() == before
    summaries = pd.concat([pd.read_parquet(p) for p in sorted(sharded["files"].iterdir())], ignore_index=True)
    with pytest.raises(ValueError, match="transcript changed") as error:
        current_summaries(_raw(_items(sharded["data"])), summaries)
    assert f"(shards {shard_of(second['item_id'])})" in str(error.value)

    _run(sharded, instance, partition_key=shard_of(second["item_id"]))
    current, lineage = current_summaries(
        _raw(_items(sharded["data"])),
        pd.concat([pd.read_parquet(p) for p in sorted(sharded["files"].iterdir())], ignore_index=True),
    )
    assert len(current) == len(clips) and lineage["prompt_id"] == DEFAULT_PROMPT_ID


def test_mixed_prompts_across_shards_are_refused(sharded) -> None:
    instance = DagsterInstance.ephemeral()
    _run(sharded, instance, tags=ALL_SHARDS_TAGS)
    files = sorted(sharded["files"].iterdir())
    summaries = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    summaries.loc[summaries["shard"] == summaries["shard"].iloc[0], "prompt_id"] = "summary-v2"
    with pytest.raises(ValueError, match="mixes prompts"):
        current_summaries(_raw(_items(sharded["data"])), summaries)


def test_summaries_check_validates_the_runs_shards_only(sharded) -> None:
    """The blocking GX check is partitioned: a bad shard fails its own runs, not other shards' runs."""
    instance = DagsterInstance.ephemeral()
    _run(sharded, instance, tags=ALL_SHARDS_TAGS)
    files = {path.stem.removeprefix("shard-"): path for path in sharded["files"].iterdir()}
    filled = [k for k, path in sorted(files.items()) if len(pd.read_parquet(path))]
    good, bad = filled[0], filled[1]
    broken = pd.read_parquet(files[bad])
    broken["status"], broken["summary"] = "ok", "not a rendered summary"
    broken.to_parquet(files[bad], index=False)

    result = _run(sharded, instance, partition_key=good)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.asset_key == AssetKey("asr_summaries")]
    assert check.passed and check.partition == check.metadata["shard"].value == good

    job = sharded["defs"].resolve_job_def(PIPELINE_JOB)
    only_check = execute_in_process(
        job.get_subset(asset_selection=set(), asset_check_selection={check.asset_check_key}),
        instance=instance, partition_key=bad, raise_on_error=False
    )
    (failed,) = only_check.get_asset_check_evaluations()
    assert not failed.passed and failed.partition == failed.metadata["shard"].value == bad

    every = execute_in_process(
        job.get_subset(asset_selection=set(), asset_check_selection={check.asset_check_key}),
        instance=instance, tags=ALL_SHARDS_TAGS, raise_on_error=False
    )
    per_shard = {c.partition: c.passed for c in every.get_asset_check_evaluations() if c.partition is not None}
    assert per_shard == {key: key != bad for key in shard_keys()}  # each shard's own result, in its partition
    (overall,) = [c for c in every.get_asset_check_evaluations() if c.partition is None]
    assert not overall.passed and overall.metadata["failed_shards"].value == bad
