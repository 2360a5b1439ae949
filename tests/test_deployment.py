"""Deployments beyond one machine: the Dagster instance on PostgreSQL with the queued run coordinator,
and the Kubernetes deployment's instance config and executor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance, Definitions, asset, define_asset_job
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator

from orchestration.definitions import build_defs
from orchestration.in_process import execute_in_process
from orchestration.instance import GPU_SLOTS_ENV, POSTGRES_URL_ENV, SCHEMA_LOCK, ensure_pools, instance_folder, instance_yaml
from orchestration.jobs import DATASET_TAG, PIPELINE_JOB

DEPLOY_K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def test_the_embedded_default_is_sqlite_with_a_queue_limited_per_dataset(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(POSTGRES_URL_ENV, raising=False)
    folder = instance_folder(tmp_path / "dagster_home")
    assert folder == tmp_path / "dagster_home"
    with DagsterInstance.from_config(str(folder)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config  # what the daemon's queue applies
        assert queue.max_concurrent_runs == 2
        [limit] = queue.tag_concurrency_limits
        assert limit == {"key": DATASET_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def test_dagster_runs_on_postgresql_when_its_url_is_set(tmp_path, monkeypatch, postgres) -> None:
    """With DAGSTER_POSTGRES_URL set, the home's instance keeps runs, event logs and schedules in
    PostgreSQL: a run executed there is in the database, and a second instance on the same URL sees it."""
    url = postgres("dagster")
    monkeypatch.setenv(POSTGRES_URL_ENV, url.replace("postgresql://", "postgresql+psycopg2://"))  # dagster-postgres' driver
    folder = instance_folder(tmp_path / "dagster_home")
    assert folder == tmp_path / "dagster_home" / "postgres" and "postgres_url" in (folder / "dagster.yaml").read_text()

    @asset
    def answer() -> int:
        return 42

    job = Definitions(assets=[answer], jobs=[define_asset_job("answer_job")]).resolve_job_def("answer_job")
    with DagsterInstance.from_config(str(folder)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = execute_in_process(job, instance=instance, tags={DATASET_TAG: "/data/a"})
        assert result.success
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [("SUCCESS",)]
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "dagster.yaml").write_text((folder / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(other)) as instance:
        assert instance.get_run_by_id(result.run_id).tags[DATASET_TAG] == "/data/a"


OPENER = """
import sys, time
from pathlib import Path
from orchestration.instance import open_instance

Path(sys.argv[1] + "-" + sys.argv[2]).touch()  # imported
while not Path(sys.argv[1]).exists():  # every process ready first, then all open at once
    time.sleep(0.01)
instance = open_instance()
print(type(instance.run_storage).__name__, len(instance.get_runs()))
"""


def test_processes_opening_an_empty_postgresql_instance_at_once_all_get_it(tmp_path, monkeypatch, postgres) -> None:
    """Four processes open the instance on one empty database at the same moment: they wait while the
    schema lock is held (here by the test), then one creates the schema and the others find it and go
    on. Without the lock two creators race, and the loser fails with DuplicateObject (seed 800)."""
    url = postgres("dagster_race")
    monkeypatch.setenv(POSTGRES_URL_ENV, url.replace("postgresql://", "postgresql+psycopg2://"))
    folder = instance_folder(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(folder)}
    go = tmp_path / "go"
    holder = psycopg2.connect(url)
    holder.autocommit = True
    with holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(go), str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for i in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("go-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        go.touch()
        waiting, deadline = 0, time.monotonic() + 60
        while waiting < 4 and time.monotonic() < deadline and all(process.poll() is None for process in processes):
            time.sleep(0.2)
            with holder.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                waiting = cursor.fetchone()[0]
        assert waiting == 4, f"{waiting} of 4 processes waited for the schema lock"
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        holder.close()
        for process in processes:
            process.kill()
            process.wait()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert output.strip().splitlines()[-1] == "PostgresRunStorage 0"


def test_the_kubernetes_deployment_config_loads(monkeypatch) -> None:
    """`deploy/k8s/dagster.yaml` is the generated PostgreSQL + K8sRunLauncher config, valid for Dagster's
    instance schema and for the storage and launcher classes; the k8s executor runs every step in a pod."""
    from dagster_k8s import K8sRunLauncher, k8s_job_executor
    from dagster_postgres import DagsterPostgresStorage

    assert (DEPLOY_K8S / "dagster.yaml").read_text() == instance_yaml("postgres", "k8s", gpus=8)
    monkeypatch.setenv(POSTGRES_URL_ENV, "postgresql://dagster@db.internal:5432/dagster")
    config, _ = dagster_instance_config(str(DEPLOY_K8S))
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    for section, cls in ((launcher["config"], K8sRunLauncher), (config["storage"]["postgres"], DagsterPostgresStorage)):
        checked = process_config(cls.config_type(), section)
        assert checked.success, checked.errors
    assert not process_config(K8sRunLauncher.config_type(), {**launcher["config"], "no_such_key": 1}).success
    # The pods share no disk: the workspace is on the object store, and the run queue follows the GPUs.
    assert "AMPERE_WORKSPACE=s3://ampere/workspace" in launcher["config"]["env_vars"]
    assert "AMPERE_GPU_SLOTS=8" in launcher["config"]["env_vars"]
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 8

    job = build_defs(executor="k8s").resolve_job_def(PIPELINE_JOB)
    assert job.executor_def is k8s_job_executor
    with pytest.raises(ValueError, match="unknown Dagster executor"):
        build_defs(executor="celery")


def test_a_cluster_gives_the_gpu_pools_one_slot_per_gpu(tmp_path, monkeypatch, postgres) -> None:
    """On a cluster (`AMPERE_GPU_SLOTS`) the `llm` and `accelerator` pools hold as many steps as there are
    GPUs (16 summary pods, each with its own engine, run 8 at a time on 8 GPUs); other pools keep 1."""
    url = postgres("dagster_pools").replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv(POSTGRES_URL_ENV, url)
    with DagsterInstance.from_config(str(instance_folder(tmp_path / "dagster_home"))) as instance:
        pools = ["accelerator", "dvc", "llm", "registry"]
        ensure_pools(instance, pools)
        slots = lambda: {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in pools}  # noqa: E731
        assert slots() == dict.fromkeys(pools, 1)
        monkeypatch.setenv(GPU_SLOTS_ENV, "8")
        ensure_pools(instance, pools)
        assert slots() == {"accelerator": 8, "dvc": 1, "llm": 8, "registry": 1}
