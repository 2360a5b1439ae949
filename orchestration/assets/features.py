"""Feature stage: frozen-backbone frame and text features of every item."""

import json
import os
import time
from pathlib import Path
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

from ampere.models.backbones import build_frame_encoder, build_text_encoder
from ampere.models.features import ItemFeatures, save_training_texts, text_features, visual_features
from orchestration.assets.metadata import device_metadata, write_quarantine
from orchestration.resources import (
    WorkspaceResource,
)


class FeaturesConfig(Config):
    """Frozen backbones used to precompute frame and text features."""

    frame_encoder: str = "efficientnet-lite0"
    text_encoder: str = "all-MiniLM-L6-v2"
    device: str = "auto"  # auto: the first CUDA device when present, else the CPU (ONNX Runtime frame encoder)


def features_lineage(features_path: str | Path) -> dict[str, Any]:
    """The lineage written beside a `backbone_features` file (its backbones' ids and the training set's lineage)."""
    return json.loads(Path(features_path).with_suffix(".json").read_text())


@asset(
    group_name="model",
    code_version="2",
    description=(
        "Frozen-backbone features: 8 frame vectors and 33 text token states per item (frames cached by media hash), "
        "and beside them the text states a training clip trains on where they differ (its out-of-fold summary)."
    ),
)
def backbone_features(
    context: AssetExecutionContext,
    config: FeaturesConfig,
    training_set: pd.DataFrame,
    workspace: WorkspaceResource,
) -> Output[str]:
    """Encodes every item's frames and text; media that fail to decode are quarantined, not dropped silently."""
    started = time.perf_counter()
    device = device_metadata(config.device)
    frame_encoder = build_frame_encoder(config.frame_encoder, device=device["resolved_device"])
    # With a GPU the encoder outruns one decoding thread: decode on every core (resizing is on the GPU).
    workers = (os.cpu_count() or 1) if device["resolved_device"].startswith("cuda") else 1
    frames, failures = visual_features(
        list(training_set["media_path"]),
        frame_encoder,
        workspace.folder("feature_cache"),
        prefetch=max(8, 4 * workers),
        decode_workers=workers,
    )
    visual_seconds = time.perf_counter() - started
    text_encoder = build_text_encoder(config.text_encoder, device=device["resolved_device"])
    states, mask = text_features(list(training_set["text"]), text_encoder)
    failed_rows = {index for index, _ in failures}
    keep = np.array([i not in failed_rows for i in range(len(training_set))])
    quarantine = [{"item_id": training_set["item_id"].iloc[index], "reason": reason} for index, reason in failures]
    quarantine_path = workspace.run_path(context.run.run_id, "quarantine", "backbone_features.jsonl")
    write_quarantine(quarantine_path, quarantine)
    workspace.publish(quarantine_path, "quarantine", "backbone_features.jsonl")
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
    path = workspace.run_path(context.run.run_id, "features", "features.npz")
    features.save(path)
    own = kept[kept["train_text"] != kept["text"]]
    train_states, train_mask = text_features(list(own["train_text"]), text_encoder)
    training_texts = save_training_texts(path, list(own["item_id"]), train_states, train_mask)
    (path.with_suffix(".json")).write_text(
        json.dumps({"frame_encoder": frame_encoder.id, "text_encoder": text_encoder.id, **training_set.attrs}, default=str)
    )
    for published in (path, path.with_suffix(".json"), training_texts):
        workspace.publish(published, "features", published.name)
    return Output(
        str(path),
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
            "path": MetadataValue.path(str(path)),
        },
    )
