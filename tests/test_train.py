from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from ampere.models import TowerConfig
from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower
from ampere.retrieval.eval import evaluate
from ampere.training.batches import ResidentFeatures, batch_rows, feature_tensors, product_items
from ampere.training.evaluator import embed, embed_branches
from ampere.training.fusion_weight import fit_visual_weight
from ampere.training.objective import batch_loss
from ampere.training.optimizer import lr_factor, param_groups
from ampere.training.train import TrainConfig, train_tower

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
    """Page features per product; short/live items are noisy copies; the last 4 products are val."""
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
            splits.append("train" if p < products - 4 else "val")
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


CFG = TrainConfig(steps=36, batch_size=6, lr=2e-3, warmup_steps=3, eval_every=3, patience=0, seed=3)


def test_product_items_skips_incomplete_products():
    feats = synthetic()
    groups = product_items(feats)
    assert len(groups) == 16  # "orphan" has no short/live item
    page, short, live = groups[0]
    assert [feats.domains[i] for i in (*page, *short, *live)] == ["page", "short", "live"]


def test_batch_rows_walk_permutations_of_distinct_products():
    products = product_items(synthetic())
    seen = []
    for step in range(4):  # 16 products, batches of 4: one pass
        chosen, rows = batch_rows(products, 4, seed=1, step=step)
        assert len(set(chosen)) == 4 and len(rows) == 12
        assert [rows[d * 4 + i] in products[p][d] for d in range(3) for i, p in enumerate(chosen)] == [True] * 12
        seen += list(chosen)
    assert sorted(seen) == list(range(16))
    np.testing.assert_array_equal(batch_rows(products, 4, 1, 5)[1], batch_rows(products, 4, 1, 5)[1])


