"""Validation during training: the score of the tower on the "val" items, and the best weights so far.

Every choice is made on validation: the weights returned are those of the best evaluation (mR1,
ties broken by mMRR: ``ampere.retrieval.eval.ValidationScore``; ties keep the earlier step), and
training stops after ``patience`` evaluations without improvement. A late-fused tower gets its
visual weight fit on the validation items at each evaluation (``fit_visual_weight``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ampere.models.features import ItemFeatures
from ampere.models.tower import AmpereTower, late_fused
from ampere.retrieval.eval import ValidationScore, evaluate
from ampere.training.batches import feature_tensors
from ampere.training.fusion_weight import fit_visual_weight
from ampere.training.losses import cross_domain_loss


def embed(tower: AmpereTower, features: ItemFeatures, batch_size: int = 256) -> np.ndarray:
    """Fused embeddings float32 [N, out_dim] of all items, tower in eval mode."""
    tower.eval()
    device = next(tower.parameters()).device
    out = np.zeros((len(features), tower.cfg.out_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            rows = np.arange(start, min(start + batch_size, len(features)))
            out[rows] = tower(*feature_tensors(features, rows, device)).float().cpu().numpy()
    return out


def embed_branches(tower: AmpereTower, features: ItemFeatures, batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """(visual, text, has_text) of all items, tower in eval mode: the branch embeddings [N, D] that a
    late-fused tower concatenates, and bool [N] for items that have text."""
    tower.eval()
    device = next(tower.parameters()).device
    visual, text, has_text = [], [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            rows = np.arange(start, min(start + batch_size, len(features)))
            out = tower.encode_parts(*feature_tensors(features, rows, device))
            visual.append(out.visual.float().cpu().numpy())
            text.append(out.text.float().cpu().numpy())
            has_text.append(out.has_text.cpu().numpy())
    return np.concatenate(visual), np.concatenate(text), np.concatenate(has_text)


def validate(tower: AmpereTower, val: ItemFeatures, val_products: list, temperature: float) -> tuple[ValidationScore, float]:
    """(validation score, fused cross-domain loss on the first item of each domain of every val product).
    A late-fused tower first gets its visual weight fit on these items (``fit_visual_weight``)."""
    was_training = tower.training
    if tower.cfg.fusion == "late":  # one pass over the branches gives the weight, its score and the fused vectors
        visual, text, has_text = embed_branches(tower, val)
        weight, score = fit_visual_weight(visual, text, has_text, val)
        tower.visual_weight.fill_(weight)
        branches = (torch.from_numpy(x) for x in (visual, text, has_text))
        vectors = late_fused(*branches, tower.visual_weight.cpu()).numpy()
    else:
        vectors = embed(tower, val)
        score = ValidationScore.of(evaluate(vectors, val.product_ids, val.domains, val.splits, split="val"))
    rows = [int(items[d][0]) for d in range(3) for items in val_products]
    fused = torch.from_numpy(vectors[rows]).split(len(val_products))
    with torch.no_grad():
        loss, _ = cross_domain_loss(*fused, float(temperature))
    tower.train(was_training)
    return score, float(loss)


@dataclass
class BestWeights:
    """The best validation score so far, its step and the model's weights then, and the early-stopping count."""

    patience: int
    score: ValidationScore = field(default_factory=lambda: ValidationScore(-math.inf, -math.inf))
    step: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: int = 0

    def update(self, score: ValidationScore, step: int, model: nn.Module) -> None:
        """Keep ``model``'s weights when ``score`` beats the best, else count one more stale evaluation."""
        if score > self.score:
            self.score, self.step, self.stale = score, step, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.stale += 1

    @property
    def stop(self) -> bool:
        """The patience ran out (never with patience 0)."""
        return self.patience > 0 and self.stale >= self.patience

    def state_dict(self) -> dict:
        return {"stale": self.stale, "best_step": self.step, "best_val_mR1": self.score.mR1,
                "best_val_mMRR": self.score.mMRR, "best_model": self.state}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.stale, self.step, self.state = state["stale"], state["best_step"], state["best_model"]
        self.score = ValidationScore(state["best_val_mR1"], state["best_val_mMRR"])
