"""Blocking data-quality checks: Great Expectations 1.x suites run inside Dagster asset checks."""

import math

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    MetadataValue,
    asset_check,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from ampere.data.validation import raw_items_expectations, summaries_expectations, training_set_expectations, validate
from ampere.lineage.lineaged import LineagedTable
from ampere.retrieval.eval import DIRECTIONS
from orchestration.assets import asr_summaries, raw_items, retrieval_evaluation, training_set
from orchestration.summary_shards import SUMMARY_SHARDS


def _suite_result(df: pd.DataFrame, name: str, expectations: list, **metadata: str) -> AssetCheckResult:
    """Runs a GX suite and reports every expectation's result (and ``metadata``) in the check's metadata."""
    outcomes = validate(df, name, expectations)
    failed = [o for o in outcomes if not o.success]
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "expectations": len(outcomes),
            "failed": len(failed),
            "results": MetadataValue.md(pd.DataFrame([o.__dict__ for o in outcomes]).to_markdown(index=False)),
            **metadata,
        },
    )


@asset_check(asset=raw_items, blocking=True, description="Great Expectations suite on the accepted raw items.")
def raw_items_expectations_pass(raw_items: LineagedTable) -> AssetCheckResult:
    """Blocks summarisation when the accepted items break the raw-items suite."""
    return _suite_result(raw_items.frame, "raw_items", raw_items_expectations())


@asset_check(
    asset=asr_summaries,
    blocking=True,
    partitions_def=SUMMARY_SHARDS,
    description="Great Expectations suite on each summary shard of the run: statuses, rendered format, length.",
)
def asr_summaries_expectations_pass(context: AssetCheckExecutionContext, asr_summaries: pd.DataFrame):
    """Blocks training when an `ok` summary is not in the `Product name: …; Features: …` format.

    Each shard of the run is validated on its own: a one-shard run's result is that shard's; a run
    over several shards records one evaluation per shard (its partition, so the UI shows each
    shard's own result) and returns their conjunction.
    """
    shards = context.partition_keys
    by_shard = {shard: asr_summaries[asr_summaries["shard"] == shard] for shard in shards}
    results = {
        shard: _suite_result(rows, "asr_summaries", summaries_expectations(), shard=shard) for shard, rows in by_shard.items()
    }
    if len(shards) == 1:
        yield results[shards[0]]
        return
    key = context.check_specs[0].key
    for shard, result in results.items():
        yield AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=_latest_materialization(context, key.asset_key, shard),
            severity=AssetCheckSeverity.ERROR,
            blocking=True,
            partition=shard,
        )
    failed = [shard for shard, result in results.items() if not result.passed]
    yield AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"shards": f"{shards[0]}..{shards[-1]}", "failed_shards": ", ".join(failed) or "none"},
    )


def _latest_materialization(
    context: AssetCheckExecutionContext, asset_key: AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The materialisation of `partition` that a per-shard evaluation checked (as Dagster links its own)."""
    wanted = AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition])
    records = context.instance.fetch_materializations(wanted, limit=1)
    if not records.records:
        return None
    latest = records.records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=latest.event_log_entry.run_id, storage_id=latest.storage_id, timestamp=latest.timestamp
    )


@asset_check(
    asset=training_set, blocking=True, description="Great Expectations suite on the training set; a failure stops training."
)
def training_set_expectations_pass(training_set: LineagedTable) -> AssetCheckResult:
    """Blocks training when the training set breaks its suite."""
    return _suite_result(training_set.frame, "training_set", training_set_expectations())


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


PIPELINE_CHECKS = [
    raw_items_expectations_pass,
    asr_summaries_expectations_pass,
    training_set_expectations_pass,
    retrieval_metrics_valid,
]