def test_training_reduces_loss_validates_and_is_deterministic():
    feats = synthetic()
    seen = []
    result = train_tower(feats, TOWER, CFG, on_eval=seen.append)
    history = result.history
    assert seen == history and [row["step"] for row in history] == list(range(3, 37, 3))
    parts = {"loss_ps", "loss_pl", "loss_sl", "loss_tv", "loss_vv", "loss_tt"}
    assert set(history[0]) == {"step", "loss", "temperature", "lr", "val_mR1", "val_mMRR", "val_loss", "best_val_mR1"} | parts
    weights = {"loss_tv": CFG.align_tv, "loss_vv": CFG.align_vv, "loss_tt": CFG.align_tt}
    for row in history:
        total = sum(row[k] * weights.get(k, 1.0) for k in parts)
        assert row["loss"] == pytest.approx(total, rel=1e-5)
        assert row["temperature"] == CFG.temperature
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    assert history[-1]["lr"] < CFG.lr
    # The returned weights are those of the best validation evaluation: mR1, then mMRR (earliest on ties).
    best = max(history, key=lambda row: (row["val_mR1"], row["val_mMRR"]))
    assert (result.best_step, result.best_val_mR1, result.best_val_mMRR) == (best["step"], best["val_mR1"], best["val_mMRR"])
    val = feats.only(["val"])
    chosen = evaluate(embed(result.tower, val), val.product_ids, val.domains, val.splits, split="val")
    assert (chosen["mR1"], chosen["mMRR"]) == (best["val_mR1"], best["val_mMRR"])
    assert any("validation has 4 products" in warning for warning in result.warnings)  # 4 val products: warned

    again = train_tower(feats, TOWER, CFG)
    assert again.history == history
    emb = embed(result.tower, feats)
    np.testing.assert_array_equal(emb, embed(again.tower, feats))
    np.testing.assert_allclose(embed(result.tower, feats, batch_size=5), emb, atol=1e-5)
    assert emb.shape == (len(feats), 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_early_stopping_after_patience_evaluations_without_gain():
    feats = synthetic()
    result = train_tower(feats, TOWER, replace(CFG, steps=300, patience=2))
    assert result.stopped_early and result.steps_done < 300
    assert result.steps_done == result.history[-1]["step"]
    # The last improvement came just before the two evaluations without gain.
    assert result.history[-3]["step"] == result.best_step
    assert all(row["val_mR1"] <= result.best_val_mR1 for row in result.history[-2:])


@pytest.mark.parametrize("alignment", ["fusion", "branch"])
def test_alignment_variants_act_where_they_say(alignment):
    """Branch alignment acts before fusion: its terms send no gradient into the fusion transformer."""
    feats = synthetic()
    torch.manual_seed(0)
    tower = AmpereTower(TOWER)
    chosen, rows = batch_rows(product_items(feats.only(["train"])), 6, seed=0, step=0)
    out = tower.encode_parts(*feature_tensors(feats.only(["train"]), rows, torch.device("cpu")))
    _, parts = batch_loss(out, torch.from_numpy(chosen), 0.05, torch.nn.ModuleDict(), replace(CFG, alignment=alignment))
    (parts["loss_tv"] + parts["loss_vv"] + parts["loss_tt"]).backward()
    fusion_grad = sum(float(p.grad.abs().sum()) for p in tower.fusion.parameters() if p.grad is not None)
    assert (fusion_grad == 0.0) == (alignment == "branch")
    assert float(tower.visual_proj.weight.grad.abs().sum()) > 0 and float(tower.head.weight.grad.abs().sum()) > 0
    result = train_tower(feats, TOWER, replace(CFG, steps=6, alignment=alignment))
    assert np.isfinite(result.history[-1]["loss"])
    with pytest.raises(ValueError, match="alignment must be one of"):
        TrainConfig(alignment="late")


def test_training_refuses_test_items_and_ignores_nothing_else():
    feats = synthetic()
    with_test = synthetic()
    with_test.splits = ["test" if pid == "prod0" else s for pid, s in zip(with_test.product_ids, with_test.splits, strict=True)]
    with pytest.raises(ValueError, match=r"train and val items only; got splits \['test'\]"):
        train_tower(with_test, TOWER, CFG)
    # Without the test product, training runs; only train and val rows are read.
    assert train_tower(with_test.only(["train", "val"]), TOWER, replace(CFG, steps=3)).steps_done == 3
    assert len(feats.only(["val"])) == 12


def test_padding_columns_are_cut_without_changing_outputs():
    feats = synthetic()
    feats.text_mask[:, 2:] = False  # no item has text beyond token 2
    tower = train_tower(feats, TOWER, replace(CFG, steps=3)).tower
    rows = np.arange(len(feats))
    frames, text, mask = feature_tensors(feats, rows, torch.device("cpu"))
    assert text.shape[1] == 2 and mask.shape[1] == 2
    full = tower(*(torch.from_numpy(a) for a in (feats.frames, feats.text.astype(np.float32), feats.text_mask)))
    np.testing.assert_allclose(tower(frames, text, mask).detach().numpy(), full.detach().numpy(), atol=1e-5)


def test_too_few_train_or_val_products():
    feats = synthetic()
    with pytest.raises(ValueError, match="at least 2 train"):
        train_tower(feats.subset([0, 1, 2, *range(36, 48)]), TOWER, CFG)
    with pytest.raises(ValueError, match="at least 2 validation"):
        train_tower(feats.subset(list(range(39))), TOWER, CFG)


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(19, 4, 20) < 0.01


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
        steps=4,
        batch_size=4,
        lr=1e-2,
        eval_every=2,
        seed=2,
        align_tv=0.0,
        learnable_temperature=True,
        cosface_weight=0.1,
        lr_factors={"visual_proj": 0.1},
    )
    result = train_tower(feats, TOWER, cfg)
    tower, history = result.tower, result.history
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
        train_tower(feats, TOWER, TrainConfig(steps=1, lr_factors={"no_such_layer": 0.1}))


def test_batches_gathered_on_the_device_equal_those_gathered_on_the_host():
    """The training loop gathers its batches from device-resident features; on the CPU they are
    exactly the host-gathered ones (dtype, padding cut and values), so CPU results are unchanged."""
    features = synthetic()
    resident = ResidentFeatures.of(features, torch.device("cpu"))
    for rows in (np.array([3, 0, 7]), np.array([2]), np.arange(len(features))):
        for ours, host in zip(resident.batch(rows), feature_tensors(features, rows, torch.device("cpu")), strict=True):
            assert ours.dtype == host.dtype and torch.equal(ours, host)


def test_validation_warnings_name_a_small_saturated_or_tied_split():
    from ampere.training.selection import validation_warnings

    rows = lambda *scores: [{"val_mR1": r1, "val_mMRR": mrr} for r1, mrr in scores]  # noqa: E731
    assert validation_warnings(rows((40.0, 50.0), (45.0, 52.0)), products=30) == []
    small, saturated, tied = (
        validation_warnings(rows((40.0, 50.0), (45.0, 52.0)), products=5),
        validation_warnings(rows((90.0, 95.0), (100.0, 100.0)), products=30),
        validation_warnings(rows((100.0, 100.0), (100.0, 100.0), (100.0, 100.0)), products=30),
    )
    assert len(small) == 1 and "5 products" in small[0] and "20.0 R@1 points" in small[0]
    assert len(saturated) == 1 and "saturated" in saturated[0]
    assert len(tied) == 2 and "every one of the 3 validation evaluations tied" in tied[1]


