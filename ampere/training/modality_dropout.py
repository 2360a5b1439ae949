"""Modality dropout: a share of the training items loses one whole branch (its frames or its text).

A fused model trained only on items that have both branches can lean on one of them (on product
photos it scored below its own text branch alone); with a branch masked in some samples it must
place every item from either branch, and still embeds an item that has only one. Half of the
dropped items lose their frames (zeroed: the tower sees no picture), half their text (masked, as
an item without text). Draws are a pure function of (seed, step), so a resumed run drops as an
uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

_TAG = 7  # the draws' own stream, apart from batch sampling


def modality_drops(rate: float, seed: int, step: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(drop frames, drop text), bool [rows] each, for one step's items; never both for one item."""
    draw = np.random.default_rng([seed, step, _TAG]).random(rows)
    return draw < rate / 2, (draw >= rate / 2) & (draw < rate)


def drop_modalities(
    frames: torch.Tensor, text_mask: torch.Tensor, drop_frames: np.ndarray, drop_text: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [B, F, D] zeroed where ``drop_frames``, text mask [B, T] cleared where ``drop_text`` (new tensors)."""
    keep_frames = torch.from_numpy(~drop_frames).to(frames.device)
    keep_text = torch.from_numpy(~drop_text).to(text_mask.device)
    return frames * keep_frames[:, None, None].to(frames.dtype), text_mask & keep_text[:, None]
