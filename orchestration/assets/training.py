"""Training stage: the AMPere tower trained on the train split, chosen on validation, logged and registered in MLflow."""

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
)
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from ampere.lineage.lineaged import LineagedFeatures, LineagedTable
from ampere.lineage.versions import code_version
from ampere.models.backbones import ImageEncoder, TextEncoder
from ampere.models.features import ItemFeatures
from ampere.serve.pyfunc import summary_parts
from ampere.storage import local_copy
from ampere.training.checkpoint import latest_checkpoint, load_checkpoint
from ampere.training.finetune import EndToEndInputs, EndToEndSpec
from ampere.training.launch import run_torchrun
from ampere.training.train import TRAINING_SPLITS, TrainConfig, tower_config, train_tower
from orchestration import mlflow_logging
from orchestration.assets.metadata import device_metadata
from orchestration.config import config_from_dataclass, to_dataclass
from orchestration.resources import (
    MlflowResource,
    SummarizerResource,
    WorkspaceResource,
)

EncoderConfig = config_from_dataclass(
    TrainConfig,
    "EncoderConfig",
    "Training settings of the encoder (the tower on frozen features, or end to end with `finetune`): every field of "
    "ampere.training.train.TrainConfig.",
)


def media_and_texts(training_set: pd.DataFrame, text: str = "text") -> tuple[dict[str, str], dict[str, str]]:
    """Every item's media path and text (by item id), as the training set holds them: ``text`` names the
    column, `text` (what a query of the item reads) or `train_text` (what it trains on)."""
    items = list(training_set["item_id"])
    return dict(zip(items, training_set["media_path"], strict=True)), dict(zip(items, training_set[text], strict=True))


def end_to_end_inputs(training_set: pd.DataFrame, encoders: tuple[ImageEncoder, TextEncoder]) -> EndToEndInputs:
    """The backbones with every item's media path and text (as a query of it reads)."""
    return EndToEndInputs(*encoders, *media_and_texts(training_set))


def _checkpoint_dir(context: AssetExecutionContext, config: TrainConfig, workspace: WorkspaceResource) -> Path:
    """The configured checkpoint folder, else one per root run: a re-execution of a run resumes its training."""
    if config.checkpoint_dir is not None:
        return Path(config.checkpoint_dir)
    return workspace.folder("checkpoints", context.run.root_run_id or context.run.run_id)


