"""MLflow calls of the pipeline, all with explicit run ids through the resource's client."""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import Metric, Param, RunInfo  # noqa: E402

import mlflow  # noqa: E402
from ampere.models.backbones import FINETUNED, ImageEncoder, TextEncoder, encoders_from_ids, save_finetuned  # noqa: E402
from ampere.models.encoder_io import load_lineage, load_tower, save_tower  # noqa: E402
from ampere.models.tower import AmpereTower, TowerConfig  # noqa: E402
from ampere.retrieval.index_store import IndexStore  # noqa: E402
from ampere.serve.pyfunc import MODEL_CONFIG, EncoderModel, SummaryParts, encoder_signature, model_requirements  # noqa: E402
from ampere.training.finetune import EndToEndInputs  # noqa: E402
from orchestration.resources import MlflowResource  # noqa: E402


def _use_store(resource: MlflowResource) -> None:
    """Points MLflow's fluent API (model logging, `models:/` URIs) at the resource's store.

    Needed in every process: with Dagster's multiprocess executor each step runs in its own.
    """
    mlflow.set_tracking_uri(resource.resolved_tracking_uri())
    mlflow.set_registry_uri(resource.resolved_tracking_uri())


@dataclass(frozen=True)
class TrainingRun:
    """The MLflow run of one training; ``resumed``: it was started by an earlier, interrupted attempt."""

    info: RunInfo
    resumed: bool


RUN_FILE = "mlflow_run.json"


def training_run(resource: MlflowResource, checkpoint_dir: Path, tags: dict[str, str], params: dict[str, Any]) -> TrainingRun:
    """The MLflow run of the training whose checkpoints live in ``checkpoint_dir``.

    A re-execution that resumes those checkpoints continues the same run (its curves go on where
    they stopped); otherwise a run is created with ``tags`` and ``params`` and recorded there.
    """
    client = resource.client()
    record = Path(checkpoint_dir) / RUN_FILE
    if record.exists():
        run_id = json.loads(record.read_text())["run_id"]
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed_by_dagster_run", tags["dagster.run_id"])
        return TrainingRun(client.get_run(run_id).info, resumed=True)
    run = client.create_run(resource.experiment_id(), tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": run.info.run_id}))
    return TrainingRun(run.info, resumed=False)


REPORTING_ASSETS = ("retrieval_evaluation", "champion_promotion")


def finish_training_run(resource: MlflowResource, run_id: str, asset: str) -> None:
    """Records that `asset` reported into the training run; the run ends FINISHED once every
    reporting asset has (a failure before that ends it FAILED: `run_state`)."""
    client = resource.client()
    client.set_tag(run_id, f"done.{asset}", "true")
    tags = client.get_run(run_id).data.tags
    if all(tags.get(f"done.{name}") == "true" for name in REPORTING_ASSETS):
        client.set_terminated(run_id)


VALIDATION_METRICS = {
    "val_mR1": "curve/val_mR1",
    "val_mMRR": "curve/val_mMRR",
    "val_loss": "curve/val_loss",
    "best_val_mR1": "curve/best_val_mR1",
    "visual_weight": "curve/visual_weight",  # late fusion's weight, fit on validation
}


def log_evaluation(resource: MlflowResource, run_id: str, row: dict[str, float]) -> None:
    """One validation evaluation: validation figures as `curve/*`, training losses as `train/*`, stepped by step."""
    step = int(row["step"])
    metrics = [
        Metric(VALIDATION_METRICS.get(key, f"train/{key}"), float(value), 0, step) for key, value in row.items() if key != "step"
    ]
    resource.client().log_batch(run_id, metrics=metrics)


def log_missing_evaluations(resource: MlflowResource, run_id: str, history: list[dict[str, float]]) -> None:
    """Logs the evaluations a run lacks: those of a resumed training (a crash between checkpoint and
    logging), or all of a torchrun training (its ranks do not log)."""
    logged = {metric.step for metric in resource.client().get_metric_history(run_id, VALIDATION_METRICS["val_mR1"])}
    for row in history:
        if int(row["step"]) not in logged:
            log_evaluation(resource, run_id, row)


def _curves(history: list[dict[str, float]], best_step: int, path: Path) -> Path:
    """Training losses and validation mR1 against the step, the chosen step marked."""
    steps = [row["step"] for row in history]
    figure, (losses, validation) = plt.subplots(1, 2, figsize=(11, 4))
    for key in [k for k in (history[0] if history else {}) if k.startswith("loss")]:
        losses.plot(steps, [row[key] for row in history], label=key)
    losses.set_xlabel("step")
    losses.set_ylabel("training loss (mean since the previous evaluation)")
    losses.legend(fontsize=7)
    validation.plot(steps, [row["val_mR1"] for row in history], marker="o", label="validation mR1")
    validation.axvline(best_step, color="tab:red", linestyle="--", label=f"chosen checkpoint (step {best_step})")
    validation.set_xlabel("step")
    validation.set_ylabel("mR1 (%)")
    validation.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def curve_markdown(history: list[dict[str, float]], best_step: int, run_url: str) -> str:
    """The learning-curve plot as a Markdown image (Dagster shows it in the asset's metadata), with
    a link to the same plot in the MLflow run."""
    with tempfile.TemporaryDirectory() as tmp:
        png = _curves(history, best_step, Path(tmp) / "learning_curve.png").read_bytes()
    image = base64.b64encode(png).decode("ascii")
    return f"![learning curve](data:image/png;base64,{image})\n\n[the plot in MLflow (plots/learning_curve.png)]({run_url})"


def log_encoder(
    resource: MlflowResource,
    run_id: str,
    tower: AmpereTower,
    config: TowerConfig,
    history: list[dict[str, float]],
    lineage: dict[str, Any],
    summary: dict[str, float],
    summary_parts: SummaryParts | None,
    backbones: EndToEndInputs | None = None,
) -> dict[str, str]:
    """Logs the learning curves, the training summary and the encoder as an MLflow model (the tower;
    for a model on summaries its tagger and summary engine settings, ``summary_parts``; the
    backbones' weights when fine-tuned); registers a version."""
    client = resource.client()
    client.log_batch(run_id, metrics=[Metric(f"train/{k}", float(v), 0, 0) for k, v in summary.items()])
    with tempfile.TemporaryDirectory() as tmp:
        curves = _curves(history, int(summary["best_step"]), Path(tmp) / "learning_curve.png")
        client.log_artifact(run_id, str(curves), artifact_path="plots")
        client.log_text(run_id, pd.DataFrame(history).round(4).to_markdown(index=False), "learning_curve.md")
        folder = save_tower(Path(tmp) / "encoder", tower, config, extra=lineage)
        if backbones is not None:
            save_finetuned(folder, backbones.frame_encoder, backbones.text_encoder)
        if summary_parts is not None:
            summary_parts.write(folder)
        _use_store(resource)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="encoder",
                python_model=EncoderModel(),
                artifacts={"encoder": str(folder)},
                model_config=MODEL_CONFIG,
                pip_requirements=model_requirements(),
                signature=encoder_signature(config.out_dim),
            )
        client.update_run(run_id, status="RUNNING")  # leaving `start_run` ended it; the reporting assets end it
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
        description = "AMPere encoder: the shared tower over frozen or fine-tuned backbones"
        try:
            client.create_registered_model(resource.registered_model, description=description)
        except mlflow.exceptions.MlflowException:  # a concurrent run registered it first
            client.get_registered_model(resource.registered_model)


