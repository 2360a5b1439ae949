"""Jobs and schedules."""

from dagster import AssetSelection, ScheduleDefinition, define_asset_job

from orchestration.assets import PIPELINE_ASSETS

PIPELINE_JOB = "ampere_pipeline"

pipeline_job = define_asset_job(
    PIPELINE_JOB,
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    description="Raw data to evaluated, registered encoder and FAISS index.",
)

weekly_retrain = ScheduleDefinition(name="weekly_retrain", job=pipeline_job, cron_schedule="0 3 * * 1", execution_timezone="UTC")
