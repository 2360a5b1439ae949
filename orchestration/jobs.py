"""Jobs and schedules: retraining (`ampere_pipeline`, weekly or asked for) and the catalogue refresh
(`catalogue_refresh`, on each new data version)."""

from dagster import AssetSelection, RunRequest, ScheduleEvaluationContext, define_asset_job, schedule

from ampere.settings import Settings
from orchestration.assets import PIPELINE_ASSETS, REFRESH_ASSETS
from orchestration.instance import ensure_pools
from orchestration.run_state import mlflow_runs_fail_with_their_step
from orchestration.summary_shards import ALL_SHARDS_TAGS

PIPELINE_JOB = "ampere_pipeline"
REFRESH_JOB = "catalogue_refresh"
# The concurrency pools the pipeline's steps claim (dagster.yaml limits them).
PIPELINE_POOLS = sorted({asset.op.pool for asset in PIPELINE_ASSETS if asset.op.pool})
REFRESH_POOLS = sorted({asset.op.pool for asset in REFRESH_ASSETS if asset.op.pool})
# Every pipeline run names its dataset: the run queue allows one run per dataset at a time (dagster.yaml).
DATASET_TAG = "ampere/dataset"
# A run started by `ampere pipeline` records its job settings (dataset, folders, MLflow, summarizer) as JSON,
# so `ampere pipeline --reexecute` rebuilds the same definitions.
SETTINGS_TAG = "ampere/settings"
# Why a run started, shown in the UI's run list: a new data version refreshes, retraining is scheduled or asked for.
TRIGGER_TAG = "ampere/trigger"


def home_dataset_tags() -> dict[str, str]:
    """The dataset tag of a run over the home's dataset (a sensor's or a schedule's run)."""
    return {DATASET_TAG: str(Settings.resolve().dataset)}

pipeline_job = define_asset_job(
    PIPELINE_JOB,
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    description="Raw data to evaluated, registered encoder and FAISS index (a full run covers every summary shard).",
    hooks={mlflow_runs_fail_with_their_step},
)

refresh_job = define_asset_job(
    REFRESH_JOB,
    selection=AssetSelection.assets(*REFRESH_ASSETS),
    description=(
        "New data version to served index without training: the champion embeds only new and changed items "
        "and CURRENT moves to the refreshed index (the DVC sensor starts it)."
    ),
)


@schedule(job=pipeline_job, cron_schedule="0 3 * * 1", execution_timezone="UTC", name="weekly_retrain")
def weekly_retrain(context: ScheduleEvaluationContext) -> RunRequest:
    """Weekly full retraining run over every summary shard (cached summaries cost nothing)."""
    ensure_pools(context.instance, PIPELINE_POOLS)
    return RunRequest(tags={**home_dataset_tags(), **ALL_SHARDS_TAGS, TRIGGER_TAG: "schedule: weekly retrain"})