def alias_version(resource: MlflowResource, alias: str) -> str | None:
    """The model version an alias points to, or None when the alias is not set."""
    try:
        return str(resource.client().get_model_version_by_alias(resource.registered_model, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def champion_disagreement(resource: MlflowResource, store: IndexStore) -> tuple[str | None, str] | None:
    """(champion version, served model version) when the `champion` alias and the model of the index
    `CURRENT` serves differ, else None. Promotion and rollback move `CURRENT` first and the alias after,
    so a disagreement means one was cut between its two steps."""
    current = store.current()
    served = store.about(current).get("model_version") if current else None
    champion = alias_version(resource, "champion")
    return None if served is None or str(served) == champion else (champion, str(served))


def align_champion(resource: MlflowResource, store: IndexStore) -> str | None:
    """Completes a promotion or rollback cut between its two steps: the `champion` alias moves to the
    served index's model. Returns what was done, or None when they agreed."""
    found = champion_disagreement(resource, store)
    if found is None:
        return None
    champion, served = found
    resource.client().set_registered_model_alias(resource.registered_model, "champion", served)
    return f"the champion alias moved from v{champion} to v{served}, the model of the served index {store.current()}"


@dataclass
class RegisteredEncoder:
    """A registered model's tower and lineage; ``backbones``: its fine-tuned frame and text encoders,
    None when it reads the frozen backbones' stored features."""

    tower: AmpereTower
    lineage: dict[str, Any]
    backbones: tuple[ImageEncoder, TextEncoder] | None


def load_registered_encoder(resource: MlflowResource, model_uri: str, device: str = "cpu") -> RegisteredEncoder:
    """Downloads a registered model's encoder folder and rebuilds its tower (and fine-tuned backbones) on ``device``."""
    _use_store(resource)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=resource.resolved_tracking_uri()
        )
        folder = Path(local) / "artifacts" / "encoder"
        lineage = load_lineage(folder)
        ids = lineage.get("frame_encoder", ""), lineage.get("text_encoder", "")
        backbones = encoders_from_ids(*ids, folder, device=device) if any(FINETUNED in i for i in ids) else None
        return RegisteredEncoder(load_tower(folder).to(device), lineage, backbones)


def log_retrieval_metrics(resource: MlflowResource, run_id: str, metrics: dict[str, float], table_md: str) -> None:
    """Retrieval figures as MLflow metrics (`P2S/R@1` -> `P2S/R_at_1`) and the table as an artifact."""
    client = resource.client()
    client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), 0, 0) for k, v in metrics.items()])
    client.log_text(run_id, table_md, "retrieval_table.md")
    client.log_dict(run_id, metrics, "metrics.json")
