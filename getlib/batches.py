"""What a training step sees: a deterministic schedule of (pair, epoch) items and their tensors.

Step s of a rank takes slice s % steps_per_epoch of epoch s // steps_per_epoch's permutation of the
rank's own pairs, seeded by (seed, rank, epoch); each item's initial equilibrium state z0 follows
the one z0 rule (`models.z0_for_keys`), keyed by (seed, the pair's index in the whole set, epoch).
So a step's batch depends on (seed, step, world size) alone, and nothing needs saving to resume.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from getlib.models import mix_seed, z0_for_keys
from getlib.pairs import PairDataset

__all__ = ["StepBatches", "TrainingItems", "stacked"]


class StepBatches(Sampler):
    """Batches of (local index, epoch): step s takes slice s % steps_per_epoch of epoch
    s // steps_per_epoch's permutation (seeded by seed, rank, epoch); starts at `start_step`."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, start_step: int, max_steps: int):
        if n < batch:
            raise ValueError(f"this rank holds {n} pairs, fewer than its batch of {batch}")
        self.n, self.batch, self.seed, self.rank = n, batch, seed, rank
        self.start, self.stop = start_step, max_steps
        self.steps_per_epoch = n // batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, None
        for step in range(self.start, self.stop):
            e, j = divmod(step, self.steps_per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(mix_seed(self.seed, self.rank, e))
                epoch, perm = e, torch.randperm(self.n, generator=g).tolist()
            yield [(i, e) for i in perm[j * self.batch:(j + 1) * self.batch]]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class TrainingItems(Dataset):
    """(latents, images, labels, z0) for a batch of (local index, epoch) items; z0 has no columns
    for models without one. The DataLoader fetches a whole batch at once through `__getitems__`."""

    def __init__(self, pairs: PairDataset, z0_shape: tuple[int, ...] | None, seed: int,
                 targets: list[int] | None = None):
        self.pairs, self.z0_shape, self.seed = pairs, z0_shape, seed
        self.targets = targets   # shuffle_targets: local index -> the local index whose image it learns

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(t[0] for t in self.__getitems__([item]))

    def __getitems__(self, items: list[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        indices = [i for i, _ in items]
        latents, images, labels = self.pairs.batch(indices)
        if self.targets is not None:
            images = self.pairs.batch([self.targets[i] for i in indices])[1]
        if self.z0_shape is None:
            return latents, images, labels, torch.empty(len(items), 0)
        keys = [(self.seed, g_index, epoch) for g_index, (_, epoch) in
                zip(self.pairs.global_indices(indices).tolist(), items)]
        return latents, images, labels, z0_for_keys(keys, self.z0_shape)


def stacked(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """collate_fn for `TrainingItems.__getitems__`, which already returns stacked tensors."""
    return batch


