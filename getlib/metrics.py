"""Scores in a feature space: FID and KID through clean-fid, and the Inception Score.

Every image set goes the same way: uint8 PNGs in a folder -> clean-fid's `get_folder_features`
with a feature extractor -> clean-fid's `fid_from_feats` / `kernel_distance`. Only the feature space
changes: Inception ('clean' or 'legacy_tensorflow' mode) for CIFAR-10, or the data set's own
classifier (`getlib.features`) offline. Each score names its feature space and sample counts.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from getlib.features import FeatureNet

__all__ = ["FeatureSpace", "digits_feature_space", "inception_feature_space", "INCEPTION_PATH", "INCEPTION_URL",
           "write_images", "folder_features", "fid_kid", "score_images", "cifar10_reference", "inception_score"]

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_PATH = Path("/tmp/inception-2015-12-05.pt")   # where clean-fid looks for (and downloads) it


# ------------------------------------------------------------------------------------------------
# Feature spaces
# ------------------------------------------------------------------------------------------------

@dataclass
class FeatureSpace:
    """How clean-fid turns images into features: its mode, the extractor and the resize it uses."""
    name: str
    extractor: Callable[[Tensor], Tensor]          # float (B, 3, H, W) in [0, 255] -> (B, d)
    mode: str = "clean"
    resize: Callable[[np.ndarray], np.ndarray] | None = None   # None: clean-fid's own for `mode`
    device: torch.device = torch.device("cpu")
    class_probabilities: Callable[[Tensor], Tensor] | None = None   # for the Inception Score


def digits_feature_space(net: FeatureNet, device: torch.device | str = "cpu", name: str = "digits-cnn") -> FeatureSpace:
    """A classifier's (getlib.features) 128-d penultimate layer; images keep their size (no resize)."""
    net = net.to(device).eval()
    return FeatureSpace(name=name, device=torch.device(device),
                        extractor=lambda x: net.features(net.prepare(x)),
                        resize=lambda img: np.asarray(img, dtype=np.uint8))


def inception_feature_space(mode: str = "clean", device: torch.device | str = "cpu") -> FeatureSpace:
    """clean-fid's Inception (the TF-FID torchscript network) in 'clean' or 'legacy_tensorflow' mode.

    The weights are read from /tmp/inception-2015-12-05.pt, downloaded there if missing; when that
    fails this says so and where to put the file: there is no silent fallback.
    """
    if mode not in ("clean", "legacy_tensorflow"):
        raise ValueError(f"Inception FID mode must be 'clean' or 'legacy_tensorflow', got {mode!r}")
    if not INCEPTION_PATH.exists():
        from cleanfid.downloads_helper import check_download_inception
        try:
            check_download_inception(fpath=str(INCEPTION_PATH.parent))
        except Exception as e:  # offline: URLError at once
            INCEPTION_PATH.unlink(missing_ok=True)  # no half-written file left behind
            raise RuntimeError(
                f"Inception weights are not available: downloading {INCEPTION_URL} failed "
                f"({type(e).__name__}: {e}). Download that file on a machine with internet access and put it "
                f"at {INCEPTION_PATH}; Inception FID is not computed without it.") from e
    from cleanfid.inception_torchscript import InceptionV3W
    device = torch.device(device)
    # 'legacy_tensorflow' resizes inside the network, 'clean' in clean-fid's data loader (PIL bicubic)
    net = InceptionV3W(str(INCEPTION_PATH.parent), download=False,
                       resize_inside=mode == "legacy_tensorflow").to(device).eval()

    def probabilities(x: Tensor) -> Tensor:
        # the same network's class probabilities (1008 TF-Inception classes), as StyleGAN's IS uses them
        return net.base(x.to(device), return_features=False, no_output_bias=True)

    return FeatureSpace(name=f"inception-{mode}", extractor=lambda x: net(x.to(device)), mode=mode, device=device,
                        class_probabilities=probabilities)


# ------------------------------------------------------------------------------------------------
# Images on disk
# ------------------------------------------------------------------------------------------------

