"""The AMPere asset graph: raw items -> summaries -> training set -> features -> encoder ->
embeddings -> FAISS index -> retrieval evaluation. Assets hold wiring, metadata and lineage; the
ML work is done by `ampere`."""

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)

from ampere.asr.cache import summarize_cached, transcript_sha256
from ampere.asr.candidates import llm_inputs, no_candidates_reason
from ampere.data.format import read_items
from ampere.eval import evaluate, markdown_table
from ampere.features import ItemFeatures, text_features, text_inputs, visual_features
from ampere.index import build_indexes
from ampere.index_store import index_key
from ampere.lineage import code_version
from ampere.models.backbones import build_frame_encoder, build_text_encoder
from ampere.models.tower import TowerConfig
from ampere.promotion import decide_promotion, validation_mr1
from ampere.shards import shard_of
from ampere.train import (
    TRAINING_SPLITS,
    TrainConfig,
    embed,
    latest_checkpoint,
    load_checkpoint,
    resolve_device,
    train_tower,
)
from orchestration import mlflow_logging
from orchestration.config import config_from_dataclass, to_dataclass
from orchestration.resources import (
    DatasetResource,
    DvcResource,
    IndexStoreResource,
    MlflowResource,
    SummarizerResource,
    WorkspaceResource,
)
from orchestration.summary_shards import SUMMARY_SHARDS

PREVIEW_ROWS = 5


def _preview(df: pd.DataFrame, columns: list[str], width: int = 80) -> MetadataValue:
    """A Markdown preview of the first rows, long strings cut to `width` characters."""
    head = df[columns].head(PREVIEW_ROWS).copy()
    for column in columns:
        head[column] = head[column].astype(str).str.slice(0, width)
    return MetadataValue.md(head.to_markdown(index=False))


def _write_quarantine(path: Path, records: list[dict[str, Any]]) -> None:
    """Quarantined records with their reasons, one JSON object per line."""
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


@asset(
    pool="dvc",
    group_name="data",
    code_version="1",
    description="Raw items of the DVC-tracked dataset; bad records quarantined with reasons.",
)
def raw_items(
    context: AssetExecutionContext,
    dataset: DatasetResource,
    dvc: DvcResource,
    workspace: WorkspaceResource,
) -> Output[pd.DataFrame]:
    """Reads items.jsonl, checks every record and its media, and records the data version."""
    version = dvc.data_version(dataset.path)
    items, problems = read_items(Path(dataset.path), dataset.fractions())
    quarantine = [{"item_id": p.item_id, "line": p.line, "reason": p.reason} for p in problems]
    _write_quarantine(workspace.path("quarantine", "raw_items.jsonl"), quarantine)
    for record in quarantine[:20]:
        context.log.warning(f"quarantined {record['item_id'] or '?'} (line {record['line']}): {record['reason']}")
    metadata: dict[str, Any] = {
        "dataset": MetadataValue.path(str(Path(dataset.path).resolve())),
        "received": len(items) + len(quarantine),
        "accepted": len(items),
        "quarantined": len(quarantine),
        "products": int(items["product_id"].nunique()),
        "per_domain": MetadataValue.json(items["domain"].value_counts().to_dict()),
        "products_per_split": MetadataValue.json(items.groupby("split")["product_id"].nunique().to_dict()),
        "data_version": version["data_version"],
        "dvc_md5": str(version["dvc_md5"]),
        "git_rev": version["git_rev"],
        "preview": _preview(items, ["item_id", "product_id", "domain", "split", "title", "asr"]),
    }
    if quarantine:
        metadata["quarantine"] = MetadataValue.md(pd.DataFrame(quarantine).head(20).to_markdown(index=False))
    items.attrs.update(
        data_version=version["data_version"],
        dvc_md5=str(version["dvc_md5"]),
        data_git_rev=version["git_rev"],
        dataset=str(Path(dataset.path).resolve()),
        dvc_repo=str(Path(dvc.repo_dir).resolve()),
    )
    return Output(items, data_version=DataVersion(version["data_version"]), metadata=metadata)


class SummariesConfig(Config):
    """`run_llm=False` skips the LLM (for the `raw` and `none` text sources, which do not read summaries)."""

    run_llm: bool = True


