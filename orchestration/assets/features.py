"""Feature stage: frozen-backbone frame and text features of every item."""

import os
import time

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    asset,
)
from tqdm.auto import tqdm

from ampere.lineage.lineaged import LineagedFeatures, LineagedTable
from ampere.models.backbones import build_frame_encoder, build_text_encoder
from ampere.models.feature_store import FeatureWriter
from ampere.models.features import ItemFeatures, text_features, visual_features
from orchestration.assets.metadata import device_metadata, write_quarantine
from orchestration.resources import (
    WorkspaceResource,
)


class FeaturesConfig(Config):
    """Frozen backbones used to precompute frame and text features."""

    frame_encoder: str = "efficientnet-lite0"
    batch_items: int = 2048  # items encoded and written per batch: the stage's memory, whatever the catalogue's size
    text_encoder: str = "all-MiniLM-L6-v2"
    device: str = "auto"  # auto: the device setting, else CUDA when present, else the CPU (ONNX Runtime frame encoder)


ID_COLUMNS = {"item_ids": "item_id", "product_ids": "product_id", "domains": "domain", "splits": "split"}


@asset(
    group_name="model",
    code_version="3",
    description=(
        "Frozen-backbone features: 8 frame vectors and 33 text token states per item (frames cached by media hash), "
        "and beside them the text states a training clip trains on where they differ (its out-of-fold summary)."
    ),
)
def backbone_features(
    context: AssetExecutionContext,
    config: FeaturesConfig,
    training_set: LineagedTable,
    workspace: WorkspaceResource,
) -> Output[LineagedFeatures]:
    """Encodes every item's frames and text; media that fail to decode are quarantined, not dropped silently."""
    rows = training_set.frame
    device = device_metadata(config.device)
    frame_encoder = build_frame_encoder(config.frame_encoder, device=device["resolved_device"])
    # With a GPU the encoder outruns one decoding thread: decode on every core (resizing is on the GPU).
    workers = (os.cpu_count() or 1) if device["resolved_device"].startswith("cuda") else 1
    text_encoder = build_text_encoder(config.text_encoder, device=device["resolved_device"])
    path = workspace.run_path(context.run.run_id, "features", "features")
    writer = FeatureWriter(path)
    quarantine: list[dict[str, str]] = []
    kept: list[pd.DataFrame] = []
    visual_seconds = 0.0
    bar = tqdm(total=len(rows), desc="backbone features", unit="item")
    for start in range(0, max(1, len(rows)), config.batch_items):  # one batch in memory at a time
        part = rows.iloc[start : start + config.batch_items]
        began = time.perf_counter()
        frames, failures = visual_features(
            list(part["media_path"]), frame_encoder, workspace.folder("feature_cache"),
            prefetch=max(8, 4 * workers), progress=False, decode_workers=workers,
        )  # fmt: skip
        visual_seconds += time.perf_counter() - began
        states, mask = text_features(list(part["text"]), text_encoder, progress=False)
        keep = np.ones(len(part), bool)
        for index, reason in failures:
            keep[index] = False
            quarantine.append({"item_id": part["item_id"].iloc[index], "reason": reason})
        kept.append(part[keep])
        writer.add({name: list(kept[-1][column]) for name, column in ID_COLUMNS.items()}, frames[keep], states[keep], mask[keep])
        bar.update(len(part))
    bar.close()
    quarantine_path = workspace.run_path(context.run.run_id, "quarantine", "backbone_features.jsonl")
    write_quarantine(quarantine_path, quarantine)
    workspace.save(quarantine_path)
    workspace.publish(quarantine_path, "quarantine", "backbone_features.jsonl")
    kept_items = pd.concat(kept)
    own = kept_items[kept_items["train_text"] != kept_items["text"]]
    for start in range(0, len(own), config.batch_items):
        part = own.iloc[start : start + config.batch_items]
        writer.add_training_texts(list(part["item_id"]), *text_features(list(part["train_text"]), text_encoder, progress=False))
    writer.close()
    features = ItemFeatures.load(path)
    lineage = {"frame_encoder": frame_encoder.id, "text_encoder": text_encoder.id, **training_set.lineage}
    saved = workspace.save(path)  # the manifest last: a reader that finds it finds every array
    workspace.publish(path, "features", path.name)
    return Output(
        LineagedFeatures(saved, lineage),
        metadata={
            "items": len(features.item_ids),
            "quarantined": len(quarantine),
            "out_of_fold_training_texts": len(own),
            "frame_encoder": frame_encoder.id,
            "text_encoder": text_encoder.id,
            **device,
            "visual_seconds": round(visual_seconds, 2),
            "frames_shape": str(tuple(features.frames.shape)),
            "text_shape": str(tuple(features.text.shape)),
            "path": MetadataValue.path(saved),
            "lineage": MetadataValue.json(lineage),
        },
    )
