"""Real image sets, in model space [-1, 1] (N, C, H, W) float32 with int64 labels."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["digits", "to_uint8"]


def digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16, 10 classes), offline.

    Pixel v maps to v/8 - 1 in [-1, 1]; shape (1797, 1, 8, 8).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(8).sub(1).unsqueeze(1)
    return x.contiguous(), torch.from_numpy(d.target).long()


def to_uint8(x: Tensor) -> Tensor:
    """Model space [-1, 1] -> uint8 [0, 255] as the paper evaluates: x * 127.5 + 128, clipped."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