SUMMARY_COLUMNS = [
    "item_id",
    "shard",
    "asr_sha256",
    "status",
    "summary",
    "error",
    "product_name",
    "features",
    "prompt_id",
    "prompt_hash",
    "llm",
    "backend",
    "tagger",
]
LINEAGE_COLUMNS = ["prompt_id", "prompt_hash", "llm", "backend", "tagger"]


def _shard_table(frame: pd.DataFrame, shards: list[str]) -> MetadataValue:
    """Markdown table: per shard of the run, transcripts and how many are ok / empty / failed / skipped."""
    counts = pd.crosstab(frame["shard"], frame["status"]).reindex(index=shards, fill_value=0)
    counts.insert(0, "transcripts", counts.sum(axis=1))
    return MetadataValue.md(counts.rename_axis("shard").reset_index().to_markdown(index=False))


@asset(
    pool="llm",
    group_name="asr",
    code_version="3",
    partitions_def=SUMMARY_SHARDS,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="summaries_io_manager",
    description=(
        "LLM summaries 'Product name: …; Features: …' of short and live transcripts (by default of the phrases a "
        "title-supervised tagger picks from them), cached by content; "
        "partitioned into 16 shards by item id, so a backfill or re-run touches only its shards."
    ),
)
def asr_summaries(
    context: AssetExecutionContext,
    config: SummariesConfig,
    raw_items: pd.DataFrame,
    summarizer: SummarizerResource,
) -> Output[pd.DataFrame]:
    """Summarises the short/live transcripts of the run's shards; only transcripts missing from the cache cost an LLM call."""
    shards = sorted(context.partition_keys)
    clips = raw_items[raw_items["domain"] != "page"]
    clips = clips.assign(shard=[shard_of(item_id) for item_id in clips["item_id"]])
    clips = clips[clips["shard"].isin(shards)]
    prompt = summarizer.prompt()
    lineage = {"prompt_id": prompt.id, "prompt_hash": prompt.hash, "llm": "none", "backend": summarizer.backend, "tagger": "none"}
    base = pd.DataFrame(
        {
            "item_id": list(clips["item_id"]),
            "shard": list(clips["shard"]),
            "asr_sha256": [transcript_sha256(text) for text in clips["asr"]],
        }
    )
    if not config.run_llm:
        frame = base.assign(status="skipped", summary="", error=None, product_name="", features=[[] for _ in range(len(base))])
        frame = frame.assign(**lineage)[SUMMARY_COLUMNS]
        return Output(frame, metadata={"skipped": len(frame), "shards": ", ".join(shards), **lineage})
    engine = summarizer.summarizer()
    inputs, lineage["tagger"] = llm_inputs(prompt, raw_items, list(clips["asr"]), summarizer.tagger_config())
    results, stats = summarize_cached(inputs, engine, prompt, summarizer.cache())
    lineage["llm"] = engine.model_id
    frame = base.assign(
        status=[r.status for r in results],
        summary=[r.text for r in results],
        error=[no_candidates_reason(asr, text) or r.error for asr, text, r in zip(clips["asr"], inputs, results, strict=True)],
        product_name=[r.product_name for r in results],
        features=[list(r.features) for r in results],
        **lineage,
    )[SUMMARY_COLUMNS]
    failed = frame[frame["status"] == "failed"]
    for row in failed.head(20).itertuples():
        context.log.warning(f"summary failed for {row.item_id}: {row.error}")
    preview = clips[["item_id", "asr"]].assign(llm_input=inputs).merge(frame[["item_id", "status", "summary"]], on="item_id")
    metadata: dict[str, Any] = {
        **lineage,
        "shards": ", ".join(shards),
        "per_shard": _shard_table(frame, shards),
        "transcripts": len(frame),
        "llm_calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "empty": stats.empty,
        "failed": stats.failed,
        "tokens_in": stats.tokens_in,
        "tokens_out": stats.tokens_out,
        "seconds": round(stats.seconds, 2),
        "transcripts_per_s": round(stats.calls / stats.seconds, 3) if stats.seconds > 0 else 0.0,
        "preview": _preview(preview, ["item_id", "asr", "llm_input", "status", "summary"], width=120),
    }
    if len(failed):
        metadata["failures"] = MetadataValue.md(failed[["item_id", "error"]].head(20).to_markdown(index=False))
    return Output(frame, metadata=metadata)


