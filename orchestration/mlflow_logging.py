"""MLflow calls of the pipeline, all with explicit run ids through the resource's client."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric, Param, RunInfo  # noqa: E402

import mlflow  # noqa: E402
from ampere.encoder_io import load_tower, save_tower  # noqa: E402
from ampere.models.tower import AmpereTower, TowerConfig  # noqa: E402
from ampere.serving import EncoderModel  # noqa: E402
from orchestration.resources import MlflowResource  # noqa: E402

MODEL_REQUIREMENTS = ["torch", "numpy"]


def _use_store(resource: MlflowResource) -> None:
    """Points MLflow's fluent API (model logging, `models:/` URIs) at the resource's store.

    Needed in every process: with Dagster's multiprocess executor each step runs in its own.
    """
    mlflow.set_tracking_uri(resource.resolved_tracking_uri())
    mlflow.set_registry_uri(resource.resolved_tracking_uri())


def start_run(resource: MlflowResource, tags: dict[str, str], params: dict[str, Any]) -> RunInfo:
    """Creates a run in the resource's experiment with tags and params; it stays open until evaluation."""
    client = resource.client()
    run = client.create_run(resource.experiment_id(), tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info


def log_epoch(resource: MlflowResource, run_id: str, epoch: int, row: dict[str, float]) -> None:
    """Per-epoch training figures, as metrics stepped by epoch."""
    metrics = [Metric(f"train/{k}", float(v), 0, epoch) for k, v in row.items() if k != "epoch"]
    resource.client().log_batch(run_id, metrics=metrics)


def _loss_curve(history: list[dict[str, float]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for key in [k for k in (history[0] if history else {}) if k.startswith("loss")]:
        axis.plot(epochs, [row[key] for row in history], label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def log_encoder(
    resource: MlflowResource,
    run_id: str,
    tower: AmpereTower,
    config: TowerConfig,
    history: list[dict[str, float]],
    lineage: dict[str, Any],
) -> dict[str, str]:
    """Logs the loss curve and the tower as an MLflow model, registers a version, tags it with lineage."""
    client = resource.client()
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(_loss_curve(history, Path(tmp) / "loss_curve.png")), artifact_path="plots")
        folder = save_tower(Path(tmp) / "encoder", tower, config, extra=lineage)
        _use_store(resource)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="encoder",
                python_model=EncoderModel(),
                artifacts={"encoder": str(folder)},
                pip_requirements=MODEL_REQUIREMENTS,
            )
    _ensure_registered(resource)
    version = client.create_model_version(
        resource.registered_model,
        source=info.model_uri,
        run_id=run_id,
        model_id=info.model_id,
        tags={"run_id": run_id, **{f"lineage.{k}": str(v) for k, v in lineage.items()}},
    )
    client.set_registered_model_alias(resource.registered_model, "challenger", version.version)
    return {"version": str(version.version), "model_uri": f"models:/{resource.registered_model}/{version.version}"}


def _ensure_registered(resource: MlflowResource) -> None:
    client = resource.client()
    try:
        client.get_registered_model(resource.registered_model)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(resource.registered_model, description="AMPere shared tower (frozen backbones)")


def alias_version(resource: MlflowResource, alias: str) -> str | None:
    """The model version an alias points to, or None when the alias is not set."""
    try:
        return str(resource.client().get_model_version_by_alias(resource.registered_model, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_registered_tower(resource: MlflowResource, model_uri: str) -> AmpereTower:
    """Downloads a registered model's encoder folder and rebuilds the tower."""
    _use_store(resource)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=resource.resolved_tracking_uri()
        )
        return load_tower(Path(local) / "artifacts" / "encoder")


def log_retrieval_metrics(resource: MlflowResource, run_id: str, metrics: dict[str, float], table_md: str) -> None:
    """Retrieval figures as MLflow metrics (`P2S/R@1` -> `P2S/R_at_1`) and the table as an artifact."""
    client = resource.client()
    client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), 0, 0) for k, v in metrics.items()])
    client.log_text(run_id, table_md, "retrieval_table.md")
    client.log_dict(run_id, metrics, "metrics.json")
