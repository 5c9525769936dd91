"""Real data sets: the bundled digits and CIFAR-10's on-disk layout."""
import pickle

import numpy as np
import pytest
import torch

from getlib.data import cifar10, digits
from getlib.images import to_uint8


def test_digits_are_real_and_in_model_space():
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1
    assert sorted(y.unique().tolist()) == list(range(10))
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0])).tolist() == [0, 128, 255, 255]


def test_cifar10_reads_its_on_disk_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}, f)
    # the files are pickles: only the published ones are opened, unless told otherwise
    with pytest.raises(ValueError, match=f"{folder / 'data_batch_1'}: md5 .* is not the published "
                                         "c99cafc152244af753f735de768cd75f.*data.check_md5"):
        cifar10(tmp_path, train=True)
    x, y = cifar10(tmp_path, train=True, check_md5=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist()[:4] == [0, 1, 2, 9]
    assert cifar10(tmp_path, train=False, check_md5=False)[0].shape == (4, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        cifar10(tmp_path / "elsewhere")


def test_the_digits_data_set_file_is_byte_stable(tmp_path):
    """The data stage's file, pinned: every later stage's cache depends on these bytes, so a change
    in how it is written (member order, dtypes, compression) must be deliberate."""
    import hashlib

    from getlib.data import Dataset, real_images, save_dataset
    save_dataset(real_images("digits", held_out=450, split_seed=0), tmp_path / "dataset.npz")
    digest = hashlib.sha256((tmp_path / "dataset.npz").read_bytes()).hexdigest()
    assert digest == "5e5f175ad7dcdac3848f8d82d75f708beb3c7ec97dc36916b8c5f09217af0092"
    ds = Dataset(tmp_path / "dataset.npz")
    assert (len(ds.train_raw), len(ds.held_raw), ds.levels, ds.shape, ds.num_classes) == (1347, 450, 16, (1, 8, 8), 10)
