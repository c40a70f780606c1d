"""One run per run folder: one writer at a time, and no run mistaken for another.

Two processes training into the same folder (a launcher started twice, a sweep rerun while the
first is still going) would resume from the same ``last.ckpt`` and overwrite each other's
checkpoints, ``metrics.csv`` and ``results.json``.  :func:`run_folder_lock` holds an exclusive
``flock`` on ``<run>/.fer_sweep.lock`` for the whole job; a second writer gets a one-line error
naming the folder and the process that holds it, and writes nothing more there.

``flock`` is released by the kernel when its holder exits, however it exits (SIGKILL included), so
there is never a stale lock to clean up, and a killed run resumes as before.  The lock file itself
stays (empty when free): removing it would let a waiting opener and a new one lock two different
files.  Under DDP every rank calls the job; only global rank 0 locks (the others share its folder
by design), see :func:`secondary_rank`.  Where there is no ``flock`` (Windows; NFS without a lock
daemon, Lustre without ``-o flock``) runs are not locked, with a warning.

:func:`other_settings` is the second guard: a folder whose run is completed (or would be resumed)
is not taken for a run with other settings, comparing the resolved configurations.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping


try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_FILE = ".fer_sweep.lock"
SAVED_CONFIG = "config.yaml"
# set by torchrun / Lightning's DDP launcher / SLURM for the processes of one distributed job
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
_WORLD_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS")
_NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL)
_BUSY_RETRIES = 20  # x 25 ms: a folder_holder probe holds the lock for microseconds

NOT_SETTINGS = ("paths", "data.root", "data.cache_dir", "data.device_resident", "threads", "force", "resume",
                "malloc_tuning", "matmul_precision", "test_after_fit", "trainer.accelerator", "trainer.enable_progress_bar",
                "callbacks.progress_bar", "callbacks.lr_monitor", "callbacks.flush_subnormals", "logger")
"""Config keys (and everything below them) that say where and how a run ran, or what it logs,
never what it computes: rerunning a finished run with other threads, paths or logging still finds
it.  Everything else (seed, data, model, optimizer, scheduler, augmentation, epochs, precision,
devices, checkpoint monitor, ...) is a setting."""


class RunFolderBusy(RuntimeError):
    """Another live process is writing this run folder."""


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default


def secondary_rank() -> bool:
    """True in a distributed job's processes other than global rank 0 (they share its folder):
    a world size above 1 (``WORLD_SIZE``, ``SLURM_NTASKS``) and a non-zero rank.  A lone process
    that inherited a rank variable (world size 1) is no secondary rank."""
    if max(_int_env(name, 1) for name in _WORLD_VARIABLES) <= 1:
        return False
    return any(_int_env(name, 0) != 0 for name in _RANK_VARIABLES)


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info['pid']} on {info.get('host', '?')} (since {started})"


def _flock(fd: int, mode: int) -> bool | None:
    """True: locked; False: someone holds it; None: this filesystem has no flock."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            return None
        raise
    return True


def busy_message(run_dir: str | os.PathLike, holder: str, where: str) -> str:
    """The one line for a folder ``holder`` is writing; ``where``: the settings that pick another."""
    return f"{run_dir}: already being written by {holder}; wait for it to finish, or give this run another folder ({where})"


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
        for _ in range(_BUSY_RETRIES):
            got = _flock(fd, fcntl.LOCK_EX)
            if got is not False:
                break
            time.sleep(0.025)
        if got is None:
            log.warning("%s: this filesystem has no flock, so nothing stops a second process from writing this run folder", run_dir)
            yield
            return
        if not got:
            raise RunFolderBusy(busy_message(run_dir, _describe_holder(fd), "hydra.run.dir=... / hydra.sweep.dir=..."))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # free again: no holder to name
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def folder_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds ``run_dir`` now (as in the busy error), or None if nobody does.  An empty lock file
    is free without asking the kernel; otherwise a shared-lock probe (read access is enough, also
    on NFS) tells a live holder from one that was killed."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        got = _flock(fd, fcntl.LOCK_SH)
        if got is False:
            return _describe_holder(fd)
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _is_setting(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)


