"""Images as the evaluation and the figures see them: model space [-1, 1] -> uint8, and grids."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from getlib.io import atomic_write

__all__ = ["to_uint8", "image_grid", "grid_image", "save_grid"]


def to_uint8(x: Tensor) -> Tensor:
    """Model space [-1, 1] -> uint8 [0, 255] as the paper evaluates: x * 127.5 + 128, clipped."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Model-space images (N, C, H, W) in [-1, 1] -> one uint8 grid (rows, cols[, 3]), nrow per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol_rows = math.ceil(n / nrow)
    tiles = to_uint8(images).permute(0, 2, 3, 1).numpy()                         # (N, H, W, C)
    grid = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = tile
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    return grid[..., 0] if c == 1 else grid


def grid_image(images: Tensor, nrow: int | None = None, scale: int | None = None) -> Image.Image:
    """A PIL image of the grid (Jupyter shows it inline); small images are enlarged."""
    return Image.fromarray(image_grid(images, nrow, scale=scale or max(1, 64 // images.shape[-1])))


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> None:
    """Write a PNG grid (small images are enlarged so that a digit is readable)."""
    scale = scale or max(1, 64 // images.shape[-1])
    grid = image_grid(images, nrow, scale=scale)
    atomic_write(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))
