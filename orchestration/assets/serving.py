"""Serving stage: embeddings, the immutable FAISS index, the test-split report and champion promotion on validation."""

import json
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    asset,
)

from ampere.catalogue.content import content_keys
from ampere.catalogue.refresh import Embedded, vectors_for
from ampere.lineage.lineaged import LineagedFeatures, LineagedTable
from ampere.lineage.promotion import decide_promotion, scored
from ampere.models.backbones import base_id
from ampere.models.features import ItemFeatures
from ampere.retrieval.eval import ValidationScore, evaluate, markdown_table
from ampere.retrieval.index import build_indexes
from ampere.retrieval.index_store import index_key
from ampere.storage import local_copy
from ampere.training.evaluator import embed
from ampere.training.finetune import features_with
from orchestration import mlflow_logging
from orchestration.assets.metadata import device_metadata
from orchestration.assets.training import end_to_end_inputs
from orchestration.resources import (
    IndexStoreResource,
    MlflowResource,
    WorkspaceResource,
)


class EmbeddingsConfig(Config):
    """Where the tower embeds the items."""

    device: str = "auto"  # auto: the device setting, else CUDA when present, else the CPU


def model_features(
    model: mlflow_logging.RegisteredEncoder, features: ItemFeatures, training_set: pd.DataFrame, workspace: WorkspaceResource
) -> ItemFeatures:
    """The items' features as ``model`` reads them: the stored frozen-backbone features, or for a fine-tuned
    model those of its own backbones (frames cached under their id, which names the weights)."""
    if model.backbones is None:
        return features
    inputs = end_to_end_inputs(training_set, model.backbones)
    return features_with(features, inputs, workspace.folder("feature_cache"), progress=True)


def catalogue_items(features: ItemFeatures, training_set: pd.DataFrame) -> pd.DataFrame:
    """The records of the featured items in feature order, with their content keys and feature positions."""
    items = training_set.set_index("item_id", drop=False).loc[features.item_ids].reset_index(drop=True)
    return items.assign(content_key=content_keys(items), position=np.arange(len(items)))


def stored_vectors(
    model: mlflow_logging.RegisteredEncoder,
    version: str,
    items: pd.DataFrame,
    features: ItemFeatures,
    training_set: pd.DataFrame,
    workspace: WorkspaceResource,
    mlflow: MlflowResource,
) -> Embedded:
    """The vectors of ``items`` by model ``version``: those it embedded before from the embedding store,
    the others embedded now (through the model's own backbones) and stored."""

    def embed_rows(rows: pd.DataFrame) -> np.ndarray:
        return embed(model.tower, model_features(model, features.subset(rows["position"].to_numpy()), training_set, workspace))

    with workspace.embedding_store(mlflow.registered_model, version) as store:
        return vectors_for(items, store, mlflow.registered_model, version, model.tower.cfg.out_dim, embed_rows)


@asset(
    group_name="serving",
    code_version="3",
    description="128-d L2-normalised embeddings of every item (embeddings.parquet), kept per (model version, item content).",
)
def embeddings(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    backbone_features: LineagedFeatures,
    training_set: LineagedTable,
    trained_encoder: dict[str, Any],
    workspace: WorkspaceResource,
    mlflow: MlflowResource,
) -> Output[str]:
    """Embeds every item with the registered model version (read back from MLflow), through its own
    backbones; content this version embedded before (a re-execution) is read from the embedding store."""
    table = training_set.frame
    features = ItemFeatures.load(local_copy(backbone_features.path))
    device = device_metadata(config.device)
    model = mlflow_logging.load_registered_encoder(mlflow, trained_encoder["model_uri"], device["resolved_device"])
    items = catalogue_items(features, table)
    done = stored_vectors(model, trained_encoder["version"], items, features, table, workspace, mlflow)
    df = pd.DataFrame(
        {
            "item_id": features.item_ids,
            "product_id": features.product_ids,
            "domain": features.domains,
            "split": features.splits,
            "content_key": items["content_key"],
            "embedding": [row.astype(np.float32) for row in done.vectors],
        }
    )
    path = workspace.run_path(context.run.run_id, "embeddings.parquet")
    df.to_parquet(path, index=False)
    saved = workspace.save(path)
    workspace.publish(path, "embeddings.parquet")
    return Output(
        saved,
        metadata={
            "items": len(df),
            "embedded": done.embedded,
            "reused": done.reused,
            "dim": int(done.vectors.shape[1]),
            "model_version": trained_encoder["version"],
            **device,
            "path": MetadataValue.path(str(path)),
        },
    )


