"""A tower saved, logged as an MLflow pyfunc and registered reloads bit-identically in a fresh process."""

import json
import os
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch

import mlflow
from ampere.models import AmpereTower, TowerConfig
from ampere.models.encoder_io import CONFIG, load_tower, save_tower
from ampere.models.features import ItemFeatures
from ampere.retrieval.serving import EncoderModel
from ampere.training.train import embed
from mlflow import MlflowClient

# Not the code's defaults anywhere it matters, so a reload must read them from config.json.
TOWER = TowerConfig(
    visual_dim=12, text_dim=10, width=32, num_frames=8, text_tokens=5, temporal_layers=1,
    fusion_layers=2, heads=4, out_dim=24, dropout=0.2,
)  # fmt: skip
NAME = "ampere-encoder-test"

# Loads the champion through the registry and embeds the saved inputs.
CHILD = """
import sys
import mlflow.pyfunc
import numpy as np

model = mlflow.pyfunc.load_model(sys.argv[1])
inputs = {k: np.load(f"{sys.argv[2]}/{k}.npy") for k in ("frames", "text", "text_mask")}
np.save(f"{sys.argv[2]}/served.npy", model.predict(inputs))
"""


@pytest.fixture
def tracking_uri(tmp_path):
    """A sqlite tracking and registry store in tmp_path, set as mlflow's URIs for the test only."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def _inputs(n: int = 7) -> ItemFeatures:
    rng = np.random.default_rng(0)
    mask = rng.random((n, TOWER.text_tokens)) < 0.7
    mask[2] = False  # an item without text
    return ItemFeatures(
        item_ids=[f"i{i}" for i in range(n)],
        product_ids=[f"p{i}" for i in range(n)],
        domains=["page"] * n,
        splits=["test"] * n,
        frames=rng.normal(size=(n, TOWER.num_frames, TOWER.visual_dim)).astype(np.float32),
        text=rng.normal(size=(n, TOWER.text_tokens, TOWER.text_dim)).astype(np.float16),
        text_mask=mask,
    )


def test_registered_champion_reloads_bit_identically_in_fresh_process(tmp_path, tracking_uri):
    torch.manual_seed(0)
    tower = AmpereTower(TOWER).eval()
    folder = save_tower(tmp_path / "encoder", tower, TOWER, extra={"data_version": "test"})
    saved = json.loads((folder / CONFIG).read_text())
    assert saved["tower"] == {f.name: getattr(TOWER, f.name) for f in fields(TowerConfig)}
    assert saved["extra"] == {"data_version": "test"}
    assert load_tower(folder).cfg == TOWER

    features = _inputs()
    expected = embed(tower, features)
    for key in ("frames", "text", "text_mask"):
        np.save(tmp_path / f"{key}.npy", getattr(features, key))

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment("encoder-reload", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="encoder",
            python_model=EncoderModel(),
            artifacts={"encoder": str(folder)},
            pip_requirements=["torch", "numpy"],
            registered_model_name=NAME,
        )
    client.set_registered_model_alias(NAME, "champion", info.registered_model_version)

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, f"models:/{NAME}@champion", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "served.npy")
    assert served.dtype == np.float32 and served.shape == (len(features), TOWER.out_dim)
    assert np.array_equal(served, expected)
