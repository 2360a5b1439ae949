"""The promotion rule."""

import numpy as np

from ampere.lineage.promotion import decide_promotion, validation_score
from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower, TowerConfig
from ampere.retrieval.eval import ValidationScore as Score


def test_first_model_is_promoted() -> None:
    assert decide_promotion(Score(1.0, 5.0), None) == (True, "no champion yet")


def test_worse_or_equal_challenger_is_kept_out() -> None:
    assert decide_promotion(Score(10.0, 90.0), Score(20.0, 30.0))[0] is False
    assert decide_promotion(Score(20.0, 30.0), Score(20.0, 30.0))[0] is False
    assert decide_promotion(Score(100.0, 100.0), Score(100.0, 100.0))[0] is False


def test_better_challenger_is_promoted_and_force_overrides() -> None:
    assert decide_promotion(Score(20.5, 1.0), Score(20.0, 50.0))[0] is True
    promote, reason = decide_promotion(Score(10.0, 1.0), Score(20.0, 1.0), force=True)
    assert promote and reason.endswith("(forced)")


def test_a_tie_on_mr1_goes_to_the_higher_mean_reciprocal_rank() -> None:
    """A saturated validation split (mR1 100 for both) still ranks models by mMRR."""
    promote, reason = decide_promotion(Score(100.0, 99.0), Score(100.0, 97.5))
    assert promote and "mMRR 99.00" in reason and "mMRR 97.50" in reason
    assert decide_promotion(Score(100.0, 97.0), Score(100.0, 97.5))[0] is False


def test_a_champion_with_other_inputs_is_not_compared() -> None:
    promote, reason = decide_promotion(Score(50.0, 60.0), None, incomparable="text_source: none vs summary")
    assert promote is False and "not comparable" in reason
    assert decide_promotion(Score(50.0, 60.0), None, force=True, incomparable="text_source: none vs summary")[0] is True


def test_validation_score_embeds_validation_items_only() -> None:
    """Train and test rows filled with NaN do not change the figures: they are never embedded."""
    rng = np.random.default_rng(0)
    splits = [split for split in ("train", "val", "test") for _ in range(4) for _ in range(3)]
    features = ItemFeatures(
        item_ids=[f"i{i}" for i in range(36)],
        product_ids=[f"p{i // 3}" for i in range(36)],
        domains=["page", "short", "live"] * 12,
        splits=splits,
        frames=rng.normal(size=(36, 8, 8)).astype(np.float32),
        text=rng.normal(size=(36, 4, 8)).astype(np.float32),
        text_mask=np.ones((36, 4), dtype=bool),
    )
    small = TowerConfig(visual_dim=8, text_dim=8, width=16, text_tokens=4, temporal_layers=1, fusion_layers=1, heads=2)
    tower = AmpereTower(small)
    clean = validation_score(tower, features)
    poisoned = features.subset(range(36))
    others = [i for i, split in enumerate(splits) if split != "val"]
    poisoned.frames[others] = np.nan
    poisoned.text[others] = np.nan
    assert np.isfinite(clean.mR1) and np.isfinite(clean.mMRR) and validation_score(tower, poisoned) == clean