def test_modality_dropout_masks_one_whole_branch_of_a_share_of_items_reproducibly():
    from ampere.training.modality_dropout import drop_modalities, modality_drops

    frames_dropped, text_dropped = modality_drops(0.4, seed=3, step=5, rows=3000)
    assert not (frames_dropped & text_dropped).any()
    assert 0.17 < frames_dropped.mean() < 0.23 and 0.17 < text_dropped.mean() < 0.23
    again = modality_drops(0.4, seed=3, step=5, rows=3000)
    assert (again[0] == frames_dropped).all() and not (modality_drops(0.4, 3, 6, 3000)[0] == frames_dropped).all()
    assert not modality_drops(0.0, 3, 5, 10)[0].any() and not modality_drops(0.0, 3, 5, 10)[1].any()
    frames, mask = torch.ones(4, 2, 3), torch.ones(4, 5, dtype=torch.bool)
    dropped_frames, dropped_mask = drop_modalities(frames, mask, np.array([1, 0, 0, 0], bool), np.array([0, 1, 0, 0], bool))
    assert dropped_frames[0].abs().sum() == 0 and dropped_frames[1:].eq(1).all() and frames.eq(1).all()
    assert not dropped_mask[1].any() and dropped_mask[[0, 2, 3]].all()

    feats = synthetic()
    result = train_tower(feats, TOWER, replace(CFG, modality_dropout=0.5, steps=9))
    plain = train_tower(feats, TOWER, replace(CFG, steps=9))
    assert result.history != plain.history  # the drops change training...
    assert train_tower(feats, TOWER, replace(CFG, modality_dropout=0.5, steps=9)).history == result.history  # ...reproducibly
    with pytest.raises(ValueError, match="modality_dropout"):
        TrainConfig(modality_dropout=1.0)


def _branch_features(products: int, val: int, rng: np.random.Generator) -> ItemFeatures:
    """Three items per product, all val products from ``products - val`` on; features are noise (set by the test)."""
    n = 3 * products
    return ItemFeatures(
        [f"i{k}" for k in range(n)],
        [f"p{k // 3}" for k in range(n)],
        ["page", "short", "live"] * products,
        ["train" if k // 3 < products - val else "val" for k in range(n)],
        rng.normal(size=(n, 8, 16)).astype(np.float32),
        rng.normal(size=(n, 4, 8)).astype(np.float16),
        np.ones((n, 4), dtype=bool),
    )


@pytest.mark.parametrize("signal", ["visual", "text"])
def test_late_fusion_weight_goes_to_the_branch_that_finds_the_product(signal):
    rng = np.random.default_rng(5)
    val = _branch_features(20, 20, rng)
    base = np.repeat(rng.normal(size=(20, 8)), 3, axis=0)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    informative, noise = unit(base + 0.8 * rng.normal(size=base.shape)), unit(rng.normal(size=base.shape))
    visual, text = (informative, noise) if signal == "visual" else (noise, informative)
    weight, score = fit_visual_weight(visual, text, np.ones(60, dtype=bool), val)
    assert weight >= 0.7 if signal == "visual" else weight <= 0.3
    assert 0 < score.mR1 < 100


def test_late_fused_tower_keeps_the_weight_fit_on_its_own_validation_branches():
    feats = _branch_features(30, 10, np.random.default_rng(5))
    signal = np.repeat(np.random.default_rng(6).normal(size=(30, 1, 16)), 3, axis=0)
    feats.frames += signal.astype(np.float32)  # the frames carry the product
    result = train_tower(feats, replace(TOWER, fusion="late"), replace(CFG, fusion="late", steps=12))
    val = feats.only(("val",))
    assert [row["visual_weight"] for row in result.history]
    weight, _ = fit_visual_weight(*embed_branches(result.tower, val), val)
    assert float(result.tower.visual_weight) == pytest.approx(weight)
    assert float(result.tower.visual_weight) in [pytest.approx(row["visual_weight"]) for row in result.history]
