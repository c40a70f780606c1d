"""``summary.csv`` and ``summary.md`` of a sweep folder, written when the sweep ends."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fer_sweep.io import atomic_write_text
from fer_sweep.sweep.collect import SUMMARY_COLUMNS, collect, summary_rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rows_to_csv(rows: list[dict[str, Any]], columns=SUMMARY_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue()


def rows_to_markdown(rows: list[dict[str, Any]], columns=SUMMARY_COLUMNS) -> str:
    def cell(c: str, v: Any) -> str:
        if isinstance(v, float) and ("acc" in c or "f1" in c):
            return f"{100 * v:.2f}"
        return _fmt(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv``/``summary.md`` for every job found in ``sweep_dir``; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = summary_rows(collect(sweep_dir))
    atomic_write_text(sweep_dir / "summary.csv", rows_to_csv(rows))
    failed = [r["job"] for r in rows if r["status"] != "completed"]
    head = f"# Sweep summary: {sweep_dir}\n\n{len(rows)} jobs, {len(rows) - len(failed)} completed"
    head += f"; not completed: {', '.join(failed)}\n\n" if failed else "\n\n"
    atomic_write_text(sweep_dir / "summary.md", head + "Accuracies in %.\n\n" + rows_to_markdown(rows))
    return rows
