"""Several Deep-Emotion jobs of one sweep trained together in one process (``hydra/launcher=packed``).

The study's grid is 20 jobs that differ only in their seed and learning-rate schedule.  On a GPU
each one alone leaves the device mostly idle, so :class:`~fer_sweep.models.packed.PackedDeepEmotion`
stacks them and every step runs all of them at once.  Each job keeps what makes it that job:

* its own initial weights (built after seeding with its own seed, as ``train.py`` does);
* its own data order (the permutation of :class:`~fer_sweep.data.loader.TensorBatches` for its
  ``data.seed`` and epoch, so it sees exactly the batches it would see alone);
* its own learning rate, from its own scheduler (stepped after validation, with the metric its
  ``scheduler.monitor`` names for ReduceLROnPlateau, as Lightning steps it);
* its own best epoch, best checkpoint (``checkpoints/best.ckpt``, an ordinary fer_sweep checkpoint),
  ``metrics.csv`` and ``results.json``, in its own folder, with the same keys as a job of
  ``train.py``, so ``fer_sweep.plot`` and the statistics read a packed sweep like any other.

What differs from separate jobs: dropout masks and augmentation are drawn once for the pack (same
distribution, other draws); a packed run keeps no ``last.ckpt`` (an interrupted pack is retrained
from the start when rerun; its jobs are marked ``interrupted``); ``wall_time_s`` is the pack's,
shared by its jobs; every job's log file gets the whole pack's log; and loggers (CSV, TensorBoard)
are not written (``metrics.csv`` is).  Jobs that cannot be packed (:func:`unpackable`: another
network, optimizer or precision, distillation, ``init_weights``, a ``last.ckpt`` to resume, a
trainer setting or callback a pack does not honour) run one by one as usual.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from fer_sweep.callbacks import history_to_csv
from fer_sweep.config import ConfigError, validate
from fer_sweep.data.errors import FER2013Error
from fer_sweep.data.loader import epoch_seed
from fer_sweep.data.preprocess import to_model_input
from fer_sweep.io import atomic_write, atomic_write_text
from fer_sweep.models.module import report_from_confusion
from fer_sweep.models.packed import PackedAdam, PackedDeepEmotion
from fer_sweep.models.registry import net_spec
from fer_sweep.results import best_epoch, new_results, read_results, write_results
from fer_sweep.run_folder import RunFolderBusy, other_settings, run_folder_lock, set_aside_checkpoints

log = logging.getLogger(__name__)

VARYING = ("seed", "scheduler", "optimizer.lr", "paths", "hydra", "force", "resume", "threads")
"""Settings in which the jobs of one pack may differ; every other setting must be the same."""

MONITORS = ("val/acc", "val/loss", "train/acc", "train/loss")
"""What a packed job's ReduceLROnPlateau can monitor (the names FERClassifier logs)."""

TRAINER_IGNORED = {"_target_", "default_root_dir", "max_epochs", "min_epochs", "accelerator", "devices", "precision", "num_sanity_val_steps",
                   "log_every_n_steps", "enable_model_summary", "enable_progress_bar", "enable_checkpointing", "benchmark", "deterministic",
                   "num_nodes", "sync_batchnorm", "strategy", "callbacks", "logger"}
"""Trainer settings a pack reads itself (max_epochs, accelerator, devices, precision, benchmark, ...) or
that do not change what a job computes; :func:`unpackable` checks devices, precision and deterministic."""

TRAINER_DEFAULTS = {"check_val_every_n_epoch": (1, None), "accumulate_grad_batches": (1, None), "gradient_clip_val": (None, 0, 0.0),
                    "limit_train_batches": (None, 1.0, 1), "limit_val_batches": (None, 1.0, 1), "limit_test_batches": (None, 1.0, 1),
                    "max_steps": (-1, None), "max_time": (None,), "val_check_interval": (None, 1.0, 1), "overfit_batches": (0, 0.0, None),
                    "fast_dev_run": (False, None, 0), "reload_dataloaders_every_n_epochs": (0, None), "detect_anomaly": (False, None),
                    "barebones": (False, None), "use_distributed_sampler": (True, None), "inference_mode": (True, None)}
"""Other trainer settings, with the values a pack computes the same as a job alone; any other value (or
any other key) makes the job run alone."""

