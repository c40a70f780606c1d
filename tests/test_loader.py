"""TensorBatches under DDP: each rank serves its own shard (it is no DataLoader, so Lightning adds
no DistributedSampler).  Ranks are given explicitly here; tests/test_ddp.py runs two real ones."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fer_sweep.data.loader import TensorBatches, dist_rank_world


def _data(n: int):
    return torch.zeros(n, 48, 48, dtype=torch.uint8), torch.arange(n)


def _labels(batches) -> list[int]:
    return torch.cat([b[1] for b in batches]).tolist()


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (10, 3), (2, 3)])
def test_training_shards_split_one_permutation_with_equal_batch_counts(n, world):
    images, labels = _data(n)
    whole = _labels(TensorBatches(images, labels, 3, shuffle=True, seed=7, epoch_fn=lambda: 1))
    shards = [TensorBatches(images, labels, 3, shuffle=True, seed=7, epoch_fn=lambda: 1, rank=r, world_size=world, extra=labels * 10) for r in range(world)]
    seen = [_labels(s) for s in shards]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-(-(-n // world)) // 3)  # same batches on every rank
    assert len({len(s) for s in seen}) == 1
    # strided parts of the single-process permutation, padded with its first indices
    padded = [whole[i % n] for i in range(len(seen[0]) * world)]
    assert all(seen[r] == padded[r::world] for r in range(world))
    counts = Counter(x for s in seen for x in s)
    assert set(counts) == set(range(n)) and sum(counts.values()) - n == (-n) % world
    assert all(torch.equal(b[2], b[1] * 10) for s in shards for b in s)  # extra follows the same indices


@pytest.mark.parametrize("n, world, bs", [(11, 2, 4), (10, 3, 4), (5, 2, 1024)])
def test_eval_shards_hold_every_face_exactly_once(n, world, bs):
    images, labels = _data(n)
    seen = [_labels(TensorBatches(images, labels, bs, rank=r, world_size=world)) for r in range(world)]
    assert sum(seen, []) == list(range(n))
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_single_process_is_unsharded_and_ranks_are_checked():
    images, labels = _data(10)
    assert dist_rank_world() == (0, 1)  # no process group in this test process
    assert _labels(TensorBatches(images, labels, 4, shuffle=True, seed=3)) == _labels(TensorBatches(images, labels, 4, shuffle=True, seed=3, rank=0, world_size=1))
    assert len(TensorBatches(images, labels, 4, world_size=1)) == 3
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        TensorBatches(images, labels, 4, rank=2, world_size=2)
