"""The promotion rule: a challenger replaces the champion only if it is strictly better on validation items."""

from __future__ import annotations

from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower
from ampere.retrieval.eval import evaluate
from ampere.training.train import embed


def validation_mr1(tower: AmpereTower, features: ItemFeatures) -> float:
    """mR1 of ``tower`` on the validation items of ``features`` (no other item is embedded)."""
    val = features.only(["val"])
    return evaluate(embed(tower, val), val.product_ids, val.domains, val.splits, split="val")["mR1"]


def decide_promotion(
    challenger_mr1: float, champion_mr1: float | None, force: bool = False, incomparable: str = ""
) -> tuple[bool, str]:
    """(promote?, reason). Both figures must come from the same validation items; ties keep the champion.

    `incomparable` names what differs between the two models' inputs (e.g. their text source): such
    a champion cannot be re-evaluated on the challenger's inputs, so only `force` promotes.
    """
    if champion_mr1 is None and not incomparable:
        return True, "no champion yet"
    if incomparable:
        return force, f"champion not comparable ({incomparable})" + (" (forced)" if force else "")
    better = challenger_mr1 > champion_mr1
    reason = f"challenger mR1 {challenger_mr1:.2f} vs champion {champion_mr1:.2f} on the same validation items"
    if force and not better:
        return True, reason + " (forced)"
    return better, reason
