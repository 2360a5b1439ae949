"""The Dagster code location loads, and its job covers the whole asset graph."""

from __future__ import annotations

from dagster import AssetKey, Definitions

from orchestration.definitions import defs
from orchestration.jobs import PIPELINE_JOB

EXPECTED = {
    "raw_items",
    "asr_summaries",
    "training_set",
    "backbone_features",
    "trained_encoder",
    "embeddings",
    "faiss_index",
    "retrieval_evaluation",
    "champion_promotion",
    "quarantined_items",
}


def test_definitions_load_and_validate() -> None:
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(PIPELINE_JOB)
    keys = {key.to_user_string() for key in job.asset_layer.asset_graph.get_all_asset_keys()}
    assert keys == EXPECTED
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("trained_encoder")).parent_keys == {AssetKey("backbone_features")}
    assert defs.resolve_schedule_def("weekly_retrain").job_name == PIPELINE_JOB
    assert defs.resolve_sensor_def("dvc_data_sensor").job_name == PIPELINE_JOB
