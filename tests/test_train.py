import numpy as np
import pytest

from ampere.features import ItemFeatures
from ampere.models import TowerConfig
from ampere.train import TrainConfig, _lr_factor, embed, product_items, train_tower

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
    assert set(history[0]) == {"epoch", "loss", "loss_ps", "loss_pl", "loss_sl", "lr"}
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
