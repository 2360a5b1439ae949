"""Two training processes (gloo, CPU), each holding half of the products, give the loss and the
(DDP-averaged) gradients of one process holding the whole batch: the contrastive losses see the
global batch, with gradients flowing through the gather."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ampere.lineage.lineaged import LineagedFeatures, LineagedTable
from ampere.models.encoder_io import load_tower
from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower, TowerConfig
from ampere.training.distributed import seed_this_rank
from ampere.training.objective import batch_loss
from ampere.training.train import TrainConfig, train_tower

TOWER = TowerConfig(
    visual_dim=12, text_dim=10, width=32, num_frames=8, text_tokens=5, temporal_layers=1,
    fusion_layers=1, heads=4, out_dim=16, dropout=0.0,
)  # fmt: skip
PRODUCTS, WORLD = 8, 2
# Every loss term on, each with its own weight.
CONFIG = {"align_tv": 0.3, "align_vv": 0.2, "align_tt": 0.1}


def _batch() -> tuple[torch.Tensor, ...]:
    """Rows [P; S; L] of PRODUCTS products (domain-major, as `batch_rows` orders them); some without text."""
    rng = np.random.default_rng(0)
    rows = 3 * PRODUCTS
    frames = torch.from_numpy(rng.normal(size=(rows, TOWER.num_frames, TOWER.visual_dim)).astype(np.float32))
    text = torch.from_numpy(rng.normal(size=(rows, TOWER.text_tokens, TOWER.text_dim)).astype(np.float32))
    mask = torch.from_numpy(rng.random((rows, TOWER.text_tokens)) < 0.7)
    mask[[1, PRODUCTS + 6]] = False  # a page and a short item without text
    return frames, text, mask, torch.arange(PRODUCTS)


def _loss_and_grads(rows: torch.Tensor, products: torch.Tensor, alignment: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    tower = AmpereTower(TOWER).train()
    frames, text, mask, _ = _batch()
    out = tower.encode_parts(frames[rows], text[rows], mask[rows])
    loss, _ = batch_loss(out, products, 0.07, nn.ModuleDict(), TrainConfig(alignment=alignment, **CONFIG))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in tower.named_parameters()}


def _rank(rank: int, port: int, folder: Path, alignment: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        n = PRODUCTS // WORLD
        mine = torch.cat([torch.arange(d * PRODUCTS + rank * n, d * PRODUCTS + (rank + 1) * n) for d in range(3)])
        loss, grads = _loss_and_grads(mine, torch.arange(rank * n, (rank + 1) * n), alignment)
        for grad in grads.values():  # what DistributedDataParallel does with each gradient
            dist.all_reduce(grad)
            grad /= WORLD
        torch.save({"loss": loss, "grads": grads}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("alignment", ["fusion", "branch"])
@pytest.mark.usefixtures("one_thread")
def test_two_gloo_processes_give_the_loss_and_gradients_of_one_process_on_the_whole_batch(tmp_path, alignment) -> None:
    expected_loss, expected = _loss_and_grads(torch.arange(3 * PRODUCTS), torch.arange(PRODUCTS), alignment)
    mp.spawn(_rank, args=(_free_port(), tmp_path, alignment), nprocs=WORLD)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], expected_loss, rtol=0, atol=1e-5)
        assert result["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            assert grad.abs().max() > 0 or "text" in name, name
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def _dropout_draws(rank: int, port: int, folder: Path) -> None:
    """Each rank seeds its stream for step 0, step 5 and step 0 again, and records a dropout mask of each."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        masks = []
        for step in (0, 5, 0):
            torch.manual_seed(0)  # every rank's state before: the same
            seed_this_rank(7, step)
            masks.append(nn.functional.dropout(torch.ones(64), p=0.5) > 0)
        torch.save(torch.stack(masks), folder / f"masks{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_rank_draws_its_own_dropout_masks_and_one_process_keeps_its_random_state(tmp_path) -> None:
    mp.spawn(_dropout_draws, args=(_free_port(), tmp_path), nprocs=WORLD)
    first, second = (torch.load(tmp_path / f"masks{rank}.pt", weights_only=True) for rank in range(WORLD))
    for masks in (first, second):
        assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])  # a step's masks, whenever it runs
    assert not torch.equal(first[0], second[0]) and not torch.equal(first[1], second[1])
    torch.manual_seed(3)
    expected = torch.rand(8)
    torch.manual_seed(3)
    seed_this_rank(7, 0)  # no process group: nothing changes
    torch.testing.assert_close(torch.rand(8), expected, rtol=0, atol=0)


