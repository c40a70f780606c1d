"""One run per run folder: one writer at a time, and no run mistaken for another.

Two processes training into the same folder (a launcher started twice, a sweep rerun while the
first is still going) would resume from the same ``last.ckpt`` and overwrite each other's
checkpoints, ``metrics.csv`` and ``results.json``.  :func:`run_folder_lock` holds an exclusive
``flock`` on ``<run>/.fer_sweep.lock`` for the whole job; a second writer gets a one-line error
naming the folder and the process that holds it, and writes nothing.

``flock`` is released by the kernel when its holder exits, however it exits (SIGKILL included), so
there is never a stale lock to clean up, and a killed run resumes as before.  The lock file itself
stays (empty when free): removing it would let a waiting opener and a new one lock two different
files.  Under DDP every rank calls the job; only the first rank of the first node locks (the others
share its folder by design), see :func:`secondary_rank`.  Where ``fcntl`` is missing (Windows) there
is no lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".fer_sweep.lock"
# set by torchrun / Lightning's DDP launcher / SLURM for the processes of one distributed job
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


class RunFolderBusy(RuntimeError):
    """Another live process is writing this run folder."""


def secondary_rank() -> bool:
    """True in a distributed job's ranks other than global rank 0 (they write the folder of rank 0)."""
    return any(os.environ.get(name, "0").strip() not in ("", "0") for name in _RANK_VARIABLES)


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info['pid']} on {info.get('host', '?')} (since {started})"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def run_folder_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir`` for this process; raises :class:`RunFolderBusy` (one line) if another holds it."""
    if fcntl is None or secondary_rank():
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            raise RunFolderBusy(f"{run_dir}: already being written by {_describe_holder(fd)}; "
                                "wait for it to finish, or give this run another folder (hydra.run.dir=... / hydra.sweep.dir=...)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # free again: no holder to name
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def folder_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds ``run_dir`` now (as in the busy error), or None if nobody does."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _describe_holder(fd)
    finally:
        os.close(fd)


def other_settings(run_dir: str | os.PathLike, theirs: list[str], ours: list[str], exclude: Iterable[str] = ()) -> str | None:
    """The one-line error for a folder that holds a completed run with other settings than this one,
    or None when the settings match.  Settings are the task overrides less ``exclude`` (where and
    how a run ran: the keys Hydra's job folder names leave out), so rerunning a finished job with
    other threads or another launcher still skips it, while ``hydra.run.dir=<finished run> seed=1``
    is neither skipped as done nor allowed to overwrite seed 0's results."""
    exclude = tuple(exclude)

    def settings(overrides: list[str]) -> set[str]:  # an excluded key covers its sub-keys: callbacks -> callbacks.progress_bar
        return {o for o in overrides if not any(k == e or k.startswith((e + ".", e + "/")) for k in [o.lstrip("+~").split("=", 1)[0]] for e in exclude)}

    theirs_set, ours_set = settings(theirs), settings(ours)
    if theirs_set == ours_set:
        return None
    return (f"{run_dir} holds a completed run with other settings ({' '.join(sorted(theirs_set - ours_set)) or 'the defaults'} "
            f"instead of {' '.join(sorted(ours_set - theirs_set)) or 'the defaults'}); give this run another folder, or force=true to replace it")
