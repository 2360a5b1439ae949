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

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


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
