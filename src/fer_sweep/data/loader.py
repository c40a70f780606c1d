"""Batches served straight from an in-memory uint8 tensor: no per-sample decode, no workers.

The order of every epoch comes from ``(seed, epoch)`` alone, so a run resumed mid-way sees the
same batches as one that never stopped.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for one epoch of one random stream."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63 - 1)


class TensorBatches:
    """Iterable of ``(images uint8 (B, 48, 48), labels int64 (B,))`` batches.

    With ``extra`` (a per-sample tensor, e.g. a teacher's probabilities), batches are
    ``(images, labels, extra)``, the three gathered with the same indices."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0, epoch_fn: Callable[[], int] | None = None, extra: torch.Tensor | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer")
        if extra is not None and len(extra) != len(labels):
            raise ValueError(f"extra has {len(extra)} rows for {len(labels)} samples; expected one per sample")
        self.images, self.labels, self.extra = images, labels, extra
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch_fn = epoch_fn or (lambda: 0)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch_fn()))
            order = torch.randperm(n, generator=gen).to(self.labels.device)
        else:
            order = None
        for b in range(len(self)):
            if order is None:
                sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
                batch = (self.images[sl], self.labels[sl]) + (() if self.extra is None else (self.extra[sl],))
            else:
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                batch = (self.images.index_select(0, idx), self.labels.index_select(0, idx))
                if self.extra is not None:
                    batch += (self.extra.index_select(0, idx),)
            yield batch
