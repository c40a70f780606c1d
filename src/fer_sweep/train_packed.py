"""Several Deep-Emotion jobs of one sweep trained together in one process (``hydra/launcher=packed``).

The study's grid is 20 jobs that differ only in their seed and learning-rate schedule.  On a GPU
each one alone leaves the device mostly idle, so :class:`~fer_sweep.models.packed.PackedDeepEmotion`
stacks them and every step runs all of them at once.  Each job keeps what makes it that job:

* its own initial weights (built after seeding with its own seed, as ``train.py`` does);
* its own data order (the permutation of :class:`~fer_sweep.data.loader.TensorBatches` for its seed
  and epoch, so it sees exactly the batches it would see alone);
* its own learning rate, from its own scheduler (stepped after validation, with val accuracy for
  ReduceLROnPlateau, as Lightning steps it);
* its own best epoch, best checkpoint (``checkpoints/best.ckpt``, an ordinary fer_sweep checkpoint),
  ``metrics.csv`` and ``results.json``, in its own folder, with the same keys as a job of
  ``train.py``, so ``fer_sweep.plot`` and the statistics read a packed sweep like any other.

What differs from separate jobs: dropout masks and augmentation are drawn once for the pack (same
distribution, other draws); a packed run keeps no ``last.ckpt`` (an interrupted pack is retrained
from the start when rerun; its jobs are marked ``interrupted``); and ``wall_time_s`` is the pack's,
shared by its jobs.  Jobs that cannot be packed (another network, optimizer or precision,
distillation, ``init_weights``, a ``last.ckpt`` to resume) run one by one as usual.
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
from fer_sweep.models.packed import PackedAdam, PackedDeepEmotion
from fer_sweep.models.registry import net_spec
from fer_sweep.results import best_epoch, read_results, write_results
from fer_sweep.run_folder import RunFolderBusy, other_settings, run_folder_lock

log = logging.getLogger(__name__)

VARYING = ("seed", "scheduler", "optimizer.lr", "paths", "hydra", "force", "resume", "threads")
"""Settings in which the jobs of one pack may differ; every other setting must be the same."""

PACKED_PRECISIONS = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16}


def unpackable(cfg: DictConfig, pack_on_cpu: bool = False) -> str | None:
    """Why this job cannot join a pack (one line), or ``None`` when it can.  Jobs that train on the
    CPU run alone unless ``pack_on_cpu``: there the project's fast single-network path (oneDNN and the
    native kernel) beats grouped convolutions about 3.6x (``benchmarks/packed_speed.py``)."""
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
        self.results: dict[str, Any] = {
            "status": "running", "seed": cfg.get("seed"), "scheduler": cfg.scheduler.get("name"),
            "optimizer": "adam", "lr": cfg.optimizer.get("lr"), "model": "deep_emotion",
            "max_epochs": cfg.trainer.get("max_epochs"), "overrides": list(overrides),
        }
        self.history: list[dict[str, float]] = []
        self.live = True
        self.probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.optimizer.lr))
        self.probe.step()  # a no-op (no gradient) that tells the scheduler the optimizer has stepped
        partial = (cfg.get("scheduler") or {}).get("partial")
        self.scheduler = hydra.utils.instantiate(partial)(optimizer=self.probe) if partial is not None else None
        self.monitor = cfg.scheduler.get("monitor") if partial is not None else None

    @property
    def lr(self) -> float:
        return float(self.probe.param_groups[0]["lr"])

    def step_scheduler(self, val_acc: float) -> None:
        if self.scheduler is None:
            return
        if self.monitor:  # ReduceLROnPlateau on val/acc, as Lightning steps it after validation
            self.scheduler.step(val_acc)
        else:
            self.scheduler.step()


def _eval(model: PackedDeepEmotion, images: torch.Tensor, labels: torch.Tensor, batch: int, autocast: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every model's logits for every face of a split: ``(K, N, classes)`` (float32), and its mean loss ``(K,)``."""
    model.eval()
    outs = []
    with torch.no_grad(), _autocast(images.device, autocast):
        for start in range(0, len(labels), batch):
            x = to_model_input(images[start : start + batch])
            outs.append(model(x.unsqueeze(0).expand(model.k, *x.shape)).float())
    logits = torch.cat(outs, 1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.repeat(model.k), reduction="none").view(model.k, -1).mean(1)
    return logits, loss


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def split_report(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class accuracy and confusion matrix of one model's ``(N, classes)``
    logits, as :class:`~fer_sweep.models.module.FERClassifier` reports its test."""
    from torchmetrics.functional.classification import multiclass_f1_score

    c = logits.shape[-1]
    pred = logits.argmax(-1)
    cm = torch.bincount(labels * c + pred, minlength=c * c).view(c, c).cpu()
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    return {"acc": float((pred == labels).float().mean()), "macro_f1": float(multiclass_f1_score(pred, labels, c, average="macro", validate_args=False)),
            "per_class_acc": dict(zip(class_names, per_class)), "confusion_matrix": cm.tolist()}


def _save_checkpoint(path: Path, state: dict[str, torch.Tensor], spec: dict, class_names: list[str], history: list[dict], epoch: int) -> None:
    ckpt = {"state_dict": {f"net.{k}": v for k, v in state.items()}, "epoch": epoch,
            "fer_sweep": {"net": spec, "class_names": list(class_names), "history": list(history)}}
    atomic_write(path, lambda p: torch.save(ckpt, p))


class _Stop(Exception):
    """SIGTERM during a pack."""


def run_pack(cfgs: list[DictConfig], overrides: list[list[str]]) -> list[dict[str, Any]]:
    """Train the jobs ``cfgs`` (resolved configs that :func:`unpackable` accepts and that share a
    :func:`pack_signature`) together; returns each job's ``results.json`` dict, in order.

    Like ``train.run`` it never raises for a bad job: a job whose values are invalid, whose folder is
    busy or whose results say completed is left out (its results say why, or are its own); a data
    error fails every job of the pack, each with its one line."""
    jobs: list[_Job | None] = []
    out: list[dict[str, Any] | None] = []
    with contextlib.ExitStack() as locks:
        for cfg, ov in zip(cfgs, overrides):
            out_dir = Path(cfg.paths.output_dir)
            try:
                locks.enter_context(run_folder_lock(out_dir))
            except RunFolderBusy as exc:
                log.error("%s", exc)
                jobs.append(None)
                out.append({"status": "failed", "error": str(exc)})
                continue
            previous = read_results(out_dir)
            if previous and previous.get("status") == "completed":
                error = other_settings(out_dir, OmegaConf.to_container(cfg, resolve=True), "completed")
                same_length = previous.get("max_epochs") in (None, cfg.trainer.get("max_epochs"))
                if error or (same_length and not cfg.get("force")):
                    if error:
                        log.error("%s", error)
                    else:
                        log.info("%s already completed; skipping (force=true reruns it)", out_dir)
                    jobs.append(None)
                    out.append(previous if not error else {"status": "failed", "error": error})
                    continue
                if not same_length:  # a pack keeps no last.ckpt to continue from
                    log.info("%s completed %s epochs; training afresh to trainer.max_epochs=%s", out_dir, previous.get("max_epochs"), cfg.trainer.get("max_epochs"))
            try:
                validate(cfg)
                job = _Job(cfg, ov)
            except (ConfigError, ValueError, TypeError) as exc:
                log.error("invalid configuration: %s", exc)
                result = {"status": "failed", "error": str(exc), "seed": cfg.get("seed"), "scheduler": cfg.scheduler.get("name")}
                write_results(out_dir, result)
                jobs.append(None)
                out.append(result)
                continue
            write_results(out_dir, job.results)
            atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            jobs.append(job)
            out.append(None)
        live = [j for j in jobs if j is not None]
        if live:
            _train(live)
            for i, job in enumerate(jobs):
                if job is not None:
                    out[i] = job.results
    return [r or {"status": "failed"} for r in out]


def _train(jobs: list[_Job]) -> None:
    start = time.time()
    first = jobs[0].cfg
    previous_handler = signal.signal(signal.SIGTERM, _raise_stop) if _main_thread() else None
    stop: BaseException | None = None
    try:
        _fit_and_test(jobs, first)
    except (ConfigError, FER2013Error) as exc:
        log.error("data: %s", exc)
        for job in jobs:
            job.results.update(status="failed", error=str(exc))
    except (_Stop, KeyboardInterrupt) as exc:
        stop = exc
        how = "SIGTERM" if isinstance(exc, _Stop) else "an interrupt"
        for job in jobs:
            if job.results["status"] == "running":
                job.results.update(status="interrupted", error=f"stopped by {how} after {len(job.history)} epoch(s); a packed job keeps no last.ckpt, so rerunning the sweep trains it afresh")
    except Exception as exc:  # recorded in every job of the pack, so the sweep goes on
        import traceback

        log.error("packed run failed: %s: %s", type(exc).__name__, exc)
        for job in jobs:
            atomic_write_text(job.out_dir / "error.log", traceback.format_exc())
            if job.results["status"] == "running":
                job.results.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    wall = round(time.time() - start, 2)
    for job in jobs:
        epoch, acc = best_epoch(job.history)  # also for a pack stopped or failed mid-way
        job.results.update(epochs_run=len(job.history), best_epoch=epoch, best_val_acc=acc, final_val_acc=job.history[-1]["val_acc"] if job.history else None)
        job.results.update(wall_time_s=wall, packed={"jobs": len(jobs), "note": "wall_time_s is the whole pack's"})
        write_results(job.out_dir, job.results)
        log.info("%s: status=%s best_val_acc=%s test_acc_best=%s", job.out_dir, job.results["status"], job.results.get("best_val_acc"), job.results.get("test_acc_best"))
    if stop is not None:
        raise SystemExit(143) if isinstance(stop, _Stop) else stop


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_stop(signum, frame) -> None:
    raise _Stop()


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
        if job.cfg.get("seed") is not None:
            pl.seed_everything(int(job.cfg.seed), workers=True, verbose=False)
        nets.append(hydra.utils.instantiate(job.cfg.model.net))
    spec = net_spec(nets[0])
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    class_names = list(dm.class_names)
    splits = dict(dm.split_sources)
    for job in jobs:
        job.results.update(class_names=class_names, splits=splits)
        write_results(job.out_dir, job.results)
    tensors = {k: (x.to(device), y.to(device)) for k, (x, y) in dm.tensors.items()}
    train_x, train_y = tensors["train"]
    model = PackedDeepEmotion(nets).to(device)
    k, n, batch = len(jobs), len(train_y), int(dm.batch_size)
    weight = dm.class_weights().to(device) if cfg.model.get("class_weighted") else None
    smoothing = float(cfg.model.get("label_smoothing", 0.0))
    fc_decay = float(cfg.model.get("fc_weight_decay", 0.0) or 0.0)
    opt_cfg = cfg.optimizer
    lr = torch.tensor([job.lr for job in jobs], device=device)
    optimizer = PackedAdam(list(model.parameters()), lr, betas=tuple(opt_cfg.get("betas", (0.9, 0.999))), eps=float(opt_cfg.get("eps", 1e-8)),
                           weight_decay=float(opt_cfg.get("weight_decay", 0.0)), decay={id(p): fc_decay for p in model.fc_weights()} if fc_decay else None)
    best = {name: t.detach().clone() for name, t in model.state_dict().items()}
    best_acc = torch.full((k,), -1.0)
    seeds = [int(job.cfg.seed) if job.cfg.get("seed") is not None else 0 for job in jobs]
    augment = dm.augment
    max_epochs = int(cfg.trainer.max_epochs)
    log.info("packed run: %d jobs of Deep-Emotion on %s, %d epochs, batch %d per job", k, device, max_epochs, batch)
    for epoch in range(max_epochs):
        lr.copy_(torch.tensor([job.lr if job.live else 0.0 for job in jobs]))
        epoch_lr = [job.lr for job in jobs]
        torch.manual_seed(epoch_seed(seeds[0], epoch, stream=2))  # dropout, drawn once for the pack
        aug_gen = torch.Generator(device=device).manual_seed(epoch_seed(seeds[0], epoch, stream=1)) if augment.active else None
        orders = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(s, epoch))) for s in seeds]).to(device)
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
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), weight=weight, label_smoothing=smoothing, reduction="none").view(k, -1)
            if weight is not None:  # a weighted mean per job, as F.cross_entropy(weight=...) averages
                losses = losses.sum(1) / weight[y].sum(1)
            else:
                losses = losses.mean(1)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += losses.detach() * y.shape[1]
                correct += (logits.argmax(-1) == y).sum(1)
        train_loss = (loss_sum / n).tolist()
        train_acc = (correct / n).tolist()
        val_logits, val_loss = _eval(model, *tensors["val"], int(dm.eval_batch_size), autocast)
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
            acc = float(val_acc[i])
            job.history.append({"epoch": epoch + 1, "train_loss": train_loss[i], "val_loss": val_loss[i], "lr": epoch_lr[i], "train_acc": train_acc[i], "val_acc": acc})
            if acc > float(best_acc[i]):
                best_acc[i], improved[i] = acc, True
            job.step_scheduler(acc)
            atomic_write_text(job.out_dir / "metrics.csv", history_to_csv(job.history))
        if improved.any():
            mask = improved.to(device)
            with torch.no_grad():
                for name, t in model.state_dict().items():
                    best[name].copy_(torch.where(mask.view(-1, *([1] * (t.dim() - 1))), t, best[name]))
        if not any(job.live for job in jobs):
            break
        log.info("epoch %d/%d: val acc %s", epoch + 1, max_epochs, " ".join(f"{float(a):.4f}" for a in val_acc))
    _finish(jobs, model, best, tensors, dm, spec, class_names, autocast)


def _finish(jobs: list[_Job], model: PackedDeepEmotion, best: dict, tensors: dict, dm, spec: dict, class_names: list[str], autocast) -> None:
    """Each job's best checkpoint, PrivateTest reports of its best and last weights, and results."""
    test_x, test_y = tensors["test"]
    last_logits, _ = _eval(model, test_x, test_y, int(dm.eval_batch_size), autocast)
    model.load_state_dict(best)
    best_logits, _ = _eval(model, test_x, test_y, int(dm.eval_batch_size), autocast)
    for i, job in enumerate(jobs):
        epoch, _ = best_epoch(job.history)
        if not job.live or epoch is None:
            continue
        path = job.out_dir / "checkpoints" / "best.ckpt"
        _save_checkpoint(path, model.unpack(i), spec, class_names, job.history[:epoch], epoch - 1)
        best_report = split_report(best_logits[i], test_y, class_names)
        last_report = split_report(last_logits[i], test_y, class_names)
        job.results.update(status="completed", test_acc_best=best_report["acc"], test_acc_last=last_report["acc"], test_macro_f1_best=best_report["macro_f1"],
                           per_class_acc=best_report["per_class_acc"], confusion_matrix=best_report["confusion_matrix"], best_checkpoint=str(path))
