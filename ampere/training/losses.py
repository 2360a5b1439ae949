"""Contrastive losses between domains of the same product (in-batch negatives), and the temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE_RANGE = (0.01, 1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised [B, D] embeddings; row i of a matches row i of b."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def cross_domain_loss(
    p: torch.Tensor,
    s: torch.Tensor,
    l: torch.Tensor,  # noqa: E741 (the paper's domain letters P, S, L)
    temperature: float | torch.Tensor = 0.05,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of InfoNCE over P-S, P-L and S-L; returns (total, {"loss_ps", "loss_pl", "loss_sl"})."""
    parts = {
        "loss_ps": info_nce(p, s, temperature),
        "loss_pl": info_nce(p, l, temperature),
        "loss_sl": info_nce(s, l, temperature),
    }
    return parts["loss_ps"] + parts["loss_pl"] + parts["loss_sl"], parts


class Temperature(nn.Module):
    """A learnable InfoNCE temperature, parameterised by its log and clamped to ``TEMPERATURE_RANGE``."""

    def __init__(self, initial: float = 0.05):
        super().__init__()
        low, high = TEMPERATURE_RANGE
        if not low <= initial <= high:
            raise ValueError(f"temperature {initial} outside {TEMPERATURE_RANGE}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        """The temperature, a 0-d tensor (no gradient flows while it sits at a bound)."""
        low, high = TEMPERATURE_RANGE
        return self.log_temperature.clamp(math.log(low), math.log(high)).exp()
