"""End-to-end fine-tuning on CPU with tiny backbones: gradients reach both backbones, their learning-rate
factors act, and the saved model embeds raw media exactly as training's backbones and tower did."""

import os
from dataclasses import replace

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_backbones import COLOURS, TEXTS, tiny_clip, toy_media

from ampere.data.frames import MediaError
from ampere.models import AmpereTower, TowerConfig
from ampere.models.backbones import BACKBONE_FILES, FINETUNED, base_id, encoders_from_ids, save_finetuned, weights_digest
from ampere.models.encoder_io import save_tower
from ampere.models.features import ItemFeatures
from ampere.serve.pyfunc import MODEL_CONFIG, EncoderModel
from ampere.training.evaluator import embed
from ampere.training.finetune import EndToEnd, EndToEndInputs, EndToEndSpec, MediaBatches, features_with, unfreeze
from ampere.training.launch import run_torchrun
from ampere.training.losses import cross_domain_loss
from ampere.training.train import TrainConfig, train_tower

pytestmark = pytest.mark.usefixtures("one_thread")
DOMAINS = ("page", "short", "live")


@pytest.fixture
def toy(tmp_path):
    """(inputs with fresh tiny-CLIP backbones, the toy items' features from them, the backbone ids)."""
    tiny_clip(tmp_path / "clip")
    ids = f"hf-vision:{(tmp_path / 'clip').resolve()}", f"hf-text:{(tmp_path / 'clip').resolve()}"
    media = toy_media(tmp_path)
    keys = [(p, d) for p in range(len(COLOURS)) for d in DOMAINS]
    item_ids = [f"{d}-{p}" for p, d in keys]
    inputs = EndToEndInputs(
        *encoders_from_ids(*ids, trainable=True),
        media={i: str(media[k]) for i, k in zip(item_ids, keys, strict=True)},
        texts={i: TEXTS[d][p] for i, (p, d) in zip(item_ids, keys, strict=True)},
    )
    empty = ItemFeatures(
        item_ids=item_ids,
        product_ids=[f"prod{p}" for p, _ in keys],
        domains=[d for _, d in keys],
        splits=["train" if p < 2 else "val" for p, _ in keys],
        frames=np.zeros((len(keys), 8, 1)),
        text=np.zeros((len(keys), 1, 1)),
        text_mask=np.zeros((len(keys), 1), dtype=bool),
    )
    return inputs, features_with(empty, inputs), ids


def _tower_config(features: ItemFeatures) -> TowerConfig:
    return TowerConfig(
        visual_dim=features.frames.shape[-1],
        text_dim=features.text.shape[-1],
        text_tokens=features.text.shape[1],
        width=32,
        temporal_layers=1,
        fusion_layers=1,
        heads=4,
        out_dim=16,
        dropout=0.0,
    )


