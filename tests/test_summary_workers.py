"""Summaries by two engine processes over disjoint shard groups equal those of one engine (the packaged
llama.cpp model, real calls), and every transcript costs one LLM call in all."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from ampere.asr.workers import shard_groups, worker_environments
from ampere.data.synth import generate
from orchestration.definitions import build_defs, dataset_key
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB
from orchestration.summary_shards import ALL_SHARDS_TAGS

SELECTION = [AssetKey("raw_items"), AssetKey("asr_summaries")]


def test_shard_groups_and_gpu_pinning() -> None:
    assert shard_groups(["00", "01", "02", "03", "04"], 2) == [["00", "02", "04"], ["01", "03"]]
    assert shard_groups(["07"], 4) == [["07"]]
    assert worker_environments("vllm", 2, 2, gpus=4) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert worker_environments("llamacpp", 3, 1, gpus=8) == [{}, {}, {}]
    with pytest.raises(ValueError, match="need 4 GPUs, 2 here"):
        worker_environments("vllm", 2, 2, gpus=2)


def test_two_summary_workers_give_the_summaries_of_one_engine(tmp_path) -> None:
    data = generate(tmp_path / "data", products=6, seed=5, clip_frames=4)
    summaries, metadata = {}, {}
    for workers in (1, 2):
        workspace = tmp_path / f"workspace-{workers}"  # its own summary cache: every transcript is a miss
        defs = build_defs(
            workspace=str(workspace),
            dataset=str(data),
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
            artifact_root=str(tmp_path / "artifacts"),
        )
        # One thread per engine in both runs: llama.cpp's answers can depend on its thread count
        # (measured: 1 of 10 answers here differed between 1 and 2 threads).
        summarizer = {"workers": workers, "n_threads": 1, "cache_path": str(workspace / "summary_cache.sqlite")}
        result = execute_in_process(
            defs.resolve_job_def(PIPELINE_JOB),
            run_config={"resources": {"summarizer": {"config": summarizer}}},
            instance=DagsterInstance.ephemeral(),
            asset_selection=SELECTION,
            tags=ALL_SHARDS_TAGS,
        )
        assert result.success
        files = sorted((workspace / "summaries" / dataset_key(str(data)) / "asr_summaries").glob("shard-*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files]).sort_values("item_id").reset_index(drop=True)
        summaries[workers] = frame[["item_id", "status", "summary", "llm", "tagger"]]
        metadata[workers] = result.asset_materializations_for_node("asr_summaries")[0].metadata  # the run's figures
    pd.testing.assert_frame_equal(summaries[1], summaries[2])
    assert (summaries[2]["status"] == "ok").sum() > 0
    assert metadata[2]["run_llm_calls"].value == metadata[1]["run_llm_calls"].value > 0
    read_back = (summaries[2]["status"] != "empty").sum()  # an empty transcript is never sent nor cached
    assert metadata[2]["run_cache_hits"].value == read_back  # the final pass read every summary back
    table = metadata[2]["run_workers"].value
    assert table.count("\n") == 3  # header, rule and two workers
