"""The late-fusion weight, fit on the validation split.

A late-fused tower (``TowerConfig.fusion="late"``) scores two items by w * visual cosine +
(1 - w) * text cosine. Gradient descent on the training split would set w from how well each
branch fits the training products (text fits them almost perfectly, so w would go to the frames'
loss), so w is instead chosen where every other choice is: the validation score of the fused
embeddings over a grid, ties going to the weight nearest an even split. The grid stays inside
(0, 1), so no item loses a branch it has.
"""

from __future__ import annotations

import numpy as np
import torch

from ampere.models.features import ItemFeatures
from ampere.models.tower import late_fused
from ampere.retrieval.eval import ValidationScore, evaluate

WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.05, 0.95, 19))


def fit_visual_weight(
    visual: np.ndarray, text: np.ndarray, has_text: np.ndarray, val: ItemFeatures
) -> tuple[float, ValidationScore]:
    """(visual weight, validation score at it) over ``WEIGHTS`` for the branch embeddings of the
    validation items ``val`` (visual, text: L2-normalised [N, D/2]; has_text: bool [N])."""
    visual_t, text_t, has_text_t = torch.from_numpy(visual), torch.from_numpy(text), torch.from_numpy(has_text)
    best: tuple[ValidationScore, float, float] | None = None
    for weight in WEIGHTS:
        fused = late_fused(visual_t, text_t, has_text_t, torch.tensor(weight)).numpy()
        score = ValidationScore.of(evaluate(fused, val.product_ids, val.domains, val.splits, split="val"))
        candidate = (score, -abs(weight - 0.5), weight)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2], best[0]
