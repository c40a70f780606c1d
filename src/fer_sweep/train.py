"""One Hydra job: compose the objects, fit, test the best and the last checkpoint, write results.

Everything is built with ``hydra.utils.instantiate``; this module only wires it together and makes
each job safe to run inside a sweep: a completed job is skipped, an unfinished one resumes from its
``last.ckpt``, and a failure or divergence is recorded in ``results.json`` instead of killing the
sweep (``python -m fer_sweep`` exits non-zero at the end if any job failed).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities.exceptions import SIGTERMException
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from fer_sweep.callbacks import RecordSplits, StartAfresh
from fer_sweep.cpu import tune_allocator
from fer_sweep.io import atomic_write_text, file_sha256
from fer_sweep.config import CONFIG_NAME, CONFIG_PATH, ConfigError, quiet_schema_warning, validate
from fer_sweep.data.errors import FER2013Error
from fer_sweep.models.module import DivergedError
from fer_sweep.models.registry import CheckpointError, load_checkpoint
from fer_sweep.results import best_epoch, new_results, read_results, write_results
from fer_sweep.run_folder import RunFolderBusy, other_settings, run_folder_lock, secondary_rank
from fer_sweep.weights import resolve_model

log = logging.getLogger(__name__)
quiet_schema_warning()  # here too: joblib's worker processes import this module, not fer_sweep.__main__


def _instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, failing with the built class's own one-line error rather than
    Hydra's three-line wrapper around it ("Error in call to target ...", the repr, "full_key")."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        if exc.__cause__ is None:
            raise
        raise exc.__cause__ from None


def _instantiate_list(cfg: DictConfig | None) -> list[Any]:
    return [_instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def _test(trainer: pl.Trainer, model, datamodule, ckpt: str | None) -> dict | None:
    """PrivateTest report of the weights in ``ckpt`` (loaded safely), or of the model as it is."""
    if ckpt:
        if not Path(ckpt).is_file():
            return None
        model.load_state_dict(torch.load(ckpt, map_location=model.device, weights_only=True)["state_dict"])
    trainer.test(model, datamodule=datamodule, verbose=False)
    return dict(model.test_report)


def load_init_weights(cfg: DictConfig) -> tuple[torch.nn.Module, Path]:
    """The network of ``init_weights`` (a checkpoint file or a shipped model name) and its file,
    loaded before anything else is built, so a bad value fails the job at once, in one line."""
    spec = cfg.init_weights
    try:
        path, _ = resolve_model(spec, key="init_weights")
        with torch.random.fork_rng(devices=[]):  # building the network draws from the seeded RNG
            net, _, _ = load_checkpoint(path)
    except FileNotFoundError as exc:  # "init_weights=<spec>: no such checkpoint file, and not a shipped model name (...)"
        raise ConfigError(str(exc)) from None
    except CheckpointError as exc:  # "<file>: not a fer_sweep checkpoint ..."
        raise ConfigError(f"init_weights={spec}: {exc}") from None
    return net, path


def init_weights(cfg: DictConfig, model: Any, start: tuple[torch.nn.Module, Path]) -> dict[str, str]:
    """Start from the network weights of ``init_weights`` (``start``: what :func:`load_init_weights`
    returned), to fine-tune a trained model with a new schedule; optimizer and scheduler start
    fresh.  The network must have the same parameter names and shapes (same network, width and
    number of classes; dropout may differ).  Returns the file and its sha256 for ``results.json``."""
    net, path = start
    try:
        model.net.load_state_dict(net.state_dict())
    except RuntimeError as exc:
        raise ConfigError(f"init_weights={cfg.init_weights}: its network does not fit model.net ({str(exc).splitlines()[0][:160]}); "
                          "expected a checkpoint of the same network, width and number of classes") from None
    return {"path": str(path), "sha256": file_sha256(path)}


def seed_run(cfg: DictConfig) -> None:
    """Seed everything when ``seed`` is set: ``seed=0`` is a seed (the template's truthiness bug)."""
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)


