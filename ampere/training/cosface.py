"""CosFace product-id classifier (Wang et al., 2018, large margin cosine loss) on the embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosFace(nn.Module):
    """Cosine classifier with an additive margin: logits = scale * (cos(emb, w_c) - margin * [c == y])."""

    def __init__(self, dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.4):
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [B, num_classes] between embeddings [B, dim] and the class weights."""
        return F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean CosFace loss of embeddings [B, dim] with class indices ``labels`` [B] (int64)."""
        cos = self.cosine(emb)
        margin = F.one_hot(labels, cos.shape[1]).to(cos.dtype) * self.margin
        return F.cross_entropy(self.scale * (cos - margin), labels)
