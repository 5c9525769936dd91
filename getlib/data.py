"""Real image sets with int64 labels: digits in model space [-1, 1], CIFAR-10 as uint8."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["digits", "cifar10", "to_uint8", "CIFAR10_URL"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


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


def cifar10(root: str | Path, train: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from its python-version files under root/cifar-10-batches-py: uint8 (N, 3, 32, 32)
    images (50,000 train or 10,000 test) and labels. Nothing is downloaded here."""
    folder = Path(root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {missing}. Download and unpack {CIFAR10_URL} into {root} "
            f"(or run torchvision.datasets.CIFAR10('{root}', download=True) on a machine with internet access).")
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / name}: expected rows of 3072 values, got {data.shape}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch["labels"], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)