def resume_checkpoint(cfg: DictConfig, out_dir: Path) -> Path | None:
    """The ``last.ckpt`` this run continues from, or ``None`` for a fresh start."""
    last = out_dir / "checkpoints" / "last.ckpt"
    return last if cfg.get("resume", True) and last.is_file() else None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; returns the dict written to ``results.json``.

    Never raises for a bad job: invalid values, exceptions and divergence are recorded as the
    job's status, so one failed job cannot kill a sweep.  The job holds its folder for as long as
    it runs (:func:`fer_sweep.run_folder.run_folder_lock`); a folder another live process is writing
    fails this job at once and is left untouched."""
    out_dir = Path(cfg.paths.output_dir)
    try:
        with run_folder_lock(out_dir):
            return _run_locked(cfg, out_dir)
    except RunFolderBusy as exc:  # the folder is another process's: write nothing into it
        return _refuse(out_dir, str(exc))


REFUSED: dict[str, str] = {}
"""Run folders this process left alone (busy, or another run's), with the reason: their
``results.json`` is not this run's, so the exit summary (``python -m fer_sweep``) reads it here."""


def _refuse(out_dir: Path, error: str) -> dict[str, Any]:
    log.error("%s", error)
    REFUSED[str(out_dir.resolve())] = error
    return {"status": "failed", "error": error}


def _run_locked(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    previous = read_results(out_dir)
    completed = bool(previous and previous.get("status") == "completed")
    if completed or resume_checkpoint(cfg, out_dir):
        error = other_settings(out_dir, OmegaConf.to_container(cfg, resolve=True), "completed" if completed else "unfinished")
        if error:  # another run's: neither skipped as done, nor resumed, nor overwritten
            return _refuse(out_dir, error)
    if completed and not cfg.get("force"):
        epochs = previous.get("max_epochs")
        if epochs in (None, cfg.trainer.get("max_epochs")):
            log.info("%s already completed; skipping (force=true reruns it)", out_dir)
            return previous
        how = "continuing it to" if resume_checkpoint(cfg, out_dir) else "no last.ckpt to continue (or resume=false): training afresh to"
        log.info("%s completed %s epochs; %s trainer.max_epochs=%s", out_dir, epochs, how, cfg.trainer.get("max_epochs"))
    results = new_results(cfg, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    start = time.time()
    stop: SystemExit | None = None
    writer = not secondary_rank()  # under DDP rank 0 writes the run's files; the other ranks train
    try:
        validate(cfg)
        if writer:
            write_results(out_dir, results)
            atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        results = _fit_and_test(cfg, out_dir, results)
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        results.update(status="failed", error=str(exc))
    except FER2013Error as exc:  # bad input, like a bad setting: its one line, no class name, no traceback
        log.error("data: %s", exc)
        results.update(status="failed", error=str(exc))
    except DivergedError as exc:
        log.error("run diverged: %s", exc)
        results.update(status="diverged", error=str(exc))
    except Exception as exc:  # recorded, so one failed job never kills a sweep
        log.error("run failed: %s: %s (traceback in %s)", type(exc).__name__, exc, out_dir / "error.log")
        if writer:
            atomic_write_text(out_dir / "error.log", traceback.format_exc())
        results.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except SystemExit as exc:  # SIGTERM (Lightning's SIGTERMException) or Ctrl-C (Lightning exits 1): stop, and say so
        stop = _stopped(exc)
        how = "SIGTERM" if isinstance(exc, SIGTERMException) else "an interrupt"
        results.update(status="interrupted", error=f"stopped by {how} after {results.get('epochs_run', 0)} epoch(s); rerun the same command to resume from last.ckpt")
        log.error("%s: %s", out_dir, results["error"])
    # a run resumed from last.ckpt adds the time its earlier attempts spent; a fresh rerun does not
    earlier = float((previous or {}).get("wall_time_s") or 0.0) if results.get("resumed_from_epoch") is not None else 0.0
    results["wall_time_s"] = round(time.time() - start + earlier, 2)
    if writer:
        write_results(out_dir, results)
    log.info("%s: status=%s best_val_acc=%s test_acc_best=%s", out_dir, results["status"], results.get("best_val_acc"), results.get("test_acc_best"))
    if stop is not None:  # the process was asked to stop: the rest of a sweep does not run either
        raise stop
    return results


EXIT_SIGTERM = 143
"""128 + SIGTERM, what a shell reports for a process the signal ended."""


def _stopped(exc: SystemExit) -> SystemExit:
    """The exit to raise once the run's files are written: 143 for SIGTERM (Lightning's own
    ``SIGTERMException`` carries no code, so the process ended with status 0), else as given."""
    return SystemExit(EXIT_SIGTERM) if isinstance(exc, SIGTERMException) else exc


def _fit_and_test(cfg: DictConfig, out_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    seed_run(cfg)
    if cfg.get("malloc_tuning", True):
        tune_allocator()
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    if cfg.get("threads") is not None:
        torch.set_num_threads(int(cfg.threads))
    last = resume_checkpoint(cfg, out_dir)
    resume = str(last) if last else None
    # the resumed state replaces any starting weights: init_weights counts for a fresh start only
    start = load_init_weights(cfg) if cfg.get("init_weights") and not resume else None
    datamodule = _instantiate(cfg.data)
    model = _instantiate(cfg.model, class_names=datamodule.class_names)
    if resume:
        log.info("resuming from %s", resume)
    elif start is not None:
        results["init_weights"] = init_weights(cfg, model, start)
        log.info("starting from the weights of %s", results["init_weights"]["path"])
    loggers = _instantiate_list(cfg.get("logger"))
    callbacks = [c for c in _instantiate_list(cfg.get("callbacks")) if loggers or not isinstance(c, LearningRateMonitor)]
    callbacks.append(RecordSplits(out_dir, results))
    if not resume:
        callbacks.append(StartAfresh(out_dir, results))
    trainer: pl.Trainer = _instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        results["status"] = "completed"
    finally:
        if getattr(model, "resumed_from_epoch", None) is not None:
            results["resumed_from_epoch"] = model.resumed_from_epoch
        history = list(model.history)
        epoch, best_acc = best_epoch(history)
        results.update(epochs_run=len(history), best_epoch=epoch, best_val_acc=best_acc, final_val_acc=history[-1]["val_acc"] if history else None, class_names=list(datamodule.class_names))
        if datamodule.split_sources:  # what val and test are, for the report's labels
            results["splits"] = dict(datamodule.split_sources)
    if cfg.get("test_after_fit", True):
        ckpt_cb = trainer.checkpoint_callback
        best_path = getattr(ckpt_cb, "best_model_path", "") or ""
        last_report = _test(trainer, model, datamodule, None)
        best_report = _test(trainer, model, datamodule, best_path) or last_report
        results.update(test_acc_best=best_report["acc"], test_acc_last=last_report["acc"], test_macro_f1_best=best_report["macro_f1"], per_class_acc=best_report["per_class_acc"], confusion_matrix=best_report["confusion_matrix"], best_checkpoint=best_path)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    results = run(cfg)
    return results.get("best_val_acc")
