"""Every setting of an AMPere deployment in one typed object, resolved once in a fixed order:
a flag (a CLI option or a ``build_defs`` argument), else its environment variable, else its
default — most defaults being places in the project's home (`ampere --home DIR`, else
``AMPERE_HOME``, else the project folder), never the current directory.

This module is the only reader of these environment variables; the table of them is
`Settings.environment()` (rendered in the documentation's configuration reference).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_FOLDER = Path(__file__).resolve().parent.parent
# The settings a pipeline job is defined with (``build_defs``): recorded on each run, so that a
# re-execution from failure runs with its parent's settings.
JOB_SETTINGS = (
    "workspace", "summary_cache", "dataset", "tracking_uri", "artifact_root",
    "summarizer_backend", "summarizer_model", "summarizer_prompt", "summarizer_workers",
)  # fmt: skip


def _setting(env: str | None, doc: str, default: Callable[[dict[str, Any]], Any]) -> Any:
    """A field resolved from ``env`` when no flag sets it, else from ``default(resolved so far)``."""
    return field(metadata={"env": env, "doc": doc, "default": default})


@dataclass(frozen=True)
class Settings:
    """Where a project's state lives and how it runs; see `Settings.resolve`."""

    home: Path = _setting("AMPERE_HOME", "the project's home: Dagster instance, MLflow store, workspace, dataset",
                          lambda _: PROJECT_FOLDER)  # fmt: skip
    workspace: str = _setting(
        "AMPERE_WORKSPACE",
        "where the pipeline's steps hand each other data: a folder, or an s3://bucket/prefix every host of a cluster reaches",
        lambda s: str(s["home"] / "workspace"),
    )
    summary_cache: str = _setting(
        "AMPERE_SUMMARY_CACHE",
        "the LLM summary cache: a SQLite file, or a postgresql:// URL where several hosts summarise",
        lambda s: f"{s['workspace']}/summary_cache.sqlite",
    )
    dataset: Path = _setting(None, "the dataset folder (DVC-tracked)", lambda s: s["home"] / "data")
    tracking_uri: str = _setting(
        "MLFLOW_TRACKING_URI",
        "the MLflow tracking URI (a tracking server), else the home's SQLite store",
        lambda s: f"sqlite:///{s['home'] / 'mlflow' / 'mlflow.db'}",
    )
    artifact_root: str = _setting(
        None, "artifacts of runs in a new experiment of a SQLite store", lambda s: str(s["home"] / "mlflow" / "artifacts")
    )
    executor: str = _setting(
        "AMPERE_DAGSTER_EXECUTOR",
        "the Dagster executor of a run's steps: default (subprocesses), isolated (one scratch folder per step), k8s",
        lambda _: "default",
    )
    device: str = _setting(
        "AMPERE_DEVICE",
        "where features, training and embeddings compute unless a stage's config names a device: auto, cpu, cuda, cuda:N",
        lambda _: "auto",
    )
    summarizer_backend: str = _setting(None, "the summary engine: llamacpp, vllm or transformers", lambda _: "llamacpp")
    summarizer_model: str | None = _setting(
        None, "the engine's model (GGUF file, vLLM model, Hugging Face folder); none: the packaged SmolLM2", lambda _: None
    )
    summarizer_prompt: str = _setting(None, "the prompt id (a file of ampere/asr/prompts)", lambda _: _default_prompt())
    summarizer_workers: int = _setting(None, "summary engines at once, one process each", lambda _: 1)
    dagster_postgres_url: str | None = _setting(
        "DAGSTER_POSTGRES_URL", "the Dagster instance's PostgreSQL database; none: SQLite in the home", lambda _: None
    )
    gpu_slots: int = _setting(
        "AMPERE_GPU_SLOTS", "GPUs of a cluster: slots of the Dagster pools whose steps hold one GPU each", lambda _: 0
    )
    step_scratch: str | None = _setting(
        "AMPERE_STEP_SCRATCH", "the isolated executor's folder of per-step scratch folders; none: a new temp folder",
        lambda _: None,
    )  # fmt: skip
    onnx_cache: str = _setting(
        "AMPERE_ONNX_CACHE",
        "exported ONNX frame encoders, reused across runs",
        lambda _: str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ampere" / "onnx"),
    )
    mirror: str = _setting(
        "AMPERE_MIRROR",
        "where this process mirrors remote workspace files",
        lambda _: str(Path(tempfile.gettempdir()) / "ampere-mirror"),
    )

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Each field from ``flags`` (None: unset), else its environment variable, else its default."""
        environ = os.environ if environ is None else environ
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        resolved: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env = f.metadata["env"]
            value = flags.get(f.name)
            if value is None and env and environ.get(env):
                value = environ[env]
            if value is None:
                value = f.metadata["default"](resolved)
            resolved[f.name] = _typed(f.name, value)
        return cls(**resolved)

    @classmethod
    def environment(cls) -> list[tuple[str, str, str]]:
        """(variable, setting, description) of every setting an environment variable sets."""
        return [(f.metadata["env"], f.name, f.metadata["doc"]) for f in dataclasses.fields(cls) if f.metadata["env"]]

    @classmethod
    def env_var(cls, name: str) -> str:
        """The environment variable of setting ``name``."""
        return next(f.metadata["env"] for f in dataclasses.fields(cls) if f.name == name)

    def job_settings(self) -> dict[str, Any]:
        """The settings a pipeline job is defined with, as JSON values (``build_defs`` keywords)."""
        values = {name: getattr(self, name) for name in JOB_SETTINGS}
        return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}

    @property
    def home_dataset(self) -> Path:
        """The home's own dataset folder (that of the default catalogue)."""
        return self.home / "data"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance (runs, event logs, schedules): DAGSTER_HOME."""
        return self.home / "dagster_home"

    @property
    def local_workspace(self) -> Path:
        """The home's own workspace folder (the default workspace)."""
        return self.home / "workspace"


def _default_prompt() -> str:
    from ampere.asr.prompts import DEFAULT_PROMPT_ID

    return DEFAULT_PROMPT_ID


def _typed(name: str, value: Any) -> Any:
    """``value`` as the type of setting ``name`` (environment variables are strings)."""
    if name in ("home", "dataset"):
        return Path(value).resolve()
    if name in ("workspace", "summary_cache") and "://" not in str(value):
        return os.path.abspath(value)  # a folder or file here, its links kept (`ampere.storage.Location`)
    if name in ("gpu_slots", "summarizer_workers"):
        return int(value)
    return value
