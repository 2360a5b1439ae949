"""The Dagster instance configuration (dagster.yaml) of each deployment, built from the project's one.

`dagster_home/dagster.yaml` is the embedded default: SQLite storage in the instance folder, the
queued run coordinator with its limits, concurrency pools, run monitoring. A deployment adds to it:

- `storage="postgres"`: runs, event logs and schedules on PostgreSQL (`dagster-postgres`), at the
  URL in the environment variable `DAGSTER_POSTGRES_URL` (read by Dagster when the instance loads,
  so no secret is written to disk). `ampere` selects it when that variable is set.
- `launcher="k8s"`: every run in its own Kubernetes job (`dagster-k8s`'s `K8sRunLauncher`); with
  `AMPERE_DAGSTER_EXECUTOR=k8s` each step of a run is a pod too (`k8s_job_executor`). The pods hand
  each other data through the workspace on an object store (`AMPERE_WORKSPACE=s3://…`) and the
  summary cache on PostgreSQL, and the run queue admits as many runs as the cluster has GPUs
  (``gpus``); the `llm` and `accelerator` pools get that many slots from `AMPERE_GPU_SLOTS`
  (`ensure_pools`). The file `deploy/k8s/dagster.yaml` is this module's output for PostgreSQL +
  Kubernetes on 8 GPUs:

    python -m orchestration.instance --storage postgres --launcher k8s --gpus 8 > deploy/k8s/dagster.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ampere.settings import PROJECT_FOLDER, Settings

if TYPE_CHECKING:  # `ampere` starts without importing Dagster
    from dagster import DagsterInstance

BASE = PROJECT_FOLDER / "dagster_home" / "dagster.yaml"
POSTGRES_URL_ENV = Settings.env_var("dagster_postgres_url")
GPU_SLOTS_ENV = Settings.env_var("gpu_slots")  # GPUs of a cluster: slots of the pools that hold one GPU each
GPU_POOLS = ("llm", "accelerator")  # one LLM engine, one training per GPU
RUN_LIMIT = "    max_concurrent_runs: 2\n"  # the project's run queue limit (one host)
Storage = Literal["sqlite", "postgres"]
Launcher = Literal["default", "k8s"]

POSTGRES_STORAGE = f"""
# Runs, event logs and schedules on PostgreSQL (dagster-postgres, through psycopg2), e.g.
# {POSTGRES_URL_ENV}=postgresql+psycopg2://dagster:PASSWORD@db.internal:5432/dagster
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_URL_ENV}
"""

K8S_LAUNCHER = """
# Each run in its own Kubernetes job, from the image that holds this project (built from its README's
# install command). Its pods (and with AMPERE_DAGSTER_EXECUTOR=k8s each step's own pod) share no disk:
# they hand each other data through the workspace in the object store named below and the summary
# cache on PostgreSQL. The `ampere-env` secret holds what must not be written here:
#   DAGSTER_POSTGRES_URL, MLFLOW_TRACKING_URI, AMPERE_SUMMARY_CACHE (postgresql://…),
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for a store other than AWS, AWS_ENDPOINT_URL.
run_launcher:
  module: dagster_k8s
  class: K8sRunLauncher
  config:
    job_image: registry.internal/ampere:latest
    job_namespace: ampere
    service_account_name: ampere-dagster
    instance_config_map: ampere-dagster-instance
    load_incluster_config: true
    env_secrets:
      - ampere-env
    env_vars:
      - AMPERE_DAGSTER_EXECUTOR=k8s
      - AMPERE_WORKSPACE=s3://ampere/workspace
      - AMPERE_GPU_SLOTS={gpus}
