"""What notebooks/02_features shows: how the feature network classifies the held-out images."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from getlib.data import Dataset


@torch.no_grad()
def confusion_matrix(net: nn.Module, ds: Dataset) -> np.ndarray:
    """(true class, predicted class) counts of the feature network on the held-out images."""
    pred = net.eval()(ds.model_space(ds.held_raw)).argmax(1)
    k = ds.num_classes
    return np.bincount((ds.held_labels * k + pred).numpy(), minlength=k * k).reshape(k, k)