def current_summaries(raw_items: pd.DataFrame, asr_summaries: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The summaries of the items in ``raw_items`` and their lineage; raises when shards are out of date.

    Every short/live item needs a summary of its current transcript, and all of them must come
    from one prompt and LLM. The error names the shards to re-materialise.
    """
    clips = raw_items.loc[raw_items["domain"] != "page", ["item_id", "asr"]]
    merged = clips.merge(asr_summaries, on="item_id", how="left")
    missing = merged["status"].isna()
    stale = ~missing & (merged["asr_sha256"] != [transcript_sha256(text) for text in merged["asr"]])
    problems, shards = [], set()
    for label, rows in (("without a summary", missing), ("whose transcript changed after its summary", stale)):
        if rows.any():
            found = sorted({shard_of(item_id) for item_id in merged.loc[rows, "item_id"]})
            problems.append(f"{int(rows.sum())} item(s) {label} (shards {', '.join(found)})")
            shards.update(found)
    if problems:
        raise ValueError(
            "asr_summaries is out of date: " + "; ".join(problems) + ". Materialise asr_summaries for those shards, "
            f"e.g. `dagster asset materialize -m orchestration.definitions --select asr_summaries --partition {min(shards)}`."
        )
    combos = merged.groupby(LINEAGE_COLUMNS)["shard"].agg(lambda keys: ", ".join(sorted(set(keys))))
    if len(combos) > 1:
        described = "; ".join(f"{'/'.join(lineage)} in shards {keys}" for lineage, keys in combos.items())
        raise ValueError(f"asr_summaries mixes prompts, LLMs or taggers across shards ({described}): re-materialise all shards")
    lineage = dict(zip(LINEAGE_COLUMNS, combos.index[0], strict=True)) if len(combos) else {}
    return merged.drop(columns=["asr"]), lineage


class TrainingSetConfig(Config):
    """Which text feeds the text branch for short/live items: `summary` (LLM), `raw` (ASR) or `none`."""

    text_source: str = "summary"


@asset(
    group_name="data",
    code_version="1",
    description="Items joined with the text each one feeds the model; validated by a blocking Great Expectations check.",
)
def training_set(
    context: AssetExecutionContext,
    config: TrainingSetConfig,
    raw_items: pd.DataFrame,
    asr_summaries: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """One row per item with its `text` for the chosen text source."""
    if config.text_source not in ("summary", "raw", "none"):
        raise ValueError(f"text_source must be summary, raw or none, not {config.text_source!r}")
    summaries, lineage = current_summaries(raw_items, asr_summaries)
    if config.text_source == "summary" and (summaries["status"] == "skipped").any():
        raise ValueError("text_source=summary needs summaries: materialise asr_summaries with run_llm=true")
    df = raw_items.merge(summaries[["item_id", "status", "summary"]], on="item_id", how="left")
    df["summary_status"] = df["status"].fillna("n/a")
    df["text"] = text_inputs(
        list(df["domain"]), list(df["title"]), list(df["asr"]), list(df["summary"].fillna("")), config.text_source
    )
    df = df.drop(columns=["status"])
    df.attrs = {**raw_items.attrs, **lineage, "text_source": config.text_source}
    return Output(
        df,
        metadata={
            "rows": len(df),
            "products": int(df["product_id"].nunique()),
            "text_source": config.text_source,
            "empty_text": int((df["text"].str.strip() == "").sum()),
            "per_split": MetadataValue.json(df["split"].value_counts().to_dict()),
            "preview": _preview(df, ["item_id", "domain", "split", "summary_status", "text"], width=100),
        },
    )


class FeaturesConfig(Config):
    """Frozen backbones used to precompute frame and text features."""

    frame_encoder: str = "efficientnet-lite0"
    text_encoder: str = "all-MiniLM-L6-v2"


@asset(
    group_name="model",
    code_version="1",
    description="Frozen-backbone features: 8 frame vectors and 33 text token states per item (frames cached by media hash).",
)
def backbone_features(
    context: AssetExecutionContext,
    config: FeaturesConfig,
    training_set: pd.DataFrame,
    workspace: WorkspaceResource,
) -> Output[str]:
    """Encodes every item's frames and text; media that fail to decode are quarantined, not dropped silently."""
    started = time.perf_counter()
    frame_encoder = build_frame_encoder(config.frame_encoder)
    frames, failures = visual_features(
        list(training_set["media_path"]), frame_encoder, workspace.folder("feature_cache")
    )
    visual_seconds = time.perf_counter() - started
    text_encoder = build_text_encoder(config.text_encoder)
    states, mask = text_features(list(training_set["text"]), text_encoder)
    failed_rows = {index for index, _ in failures}
    keep = np.array([i not in failed_rows for i in range(len(training_set))])
    quarantine = [{"item_id": training_set["item_id"].iloc[index], "reason": reason} for index, reason in failures]
    _write_quarantine(workspace.path("quarantine", "backbone_features.jsonl"), quarantine)
    kept = training_set[keep]
    features = ItemFeatures(
        item_ids=list(kept["item_id"]),
        product_ids=list(kept["product_id"]),
        domains=list(kept["domain"]),
        splits=list(kept["split"]),
        frames=frames[keep],
        text=states[keep],
        text_mask=mask[keep],
    )
    path = workspace.path("features", "features.npz")
    features.save(path)
    (path.with_suffix(".json")).write_text(
        json.dumps({"frame_encoder": frame_encoder.id, "text_encoder": text_encoder.id, **training_set.attrs}, default=str)
    )
    return Output(
        str(path),
        metadata={
            "items": len(features.item_ids),
            "quarantined": len(quarantine),
            "frame_encoder": frame_encoder.id,
            "text_encoder": text_encoder.id,
            "visual_seconds": round(visual_seconds, 2),
            "frames_shape": str(tuple(features.frames.shape)),
            "text_shape": str(tuple(features.text.shape)),
            "path": MetadataValue.path(str(path)),
        },
    )


EncoderConfig = config_from_dataclass(
    TrainConfig,
    "EncoderConfig",
    "Training settings of the shared tower (backbones frozen): every field of ampere.train.TrainConfig.",
)


def _checkpoint_dir(context: AssetExecutionContext, config: TrainConfig, workspace: WorkspaceResource) -> Path:
    """The configured checkpoint folder, else one per root run: a re-execution of a run resumes its training."""
    if config.checkpoint_dir is not None:
        return Path(config.checkpoint_dir)
    return workspace.folder("checkpoints", context.run.root_run_id or context.run.run_id)


def _device_params(train_cfg: TrainConfig) -> dict[str, str]:
    """The device training runs on and its name (the GPU's, or "cpu"), for MLflow params and metadata."""
    device = resolve_device(train_cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"resolved_device": str(device), "device_name": name}


@asset(
    pool="accelerator",
    group_name="model",
    code_version="2",
    description=(
        "The AMPere shared tower trained with cross-domain InfoNCE on the train split, its checkpoint chosen on "
        "validation mR1 (early stopping); logged to MLflow and registered. Never reads a test item."
    ),
)
def trained_encoder(
    context: AssetExecutionContext,
    config: EncoderConfig,
    backbone_features: str,
    mlflow: MlflowResource,
    workspace: WorkspaceResource,
) -> Output[dict[str, Any]]:
    """Trains the tower (resuming this run's checkpoint after a crash), logs curves and the model to MLflow, registers it."""
    features = ItemFeatures.load(Path(backbone_features)).only(TRAINING_SPLITS)
    lineage = json.loads(Path(backbone_features).with_suffix(".json").read_text())
    tower_cfg = TowerConfig(
        visual_dim=features.frames.shape[-1], text_dim=features.text.shape[-1], text_tokens=features.text.shape[1]
    )
    train_cfg = to_dataclass(TrainConfig, config)
    folder = _checkpoint_dir(context, train_cfg, workspace)
    train_cfg = replace(train_cfg, checkpoint_dir=str(folder))
    run = mlflow_logging.training_run(
        mlflow,
        folder,
        tags={
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "git_commit": code_version(),
            **{f"lineage.{k}": str(v) for k, v in lineage.items()},
        },
        params={
            **asdict(train_cfg),
            **_device_params(train_cfg),
            **{f"tower.{k}": v for k, v in asdict(tower_cfg).items()},
        },
    )
    checkpoint = latest_checkpoint(folder)
    if run.resumed and checkpoint is not None:
        context.log.info(f"resuming training from {checkpoint} (MLflow run {run.info.run_id})")
        mlflow_logging.log_missing_evaluations(mlflow, run.info.run_id, load_checkpoint(checkpoint)["history"])
    started = time.perf_counter()
    result = train_tower(
        features,
        tower_cfg,
        train_cfg,
        on_eval=lambda row: mlflow_logging.log_evaluation(mlflow, run.info.run_id, row),
        resume=True,
    )
    seconds = time.perf_counter() - started
    summary = {
        "best_step": result.best_step,
        "best_val_mR1": result.best_val_mR1,
        "steps_done": result.steps_done,
        "stopped_early": float(result.stopped_early),
    }
    registered = mlflow_logging.log_encoder(mlflow, run.info.run_id, result.tower, tower_cfg, result.history, lineage, summary)
    run_url = mlflow.run_url(run.info.experiment_id, run.info.run_id)
    curve = pd.DataFrame(result.history).round(4)
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
            **_device_params(train_cfg),
            "train_seconds": round(seconds, 2),
            "learning_curve": MetadataValue.md(curve.to_markdown(index=False)),
        },
    )


