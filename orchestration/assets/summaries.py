"""ASR stage: LLM summaries per shard (cached, with lineage) and the validated training set that reads them."""

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MetadataValue,
    Output,
    asset,
)

from ampere.asr.cache import transcript_sha256
from ampere.asr.candidates import no_candidates_reason, training_reader
from ampere.asr.shards import shard_of
from ampere.asr.summaries import TranscriptSummarizer, summarize_transcripts
from ampere.asr.workers import WorkerTask, engine_share, run_workers, shard_groups, worker_environments
from ampere.lineage.lineaged import LineagedTable
from ampere.models.features import text_inputs
from orchestration.assets.metadata import preview
from orchestration.resources import (
    SummarizerResource,
    WorkspaceResource,
)
from orchestration.summary_shards import SUMMARY_SHARDS


class SummariesConfig(Config):
    """`run_llm=False` skips the LLM (for the `raw` and `none` text sources, which do not read summaries)."""

    run_llm: bool = True


SUMMARY_COLUMNS = [
    "item_id",
    "shard",
    "asr_sha256",
    "status",
    "summary",
    "train_summary",
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
    code_version="5",
    partitions_def=SUMMARY_SHARDS,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="summaries_io_manager",
    description=(
        "LLM summaries 'Product name: …; Features: …' of short and live transcripts (by default of the phrases a "
        "title-supervised tagger picks from them), cached by content; a training product's clips also get the summary "
        "they train on (`train_summary`, read by taggers that never saw the product's own title); "
        "partitioned into 16 shards by item id, so a backfill or re-run touches only its shards."
    ),
)
def asr_summaries(
    context: AssetExecutionContext,
    config: SummariesConfig,
    raw_items: LineagedTable,
    summarizer: SummarizerResource,
    workspace: WorkspaceResource,
) -> Output[pd.DataFrame]:
    """Summarises the short/live transcripts of the run's shards; only transcripts missing from the cache cost an LLM call."""
    items = raw_items.frame
    shards = sorted(context.partition_keys)
    clips = items[items["domain"] != "page"]
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
        frame = base.assign(
            status="skipped", summary="", train_summary="", error=None, product_name="", features=[[] for _ in range(len(base))]
        )
        frame = frame.assign(**lineage)[SUMMARY_COLUMNS]
        _describe_each_shard(context, frame, shards)
        return Output(frame, metadata={"run_skipped": len(frame), "run_shards": ", ".join(shards), **lineage})
    workers = _summarise_in_workers(items, clips, shards, summarizer) if summarizer.workers > 1 else None
    engine = summarizer.summarizer()
    done = summarize_transcripts(prompt, items, list(clips["asr"]), engine, summarizer.cache(), summarizer.tagger_config())
    inputs, results, stats, lineage["tagger"] = done.inputs, done.results, done.stats, done.reader.lineage
    if done.reader.tagger is not None:  # the registered model will carry this very tagger
        with workspace.taggers() as taggers:
            taggers.put(done.reader.tagger)
    lineage["llm"] = engine.model_id
    # What a training product's clips train on: out of fold, through the same LLM and cache.
    training = (clips["split"] == "train").to_numpy()
    train_texts = [r.text for r in results]
    train_stats = None
    if done.reader.tagger is not None and training.any():
        oof = training_reader(done.reader, items, summarizer.tagger_config())
        trained = TranscriptSummarizer(prompt, oof, engine, summarizer.cache())(
            list(clips.loc[training, "asr"]), list(clips.loc[training, "product_id"])
        )
        for row, result in zip(training.nonzero()[0], trained.results, strict=True):
            train_texts[row] = result.text
        train_stats = trained.stats
    frame = base.assign(
        status=[r.status for r in results],
        summary=[r.text for r in results],
        train_summary=train_texts,
        error=[no_candidates_reason(asr, text) or r.error for asr, text, r in zip(clips["asr"], inputs, results, strict=True)],
        product_name=[r.product_name for r in results],
        features=[list(r.features) for r in results],
        **lineage,
    )[SUMMARY_COLUMNS]
    failed = frame[frame["status"] == "failed"]
    for row in failed.head(20).itertuples():
        context.log.warning(f"summary failed for {row.item_id}: {row.error}")
    shown = clips[["item_id", "asr"]].assign(llm_input=inputs).merge(frame[["item_id", "status", "summary"]], on="item_id")
    metadata: dict[str, Any] = {  # the run's figures, over all its shards (`run_`); each shard's own: below
        **lineage,
        "run_shards": ", ".join(shards),
        "run_per_shard": _shard_table(frame, shards),
        "run_transcripts": len(frame),
        "run_llm_calls": stats.calls + (0 if workers is None else int(workers["calls"].sum())),
        "run_cache_hits": stats.cache_hits,
        "run_empty": stats.empty,
        "run_failed": stats.failed,
        "run_tokens_in": stats.tokens_in,
        "run_tokens_out": stats.tokens_out,
        "run_seconds": round(stats.seconds, 2),
        "run_transcripts_per_s": round(stats.calls / stats.seconds, 3) if stats.seconds > 0 else 0.0,
        "run_training_transcripts_out_of_fold": int(training.sum()) if train_stats is not None else 0,
        "run_out_of_fold_llm_calls": train_stats.calls if train_stats is not None else 0,
        "run_out_of_fold_changed": int((frame["summary"] != frame["train_summary"]).sum()),
        "preview": preview(shown, ["item_id", "asr", "llm_input", "status", "summary"], width=120),
    }
    if workers is not None:
        metadata["run_workers"] = MetadataValue.md(workers.round(2).to_markdown(index=False))
    if len(failed):
        metadata["run_failures"] = MetadataValue.md(failed[["item_id", "error"]].head(20).to_markdown(index=False))
    _describe_each_shard(context, frame, shards)
    return Output(frame, metadata=metadata)


