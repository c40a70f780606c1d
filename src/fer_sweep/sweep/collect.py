"""Find the jobs of one or more sweep folders and read what each left (results.json, metrics.csv).

Works on a finished sweep, a running one (jobs still ``running``, or with no results yet) and one
with failed jobs: every job folder is listed with its status, nothing is silently dropped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_sweep.results import RESULTS_FILE, read_results

SUMMARY_COLUMNS = (
    "job", "status", "model", "optimizer", "scheduler", "lr", "seed", "epochs_run", "best_epoch",
    "best_val_acc", "final_val_acc", "test_acc_best", "test_acc_last", "test_macro_f1_best", "wall_time_s",
)


@dataclass
class Job:
    """One job folder of a sweep."""

    path: Path
    results: dict[str, Any]
    metrics: list[dict[str, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.results.get("status", "pending"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.results.get(key, default)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a job's ``metrics.csv`` as floats (``epoch`` as int)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (int(v) if k == "epoch" else (float(v) if v not in ("", None) else math.nan)) for k, v in row.items()})
    return rows


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders below ``sweep_dir``: folders Hydra started (``.hydra/``) or that hold results.json.

    (Lightning's own ``csv/metrics.csv`` inside a job is not a job.)"""
    found = {p.parent for p in sweep_dir.rglob(RESULTS_FILE)}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted(found)


def collect(*sweep_dirs: str | Path) -> list[Job]:
    """All jobs of the given sweep folders, with their results and per-epoch metrics."""
    jobs = []
    for d in sweep_dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such sweep folder; expected a folder under multirun/ holding job folders")
        for jd in job_dirs(d):
            jobs.append(Job(jd, read_results(jd) or {"status": "pending"}, read_metrics(jd / "metrics.csv")))
    return jobs


def summary_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per job, with the columns of ``summary.csv``: the jobs' own numbers, unchanged."""
    rows = []
    for job in jobs:
        row = {k: job.get(k) for k in SUMMARY_COLUMNS}
        row.update(job=job.name, status=job.status)
        rows.append(row)
    return rows
