"""Find the jobs of one or more sweep folders and read what each left (results.json, metrics.csv).

Works on a finished sweep, a running one (jobs still ``running``, or with no results yet) and one
with failed jobs: every job folder is listed with its status, nothing is silently dropped.  A job
whose results.json or metrics.csv cannot be read is listed as ``failed`` with an ``error`` naming the
file (and row and column), so one damaged job never stops the summary or report of the others.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_sweep.results import RESULTS_FILE, ResultsError, load_results

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


class MetricsError(ValueError):
    """A ``metrics.csv`` that is not numbers per epoch; the message names the file, row and column."""


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a job's ``metrics.csv`` as floats (``epoch`` as int), one per epoch.

    A blank cell is a value not logged that epoch (NaN, left out of curves); a row without an epoch
    is skipped, and rows of the same epoch are merged (Lightning-style files log train and val
    metrics on separate rows).  Any other non-number raises :class:`MetricsError`."""
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:  # bad bytes end as a non-number cell
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                _merge_row(path, reader, row, by_epoch)
        except csv.Error as exc:  # e.g. a binary file's huge "line"
            raise MetricsError(f"{path}:{reader.line_num}: not parseable as CSV ({exc}); expected a header epoch,... and one row per epoch") from None
    return list(by_epoch.values())


def _merge_row(path: Path, reader: csv.DictReader, row: dict, by_epoch: dict[int, dict[str, float]]) -> None:
    line = reader.line_num
    if "epoch" not in (reader.fieldnames or []):
        raise MetricsError(f"{path}:1: header {reader.fieldnames!r:.80} has no 'epoch' column; expected epoch,train_loss,val_loss,lr,train_acc,val_acc")
    if None in row:  # more cells than the header has columns
        raise MetricsError(f"{path}:{line}: {len(row) - 1 + len(row[None])} cells; expected {len(row) - 1} ({','.join(reader.fieldnames)})")
    values = {k: _number(path, line, k, v) for k, v in row.items()}
    epoch = values["epoch"]
    if math.isnan(epoch):
        return
    if not math.isfinite(epoch) or epoch != int(epoch):
        raise MetricsError(f"{path}:{line}: column 'epoch' is {row['epoch']!r:.40}; expected a whole number")
    merged = by_epoch.setdefault(int(epoch), {})
    merged.update({k: v for k, v in values.items() if not (math.isnan(v) and k in merged)}, epoch=int(epoch))


def _number(path: Path, line: int, column: str, value: str | None) -> float:
    if value is None or not value.strip():
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise MetricsError(f"{path}:{line}: column {column!r} is {value!r:.40}; expected a number or a blank cell") from None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders below ``sweep_dir``: folders Hydra started (``.hydra/``) or that hold results.json.

    (Lightning's own ``csv/metrics.csv`` inside a job is not a job.)"""
    found = {p.parent for p in sweep_dir.rglob(RESULTS_FILE)}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted(found)


def collect(*sweep_dirs: str | Path) -> list[Job]:
    """All jobs of the given sweep folders, with their results and per-epoch metrics; each job
    folder once, however often it is reached (``plot A A``, or ``A`` and ``A/sub``)."""
    jobs, seen = [], set()
    for d in sweep_dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such sweep folder; expected a folder under multirun/ holding job folders")
        for jd in job_dirs(d):
            if jd.resolve() not in seen:  # a folder given twice (or inside another given one) counts once
                seen.add(jd.resolve())
                jobs.append(read_job(jd))
    return jobs


def read_job(path: Path) -> Job:
    """One job folder; a damaged file makes the job ``failed`` with the reason as its ``error``
    (kept out of every statistic, listed by the report), instead of an exception that would stop
    the report of a whole sweep, or a silent ``pending``."""
    try:
        results = load_results(path)
    except (ResultsError, OSError) as exc:
        return Job(path, {"status": "failed", "error": f"unreadable {_reason(exc)}"})
    try:
        metrics = read_metrics(path / "metrics.csv")
    except (MetricsError, OSError) as exc:
        recorded = f" (its results.json says {results.get('status')})" if results else ""
        return Job(path, {**(results or {}), "status": "failed", "error": f"unreadable {_reason(exc)}{recorded}"})
    return Job(path, results or {"status": "pending"}, metrics)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def summary_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per job, with the columns of ``summary.csv``: the jobs' own numbers, unchanged."""
    rows = []
    for job in jobs:
        row = {k: job.get(k) for k in SUMMARY_COLUMNS}
        row.update(job=job.name, status=job.status)
        rows.append(row)
    return rows
