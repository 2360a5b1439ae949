"""The shared AMPere tower: temporal transformer, text projection, then token or late fusion, head."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ampere.data.frames import NUM_FRAMES

FUSIONS = ("tokens", "late")

@dataclass
class TowerConfig:
    """Sizes of the trainable tower (shared by P, S and L)."""

    visual_dim: int = 1280
    text_dim: int = 384
    width: int = 512
    num_frames: int = NUM_FRAMES
    text_tokens: int = 33
    temporal_layers: int = 2
    fusion_layers: int = 4
    heads: int = 8
    out_dim: int = 128
    dropout: float = 0.1
    # tokens: the paper's fusion transformer over [visual | text] tokens; late: a visual and a text
    # embedding of out_dim / 2 each, concatenated with weights whose squares sum to 1 (see late_fused)
    fusion: str = "tokens"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion == "late" and self.out_dim % 2:
            raise ValueError(f"late fusion splits out_dim between two branches: it must be even, got {self.out_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TowerConfig:
        """Build from a complete dict (as written by ``to_dict``): unknown or missing keys are an error,
        so a saved tower never silently takes a default that changed in the code."""
        d = {"fusion": "tokens", **d}  # towers saved before late fusion existed fused tokens
        known = {f.name for f in fields(cls)}
        unknown, missing = set(d) - known, known - set(d)
        if unknown:
            raise ValueError(f"unknown TowerConfig keys: {sorted(unknown)}")
        if missing:
            raise ValueError(f"missing TowerConfig keys: {sorted(missing)}")
        return cls(**d)


class TowerOutput(NamedTuple):
    """L2-normalised [B, out_dim] embeddings, all through the shared head.

    fused: first visual + first text output token of the fusion transformer (the item
    embedding); visual / text: the first visual / first text fusion output token alone (both
    have attended to the whole unmasked sequence); visual_branch / text_branch: the branch
    outputs before fusion (the temporal transformer's pooled token, the projected text CLS).
    Text embeddings are meaningful only where ``has_text`` [B] (bool) is True. Under late fusion
    visual / text and visual_branch / text_branch are the same two branch embeddings [B, out_dim / 2].
    """

    fused: torch.Tensor
    visual: torch.Tensor
    text: torch.Tensor
    visual_branch: torch.Tensor
    text_branch: torch.Tensor
    has_text: torch.Tensor


def late_fused(visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor, visual_weight: torch.Tensor) -> torch.Tensor:
    """[sqrt(w) * visual, sqrt(1 - w) * text] for L2-normalised branch embeddings [B, D/2]: the dot
    product of two fused embeddings is w * visual cosine + (1 - w) * text cosine. An item without
    text (``has_text`` False) keeps its visual half alone, renormalised."""
    text = torch.where(has_text[:, None], text, 0.0)
    fused = torch.cat([visual_weight.sqrt() * visual, (1 - visual_weight).sqrt() * text], dim=-1)
    return F.normalize(fused, dim=-1)


def _encoder(cfg: TowerConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=cfg.width,
        nhead=cfg.heads,
        dim_feedforward=4 * cfg.width,
        dropout=cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.width), enable_nested_tensor=False)


class AmpereTower(nn.Module):
    """Fuses 8 frame features and text token states into one L2-normalised embedding.

    Visual: Linear + position embeddings, a learned pooled token prepended, temporal
    transformer -> 9 tokens (pooled first). Text: LayerNorm + Linear + type embedding.

    ``fusion="tokens"`` (the paper's): a fusion transformer over [9 visual | T text] tokens with
    text padding masked (visual never masked); output: first visual token + first text token
    (zeroed when the item has no text), Linear to ``out_dim``, L2-normalised. ``encode_parts``
    also gives the first visual and the first text token alone, and the two branch outputs before
    fusion, through the same Linear (for the alignment losses).

    ``fusion="late"``: the text tokens pass through their own transformer; the pooled visual token
    and the first text token each get a head to ``out_dim / 2``, and the item embedding is
    ``late_fused`` with the buffer ``visual_weight`` (saved with the weights; training sets it on
    the validation split). Both branches are then the visual and text embeddings.
    """

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.visual_proj = nn.Linear(cfg.visual_dim, w)
        self.frame_pos = nn.Parameter(torch.randn(1, cfg.num_frames, w) * 0.02)
        self.pooled_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.temporal = _encoder(cfg, cfg.temporal_layers)
        self.text_norm = nn.LayerNorm(cfg.text_dim)
        self.text_proj = nn.Linear(cfg.text_dim, w)
        self.text_type = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        if cfg.fusion == "tokens":
            self.fusion = _encoder(cfg, cfg.fusion_layers)
            self.head = nn.Linear(w, cfg.out_dim)
        else:
            self.text_encoder = _encoder(cfg, cfg.fusion_layers)
            self.visual_head = nn.Linear(w, cfg.out_dim // 2)
            self.text_head = nn.Linear(w, cfg.out_dim // 2)
            self.register_buffer("visual_weight", torch.tensor(0.5))

    def encode_parts(self, frames: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> TowerOutput:
        """frames [B, F, Dv], text [B, T, Dt], text_mask [B, T] bool (True = valid) -> TowerOutput."""
        b = frames.shape[0]
        v = self.visual_proj(frames) + self.frame_pos
        v = self.temporal(torch.cat([self.pooled_token.expand(b, -1, -1), v], dim=1))
        t = self.text_proj(self.text_norm(text)) + self.text_type
        has_text = text_mask.any(dim=1)
        if self.cfg.fusion == "late":
            return self._late(v[:, 0], t, text_mask.bool(), has_text)
        tokens = torch.cat([v, t], dim=1)
        visual_valid = torch.ones(b, v.shape[1], dtype=torch.bool, device=frames.device)
        padding = ~torch.cat([visual_valid, text_mask.bool()], dim=1)
        fused = self.fusion(tokens, src_key_padding_mask=padding)
        first_visual, first_text = fused[:, 0], fused[:, v.shape[1]]
        # An item without text keeps its (masked) text slot; its output term is zeroed.
        out = first_visual + torch.where(has_text[:, None], first_text, 0.0)
        return TowerOutput(
            fused=F.normalize(self.head(out), dim=-1),
            visual=F.normalize(self.head(first_visual), dim=-1),
            text=F.normalize(self.head(first_text), dim=-1),
            visual_branch=F.normalize(self.head(v[:, 0]), dim=-1),
            text_branch=F.normalize(self.head(t[:, 0]), dim=-1),
            has_text=has_text,
        )

    def _late(self, pooled: torch.Tensor, t: torch.Tensor, text_mask: torch.Tensor, has_text: torch.Tensor) -> TowerOutput:
        """Late fusion of the pooled visual token [B, W] and the text tokens [B, T, W]."""
        # An item without text attends to its first (masked) slot, so attention is defined; its text half is zeroed.
        attend = text_mask.clone()
        attend[:, 0] |= ~has_text
        t = self.text_encoder(t, src_key_padding_mask=~attend)
        visual = F.normalize(self.visual_head(pooled), dim=-1)
        text = F.normalize(self.text_head(t[:, 0]), dim=-1)
        fused = late_fused(visual, text, has_text, self.visual_weight)
        return TowerOutput(fused, visual, text, visual, text, has_text)

    def forward(self, frames: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """frames [B, F, Dv], text [B, T, Dt], text_mask [B, T] bool (True = valid) -> fused [B, out_dim]."""
        return self.encode_parts(frames, text, text_mask).fused
