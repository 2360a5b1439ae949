"""The text-source ablation as a Dagster asset (job `ampere_ablation`), logged to MLflow as a
parent run with one child run per (source, seed) and a bar chart."""

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset, define_asset_job  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ampere.asr.candidates import LlmReader, TitleTagger, out_of_fold  # noqa: E402
from ampere.asr.keywords import KeywordExtractor  # noqa: E402
from ampere.lineage.lineaged import LineagedFeatures, LineagedTable  # noqa: E402
from ampere.lineage.versions import code_version  # noqa: E402
from ampere.models.backbones import text_encoder_from_id  # noqa: E402
from ampere.models.features import ItemFeatures  # noqa: E402
from ampere.storage import local_copy  # noqa: E402
from ampere.training.ablation import SOURCES, AblationConfig, markdown, run_ablation, summarize  # noqa: E402
from ampere.training.train import TrainConfig  # noqa: E402
from orchestration.assets.summaries import current_summaries  # noqa: E402
from orchestration.config import config_from_dataclass, to_dataclass  # noqa: E402
from orchestration.resources import MlflowResource, SummarizerResource, WorkspaceResource  # noqa: E402
from orchestration.run_state import mlflow_runs_fail_with_their_step  # noqa: E402

ABLATION_JOB = "ampere_ablation"
ABLATION_EXPERIMENT = "ampere-ablation"  # apart from the training runs, which the `ampere` experiment opens on


class _AblationCells(Config):
    sources: list[str] = list(SOURCES)
    seeds: list[int] = [0, 1, 2]


AblationStudyConfig = config_from_dataclass(
    TrainConfig,
    "AblationStudyConfig",
    "Sources and seeds of the ablation; every cell trains with the same TrainConfig fields (its seed replaced per cell).",
    base=_AblationCells,
)


def _bar_chart(summary: pd.DataFrame, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    errors = [summary["mR1 mean"] - summary["mR1 low"], summary["mR1 high"] - summary["mR1 mean"]]
    axis.bar(summary["source"], summary["mR1 mean"], yerr=errors, capsize=4, color="tab:blue")
    axis.set_ylabel("test mR1 (%): mean over seeds, 95% bootstrap interval")
    axis.set_title("AMPere text-source ablation")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@asset(
    group_name="benchmarks",
    code_version="1",
    description="Trains and evaluates the tower per text source (none, raw, keywords, summary, text-only) and seed.",
)
def ablation_study(
    context: AssetExecutionContext,
    config: AblationStudyConfig,
    raw_items: LineagedTable,
    asr_summaries: pd.DataFrame,
    backbone_features: LineagedFeatures,
    workspace: WorkspaceResource,
    mlflow: MlflowResource,
    summarizer: SummarizerResource,
) -> Output[pd.DataFrame]:
    """Runs the ablation on the current data and features and logs parent + child MLflow runs."""
    received = raw_items.frame
    summaries, summary_lineage = current_summaries(received, asr_summaries)
    if (summaries["status"] == "skipped").any():
        raise ValueError("the ablation needs LLM summaries: materialise asr_summaries with run_llm=true first")
    features = ItemFeatures.load(local_copy(backbone_features.path))
    items = pd.DataFrame({"item_id": features.item_ids}).merge(received, on="item_id", how="left")
    items = items.merge(summaries[["item_id", "summary", "train_summary"]], on="item_id", how="left")
    items = items.fillna({"summary": "", "train_summary": ""})
    # Cells train on train items and report on the others: a training clip reads its out-of-fold summary.
    items["summary"] = items["train_summary"].where(items["split"] == "train", items["summary"])
    # The text encoder the features were computed with, so every cell encodes its text as the pipeline does.
    text_encoder = text_encoder_from_id(backbone_features.lineage["text_encoder"])
    if "keywords" in config.sources:
        train_clips = items[(items["split"] == "train") & (items["domain"] != "page")]
        extractor = KeywordExtractor(text_encoder, train_clips.groupby("product_id")["asr"].apply(list).to_dict())
        context.log.info(f"keywords: {len(extractor.learned_stop_words)} chatter words learned from training transcripts")
        items["keywords"] = [
            extractor.extract(asr) if domain != "page" else ""
            for domain, asr in tqdm(zip(items["domain"], items["asr"], strict=True), total=len(items), desc="keywords")
        ]
    if "phrases" in config.sources:  # the phrases the summaries' LLM read, else a tagger of the summarizer's settings
        read_through = summary_lineage.get("tagger", "none")
        if read_through != "none":
            with workspace.taggers() as taggers:
                tagger = taggers.get(read_through)
        else:
            tagger = TitleTagger.fit(items, summarizer.tagger_config())
        context.log.info(f"phrases: title-tagger@{tagger.fingerprint()} (the summaries read {read_through})")
        reader = LlmReader(tagger, out_of_fold(items, summarizer.tagger_config()))  # training products read out of fold
        items["phrases"] = reader(items["asr"].where(items["domain"] != "page", ""), items["product_id"], separator=", ")
    client = mlflow.client()
    experiment_id = mlflow.experiment_id(ABLATION_EXPERIMENT)
    parent = client.create_run(
        experiment_id,
        tags={MLFLOW_RUN_NAME: "text-source-ablation", "dagster.run_id": context.run.run_id, "git_commit": code_version()},
    )
    parent_id = parent.info.run_id
    train = to_dataclass(TrainConfig, config)
    client.log_batch(
        parent_id,
        params=[
            Param(k, str(v)) for k, v in {**train.to_dict(), "sources": ",".join(config.sources), "seeds": config.seeds}.items()
        ],
    )

    def log_child(row: dict) -> None:
        child = client.create_run(
            experiment_id,
            tags={MLFLOW_PARENT_RUN_ID: parent_id, MLFLOW_RUN_NAME: f"{row['source']}-seed{row['seed']}"},
        )
        client.log_batch(
            child.info.run_id,
            params=[Param("text_source", row["source"]), Param("seed", str(row["seed"]))],
            metrics=[Metric(k.replace("@", "_at_"), float(v), 0, 0) for k, v in row.items() if k not in ("source", "seed")],
        )
        client.set_terminated(child.info.run_id)
        context.log.info(f"{row['source']} seed {row['seed']}: mR1 {row['mR1']:.2f}")

    ablation = AblationConfig(tuple(config.sources), tuple(config.seeds), train)
    results, hits = run_ablation(items, np.asarray(features.frames), text_encoder, ablation, log_child)
    summary = summarize(results, hits)
    table = markdown(summary)
    results.to_csv(workspace.path("ablation", "results.csv"), index=False)
    workspace.path("ablation", "table.md").write_text(table + "\n")
    workspace.save(workspace.path("ablation"))
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(parent_id, str(_bar_chart(summary, Path(tmp) / "ablation_mR1.png")), "plots")
    client.log_text(parent_id, table, "ablation_table.md")
    client.log_batch(
        parent_id,
        metrics=[
            Metric(f"{row['source']}/{key.replace(' ', '_')}", float(row[key]), 0, 0)
            for row in summary.to_dict("records")
            for key in ("mR1 mean", "mR1 low", "mR1 high", "val_mR1 mean")
        ],
    )
    client.set_terminated(parent_id)
    return Output(
        results,
        metadata={
            "table": MetadataValue.md(table),
            "mlflow_parent_run": MetadataValue.url(mlflow.run_url(experiment_id, parent_id)),
            "cells": len(results),
        },
    )


ablation_job = define_asset_job(
    ABLATION_JOB,
    selection=[ablation_study],
    description="The text-source ablation benchmark.",
    hooks={mlflow_runs_fail_with_their_step},
)