@asset(
    group_name="serving",
    code_version="3",
    description="One FAISS index per gallery domain, published immutably under the id (model version, data version).",
)
def faiss_index(
    context: AssetExecutionContext,
    embeddings: str,
    trained_encoder: dict[str, Any],
    index_store: IndexStoreResource,
    mlflow: MlflowResource,
) -> Output[dict[str, Any]]:
    """Builds the indexes in a staging folder and publishes them; serving switches only on promotion."""
    df = pd.read_parquet(local_copy(embeddings))
    index_id = index_key(trained_encoder["version"], trained_encoder["lineage"]["data_version"])
    info: dict[str, Any] = {}
    about = {
        "registered_model": mlflow.registered_model,
        "model_version": trained_encoder["version"],
        "data_version": trained_encoder["lineage"]["data_version"],
        "catalogue": str(trained_encoder["lineage"].get("catalogue", "default")),
        "dataset": str(trained_encoder["lineage"].get("dataset", "")),
    }
    store = index_store.store()
    store.publish(lambda folder: info.update(build_indexes(df, folder, about=about)), index_id)
    path = store.where(index_id)  # a folder, or the index's URL on an object store
    client = mlflow.client()
    client.log_artifacts(trained_encoder["run_id"], str(store.path(index_id)), artifact_path=f"indexes/{index_id}")
    client.set_model_version_tag(mlflow.registered_model, trained_encoder["version"], "index_id", index_id)
    client.set_model_version_tag(mlflow.registered_model, trained_encoder["version"], "index_path", path)
    table = pd.DataFrame(
        [{"domain": d, **{k: v for k, v in i.items() if not isinstance(v, dict | list)}} for d, i in info.items()]
    )
    return Output(
        {"index_id": index_id, "path": path},
        metadata={
            "index_id": index_id,
            "path": MetadataValue.path(path),
            "served_index": str(store.current()),
            "indexes": MetadataValue.md(table.to_markdown(index=False)),
        },
    )


