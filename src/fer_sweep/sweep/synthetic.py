"""A SYNTHETIC demo sweep: made-up job folders laid out exactly like a real ``fer_sweep`` sweep.

For the notebook (when no real results are at hand), the docs and the tests of the report.  The
numbers are invented: accuracy curves that approach a per-scheduler level, a per-seed offset shared
by all schedulers (so seeds pair like real ones), noise per run and per epoch, the schedulers'
learning-rate schedules, and a PrivateTest confusion matrix.  Every ``results.json`` carries
``"synthetic": true`` and the sweep folder a ``SYNTHETIC.md``, so they are never mistaken for
training results.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from fer_sweep.data.classes import CLASS_NAMES
from fer_sweep.io import atomic_write_text
from fer_sweep.results import best_epoch, write_results

SYNTHETIC_MARKER = "SYNTHETIC.md"
DEFAULT_LEVELS: dict[str, float] = {"step": 0.47, "multistep": 0.52, "cosine": 0.58, "plateau": 0.555, "none": 0.50}
"""Made-up final val accuracy per scheduler: clearly apart, so tests can see significant differences."""
DEFAULT_TAU: dict[str, float] = {"step": 4.0, "multistep": 6.0, "cosine": 14.0, "plateau": 10.0, "none": 8.0}
"""Made-up speed (epochs) at which each scheduler's val accuracy approaches its level."""
DEFAULT_GAP: dict[str, float] = {"step": 0.03, "multistep": 0.06, "cosine": 0.14, "plateau": 0.10, "none": 0.12}
"""Made-up train-val accuracy gap (overfitting) reached at the end of a run."""
PRIVATE_TEST_SUPPORT = (491, 55, 528, 879, 594, 416, 626)
"""Images per class in FER2013's PrivateTest (3589)."""
CLASS_EASE = (-0.06, -0.12, -0.18, 0.27, -0.12, 0.20, 0.03)
"""Made-up per-class accuracy offsets (happy and surprise easy, fear hard), as in FER2013 reports."""


