"""When validation cannot choose: warnings about a training run's validation evaluations.

Every choice (early stopping, checkpoint, promotion) is made on the validation split. A split of a
few products scores 100 for every model, or moves R@1 by many points a query, so the choice is
made among ties; these warnings say so in the log, the run's metadata and MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence

# Below this many validation products one query moves a direction's R@1 by more than 5 points.
MIN_VAL_PRODUCTS = 20


def validation_warnings(history: Sequence[dict], products: int) -> list[str]:
    """Warnings for ``history`` (rows with val_mR1 and val_mMRR) over ``products`` validation products."""
    warnings = []
    if products < MIN_VAL_PRODUCTS:
        warnings.append(
            f"validation has {products} products (one query = {100 / products:.1f} R@1 points): too few to tell models "
            f"apart; mark a larger 'val' split or raise val_fraction / min_val_products"
        )
    if history and max(row["val_mR1"] for row in history) >= 100.0:
        warnings.append("validation is saturated: the best validation mR1 is 100, so mR1 cannot rank models (mMRR decides)")
    scores = {(row["val_mR1"], row["val_mMRR"]) for row in history}
    if len(history) > 1 and len(scores) == 1:
        warnings.append(f"every one of the {len(history)} validation evaluations tied (mR1 {history[0]['val_mR1']:.2f})")
    return warnings
