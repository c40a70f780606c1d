"""Where the Hydra configs live, the project's resolvers, and checks that run before training.

The top-level ``conf/`` folder is packaged as ``fer_sweep.conf`` (see ``pyproject.toml``), so the
same ``pkg://fer_sweep.conf`` search path works from a source checkout, an editable install and
a wheel installed anywhere: Hydra never has to resolve ``config_path`` relative to a source file.
"""

from __future__ import annotations

import os
import secrets

from omegaconf import DictConfig, OmegaConf

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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fer_run_id"):
        OmegaConf.register_new_resolver("fer_run_id", run_id, use_cache=True)


def validate(cfg: DictConfig) -> None:
    """Reject values that would waste a run, with one line naming the key and what is expected."""
    lr = cfg.optimizer.get("lr")
    if lr is None or not float(lr) > 0:
        raise ConfigError(f"optimizer.lr={lr}: expected a positive learning rate such as 0.001")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is None or int(epochs) < 1:
        raise ConfigError(f"trainer.max_epochs={epochs}: expected an integer >= 1")
    if int(cfg.data.batch_size) < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size}: expected an integer >= 1")
    if int(cfg.data.num_classes) not in (6, 7):
        raise ConfigError(f"data.num_classes={cfg.data.num_classes}: expected 7, or 6 (disgust folded into angry)")
    if cfg.get("seed") is not None and not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed}: expected an integer or null")
    smoothing = float(cfg.model.get("label_smoothing", 0.0))
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"model.label_smoothing={smoothing}: expected a value in [0, 1)")
    validate_teacher(cfg)


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
    weight = float(cfg.model.get("distill_weight", 0.5))
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"model.distill_weight={weight}: expected a weight in [0, 1] (the share of the teacher's loss)")
    temperature = float(cfg.model.get("distill_temperature", 2.0))
    if not temperature > 0.0:
        raise ConfigError(f"model.distill_temperature={temperature}: expected a positive temperature such as 2")
    tta = cfg.model.get("teacher_tta", "flip")
    if tta not in ("none", "flip", "tencrop"):
        raise ConfigError(f"model.teacher_tta={tta}: expected none, flip or tencrop")