CALLBACKS_HONOURED = {"pytorch_lightning.callbacks.ModelCheckpoint", "pytorch_lightning.callbacks.LearningRateMonitor",
                      "pytorch_lightning.callbacks.TQDMProgressBar", "fer_sweep.callbacks.EpochMetricsCSV", "fer_sweep.callbacks.FlushSubnormals"}
"""The shipped callbacks, whose work a pack does itself (best.ckpt, metrics.csv, the lr column) or does
not need (a progress bar; subnormal flushing, which matters on the CPU only)."""

PACKED_PRECISIONS = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16}


def unpackable(cfg: DictConfig, pack_on_cpu: bool = False) -> str | None:
    """Why this job cannot join a pack (one line), or ``None`` when it can.  Jobs that train on the
    CPU run alone unless ``pack_on_cpu``: there the project's fast single-network path (oneDNN and the
    native kernel) beats grouped convolutions about 3-4x (``benchmarks/packed_speed.py``)."""
    if not pack_on_cpu and _device(cfg).type == "cpu":
        return "it trains on the CPU, where jobs one by one are faster than a pack (hydra.launcher.pack_on_cpu=true packs anyway)"
    if (cfg.model.get("net") or {}).get("name") != "deep_emotion":
        return f"model.net.name={(cfg.model.get('net') or {}).get('name')} (packs hold Deep-Emotion only)"
    if str(cfg.optimizer.get("_target_")) != "torch.optim.Adam":
        return f"optimizer {cfg.optimizer.get('_target_')} (packs train with Adam only)"
    if cfg.optimizer.get("amsgrad"):
        return "optimizer.amsgrad=true"
    if cfg.model.get("teacher") not in (None, "", "None", "null"):
        return "model.teacher (distillation)"
    if cfg.get("init_weights"):
        return "init_weights"
    for key in ("seed", "data.seed", "model.seed"):
        if OmegaConf.select(cfg, key) is None:
            return f"{key}=null (a pack needs every job's seed)"
    if cfg.optimizer.get("maximize"):
        return "optimizer.maximize=true"
    if cfg.get("deterministic") not in (None, False):
        return f"deterministic={cfg.get('deterministic')}"
    monitor = cfg.scheduler.get("monitor") if (cfg.get("scheduler") or {}).get("partial") is not None else None
    if monitor is not None and monitor not in MONITORS:
        return f"scheduler.monitor={monitor} (packs know {', '.join(MONITORS)})"
    for key, value in (cfg.get("trainer") or {}).items():
        if key not in TRAINER_IGNORED and value not in TRAINER_DEFAULTS.get(key, (None,)):
            return f"trainer.{key}={value} (a pack does not honour it)"
    for name, node in (cfg.get("callbacks") or {}).items():
        target = str((node or {}).get("_target_", "")) if node is not None else ""
        if target and target not in CALLBACKS_HONOURED:
            return f"callbacks.{name} ({target}; a pack runs none of its own)"
    if cfg.get("resume", True) and (Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt").is_file():
        return "it has a last.ckpt to resume (left by another launcher)"
    if (cfg.get("scheduler") or {}).get("partial") is not None and cfg.scheduler.get("interval", "epoch") != "epoch":
        return f"scheduler.interval={cfg.scheduler.get('interval')} (packs step schedulers once per epoch)"
    if str(cfg.trainer.get("precision", "32-true")) not in PACKED_PRECISIONS:
        return f"trainer.precision={cfg.trainer.get('precision')} (packs run 32-true or bf16-mixed)"
    devices = cfg.trainer.get("devices", "auto")
    if devices not in ("auto", 1, "1", None) or cfg.trainer.get("num_nodes", 1) != 1:
        return f"trainer.devices={devices} (a pack runs on one device)"
    return None


def pack_signature(cfg: DictConfig) -> str:
    """The settings a pack's jobs must share: the job's config *before* interpolations are resolved
    (so ``data.seed: ${seed}`` reads the same in every job) without :data:`VARYING`."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key in VARYING:
        node, *rest = key.split(".")
        if rest and isinstance(tree.get(node), dict):
            tree[node] = {k: v for k, v in tree[node].items() if k != rest[0]}
        elif not rest:
            tree.pop(node, None)
    return OmegaConf.to_yaml(OmegaConf.create(tree), resolve=False)


def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class _Job:
    """One job of a pack: its config, folder, scheduler and record."""

    def __init__(self, cfg: DictConfig, overrides: list[str]) -> None:
        self.cfg, self.out_dir = cfg, Path(cfg.paths.output_dir)
        self.results = new_results(cfg, overrides)
        self.history: list[dict[str, float]] = []
        self.live = True
        self.started = time.time()
        self.probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.optimizer.lr))
        partial = (cfg.get("scheduler") or {}).get("partial")
        self.scheduler = hydra.utils.instantiate(partial)(optimizer=self.probe) if partial is not None else None
        self.probe.step()  # a no-op (no gradient) that tells the scheduler the optimizer has stepped
        self.monitor = cfg.scheduler.get("monitor") if partial is not None else None
        self.seed, self.data_seed = int(cfg.seed), int(cfg.data.seed)

    @property
    def lr(self) -> float:
        return float(self.probe.param_groups[0]["lr"])

    def step_scheduler(self, record: dict[str, float]) -> None:
        """Step after validation, as Lightning does; ReduceLROnPlateau gets the epoch's value of
        the metric its ``monitor`` names (``val/acc`` -> ``record["val_acc"]``)."""
        if self.scheduler is None:
            return
        if self.monitor:
            self.scheduler.step(record[self.monitor.replace("/", "_")])
        else:
            self.scheduler.step()


def job_losses(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None, smoothing: float = 0.0) -> torch.Tensor:
    """Each job's mean cross-entropy ``(K,)`` over its ``(K, B, classes)`` logits and ``(K, B)``
    labels: what ``F.cross_entropy(logits[k], labels[k], weight, label_smoothing)`` gives job k
    (with class weights, the weighted mean)."""
    k, b = labels.shape
    losses = F.cross_entropy(logits.reshape(k * b, -1), labels.reshape(-1), weight=weight, label_smoothing=smoothing, reduction="none").view(k, b)
    return losses.sum(1) / weight[labels].sum(1) if weight is not None else losses.mean(1)


def _eval(model: PackedDeepEmotion, images: torch.Tensor, labels: torch.Tensor, batch: int, autocast: torch.dtype | None,
          weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every model's logits for every face of a split, ``(K, N, classes)`` (float32), and its loss
    ``(K,)`` as FERClassifier's validation averages it: each batch's (weighted) mean, weighted by
    the batch's size."""
    model.eval()
    outs = []
    loss = torch.zeros(model.k, device=images.device)
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            x = to_model_input(images[start : start + batch])
            with _autocast(images.device, autocast):
                out = model(x.unsqueeze(0).expand(model.k, *x.shape)).float()
            y = labels[start : start + batch]
            loss += job_losses(out, y.expand(model.k, -1), weight) * len(y)
            outs.append(out)
    return torch.cat(outs, 1), loss / len(labels)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def split_report(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class accuracy and confusion matrix of one model's ``(N, classes)``
    logits, as :class:`~fer_sweep.models.module.FERClassifier` reports its test."""
    from torchmetrics.functional.classification import multiclass_f1_score

    c = logits.shape[-1]
    pred = logits.argmax(-1)
    cm = torch.bincount(labels * c + pred, minlength=c * c).view(c, c)
    return report_from_confusion(cm, float((pred == labels).float().mean()), float(multiclass_f1_score(pred, labels, c, average="macro", validate_args=False)), class_names)


def _save_checkpoint(path: Path, state: dict[str, torch.Tensor], spec: dict, class_names: list[str], history: list[dict], epoch: int) -> None:
    ckpt = {"state_dict": {f"net.{k}": v for k, v in state.items()}, "epoch": epoch,
            "fer_sweep": {"net": spec, "class_names": list(class_names), "history": list(history)}}
    atomic_write(path, lambda p: torch.save(ckpt, p))


class _Stop(BaseException):
    """SIGTERM during a pack (a BaseException, like KeyboardInterrupt: no ``except Exception`` records
    it as a failure)."""


def _raise_stop(signum, frame) -> None:
    raise _Stop()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`_Stop` (in the main thread; elsewhere signals cannot be caught)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _log_to(files: list[Path]):
    """The pack's log lines also go to every job's own log file (Hydra's per-job file handlers were
    replaced when the launcher went back to its own logging)."""
    root = logging.getLogger()
    handlers = []
    for path in files:
        handler = logging.FileHandler(path, mode="a")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def run_pack(cfgs: list[DictConfig], overrides: list[list[str]], log_files: list[Path | None] | None = None) -> list[dict[str, Any]]:
    """Train the jobs ``cfgs`` (resolved configs that :func:`unpackable` accepts and that share a
    :func:`pack_signature`) together; returns each job's ``results.json`` dict, in order.

    Like ``train.run`` it never raises for a bad job: a job whose values are invalid, whose folder is
    busy or whose results say completed is left out (its results say why, or are its own); a data
    error fails every job of the pack, each with its one line.  SIGTERM (or Ctrl-C) marks the jobs
    under way ``interrupted`` and then ends the process (exit 143 for SIGTERM), as ``train.run`` does."""
    jobs: list[_Job | None] = []
    out: list[dict[str, Any] | None] = []
    with _sigterm_raises(), contextlib.ExitStack() as locks:
        try:
            for cfg, ov in zip(cfgs, overrides):
                job, result = _admit(cfg, ov, locks)
                jobs.append(job)
                out.append(result)
            live = [j for j in jobs if j is not None]
            if live:
                with _log_to([f for f, j in zip(log_files or [], jobs) if j is not None and f is not None]):
                    _train(live)
        except (_Stop, KeyboardInterrupt) as exc:
            how = "SIGTERM" if isinstance(exc, _Stop) else "an interrupt"
            admitted = [j for j in jobs if j is not None]
            for job in admitted:
                if job.results["status"] == "running":
                    _close(job, admitted, status="interrupted",
                           error=f"stopped by {how} after {len(job.history)} epoch(s); a packed job keeps no last.ckpt, so rerunning the sweep trains it afresh")
                else:  # diverged before the stop: its record is final
                    _close(job, admitted)
            if isinstance(exc, _Stop):
                raise SystemExit(143) from None
            raise
    for i, job in enumerate(jobs):
        if job is not None:
            out[i] = job.results
    return [r or {"status": "failed"} for r in out]


def _admit(cfg: DictConfig, overrides: list[str], locks: contextlib.ExitStack) -> tuple[_Job | None, dict[str, Any] | None]:
    """``(job, None)`` for a job to train in the pack (its folder locked, its results ``running``),
    or ``(None, results)`` for one left out: busy folder, another run's folder, completed, invalid."""
    out_dir = Path(cfg.paths.output_dir)
    try:
        locks.enter_context(run_folder_lock(out_dir))
    except RunFolderBusy as exc:
        log.error("%s", exc)
        return None, {"status": "failed", "error": str(exc)}
    previous = read_results(out_dir)
    if previous and previous.get("status") == "completed":
        error = other_settings(out_dir, OmegaConf.to_container(cfg, resolve=True), "completed")
        same_length = previous.get("max_epochs") in (None, cfg.trainer.get("max_epochs"))
        if error:
            log.error("%s", error)
            return None, {"status": "failed", "error": error}
        if same_length and not cfg.get("force"):
            log.info("%s already completed; skipping (force=true reruns it)", out_dir)
            return None, previous
        if not same_length:  # a pack keeps no last.ckpt to continue from
            log.info("%s completed %s epochs; training afresh to trainer.max_epochs=%s", out_dir, previous.get("max_epochs"), cfg.trainer.get("max_epochs"))
    try:
        validate(cfg)
        job = _Job(cfg, overrides)
    except Exception as exc:  # a bad value or a scheduler that cannot be built: this job fails, the sweep goes on
        error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        log.error("invalid configuration: %s", error)
        result = {"status": "failed", "error": error, "seed": cfg.get("seed"), "scheduler": (cfg.get("scheduler") or {}).get("name")}
        write_results(out_dir, result)
        return None, result
    write_results(out_dir, job.results)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return job, None


def _close(job: _Job, jobs: list[_Job], **update: Any) -> None:
    """Write a job's final results: status, what its history says, and the pack's wall time."""
    epoch, acc = best_epoch(job.history)
    job.results.update(update)
    job.results.update(epochs_run=len(job.history), best_epoch=epoch, best_val_acc=acc, final_val_acc=job.history[-1]["val_acc"] if job.history else None,
                       wall_time_s=round(time.time() - job.started, 2), packed={"jobs": len(jobs), "note": "wall_time_s is the whole pack's"})
    write_results(job.out_dir, job.results)
    log.info("%s: status=%s best_val_acc=%s test_acc_best=%s", job.out_dir, job.results["status"], job.results.get("best_val_acc"), job.results.get("test_acc_best"))


def _train(jobs: list[_Job]) -> None:
    for job in jobs:
        job.started = time.time()
    try:
        _fit_and_test(jobs, jobs[0].cfg)
    except (ConfigError, FER2013Error) as exc:
        log.error("data: %s", exc)
        for job in jobs:
            job.results.update(status="failed", error=str(exc))
    except Exception as exc:  # recorded in every job of the pack, so the sweep goes on
        import traceback

        log.error("packed run failed: %s: %s", type(exc).__name__, exc)
        for job in jobs:
            atomic_write_text(job.out_dir / "error.log", traceback.format_exc())
            if job.results["status"] == "running":
                job.results.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    for job in jobs:
        if job.results["status"] != "running":  # completed, diverged or failed: final now
            _close(job, jobs)


def _fit_and_test(jobs: list[_Job], cfg: DictConfig) -> None:
    device = _device(cfg)
    autocast = PACKED_PRECISIONS[str(cfg.trainer.get("precision", "32-true"))]
    if cfg.get("threads") is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", True))
    # every job's initial weights, as train.py builds them: seeded with the job's own seed
    nets = []
    for job in jobs:
        pl.seed_everything(job.seed, workers=True, verbose=False)
        nets.append(hydra.utils.instantiate(job.cfg.model.net))
    spec = net_spec(nets[0])
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    class_names = list(dm.class_names)
    for job in jobs:
        set_aside_checkpoints(job.out_dir)  # a fresh start: an earlier run's checkpoints are kept aside, not resumed later
        job.results.update(class_names=class_names, splits=dict(dm.split_sources))
        write_results(job.out_dir, job.results)
    tensors = {k: (x.to(device), y.to(device)) for k, (x, y) in dm.tensors.items()}
    model = PackedDeepEmotion(nets, channels_last=bool(cfg.model.get("channels_last", False))).to(device)
    k = len(jobs)
    weight = dm.class_weights().to(device) if cfg.model.get("class_weighted") else None
    smoothing = float(cfg.model.get("label_smoothing", 0.0))
    fc_decay = float(cfg.model.get("fc_weight_decay", 0.0) or 0.0)
    opt_cfg = cfg.optimizer
    optimizer = PackedAdam(list(model.parameters()), torch.tensor([job.lr for job in jobs], device=device), betas=tuple(opt_cfg.get("betas", (0.9, 0.999))),
                           eps=float(opt_cfg.get("eps", 1e-8)), weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
                           decay={id(p): fc_decay for p in model.fc_weights()} if fc_decay else None)
    best = {name: t.detach().clone() for name, t in model.state_dict().items()}
    best_acc = torch.full((k,), -1.0)
    log.info("packed run: %d jobs of Deep-Emotion on %s, %d epochs, batch %d per job", k, device, int(cfg.trainer.max_epochs), int(dm.batch_size))
    try:
        _epochs(jobs, model, optimizer, best, best_acc, tensors, dm, cfg, autocast, weight, smoothing)
    except (_Stop, KeyboardInterrupt):  # stopped: each job still gets the checkpoint of its best epoch so far
        model.load_state_dict(best)
        _save_best(jobs, model, spec, class_names)
        raise
    _finish(jobs, model, best, tensors, dm, spec, class_names, autocast)


def _epochs(jobs: list[_Job], model: PackedDeepEmotion, optimizer: PackedAdam, best: dict, best_acc: torch.Tensor, tensors: dict, dm, cfg: DictConfig,
            autocast: torch.dtype | None, weight: torch.Tensor | None, smoothing: float) -> None:
    """The training epochs of a pack: each job's batches, its rate, validation, its record and
    scheduler step, and the stacked best weights (``best``, updated in place)."""
    device = tensors["train"][0].device
    train_x, train_y = tensors["train"]
    k, n, batch = len(jobs), len(train_y), int(dm.batch_size)
    augment = dm.augment
    max_epochs = int(cfg.trainer.max_epochs)
    for epoch in range(max_epochs):
        epoch_lr = [job.lr for job in jobs]
        optimizer.set_lr(torch.tensor([lr if job.live else 0.0 for lr, job in zip(epoch_lr, jobs)], device=device))
        torch.manual_seed(epoch_seed(int(cfg.model.seed), epoch, stream=2))  # dropout, drawn once for the pack
        aug_gen = torch.Generator(device=device).manual_seed(epoch_seed(jobs[0].data_seed, epoch, stream=1)) if augment.active else None
        orders = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(job.data_seed, epoch))) for job in jobs]).to(device)
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        model.train()
        for b in range(0, n, batch):
            idx = orders[:, b : b + batch]  # (K, B): each job's own batch
            x = to_model_input(train_x[idx].reshape(-1, *train_x.shape[1:]))
            if aug_gen is not None:
                x = augment(x, aug_gen)
            y = train_y[idx]
            with _autocast(device, autocast):
                logits = model(x.view(k, -1, *x.shape[1:]))
            logits = logits.float()
            losses = job_losses(logits, y, weight, smoothing)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += losses.detach() * y.shape[1]
                correct += (logits.argmax(-1) == y).sum(1)
        train_loss = (loss_sum / n).tolist()
        train_acc = (correct / n).tolist()
        val_logits, val_loss = _eval(model, *tensors["val"], int(dm.eval_batch_size), autocast, weight)
        val_acc = (val_logits.argmax(-1) == tensors["val"][1]).float().mean(1).cpu()
        val_loss = val_loss.tolist()
        improved = torch.zeros(k, dtype=torch.bool)
        for i, job in enumerate(jobs):
            if not job.live:
                continue
            if not math.isfinite(train_loss[i]):
                job.live = False
                job.results.update(status="diverged", error=f"training loss became {train_loss[i]} in epoch {epoch + 1}; lower optimizer.lr or add gradient clipping")
                log.error("%s: run diverged: %s", job.out_dir, job.results["error"])
                continue
            record = {"epoch": epoch + 1, "train_loss": train_loss[i], "val_loss": val_loss[i], "lr": epoch_lr[i], "train_acc": train_acc[i], "val_acc": float(val_acc[i])}
            job.history.append(record)
            if record["val_acc"] > float(best_acc[i]):  # strictly better: the first of equal epochs, as ModelCheckpoint keeps
                best_acc[i], improved[i] = record["val_acc"], True
            job.step_scheduler(record)
            atomic_write_text(job.out_dir / "metrics.csv", history_to_csv(job.history))
        if improved.any():
            mask = improved.to(device)
            with torch.no_grad():
                for name, t in model.state_dict().items():
                    best[name].copy_(torch.where(mask.view(-1, *([1] * (t.dim() - 1))), t, best[name]))
        if not any(job.live for job in jobs):
            break
        log.info("epoch %d/%d: val acc %s", epoch + 1, max_epochs, " ".join(f"{float(a):.4f}" for a in val_acc))


