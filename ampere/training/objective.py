"""The training objective of one batch: cross-domain InfoNCE of the fused embeddings, weighted
alignment terms (``ampere.training.alignment``) and, optionally, a CosFace product-id classifier
(``ampere.training.cosface``), with their trainable parts (learnable temperature, class weights)."""

from __future__ import annotations

import torch
from torch import nn

from ampere.models.tower import TowerOutput
from ampere.training.alignment import alignment_losses
from ampere.training.cosface import CosFace
from ampere.training.distributed import gather_rows
from ampere.training.losses import Temperature, cross_domain_loss


class Objective(nn.Module):
    """The loss's trainable parts and weights, from a ``TrainConfig``."""

    def __init__(self, cfg, out_dim: int, products: int):
        super().__init__()
        self.cfg = cfg
        self.parts = nn.ModuleDict()
        if cfg.learnable_temperature:
            self.parts["temperature"] = Temperature(cfg.temperature)
        if cfg.cosface_weight > 0:
            self.parts["cosface"] = CosFace(out_dim, products, cfg.cosface_scale, cfg.cosface_margin)

    def temperature(self) -> float | torch.Tensor:
        """The InfoNCE temperature now (a tensor when learnt)."""
        return self.parts["temperature"]() if self.cfg.learnable_temperature else self.cfg.temperature

    def temperature_value(self) -> float:
        """The temperature now as a number."""
        current = self.temperature()
        return float(current.detach()) if isinstance(current, torch.Tensor) else current

    def forward(
        self, out: TowerOutput, products: torch.Tensor, has_visual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts (``batch_loss``) at the current temperature."""
        return batch_loss(out, products, self.temperature(), self.parts, self.cfg, has_visual)


def batch_loss(
    out: TowerOutput,
    products: torch.Tensor,
    temperature: float | torch.Tensor,
    parts_modules: nn.ModuleDict,
    cfg,
    has_visual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for tower outputs of [P; S; L] rows of the products ``products`` [B];
    ``has_visual`` [3B] bool: rows whose frames were not dropped (default: all), the only ones in
    the visual alignment terms.

    Under torchrun each rank holds its own products; every term is computed over the global batch
    (``distributed.gather_rows``), so the loss and, after DDP's averaging, the gradients are those
    of one process holding the whole batch.
    """
    n = len(products)
    fused = tuple(gather_rows(x) for x in out.fused.float().split(n))
    aligned = (out.visual, out.text) if cfg.alignment == "fusion" else (out.visual_branch, out.text_branch)
    visual, text = (tuple(gather_rows(part) for part in x.float().split(n)) for x in aligned)
    has_text = tuple(gather_rows(x) for x in out.has_text.split(n))
    has_visual = torch.ones_like(out.has_text) if has_visual is None else has_visual
    has_visual = tuple(gather_rows(x) for x in has_visual.split(n))
    products = gather_rows(products)
    loss, parts = cross_domain_loss(*fused, temperature)
    parts.update(alignment_losses(visual, text, has_text, temperature, has_visual))
    for key, weight in (("loss_tv", cfg.align_tv), ("loss_vv", cfg.align_vv), ("loss_tt", cfg.align_tt)):
        if weight:
            loss = loss + weight * parts[key]
    if cfg.cosface_weight > 0:
        parts["loss_cosface"] = parts_modules["cosface"](torch.cat(fused), products.repeat(3))
        loss = loss + cfg.cosface_weight * parts["loss_cosface"]
    return loss, parts
