"""Where the Hydra configs live, the project's resolvers, and checks that run before training.

The top-level ``conf/`` folder is packaged as ``fer_sweep.conf`` (see ``pyproject.toml``), so the
same ``pkg://fer_sweep.conf`` search path works from a source checkout, an editable install and
a wheel installed anywhere: Hydra never has to resolve ``config_path`` relative to a source file.
"""

from __future__ import annotations

import os
import secrets
import warnings

from omegaconf import DictConfig, OmegaConf

from fer_sweep.cpu import MAX_THREADS

CONFIG_PATH = "pkg://fer_sweep.conf"
CONFIG_NAME = "train"
RUN_ID_ENV = "FER_SWEEP_RUN_ID"


class ConfigError(ValueError):
    """An invalid configuration value, reported before any training starts."""


def run_id() -> str:
    """A per-launch token appended to output folders, so two sweeps started in the same second
    never share a folder.  Kept in the environment so launcher worker processes agree on it."""
    token = os.environ.get(RUN_ID_ENV)
    if not token:
        token = secrets.token_hex(3)
        os.environ[RUN_ID_ENV] = token
    return token


def quiet_schema_warning() -> None:
    """conf/hydra/launcher/joblib.yaml deliberately shares the plugin's name (so ``hydra/launcher=joblib``
    gets our defaults); Hydra warns about the schema match (four lines, once per job and per joblib
    worker), which is expected here.  The message starts with a newline, hence ``(?s)``."""
    warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema", category=UserWarning)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fer_run_id"):
        OmegaConf.register_new_resolver("fer_run_id", run_id, use_cache=True)


def _number(key: str, value, kind: type, ok, expected: str):
    """``value`` as ``kind`` (int or float) if ``ok(value)``; else a one-line ConfigError naming the key.
    Booleans are not numbers here, and an int must be one (``1.5`` epochs is an error, not 1)."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value}: expected {expected}") from None
    if not ok(number):
        raise ConfigError(f"{key}={value}: expected {expected}")
    return number


def validate(cfg: DictConfig) -> None:
    """Reject values that would waste a run, with one line naming the key and what is expected."""
    _number("optimizer.lr", cfg.optimizer.get("lr"), float, lambda v: v > 0, "a positive learning rate such as 0.001")
    _number("trainer.max_epochs", cfg.trainer.get("max_epochs"), int, lambda v: v >= 1, "an integer >= 1")
    for key in ("batch_size", "eval_batch_size"):
        if key in cfg.data:
            _number(f"data.{key}", cfg.data[key], int, lambda v: v >= 1, "an integer >= 1")
    _number("data.num_classes", cfg.data.num_classes, int, lambda v: v in (6, 7), "7, or 6 (disgust folded into angry)")
    if cfg.get("seed") is not None:
        _number("seed", cfg.seed, int, lambda v: True, "an integer or null")
    if cfg.get("threads") is not None:
        _number("threads", cfg.threads, int, lambda v: 1 <= v <= MAX_THREADS, f"a number of CPU threads from 1 to {MAX_THREADS}, or null for PyTorch's default")
    _number("model.label_smoothing", cfg.model.get("label_smoothing", 0.0), float, lambda v: 0.0 <= v < 1.0, "a value in [0, 1)")
    if cfg.data.get("subset") is not None:
        _number("data.subset", cfg.data.subset, float, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1] or null")
    if "split_seed" in cfg.data:
        _number("data.split_seed", cfg.data.split_seed, int, lambda v: True, "an integer")
    net = cfg.model.get("net") or {}
    if net.get("dropout") is not None:
        _number("model.net.dropout", net.dropout, float, lambda v: 0.0 <= v < 1.0, "a dropout probability in [0, 1)")
    for key in ("weight_decay", "momentum"):
        if cfg.optimizer.get(key) is not None:
            _number(f"optimizer.{key}", cfg.optimizer[key], float, lambda v: v >= 0.0 if key == "weight_decay" else 0.0 <= v < 1.0,
                    "a weight decay >= 0 such as 0.0001" if key == "weight_decay" else "a momentum in [0, 1) such as 0.9")
    validate_scheduler(cfg)
    validate_trainer(cfg)
    validate_teacher(cfg)


SCHEDULER_VALUES = {
    "step_size": (int, lambda v: v >= 1, "a whole number of epochs >= 1"),
    "T_max": (int, lambda v: v >= 1, "a whole number of epochs >= 1"),
    "patience": (int, lambda v: v >= 0, "a whole number of epochs >= 0"),
    "gamma": (float, lambda v: 0.0 < v <= 1.0, "a factor in (0, 1] such as 0.1"),
    "factor": (float, lambda v: 0.0 < v < 1.0, "a factor in (0, 1) such as 0.1"),
    "eta_min": (float, lambda v: v >= 0.0, "a learning rate >= 0"),
    "min_lr": (float, lambda v: v >= 0.0, "a learning rate >= 0"),
    "threshold": (float, lambda v: v >= 0.0, "a threshold >= 0"),
}
"""Scheduler arguments checked before training (``scheduler.partial.<key>``): the scheduler is only
built when fitting starts, and a bad one failed only at the epoch that first used it."""


def validate_scheduler(cfg: DictConfig) -> None:
    partial = (cfg.get("scheduler") or {}).get("partial") or {}
    for key, (kind, ok, expected) in SCHEDULER_VALUES.items():
        if partial.get(key) is not None:
            _number(f"scheduler.partial.{key}", partial[key], kind, ok, expected)
    if partial.get("milestones") is not None:
        stones = partial.milestones
        try:
            values = [_number("scheduler.partial.milestones", v, int, lambda v: v >= 1, "") for v in stones]
        except (ConfigError, TypeError):
            values = None
        if not values or values != sorted(set(values)):
            raise ConfigError(f"scheduler.partial.milestones={_text(stones)}: expected increasing epochs such as [10,20,50]")


PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16")
"""What Lightning's ``Trainer(precision=...)`` accepts."""


def validate_trainer(cfg: DictConfig) -> None:
    precision = cfg.trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: expected 32-true (the default), bf16-mixed or 16-mixed (on a GPU), 64-true, or another of {', '.join(PRECISIONS)}")
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator}: no CUDA GPU is visible to PyTorch here; expected cpu or auto (or a machine with a GPU and a CUDA build of torch)")


def _text(value) -> str:
    """A config value as the user would write it on the command line (``[20,10]``)."""
    try:
        return str(OmegaConf.to_container(value)).replace(" ", "")
    except ValueError:  # not a config node: a plain value
        return str(value)


def validate_teacher(cfg: DictConfig) -> None:
    """Distillation settings (``model.teacher`` and its weights), checked before any training."""
    teacher = cfg.model.get("teacher")
    if teacher in (None, "", "None", "null"):
        return
    from fer_sweep.weights import resolve_model

    try:
        resolve_model(str(teacher), key="model.teacher")
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    _number("model.distill_weight", cfg.model.get("distill_weight", 0.5), float, lambda v: 0.0 <= v <= 1.0,
            "a weight in [0, 1] (the share of the teacher's loss)")
    _number("model.distill_temperature", cfg.model.get("distill_temperature", 2.0), float, lambda v: v > 0.0,
            "a positive temperature such as 2")
    tta = cfg.model.get("teacher_tta", "flip")
    if tta not in ("none", "flip", "tencrop"):
        raise ConfigError(f"model.teacher_tta={tta}: expected none, flip or tencrop")
