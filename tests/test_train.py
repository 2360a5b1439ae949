import numpy as np
import pytest
import torch
from torch import nn

from ampere.features import ItemFeatures
from ampere.models import TowerConfig
from ampere.train import TrainConfig, _lr_factor, embed, param_groups, product_items, train_tower

TOWER = TowerConfig(
    visual_dim=16,
    text_dim=8,
    width=32,
    text_tokens=4,
    temporal_layers=1,
    fusion_layers=1,
    heads=4,
    out_dim=16,
    dropout=0.0,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(products: int = 16, seed: int = 0) -> ItemFeatures:
    """Page features per product; short/live items are noisy copies; the last 4 products are test."""
    rng = np.random.default_rng(seed)
    ids, pids, domains, splits, frames, text, mask = [], [], [], [], [], [], []
    for p in range(products):
        base_v = rng.normal(size=(1, 16))
        base_t = rng.normal(size=(4, 8))
        for domain in ("page", "short", "live"):
            noise = 0.0 if domain == "page" else 0.3
            ids.append(f"{domain}-{p}")
            pids.append(f"prod{p}")
            domains.append(domain)
            splits.append("train" if p < products - 4 else "test")
            frames.append(base_v + noise * rng.normal(size=(8, 16)))
            text.append(base_t + noise * rng.normal(size=(4, 8)))
            m = np.ones(4, dtype=bool)
            m[3] = False
            mask.append(m if (p + len(domain)) % 3 else np.zeros(4, dtype=bool))
    # A train product without a live item: must be skipped.
    ids.append("page-orphan"), pids.append("orphan"), domains.append("page"), splits.append("train")
    frames.append(rng.normal(size=(8, 16))), text.append(rng.normal(size=(4, 8))), mask.append(np.ones(4, dtype=bool))
    return ItemFeatures(
        ids,
        pids,
        domains,
        splits,
        np.array(frames, dtype=np.float32),
        np.array(text, dtype=np.float16),
        np.array(mask),
    )


CFG = TrainConfig(epochs=12, batch_size=6, lr=2e-3, warmup_epochs=1, steps_per_epoch=3, seed=3)


def test_product_items_skips_incomplete_products():
    feats = synthetic()
    groups = product_items(feats)
    assert len(groups) == 16  # "orphan" has no short/live item
    page, short, live = groups[0]
    assert [feats.domains[i] for i in (*page, *short, *live)] == ["page", "short", "live"]


def test_training_reduces_loss_and_is_deterministic():
    feats = synthetic()
    seen = []
    tower, history = train_tower(feats, TOWER, CFG, on_epoch=lambda e, row: seen.append(e))
    assert seen == list(range(CFG.epochs))
    parts = {"loss_ps", "loss_pl", "loss_sl", "loss_tv", "loss_vv", "loss_tt"}
    assert set(history[0]) == {"epoch", "loss", "temperature", "lr"} | parts
    weights = {"loss_tv": CFG.align_tv, "loss_vv": CFG.align_vv, "loss_tt": CFG.align_tt}
    for row in history:
        total = sum(row[k] * weights.get(k, 1.0) for k in parts)
        assert row["loss"] == pytest.approx(total, rel=1e-5)
        assert row["temperature"] == CFG.temperature
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    assert history[-1]["lr"] < CFG.lr

    tower2, history2 = train_tower(feats, TOWER, CFG)
    assert history2 == history
    emb = embed(tower, feats)
    np.testing.assert_array_equal(emb, embed(tower2, feats))
    np.testing.assert_allclose(embed(tower, feats, batch_size=5), emb, atol=1e-5)
    assert emb.shape == (len(feats), 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_test_items_do_not_influence_training():
    feats = synthetic()
    cfg = TrainConfig(epochs=2, batch_size=6, steps_per_epoch=2, seed=1)
    _, history = train_tower(feats, TOWER, cfg)
    changed = synthetic()
    test_rows = [i for i, s in enumerate(changed.splits) if s == "test"]
    changed.frames[test_rows] = 100.0
    _, history_changed = train_tower(changed, TOWER, cfg)
    assert history_changed == history


def test_default_steps_and_too_few_products():
    feats = synthetic()
    _, history = train_tower(feats, TOWER, TrainConfig(epochs=1, batch_size=5))
    assert len(history) == 1
    one_product = feats.subset([0, 1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        train_tower(one_product, TOWER, TrainConfig(epochs=1))


def test_lr_schedule_warmup_then_cosine():
    assert _lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert _lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert _lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert _lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert _lr_factor(19, 4, 20) < 0.01


def test_param_groups_factors_by_prefix():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    model.add_module("backbone_head", nn.Linear(2, 2))  # "backbone" must not match it
    model.add_module("head", nn.Linear(2, 1))
    model.add_module("frozen", nn.Linear(2, 2).requires_grad_(False))
    groups = param_groups(model, 0.1, {"backbone": 0.01, "backbone.1": 0.5})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"", "backbone", "backbone.1"}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-3) and by_name["backbone.1"]["lr"] == pytest.approx(0.05)
    assert by_name[""]["lr"] == 0.1 and by_name[""]["lr_factor"] == 1.0
    ids = lambda mod: {id(p) for p in mod.parameters()}  # noqa: E731
    assert {id(p) for p in by_name["backbone"]["params"]} == ids(model.backbone[0])
    assert {id(p) for p in by_name["backbone.1"]["params"]} == ids(model.backbone[1])
    assert {id(p) for p in by_name[""]["params"]} == ids(model.backbone_head) | ids(model.head)
    assert [g["name"] for g in param_groups(model, 0.1)] == [""]
    with pytest.raises(ValueError, match="match no trainable"):
        param_groups(model, 0.1, {"frozen": 0.1})
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # scales every group's own lr
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 5e-4, 0.025])


def test_objective_options_learnable_temperature_cosface_and_lr_factors():
    feats = synthetic(products=8)
    cfg = TrainConfig(
        epochs=2,
        batch_size=4,
        lr=1e-2,
        steps_per_epoch=2,
        seed=2,
        align_tv=0.0,
        learnable_temperature=True,
        cosface_weight=0.1,
        lr_factors={"visual_proj": 0.1},
    )
    tower, history = train_tower(feats, TOWER, cfg)
    assert {"loss_cosface", "loss_tv"} <= set(history[0])  # a disabled term is still reported
    for row in history:
        total = sum(row[k] for k in ("loss_ps", "loss_pl", "loss_sl"))
        total += 0.1 * (row["loss_vv"] + row["loss_tt"] + row["loss_cosface"])
        assert row["loss"] == pytest.approx(total, rel=1e-5)
        assert np.isfinite(row["loss_cosface"]) and row["loss_cosface"] > 0
    assert history[-1]["temperature"] != cfg.temperature  # it learned
    assert 0.01 <= history[-1]["temperature"] <= 1.0
    assert embed(tower, feats).shape == (len(feats), TOWER.out_dim)
    with pytest.raises(ValueError, match="match no trainable"):
        train_tower(feats, TOWER, TrainConfig(epochs=1, lr_factors={"no_such_layer": 0.1}))
