"""``results.json``: what one run leaves for the sweep summary and the report.

Accuracies are fractions in [0, 1].  ``status`` is ``running``, ``completed``, ``diverged`` or
``failed``; every write is atomic, so a reader (the plot command during a sweep) never sees half
a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fer_sweep.io import atomic_write_json

RESULTS_FILE = "results.json"
STATUSES = ("running", "interrupted", "completed", "diverged", "failed")
"""``interrupted``: stopped by SIGTERM or Ctrl-C; rerunning the same command resumes it."""


class ResultsError(ValueError):
    """A ``results.json`` that exists but cannot be used; the message is one line naming the file."""


def load_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's results, ``None`` when it has written none yet; a file that is not a JSON object
    (truncated, hand-edited, another program's) raises :class:`ResultsError`, so that the report can
    show the job as unreadable rather than as pending or crash on it."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        what = "empty" if not exc.doc.strip() else f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}; truncated or corrupt?)"
        raise ResultsError(f"{path}: {what}; expected a JSON object written by fer_sweep training") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not UTF-8 text; expected a JSON object written by fer_sweep training") from None
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(data), "null")
        raise ResultsError(f"{path}: a JSON {kind}, not an object; expected a JSON object written by fer_sweep training")
    return data


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """Like :func:`load_results`, but an unusable file reads as ``None`` (training reruns such a
    job, the sweep callback counts it as failed)."""
    try:
        return load_results(run_dir)
    except ResultsError:
        return None


def new_results(cfg, overrides: list[str]) -> dict[str, Any]:
    """The record a run starts with (status ``running``): what it is, from its config, and the
    command-line overrides that made it.  ``train.py`` and packed training both start here, so a
    job's ``results.json`` has the same keys however it was launched."""
    return {
        "status": "running", "seed": cfg.get("seed"), "scheduler": cfg.scheduler.get("name"),
        "optimizer": str(cfg.optimizer._target_).rsplit(".", 1)[-1].lower(), "lr": cfg.optimizer.get("lr"),
        "model": cfg.model.net.get("name"), "max_epochs": cfg.trainer.get("max_epochs"), "overrides": list(overrides),
    }


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    if results.get("status") not in STATUSES:
        raise ValueError(f"results status {results.get('status')!r}; expected one of {STATUSES}")
    return atomic_write_json(Path(run_dir) / RESULTS_FILE, results)


def best_epoch(history: list[dict]) -> tuple[int | None, float | None]:
    """Epoch (1-based) and value of the best val accuracy in a run's history."""
    scored = [(r["val_acc"], -r["epoch"], r["epoch"]) for r in history if r.get("val_acc") == r.get("val_acc") and r.get("val_acc") is not None]
    if not scored:
        return None, None
    acc, _, epoch = max(scored)
    return int(epoch), float(acc)
