"""Alignment terms of AMPere: InfoNCE between the visual-only and text-only embeddings.

Text<->visual within a domain (the two modalities of the same item), visual<->visual and
text<->text across domains (P-S, P-L, S-L) of the same product. Text embeddings count only for
items that have text; a term over fewer than two usable pairs is zero.
"""

from __future__ import annotations

import torch

from ampere.training.losses import info_nce

DOMAIN_PAIRS = ((0, 1), (0, 2), (1, 2))  # P-S, P-L, S-L


def _masked_info_nce(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """InfoNCE over the rows where ``keep`` [B] is True; zero when fewer than two rows are kept."""
    if int(keep.sum()) < 2:
        return a.new_zeros(())
    return info_nce(a[keep], b[keep], temperature)


def alignment_losses(
    visual: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    has_text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    temperature: float | torch.Tensor = 0.05,
    has_visual: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Alignment terms for one batch; each argument holds the (P, S, L) tensors, row i = product i.

    visual, text: L2-normalised [B, D]; has_text, has_visual: bool [B] (has_visual: frames not
    dropped, default all). Returns ``loss_tv`` (sum over P, S and L of text<->visual), ``loss_vv``
    and ``loss_tt`` (sums over P-S, P-L and S-L), each a sum of three InfoNCE terms like the fused
    cross-domain loss.
    """
    seen = has_visual or tuple(torch.ones_like(h) for h in has_text)
    return {
        "loss_tv": sum(_masked_info_nce(visual[d], text[d], has_text[d] & seen[d], temperature) for d in range(3)),
        "loss_vv": sum(_masked_info_nce(visual[a], visual[b], seen[a] & seen[b], temperature) for a, b in DOMAIN_PAIRS),
        "loss_tt": sum(_masked_info_nce(text[a], text[b], has_text[a] & has_text[b], temperature) for a, b in DOMAIN_PAIRS),
    }
