"""Batches served straight from an in-memory uint8 tensor: no per-sample decode, no workers.

The order of every epoch comes from ``(seed, epoch)`` alone, so a run resumed mid-way sees the
same batches as one that never stopped.

These batches are not a ``torch.utils.data.DataLoader``, so Lightning adds no
``DistributedSampler`` under DDP: :class:`TensorBatches` shards itself.  With ``torch.distributed``
initialised and a world size above 1, every rank serves only its own part of the split (see
:class:`TensorBatches`), so ranks do not train on, or count in the test metrics, the same faces.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Iterator

import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for one epoch of one random stream."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63 - 1)


STREAMS = 3
"""Random streams per rank: 0 shuffle (shared by all ranks), 1 augmentation, 2 dropout."""


def rank_stream(stream: int, rank: int) -> int:
    """Stream ``stream`` (1 augmentation, 2 dropout) on DDP rank ``rank``: each rank draws its own
    augmentation and dropout for its own faces, and rank 0 keeps the single-process streams, so a
    one-process run draws exactly as before.  The shuffle (stream 0) is never passed through here:
    the ranks' shards are disjoint only when they cut one shared permutation."""
    return stream + STREAMS * int(rank)


def fresh_seed() -> int:
    """A new seed from the OS, for ``seed=null`` (a different run each time): used where a run
    needs *some* seed for its epoch orders and augmentation, never recorded as the run's seed."""
    return random.SystemRandom().randrange(2**32)


def draw_shared_seed(trainer, use: str) -> int:
    """A fresh seed for ``seed=null``, the same on every DDP rank (broadcast from rank 0, as a
    configured seed would be: the ranks' shards are disjoint only with one permutation).  The
    broadcast is a collective, so every rank must call this at the same point (``setup``)."""
    seed = fresh_seed()
    if trainer is not None and getattr(trainer, "world_size", 1) > 1:
        seed = int(trainer.strategy.broadcast(seed, src=0))
    logging.getLogger(__name__).info("seed=null: drew seed %d for %s", seed, use)
    return seed


class DrawnSeed:
    """``run_seed`` for an object with ``seed`` (int or None) and ``_drawn_seed``: the configured
    seed, or with ``seed=None`` one drawn for this run at first use (:func:`draw_shared_seed`,
    from the attached trainer's ``_draw_seed``) and kept, so a checkpoint can carry it."""

    seed: int | None
    _drawn_seed: int | None

    def _init_seed(self, seed: int | str | None) -> None:
        self.seed = None if seed in (None, "", "None", "null") else int(seed)
        self._drawn_seed = None  # with seed=None: this run's seed, drawn at setup (or first use)

    @property
    def run_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        if self._drawn_seed is None:
            self._drawn_seed = self._draw_seed()
        return self._drawn_seed

    def _draw_seed(self) -> int:
        raise NotImplementedError


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TensorBatches:
    """Iterable of ``(images uint8 (B, 48, 48), labels int64 (B,))`` batches.

    With ``extra`` (a per-sample tensor, e.g. a teacher's probabilities), batches are
    ``(images, labels, extra)``, the three gathered with the same indices.

    Sharding, with ``world_size`` W > 1 (default: that of ``torch.distributed`` when it is
    initialised, else 1): shuffled (training) batches split the epoch's permutation - the same on
    every rank, as it comes from the shared seed - into strided parts padded by repeating its first
    few indices to a multiple of W, as ``DistributedSampler(drop_last=False)`` does.  Every face is
    seen each epoch, at most W - 1 of them twice, and every rank has the same number of batches (DDP
    runs a gradient all-reduce per step, so an uneven count would hang).  Unshuffled (eval) batches
    take contiguous slices that together hold every face exactly once; they may differ by one face,
    which is fine where nothing runs a collective per step (torchmetrics sums its states at
    ``compute``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0, epoch_fn: Callable[[], int] | None = None, extra: torch.Tensor | None = None, rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer")
        if extra is not None and len(extra) != len(labels):
            raise ValueError(f"extra has {len(extra)} rows for {len(labels)} samples; expected one per sample")
        self.images, self.labels, self.extra = images, labels, extra
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch_fn = epoch_fn or (lambda: 0)
        if world_size is None:
            rank, world_size = dist_rank_world()
        if not 0 <= int(rank or 0) < int(world_size):
            raise ValueError(f"rank={rank}, world_size={world_size}; expected 0 <= rank < world_size")
        self.rank, self.world_size = int(rank or 0), int(world_size)

    def _eval_bounds(self) -> tuple[int, int]:
        """This rank's contiguous slice ``[start, stop)`` of an unshuffled split."""
        n, r, w = len(self.labels), self.rank, self.world_size
        return r * n // w, (r + 1) * n // w

    def _shard_size(self) -> int:
        if self.shuffle:
            return -(-len(self.labels) // self.world_size)  # padded: the same on every rank
        start, stop = self._eval_bounds()
        return stop - start

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch_fn()))
            order = torch.randperm(n, generator=gen)
            if self.world_size > 1:
                padded = torch.arange(self._shard_size() * self.world_size) % n  # repeats the first few
                order = order[padded][self.rank :: self.world_size]
            order = order.to(self.labels.device)
        else:
            order = None
            start, stop = self._eval_bounds()
        for b in range(len(self)):
            if order is None:
                sl = slice(start + b * self.batch_size, min(stop, start + (b + 1) * self.batch_size))
                batch = (self.images[sl], self.labels[sl]) + (() if self.extra is None else (self.extra[sl],))
            else:
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                batch = (self.images.index_select(0, idx), self.labels.index_select(0, idx))
                if self.extra is not None:
                    batch += (self.extra.index_select(0, idx),)
            yield batch
