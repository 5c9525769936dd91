"""Real image sets with int64 labels: digits in model space [-1, 1], CIFAR-10 as uint8."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["digits", "cifar10", "to_uint8", "CIFAR10_URL"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The published md5 of each file of the python version (as torchvision checks them). The files are
# pickles: a file is opened only when it is the published one, unless the caller says otherwise.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}


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


def cifar10(root: str | Path, train: bool = True, check_md5: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from its python-version files under root/cifar-10-batches-py: uint8 (N, 3, 32, 32)
    images (50,000 train or 10,000 test) and labels. Nothing is downloaded here. Each file must
    have its published md5 (CIFAR10_MD5) unless check_md5 is False."""
    folder = Path(root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {missing}. Download and unpack {CIFAR10_URL} into {root} "
            f"(or run torchvision.datasets.CIFAR10('{root}', download=True) on a machine with internet access).")
    images, labels = [], []
    for name in names:
        data = (folder / name).read_bytes()
        if check_md5 and hashlib.md5(data).hexdigest() != CIFAR10_MD5[name]:
            raise ValueError(f"{folder / name}: md5 {hashlib.md5(data).hexdigest()} is not the published "
                             f"{CIFAR10_MD5[name]}: download {CIFAR10_URL} again (or set data.check_md5: false "
                             f"for a copy you changed on purpose)")
        try:
            batch = pickle.loads(data, encoding="latin1")
            batch["data"], batch["labels"]
        except Exception as e:
            raise ValueError(f"{folder / name}: not a CIFAR-10 batch file ({type(e).__name__}: {e})") from e
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / name}: expected rows of 3072 values, got {data.shape}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch["labels"], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)
