"""Hydra callback: after a run or a sweep, record jobs that did not complete and summarise sweeps.

It runs in the launching process for every launcher (basic, joblib, submitit), so the summary and
the exit status see all jobs, including those that ran in worker processes.
"""

from __future__ import annotations

import itertools
import logging
import re
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


def shared_job_folder(config: DictConfig) -> str | None:
    """Two jobs of this sweep that would get the same folder, as a one-line message; else None.

    Job folders are named by their overrides minus ``hydra.job.config.override_dirname.exclude_keys``
    (``threads``, ``trainer``, launcher, data paths, ...), so a sweep over only such keys
    (``-m threads=1,2``) would put all its jobs in one folder: the second would find the first's
    results and skip, or be refused by its lock.  Only the basic sweeper's discrete sweeps
    (``a=1,2``, ``range``, ``choice``) are expanded here, the same way it expands them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    choices: dict[str, list[tuple[str, str]]] = {}  # key -> [(key_or_group, input line)], later wins
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [(override.key_or_group, f"{key}={override.get_value_element_as_str()}")]
        elif override.is_discrete_sweep():
            choices[key] = [(override.key_or_group, f"{key}={v}") for v in override.sweep_string_iterator()]
        else:
            return None  # an interval sweep: not the basic sweeper's (it refuses it itself)
    naming = config.hydra.job.config.override_dirname
    excluded = set(naming.exclude_keys)
    seen: dict[str, dict[str, str]] = {}
    for job in itertools.product(*choices.values()):
        lines = sorted(line for key, line in job if key not in excluded)
        name = re.sub("=", naming.kv_sep, naming.item_sep.join(lines))
        values = {line.split("=", 1)[0]: line for _, line in job}
        if name in seen:
            first = seen[name]
            differ = [k for k in values if values[k] != first.get(k)]
            if not differ:
                return f"this sweep lists the job '{name or '(no overrides)'}' twice: each value once, please"
            return (f"two jobs of this sweep ({', '.join(first[k] for k in differ)} and "
                    f"{', '.join(values[k] for k in differ)}) would share the folder "
                    f"'{name or '(no overrides)'}': {', '.join(differ)} is left out of job folder names "
                    "(hydra.job.config.override_dirname.exclude_keys); sweep it in separate launches")
        seen[name] = values
    return None


class SweepBookkeeping(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a sweep two of whose jobs would share a folder, before any job runs."""
        clash = shared_job_folder(config)
        if clash is not None:
            print(f"fer_sweep: {clash}", file=sys.stderr)
            sys.exit(1)

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
