"""One home for a project's state: the Dagster instance, the MLflow store, the workspace and the
default dataset are all found from one setting (`ampere --home DIR`, else the AMPERE_HOME
environment variable, else the project folder), never from the current directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "AMPERE_HOME"
WORKSPACE_ENV = "AMPERE_WORKSPACE"  # where steps hand each other data: a folder or s3://bucket/prefix
SUMMARY_CACHE_ENV = "AMPERE_SUMMARY_CACHE"  # the summary cache: a SQLite file or a postgresql:// URL
PROJECT_FOLDER = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Home:
    """Where one project's state lives."""

    root: Path

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance (runs, event logs, schedules): DAGSTER_HOME."""
        return self.root / "dagster_home"

    @property
    def workspace(self) -> Path:
        """Pipeline outputs: features, summaries, checkpoints, index store, metrics."""
        return self.root / "workspace"

    @property
    def storage(self) -> str:
        """Where the pipeline's steps hand each other data: AMPERE_WORKSPACE (a folder, or an object-store URL
        that every host of a cluster reaches), else the home's workspace folder."""
        return os.environ.get(WORKSPACE_ENV) or str(self.workspace)

    def summary_cache(self, workspace: str | Path | None = None) -> str:
        """AMPERE_SUMMARY_CACHE (a PostgreSQL URL where several hosts summarise), else `summary_cache.sqlite`
        in ``workspace`` (a folder; default: the home's workspace folder)."""
        return os.environ.get(SUMMARY_CACHE_ENV) or f"{workspace or self.workspace}/summary_cache.sqlite"

    @property
    def dataset(self) -> Path:
        """The DVC-tracked dataset folder."""
        return self.root / "data"

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set (a tracking server), else the home's sqlite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Artifacts of the home's sqlite store."""
        return self.root / "mlflow" / "artifacts"


def find_home(flag: str | Path | None = None) -> Home:
    """The home named by the flag, else by AMPERE_HOME, else the project folder."""
    return Home(Path(flag or os.environ.get(HOME_ENV) or PROJECT_FOLDER).resolve())