@asset(
    group_name="serving",
    code_version="3",
    description=(
        "Six-direction retrieval R@1/5/10 and mR1 on the test split, the report (metrics.json, MLflow metrics); "
        "the validation figures beside it, on which every choice is made."
    ),
)
def retrieval_evaluation(
    context: AssetExecutionContext,
    embeddings: str,
    trained_encoder: dict[str, Any],
    workspace: WorkspaceResource,
    mlflow: MlflowResource,
) -> Output[dict[str, float]]:
    """Reports P2S, P2L, S2P, S2L, L2P, L2S on the test items (and on the validation items, prefixed `val/`)."""
    df = pd.read_parquet(local_copy(embeddings))
    vectors = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    columns = list(df["product_id"]), list(df["domain"]), list(df["split"])
    reported = {split: evaluate(vectors, *columns, split=split) for split in ("test", "val")}
    figures = lambda evaluation, prefix: {f"{prefix}{k}": v for k, v in evaluation.items() if "/R@" in k or k in ("mR1", "mMRR")}  # noqa: E731
    metrics = figures(reported["test"], "") | figures(reported["val"], "val/")
    metrics_path = workspace.run_path(context.run.run_id, "metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    workspace.save(metrics_path)
    workspace.publish(metrics_path, "metrics.json")
    table = markdown_table(reported["test"])
    mlflow_logging.log_retrieval_metrics(mlflow, trained_encoder["run_id"], metrics, table)
    mlflow_logging.finish_training_run(mlflow, trained_encoder["run_id"], context.asset_key.to_user_string())
    context.log.info("retrieval on the test split:\n" + table)
    return Output(
        metrics,
        metadata={
            "mR1": metrics["mR1"],
            "val_mR1": metrics["val/mR1"],
            "table": MetadataValue.md(table),
            "val_table": MetadataValue.md(markdown_table(reported["val"])),
            "queries": MetadataValue.json({k: v for k, v in reported["test"].items() if k.endswith(("queries", "excluded"))}),
            "mlflow_run": MetadataValue.url(trained_encoder["run_url"]),
            "metrics_json": MetadataValue.path(str(metrics_path)),
        },
    )


# A champion is re-evaluated on the challenger's inputs, so both must read the same kind of inputs
# (backbones compared by the packaged one they start from: each model reads items through its own).
COMPARABLE_LINEAGE = ("text_source", "frame_encoder", "text_encoder")


def _comparable(key: str, value: object) -> str:
    return base_id(str(value)) if key in ("frame_encoder", "text_encoder") else str(value)


class PromotionConfig(Config):
    """`force=True` promotes the challenger whatever its figures (recorded as the reason)."""

    force: bool = False


@asset(
    pool="registry",  # read champion, compare, move the alias: one run at a time, or two runs could both promote
    group_name="serving",
    code_version="4",
    deps=["retrieval_evaluation"],
    description=(
        "Moves alias `champion` and the served index to the new version only if it beats the champion "
        "on the validation items of this data version (test items are never read)."
    ),
)
def champion_promotion(
    context: AssetExecutionContext,
    config: PromotionConfig,
    backbone_features: LineagedFeatures,
    training_set: LineagedTable,
    trained_encoder: dict[str, Any],
    faiss_index: dict[str, Any],
    mlflow: MlflowResource,
    index_store: IndexStoreResource,
    workspace: WorkspaceResource,
) -> Output[dict[str, Any]]:
    """Evaluates challenger and champion on this run's validation items and promotes the challenger if it scores higher
    (mR1, then mMRR: `ValidationScore`)."""
    table = training_set.frame
    client = mlflow.client()
    challenger = trained_encoder["version"]
    store = index_store.store()
    aligned = mlflow_logging.align_champion(mlflow, store)
    if aligned:
        context.log.warning(f"recovered an interrupted promotion: {aligned}")
    champion = mlflow_logging.alias_version(mlflow, "champion")
    features = ItemFeatures.load(local_copy(backbone_features.path)).only(["val"])
    items = catalogue_items(features, table)
    embedded: dict[str, int] = {}

    def score(version: str) -> ValidationScore:
        """The version's score from the vectors it embedded before (the embedding store), the missing ones embedded now."""
        model = mlflow_logging.load_registered_encoder(mlflow, f"models:/{mlflow.registered_model}/{version}")
        done = stored_vectors(model, version, items, features, table, workspace, mlflow)
        embedded[version] = done.embedded
        return scored(done.vectors, features)

    challenger_score = score(challenger)
    champion_score = None
    incomparable = ""
    if champion is not None:
        champion_tags = client.get_model_version(mlflow.registered_model, champion).tags
        incomparable = ", ".join(
            f"{key}: {champion_tags.get(f'lineage.{key}')} vs {trained_encoder['lineage'].get(key)}"
            for key in COMPARABLE_LINEAGE
            if _comparable(key, champion_tags.get(f"lineage.{key}")) != _comparable(key, trained_encoder["lineage"].get(key))
        )
    if champion is not None and not incomparable:
        champion_score = score(champion)
    promote, reason = decide_promotion(challenger_score, champion_score, config.force, incomparable)
    reason = reason.replace("vs champion", f"vs champion v{champion}")
    if promote:  # CURRENT first, then the alias: a crash between them is completed by `align_champion`
        store.swap(faiss_index["index_id"])
        client.set_registered_model_alias(mlflow.registered_model, "champion", challenger)
        if mlflow_logging.alias_version(mlflow, "challenger") == challenger:  # a champion is no challenger; another run's stays
            client.delete_registered_model_alias(mlflow.registered_model, "challenger")
    client.set_model_version_tag(
        mlflow.registered_model, challenger, "promotion.reason", f"{'promoted' if promote else 'not promoted'}: {reason}"
    )
    decision = {
        "promoted": promote,
        "challenger_version": challenger,
        "previous_champion": champion,
        "champion_version": challenger if promote else champion,
        "challenger_val_mR1": round(challenger_score.mR1, 2),
        "challenger_val_mMRR": round(challenger_score.mMRR, 2),
        "champion_val_mR1": None if champion_score is None else round(champion_score.mR1, 2),
        "champion_val_mMRR": None if champion_score is None else round(champion_score.mMRR, 2),
        "validation_items": len(features),
        "embedded_for_promotion": sum(embedded.values()),  # 0 when both models embedded this content before
        "reason": reason,
        "served_index": store.current(),
    }
    context.log.info(f"promotion: {decision}")
    mlflow_logging.finish_training_run(mlflow, trained_encoder["run_id"], context.asset_key.to_user_string())
    return Output(
        decision,
        metadata={k: str(v) for k, v in decision.items()}
        | {"registered_model": MetadataValue.url(mlflow.model_url(str(decision["champion_version"])))},
    )
