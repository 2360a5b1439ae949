"""The Dagster code location: `dagster dev` loads `defs` from here (see pyproject [tool.dagster])."""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, ExecutorDefinition, JobDefinition

from ampere.asr.cache import is_database_url
from ampere.catalogue.naming import Catalogue
from ampere.lineage.hashing import content_hash
from ampere.settings import Settings
from ampere.storage import is_remote
from orchestration.ablation import ablation_job, ablation_study
from orchestration.assets import PIPELINE_ASSETS, catalogue_index
from orchestration.checks import PIPELINE_CHECKS
from orchestration.jobs import PIPELINE_JOB, pipeline_job, refresh_job, weekly_retrain
from orchestration.resources import (
    DatasetResource,
    DvcResource,
    IndexStoreResource,
    MlflowResource,
    SummarizerResource,
    WorkspaceResource,
)
from orchestration.run_io import RunScopedIOManager
from orchestration.sensors import dvc_data_sensor, pipeline_failure_sensor
from orchestration.summary_shards import ShardedParquetIOManager


def build_defs(
    workspace: str | None = None,
    dataset: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    summarizer_backend: str | None = None,
    summarizer_model: str | None = None,
    summarizer_prompt: str | None = None,
    summarizer_workers: int | None = None,
    repo_dir: str | None = None,
    executor: str | None = None,
    catalogue: str | None = None,
    summary_cache: str | None = None,
) -> Definitions:
    """All assets, checks, jobs, schedules and sensors, with resources pointed at the given places.
    Each argument that names a setting is that setting's flag (`ampere.settings.Settings`: unset, it
    comes from the environment, else the home's default), whatever the current directory. The
    ``executor`` "k8s" runs each step of a run in its own Kubernetes pod (`k8s_job_executor`, with
    the K8s run launcher). ``catalogue`` names the dataset's catalogue (default: "default" for the
    home's dataset, else one named after the folder): its registered model and index store are the
    catalogue's own (`ampere.catalogue.naming`). A workspace on an object store needs a summary
    cache on PostgreSQL."""
    settings = Settings.resolve(
        workspace=workspace, dataset=dataset, tracking_uri=tracking_uri, artifact_root=artifact_root,
        summarizer_backend=summarizer_backend, summarizer_model=summarizer_model, summarizer_prompt=summarizer_prompt,
        summarizer_workers=summarizer_workers, executor=executor, summary_cache=summary_cache,
    )  # fmt: skip
    workspace, summary_cache = settings.workspace, settings.summary_cache
    if is_remote(workspace) and not is_database_url(summary_cache):
        raise ValueError(
            f"the workspace {workspace} is on an object store, where SQLite cannot live: "
            f"set {Settings.env_var('summary_cache')} to a postgresql:// URL (the summary cache every host shares)"
        )
    dataset = str(settings.dataset)
    repo_dir = repo_dir or str(settings.home)
    named = Catalogue.of(dataset, settings.home_dataset, catalogue)
    return Definitions(
        executor=_executor(settings.executor),
        assets=[*PIPELINE_ASSETS, catalogue_index, ablation_study],
        asset_checks=PIPELINE_CHECKS,
        jobs=[pipeline_job, refresh_job, ablation_job],
        schedules=[weekly_retrain],
        sensors=[dvc_data_sensor, pipeline_failure_sensor],
        resources={
            "workspace": WorkspaceResource(root=workspace),
            "dataset": DatasetResource(path=dataset, catalogue=named.name),
            "dvc": DvcResource(repo_dir=repo_dir),
            "mlflow": MlflowResource(
                tracking_uri=settings.tracking_uri,
                artifact_root=settings.artifact_root,
                registered_model=named.registered_model,
            ),
            "summarizer": SummarizerResource(
                backend=settings.summarizer_backend,
                model=settings.summarizer_model,
                prompt_id=settings.summarizer_prompt,
                workers=settings.summarizer_workers,
                cache_path=summary_cache,
            ),
            "index_store": IndexStoreResource(root=str(named.index_store(workspace))),
            # Values between steps live in the run's own folder; summary shards persist across runs, per dataset.
            "io_manager": RunScopedIOManager(base_dir=f"{workspace}/runs"),
            "summaries_io_manager": ShardedParquetIOManager(root=f"{workspace}/summaries/{dataset_key(dataset)}"),
        },
    )


def dataset_key(dataset: str) -> str:
    """A short key of a dataset folder (its resolved path), naming the workspace's per-dataset state."""
    return content_hash(str(Path(dataset).resolve()), "text", length=12)


def _executor(name: str) -> ExecutorDefinition | None:
    """None: Dagster's default (steps in subprocesses of the run); "k8s": one Kubernetes job per step;
    "isolated": one process per step in scratch folders of its own (a cluster's step pods, on one host)."""
    if name == "default":
        return None
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "isolated":
        from orchestration.step_processes import isolated_process_executor

        return isolated_process_executor
    raise ValueError(f"unknown Dagster executor {name!r}: expected 'default', 'k8s' or 'isolated'")


defs = build_defs()


def pipeline_job_at(**locations: str | None) -> JobDefinition:
    """The pipeline job with resources at ``locations`` (``build_defs`` arguments): the reconstructable
    target of `ampere pipeline`, so that its runs can be re-executed from failure."""
    return build_defs(**locations).resolve_job_def(PIPELINE_JOB)
