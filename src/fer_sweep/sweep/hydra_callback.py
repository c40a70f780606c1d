"""Hydra callback: after a run or a sweep, record jobs that did not complete and summarise sweeps.

It runs in the launching process for every launcher (basic, joblib, submitit), so the summary and
the exit status see all jobs, including those that ran in worker processes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fer_sweep.results import read_results
from fer_sweep.run_folder import busy_message, folder_holder, secondary_rank
from fer_sweep.sweep import state
from fer_sweep.sweep.summary import write_summary

log = logging.getLogger(__name__)


class SweepBookkeeping(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a single run whose folder another live process is writing, before Hydra saves its
        ``.hydra/`` files and log there (the job's own lock, in :func:`fer_sweep.train.run`, comes
        after them; sweep jobs rely on that one, their folders being named by their overrides)."""
        if secondary_rank():  # a DDP rank Lightning relaunched into rank 0's (locked) folder
            return
        out = Path(str(config.hydra.run.dir))  # the folder Hydra is about to use (same cached ${now:})
        holder = folder_holder(out)
        if holder is not None:
            print(f"fer_sweep: {busy_message(out, holder, 'hydra.run.dir=...')}", file=sys.stderr)
            sys.exit(1)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if secondary_rank():  # rank 0 reports the run
            return
        from fer_sweep import train  # ran in this process (single runs): it knows what it left alone

        out = Path(config.hydra.runtime.output_dir)
        refused = train.REFUSED.get(str(out.resolve()))
        if refused is not None:  # the folder's results.json is another run's
            state.FAILED.append(f"{out} (not run: {refused})")
            return
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
