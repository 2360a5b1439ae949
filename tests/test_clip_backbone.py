"""A local Hugging Face CLIP folder as frame and text backbone: features, then the usual training path."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from ampere.models import TowerConfig, build_frame_encoder, build_text_encoder
from ampere.models.features import ItemFeatures, text_features, visual_features
from ampere.training.train import TrainConfig, embed, train_tower

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
TEXTS = {
    "page": ["red phone case", "green water bottle", "blue power bank", "yellow desk lamp"],
    "short": ["Product name: phone case; Features: red", "", "Product name: power bank; Features: 20000 mAh", ""],
    "live": ["Product name: case; Features: red, slim", "Product name: bottle", "", "Product name: lamp"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_clip(folder):
    """A randomly initialised tiny CLIP (vision + text towers), its image processor and a byte-level
    BPE tokenizer with no merges (one token per character), all saved to ``folder``."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def _media(folder):
    """Per product: a page image, and folders of 3 frames for its short and live clips."""
    paths = {}
    for p, colour in enumerate(COLOURS):
        page = folder / f"page-{p}.png"
        Image.new("RGB", (40, 30), colour).save(page)
        paths[p, "page"] = page
        for d, domain in enumerate(("short", "live")):
            clip = folder / f"{domain}-{p}"
            clip.mkdir()
            for f in range(3):
                shade = tuple(min(255, c + 20 * f + 10 * d) for c in colour)
                Image.new("RGB", (36, 36), shade).save(clip / f"{f:02d}.png")
            paths[p, domain] = clip
    return paths


def test_clip_folder_features_and_training(tmp_path):
    clip_dir = tmp_path / "clip"
    _tiny_clip(clip_dir)
    frame_enc = build_frame_encoder(str(clip_dir))
    text_enc = build_text_encoder(str(clip_dir), max_tokens=8)
    assert frame_enc.id == f"hf-vision:{clip_dir.resolve()}" and frame_enc.id != "efficientnet-lite0@224"
    assert text_enc.id == f"hf-text:{clip_dir.resolve()}" and text_enc.id != "all-MiniLM-L6-v2"
    assert (frame_enc.dim, text_enc.dim, text_enc.length) == (24, 32, 9)

    media = _media(tmp_path)
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