def _save_best(jobs: list[_Job], model: PackedDeepEmotion, spec: dict, class_names: list[str]) -> dict[int, Path]:
    """``checkpoints/best.ckpt`` of every job with a best epoch, from ``model`` holding the best
    weights (a diverged job's too: its best epoch before it diverged); returns the paths by slot."""
    paths = {}
    for i, job in enumerate(jobs):
        epoch, _ = best_epoch(job.history)
        if epoch is not None:
            paths[i] = job.out_dir / "checkpoints" / "best.ckpt"
            _save_checkpoint(paths[i], model.unpack(i), spec, class_names, job.history[:epoch], epoch - 1)
    return paths


def _finish(jobs: list[_Job], model: PackedDeepEmotion, best: dict, tensors: dict, dm, spec: dict, class_names: list[str], autocast) -> None:
    """Each job's best checkpoint (a diverged job's too: its best epoch before it diverged), and
    PrivateTest reports of its best and last weights unless ``test_after_fit=false``."""
    test_x, test_y = tensors["test"]
    testing = bool(jobs[0].cfg.get("test_after_fit", True))
    last_logits = _eval(model, test_x, test_y, int(dm.eval_batch_size), autocast)[0] if testing else None
    model.load_state_dict(best)
    best_logits = _eval(model, test_x, test_y, int(dm.eval_batch_size), autocast)[0] if testing else None
    paths = _save_best(jobs, model, spec, class_names)
    for i, job in enumerate(jobs):
        path = paths.get(i)
        if path is None or not job.live:
            continue
        job.results.update(status="completed", best_checkpoint=str(path))
        if testing:
            best_report = split_report(best_logits[i], test_y, class_names)
            last_report = split_report(last_logits[i], test_y, class_names)
            job.results.update(test_acc_best=best_report["acc"], test_acc_last=last_report["acc"], test_macro_f1_best=best_report["macro_f1"],
                               per_class_acc=best_report["per_class_acc"], confusion_matrix=best_report["confusion_matrix"])