CONTINUABLE = ("trainer.max_epochs",)
"""Settings a run may change and still be the same run, continued (resumed with more or fewer
epochs), with the keys interpolated from them (``scheduler.T_max: ${trainer.max_epochs}``)."""


def _in_run_folder(flat: dict[str, Any]) -> dict[str, Any]:
    """Paths inside the run's own folder (``trainer.default_root_dir``, the checkpoint callback's
    ``dirpath``, all copies of ``paths.output_dir``) relative to it: the same run reached through a
    symlink, or moved or copied elsewhere, is still the same run."""
    root = flat.get("paths.output_dir")
    if not isinstance(root, str) or not root:
        return flat
    root = root.rstrip("/")
    return {k: ("<run folder>" + v[len(root):] if isinstance(v, str) and (v == root or v.startswith(root + "/")) else v)
            for k, v in flat.items()}


def config_differences(saved: Mapping, current: Mapping, limit: int = 3) -> list[str]:
    """``key: saved -> current`` for the settings (not :data:`NOT_SETTINGS`) that differ between
    two resolved configurations, at most ``limit`` of them (then ``...``).  A :data:`CONTINUABLE`
    key may differ, and so may a key whose change is the same as its (an interpolated copy)."""
    a, b = _flatten(saved), _flatten(current)
    ra, rb = _in_run_folder(a), _in_run_folder(b)
    pairs = {k: (a.get(k, "<unset>"), b.get(k, "<unset>")) for k in dict.fromkeys([*a, *b]) if _is_setting(k)}
    differ = [k for k in pairs if ra.get(k, "<unset>") != rb.get(k, "<unset>")]  # in the configs' order
    allowed = {pairs[k] for k in CONTINUABLE if k in differ}
    keys: list[str] = []
    for k in sorted((k for k in differ if k not in CONTINUABLE and pairs[k] not in allowed), key=lambda k: k.count(".")):
        # an interpolated copy (model.optimizer.lr of optimizer.lr, data.seed of seed) is no news
        if not any(k.endswith("." + s) and pairs[k] == pairs[s] for s in keys):
            keys.append(k)
    shown = [f"{k}: {pairs[k][0]} -> {pairs[k][1]}" for k in keys[:limit]]
    return shown + (["..."] if len(keys) > limit else [])


def other_settings(run_dir: str | os.PathLike, current: Mapping, what: str = "completed") -> str | None:
    """The one-line error for a folder that holds a ``what`` run (completed, or unfinished with a
    checkpoint to resume) whose saved ``config.yaml`` differs from ``current`` (the resolved
    configuration) in a setting; None when they agree or nothing was saved.  So ``hydra.run.dir=<a
    finished seed-0 run> seed=1`` is neither skipped as done nor resumed from seed 0's weights."""
    path = Path(run_dir) / SAVED_CONFIG
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # a damaged config.yaml: say so rather than guess
        return f"{path}: unreadable ({type(exc).__name__}); cannot tell whether this folder's run has this run's settings"
    diff = config_differences(saved, current)
    if not diff:
        return None
    article = "an" if what[:1] in "aeiou" else "a"
    return (f"{run_dir} holds {article} {what} run with other settings ({'; '.join(diff)}); "
            "give this run another folder, or delete that one to replace its run")


# --------------------------------------------------------------------------- a fresh start

def set_aside_checkpoints(out_dir: Path) -> Path | None:
    """A fresh start (no ``last.ckpt`` to resume, or ``resume=false``) in a folder that holds an
    earlier run's checkpoints first renames ``checkpoints/`` to
    ``checkpoints.replaced-<time>/``: nothing is lost, and a fresh run killed before its first
    epoch ends cannot leave the earlier run's ``last.ckpt`` behind for a later resume to continue
    under this run's ``config.yaml``.  Returns the new name, or ``None`` when there was nothing."""
    ckpts = out_dir / "checkpoints"
    if not ckpts.is_dir() or not any(ckpts.iterdir()):
        return None
    aside = out_dir / f"checkpoints.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        aside, n = out_dir / f"checkpoints.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    ckpts.rename(aside)
    log.info("fresh start: the earlier checkpoints of %s are kept in %s", out_dir, aside)
    return aside