"""


def instance_yaml(storage: Storage = "sqlite", launcher: Launcher = "default", gpus: int = 1) -> str:
    """The dagster.yaml of a deployment: the project's, plus the storage and run launcher blocks it needs;
    on a cluster of ``gpus`` GPUs its run queue admits that many runs at once (at least the project's 2)."""
    text = BASE.read_text()
    if RUN_LIMIT not in text:
        raise ValueError(f"{BASE} no longer sets `{RUN_LIMIT.strip()}`: update orchestration/instance.py")
    if storage == "postgres":
        text += POSTGRES_STORAGE
    if launcher == "k8s":
        text = text.replace(RUN_LIMIT, f"    max_concurrent_runs: {max(2, gpus)}  # the cluster's GPUs\n")
        text += K8S_LAUNCHER.format(gpus=gpus)
    return text


def home_storage() -> Storage:
    """PostgreSQL when `DAGSTER_POSTGRES_URL` is set, else the embedded SQLite."""
    return "postgres" if Settings.resolve().dagster_postgres_url else "sqlite"


def instance_folder(dagster_home: Path) -> Path:
    """The instance folder of a home's `dagster_home`, with its dagster.yaml written for the storage the
    environment selects: `dagster_home` itself for SQLite, `dagster_home/postgres` for PostgreSQL (its
    dagster.yaml generated, so the project's own file is never rewritten). A generated file follows
    the project's dagster.yaml: it is rewritten when that changes."""
    storage = home_storage()
    folder = dagster_home if storage == "sqlite" else dagster_home / "postgres"
    path = folder / "dagster.yaml"
    if path.resolve() != BASE.resolve():
        folder.mkdir(parents=True, exist_ok=True)
        text = instance_yaml(storage)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return folder


SCHEMA_LOCK = 0x616D70657265  # "ampere": the PostgreSQL advisory lock held while an instance creates its schema


def open_instance() -> DagsterInstance:
    """The instance at DAGSTER_HOME (`DagsterInstance.get()`); on PostgreSQL opened under an advisory lock.

    dagster-postgres creates its tables when it finds none. Two processes opening an instance on an
    empty database at once both create them, and the loser fails (`DuplicateObject: type
    "asset_daemon_asset_evaluations" already exists`). Under the lock one process creates the schema
    (what `dagster instance migrate` does for a deployment) and the others, waiting, find it and go on.
    """
    from dagster import DagsterInstance

    url = Settings.resolve().dagster_postgres_url
    if not url:
        return DagsterInstance.get()
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
            try:
                return DagsterInstance.get()
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
    finally:
        engine.dispose()


def pool_limits(pools: list[str]) -> dict[str, int]:
    """Slots of the pools that hold one GPU each (`GPU_POOLS`), from `AMPERE_GPU_SLOTS` when a cluster sets it."""
    gpus = Settings.resolve().gpu_slots
    return {pool: gpus for pool in pools if pool in GPU_POOLS and gpus > 0}


def ensure_pools(instance: DagsterInstance, pools: list[str]) -> None:
    """Creates each pool's concurrency limit (the instance's default, or `pool_limits`) before a run claims a slot.

    Dagster creates a pool's limit when a step first claims it; on PostgreSQL two runs starting at once
    both insert it, and the loser's transaction fails (its run with it). Created here up front, a race
    between two starting processes only costs the loser an ignored error.
    """
    storage = instance.event_log_storage
    limits = pool_limits(pools)
    for pool in pools:
        if pool in limits:
            if storage.get_concurrency_info(pool).slot_count != limits[pool]:
                storage.set_concurrency_slots(pool, limits[pool])
            continue
        if pool in storage.get_concurrency_keys():
            continue
        try:
            storage.initialize_concurrency_limit_to_default(pool)
        except Exception:  # another process created it meanwhile: checked below
            if pool not in storage.get_concurrency_keys():
                raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the dagster.yaml of a deployment.")
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--launcher", choices=["default", "k8s"], default="default")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the cluster: runs at once, LLM engines and trainings")
    args = parser.parse_args(argv)
    print(instance_yaml(args.storage, args.launcher, args.gpus), end="")


if __name__ == "__main__":
    main()
