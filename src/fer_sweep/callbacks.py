"""Training callbacks: the study's per-epoch table, written as one row per epoch.

Lightning's CSVLogger writes train, val and lr on separate rows; :class:`EpochMetricsCSV` writes
``metrics.csv`` with exactly one row per epoch (epoch, train_loss, val_loss, lr, train_acc,
val_acc), rewritten atomically after every epoch so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytorch_lightning as pl

from fer_sweep.io import atomic_write_text

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
