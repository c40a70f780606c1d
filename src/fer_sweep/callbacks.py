"""Training callbacks: the study's per-epoch table, written as one row per epoch, the fresh start,
and keeping subnormal numbers out of a CPU run's weights.

Lightning's CSVLogger writes train, val and lr on separate rows; :class:`EpochMetricsCSV` writes
``metrics.csv`` with exactly one row per epoch (epoch, train_loss, val_loss, lr, train_acc,
val_acc), rewritten atomically after every epoch so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from fer_sweep.cpu import flush_subnormals_
from fer_sweep.io import atomic_write_text
from fer_sweep.results import write_results
from fer_sweep.run_folder import set_aside_checkpoints

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "train_acc", "val_acc")


def history_to_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in METRIC_COLUMNS})
    return buf.getvalue()


class EpochMetricsCSV(pl.Callback):
    """Write ``<dirpath>/metrics.csv`` from the module's per-epoch history."""

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "metrics.csv"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.close_epoch()
        if trainer.is_global_zero:
            atomic_write_text(self.path, history_to_csv(pl_module.history))


class StartAfresh(pl.Callback):
    """:func:`fer_sweep.run_folder.set_aside_checkpoints` once training is about to start
    (``on_fit_start``: the data is read and the model built, so a run that fails before training
    moves nothing), on global rank 0 only; ``results["init_weights"]``, loaded already, keeps
    pointing at its file when that file was among the checkpoints set aside."""

    def __init__(self, out_dir: Path, results: dict[str, Any]) -> None:
        self.out_dir, self.results = out_dir, results

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        moved = (self.out_dir / "checkpoints").resolve()
        start = Path(self.results["init_weights"]["path"]).resolve() if "init_weights" in self.results else None
        aside = set_aside_checkpoints(self.out_dir)
        if aside is not None and start is not None and start.is_relative_to(moved):
            self.results["init_weights"]["path"] = str(aside.resolve() / start.relative_to(moved))


class RecordSplits(pl.Callback):
    """Write what val and test are (``results["splits"]``) into results.json as soon as the data is
    set up (``on_fit_start``), not only at the end: a running or killed job's report can then call
    its columns PublicTest/PrivateTest even where the data copy it read is not at hand."""

    def __init__(self, out_dir: Path, results: dict[str, Any]) -> None:
        self.out_dir, self.results = out_dir, results

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sources = getattr(trainer.datamodule, "split_sources", None)
        if trainer.is_global_zero and sources:
            self.results["splits"] = dict(sources)
            write_results(self.out_dir, self.results)


class FlushSubnormals(pl.Callback):
    """Every ``every_n_steps`` optimizer steps of a CPU run, set the subnormal entries of the
    network's parameters and of the optimizers' state to zero (:func:`fer_sweep.cpu.flush_subnormals_`).

    Why: with weight decay, weights that get no gradient sink into the subnormal range, and a CPU
    multiplies subnormals about 100x slower.  ``deep_emotion_plus`` (L2 on the fully connected
    weights) ends its 250 epochs with 25,836 of the 40,500 ``fc1`` weights subnormal; a training
    step with those weights takes 59.4 ms instead of 51.4 ms on two threads
    (``python benchmarks/subnormal_speed.py``; 106 instead of 87 ms on one, ad hoc).  A flushed value moves by less than 1.2e-38 and,
    without a gradient, stays 0, so the run computes the same within float32 rounding.  GPUs
    handle subnormals at full speed: nothing is done there."""

    def __init__(self, every_n_steps: int = 20) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"FlushSubnormals: every_n_steps={every_n_steps!r}; expected a positive integer")
        self.every_n_steps = every_n_steps
        self._last_step = 0  # global_step of the last flush: once per optimizer step, never before the first

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps taken; it stays put over accumulated batches
        if pl_module.device.type != "cpu" or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        flush_subnormals_(pl_module.parameters())
        for opt in trainer.optimizers:
            for state in opt.state.values():
                flush_subnormals_(v for k, v in state.items() if k != "step")
