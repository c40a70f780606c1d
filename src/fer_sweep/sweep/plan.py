"""The jobs a sweep was asked to run (its ``multirun.yaml``), to tell which never started.

A sweep killed part-way, or a launcher that lost jobs, leaves fewer job folders than the grid has
cells; the report must say so instead of summarising the cells that happen to exist as if they
were the whole study.  Hydra writes the sweep's config, with its ``hydra.sweeper.params`` and the
command line's ``hydra.overrides.task``, to ``<sweep>/multirun.yaml``; the grid is expanded here
with Hydra's own override parser, so ``range(0,5)`` and ``choice(...)`` count as Hydra counts them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

from fer_sweep.sweep.collect import Job
from fer_sweep.sweep.stats import canonical_value, job_overrides

MULTIRUN_FILE = "multirun.yaml"
LISTED = 8
"""How many never-started cells a note names before it only counts them."""


def planned_grid(sweep_dir: str | Path) -> list[dict[str, str]] | None:
    """Every cell of the sweep's grid as ``{key: value}`` over its swept keys, or ``None`` when
    there is no readable ``multirun.yaml`` or nothing in it is swept."""
    f = Path(sweep_dir) / MULTIRUN_FILE
    try:
        import yaml
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = yaml.safe_load(f.read_text())
        hydra = cfg["hydra"]
        params = hydra.get("sweeper", {}).get("params") or {}
        items = [f"{k}={v}" for k, v in params.items()] + list(hydra.get("overrides", {}).get("task") or [])
        swept: dict[str, list[str]] = {}
        for o in OverridesParser.create().parse_overrides(items):
            key = o.key_or_group
            if o.is_sweep_override():
                swept[key] = [canonical_value(v) for v in o.sweep_string_iterator()]
            else:
                swept.pop(key, None)  # a later plain value replaces an earlier sweep of the key
    except Exception:  # no file, not YAML, a grammar the parser refuses: no plan to check against
        return None
    if not swept:
        return None
    keys = list(swept)
    return [dict(zip(keys, values)) for values in itertools.product(*(swept[k] for k in keys))]


def never_started(sweep_dir: str | Path, jobs: Sequence[Job]) -> tuple[int, list[dict[str, str]]] | None:
    """``(cells planned, cells with no job folder)`` for one sweep folder, or ``None`` (no plan)."""
    grid = planned_grid(sweep_dir)
    if grid is None:
        return None
    root = Path(sweep_dir).resolve()
    have = []
    for j in jobs:
        if root in j.path.resolve().parents:
            ov = job_overrides(j)
            have.append({k: canonical_value(v) for k, v in ov.items()})
    missing = [cell for cell in grid if not any(all(h.get(k) == v for k, v in cell.items()) for h in have)]
    return len(grid), missing


def never_started_lines(sweep_dirs: Sequence[str | Path], jobs: Sequence[Job]) -> list[str]:
    """One note per sweep folder whose grid has cells without a job folder."""
    lines = []
    for d in sweep_dirs:
        found = never_started(d, jobs)
        if not found or not found[1]:
            continue
        planned, missing = found
        cells = ["(" + ", ".join(f"{k}={v}" for k, v in cell.items()) + ")" for cell in missing]
        named = ", ".join(cells[:LISTED]) + (f" and {len(cells) - LISTED} more" if len(cells) > LISTED else "")
        lines.append(f"{d}: its {MULTIRUN_FILE} plans {planned} jobs; {len(missing)} not started (no job folder yet, or the sweep stopped before them): {named}. "
                     "The statistics cover the jobs that exist only")
    return lines
