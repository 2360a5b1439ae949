"""Checkpoints: a training run SIGKILLed mid-way and resumed ends bit-identical to an uninterrupted one."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from ampere.models import TowerConfig
from ampere.models.features import ItemFeatures
from ampere.training.checkpoint import data_digest, latest_checkpoint, load_checkpoint
from ampere.training.train import TrainConfig, train_tower

TOWER = TowerConfig(
    visual_dim=8,
    text_dim=8,
    width=32,
    text_tokens=4,
    temporal_layers=1,
    fusion_layers=1,
    heads=4,
    out_dim=16,
    dropout=0.1,  # dropout draws from the torch RNG, whose state the checkpoint must carry
)
# Every trainable part of the objective on, so that its state must be restored too.
CFG = TrainConfig(
    steps=12, batch_size=5, lr=2e-3, eval_every=3, patience=0, seed=7, learnable_temperature=True, cosface_weight=0.1
)

# Trains with checkpoints and, once the first checkpoint is written, waits to be killed.
CHILD = """
import json, sys, time
from ampere.models.features import ItemFeatures
from ampere.models import TowerConfig
from ampere.training.train import TrainConfig, train_tower

features = ItemFeatures.load(sys.argv[1])
tower_cfg = TowerConfig.from_dict(json.loads(sys.argv[2]))
cfg = TrainConfig(**json.loads(sys.argv[3]))
train_tower(features, tower_cfg, cfg, on_eval=lambda row: time.sleep(600))
"""


# Tiny models train far faster on one intra-op thread; results are bit-identical only for equal
# thread counts, so every run here (child process included) uses one.
pytestmark = pytest.mark.usefixtures("one_thread")


def _features(products: int = 12, seed: int = 0) -> ItemFeatures:
    """Page, short and live items per product: noisy copies of a product's visual and text base."""
    rng = np.random.default_rng(seed)
    n = 3 * products
    base_v, base_t = rng.normal(size=(products, 1, 8)), rng.normal(size=(products, 4, 8))
    mask = np.ones((n, 4), dtype=bool)
    mask[::4] = False  # some items without text
    return ItemFeatures(
        item_ids=[f"{d}-{p}" for p in range(products) for d in ("page", "short", "live")],
        product_ids=[f"prod{p}" for p in range(products) for _ in range(3)],
        domains=["page", "short", "live"] * products,
        splits=["train" if p < products - 3 else "val" for p in range(products) for _ in range(3)],
        frames=(np.repeat(base_v, 3, axis=0) + 0.3 * rng.normal(size=(n, 8, 8))).astype(np.float32),
        text=(np.repeat(base_t, 3, axis=0) + 0.3 * rng.normal(size=(n, 4, 8))).astype(np.float16),
        text_mask=mask,
    )


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_tensors(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A: uninterrupted, checkpointing at every evaluation; (tower, history, checkpoint folder)."""
    folder = tmp_path_factory.mktemp("run_a")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every run here (module fixtures start before `one_thread`)
    try:
        result = train_tower(_features(), TOWER, replace(CFG, checkpoint_dir=str(folder)))
    finally:
        torch.set_num_threads(threads)
    return result.tower, result.history, folder


def test_killed_and_resumed_run_is_bit_identical(uninterrupted, tmp_path):
    tower_a, history_a, folder_a = uninterrupted
    features_file = tmp_path / "features"
    _features().save(features_file)
    folder_b = tmp_path / "run_b"
    cfg_b = replace(CFG, checkpoint_dir=str(folder_b))
    args = [str(features_file), json.dumps(TOWER.to_dict()), json.dumps(cfg_b.to_dict())]
    with open(tmp_path / "child.log", "wb") as log:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as in this process (fixture one_thread)
        child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while latest_checkpoint(folder_b) is None:
                assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(latest_checkpoint(folder_b))["steps_done"] == 3

    resumed = []
    result_b = train_tower(_features(), TOWER, cfg_b, on_eval=lambda row: resumed.append(row["step"]), resume=True)
    assert resumed == [6, 9, 12]
    assert result_b.history == history_a
    _assert_same_tensors(result_b.tower.state_dict(), tower_a.state_dict())
    # Objective (temperature, CosFace), optimizer, best weights and RNG states match too.
    final_a, final_b = load_checkpoint(latest_checkpoint(folder_a)), load_checkpoint(latest_checkpoint(folder_b))
    for key in ("objective", "optimizer", "scheduler", "torch_rng", "history", "model", "best_model", "best_step"):
        _assert_same_tensors({key: final_a[key]}, {key: final_b[key]})


def test_checkpoint_contents_load_with_weights_only(uninterrupted):
    _, history, folder = uninterrupted
    assert [p.name for p in folder.iterdir()] == ["step-0000012.pt"]  # only the latest is kept, no temp files
    state = torch.load(folder / "step-0000012.pt", weights_only=True)
    assert state["steps_done"] == 12 and state["history"] == history
    assert state["torch_rng"].dtype == torch.uint8
    assert set(state["objective"]) == {"parts.temperature.log_temperature", "parts.cosface.weight"}
    assert state["data_digest"] == data_digest(_features())
    assert TowerConfig.from_dict(state["tower_config"]) == TOWER
    assert TrainConfig(**state["train_config"]) == replace(CFG, checkpoint_dir=str(folder))


def test_resume_of_a_finished_run_and_of_another_config(uninterrupted):
    tower_a, history_a, folder = uninterrupted
    seen = []
    result = train_tower(_features(), TOWER, replace(CFG, checkpoint_dir=str(folder)), on_eval=seen.append, resume=True)
    assert seen == [] and result.history == history_a
    _assert_same_tensors(result.tower.state_dict(), tower_a.state_dict())
    with pytest.raises(ValueError, match=r"another TrainConfig \(differs in \['lr'\]\)"):
        train_tower(_features(), TOWER, replace(CFG, lr=1e-3, checkpoint_dir=str(folder)), resume=True)
    with pytest.raises(ValueError, match="another TowerConfig"):
        train_tower(_features(), replace(TOWER, width=16), replace(CFG, checkpoint_dir=str(folder)), resume=True)
    with pytest.raises(ValueError, match="needs cfg.checkpoint_dir"):
        train_tower(_features(), TOWER, CFG, resume=True)


def test_resume_refuses_a_checkpoint_of_other_data(uninterrupted):
    """Same settings, other features (other values, or the same values under other splits): refused."""
    _, _, folder = uninterrupted
    cfg = replace(CFG, checkpoint_dir=str(folder))
    other_values = _features(seed=1)
    moved = replace(_features(), splits=["val" if s == "train" and i < 3 else s for i, s in enumerate(_features().splits)])
    for other in (other_values, moved):
        assert data_digest(other) != data_digest(_features())
        with pytest.raises(ValueError, match="other training data"):
            train_tower(other, TOWER, cfg, resume=True)


def test_fresh_start_with_a_stale_folder(tmp_path):
    (tmp_path / "step-0000099.pt").write_bytes(b"stale")  # resume=False ignores and replaces it
    cfg = replace(CFG, steps=5, eval_every=2, checkpoint_dir=str(tmp_path))
    written = []
    train_tower(_features(), TOWER, cfg, on_eval=lambda row: written.append(sorted(p.name for p in tmp_path.iterdir())))
    # Evaluations (and checkpoints) at steps 2, 4 and at the end of the budget, 5.
    assert written == [["step-0000002.pt"], ["step-0000004.pt"], ["step-0000005.pt"]]


def test_features_streamed_from_disk_train_exactly_as_resident_ones(uninterrupted, tmp_path, caplog):
    """Past `resident_features_gib` each batch is read from the features folder: the same run, bit for bit."""
    tower_a, history_a, _ = uninterrupted
    on_disk = ItemFeatures.load(_features().save(tmp_path / "features"))
    with caplog.at_level(logging.INFO, logger="ampere.training.batches"):
        streamed = train_tower(on_disk, TOWER, replace(CFG, resident_features_gib=0.0))
    assert "read from disk per batch" in caplog.text
    assert [row["val_mR1"] for row in streamed.history] == [row["val_mR1"] for row in history_a]
    _assert_same_tensors(streamed.tower.state_dict(), tower_a.state_dict())