def write_images(images: Tensor, folder: str | Path) -> Path:
    """uint8 images (N, C, H, W) -> folder/000000.png ...; written to a temporary folder, then renamed."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists: write the images into a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    arr = images.permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(arr):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / f"{i:06d}.png")
    os.replace(tmp, folder)
    return folder


# ------------------------------------------------------------------------------------------------
# Metrics (clean-fid does the statistics)
# ------------------------------------------------------------------------------------------------

def folder_features(folder: str | Path, space: FeatureSpace, batch_size: int = 256) -> np.ndarray:
    from cleanfid.fid import get_folder_features
    return get_folder_features(str(folder), model=space.extractor, num_workers=0, batch_size=batch_size,
                               device=space.device, mode=space.mode, custom_fn_resize=space.resize,
                               verbose=False)


def _unit_scale(feats: np.ndarray) -> np.ndarray:
    """Rows scaled to norm sqrt(d): KID's cubic kernel (x.y/d + 1)^3 then sees cosine similarities
    (raw ReLU features of very different norms gave negative KID estimates)."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-12) * math.sqrt(feats.shape[1])


def fid_kid(feats: np.ndarray, reference: np.ndarray) -> dict:
    """FID (clean-fid's fid_from_feats) and KID (its kernel_distance, on unit-scaled features).

    kernel_distance averages over random subsets drawn from numpy's global generator: it is seeded
    here (and the caller's state restored) so that the same images always give the same KID."""
    from cleanfid.fid import fid_from_feats, kernel_distance
    from scipy.linalg import LinAlgWarning
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kid = float(kernel_distance(_unit_scale(feats), _unit_scale(reference)))
    finally:
        np.random.set_state(state)
    with warnings.catch_warnings():
        # With fewer images than feature dimensions (or dead ReLU units) a covariance is singular:
        # expected, and handled by clean-fid (sqrtm's result is checked and eps added to the
        # diagonals when it is not finite). scipy's LinAlgWarning would only print a local path.
        warnings.filterwarnings("ignore", message="Matrix is singular", category=LinAlgWarning)
        fid = float(fid_from_feats(feats, reference))
    return {"fid": fid, "kid": kid, "n": int(len(feats)), "n_reference": int(len(reference))}


@torch.no_grad()
def inception_score(folder: str | Path, space: FeatureSpace, splits: int = 10, batch_size: int = 256) -> dict:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) over the images in `folder`, mean and std over
    `splits` parts, from the Inception network's class probabilities (resized as its FID mode does)."""
    if space.class_probabilities is None:
        raise ValueError(f"the feature space {space.name!r} has no class probabilities: Inception Score needs Inception")
    from cleanfid.utils import ResizeDataset
    files = sorted(str(p) for p in Path(folder).glob("*.png"))
    splits = max(1, min(splits, len(files) // 2))   # a one-image split scores exactly 1, whatever the images
    data = ResizeDataset(files, mode=space.mode)
    if space.resize is not None:   # the resize its FID features use (as clean-fid's custom_fn_resize)
        data.fn_resize = space.resize
    probs = torch.cat([space.class_probabilities(torch.stack([data[j] for j in range(i, min(i + batch_size, len(files)))])).cpu()
                       for i in range(0, len(files), batch_size)]).double()
    scores = []
    for part in probs.chunk(splits):
        kl = part * (part.clamp_min(1e-12).log() - part.mean(0, keepdim=True).clamp_min(1e-12).log())
        scores.append(kl.sum(1).mean().exp().item())
    return {"is": float(np.mean(scores)), "is_std": float(np.std(scores)), "n": len(files), "splits": splits}


def cifar10_reference(root: str | Path, split: str, space: FeatureSpace, workdir: str | Path,
                      check_md5: bool = True) -> np.ndarray:
    """Features of the CIFAR-10 'train' (50,000) or 'test' (10,000) images from their on-disk files
    (getlib.data.cifar10), through the same folder-and-clean-fid road as generated images."""
    from getlib.data import cifar10
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    folder = Path(workdir) / f"cifar10-{split}"
    if not folder.exists():
        write_images(cifar10(root, train=split == "train", check_md5=check_md5)[0], folder)
    return folder_features(folder, space)


def score_images(images: Tensor, reference: np.ndarray, space: FeatureSpace, folder: str | Path,
                 inception_score_too: bool = False) -> dict:
    """Write uint8 `images` as PNGs into `folder` (new) and score them against reference features;
    with `inception_score_too` and a feature space that has class probabilities (Inception), also
    the Inception Score (a second pass over the images)."""
    folder = write_images(images, folder)
    scores = {**fid_kid(folder_features(folder, space), reference), "features": space.name}
    if inception_score_too and space.class_probabilities is not None:
        inception = inception_score(folder, space)
        scores.update({"is": inception["is"], "is_std": inception["is_std"]})
    return scores
