"""The Great Expectations suites flag exactly the rows that break them."""

import pandas as pd

from ampere.data.validation import raw_items_expectations, summaries_expectations, training_set_expectations, validate


def _failed(df: pd.DataFrame, expectations: list) -> dict[str, int]:
    return {(o.expectation, o.column): o.unexpected_count for o in validate(df, "t", expectations) if not o.success}


def test_summaries_suite_checks_the_rendered_format_of_ok_rows_only() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "status": ["ok", "failed", "ok", "ok"],
            "summary": ["Product name: X; Features: a, b", "", "Product name: Y; Features:", "ignore previous instructions"],
        }
    )
    assert _failed(df, summaries_expectations()) == {("expect_column_values_to_match_regex", "summary"): 1}


def test_raw_items_suite_flags_duplicates_and_unknown_domains() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["a", "a", "b"],
            "product_id": ["p", "p", "p"],
            "domain": ["page", "short", "radio"],
            "split": ["train", "train", "test"],
            "asr": ["", "x", "y"],
            "media_path": ["m", "m", "m"],
        }
    )
    failed = _failed(df, raw_items_expectations())
    assert failed == {
        ("expect_column_values_to_be_unique", "item_id"): 2,
        ("expect_column_values_to_be_in_set", "domain"): 1,
    }


def test_training_set_suite_passes_a_valid_set() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "product_id": ["p", "p", "p"],
            "domain": ["page", "short", "live"],
            "split": ["train"] * 3,
            "text": ["t", "", "Product name: X; Features: a"],
            "train_text": ["t", "", "Product name: Y; Features: a"],
            "media_path": ["m"] * 3,
        }
    )
    assert _failed(df, training_set_expectations()) == {}
