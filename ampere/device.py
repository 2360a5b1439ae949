"""Where torch work runs: a configured device name resolved on this host.

Every stage's ``device`` defaults to "auto", which defers to the deployment's one `device` setting
(``AMPERE_DEVICE``, `ampere.settings.Settings`); a stage that names a device overrides it.
"""

from __future__ import annotations

import torch

from ampere.settings import Settings


def resolve_device(name: str) -> torch.device:
    """``auto``: the `device` setting when it names one, else the first CUDA device when present, else
    the CPU; otherwise the named device, which must exist here (a ValueError says why not)."""
    if name == "auto":
        name = Settings.resolve().device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: {error}") from error
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"device {name!r}: this host has {count} CUDA device(s)")
    return device
