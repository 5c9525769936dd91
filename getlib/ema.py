"""Exponential moving averages of weights, with EDM's ramp-up for short runs."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_beta", "update_ema"]


def ema_beta(images_seen: int, batch_size: int, halflife_images: float, rampup_ratio: float | None) -> float:
    """EDM's per-step decay: beta = 0.5^(batch / half-life), the half-life (in images) capped at
    rampup_ratio x the images seen so far, so that early weights are forgotten quickly."""
    halflife = halflife_images
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model, for every trainable parameter (frozen ones, like the
    sin-cos positions, are equal in both and left alone)."""
    pairs = [(p_ema, p.detach()) for p_ema, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
    if pairs:
        torch._foreach_lerp_(*map(list, zip(*pairs)), 1.0 - beta)  # one call for all tensors (same maths as lerp_)
