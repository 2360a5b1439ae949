"""The promotion rule: a challenger replaces the champion only if it is strictly better."""

from __future__ import annotations


def decide_promotion(
    challenger_mr1: float, champion_mr1: float | None, force: bool = False, incomparable: str = ""
) -> tuple[bool, str]:
    """(promote?, reason). Both figures must come from the same test items; ties keep the champion.

    `incomparable` names what differs between the two models' inputs (e.g. their text source): such
    a champion cannot be re-evaluated on the challenger's inputs, so only `force` promotes.
    """
    if champion_mr1 is None and not incomparable:
        return True, "no champion yet"
    if incomparable:
        return force, f"champion not comparable ({incomparable})" + (" (forced)" if force else "")
    better = challenger_mr1 > champion_mr1
    reason = f"challenger mR1 {challenger_mr1:.2f} vs champion {champion_mr1:.2f} on the same test items"
    if force and not better:
        return True, reason + " (forced)"
    return better, reason
