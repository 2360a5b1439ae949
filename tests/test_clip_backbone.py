"""A local Hugging Face CLIP folder as frame and text backbone: features, then the usual training path."""

import re

import numpy as np
import pytest
import torch
from tiny_backbones import COLOURS, TEXTS, tiny_clip, toy_media

from ampere.models import TowerConfig, build_frame_encoder, build_text_encoder
from ampere.models.features import ItemFeatures, text_features, visual_features
from ampere.training.evaluator import embed
from ampere.training.train import TrainConfig, train_tower

pytestmark = pytest.mark.usefixtures("one_thread")


def test_clip_folder_features_and_training(tmp_path):
    clip_dir = tmp_path / "clip"
    tiny_clip(clip_dir)
    frame_enc = build_frame_encoder(str(clip_dir))
    text_enc = build_text_encoder(str(clip_dir), max_tokens=8)
    assert frame_enc.id == f"hf-vision:{clip_dir.resolve()}" and frame_enc.id != "efficientnet-lite0@224"
    assert text_enc.id == f"hf-text:{clip_dir.resolve()}" and text_enc.id != "all-MiniLM-L6-v2"
    assert (frame_enc.dim, text_enc.dim, text_enc.length) == (24, 32, 9)

    media = toy_media(tmp_path)
    keys = [(p, d) for p in range(len(COLOURS)) for d in ("page", "short", "live")]
    frames, failures = visual_features([media[k] for k in keys], frame_enc, cache_dir=tmp_path / "cache")
    assert failures == [] and frames.shape == (12, 8, 24) and np.isfinite(frames).all()
    assert not np.allclose(frames[0], frames[3])  # two products' pages
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [re.sub(r"[^A-Za-z0-9._@-]", "_", frame_enc.id)]

    texts = [TEXTS[d][p] for p, d in keys]
    states, mask = text_features(texts, text_enc, dtype=np.float32)
    assert states.shape == (12, 9, 32) and np.isfinite(states).all()
    assert mask.any(axis=1).tolist() == [bool(t) for t in texts]
    # CLIP's text tower is causal: position 0 holds the pooled end-of-text state, not start-of-text.
    batch = text_enc.tokenizer([texts[0]], truncation=True, max_length=10, return_tensors="pt")  # BOS + 8 + EOS
    with torch.inference_mode():
        pooled = text_enc.network(**batch).pooler_output[0].numpy()
    np.testing.assert_allclose(states[0, 0], pooled, rtol=1e-5, atol=1e-6)

    features = ItemFeatures(
        item_ids=[f"{d}-{p}" for p, d in keys],
        product_ids=[f"prod{p}" for p, _ in keys],
        domains=[d for _, d in keys],
        splits=["train" if p < 2 else "val" for p, _ in keys],
        frames=frames,
        text=states,
        text_mask=mask,
    )
    tower_cfg = TowerConfig(
        visual_dim=frame_enc.dim,
        text_dim=text_enc.dim,
        text_tokens=text_enc.length,
        width=32,
        temporal_layers=1,
        fusion_layers=1,
        heads=4,
        out_dim=16,
    )
    result = train_tower(features, tower_cfg, TrainConfig(steps=4, batch_size=2, eval_every=2))
    tower, history = result.tower, result.history
    assert len(history) == 2 and all(np.isfinite(row["loss"]) for row in history)
    emb = embed(tower, features)
    assert emb.shape == (12, 16) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
