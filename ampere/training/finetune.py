"""End-to-end fine-tuning: the backbones trained with the tower, from frames and tokens.

The default trains the tower on cached features of frozen backbones. With `TrainConfig.finetune`
every step decodes its items' frames and tokenises their texts, and the frame and text networks
get gradients at small learning-rate factors of the tower's (`frame_lr_factor`, `text_lr_factor`;
DESIGN.md section 1). The backbones stay in eval mode (pretrained BatchNorm statistics, no dropout),
so only their weights move. Validation and embedding read features computed by the current backbones.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ampere.data.frames import MediaError
from ampere.models.backbones import TextEncoder, TrainableImageEncoder, encoders_from_ids, mark_finetuned
from ampere.models.features import ItemFeatures, item_frames, text_features, unique_frames, visual_features
from ampere.models.tower import AmpereTower, TowerOutput


@dataclass
class EndToEndInputs:
    """What fine-tuning reads beside the features' ids: the backbones to train, and each item's
    media path and text (by item id; the text is the one its features were computed from)."""

    frame_encoder: TrainableImageEncoder
    text_encoder: TextEncoder
    media: dict[str, str]
    texts: dict[str, str]

    def missing(self, item_ids: list[str]) -> list[str]:
        """The ids among ``item_ids`` that have no media or no text here."""
        return [i for i in item_ids if i not in self.media or i not in self.texts]


@dataclass
class EndToEndSpec:
    """What builds fine-tuning's inputs in any process (each torchrun rank builds its own): the
    backbone ids to start from, and each item's media path and text. JSON-serialisable."""

    frame_encoder: str
    text_encoder: str
    media: dict[str, str]
    texts: dict[str, str]

    def build(self, device: str) -> EndToEndInputs:
        """The trainable backbones on ``device`` with the items' media and texts."""
        encoders = encoders_from_ids(self.frame_encoder, self.text_encoder, trainable=True, device=device)
        return EndToEndInputs(*encoders, self.media, self.texts)


class EndToEnd(nn.Module):
    """Frame network, text network and tower as one module: the batch's distinct frames' pixels
    [U, 3, H, W], each item's frames as rows of them [B, F], and tokens in, the tower's outputs out
    (a page's 8 copies of one image are one row: encoded once, its gradient the sum of the copies').
    Its parameter names start with `frame_backbone.`, `text_backbone.` or `tower.` (the
    learning-rate groups)."""

    def __init__(self, inputs: EndToEndInputs, tower: AmpereTower):
        super().__init__()
        self.frame_backbone = inputs.frame_encoder.network
        self.text_backbone = inputs.text_encoder.network
        self.tower = tower
        self._frame_encoder, self._text_encoder = inputs.frame_encoder, inputs.text_encoder

    def train(self, mode: bool = True) -> EndToEnd:
        """Only the tower changes mode: the backbones keep eval mode while their weights train."""
        self.training = mode
        self.tower.train(mode)
        return self

    def forward(self, pixels: torch.Tensor, frame_rows: torch.Tensor, tokens: dict[str, torch.Tensor]) -> TowerOutput:
        frames = self._frame_encoder.pooled(pixels)[frame_rows]
        text, keep = self._text_encoder.states(tokens)
        return self.tower.encode_parts(frames, text, keep)


class MediaBatches:
    """A step's inputs for fine-tuning: its items' frames decoded and preprocessed (by a pool of
    threads), and their texts tokenised; an empty text gives no kept token, as in the features."""

    def __init__(self, features: ItemFeatures, inputs: EndToEndInputs, workers: int = 4):
        self.item_ids = features.item_ids
        self.inputs = inputs
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="finetune-decode")

    def _pixels(self, item_id: str) -> tuple[torch.Tensor, np.ndarray]:
        """The item's distinct frames' pixels and, per frame, its row among them."""
        path = self.inputs.media[item_id]
        try:
            frames = item_frames(path)
        except (MediaError, OSError) as error:
            raise MediaError(path, f"item {item_id}: {error}") from error
        images, inverse = unique_frames(frames)
        return self.inputs.frame_encoder.pixels(images), inverse

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The distinct frames' pixels [U, 3, H, W], each item's frames as rows of them [B, F], and
        the tokens of the items at ``rows`` (``EndToEnd``'s inputs)."""
        ids = [self.item_ids[r] for r in rows]
        items = list(self.pool.map(self._pixels, ids))
        starts = np.cumsum([0] + [len(pixels) for pixels, _ in items[:-1]])
        frame_rows = torch.from_numpy(np.stack([start + inverse for start, (_, inverse) in zip(starts, items, strict=True)]))
        pixels = torch.cat([pixels for pixels, _ in items])
        texts = [self.inputs.texts[i] for i in ids]
        tokens = self.inputs.text_encoder.tokens(texts)
        empty = torch.tensor([not t.strip() for t in texts], device=tokens["keep"].device)
        tokens["keep"] = tokens["keep"] & ~empty[:, None]
        return pixels, frame_rows.to(pixels.device), tokens

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def features_with(
    features: ItemFeatures, inputs: EndToEndInputs, cache_dir: Path | None = None, progress: bool = False
) -> ItemFeatures:
    """The same items' features from the inputs' current backbones (frames from their media, text
    from their texts); a media error names the item. ``cache_dir``: frame features cached by
    backbone id, which names a fine-tuned backbone's weights (`mark_finetuned`)."""
    paths = [inputs.media[i] for i in features.item_ids]
    frames, failures = visual_features(paths, inputs.frame_encoder, cache_dir, progress=progress)
    if failures:
        row, reason = failures[0]
        raise MediaError(paths[row], f"item {features.item_ids[row]}: {reason} ({len(failures)} items failed)")
    states, mask = text_features([inputs.texts[i] for i in features.item_ids], inputs.text_encoder, progress=progress)
    return replace(features, frames=frames, text=states, text_mask=mask)


def unfreeze(inputs: EndToEndInputs) -> EndToEndInputs:
    """Turns gradients on for both backbones' weights (their mode stays eval)."""
    for encoder in (inputs.frame_encoder, inputs.text_encoder):
        encoder.network.requires_grad_(True)
    return inputs


def freeze_trained(inputs: EndToEndInputs) -> EndToEndInputs:
    """Freezes both backbones again and names them by their trained weights (`mark_finetuned`)."""
    for encoder in (inputs.frame_encoder, inputs.text_encoder):
        encoder.network.requires_grad_(False).eval()
        mark_finetuned(encoder)
    return inputs
