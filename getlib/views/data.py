"""What notebooks/01_data shows: the data set's classes and images."""
from __future__ import annotations

import torch
from torch import Tensor

from getlib.data import Dataset


def class_counts(ds: Dataset) -> list[dict]:
    """Images per class in the training part and the held-out part (the FID floor's)."""
    return [{"class": c, "train": int((ds.train_labels == c).sum()), "held_out": int((ds.held_labels == c).sum())}
            for c in range(ds.num_classes)]


def images_by_class(ds: Dataset, per_class: int = 10) -> Tensor:
    """The first `per_class` training images of each class, class after class (model space)."""
    return torch.cat([ds.train_images[ds.train_labels == c][:per_class] for c in range(ds.num_classes)])
