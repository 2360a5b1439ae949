"""The Dagster instance configuration (dagster.yaml) of each deployment, built from the project's one.

`dagster_home/dagster.yaml` is the embedded default: SQLite storage in the instance folder, the
queued run coordinator with its limits, concurrency pools, run monitoring. A deployment adds to it:

- `storage="postgres"`: runs, event logs and schedules on PostgreSQL (`dagster-postgres`), at the
  URL in the environment variable `DAGSTER_POSTGRES_URL` (read by Dagster when the instance loads,
  so no secret is written to disk). `ampere` selects it when that variable is set.
- `launcher="k8s"`: every run in its own Kubernetes job (`dagster-k8s`'s `K8sRunLauncher`); with
  `AMPERE_DAGSTER_EXECUTOR=k8s` each step of a run is a pod too (`k8s_job_executor`). The file
  `deploy/k8s/dagster.yaml` is this module's output for PostgreSQL + Kubernetes:

    python -m orchestration.instance --storage postgres --launcher k8s > deploy/k8s/dagster.yaml
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ampere.home import PROJECT_FOLDER

if TYPE_CHECKING:  # `ampere` starts without importing Dagster
    from dagster import DagsterInstance

BASE = PROJECT_FOLDER / "dagster_home" / "dagster.yaml"
POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"
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
# install command); the job's pods read DAGSTER_POSTGRES_URL, MLFLOW_TRACKING_URI and the S3
# credentials of the DVC remote and MLflow's artifact store from the `ampere-env` secret.
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
"""


def instance_yaml(storage: Storage = "sqlite", launcher: Launcher = "default") -> str:
    """The dagster.yaml of a deployment: the project's, plus the storage and run launcher blocks it needs."""
    text = BASE.read_text()
    if storage == "postgres":
        text += POSTGRES_STORAGE
    if launcher == "k8s":
        text += K8S_LAUNCHER
    return text


def home_storage() -> Storage:
    """PostgreSQL when `DAGSTER_POSTGRES_URL` is set, else the embedded SQLite."""
    return "postgres" if os.environ.get(POSTGRES_URL_ENV) else "sqlite"


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

    url = os.environ.get(POSTGRES_URL_ENV)
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


def ensure_pools(instance: DagsterInstance, pools: list[str]) -> None:
    """Creates each pool's concurrency limit (the instance's default) before a run claims a slot in it.

    Dagster creates a pool's limit when a step first claims it; on PostgreSQL two runs starting at once
    both insert it, and the loser's transaction fails (its run with it). Created here up front, a race
    between two starting processes only costs the loser an ignored error.
    """
    storage = instance.event_log_storage
    for pool in pools:
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
    args = parser.parse_args(argv)
    print(instance_yaml(args.storage, args.launcher), end="")


if __name__ == "__main__":
    main()
