"""Hydra callback: after a run or a sweep, record jobs that did not complete and summarise sweeps.

It runs in the launching process for every launcher (basic, joblib, submitit), so the summary and
the exit status see all jobs, including those that ran in worker processes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fer_sweep.results import read_results
from fer_sweep.sweep import state
from fer_sweep.sweep.summary import write_summary

log = logging.getLogger(__name__)


class SweepBookkeeping(Callback):
    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        out = Path(config.hydra.runtime.output_dir)
        res = read_results(out) or {"status": "failed"}
        if res.get("status") != "completed":
            state.FAILED.append(f"{out} ({res.get('status')}: {res.get('error', '')})")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        state.FAILED.extend(f"{r['job']} ({r['status']})" for r in rows if r["status"] != "completed")
        log.info("sweep summary written to %s (summary.csv, summary.md)", sweep_dir)
