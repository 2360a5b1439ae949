"""The promotion rule."""

import numpy as np
import pandas as pd

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


def test_a_promotion_cut_between_its_two_steps_is_reported_and_completed(tmp_path) -> None:
    """CURRENT moves first, the champion alias after: when a crash falls between, `ampere status`'s check
    names the disagreement and `align_champion` (run by the next promotion or refresh) completes it."""
    from ampere.retrieval.index import build_indexes
    from ampere.retrieval.index_store import IndexStore
    from mlflow import MlflowClient
    from orchestration.mlflow_logging import align_champion, champion_disagreement
    from orchestration.resources import MlflowResource

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    resource = MlflowResource(tracking_uri=uri, registered_model="ampere-encoder--cut")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(resource.registered_model)
    for _ in range(2):
        client.create_model_version(resource.registered_model, source=str(tmp_path))
    store = IndexStore(tmp_path / "index_store")
    rng = np.random.default_rng(0)
    for version in ("1", "2"):
        vectors = rng.normal(size=(4, 8)).astype(np.float32)
        frame = pd.DataFrame({"item_id": list("abcd"), "product_id": list("abcd"), "domain": "page", "embedding": list(vectors)})
        about = {"registered_model": resource.registered_model, "model_version": version}
        store.publish(lambda folder, f=frame, a=about: build_indexes(f, folder, about=a), f"m{version}")
    store.swap("m1")
    client.set_registered_model_alias(resource.registered_model, "champion", "1")
    assert champion_disagreement(resource, store) is None and align_champion(resource, store) is None
    store.swap("m2")  # ... and the process died before the alias moved
    assert champion_disagreement(resource, store) == ("1", "2")
    assert "from v1 to v2" in align_champion(resource, store)
    assert str(client.get_model_version_by_alias(resource.registered_model, "champion").version) == "2"
    assert champion_disagreement(resource, store) is None