def learning_rate(scheduler: str, epoch: int, lr0: float, max_epochs: int, plateau_drops: Iterable[int] = ()) -> float:
    """The lr in use during 1-based ``epoch`` for the study's schedulers (conf/scheduler/*.yaml)."""
    if scheduler == "step":
        return lr0 * 0.1 ** ((epoch - 1) // 10)
    if scheduler == "multistep":
        return lr0 * 0.1 ** sum(epoch > m for m in (10, 20, 50))
    if scheduler == "cosine":
        return 0.5 * lr0 * (1 + math.cos(math.pi * (epoch - 1) / max_epochs))
    if scheduler == "plateau":
        return max(lr0 * 0.1 ** sum(epoch > d for d in plateau_drops), 1e-6)
    return lr0


def _history(rng: np.random.Generator, scheduler: str, level: float, epochs: int, max_epochs: int, lr0: float, tau: float, gap: float, noise: float) -> list[dict]:
    drops = []
    if scheduler == "plateau":
        d = int(rng.integers(25, 45))
        while d < max_epochs:
            drops.append(d)
            d += int(rng.integers(15, 30))
    rows = []
    for e in range(1, epochs + 1):
        clean = 0.25 + (level - 0.25) * (1 - math.exp(-e / tau))
        val = float(np.clip(clean + rng.normal(0, noise), 0, 1))
        g = gap * (1 - math.exp(-e / (0.3 * max_epochs)))
        train = float(np.clip(clean + g + rng.normal(0, noise / 3), 0, 1))
        rows.append({
            "epoch": e,
            "train_loss": float(1.95 * (1 - train) / 0.75 + rng.normal(0, 0.005)),
            "val_loss": float(1.95 * (1 - val) / 0.75 + 1.5 * g + rng.normal(0, 0.01)),
            "lr": float(learning_rate(scheduler, e, lr0, max_epochs, drops)),
            "train_acc": train, "val_acc": val,
        })
    return rows


def _test_report(rng: np.random.Generator, level: float) -> dict:
    """A made-up PrivateTest confusion matrix (rows: true class) around accuracy ``level``."""
    support = np.array(PRIVATE_TEST_SUPPORT)
    k = len(support)
    ease = np.array(CLASS_EASE) - np.dot(CLASS_EASE, support) / support.sum()  # overall accuracy ~ level
    cm = np.zeros((k, k), dtype=int)
    for i, n in enumerate(support):
        acc = float(np.clip(level + ease[i] + rng.normal(0, 0.01), 0.02, 0.98))
        right = int(round(acc * n))
        wrong = rng.multinomial(n - right, np.ones(k - 1) / (k - 1))
        cm[i, [j for j in range(k) if j != i]] = wrong
        cm[i, i] = right
    recall = np.diag(cm) / support
    precision = np.diag(cm) / np.maximum(cm.sum(0), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return {"acc": float(np.trace(cm) / cm.sum()), "macro_f1": float(f1.mean()), "per_class_acc": recall.tolist(), "confusion_matrix": cm.tolist()}


def make_synthetic_sweep(
    root: str | Path,
    schedulers: Iterable[str] = ("step", "multistep", "cosine", "plateau"),
    seeds: Iterable[int] = range(5),
    max_epochs: int = 60,
    levels: Mapping[str, float] | None = None,
    seed_sd: float = 0.01,
    run_sd: float = 0.004,
    epoch_noise: float = 0.006,
    running: Mapping[tuple[str, int], int] | None = None,
    failed: Mapping[tuple[str, int], str] | None = None,
    pending: Iterable[tuple[str, int]] = (),
    lr: float = 0.001,
    rng: int = 0,
) -> Path:
    """Write a SYNTHETIC sweep of ``schedulers`` x ``seeds`` into ``root``; return ``root``.

    Job folders are named like Hydra's (``scheduler=cosine,seed=3``) and hold ``results.json``
    (written with :func:`fer_sweep.results.write_results`), ``metrics.csv`` (with
    :func:`fer_sweep.callbacks.history_to_csv`) and ``.hydra/overrides.yaml``.

    ``levels`` overrides the made-up final val accuracy per scheduler (:data:`DEFAULT_LEVELS`);
    ``running`` maps ``(scheduler, seed)`` to the epochs done so far (status ``running``);
    ``failed`` maps ``(scheduler, seed)`` to an error message (status ``failed`` after a few
    epochs); ``pending`` jobs get only ``.hydra/overrides.yaml`` (started, nothing written yet).
    """
    from fer_sweep.callbacks import history_to_csv  # imports pytorch_lightning: only when needed

    root = Path(root)
    gen = np.random.default_rng(rng)
    levels = {**DEFAULT_LEVELS, **(levels or {})}
    running, failed, pending = dict(running or {}), dict(failed or {}), set(pending)
    seeds = list(seeds)
    seed_offset = {s: float(gen.normal(0, seed_sd)) for s in seeds}
    atomic_write_text(root / SYNTHETIC_MARKER, "# SYNTHETIC demo sweep\n\nMade-up numbers from `fer_sweep.sweep.synthetic`; not a training result.\n")
    for sched in schedulers:
        for seed in seeds:
            job = root / f"scheduler={sched},seed={seed}"
            atomic_write_text(job / ".hydra" / "overrides.yaml", f"- scheduler={sched}\n- seed={seed}\n")
            if (sched, seed) in pending:
                continue
            level = levels.get(sched, 0.52) + seed_offset[seed] + float(gen.normal(0, run_sd))
            epochs = running.get((sched, seed), max_epochs)
            if (sched, seed) in failed:
                epochs = min(epochs, 3)
            hist = _history(gen, sched, level, epochs, max_epochs, lr, DEFAULT_TAU.get(sched, 8.0), DEFAULT_GAP.get(sched, 0.1), epoch_noise)
            atomic_write_text(job / "metrics.csv", history_to_csv(hist))
            results = {
                "status": "running", "seed": seed, "scheduler": sched, "optimizer": "adam", "lr": lr, "model": "deep_emotion",
                "max_epochs": max_epochs, "overrides": [f"scheduler={sched}", f"seed={seed}"], "synthetic": True,
            }
            if (sched, seed) not in running:
                ep, acc = best_epoch(hist)
                results.update(epochs_run=len(hist), best_epoch=ep, best_val_acc=acc, final_val_acc=hist[-1]["val_acc"], class_names=list(CLASS_NAMES),
                               splits={"val": "PublicTest", "test": "PrivateTest"})  # what the made-up numbers stand for
                if (sched, seed) in failed:
                    results.update(status="failed", error=failed[(sched, seed)])
                else:
                    best = _test_report(gen, level)
                    last = _test_report(gen, level - 0.005)
                    results.update(
                        status="completed", test_acc_best=best["acc"], test_acc_last=last["acc"], test_macro_f1_best=best["macro_f1"],
                        per_class_acc=best["per_class_acc"], confusion_matrix=best["confusion_matrix"], wall_time_s=round(float(gen.uniform(20, 30)) * max_epochs, 2),
                    )
            write_results(job, results)
    return root


def is_synthetic(jobs) -> bool:
    """Whether any of the collected jobs comes from :func:`make_synthetic_sweep`."""
    return any(j.results.get("synthetic") for j in jobs)


REPORT_DIR_ENV = "FER_SWEEP_REPORT_DIR"
"""Environment variable naming the sweep folder the notebook analyses."""
REFERENCE_SWEEP = Path("docs") / "reference_sweep"
"""The committed reference results, relative to the repository root."""


def find_sweep(start: str | Path | None = None, tmp_root: str | Path | None = None, **synthetic_kw) -> tuple[Path, str]:
    """The sweep folder to analyse and where it came from (``"env"``, ``"reference"``, ``"synthetic"``).

    1. ``$FER_SWEEP_REPORT_DIR`` when set (it must exist: a typo never falls back silently);
    2. else ``docs/reference_sweep`` in ``start`` (default: the working directory) or a folder above;
    3. else a SYNTHETIC demo sweep (:func:`make_synthetic_sweep`) written to a new temporary folder
       under ``tmp_root`` (default: the system's temp folder).
    """
    import os
    import tempfile

    env = os.environ.get(REPORT_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{REPORT_DIR_ENV}={env}: no such folder; expected a sweep folder holding job folders")
        return path, "env"
    start = Path(start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / REFERENCE_SWEEP).is_dir():
            return d / REFERENCE_SWEEP, "reference"
    tmp = Path(tempfile.mkdtemp(prefix="fer_sweep_synthetic_", dir=tmp_root))
    return make_synthetic_sweep(tmp / "multirun" / "synthetic-demo", **synthetic_kw), "synthetic"
