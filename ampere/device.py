"""Where torch work runs: a configured device name resolved on this host."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when present, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
