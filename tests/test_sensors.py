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

from orchestration.in_process import execute_in_process, signals_kept
from orchestration.jobs import REFRESH_JOB, TRIGGER_TAG
from orchestration.resources import MlflowResource, WorkspaceResource
from orchestration.sensors import dvc_data_sensor, pipeline_failure_sensor


def _write_dvc(folder: Path, md5: str) -> None:
    (folder / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  path: data\n")


def _mlflow(tmp_path: Path, champion: bool) -> MlflowResource:
    """A real sqlite MLflow store; with ``champion``, a registered version of the home catalogue's model under that alias."""
    resource = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", registered_model="ampere-encoder")
    if champion:
        client = resource.client()
        client.create_registered_model(resource.registered_model)
        version = client.create_model_version(resource.registered_model, source=(tmp_path / "model").as_uri())
        client.set_registered_model_alias(resource.registered_model, "champion", version.version)
    return resource


def _evaluate(instance: DagsterInstance, mlflow: MlflowResource, cursor: str | None = None):
    """One evaluation of the DVC sensor with its resources (which would leave Dagster's signal handler behind)."""
    with signals_kept():
        return dvc_data_sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"mlflow": mlflow}))


def test_dvc_sensor_refreshes_the_catalogue_once_per_new_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new data version starts catalogue_refresh (no training), tagged with its trigger; the same one again does not."""
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    instance, mlflow = DagsterInstance.ephemeral(), _mlflow(tmp_path, champion=True)
    _write_dvc(tmp_path, "aaa.dir")
    first = _evaluate(instance, mlflow)
    assert isinstance(first, RunRequest) and first.run_key == "data-aaa.dir"
    assert first.tags[TRIGGER_TAG] == "new data version aaa.dir" and first.partition_key_range is None
    assert dvc_data_sensor.job_name == REFRESH_JOB
    again = _evaluate(instance, mlflow, cursor="aaa.dir")
    assert isinstance(again, SkipReason)
    _write_dvc(tmp_path, "bbb.dir")
    second = _evaluate(instance, mlflow, cursor="aaa.dir")
    assert isinstance(second, RunRequest) and second.tags["ampere/data_version"] == "bbb.dir"


def test_dvc_sensor_waits_for_a_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a champion there is nothing to refresh with: skipped, and the version is not marked seen."""
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    instance = DagsterInstance.ephemeral()
    _write_dvc(tmp_path, "aaa.dir")
    skipped = _evaluate(instance, _mlflow(tmp_path, champion=False))
    assert isinstance(skipped, SkipReason) and "no champion" in str(skipped.skip_message)


def test_dvc_sensor_skips_a_version_already_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    instance, mlflow = DagsterInstance.ephemeral(), _mlflow(tmp_path, champion=True)
    instance.report_runless_asset_event(AssetMaterialization("catalogue_index", metadata={"data_version": "dvc:ccc.dir"}))
    _write_dvc(tmp_path, "ccc.dir")
    assert isinstance(_evaluate(instance, mlflow), SkipReason)
    _write_dvc(tmp_path, "ddd.dir")
    assert isinstance(_evaluate(instance, mlflow), RunRequest)


def test_dvc_sensor_skips_without_dvc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPERE_HOME", str(tmp_path))
    result = _evaluate(DagsterInstance.ephemeral(), _mlflow(tmp_path, champion=True))
    assert isinstance(result, SkipReason)


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
