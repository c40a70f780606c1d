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
STATUSES = ("running", "completed", "diverged", "failed")


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


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
