"""The DVC data sensor and the run-failure sensor, evaluated with Dagster's test contexts."""

import json
import shutil
from datetime import UTC
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    PartitionKeyRange,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    op,
)

from ampere.asr.shards import shard_keys
from orchestration.in_process import execute_in_process, signals_kept
from orchestration.resources import WorkspaceResource
from orchestration.sensors import dvc_data_sensor, pipeline_failure_sensor


def _write_dvc(folder: Path, md5: str) -> None:
    (folder / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  path: data\n")


def test_dvc_sensor_fires_once_per_new_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    instance = DagsterInstance.ephemeral()
    _write_dvc(tmp_path, "aaa.dir")
    first = dvc_data_sensor(build_sensor_context(instance=instance))
    assert isinstance(first, RunRequest) and first.run_key == "data-aaa.dir"
    again = dvc_data_sensor(build_sensor_context(instance=instance, cursor="aaa.dir"))
    assert isinstance(again, SkipReason)
    _write_dvc(tmp_path, "bbb.dir")
    second = dvc_data_sensor(build_sensor_context(instance=instance, cursor="aaa.dir"))
    assert isinstance(second, RunRequest) and second.tags["ampere/data_version"] == "bbb.dir"
    assert second.partition_key_range == PartitionKeyRange(shard_keys()[0], shard_keys()[-1])  # every summary shard


def test_dvc_sensor_skips_a_version_already_materialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    instance = DagsterInstance.ephemeral()
    instance.report_runless_asset_event(AssetMaterialization("raw_items", metadata={"dvc_md5": "ccc.dir"}))
    _write_dvc(tmp_path, "ccc.dir")
    assert isinstance(dvc_data_sensor(build_sensor_context(instance=instance)), SkipReason)
    assert isinstance(dvc_data_sensor(build_sensor_context(instance=instance)), SkipReason)


def test_dvc_sensor_skips_without_dvc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    assert isinstance(dvc_data_sensor(build_sensor_context(instance=DagsterInstance.ephemeral())), SkipReason)


@op
def _explode() -> None:
    raise RuntimeError("boom in a step")


@job
def _failing_job() -> None:
    _explode()


def test_failure_sensor_records_the_failed_run(tmp_path: Path) -> None:
    instance = DagsterInstance.ephemeral()
    result = execute_in_process(_failing_job, instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    # Evaluating a sensor initialises its resources in a generator that swaps the interrupt handlers
    # (as a run does) and puts them back only when the context is closed.
    with signals_kept(), build_run_status_sensor_context(
        sensor_name="pipeline_failure_sensor",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"workspace": WorkspaceResource(root=str(tmp_path))},
    ) as context:
        pipeline_failure_sensor(context.for_run_failure())
    records = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert records[0]["run_id"] == result.run_id
    assert records[0]["failed_steps"] == ["_explode"]


def test_weekly_retrain_schedule_requests_the_pipeline(tmp_path) -> None:
    from datetime import datetime

    from dagster import DagsterInstance, build_schedule_context
    from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext

    from orchestration.instance import BASE
    from orchestration.jobs import PIPELINE_JOB, PIPELINE_POOLS, weekly_retrain

    scheduled = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    shutil.copy(BASE, tmp_path / "dagster.yaml")  # the project's instance config: pools limited to 1
    loading = DefinitionsLoadContext.get()  # evaluating a tick leaves Dagster's load context bound to this instance
    try:
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            with signals_kept(), build_schedule_context(instance=instance, scheduled_execution_time=scheduled) as context:
                requests = list(weekly_retrain.evaluate_tick(context).run_requests)
            assert set(PIPELINE_POOLS) <= set(instance.event_log_storage.get_concurrency_keys())  # created before the run
    finally:
        DefinitionsLoadContext.set(loading)  # later Definitions in this process must not use the closed instance
    assert PIPELINE_POOLS == ["accelerator", "dvc", "llm", "registry"]
    assert len(requests) == 1
    assert requests[0].partition_key_range == PartitionKeyRange("00", "15")
    assert weekly_retrain.job_name == PIPELINE_JOB
    assert weekly_retrain.cron_schedule == "0 3 * * 1"