def _summarise_in_workers(
    raw_items: pd.DataFrame, clips: pd.DataFrame, shards: list[str], summarizer: SummarizerResource
) -> pd.DataFrame:
    """Summarises the run's shards with `summarizer.workers` engine processes over disjoint shard groups,
    into the shared cache (the caller then reads every summary back from it); each worker's figures."""
    groups = shard_groups(shards, summarizer.workers)
    gpus = 0
    if summarizer.backend != "llamacpp":
        import torch

        gpus = torch.cuda.device_count()
    environments = worker_environments(summarizer.backend, len(groups), summarizer.tensor_parallel_size, gpus)
    engine = engine_share(summarizer.backend, summarizer.engine_options(), len(groups))
    with tempfile.TemporaryDirectory(prefix="ampere-summary-workers-") as folder:
        items_path = Path(folder) / "items.parquet"
        raw_items.to_parquet(items_path, index=False)
        tasks = [
            WorkerTask(
                shards=group,
                item_ids=list(clips.loc[clips["shard"].isin(group), "item_id"]),
                items_path=str(items_path),
                prompt_id=summarizer.prompt_id,
                backend=summarizer.backend,
                engine=engine,
                cache_path=summarizer.cache_location(),
                tagger=asdict(summarizer.tagger_config()),
            )
            for group in groups
        ]
        stats = run_workers(tasks, environments, Path(folder))
    return pd.DataFrame([{**row, "shards": ", ".join(row["shards"])} for row in stats])


def _describe_each_shard(context: AssetExecutionContext, frame: pd.DataFrame, shards: list[str]) -> None:
    """Each shard's materialisation says what that shard holds (the `run_` figures cover all the run's shards)."""
    for shard in shards:
        statuses = frame.loc[frame["shard"] == shard, "status"]
        counts = {status: int((statuses == status).sum()) for status in ("ok", "empty", "failed", "skipped")}
        context.add_asset_metadata({"shard": shard, "transcripts": len(statuses), **counts}, partition_key=shard)


def current_summaries(raw_items: pd.DataFrame, asr_summaries: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The summaries of the items in ``raw_items`` and their lineage; raises when shards are out of date.

    Every short/live item needs a summary of its current transcript, and all of them must come
    from one prompt and LLM. The error names the shards to re-materialise.
    """
    clips = raw_items.loc[raw_items["domain"] != "page", ["item_id", "asr"]]
    merged = clips.merge(asr_summaries, on="item_id", how="left")
    missing = merged["status"].isna()
    stale = ~missing & (merged["asr_sha256"] != [transcript_sha256(text) for text in merged["asr"]])
    if "train_summary" not in merged:
        merged["train_summary"] = None
    untrained = ~missing & ~stale & merged["train_summary"].isna()
    problems, shards = [], set()
    for label, rows in (
        ("without a summary", missing),
        ("whose transcript changed after its summary", stale),
        ("summarised before training summaries existed (no train_summary)", untrained),
    ):
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
    code_version="2",
    description=(
        "Items joined with the text each one feeds the model (`text`, as a query of it reads) and trains on "
        "(`train_text`: out of fold for a training clip); validated by a blocking Great Expectations check."
    ),
)
def training_set(
    context: AssetExecutionContext,
    config: TrainingSetConfig,
    raw_items: LineagedTable,
    asr_summaries: pd.DataFrame,
) -> Output[LineagedTable]:
    """One row per item with its `text` for the chosen text source."""
    items = raw_items.frame
    if config.text_source not in ("summary", "raw", "none"):
        raise ValueError(f"text_source must be summary, raw or none, not {config.text_source!r}")
    summaries, lineage = current_summaries(items, asr_summaries)
    if config.text_source == "summary" and (summaries["status"] == "skipped").any():
        raise ValueError("text_source=summary needs summaries: materialise asr_summaries with run_llm=true")
    df = items.merge(summaries[["item_id", "status", "summary", "train_summary"]], on="item_id", how="left")
    df["summary_status"] = df["status"].fillna("n/a")
    domains, titles, asrs = list(df["domain"]), list(df["title"]), list(df["asr"])
    df["text"] = text_inputs(domains, titles, asrs, list(df["summary"].fillna("")), config.text_source)
    # What the item trains on: a training clip's out-of-fold summary (the same text for every other item).
    df["train_text"] = text_inputs(domains, titles, asrs, list(df["train_summary"].fillna("")), config.text_source)
    df = df.drop(columns=["status", "train_summary"])
    table = LineagedTable(df, {**raw_items.lineage, **lineage, "text_source": config.text_source})
    return Output(
        table,
        metadata={
            "rows": len(df),
            "products": int(df["product_id"].nunique()),
            "text_source": config.text_source,
            "empty_text": int((df["text"].str.strip() == "").sum()),
            "train_text_out_of_fold": int((df["train_text"] != df["text"]).sum()),
            "per_split": MetadataValue.json(df["split"].value_counts().to_dict()),
            "preview": preview(df, ["item_id", "domain", "split", "summary_status", "text"], width=100),
        },
    )
