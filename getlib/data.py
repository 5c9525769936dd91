"""Real image sets with int64 labels: digits in model space [-1, 1], CIFAR-10 as uint8; and the
pipeline's data set file (`real_images`, `save_dataset`, `Dataset`), one format for every data set."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from getlib.images import to_uint8
from getlib.io import atomic_save_npz

__all__ = ["digits", "cifar10", "CIFAR10_URL", "split_indices", "real_images", "save_dataset", "Dataset"]

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


def split_indices(n: int, held_out: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed random train / held-out split of n items."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[held_out:], perm[:held_out]


# ------------------------------------------------------------------------------------------------
# The pipeline's data set: integer pixels, labels and a held-out set
# ------------------------------------------------------------------------------------------------

def real_images(dataset: str, held_out: int = 450, split_seed: int = 0, root: str | Path | None = None,
                check_md5: bool = True) -> dict:
    """The training and held-out images of `dataset` as integer pixels with their `levels`:
    'digits' (values 0..16, a seeded split that keeps `held_out` images apart) or 'cifar10' (0..255,
    its own train / test files under `root`, the test images held out)."""
    if dataset == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        raw, labels, levels = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1), torch.from_numpy(d.target), 16
        if not 0 <= held_out < len(raw):
            raise ValueError(f"held_out {held_out} must be below the {len(raw)} digits")
        train_idx, held_idx = split_indices(len(raw), held_out, split_seed)
        train_raw, train_labels, held_raw, held_labels = raw[train_idx], labels[train_idx], raw[held_idx], labels[held_idx]
    elif dataset == "cifar10":
        train_raw, train_labels = cifar10(root, train=True, check_md5=check_md5)
        held_raw, held_labels = cifar10(root, train=False, check_md5=check_md5)
        levels = 255
    else:
        raise ValueError(f"unknown data set {dataset!r}: 'digits' or 'cifar10'")
    for name, x in (("train", train_raw), ("held-out", held_raw)):
        if x.ndim != 4 or x.shape[-1] != x.shape[-2] or x.shape[1] not in (1, 3):
            raise ValueError(f"{dataset} {name} images must be (N, 1 or 3, H, H), got {tuple(x.shape)}")
    return {"name": dataset, "levels": levels, "train_raw": train_raw, "train_labels": train_labels,
            "held_raw": held_raw, "held_labels": held_labels}


def save_dataset(images: dict, path: str | Path) -> None:
    """`real_images`' result -> one .npz file (uint8 pixels, int64 labels), written atomically."""
    atomic_save_npz(path, name=np.array(images["name"]), levels=np.array(images["levels"]),
                    train_raw=images["train_raw"].numpy().astype(np.uint8),
                    train_labels=images["train_labels"].numpy().astype(np.int64),
                    held_raw=images["held_raw"].numpy().astype(np.uint8),
                    held_labels=images["held_labels"].numpy().astype(np.int64))


class Dataset:
    """A data set file written by `save_dataset`: integer pixels `raw` with `levels` (model space =
    raw / (levels / 2) - 1, exact for digits' 0..16 and CIFAR's 0..255), labels, and a held-out set
    that no generative model sees (the FID floor)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no data set at {path}: run the data stage first")
        with np.load(path) as f:
            self.levels = int(f["levels"])
            self.train_raw, self.train_labels = torch.from_numpy(f["train_raw"]), torch.from_numpy(f["train_labels"])
            self.held_raw, self.held_labels = torch.from_numpy(f["held_raw"]), torch.from_numpy(f["held_labels"])
            self.name = str(f["name"])

    def model_space(self, raw: Tensor) -> Tensor:
        return raw.float() / (self.levels / 2) - 1

    @property
    def train_images(self) -> Tensor:
        """Training images in model space [-1, 1], (N, C, H, W)."""
        return self.model_space(self.train_raw)

    def uint8(self, raw: Tensor) -> Tensor:
        """As the evaluation sees images: model space -> uint8 (`to_uint8`)."""
        return to_uint8(self.model_space(raw))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_raw.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max()) + 1
