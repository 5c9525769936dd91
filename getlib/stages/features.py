"""Stage features: the FID feature space and the real images' reference features."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from getlib.config import Params, device_of
from getlib.features import load_feature_net, train_feature_net
from getlib.io import atomic_write, atomic_write_json
from getlib.metrics import FeatureSpace, digits_feature_space, folder_features, inception_feature_space, write_images
from getlib.notebook import publishing
from getlib.stages.data import load_data


def feature_space(p: Params) -> FeatureSpace:
    """The feature space every FID of this profile uses."""
    device = device_of(p.evaluate.device)
    if p.features.network == "inception":
        return inception_feature_space(p.features.mode, device)
    net, _ = load_feature_net(p.work("features", "feature_net.pt"))
    return digits_feature_space(net, device, name=f"{p.data.dataset}-cnn")


def make_features(p: Params) -> dict:
    """Train the classifier (network 'classifier') and compute the reference features: the
    training images (or, for Inception with reference 'test', the held-out ones), through the same
    PNG-folder road as every generated set."""
    ds = load_data(p)
    folder = p.work("features")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {}
    if p.features.network == "classifier":
        images = torch.cat([ds.train_images, ds.model_space(ds.held_raw)])
        labels = torch.cat([ds.train_labels, ds.held_labels])
        n = len(ds.train_raw)
        _, report = train_feature_net(images, labels, torch.arange(n), torch.arange(n, len(images)),
                                      epochs=p.features.epochs, seed=p.data.split_seed,
                                      out_path=folder / "feature_net.pt")
    space = feature_space(p)
    use_held_out = p.features.network == "inception" and p.features.reference == "test"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        reference = folder_features(write_images(ds.uint8(ds.held_raw if use_held_out else ds.train_raw),
                                                 Path(tmp) / "reference"), space)
    atomic_write(folder / "reference.npy", lambda f: np.save(f, reference))
    summary = {"network": space.name, "reference": p.features.reference if p.features.network == "inception"
               else "train", "n_reference": len(reference), "feature_dim": int(reference.shape[1]),
               **{k: v for k, v in report.items() if k != "seconds"}, "seconds": time.perf_counter() - start}
    if publishing():   # (results/<profile>/features.json)
        atomic_write_json(p.results("features.json"), summary)
    return summary
