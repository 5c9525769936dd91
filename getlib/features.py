"""The offline profile's FID feature network: a small CNN classifier trained on the data set itself.

Inception weights cannot be downloaded offline, and Inception features mean little for 8x8 digits,
so the digits profile measures FID in the 128-d penultimate layer of a classifier trained on the
digits (a fixed train / held-out split; its held-out accuracy is reported with every FID). The
network takes what clean-fid hands a custom feature extractor: float (B, 3, H, W) in [0, 255].
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.images import to_uint8
from getlib.io import atomic_torch_save, first_line

__all__ = ["FeatureNet", "train_feature_net", "load_feature_net", "image_features"]


class FeatureNet(nn.Module):
    """3 conv layers -> 128-d features -> class logits. The last feature map is flattened, not
    pooled: where a stroke is matters for digits (pooling it away cost 2.5 points of accuracy)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128, image_size: int = 8):
        super().__init__()
        self.in_channels = in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * (image_size // 2) ** 2, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def prepare(self, images_255: Tensor) -> Tensor:
        """clean-fid's input, float (B, 3, H, W) in [0, 255] (grey images arrive as 3 equal
        channels), to the model space [-1, 1] with this network's channel count."""
        x = images_255.float() / 127.5 - 1
        return x[:, :1] if self.in_channels == 1 and x.shape[1] == 3 else x

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations of model-space images, (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random +-1 pixel translations (zero-padded with the background value -1)."""
    dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
    x = F.pad(x, (1, 1, 1, 1), value=-1.0)
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    return x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def train_feature_net(images: Tensor, labels: Tensor, train_idx: Tensor, test_idx: Tensor,
                      epochs: int = 40, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                      out_path: str | Path | None = None) -> tuple[FeatureNet, dict]:
    """Train on images[train_idx] (model space), report accuracy on images[test_idx]."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = FeatureNet(images.shape[1], int(labels.max()) + 1, image_size=images.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            loss = F.cross_entropy(net(_shift(images[idx], g)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    report = {"held_out_accuracy": accuracy, "train_size": len(train_idx), "held_out_size": len(test_idx),
              "epochs": epochs, "seconds": time.perf_counter() - start}
    if out_path is not None:
        atomic_torch_save({"state_dict": net.state_dict(), "in_channels": images.shape[1],
                           "num_classes": int(labels.max()) + 1, "image_size": images.shape[-1],
                           "report": {k: v for k, v in report.items() if k != "seconds"}}, out_path)
    return net, report


def load_feature_net(path: str | Path) -> tuple[FeatureNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no feature network at {path}: run the features stage first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureNet(ckpt["in_channels"], ckpt["num_classes"], image_size=ckpt["image_size"])
        net.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise ValueError(f"{path}: not a feature network saved by train_feature_net "
                         f"({type(e).__name__}: {first_line(e)})") from e
    return net.eval().requires_grad_(False), ckpt["report"]


@torch.no_grad()
def image_features(net: FeatureNet, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Features of model-space images as clean-fid would see them: quantised to uint8 first."""
    out = []
    for lo in range(0, len(images), batch_size):
        x = to_uint8(images[lo:lo + batch_size]).float()
        out.append(net.features(net.prepare(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)))
    return torch.cat(out)
