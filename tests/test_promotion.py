"""The promotion rule."""

from ampere.promotion import decide_promotion


def test_first_model_is_promoted() -> None:
    assert decide_promotion(1.0, None) == (True, "no champion yet")


def test_worse_or_equal_challenger_is_kept_out() -> None:
    assert decide_promotion(10.0, 20.0)[0] is False
    assert decide_promotion(20.0, 20.0)[0] is False


def test_better_challenger_is_promoted_and_force_overrides() -> None:
    assert decide_promotion(20.5, 20.0)[0] is True
    promote, reason = decide_promotion(10.0, 20.0, force=True)
    assert promote and reason.endswith("(forced)")


def test_a_champion_with_other_inputs_is_not_compared() -> None:
    promote, reason = decide_promotion(50.0, None, incomparable="text_source: none vs summary")
    assert promote is False and "not comparable" in reason
    assert decide_promotion(50.0, None, force=True, incomparable="text_source: none vs summary")[0] is True
