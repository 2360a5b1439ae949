"""The pipeline with `finetune: true` on tiny CLIP backbones: trained end to end by Dagster, registered in
MLflow with its backbones, and its registered model embeds raw media as the `embeddings` asset did."""

from __future__ import annotations

import os

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance
from tiny_backbones import tiny_clip

from ampere.data.format import SplitFractions
from ampere.data.synth import generate
from ampere.models.backbones import BACKBONE_FILES, FINETUNED
from mlflow import MlflowClient
from orchestration.definitions import build_defs
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB
from orchestration.summary_shards import ALL_SHARDS_TAGS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_finetuned_encoder_is_trained_registered_and_reproduced_by_its_registered_model(tmp_path, make_dvc_repo) -> None:
    tiny_clip(tmp_path / "clip")
    clip = str((tmp_path / "clip").resolve())
    generate(tmp_path / "synth", products=7, seed=3, clip_frames=8, fractions=SplitFractions(val_fraction=0.3, test_fraction=0.3))
    repo = make_dvc_repo(tmp_path / "repo", tmp_path / "synth")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    defs = build_defs(
        workspace=str(tmp_path / "workspace"),
        dataset=str(repo / "data"),
        tracking_uri=tracking_uri,
        artifact_root=str(tmp_path / "artifacts"),
        repo_dir=str(repo),
        catalogue="default",  # the registered model `ampere-encoder` and workspace/index_store
    )
    run_config = {
        "ops": {
            "asr_summaries": {"config": {"run_llm": False}},
            "training_set": {"config": {"text_source": "raw"}},
            "backbone_features": {"config": {"frame_encoder": clip, "text_encoder": clip}},
            "trained_encoder": {
                "config": {"steps": 2, "batch_size": 3, "eval_every": 1, "lr": 1e-2, "finetune": True, "frame_lr_factor": 1.0}
            },
        }
    }
    result = execute_in_process(
        defs.resolve_job_def(PIPELINE_JOB),
        run_config=run_config, instance=DagsterInstance.ephemeral(), tags=ALL_SHARDS_TAGS
    )
    assert result.success

    trained = result.output_for_node("trained_encoder")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version("ampere-encoder", trained["version"])
    for kind in ("frame", "text"):
        assert version.tags[f"lineage.{kind}_encoder"].startswith(
            f"hf-{'vision' if kind == 'frame' else 'text'}:{clip}{FINETUNED}"
        )
    assert client.get_run(trained["run_id"]).data.params["finetune"] == "True"
    files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(trained["run_id"], "encoder/artifacts/encoder")}
    assert set(BACKBONE_FILES.values()) <= files

    embedded = pd.read_parquet(tmp_path / "workspace" / "embeddings.parquet")
    items = result.output_for_node("training_set").frame.set_index("item_id").loc[embedded["item_id"]]
    rows = pd.DataFrame({"domain": items["domain"].values, "media": items["media_path"].values, "text": items["text"].values})
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    root = os.path.commonpath(list(rows["media"]))  # a trusted host: the pyfunc reads files under it
    served = mlflow.pyfunc.load_model(trained["model_uri"], model_config={"media_root": root}).predict(rows)
    np.testing.assert_allclose(served, np.stack(embedded["embedding"]), atol=1e-5)
