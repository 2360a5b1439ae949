"""Data stage: the DVC-tracked raw items (record and media checks, data version) and the quarantine of every rejected record."""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)

from ampere.data.format import read_items
from ampere.lineage.lineaged import LineagedFeatures, LineagedTable
from ampere.models.features import ItemFeatures
from ampere.storage import local_copy
from orchestration.assets.metadata import preview, write_quarantine
from orchestration.resources import (
    DatasetResource,
    DvcResource,
    WorkspaceResource,
)
from orchestration.run_io import run_and_ancestors


@asset(
    pool="dvc",
    group_name="data",
    code_version="3",
    description="Raw items of the DVC-tracked dataset; bad records quarantined with reasons.",
)
def raw_items(
    context: AssetExecutionContext,
    dataset: DatasetResource,
    dvc: DvcResource,
    workspace: WorkspaceResource,
) -> Output[LineagedTable]:
    """Reads items.jsonl, checks every record and its media, and records the data version."""
    version = dvc.data_version(dataset.path)
    items, problems = read_items(Path(dataset.path), dataset.fractions())
    quarantine = [{"item_id": p.item_id, "line": p.line, "reason": p.reason} for p in problems]
    path = workspace.run_path(context.run.run_id, "quarantine", "raw_items.jsonl")
    write_quarantine(path, quarantine)
    workspace.save(path)
    workspace.publish(path, "quarantine", "raw_items.jsonl")
    for record in quarantine[:20]:
        context.log.warning(f"quarantined {record['item_id'] or '?'} (line {record['line']}): {record['reason']}")
    metadata: dict[str, Any] = {
        "dataset": MetadataValue.path(str(Path(dataset.path).resolve())),
        "catalogue": dataset.catalogue,
        "received": len(items) + len(quarantine),
        "accepted": len(items),
        "quarantined": len(quarantine),
        "products": int(items["product_id"].nunique()),
        "per_domain": MetadataValue.json(items["domain"].value_counts().to_dict()),
        "products_per_split": MetadataValue.json(items.groupby("split")["product_id"].nunique().to_dict()),
        "data_version": version["data_version"],
        "dvc_md5": str(version["dvc_md5"]),
        "git_rev": version["git_rev"],
        "preview": preview(items, ["item_id", "product_id", "domain", "split", "title", "asr"]),
    }
    if quarantine:
        metadata["quarantine"] = MetadataValue.md(pd.DataFrame(quarantine).head(20).to_markdown(index=False))
    lineage = {
        "data_version": version["data_version"],
        "dvc_md5": str(version["dvc_md5"]),
        "data_git_rev": version["git_rev"],
        "dataset": str(Path(dataset.path).resolve()),
        "catalogue": dataset.catalogue,
        "dvc_repo": str(Path(dvc.repo_dir).resolve()),
        **asdict(dataset.fractions()),  # which products were split how: part of the data a model saw
    }
    return Output(LineagedTable(items, lineage), data_version=DataVersion(version["data_version"]), metadata=metadata)


@asset(
    group_name="data",
    code_version="1",
    description="Every record rejected on the way to the model, with the stage and the reason; counts add up.",
)
def quarantined_items(
    context: AssetExecutionContext,
    raw_items: LineagedTable,
    backbone_features: LineagedFeatures,
    workspace: WorkspaceResource,
) -> Output[pd.DataFrame]:
    """Collects the quarantine of this run's raw_items (record checks) and backbone_features (media decoding),
    as written by this run or, for a stage it did not run (a re-execution), by the run it re-executes."""
    frames = []
    for stage in ("raw_items", "backbone_features"):
        found = [
            place
            for run_id in run_and_ancestors(context.instance, context.run.run_id)
            if (place := workspace.location("runs", run_id, "quarantine", f"{stage}.jsonl")).exists()
        ]
        if not found:
            raise FileNotFoundError(f"no quarantine file of {stage} in run {context.run.run_id} or the runs it re-executes")
        records = [json.loads(line) for line in found[0].read_text().splitlines()]
        frames.append(pd.DataFrame(records, columns=["item_id", "line", "reason"]).assign(stage=stage))
    quarantine = pd.concat(frames, ignore_index=True)[["stage", "item_id", "line", "reason"]]
    received = len(raw_items) + int((quarantine["stage"] == "raw_items").sum())
    accepted = len(ItemFeatures.load(local_copy(backbone_features.path)).item_ids)
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
