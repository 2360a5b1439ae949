"""Great Expectations 1.x suites for AMPere tables, run in-memory on pandas DataFrames.

Each suite is a list of expectations; `validate` returns one row per expectation so that the
caller (a blocking Dagster asset check, a CLI, a test) can show every result, not just a verdict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402  (analytics must be off before import)
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from ampere.data.format import DOMAINS, MAX_ASR_CHARS, SPLITS  # noqa: E402

MAX_TEXT_CHARS = 2_000


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation."""

    expectation: str
    column: str
    success: bool
    unexpected_count: int


SUMMARY_PATTERN = r"^Product name: [^;]+; Features:( .+)?$"


def raw_items_expectations() -> list[gxe.Expectation]:
    """Expectations on the accepted raw items (after record-level quarantine)."""
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="product_id"),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValueLengthsToBeBetween(column="asr", min_value=0, max_value=MAX_ASR_CHARS),
        gxe.ExpectColumnValuesToNotBeNull(column="media_path"),
    ]


def summaries_expectations() -> list[gxe.Expectation]:
    """Expectations on LLM summaries: known statuses; every `ok` summary in the rendered format."""
    return [
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["ok", "empty", "failed", "skipped"]),
        gxe.ExpectColumnValuesToMatchRegex(
            column="summary", regex=SUMMARY_PATTERN, row_condition='status=="ok"', condition_parser="pandas"
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(column="summary", min_value=0, max_value=MAX_TEXT_CHARS),
    ]


def training_set_expectations() -> list[gxe.Expectation]:
    """Expectations every training set must meet before a model may be trained on it."""
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=3),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="product_id"),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=0, max_value=MAX_TEXT_CHARS),
        gxe.ExpectColumnValueLengthsToBeBetween(column="train_text", min_value=0, max_value=MAX_TEXT_CHARS),
        gxe.ExpectColumnValuesToNotBeNull(column="media_path"),
        gxe.ExpectColumnDistinctValuesToContainSet(column="domain", value_set=list(DOMAINS)),
    ]


def validate(df: pd.DataFrame, name: str, expectations: list[gxe.Expectation]) -> list[ExpectationOutcome]:
    """Run `expectations` on `df` with an ephemeral GX context; one outcome per expectation."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas(f"{name}-source")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(f"{name}-batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}-suite", expectations=expectations))
    result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=str(config.kwargs.get("column", "")),
                success=bool(item.success),
                unexpected_count=int((item.result or {}).get("unexpected_count", 0) or 0),
            )
        )
    return outcomes
