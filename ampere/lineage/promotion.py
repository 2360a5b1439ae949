"""The promotion rule: a challenger replaces the champion only if it is strictly better on validation items
(mR1, then mMRR where mR1 ties: ``ValidationScore``)."""

from __future__ import annotations

import numpy as np

from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower
from ampere.retrieval.eval import ValidationScore, evaluate
from ampere.training.evaluator import embed


def validation_score(tower: AmpereTower, features: ItemFeatures) -> ValidationScore:
    """mR1 and mMRR of ``tower`` on the validation items of ``features`` (no other item is embedded)."""
    val = features.only(["val"])
    return scored(embed(tower, val), val)


def scored(vectors: np.ndarray, val: ItemFeatures) -> ValidationScore:
    """mR1 and mMRR of ``vectors``, row-aligned with the validation items ``val``."""
    return ValidationScore.of(evaluate(vectors, val.product_ids, val.domains, val.splits, split="val"))


def decide_promotion(
    challenger: ValidationScore, champion: ValidationScore | None, force: bool = False, incomparable: str = ""
) -> tuple[bool, str]:
    """(promote?, reason). Both scores must come from the same validation items; ties keep the champion.

    `incomparable` names what differs between the two models' inputs (e.g. their text source): such
    a champion cannot be re-evaluated on the challenger's inputs, so only `force` promotes.
    """
    if champion is None and not incomparable:
        return True, "no champion yet"
    if incomparable:
        return force, f"champion not comparable ({incomparable})" + (" (forced)" if force else "")
    better = challenger > champion
    reason = f"challenger {challenger} vs champion {champion} on the same validation items"
    if force and not better:
        return True, reason + " (forced)"
    return better, reason
