"""The promotion rule: a challenger replaces the champion only if it is strictly better."""

from __future__ import annotations


def decide_promotion(challenger_mr1: float, champion_mr1: float | None, force: bool = False) -> tuple[bool, str]:
    """(promote?, reason). Both figures must come from the same test items; ties keep the champion."""
    if champion_mr1 is None:
        return True, "no champion yet"
    better = challenger_mr1 > champion_mr1
    reason = f"challenger mR1 {challenger_mr1:.2f} vs champion {champion_mr1:.2f} on the same test items"
    if force and not better:
        return True, reason + " (forced)"
    return better, reason
