"""Sensors: refresh the served index when the DVC data version of the raw dataset changes; record failed runs."""

import json
from pathlib import Path

import yaml
from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from ampere.settings import Settings
from orchestration.instance import ensure_pools
from orchestration.jobs import REFRESH_POOLS, TRIGGER_TAG, pipeline_job, refresh_job
from orchestration.mlflow_logging import alias_version
from orchestration.resources import MlflowResource, WorkspaceResource

DVC_FILE = "data.dvc"


def dvc_md5(dvc_file: Path) -> str | None:
    """The md5 recorded in a .dvc file, or None when the file is missing."""
    if not dvc_file.exists():
        return None
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


@sensor(
    job=refresh_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Refreshes the home catalogue's served index (catalogue_refresh: the champion embeds only new and changed "
        "items, no training) when data.dvc records an md5 that catalogue_index has not been built from."
    ),
)
def dvc_data_sensor(context: SensorEvaluationContext, mlflow: MlflowResource):
    """Fires once per new DVC data version (cursor = last md5 seen) of the home's data.dvc, once a champion exists."""
    dvc_file = Settings.resolve().home / DVC_FILE
    md5 = dvc_md5(dvc_file)
    if md5 is None:
        return SkipReason(f"{dvc_file} not found")
    if md5 == context.cursor:
        return SkipReason(f"data version {md5} already seen")
    latest = context.instance.get_latest_materialization_event(AssetKey("catalogue_index"))
    seen = latest.asset_materialization.metadata.get("data_version") if latest is not None else None
    if seen is not None and seen.value == f"dvc:{md5}":
        context.update_cursor(md5)
        return SkipReason(f"catalogue_index is already built from data version {md5}")
    if alias_version(mlflow, "champion") is None:
        return SkipReason(f"no champion of {mlflow.registered_model} to refresh with yet: run the pipeline first")
    context.update_cursor(md5)
    ensure_pools(context.instance, REFRESH_POOLS)
    return RunRequest(run_key=f"data-{md5}", tags={"ampere/data_version": md5, TRIGGER_TAG: f"new data version {md5}"})


@run_failure_sensor(
    monitored_jobs=[pipeline_job, refresh_job],
    description="Records every failed pipeline or refresh run (run id, failed steps, error) in the workspace's failures.jsonl.",
)
def pipeline_failure_sensor(context: RunFailureSensorContext, workspace: WorkspaceResource) -> None:
    """Appends one JSON line per failed run, so failures are auditable outside the Dagster UI too."""
    failed_steps = [event.step_key for event in context.get_step_failure_events()]
    record = {
        "run_id": context.dagster_run.run_id,
        "job": context.dagster_run.job_name,
        "failed_steps": failed_steps,
        "error": context.failure_event.message,
        "tags": dict(context.dagster_run.tags),
    }
    if workspace.location().is_local:
        with workspace.path("failures.jsonl").open("a") as log:
            log.write(json.dumps(record) + "\n")
    else:  # an object has no append: one sensor (the daemon's) rewrites it whole
        log = workspace.location("failures.jsonl")
        log.write_bytes((log.read_bytes() if log.exists() else b"") + (json.dumps(record) + "\n").encode())
    context.log.warning(f"run {record['run_id']} failed in {failed_steps}")
