"""Helpers for tests that compose configs and run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from fer_sweep.config import register_resolvers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUIET = ["callbacks.progress_bar=null", "threads=1"]
TINY = ["data.subset=0.05", "trainer.accelerator=cpu", *QUIET]
"""5% of every split on the CPU, quiet: real data, a few seconds an epoch."""


def compose_cfg(overrides: list[str] | None = None, hydra_cfg: bool = False):
    register_resolvers()
    with initialize_config_module("fer_sweep.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides or []), return_hydra_config=hydra_cfg)


def run_cli(args: list[str], cwd: Path | None = None, timeout: float = 600, module: str = "fer_sweep", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` and return the finished process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("FER_SWEEP_RUN_ID", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """For test modules that import it (autouse there): these tests check results, not speed, and
    one thread keeps them quick on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
