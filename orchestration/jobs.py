"""Jobs and schedules."""

from dagster import AssetSelection, RunRequest, ScheduleEvaluationContext, define_asset_job, schedule

from orchestration.assets import PIPELINE_ASSETS
from orchestration.run_state import mlflow_runs_fail_with_their_step
from orchestration.summary_shards import ALL_SHARDS_TAGS

PIPELINE_JOB = "ampere_pipeline"

pipeline_job = define_asset_job(
    PIPELINE_JOB,
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    description="Raw data to evaluated, registered encoder and FAISS index (a full run covers every summary shard).",
    hooks={mlflow_runs_fail_with_their_step},
)


@schedule(job=pipeline_job, cron_schedule="0 3 * * 1", execution_timezone="UTC", name="weekly_retrain")
def weekly_retrain(context: ScheduleEvaluationContext) -> RunRequest:
    """Weekly full retraining run over every summary shard (cached summaries cost nothing)."""
    return RunRequest(tags=ALL_SHARDS_TAGS)
