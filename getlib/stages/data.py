"""Stage data: the real images in one format for every data set, work/<profile>/data/dataset.npz."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from getlib.config import Params, ParamsError
from getlib.data import Dataset, real_images, save_dataset
from getlib.io import atomic_write_json


def prepare_data(p: Params) -> dict:
    """Load the data set that params names, check it, write it; its summary -> results/<profile>/data.json."""
    start = time.perf_counter()
    try:
        images = real_images(p.data.dataset, p.data.held_out, p.data.split_seed,
                             p.path(p.data.root) if p.data.root else None, p.data.check_md5)
    except ValueError as e:
        raise ParamsError(f"data: {e}") from e
    save_dataset(images, p.work("data", "dataset.npz"))
    summary = {"dataset": p.data.dataset, "train": len(images["train_raw"]), "held_out": len(images["held_raw"]),
               "image_shape": list(images["train_raw"].shape[1:]), "classes": int(images["train_labels"].max()) + 1,
               "seconds": time.perf_counter() - start}
    atomic_write_json(p.results("data.json"), summary)
    return summary


def load_data(p: Params) -> Dataset:
    """The data stage's output."""
    return Dataset(p.work("data", "dataset.npz"))


# ------------------------------------------------------------------------------------------------
# What the notebook shows (views of this stage's objects; nothing here writes)
# ------------------------------------------------------------------------------------------------

def class_counts(ds: Dataset) -> list[dict]:
    """Images per class in the training part and the held-out part (the FID floor's)."""
    return [{"class": c, "train": int((ds.train_labels == c).sum()), "held_out": int((ds.held_labels == c).sum())}
            for c in range(ds.num_classes)]


def images_by_class(ds: Dataset, per_class: int = 10) -> Tensor:
    """The first `per_class` training images of each class, class after class (model space)."""
    return torch.cat([ds.train_images[ds.train_labels == c][:per_class] for c in range(ds.num_classes)])
