"""Stand-ins for what CI cannot download: CIFAR-10's on-disk files, an EDM repository with a
checkpoint of an untrained network (the official pickles hold classes from EDM's `torch_utils`), and
a scripted network with the interface of clean-fid's TF-Inception torchscript."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

EDM_NET = '''
import torch

class StandInPrecond(torch.nn.Module):
    """An untrained conv denoiser with EDM's interface: D(x, sigma, one-hot labels)."""
    def __init__(self, label_dim=0):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = 32, 3, label_dim
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.label = torch.nn.Linear(max(label_dim, 1), 3)

    def forward(self, x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1, 1, 1, 1)
        x = x.float()
        y = self.conv(x / (1 + sigma ** 2).sqrt())
        if self.label_dim:
            y = y + self.label(class_labels.float())[:, :, None, None]
        return (x / (1 + sigma ** 2) + y * sigma / (1 + sigma ** 2).sqrt()).float()
'''


def make_edm_repo(folder: Path) -> Path:
    """A folder laid out like github.com/NVlabs/edm, as far as unpickling its checkpoints needs."""
    for pkg in ("dnnlib", "torch_utils"):
        (folder / pkg).mkdir(parents=True, exist_ok=True)
        (folder / pkg / "__init__.py").write_text("")
    (folder / "torch_utils" / "standin_net.py").write_text(EDM_NET)
    return folder


def make_edm_checkpoint(repo: Path, path: Path, label_dim: int = 0) -> Path:
    """An EDM-style pickle {'ema': network} of the stand-in network."""
    sys.path.insert(0, str(repo))
    try:
        from torch_utils.standin_net import StandInPrecond
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump({"ema": StandInPrecond(label_dim), "augment_pipe": None}, f)
    finally:
        sys.path.remove(str(repo))
        for name in [m for m in sys.modules if m.startswith(("torch_utils", "dnnlib"))]:
            del sys.modules[name]
    return path


def make_cifar10(root: Path, per_batch: int = 8, test: int = 16, seed: int = 0) -> Path:
    """Random 32x32x3 images in CIFAR-10's python-version layout: root/cifar-10-batches-py/."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    return root


def stand_in_inception(path):
    """A scripted module with the TF-Inception torchscript's interface (features, class probabilities)."""
    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 2048)

        def forward(self, x):
            return torch.relu(self.proj(x.mean((2, 3))))

    class Stand(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()
            self.head = torch.nn.Linear(2048, 1008)

        def forward(self, img, return_features: bool = False, no_output_bias: bool = False):
            x = torch.nn.functional.interpolate(img, size=(299, 299), mode="bilinear") / 128 - 1
            features = self.layers(x)
            return features if return_features else torch.softmax(self.head(features), dim=1)

    torch.jit.script(Stand()).save(str(path))
