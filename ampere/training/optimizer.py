"""The optimizer of a training run: AdamW over parameter groups with learning-rate factors by
parameter-name prefix, a linear warm-up then cosine decay to 0 over the step budget."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def param_groups(model: nn.Module, base_lr: float, factors: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer parameter groups with a learning-rate factor per parameter-name prefix.

    A trainable parameter whose dotted name equals a prefix of ``factors`` or starts with
    ``prefix + "."`` gets lr ``base_lr * factor`` (the longest matching prefix wins); the others
    get ``base_lr``. Each group also holds "name" (its prefix, "" for the rest) and "lr_factor".
    Frozen parameters are left out, and so are empty groups; a prefix matching no trainable
    parameter is an error (a typo would otherwise train at the base rate).
    """
    factors = dict(factors or {})
    members: dict[str, list[nn.Parameter]] = {"": [], **{prefix: [] for prefix in factors}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [p for p in factors if name == p or name.startswith(p + ".")]
        members[max(matches, key=len, default="")].append(param)
    unused = [p for p in factors if not members[p]]
    if unused:
        raise ValueError(f"lr_factors prefixes match no trainable parameter: {unused}")
    return [
        {"params": params, "lr": base_lr * factors.get(name, 1.0), "name": name, "lr_factor": factors.get(name, 1.0)}
        for name, params in members.items()
        if params
    ]


def build_optimizer(
    model: nn.Module, objective: nn.Module, cfg, factors: Mapping[str, float]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``model`` (``factors`` by prefix) and the objective's trainable parts (no weight
    decay), with its warm-up and cosine schedule from ``cfg`` (a ``TrainConfig``)."""
    groups = param_groups(model, cfg.lr, factors)
    extra = list(objective.parameters())
    if extra:
        groups.append({"params": extra, "lr": cfg.lr, "name": "objective", "lr_factor": 1.0, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps))
    return optimizer, scheduler


def trainable(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Every parameter the optimizer updates (what the gradient norm is clipped over)."""
    return [p for g in optimizer.param_groups for p in g["params"]]
