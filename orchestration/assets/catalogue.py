"""Catalogue stage: the served index of the catalogue's current data version, refreshed by its champion
without training (only new and changed items embedded), published immutably and made `CURRENT`."""

from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MetadataValue, Output, asset

from ampere.catalogue.content import content_keys
from ampere.catalogue.refresh import diff, indexed_items, query_embedder, vectors_for
from ampere.lineage.lineaged import LineagedTable
from ampere.retrieval.index import build_indexes
from ampere.retrieval.index_store import index_key
from ampere.serve.models import load_query_model
from orchestration import mlflow_logging
from orchestration.resources import DatasetResource, IndexStoreResource, MlflowResource, SummarizerResource, WorkspaceResource


class RefreshConfig(Config):
    """How many items the champion embeds per call."""

    batch_size: int = 64


@asset(
    pool="registry",  # reads the champion and moves CURRENT: never at once with a promotion
    group_name="catalogue",
    code_version="1",
    description=(
        "The catalogue's served index for its current data version, built by the champion without training: "
        "new and changed items embedded (summaries through the cache), removed ones dropped, the rest reused."
    ),
)
def catalogue_index(
    context: AssetExecutionContext,
    config: RefreshConfig,
    raw_items: LineagedTable,
    dataset: DatasetResource,
    index_store: IndexStoreResource,
    mlflow: MlflowResource,
    summarizer: SummarizerResource,
    workspace: WorkspaceResource,
) -> Output[dict[str, Any]]:
    """Diffs the items against the served index (item id and content key), embeds what the champion has not
    embedded before, publishes the index (champion version, data version) and swaps `CURRENT` to it."""
    received = raw_items.frame
    store = index_store.store()
    aligned = mlflow_logging.align_champion(mlflow, store)
    if aligned:
        context.log.warning(f"recovered an interrupted promotion: {aligned}")
    champion = mlflow_logging.alias_version(mlflow, "champion")
    if champion is None:
        raise Failure(
            f"catalogue {dataset.catalogue!r} has no champion ({mlflow.registered_model}@champion): "
            "train one first (ampere pipeline, or the ampere_pipeline job)"
        )
    served_id = store.current()
    served = indexed_items(store.path(served_id) if served_id else None)
    served_about = store.about(served_id) if served_id else {}
    items = received.assign(content_key=content_keys(received))
    changes = diff(items, served)
    model = load_query_model(mlflow.client(), mlflow.resolved_tracking_uri(), mlflow.registered_model, champion)
    model.use_summary_cache(summarizer.cache_location())  # transcripts summarised before cost no LLM call
    dim = int(model.encoder.tower.cfg.out_dim)
    with workspace.embedding_store(mlflow.registered_model, champion) as embedding_store:
        done = vectors_for(
            items, embedding_store, mlflow.registered_model, champion, dim, query_embedder(model.encoder), config.batch_size
        )
    data_version = str(raw_items.lineage["data_version"])
    index_id = index_key(champion, data_version)
    about = {
        "registered_model": mlflow.registered_model,
        "model_version": champion,
        "data_version": data_version,
        "dvc_md5": str(raw_items.lineage.get("dvc_md5")),
        "data_git_rev": str(raw_items.lineage.get("data_git_rev")),
        "dvc_repo": str(raw_items.lineage.get("dvc_repo")),
        "model_data_version": str(model.lineage.get("data_version")),
        "previous_index": str(served_id),
        "previous_data_version": str(served_about.get("data_version")),
        "catalogue": dataset.catalogue,
        "dataset": str(raw_items.lineage.get("dataset")),
        "refreshed_by_run": context.run.run_id,
    }
    frame = items[["item_id", "product_id", "domain", "content_key"]].assign(embedding=list(done.vectors.astype(np.float32)))
    counts = {**changes.counts(), "embedded": done.embedded, "reused": done.reused}
    recorded = {**about, **{key: str(value) for key, value in counts.items()}}
    if store.is_published(index_id):
        context.log.info(f"index {index_id} (champion v{champion}, data {data_version}) is published already: serving it")
    else:
        store.publish(lambda folder: build_indexes(frame, folder, about=recorded), index_id)
    store.swap(index_id)
    context.log.info(f"catalogue {dataset.catalogue}: serving {index_id} ({counts})")
    table = pd.DataFrame([counts]).to_markdown(index=False)
    return Output(
        {"index_id": index_id, "path": store.where(index_id), **about, **counts},
        metadata={
            **counts,
            "catalogue": dataset.catalogue,
            "index_id": index_id,
            "champion_version": champion,
            "data_version": data_version,
            "previous_data_version": about["previous_data_version"],
            "model_data_version": about["model_data_version"],
            "previous_index": str(served_id),
            "changes": MetadataValue.md(table),
            "path": MetadataValue.path(store.where(index_id)),
            "registered_model": MetadataValue.url(mlflow.model_url(champion)),
        },
    )