@asset(
    pool="accelerator",
    group_name="model",
    code_version="4",
    description=(
        "The AMPere shared tower trained with cross-domain InfoNCE on the train split, its checkpoint chosen on "
        "validation mR1 (early stopping); with `finetune`, the backbones trained with it from frames and tokens. "
        "Logged to MLflow and registered. Never reads a test item."
    ),
)
def trained_encoder(
    context: AssetExecutionContext,
    config: EncoderConfig,
    backbone_features: LineagedFeatures,
    training_set: LineagedTable,
    mlflow: MlflowResource,
    workspace: WorkspaceResource,
    summarizer: SummarizerResource,
) -> Output[dict[str, Any]]:
    """Trains the tower (resuming this run's checkpoint after a crash), logs curves and the model to MLflow, registers it."""
    rows = training_set.frame
    features = ItemFeatures.load(local_copy(backbone_features.path), training=True).only(TRAINING_SPLITS)
    lineage = backbone_features.lineage
    # Checked before training: a model on summaries registers with the tagger and LLM they came from.
    with workspace.taggers() as taggers:
        parts = summary_parts(lineage, taggers, summarizer.backend, summarizer.engine_options())
    train_cfg = to_dataclass(TrainConfig, config)
    tower_cfg = tower_config(features, train_cfg)
    folder = _checkpoint_dir(context, train_cfg, workspace)
    train_cfg = replace(train_cfg, checkpoint_dir=str(folder))
    device = device_metadata(train_cfg.device)
    run = mlflow_logging.training_run(
        mlflow,
        folder,
        tags={
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "git_commit": code_version(),
            MLFLOW_RUN_NAME: f"{lineage.get('text_source')} · {str(lineage.get('data_version'))[:24]}",
            MLFLOW_RUN_NOTE: (
                f"AMPere tower trained by Dagster run {context.run.run_id} on {lineage.get('dataset')} "
                f"(data version {lineage.get('data_version')}), text source {lineage.get('text_source')}, prompt "
                f"{lineage.get('prompt_id', '-')}, frame encoder {lineage.get('frame_encoder')}; "
                "checkpoint chosen on validation mR1."
            ),
            **{f"lineage.{k}": str(v) for k, v in lineage.items()},
        },
        params={
            **asdict(train_cfg),
            **device,
            **{f"tower.{k}": v for k, v in asdict(tower_cfg).items()},
        },
    )
    checkpoint = latest_checkpoint(folder)
    if run.resumed and checkpoint is not None:
        context.log.info(f"resuming training from {checkpoint} (MLflow run {run.info.run_id})")
        mlflow_logging.log_missing_evaluations(mlflow, run.info.run_id, load_checkpoint(checkpoint)["history"])
    started = time.perf_counter()
    spec = None
    if train_cfg.finetune:
        spec = EndToEndSpec(lineage["frame_encoder"], lineage["text_encoder"], *media_and_texts(rows, "train_text"))
    if train_cfg.nproc_per_node > 1:
        context.log.info(f"training with torchrun: {train_cfg.nproc_per_node} processes")
        result = run_torchrun(local_copy(backbone_features.path), tower_cfg, train_cfg, folder / "torchrun", spec)
        mlflow_logging.log_missing_evaluations(mlflow, run.info.run_id, result.history)
    else:
        result = train_tower(
            features,
            tower_cfg,
            train_cfg,
            on_eval=lambda row: mlflow_logging.log_evaluation(mlflow, run.info.run_id, row),
            resume=True,
            backbones=None if spec is None else spec.build(device["resolved_device"]),
        )
    seconds = time.perf_counter() - started
    if result.backbones is not None:  # the model reads its own backbones: the lineage names their weights
        trained = result.backbones
        lineage = {**lineage, "frame_encoder": trained.frame_encoder.id, "text_encoder": trained.text_encoder.id}
    summary = {
        "best_step": result.best_step,
        "best_val_mR1": round(result.best_val_mR1, 2),
        "best_val_mMRR": round(result.best_val_mMRR, 2),
        "steps_done": result.steps_done,
        "stopped_early": float(result.stopped_early),
    }
    if tower_cfg.fusion == "late":  # the share of the frames in the fused similarity, fit on validation
        summary["visual_weight"] = round(float(result.tower.visual_weight), 2)
    registered = mlflow_logging.log_encoder(
        mlflow,
        run.info.run_id,
        result.tower,
        tower_cfg,
        result.history,
        lineage,
        summary,
        parts,
        result.backbones,
    )
    run_url = mlflow.run_url(run.info.experiment_id, run.info.run_id)
    curve = pd.DataFrame(result.history).round(4)
    for warning in result.warnings:
        context.log.warning(warning)
    mlflow.client().set_tag(run.info.run_id, "validation.warnings", "; ".join(result.warnings) or "none")
    return Output(
        {
            **registered,
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "run_url": run_url,
            "lineage": lineage,
            "best_val_mR1": result.best_val_mR1,
        },
        metadata={
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": MetadataValue.url(run_url),
            "model_version": registered["version"],
            "model_uri": registered["model_uri"],
            "registered_model": MetadataValue.url(mlflow.model_url(registered["version"])),
            **summary,
            "stopped_early": result.stopped_early,
            "resumed": run.resumed,
            "fusion": tower_cfg.fusion,
            "validation_warnings": MetadataValue.md("\n".join(f"- {w}" for w in result.warnings) or "none"),
            **device,
            "train_seconds": round(seconds, 2),
            "learning_curve_plot": MetadataValue.md(mlflow_logging.curve_markdown(result.history, result.best_step, run_url)),
            "learning_curve": MetadataValue.md(curve.to_markdown(index=False)),
        },
    )
