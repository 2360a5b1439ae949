"""Resumable training checkpoints: written atomically at every evaluation, read back only by a run
of the same tower, training settings and data.

A checkpoint holds the model, the best weights so far, the optimizer, the scheduler, the history,
the early-stopping state and the RNG states. `Checkpointer.resume` refuses a checkpoint written for
another tower, other training settings (but those that may change between a run and its
resumption) or other data: its `data_digest` covers the items' ids, products, domains and splits,
the feature arrays' shapes and types, and the bytes of rows spread over every array.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ampere.models.features import ItemFeatures

CHECKPOINT_FORMAT = 5
# TrainConfig fields that may differ between a checkpointed run and its resumption.
RESUME_MAY_CHANGE = ("device", "checkpoint_dir", "nproc_per_node", "resident_features_gib")
# Rows of each feature array whose bytes enter the data digest (evenly spaced; all rows when fewer).
DIGEST_ROWS = 1024


def checkpoint_path(folder: str | Path, steps_done: int) -> Path:
    """The checkpoint file written after ``steps_done`` steps."""
    return Path(folder) / f"step-{steps_done:07d}.pt"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the most steps done in ``folder``, or None."""
    files = sorted(Path(folder).glob("step-[0-9]*.pt"))
    return files[-1] if files else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``torch.load(weights_only=True)`` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def data_digest(features: ItemFeatures) -> str:
    """A digest of the training data: id columns, array layouts and the bytes of up to
    ``DIGEST_ROWS`` evenly spaced rows of every array (bounded work for features on disk)."""
    h = hashlib.sha256()
    columns = (features.item_ids, features.product_ids, features.domains, features.splits)
    h.update(json.dumps(columns).encode())
    rows = np.unique(np.linspace(0, len(features) - 1, min(len(features), DIGEST_ROWS)).astype(np.int64))
    for array in (features.frames, features.text, features.text_mask):
        h.update(f"{tuple(array.shape)} {np.dtype(array.dtype).str}".encode())
        h.update(np.ascontiguousarray(array[rows]).tobytes())
    return h.hexdigest()


@dataclass
class Checkpointer:
    """Writes and resumes the checkpoints of one training run in ``folder``."""

    folder: Path
    tower_config: dict
    train_config: dict
    data: str

    def write(self, steps_done: int, state: dict[str, Any]) -> Path:
        """Write ``state`` with what identifies the run atomically (temporary file, fsync, rename),
        then remove older checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = checkpoint_path(self.folder, steps_done)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        identity = {"tower_config": self.tower_config, "train_config": self.train_config, "data_digest": self.data}
        with open(tmp, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, "steps_done": steps_done, **identity, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for old in self.folder.glob("step-[0-9]*.pt"):
            if old != path:
                old.unlink()
        return path

    def resume(self) -> dict[str, Any] | None:
        """The latest checkpoint's state, or None when there is none; an error when it belongs to another run."""
        latest = latest_checkpoint(self.folder)
        if latest is None:
            return None
        state = load_checkpoint(latest)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{latest}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        if state["tower_config"] != self.tower_config:
            raise ValueError(f"{latest}: checkpoint was written for another TowerConfig")
        if state["data_digest"] != self.data:
            raise ValueError(f"{latest}: checkpoint was written for other training data (its digest differs)")
        ours = {k: v for k, v in self.train_config.items() if k not in RESUME_MAY_CHANGE}
        theirs = {k: v for k, v in state["train_config"].items() if k not in RESUME_MAY_CHANGE}
        if ours != theirs:
            changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            raise ValueError(f"{latest}: checkpoint was written with another TrainConfig (differs in {changed})")
        return state
