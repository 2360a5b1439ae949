"""The training loop's input source: which items a step trains on, and their features as tensors.

A step's batch is a pure function of (seed, step) (`batch_rows`), so a resumed run and a run on
several processes see the batches an uninterrupted single process would. Features are either held
on the training device for the run (`ResidentFeatures`) or read from disk a batch at a time
(`StreamedFeatures`); fine-tuning reads media instead (`ampere.training.finetune.MediaBatches`).
All three answer ``batch(rows)`` with the encoder's inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ampere.models.features import ItemFeatures

logger = logging.getLogger(__name__)

TRAIN_DOMAINS = ("page", "short", "live")


class BatchSource(Protocol):
    """What the loop reads a step's encoder inputs from."""

    def batch(self, rows: np.ndarray) -> tuple: ...


def product_items(features: ItemFeatures) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per product (sorted by id) with page, short and live items: their row indices per domain."""
    rows: dict[str, dict[str, list[int]]] = {}
    for i, (pid, domain) in enumerate(zip(features.product_ids, features.domains, strict=True)):
        rows.setdefault(pid, {d: [] for d in TRAIN_DOMAINS})[domain].append(i)
    return [
        tuple(np.array(rows[pid][d]) for d in TRAIN_DOMAINS) for pid in sorted(rows) if all(rows[pid][d] for d in TRAIN_DOMAINS)
    ]


def batch_rows(products: list[tuple[np.ndarray, ...]], batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(product indices [B], item rows [3B] as P then S then L) of one step, a pure function of its arguments.

    Steps walk through permutations of the products (one permutation per pass), so every
    product is seen once per pass; each product's item in a domain is drawn at random.
    """
    per_pass = max(1, len(products) // batch_size)
    pass_index, position = divmod(step, per_pass)
    order = np.random.default_rng([seed, pass_index]).permutation(len(products))
    chosen = order[position * batch_size : (position + 1) * batch_size]
    rng = np.random.default_rng([seed, pass_index, position, 1])
    rows = np.array([[rng.choice(products[p][d]) for p in chosen] for d in range(3)]).reshape(-1)
    return chosen, rows


def text_width(mask: np.ndarray) -> int:
    """Text columns up to the last one that is real text in some row of ``mask`` (at least 1)."""
    return max(1, int(mask.any(axis=0).nonzero()[0].max(initial=0)) + 1)


def feature_tensors(features: ItemFeatures, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Frames, text and mask of ``rows`` on ``device``; text columns that are padding in every row are cut.

    Cutting shared padding leaves the outputs unchanged (padded keys are masked and every
    layer acts per token), and saves work: a summary is far shorter than the token budget.
    """
    mask = features.text_mask[rows]
    width = text_width(mask)
    frames = torch.from_numpy(np.ascontiguousarray(features.frames[rows], dtype=np.float32))
    text = torch.from_numpy(np.ascontiguousarray(features.text[rows, :width], dtype=np.float32))
    return frames.to(device), text.to(device), torch.from_numpy(np.ascontiguousarray(mask[:, :width])).to(device)


@dataclass
class ResidentFeatures:
    """The training items' features as tensors on the training device for the whole run, so a step
    gathers its batch there: no per-step host gathering or copy of features. Text stays in its
    stored fp16 (on the CPU a batch is widened to float32, as ``feature_tensors`` gives); frames are
    bf16 on a GPU (autocast casts them to it anyway), float32 on the CPU (the features' own array).
    Batch rows and the padding cut come from the host, so no step waits on the device."""

    frames: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    host_mask: np.ndarray

    @classmethod
    def of(cls, features: ItemFeatures, device: torch.device) -> ResidentFeatures:
        on_gpu = device.type == "cuda"
        mask = np.asarray(features.text_mask)
        return cls(
            torch.from_numpy(np.asarray(features.frames)).to(device, torch.bfloat16 if on_gpu else torch.float32),
            torch.from_numpy(np.asarray(features.text)).to(device, torch.float16),
            torch.from_numpy(mask).to(device),
            mask,
        )

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames, text and mask of ``rows``; text columns that are padding in every row are cut."""
        width = text_width(self.host_mask[rows])
        index = torch.from_numpy(rows).to(self.frames.device, non_blocking=True)
        text = self.text[index, :width]
        return self.frames[index], text if text.is_cuda else text.float(), self.mask[index, :width]


@dataclass
class StreamedFeatures:
    """The training items' features read a batch at a time from where they are (disk, for a features
    folder): memory bounded by the batch, whatever the number of items."""

    features: ItemFeatures
    device: torch.device

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames, text and mask of ``rows`` (``feature_tensors``)."""
        return feature_tensors(self.features, rows, self.device)


def feature_source(features: ItemFeatures, device: torch.device, resident_gib: float) -> ResidentFeatures | StreamedFeatures:
    """Resident features when they fit ``resident_gib``, else streamed ones."""
    if features.nbytes <= resident_gib * 2**30:
        return ResidentFeatures.of(features, device)
    logger.info(f"training features of {features.nbytes / 2**30:.1f} GiB are read from disk per batch")
    return StreamedFeatures(features, device)
