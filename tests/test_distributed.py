"""Two training processes (gloo, CPU), each holding half of the products, give the loss and the
(DDP-averaged) gradients of one process holding the whole batch: the contrastive losses see the
global batch, with gradients flowing through the gather."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ampere.models.tower import AmpereTower, TowerConfig
from ampere.training.train import TrainConfig, _batch_loss

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
    loss, _ = _batch_loss(out, products, 0.07, nn.ModuleDict(), TrainConfig(alignment=alignment, **CONFIG))
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
def test_two_gloo_processes_give_the_loss_and_gradients_of_one_process_on_the_whole_batch(tmp_path, alignment) -> None:
    torch.set_num_threads(1)
    expected_loss, expected = _loss_and_grads(torch.arange(3 * PRODUCTS), torch.arange(PRODUCTS), alignment)
    mp.spawn(_rank, args=(_free_port(), tmp_path, alignment), nprocs=WORLD)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], expected_loss, rtol=0, atol=1e-5)
        assert result["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            assert grad.abs().max() > 0 or "text" in name, name
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
