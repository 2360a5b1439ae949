"""Blocking data-quality checks: Great Expectations 1.x suites run inside Dagster asset checks."""

import math

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from ampere.eval import DIRECTIONS
from ampere.validation import training_set_expectations, validate
from orchestration.assets import retrieval_evaluation, training_set


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


@asset_check(
    asset=retrieval_evaluation,
    blocking=True,
    description="All 18 R@K figures and mR1 are present, finite and within [0, 100]; a failure blocks promotion.",
)
def retrieval_metrics_valid(retrieval_evaluation: dict[str, float]) -> AssetCheckResult:
    """Guards promotion against a broken evaluation (missing direction, NaN, out-of-range value)."""
    expected = {f"{d}/R@{k}" for d in DIRECTIONS for k in (1, 5, 10)} | {"mR1"}
    missing = sorted(expected - set(retrieval_evaluation))
    invalid = sorted(k for k, v in retrieval_evaluation.items() if not (math.isfinite(v) and 0.0 <= v <= 100.0))
    return AssetCheckResult(
        passed=not missing and not invalid,
        severity=AssetCheckSeverity.ERROR,
        metadata={"missing": ", ".join(missing) or "none", "invalid": ", ".join(invalid) or "none"},
    )


PIPELINE_CHECKS = [training_set_expectations_pass, retrieval_metrics_valid]