def _features(products: int = 16) -> ItemFeatures:
    """Page features per product, short/live noisy copies, some items without text; the last 4 products are val."""
    rng = np.random.default_rng(1)
    rows = []
    for p in range(products):
        frames, text = rng.normal(size=(1, TOWER.visual_dim)), rng.normal(size=(TOWER.text_tokens, TOWER.text_dim))
        for domain in ("page", "short", "live"):
            noise = 0.0 if domain == "page" else 0.3
            mask = np.arange(TOWER.text_tokens) < (0 if (p + len(domain)) % 4 == 0 else 3)
            rows.append(
                (f"{domain}-{p}", f"prod{p}", domain, "train" if p < products - 4 else "val",
                 frames + noise * rng.normal(size=(TOWER.num_frames, TOWER.visual_dim)),
                 text + noise * rng.normal(size=text.shape), mask)
            )  # fmt: skip
    ids, pids, domains, splits, frames, text, mask = zip(*rows, strict=True)
    return ItemFeatures(
        list(ids), list(pids), list(domains), list(splits),
        np.stack(frames).astype(np.float32), np.stack(text).astype(np.float16), np.stack(mask),
    )  # fmt: skip


def test_torchrun_on_two_cpu_processes_trains_the_weights_of_one_process(tmp_path, one_thread) -> None:
    """`torchrun --nproc_per_node 2 -m ampere.training.launch` (gloo): each rank trains on half of every
    batch; rank 0's tower, curve and chosen step are those of `train_tower` in one process."""
    features = _features()
    features.save(tmp_path / "features")
    cfg = TrainConfig(batch_size=8, steps=6, eval_every=3, warmup_steps=2, patience=0, **CONFIG)
    (tmp_path / "tower.json").write_text(json.dumps(TOWER.to_dict()))
    (tmp_path / "train.json").write_text(json.dumps(cfg.to_dict()))
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ampere.training.launch", str(tmp_path / "features"), str(tmp_path / "out")]
    command += ["--tower", str(tmp_path / "tower.json"), "--train", str(tmp_path / "train.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    expected = train_tower(features, TOWER, cfg)
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["world_size"] == 2 and record["best_step"] == expected.best_step
    assert [row["step"] for row in record["history"]] == [3, 6]
    for ours, theirs in zip(record["history"], expected.history, strict=True):
        assert ours["val_mR1"] == theirs["val_mR1"]
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-4)
    trained = load_tower(tmp_path / "out" / "encoder").state_dict()
    for name, weight in expected.tower.state_dict().items():
        torch.testing.assert_close(trained[name], weight, rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_the_training_step_launches_torchrun_when_configured(tmp_path) -> None:
    """`trained_encoder` with `nproc_per_node: 2` trains through torchrun and logs, registers and
    reports that training as it does an in-process one."""
    from dagster import DagsterInstance, asset, materialize

    from mlflow import MlflowClient
    from orchestration.assets.training import trained_encoder
    from orchestration.in_process import signals_kept
    from orchestration.resources import MlflowResource, SummarizerResource, WorkspaceResource

    _features().save(tmp_path / "features")
    lineage = {"text_source": "raw", "frame_encoder": "test-frames", "text_encoder": "test-text", "data_version": "test"}

    @asset(name="backbone_features")
    def features_file() -> LineagedFeatures:  # the features a `backbone_features` materialisation would have written
        return LineagedFeatures(str(tmp_path / "features"), lineage)

    @asset(name="training_set")
    def no_media() -> LineagedTable:  # read only by `finetune`
        return LineagedTable(pd.DataFrame({"item_id": [], "media_path": [], "text": []}))

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    train = {"batch_size": 8, "steps": 6, "eval_every": 3, "warmup_steps": 2, "patience": 0, "nproc_per_node": 2}
    with signals_kept():
        result = materialize(
            [features_file, no_media, trained_encoder],
            resources={
                "mlflow": MlflowResource(tracking_uri=tracking, artifact_root=str(tmp_path / "artifacts")),
                "workspace": WorkspaceResource(root=str(tmp_path / "workspace")),
                "summarizer": SummarizerResource(),  # the model's summary engine settings (none: raw text)
            },
            run_config={"ops": {"trained_encoder": {"config": train}}},
            instance=DagsterInstance.ephemeral(),
        )
    assert result.success
    output = result.output_for_node("trained_encoder")
    run = MlflowClient(tracking_uri=tracking).get_run(output["run_id"])
    assert run.data.params["nproc_per_node"] == "2"
    history = MlflowClient(tracking_uri=tracking).get_metric_history(output["run_id"], "curve/val_mR1")
    assert [m.step for m in history] == [3, 6]  # rank 0's evaluations, logged after the run
    assert [p.parent.name for p in (tmp_path / "workspace" / "checkpoints").rglob("result.json")] == ["torchrun"]