@asset(group_name="serving", code_version="1", description="128-d L2-normalised embeddings of every item (embeddings.parquet).")
def embeddings(
    context: AssetExecutionContext,
    backbone_features: str,
    trained_encoder: dict[str, Any],
    workspace: WorkspaceResource,
    mlflow: MlflowResource,
) -> Output[str]:
    """Embeds every item with the registered model version (read back from MLflow)."""
    features = ItemFeatures.load(Path(backbone_features))
    tower = mlflow_logging.load_registered_tower(mlflow, trained_encoder["model_uri"])
    vectors = embed(tower, features)
    df = pd.DataFrame(
        {
            "item_id": features.item_ids,
            "product_id": features.product_ids,
            "domain": features.domains,
            "split": features.splits,
            "embedding": [row.astype(np.float32) for row in vectors],
        }
    )
    path = workspace.path("embeddings.parquet")
    df.to_parquet(path, index=False)
    return Output(
        str(path),
        metadata={
            "items": len(df),
            "dim": int(vectors.shape[1]),
            "model_version": trained_encoder["version"],
            "path": MetadataValue.path(str(path)),
        },
    )


@asset(
    group_name="serving",
    code_version="2",
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
    df = pd.read_parquet(embeddings)
    index_id = index_key(trained_encoder["version"], trained_encoder["lineage"]["data_version"])
    info: dict[str, Any] = {}
    path = index_store.store().publish(lambda folder: info.update(build_indexes(df, folder)), index_id)
    client = mlflow.client()
    client.log_artifacts(trained_encoder["run_id"], str(path), artifact_path=f"indexes/{index_id}")
    client.set_model_version_tag(mlflow.registered_model, trained_encoder["version"], "index_id", index_id)
    client.set_model_version_tag(mlflow.registered_model, trained_encoder["version"], "index_path", str(path))
    table = pd.DataFrame(
        [{"domain": d, **{k: v for k, v in i.items() if not isinstance(v, dict | list)}} for d, i in info.items()]
    )
    return Output(
        {"index_id": index_id, "path": str(path)},
        metadata={
            "index_id": index_id,
            "path": MetadataValue.path(str(path)),
            "served_index": str(index_store.store().current()),
            "indexes": MetadataValue.md(table.to_markdown(index=False)),
        },
    )


@asset(
    group_name="serving",
    code_version="2",
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
    df = pd.read_parquet(embeddings)
    vectors = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    columns = list(df["product_id"]), list(df["domain"]), list(df["split"])
    reported = {split: evaluate(vectors, *columns, split=split) for split in ("test", "val")}
    figures = lambda evaluation, prefix: {f"{prefix}{k}": v for k, v in evaluation.items() if "/R@" in k or k == "mR1"}  # noqa: E731
    metrics = figures(reported["test"], "") | figures(reported["val"], "val/")
    workspace.path("metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
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
            "metrics_json": MetadataValue.path(str(workspace.path("metrics.json"))),
        },
    )


# A champion is re-evaluated on the challenger's inputs, so both must read the same kind of inputs.
COMPARABLE_LINEAGE = ("text_source", "frame_encoder", "text_encoder")


class PromotionConfig(Config):
    """`force=True` promotes the challenger whatever its figures (recorded as the reason)."""

    force: bool = False


@asset(
    group_name="serving",
    code_version="2",
    deps=["retrieval_evaluation"],
    description=(
        "Moves alias `champion` and the served index to the new version only if it beats the champion "
        "on the validation items of this data version (test items are never read)."
    ),
)
def champion_promotion(
    context: AssetExecutionContext,
    config: PromotionConfig,
    backbone_features: str,
    trained_encoder: dict[str, Any],
    faiss_index: dict[str, Any],
    mlflow: MlflowResource,
    index_store: IndexStoreResource,
) -> Output[dict[str, Any]]:
    """Evaluates challenger and champion on this run's validation items and promotes the challenger if its mR1 is higher."""
    client = mlflow.client()
    challenger = trained_encoder["version"]
    champion = mlflow_logging.alias_version(mlflow, "champion")
    features = ItemFeatures.load(Path(backbone_features)).only(["val"])
    challenger_mr1 = validation_mr1(
        mlflow_logging.load_registered_tower(mlflow, trained_encoder["model_uri"]), features
    )
    champion_mr1 = None
    incomparable = ""
    if champion is not None:
        champion_tags = client.get_model_version(mlflow.registered_model, champion).tags
        incomparable = ", ".join(
            f"{key}: {champion_tags.get(f'lineage.{key}')} vs {trained_encoder['lineage'].get(key)}"
            for key in COMPARABLE_LINEAGE
            if champion_tags.get(f"lineage.{key}") != str(trained_encoder["lineage"].get(key))
        )
    if champion is not None and not incomparable:
        tower = mlflow_logging.load_registered_tower(mlflow, f"models:/{mlflow.registered_model}/{champion}")
        champion_mr1 = validation_mr1(tower, features)
    promote, reason = decide_promotion(challenger_mr1, champion_mr1, config.force, incomparable)
    reason = reason.replace("vs champion", f"vs champion v{champion}")
    store = index_store.store()
    if promote:
        client.set_registered_model_alias(mlflow.registered_model, "champion", challenger)
        store.swap(faiss_index["index_id"])
    client.set_model_version_tag(
        mlflow.registered_model, challenger, "promotion.reason", f"{'promoted' if promote else 'not promoted'}: {reason}"
    )
    decision = {
        "promoted": promote,
        "challenger_version": challenger,
        "previous_champion": champion,
        "champion_version": challenger if promote else champion,
        "challenger_val_mR1": challenger_mr1,
        "champion_val_mR1": champion_mr1,
        "validation_items": len(features),
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


@asset(
    group_name="data",
    code_version="1",
    description="Every record rejected on the way to the model, with the stage and the reason; counts add up.",
)
def quarantined_items(
    context: AssetExecutionContext,
    raw_items: pd.DataFrame,
    backbone_features: str,
    workspace: WorkspaceResource,
) -> Output[pd.DataFrame]:
    """Collects the quarantine of this run's raw_items (record checks) and backbone_features (media decoding)."""
    frames = []
    for stage in ("raw_items", "backbone_features"):
        path = workspace.path("quarantine", f"{stage}.jsonl")
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        frames.append(pd.DataFrame(records, columns=["item_id", "line", "reason"]).assign(stage=stage))
    quarantine = pd.concat(frames, ignore_index=True)[["stage", "item_id", "line", "reason"]]
    received = len(raw_items) + int((quarantine["stage"] == "raw_items").sum())
    accepted = len(ItemFeatures.load(Path(backbone_features)).item_ids)
    if received != accepted + len(quarantine):
        raise ValueError(f"counts do not add up: received {received} != accepted {accepted} + quarantined {len(quarantine)}")
    return Output(
        quarantine,
        metadata={
            "received": received,
            "accepted": accepted,
            "quarantined": len(quarantine),
            "per_stage": MetadataValue.json(quarantine["stage"].value_counts().to_dict()),
            "records": MetadataValue.md(quarantine.head(50).to_markdown(index=False) if len(quarantine) else "none"),
        },
    )


PIPELINE_ASSETS = [
    raw_items,
    asr_summaries,
    training_set,
    backbone_features,
    trained_encoder,
    embeddings,
    faiss_index,
    retrieval_evaluation,
    champion_promotion,
    quarantined_items,
]