def test_the_end_to_end_path_computes_the_features_path_and_sends_gradients_to_both_backbones(toy):
    inputs, features, _ = toy
    torch.manual_seed(0)
    model = EndToEnd(unfreeze(inputs), AmpereTower(_tower_config(features)))
    rows = np.array([0, 3, 1, 4, 2, 5])  # products 0 and 1: page, then short, then live
    pixels, frame_rows, tokens = MediaBatches(features, inputs).batch(rows)
    pages = [i for i, row in enumerate(rows) if features.domains[row] == "page"]
    assert pixels.shape[0] == len(pages) + 3 * (len(rows) - len(pages))  # each distinct frame once (clips: 3)
    assert all(len(set(frame_rows[i].tolist())) == 1 for i in pages)
    model.eval()
    out = model(pixels, frame_rows, tokens)
    # The same function as backbone features then tower (text features are stored in fp16).
    np.testing.assert_allclose(out.fused.detach().numpy(), embed(model.tower, features.subset(rows)), atol=2e-3)
    assert not tokens["keep"][rows.tolist().index(4)].any()  # short-1 has an empty transcript: no text token
    loss, _ = cross_domain_loss(*out.fused.split(2), 0.05)
    loss.backward()
    for backbone in (model.frame_backbone, model.text_backbone):
        grads = [p.grad for p in backbone.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_finetuning_moves_each_backbone_at_its_factor_and_names_the_weights(toy):
    inputs, features, (frame_id, text_id) = toy
    before = weights_digest(inputs.frame_encoder.network), weights_digest(inputs.text_encoder.network)
    cfg = TrainConfig(steps=4, batch_size=2, eval_every=2, lr=1e-2, warmup_steps=1, finetune=True, frame_lr_factor=0.0)
    result = train_tower(features, _tower_config(features), cfg, backbones=inputs)
    frame, text = result.backbones.frame_encoder, result.backbones.text_encoder
    assert weights_digest(frame.network) == before[0]  # factor 0: the frame backbone did not move
    assert weights_digest(text.network) != before[1]
    assert (frame.id, text.id) == (f"{frame_id}{FINETUNED}{before[0]}", f"{text_id}{FINETUNED}{weights_digest(text.network)}")
    assert not any(p.requires_grad for p in text.network.parameters()) and not text.network.training
    assert len(result.history) == 2 and all(np.isfinite(row["loss"]) for row in result.history)

    frozen = train_tower(features, _tower_config(features), replace(cfg, finetune=False))
    assert frozen.backbones is None
    with pytest.raises(ValueError, match="exactly when cfg.finetune"):
        train_tower(features, _tower_config(features), cfg)


def test_the_saved_model_embeds_raw_media_as_training_did(toy, tmp_path):
    inputs, features, _ = toy
    cfg = TrainConfig(steps=2, batch_size=2, eval_every=1, lr=1e-2, warmup_steps=1, finetune=True, frame_lr_factor=1.0)
    tower_cfg = _tower_config(features)
    result = train_tower(features, tower_cfg, cfg, backbones=inputs)
    trained = result.backbones
    expected = embed(result.tower, features_with(features, trained))
    lineage = {"frame_encoder": trained.frame_encoder.id, "text_encoder": trained.text_encoder.id, "text_source": "raw"}
    folder = save_tower(tmp_path / "encoder", result.tower, tower_cfg, extra=lineage)
    save_finetuned(folder, trained.frame_encoder, trained.text_encoder)
    mlflow.pyfunc.save_model(
        tmp_path / "model", python_model=EncoderModel(), artifacts={"encoder": str(folder)}, model_config=MODEL_CONFIG
    )
    rows = pd.DataFrame(
        {
            "domain": features.domains,
            "media": [trained.media[i] for i in features.item_ids],
            "text": [trained.texts[i] for i in features.item_ids],
        }
    )
    root = os.path.commonpath(list(rows["media"]))  # a trusted host: the pyfunc reads files under it
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"), model_config={"media_root": root}).predict(rows)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # The packaged (not fine-tuned) backbones embed differently: the fine-tuned weights are what serve.
    packaged_backbones = encoders_from_ids(base_id(lineage["frame_encoder"]), base_id(lineage["text_encoder"]))
    packaged = embed(result.tower, features_with(features, EndToEndInputs(*packaged_backbones, trained.media, trained.texts)))
    assert np.abs(packaged - expected).max() > 1e-3

    state = torch.load(folder / BACKBONE_FILES["text"], weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, folder / BACKBONE_FILES["text"])
    with pytest.raises(ValueError, match="has the id"):
        encoders_from_ids(lineage["frame_encoder"], lineage["text_encoder"], folder)
    with pytest.raises(ValueError, match="weights come with its model folder"):
        encoders_from_ids(lineage["frame_encoder"], lineage["text_encoder"])


def _without_key_bias(name: str, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` less its attention key bias: its true gradient is 0 (softmax ignores a shift shared by every
    key), so Adam turns rounding noise there into full-size steps that differ between runs."""
    if name.endswith("k_proj.bias"):
        return weight[:0]
    if name.endswith("in_proj_bias"):
        third = len(weight) // 3
        return torch.cat([weight[:third], weight[2 * third :]])
    return weight


def test_torchrun_fine_tunes_on_two_processes_as_one_process_does(toy, tmp_path, monkeypatch) -> None:
    """Two gloo ranks, each on half of every batch (DDP over backbones and tower), train the backbones
    and tower that one process trains on the whole batches."""
    inputs, features, (frame_id, text_id) = toy
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    features.save(tmp_path / "features")
    spec = EndToEndSpec(frame_id, text_id, inputs.media, inputs.texts)
    cfg = TrainConfig(steps=3, batch_size=2, eval_every=3, lr=1e-2, warmup_steps=1, finetune=True, frame_lr_factor=1.0)
    tower_cfg = _tower_config(features)
    ranks = run_torchrun(tmp_path / "features", tower_cfg, replace(cfg, nproc_per_node=2), tmp_path / "run", spec)
    one = train_tower(features, tower_cfg, cfg, backbones=spec.build("cpu"))
    assert ranks.best_step == one.best_step and ranks.history[0]["loss"] == pytest.approx(one.history[0]["loss"], abs=1e-4)
    pairs = [(ranks.tower, one.tower)]
    pairs += [(getattr(ranks.backbones, k).network, getattr(one.backbones, k).network) for k in ("frame_encoder", "text_encoder")]
    for theirs, ours in pairs:
        for (name, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(), strict=True):
            a, b = _without_key_bias(name, a), _without_key_bias(name, b)
            torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-4, msg=lambda m, n=name: f"{n}: {m}")
    assert ranks.backbones.frame_encoder.id.startswith(f"{frame_id}{FINETUNED}")


def test_a_media_file_that_breaks_during_fine_tuning_is_named_with_its_item(toy, tmp_path) -> None:
    inputs, features, _ = toy
    media = {**inputs.media, "live-1": str(tmp_path / "gone.png")}
    broken = EndToEndInputs(inputs.frame_encoder, inputs.text_encoder, media, inputs.texts)
    with pytest.raises(MediaError, match=r"gone\.png: item live-1: .*file not found"):
        MediaBatches(features, broken).batch(np.array([0, 5]))
    with pytest.raises(MediaError, match=r"item live-1: .*\(1 items failed\)"):
        features_with(features, broken)
