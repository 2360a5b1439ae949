"""Frozen backbones (frame / text encoders) and the trainable AMPere tower."""

from ampere.models.backbones import (
    FrameEncoder,
    HFVisionEncoder,
    ImageEncoder,
    TextEncoder,
    build_frame_encoder,
    build_text_encoder,
)
from ampere.models.tower import AmpereTower, TowerConfig, TowerOutput

__all__ = [
    "AmpereTower",
    "FrameEncoder",
    "HFVisionEncoder",
    "ImageEncoder",
    "TextEncoder",
    "TowerConfig",
    "TowerOutput",
    "build_frame_encoder",
    "build_text_encoder",
]
