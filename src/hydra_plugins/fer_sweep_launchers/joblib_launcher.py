"""``hydra/launcher=joblib``: the joblib plugin's launcher, made to stop its workers with it.

A SIGTERM sent to the launching process alone (``kill <pid>``) ends that process at once, and its
loky workers do not notice: each trains its current job on to the end, with nobody left to report
to (seen: two jobs at epoch 5 of 30 finished all 30), then idles until loky's timeout.  Here, while
the sweep runs, SIGTERM is passed on to the worker processes, so each job records itself
``interrupted`` as a single run does (``fer_sweep.train.run``); once the jobs that were running say
so (or after ``GRACE_S``), what is left of the workers is killed and the launcher exits 143.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _PluginJoblibLauncher

GRACE_S = 60.0
"""How long running jobs get to record themselves ``interrupted`` (a training step, then the write)."""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; elsewhere none are found)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            parents[int(entry.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


def _status(results: Path) -> str | None:
    try:
        return json.loads(results.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _is_resource_tracker(pid: int) -> bool:
    """loky's resource tracker: left alone, it cleans up the workers' shared memory once its pipe
    closes (signalled, it prints a traceback for each entry)."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        if not _is_resource_tracker(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


@contextlib.contextmanager
def sigterm_stops_workers(sweep_dir: Path, grace_s: float = GRACE_S) -> Iterator[None]:
    """While the block runs, SIGTERM to this process goes to its worker processes first; the jobs
    that were running get ``grace_s`` to record themselves, then the workers are killed and the
    process exits 143."""

    def stop(signum, frame) -> None:
        running = [p for p in sweep_dir.glob("*/results.json") if _status(p) == "running"]
        _signal_all(descendants(os.getpid()), signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_status(p) == "running" for p in running):
            time.sleep(0.2)
        _signal_all(descendants(os.getpid()), signal.SIGKILL)  # idle workers, and any that took a queued job
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class JoblibLauncher(_PluginJoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        with sigterm_stops_workers(Path(str(self.config.hydra.sweep.dir))):
            return super().launch(job_overrides, initial_job_idx)
