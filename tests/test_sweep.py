"""Real sweeps through the CLI: job folders, summaries equal to the jobs' results, failures, resumption."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_sweep.sweep.collect import collect
from helpers import PROJECT_ROOT, run_cli

pytestmark = [pytest.mark.data, pytest.mark.slow]
TINY = ["data.subset=0.03", "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=none", "callbacks=none", "threads=1"]


def job(name: str) -> str:
    """A job folder's name: Hydra sorts the overrides (callbacks, logger, threads are left out)."""
    return ",".join(sorted(["data.subset=0.03", "trainer.max_epochs=2", *name.split(",")]))


def _summary(sweep: Path) -> dict[str, dict]:
    with open(sweep / "summary.csv", newline="") as fh:
        return {row["job"]: row for row in csv.DictReader(fh)}


def test_sweep_cli_summary_and_report(fer_root, tmp_path):
    """2 schedulers x 2 seeds x 2 epochs on a subset: job folders, summary == results.json, report."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "scheduler=step,cosine", "seed=0,1", f"hydra.sweep.dir={sweep}", *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert names == [job(n) for n in ("scheduler=cosine,seed=0", "scheduler=cosine,seed=1", "scheduler=step,seed=0", "scheduler=step,seed=1")]
    summary = _summary(sweep)
    assert set(summary) == set(names)
    for name in names:
        res = json.loads((sweep / name / "results.json").read_text())
        row = summary[name]
        assert row["status"] == res["status"] == "completed"
        for key in ("best_val_acc", "final_val_acc", "test_acc_best", "test_acc_last"):
            assert float(row[key]) == pytest.approx(res[key], rel=1e-5)
        assert int(row["seed"]) == res["seed"] and row["scheduler"] == res["scheduler"]
    assert (sweep / "summary.md").read_text().count("| data.subset=0.03,scheduler=") == 4
    report = tmp_path / "report"
    plot = run_cli([str(sweep), "--out", str(report)], module="fer_sweep.plot", timeout=300)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert (report / "report.md").is_file()
    assert len(list(report.rglob("*.png"))) >= 6 and len(list(report.rglob("*.pdf"))) >= 6
    assert list(report.glob("*.csv")) and list(report.glob("*.md"))


def test_one_failing_job_does_not_stop_the_sweep(fer_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "optimizer.lr=0.001,0.002,0.003,-1", f"hydra.sweep.dir={sweep}", *TINY])
    assert proc.returncode == 1  # non-zero at the end because one job failed ...
    statuses = {job.name: job.status for job in collect(sweep)}
    assert statuses == {job("optimizer.lr=0.001"): "completed", job("optimizer.lr=0.002"): "completed", job("optimizer.lr=0.003"): "completed", job("optimizer.lr=-1"): "failed"}
    assert job("optimizer.lr=-1") + " (failed)" in proc.stderr  # ... and says which
    assert _summary(sweep)[job("optimizer.lr=-1")]["status"] == "failed"


def test_joblib_launcher_runs_two_jobs(fer_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert "ConfigStore schema" not in proc.stdout + proc.stderr  # Hydra's expected 4-line warning, once per job and worker
    assert {r["status"] for r in _summary(sweep).values()} == {"completed"}
    assert len(_summary(sweep)) == 2


def test_two_sweeps_started_in_the_same_second_get_their_own_folders(fer_root, tmp_path):
    env = {**os.environ}
    env.pop("FER_SWEEP_RUN_ID", None)
    cmd = [sys.executable, "-m", "fer_sweep", "-m", "seed=0", "trainer.max_epochs=1", *TINY[:1], *TINY[2:]]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=600)
        assert p.returncode == 0
    sweeps = sorted((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 2, sweeps
    for s in sweeps:
        assert (s / "summary.csv").is_file() and len(_summary(s)) == 1


def test_killed_sweep_is_finished_by_rerunning_it(fer_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", f"hydra.sweep.dir={sweep}", "data.subset=0.03", "trainer.max_epochs=3", "trainer.accelerator=cpu", "logger=none", "callbacks=none", "threads=1"]
    env = {**os.environ}
    env.pop("FER_SWEEP_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_dir, second = sweep / "data.subset=0.03,seed=0,trainer.max_epochs=3", sweep / "data.subset=0.03,seed=1,trainer.max_epochs=3"
    deadline = time.time() + 400
    while time.time() < deadline and not (second / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads((first_dir / "results.json").read_text())
    assert first["status"] == "completed"
    assert json.loads((second / "results.json").read_text())["status"] == "running"
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert "already completed; skipping" in log and "resuming from" in log
    assert json.loads((first_dir / "results.json").read_text()) == first  # untouched
    final = json.loads((second / "results.json").read_text())
    assert final["status"] == "completed" and final["epochs_run"] == 3
    with open(second / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    assert {r["status"] for r in _summary(sweep).values()} == {"completed"}


def test_sigterm_to_a_joblib_sweeps_launcher_stops_its_workers(fer_root, tmp_path):
    """``kill <launcher pid>`` alone: the launcher passes SIGTERM on to its loky workers, each job
    records itself interrupted (rerun resumes it), no worker trains on, and the launcher exits 143.
    (With the plugin's own launcher the workers trained their jobs to the end after it had died.)"""
    from hydra_plugins.fer_sweep_launchers.joblib_launcher import descendants

    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FER_SWEEP_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", "-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
                             "data.subset=0.05", "trainer.max_epochs=30", "trainer.accelerator=cpu", "logger=none", "callbacks=none", "threads=1"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(sweep.glob("*/metrics.csv"))) < 2:
            time.sleep(0.2)
        workers = descendants(proc.pid)
        assert workers, "no worker processes found"
        proc.send_signal(signal.SIGTERM)  # the launcher alone, not its process group
        assert proc.wait(timeout=120) == 143
        time.sleep(1)
        assert [pid for pid in workers if _live_worker(pid)] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for run in (p for p in sweep.iterdir() if p.is_dir()):
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "interrupted" and res["epochs_run"] < 30, res
        assert res["error"].endswith("rerun the same command to resume from last.ckpt")


def _live_worker(pid: int) -> bool:
    """A process that still runs (not a zombie) and is not loky's resource tracker, which is left to
    clean up shared memory and exits on its own."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
