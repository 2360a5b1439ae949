"""Saving and loading a trained tower as a self-describing folder (config + weights + lineage).

The folder reloads without the code's defaults: `config.json` holds the full `TowerConfig` (a missing or
unknown key is an error on load), and the weights are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ampere.models.tower import AmpereTower, TowerConfig

WEIGHTS = "tower.pt"
CONFIG = "config.json"


def save_tower(folder: Path, tower: AmpereTower, config: TowerConfig, extra: dict[str, Any] | None = None) -> Path:
    """Writes `tower.pt` (state dict) and `config.json` (tower config + `extra` metadata)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in tower.state_dict().items()}, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({"tower": config.to_dict(), "extra": extra or {}}, indent=2, default=str))
    return folder


def load_lineage(folder: Path) -> dict[str, Any]:
    """The lineage saved with the tower (`extra` of `save_tower`): backbones, text source, data version, …"""
    return json.loads((Path(folder) / CONFIG).read_text())["extra"]


def load_tower(folder: Path) -> AmpereTower:
    """Rebuilds the tower from its saved config and weights, in eval mode on CPU."""
    folder = Path(folder)
    config = TowerConfig.from_dict(json.loads((folder / CONFIG).read_text())["tower"])
    tower = AmpereTower(config)
    tower.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    return tower.eval()
