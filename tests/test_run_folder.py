"""One writer per run folder: a second process gets a one-line error and the folder is left alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from fer_sweep.run_folder import LOCK_FILE, RunFolderBusy, folder_holder, other_settings, run_folder_lock
from fer_sweep.train import run
from helpers import QUIET, compose_cfg, run_cli

HOLD = "import sys, time\nfrom fer_sweep.run_folder import run_folder_lock\nwith run_folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"


@pytest.fixture
def held_folder(tmp_path):
    """A run folder held by another live process, with that process's results.json in it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"status": "running", "seed": 7}\n')
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield run_dir, holder
    holder.kill()
    holder.wait()


def test_a_second_writer_fails_in_one_line_and_writes_nothing(held_folder):
    run_dir, holder = held_folder
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_cli([f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", *QUIET], timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"fer_sweep: {run_dir}: already being written by process {holder.pid} on {socket.gethostname()} "
        f"(since {proc.stderr.split('(since ')[1].split(')')[0]}); wait for it to finish, or give this run another folder (hydra.run.dir=...)"]
    assert (run_dir / "results.json").read_text() == '{"status": "running", "seed": 7}\n'
    assert sorted(p.name for p in run_dir.iterdir()) == before  # not even Hydra's .hydra/ and train.log


def test_a_job_that_finds_its_folder_taken_leaves_it_alone(held_folder):
    """The job's own lock, for sweep jobs and for a run that got past the launcher's check."""
    run_dir, holder = held_folder
    cfg = compose_cfg([f"paths.output_dir={run_dir}", "trainer.max_epochs=1", *QUIET])
    res = run(cfg)
    assert res["status"] == "failed" and res["error"].startswith(f"{run_dir}: already being written by process {holder.pid} ")
    assert (run_dir / "results.json").read_text() == '{"status": "running", "seed": 7}\n'
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE, "results.json"]


def test_a_killed_holder_frees_the_folder_at_once(held_folder):
    run_dir, holder = held_folder
    assert folder_holder(run_dir) == folder_holder(run_dir) and f"process {holder.pid}" in folder_holder(run_dir)
    with pytest.raises(RunFolderBusy):
        with run_folder_lock(run_dir):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert folder_holder(run_dir) is None  # no stale lock: the kernel dropped it with the process
    with run_folder_lock(run_dir):
        assert f"process {os.getpid()} " in folder_holder(run_dir)
    assert folder_holder(run_dir) is None and (run_dir / LOCK_FILE).read_text() == ""


def test_one_process_cannot_hold_a_folder_twice(tmp_path):
    with run_folder_lock(tmp_path):
        with pytest.raises(RunFolderBusy, match=rf"^{tmp_path}: already being written by process {os.getpid()} on "):
            with run_folder_lock(tmp_path):
                pass
    with run_folder_lock(tmp_path):  # released on exit
        pass


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"])
def test_secondary_ranks_of_a_distributed_job_share_rank_zeros_folder(tmp_path, monkeypatch, variable):
    with run_folder_lock(tmp_path):
        monkeypatch.setenv(variable, "1")
        with run_folder_lock(tmp_path):  # a DDP rank > 0 writes into rank 0's folder, unlocked
            pass
        monkeypatch.setenv(variable, "0")
        with pytest.raises(RunFolderBusy):
            with run_folder_lock(tmp_path):
                pass



def _finished(run_dir, overrides):
    """A run folder as a finished run leaves it (results.json only: enough for the skip decision)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"status": "completed", "seed": 0, "overrides": overrides, "best_val_acc": 0.5}) + "\n"
    (run_dir / "results.json").write_text(text)
    return text


def test_a_finished_folder_is_not_taken_for_a_run_with_other_settings(tmp_path):
    run_dir = tmp_path / "run"
    text = _finished(run_dir, [f"hydra.run.dir={run_dir}", "seed=0", "trainer.max_epochs=1", "threads=1"])
    proc = run_cli([f"hydra.run.dir={run_dir}", "seed=1", "trainer.max_epochs=1", *QUIET], timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{run_dir} holds a completed run with other settings (seed=0 instead of seed=1); give this run another folder, or force=true" in proc.stdout + proc.stderr
    assert (run_dir / "results.json").read_text() == text  # seed 0's results are not overwritten


def test_a_finished_folder_is_still_skipped_when_only_where_and_how_it_ran_differ(tmp_path):
    run_dir = tmp_path / "run"
    text = _finished(run_dir, [f"hydra.run.dir={run_dir}", "seed=0", "trainer.max_epochs=1", "threads=2", "logger=none"])
    proc = run_cli([f"hydra.run.dir={run_dir}", "seed=0", "trainer.max_epochs=1", *QUIET], timeout=120)  # threads=1, csv logger
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already completed; skipping" in proc.stdout + proc.stderr
    assert (run_dir / "results.json").read_text() == text


def test_other_settings_ignores_order_and_the_excluded_keys():
    assert other_settings("d", ["seed=0", "optimizer.lr=0.1"], ["optimizer.lr=0.1", "seed=0"]) is None
    assert other_settings("d", ["seed=0", "threads=2"], ["seed=0"], exclude=["threads"]) is None
    assert other_settings("d", ["experiment=faithful"], ["experiment=deep_emotion_plus"], exclude=["threads"]) == (
        "d holds a completed run with other settings (experiment=faithful instead of experiment=deep_emotion_plus); "
        "give this run another folder, or force=true to replace it")
    assert "(seed=3 instead of the defaults)" in other_settings("d", ["seed=3"], [])
