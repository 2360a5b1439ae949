"""Metadata helpers shared by the assets: Markdown previews, quarantine files, the device used."""

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from dagster import (
    MetadataValue,
)

from ampere.device import resolve_device

PREVIEW_ROWS = 5


def preview(df: pd.DataFrame, columns: list[str], width: int = 80) -> MetadataValue:
    """A Markdown preview of the first rows, long strings cut to `width` characters."""
    head = df[columns].head(PREVIEW_ROWS).copy()
    for column in columns:
        head[column] = head[column].astype(str).str.slice(0, width)
    return MetadataValue.md(head.to_markdown(index=False))


def write_quarantine(path: Path, records: list[dict[str, Any]]) -> None:
    """Quarantined records with their reasons, one JSON object per line."""
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def device_metadata(name: str) -> dict[str, str]:
    """The device a config names (`auto` resolved) and its name (the GPU's, or "cpu"), for MLflow params and metadata."""
    device = resolve_device(name)
    return {"resolved_device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
