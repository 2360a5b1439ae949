"""Training on several processes (torchrun + DDP): the contrastive losses see the global batch.

Each rank embeds its own products; `gather_rows` concatenates every rank's rows in rank order
with `torch.distributed.nn.functional.all_gather`, whose backward sums the gradient that every
rank's (identical) global loss sends to a rank's rows. With DDP averaging parameter gradients
over the W ranks, the result is exactly the single-process gradient of the global-batch loss.
(open_clip's `gather_features` instead gathers without gradient and puts the local rows back:
each rank then backpropagates only its own rows' share, and DDP's average makes the gradient W
times smaller than the single-process one.) On one process every function here is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    """Processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def seed_this_rank(seed: int, step: int) -> None:
    """Under torchrun, seeds this rank's random stream for one step from (seed, rank, step): ranks draw
    different dropout masks for their different products, and a resumed run draws the masks an
    uninterrupted one would (only rank 0 checkpoints, so no other rank's stream could be restored).
    Call after building the model (every rank starts from the same weights). On one process the
    random state is left as it is."""
    if world_size() > 1:
        torch.manual_seed(int(np.random.SeedSequence([seed, rank(), step]).generate_state(1)[0]))


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] rows of every rank concatenated in rank order, [W * n, ...], gradients flowing back
    to each rank's own rows; every rank must pass the same shape. Boolean tensors are gathered
    without gradient."""
    if world_size() == 1:
        return x
    if x.dtype == torch.bool:
        parts = [torch.empty_like(x, dtype=torch.uint8) for _ in range(world_size())]
        dist.all_gather(parts, x.to(torch.uint8))
        return torch.cat(parts).bool()
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return torch.cat(dist_fn.all_gather(x.contiguous()))


class EncodeParts(nn.Module):
    """The tower's `encode_parts` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, frames: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor):
        return self.tower.encode_parts(frames, text, text_mask)


def distributed_encoder(model: nn.Module, tower: nn.Module) -> Callable:
    """What a step calls to encode its batch: under torchrun, ``model`` wrapped in DDP (the tower's
    ``encode_parts`` when ``model`` is the tower; a fine-tuned backbone's unused head, e.g. BERT's
    pooler, gets no gradient, so unused parameters are looked for); on one process ``model`` itself
    (the tower's ``encode_parts``)."""
    if model is tower:
        return DistributedDataParallel(EncodeParts(tower)) if world_size() > 1 else tower.encode_parts
    return DistributedDataParallel(model, find_unused_parameters=True) if world_size() > 1 else model


def global_batch_size(batch_size: int, products: int) -> int:
    """The products per step: ``batch_size`` (at most ``products``), under torchrun rounded down to a
    multiple of the ranks, which split it evenly."""
    size = min(batch_size, products)
    size -= size % world_size()
    if size == 0:
        raise ValueError(f"a batch of {min(batch_size, products)} products cannot be split over {world_size()} ranks")
    return size


def rank_share(batch_size: int, chosen: np.ndarray, rows: np.ndarray, drops: tuple[np.ndarray, ...]) -> tuple:
    """This rank's share of a global batch: its products, their P, S and L rows, and their drops
    (``chosen`` [B], ``rows`` and each of ``drops`` [3B] as P then S then L). On one process, all."""
    world, me = world_size(), rank()
    if world == 1:
        return chosen, rows, drops
    share = slice(me * batch_size // world, (me + 1) * batch_size // world)
    rows = rows.reshape(3, -1)[:, share].reshape(-1)
    return chosen[share], rows, tuple(d.reshape(3, -1)[:, share].reshape(-1) for d in drops)
