"""Blocking data-quality checks: Great Expectations 1.x suites run inside Dagster asset checks."""

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from ampere.validation import training_set_expectations, validate
from orchestration.assets import training_set


@asset_check(
    asset=training_set, blocking=True, description="Great Expectations suite on the training set; a failure stops training."
)
def training_set_expectations_pass(training_set: pd.DataFrame) -> AssetCheckResult:
    """Runs the training-set suite and lists every expectation's result."""
    outcomes = validate(training_set, "training_set", training_set_expectations())
    table = pd.DataFrame([o.__dict__ for o in outcomes])
    failed = [o for o in outcomes if not o.success]
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "expectations": len(outcomes),
            "failed": len(failed),
            "results": MetadataValue.md(table.to_markdown(index=False)),
        },
    )


PIPELINE_CHECKS = [training_set_expectations_pass]
