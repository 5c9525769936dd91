"""Stage data: the real images in one format for every data set, work/<profile>/data/dataset.npz."""
from __future__ import annotations

import time

from getlib.config import Params, ParamsError
from getlib.data import Dataset, real_images, save_dataset
from getlib.io import atomic_write_json
from getlib.notebook import publishing


def prepare_data(p: Params) -> dict:
    """Load the data set that params names, check it, write it; its summary -> results/<profile>/data.json
    (when `publishing()`)."""
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
    if publishing():
        atomic_write_json(p.results("data.json"), summary)
    return summary


def load_data(p: Params) -> Dataset:
    """The data stage's output."""
    return Dataset(p.work("data", "dataset.npz"))
