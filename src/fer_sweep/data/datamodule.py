"""FER2013 as a LightningDataModule: decoded once, held in memory, augmented per batch.

Setup reads FER2013 (either layout) through the tensor cache, picks the split, optionally folds
to 6 classes or takes a stratified subset, and logs the class counts of every split.  Batches are
uint8 until they reach the training device; :meth:`on_after_batch_transfer` normalises them and,
in training, augments them there (on the GPU when training runs on one).

``seed=None`` (the config's ``seed: null``) means an unseeded run: one seed is drawn from the OS for
the run (:attr:`FER2013DataModule.run_seed`), so within it epochs still differ and DDP ranks share
one permutation; it goes into checkpoints, so a resumed run continues the same sequence.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from fer_sweep.data.augment import BatchAugment
from fer_sweep.data.cache import load_fer2013
from fer_sweep.data.classes import class_names, fold_to_six
from fer_sweep.data.errors import OBTAIN_HINT, FER2013Error
from fer_sweep.data.loader import DrawnSeed, TensorBatches, draw_shared_seed, epoch_seed, rank_stream
from fer_sweep.data.preprocess import to_model_input
from fer_sweep.data.splits import split_indices, split_sources, stratified_split

log = logging.getLogger(__name__)


def default_root() -> str | None:
    return os.environ.get("FER2013_ROOT")


class FER2013DataModule(DrawnSeed, pl.LightningDataModule):
    """Serve FER2013 train/val/test batches from memory; under DDP each rank gets its own shard
    (:class:`~fer_sweep.data.loader.TensorBatches` shards itself: it is no DataLoader, so Lightning
    adds no DistributedSampler)."""

    def __init__(self, root: str | None = None, cache_dir: str | None = None, split: str = "official", split_seed: int = 12345, num_classes: int = 7, batch_size: int = 128, eval_batch_size: int = 1024, augment: BatchAugment | None = None, device_resident: bool = True, subset: float | None = None, seed: int | None = 0, val_fraction: float = 0.1) -> None:
        super().__init__()
        if root in (None, "", "None"):
            root = default_root()
        if not root:
            raise FER2013Error(f"no FER2013 path: set data.root=<path> or FER2013_ROOT; {OBTAIN_HINT}")
        if subset is not None and not 0.0 < float(subset) <= 1.0:
            raise FER2013Error(f"data.subset={subset}; expected a fraction in (0, 1] or null")
        self.root = str(Path(root).expanduser())
        self.cache_dir, self.split, self.split_seed = cache_dir, split, int(split_seed)
        self.num_classes, self.batch_size, self.eval_batch_size = int(num_classes), int(batch_size), int(eval_batch_size)
        self.augment = augment or BatchAugment()
        self.device_resident, self.subset, self.val_fraction = device_resident, subset, val_fraction
        self._init_seed(seed)
        self.class_names = class_names(self.num_classes)
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.class_counts: dict[str, list[int]] = {}
        self._aug_gen: torch.Generator | None = None
        self._aug_epoch = -1
        self.train_targets: torch.Tensor | None = None
        self.split_sources: dict[str, str] = {}
        """What val and test are, in words (:func:`fer_sweep.data.splits.split_sources`), once set up."""

    # -- setup -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if not self.tensors:  # decode + cache once, on one process, before any worker reads it
            self._raw = load_fer2013(self.root, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        self.run_seed  # with seed=None: draw it now, where every DDP rank is (the draw is a broadcast)
        if self.tensors:
            return
        raw = getattr(self, "_raw", None) or load_fer2013(self.root, self.cache_dir)
        self._raw = None
        idx = split_indices(raw.labels, raw.usage, self.split, self.split_seed, self.val_fraction)
        self.split_sources = split_sources(set(np.unique(raw.usage).tolist()), self.split, self.val_fraction, subset=self.subset)
        images, labels = torch.from_numpy(raw.images), torch.from_numpy(raw.labels)
        if self.num_classes == 6:
            labels = fold_to_six(labels)
        for name, ind in idx.items():
            if self.subset is not None and float(self.subset) < 1.0:
                _, ind = stratified_split(labels.numpy(), ind, float(self.subset), self.split_seed + 1)
            ind_t = torch.from_numpy(np.asarray(ind, dtype=np.int64))
            self.tensors[name] = (images.index_select(0, ind_t).contiguous(), labels.index_select(0, ind_t).contiguous())
            self.class_counts[name] = torch.bincount(self.tensors[name][1], minlength=self.num_classes).tolist()
        self._move_to_training_device()
        log.info("FER2013 %s split, %d classes, from %s", self.split, self.num_classes, self.root)
        for name, counts in self.class_counts.items():
            log.info("  %-5s %6d  %s", name, sum(counts), ", ".join(f"{c}={n}" for c, n in zip(self.class_names, counts)))

    def _draw_seed(self) -> int:  # the seed of run_seed when seed=None
        return draw_shared_seed(self.trainer, "this run's data order and augmentation")

    def state_dict(self) -> dict:
        """With ``seed=None``, the drawn seed (Lightning stores it in checkpoints), so a run resumed
        from ``last.ckpt`` continues its own orders rather than drawing new ones."""
        return {"drawn_seed": self._drawn_seed} if self.seed is None and self._drawn_seed is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.seed is None and state_dict.get("drawn_seed") is not None:
            self._drawn_seed, self._aug_gen = int(state_dict["drawn_seed"]), None

    def _move_to_training_device(self) -> None:
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        if self.device_resident and device is not None and device.type != "cpu":
            self.tensors = {k: (x.to(device), y.to(device)) for k, (x, y) in self.tensors.items()}

    def class_weights(self) -> torch.Tensor:
        """Balanced weights for the loss: ``n / (k * count_c)`` over the train split."""
        counts = torch.tensor(self.class_counts["train"], dtype=torch.float32)
        return counts.sum() / (len(counts) * counts.clamp(min=1))

    def set_train_targets(self, targets: torch.Tensor | None) -> None:
        """Per-face extra targets for the train split (e.g. a teacher's class probabilities, one
        row per training face in the order of ``tensors["train"]``); train batches then carry them
        as a third element.  ``None`` removes them."""
        if targets is not None:
            n = len(self.tensors["train"][1])
            if len(targets) != n:
                raise ValueError(f"train targets have {len(targets)} rows; the train split has {n} faces")
            targets = targets.to(self.tensors["train"][1].device)
        self.train_targets = targets

    # -- loaders -----------------------------------------------------------------------------
    def _epoch(self) -> int:
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def train_dataloader(self) -> TensorBatches:
        x, y = self.tensors["train"]
        return TensorBatches(x, y, self.batch_size, shuffle=True, seed=self.run_seed, epoch_fn=self._epoch, extra=self.train_targets)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["test"], self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()

    # -- per-batch work on the training device -----------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *extra = batch  # extra: the train targets, when set (labels of the same faces)
        x = to_model_input(images)
        if self.trainer is not None and self.trainer.training and self.augment.active:
            x = self.augment(x, self._generator(x.device))
        return (x, labels, *extra)

    def _generator(self, device: torch.device) -> torch.Generator:
        epoch = self._epoch()
        if self._aug_gen is None or self._aug_epoch != epoch or self._aug_gen.device != device:
            rank = getattr(self.trainer, "global_rank", 0)  # 0 without a trainer too
            self._aug_gen = torch.Generator(device=device).manual_seed(epoch_seed(self.run_seed, epoch, stream=rank_stream(1, rank)))
            self._aug_epoch = epoch
        return self._aug_gen
