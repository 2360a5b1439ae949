"""The Dagster code location: `dagster dev` loads `defs` from here (see pyproject [tool.dagster])."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, ExecutorDefinition, JobDefinition

from ampere.asr.cache import is_database_url
from ampere.asr.prompts import DEFAULT_PROMPT_ID
from ampere.catalogue.naming import Catalogue
from ampere.home import find_home
from ampere.lineage.hashing import content_hash
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
    summarizer_backend: str = "llamacpp",
    summarizer_model: str | None = None,
    summarizer_prompt: str = DEFAULT_PROMPT_ID,
    summarizer_workers: int = 1,
    repo_dir: str | None = None,
    executor: str | None = None,
    catalogue: str | None = None,
    summary_cache: str | None = None,
) -> Definitions:
    """All assets, checks, jobs, schedules and sensors, with resources pointed at the given places;
    a place not given is the home's (`ampere.home.find_home`), whatever the current directory.
    ``executor`` (default: `AMPERE_DAGSTER_EXECUTOR`, else Dagster's own): "k8s" runs each step
    of a run in its own Kubernetes pod (`k8s_job_executor`, with the K8s run launcher). ``catalogue``
    names the dataset's catalogue (default: "default" for the home's dataset, else one named after the
    folder): its registered model and index store are the catalogue's own (`ampere.catalogue.naming`).
    ``workspace`` is a folder or an object-store URL (`Home.storage`); ``summary_cache`` a SQLite file or a
    PostgreSQL URL (`Home.summary_cache`; a workspace on an object store needs the database)."""
    home = find_home()
    workspace = workspace or home.storage
    summary_cache = summary_cache or home.summary_cache(workspace)
    if is_remote(workspace) and not is_database_url(summary_cache):
        raise ValueError(
            f"the workspace {workspace} is on an object store, where SQLite cannot live: "
            "set AMPERE_SUMMARY_CACHE to a postgresql:// URL (the summary cache every host shares)"
        )
    dataset = dataset or str(home.dataset)
    tracking_uri = tracking_uri or home.tracking_uri
    artifact_root = artifact_root or str(home.artifact_root)
    repo_dir = repo_dir or str(home.root)
    named = Catalogue.of(dataset, home.dataset, catalogue)
    return Definitions(
        executor=_executor(executor_name(executor)),
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
                tracking_uri=tracking_uri, artifact_root=artifact_root, registered_model=named.registered_model
            ),
            "summarizer": SummarizerResource(
                backend=summarizer_backend,
                model=summarizer_model,
                prompt_id=summarizer_prompt,
                workers=summarizer_workers,
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


EXECUTOR_ENV = "AMPERE_DAGSTER_EXECUTOR"


def executor_name(name: str | None = None) -> str:
    """The executor a job runs on: ``name``, else `AMPERE_DAGSTER_EXECUTOR`, else "default"."""
    return name or os.environ.get(EXECUTOR_ENV, "default")


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
