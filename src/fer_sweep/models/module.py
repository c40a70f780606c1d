"""The LightningModule: cross-entropy training of any FER network, recording what the study recorded.

Every epoch yields one record - epoch, train loss, val loss, learning rate, train accuracy, val
accuracy - kept in :attr:`FERClassifier.history` for the metrics writer.  Losses are summed on the
device and checked once per epoch, so a NaN/inf loss ends the run as *diverged* without a
per-step host sync.  Test collects accuracy, macro-F1 and the confusion matrix.

Under DDP every rank sees its own shard of each split (:class:`fer_sweep.data.loader.TensorBatches`),
so the epoch's loss sums are added across ranks once per epoch (:meth:`FERClassifier._mean`) and the
torchmetrics states are summed at ``compute``; no step runs a collective, so eval shards may differ
in size.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from fer_sweep.data.loader import DrawnSeed, draw_shared_seed, epoch_seed, rank_stream
from fer_sweep.models.distill import distillation_loss, teacher_probabilities
from fer_sweep.models.registry import net_spec

log = logging.getLogger(__name__)


def report_from_confusion(confusion: torch.Tensor, acc: float, macro_f1: float, class_names: list[str]) -> dict[str, Any]:
    """A test's report as ``results.json`` keeps it: accuracy, macro-F1, per-class accuracy (recall)
    from the ``(true, predicted)`` confusion matrix, and the matrix itself."""
    cm = confusion.cpu()
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    return {"acc": acc, "macro_f1": macro_f1, "per_class_acc": dict(zip(class_names, per_class)), "confusion_matrix": cm.tolist()}


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class FERClassifier(DrawnSeed, pl.LightningModule):
    """Train ``net`` with the optimizer/scheduler partials from the config.

    With ``teacher`` (a checkpoint file or shipped model name), the training loss is
    ``(1 - distill_weight) * CE(labels) + distill_weight * T^2 KL(teacher_T || student_T)`` with the
    teacher's probabilities computed once on the clean training faces (:mod:`fer_sweep.models.distill`)."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], scheduler: dict | None = None, num_classes: int = 7, class_names: tuple[str, ...] | list[str] | None = None, label_smoothing: float = 0.0, class_weighted: bool = False, fc_weight_decay: float = 0.0, channels_last: bool = False, seed: int | None = 0,
                 teacher: str | None = None, teacher_tta: str = "flip", distill_weight: float = 0.5, distill_temperature: float = 2.0) -> None:
        super().__init__()
        if teacher in ("", "None", "null"):
            teacher = None
        if teacher is not None and not 0.0 <= float(distill_weight) <= 1.0:
            raise ValueError(f"model.distill_weight={distill_weight}; expected a weight in [0, 1]")
        if teacher is not None and not float(distill_temperature) > 0.0:
            raise ValueError(f"model.distill_temperature={distill_temperature}; expected a positive temperature")
        self.teacher, self.teacher_tta = teacher, teacher_tta
        self.distill_weight, self.distill_temperature = float(distill_weight), float(distill_temperature)
        self.net, self.optimizer_factory, self.scheduler_cfg = net, optimizer, scheduler
        self.num_classes, self.label_smoothing, self.class_weighted = num_classes, label_smoothing, class_weighted
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.fc_weight_decay, self.channels_last = fc_weight_decay, channels_last
        self._init_seed(seed)
        self.register_buffer("class_weight", torch.ones(num_classes), persistent=False)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.history: list[dict[str, float]] = []
        self.test_report: dict[str, Any] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_lr = math.nan
        self._train_record: dict[str, float] | None = None
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    # -- loss ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.run_seed  # with seed=None: draw it now, where every DDP rank is (the draw is a broadcast)
        dm = getattr(self.trainer, "datamodule", None)
        if self.class_weighted and dm is not None and hasattr(dm, "class_weights"):
            self.class_weight = dm.class_weights().to(self.device)
        if self.teacher is not None and stage == "fit":
            if dm is None or not hasattr(dm, "set_train_targets"):
                raise ValueError(f"model.teacher={self.teacher}: distillation needs the FER2013 datamodule (its train faces)")
            faces, _ = dm.tensors["train"]
            dm.set_train_targets(teacher_probabilities(self.teacher, faces, self.teacher_tta, getattr(dm, "cache_dir", None), num_classes=self.num_classes))

    def _draw_seed(self) -> int:  # the seed of run_seed when seed=None
        return draw_shared_seed(self._trainer, "this run's dropout")

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
        weight = self.class_weight if self.class_weighted else None
        return F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=smoothing)

    def _accumulate(self, key: str, loss: torch.Tensor, n: int) -> None:
        total = loss.detach() * n
        if key in self._sums:
            self._sums[key] += total
            self._sums[key + "_n"] += n
        else:
            self._sums[key] = total.clone()
            self._sums[key + "_n"] = torch.tensor(float(n), device=total.device)

    def _mean(self, key: str) -> float:
        """The epoch's mean of ``key`` over all ranks' samples.  Under DDP the ranks see disjoint
        shards, so their sums and counts are added: one all-reduce per epoch, run by every rank
        (also one with no batches, so none waits alone)."""
        total, n = self._sums.pop(key, None), self._sums.pop(key + "_n", None)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            local = torch.stack([total.float(), n.float()]) if total is not None else torch.zeros(2, device=self.device)
            total, n = trainer.strategy.reduce(local, reduce_op="sum")
        if total is None:
            return math.nan
        return (total / n).item()

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Dropout draws from the global RNG: seed it from (seed, epoch) so a resumed run repeats it,
        # and from the rank, so DDP ranks draw their own masks.
        torch.manual_seed(epoch_seed(self.run_seed, self.current_epoch, stream=rank_stream(2, self.global_rank)))
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else math.nan
        self._train_record = None

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, *teacher = batch  # teacher: its probabilities for these faces, when distilling
        logits = self(x)
        loss = self._loss(logits, y, self.label_smoothing)
        if teacher and self.teacher is not None:
            w = self.distill_weight
            loss = (1.0 - w) * loss + w * distillation_loss(logits, teacher[0], self.distill_temperature)
        self.train_acc.update(logits.detach(), y)
        self._accumulate("train_loss", loss, len(y))
        return loss

    def train_epoch_record(self) -> dict[str, float]:
        """Train loss/accuracy of the epoch that just ended (computed once, then cached)."""
        if self._train_record is None:
            loss = self._mean("train_loss")
            if not math.isfinite(loss):
                raise DivergedError(f"training loss became {loss} in epoch {self.current_epoch + 1}; lower optimizer.lr or add gradient clipping")
            self._train_record = {"train_loss": loss, "train_acc": float(self.train_acc.compute()), "lr": self._epoch_lr}
            self.train_acc.reset()
        return self._train_record

    def close_epoch(self) -> dict[str, float]:
        """Append this epoch's record to :attr:`history` once (idempotent), and return it.

        Callbacks' ``on_train_epoch_end`` run before the module's, so the metrics writer calls
        this too; whichever comes first does the work."""
        epoch = self.current_epoch + 1
        if self.history and self.history[-1]["epoch"] == epoch:
            return self.history[-1]
        rec = self.train_epoch_record()
        val = getattr(self, "_last_val", {})
        row = {"epoch": epoch, "train_loss": rec["train_loss"], "val_loss": val.get("val_loss", math.nan), "lr": rec["lr"], "train_acc": rec["train_acc"], "val_acc": val.get("val_acc", math.nan)}
        self.history.append(row)
        self._last_val = {}
        return row

    def on_train_epoch_end(self) -> None:
        row = self.close_epoch()
        self.log_dict({"train/loss": row["train_loss"], "train/acc": row["train_acc"], "lr": row["lr"]}, prog_bar=False)

    # -- validation ----------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self._accumulate("val_loss", self._loss(logits, y, 0.0), len(y))

    def on_validation_epoch_end(self) -> None:
        loss, acc = self._mean("val_loss"), float(self.val_acc.compute())
        self.val_acc.reset()
        self._last_val = {"val_loss": loss, "val_acc": acc}
        self.log_dict({"val/loss": loss, "val/acc": acc}, prog_bar=True)

    # -- test ----------------------------------------------------------------------------------
    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc.update(logits, y)
        self.test_f1.update(logits, y)
        self.test_confusion.update(logits, y)

    def on_test_epoch_end(self) -> None:
        self.test_report = report_from_confusion(self.test_confusion.compute(), float(self.test_acc.compute()), float(self.test_f1.compute()), self.class_names)
        self.log_dict({"test/acc": self.test_report["acc"], "test/macro_f1": self.test_report["macro_f1"]})
        for m in (self.test_acc, self.test_f1, self.test_confusion):
            m.reset()

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        params: Any = self.net.parameters()
        fc = list(getattr(self.net, "fc_parameters", lambda: [])()) if self.fc_weight_decay else []
        if fc:
            fc_ids = {id(p) for p in fc}
            params = [{"params": [p for p in self.net.parameters() if id(p) not in fc_ids]}, {"params": fc, "weight_decay": self.fc_weight_decay}]
        optimizer = self.optimizer_factory(params=params)
        cfg = self.scheduler_cfg or {}
        if not cfg or cfg.get("partial") is None:
            return optimizer
        sched = {"scheduler": cfg["partial"](optimizer=optimizer), "interval": cfg.get("interval", "epoch"), "frequency": 1}
        if cfg.get("monitor"):
            sched["monitor"] = cfg["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": sched}

    # -- checkpoints describe their own network ------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fer_sweep"] = {"net": net_spec(self.net), "class_names": list(self.class_names), "history": list(self.history)}
        if self.seed is None and self._drawn_seed is not None:  # seed=null: resume continues this run's draws
            checkpoint["fer_sweep"]["drawn_seed"] = self._drawn_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("fer_sweep", {}).get("history", []))
        drawn = checkpoint.get("fer_sweep", {}).get("drawn_seed")
        if self.seed is None and drawn is not None:
            self._drawn_seed = int(drawn)
        self.resumed_from_epoch = int(checkpoint.get("epoch", -1)) + 1  # read by train.run for results.json
        self._apply_new_schedule_length(checkpoint)

    def _apply_new_schedule_length(self, checkpoint: dict) -> None:
        """A run resumed with other schedule settings (``trainer.max_epochs=200`` after 100, so
        cosine's ``T_max`` 100 -> 200) continues on the new schedule, not the saved one.

        Lightning restores the scheduler's saved state, settings included, and the chainable
        schedulers step from the optimizer's present rate: a finished cosine run (rate 0) extended
        with the old ``T_max`` would cycle back up, and with only ``T_max`` replaced would stay at 0.
        So the settings the config sets (the constructor's arguments) are taken from the config,
        and the rate is set to the new schedule's closed form at the saved epoch.
        """
        import inspect

        cfg = self.scheduler_cfg or {}
        states = checkpoint.get("lr_schedulers") or []
        if cfg.get("partial") is None or len(states) != 1 or not checkpoint.get("optimizer_states"):
            return
        saved, groups = states[0], checkpoint["optimizer_states"][0]["param_groups"]
        base_lrs = saved.get("base_lrs") or [g.get("initial_lr", g["lr"]) for g in groups]
        probe = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": lr, "initial_lr": lr} for lr in base_lrs], lr=base_lrs[0])
        fresh = cfg["partial"](optimizer=probe).state_dict()
        names = set(inspect.signature(type(cfg["partial"](optimizer=probe)).__init__).parameters) - {"self", "optimizer", "last_epoch", "verbose"}
        changed = [k for k in names if k in saved and k in fresh and saved[k] != fresh[k]]
        if not changed:
            return
        for k in changed:
            log.info("resumed run: scheduler %s %s -> %s (from the config)", k, saved[k], fresh[k])
            saved[k] = fresh[k]
        sched = cfg["partial"](optimizer=probe)
        sched.load_state_dict(saved)
        closed_form = getattr(sched, "_get_closed_form_lr", None)
        if closed_form is not None and len(groups) == len(base_lrs):
            for group, lr in zip(groups, closed_form()):
                group["lr"] = lr
            saved["_last_lr"] = [g["lr"] for g in groups]
