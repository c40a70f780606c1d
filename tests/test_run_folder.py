"""One writer per run folder: a second process gets a one-line error and the folder is left alone."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from omegaconf import OmegaConf

from fer_sweep import run_folder
from fer_sweep.run_folder import LOCK_FILE, RunFolderBusy, config_differences, folder_holder, run_folder_lock, secondary_rank
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
    monkeypatch.setenv("WORLD_SIZE", "2")
    with run_folder_lock(tmp_path):
        monkeypatch.setenv(variable, "1")
        with run_folder_lock(tmp_path):  # a DDP rank > 0 writes into rank 0's folder, unlocked
            pass
        monkeypatch.setenv(variable, "0")
        with pytest.raises(RunFolderBusy):
            with run_folder_lock(tmp_path):
                pass




def _finished(run_dir, overrides, status="completed"):
    """A run folder as a run leaves it: its resolved config.yaml and results.json (enough for the
    skip decision; no training)."""
    cfg = compose_cfg([f"paths.output_dir={run_dir}", *overrides])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    text = json.dumps({"status": status, "seed": cfg.seed, "best_val_acc": 0.5}) + "\n"
    (run_dir / "results.json").write_text(text)
    return text


def test_a_finished_folder_is_not_taken_for_a_run_with_other_settings(tmp_path):
    run_dir = tmp_path / "run"
    text = _finished(run_dir, ["seed=0", "trainer.max_epochs=1", "threads=1"])
    proc = run_cli([f"hydra.run.dir={run_dir}", "seed=1", "trainer.max_epochs=1", *QUIET], timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{run_dir} holds a completed run with other settings (seed: 0 -> 1)" in out and "give this run another folder, or delete that one" in out
    assert f"not run: {run_dir} holds a completed run" in proc.stderr  # the exit summary says why
    assert (run_dir / "results.json").read_text() == text  # seed 0's results are not overwritten


def test_an_unfinished_folder_is_not_resumed_by_a_run_with_other_settings(tmp_path):
    run_dir = tmp_path / "run"
    text = _finished(run_dir, ["optimizer.lr=0.001", "trainer.max_epochs=5"], status="running")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not read: the settings differ")
    proc = run_cli([f"hydra.run.dir={run_dir}", "optimizer.lr=0.01", "trainer.max_epochs=5", *QUIET], timeout=120)
    assert proc.returncode == 1
    assert f"{run_dir} holds an unfinished run with other settings (optimizer.lr: 0.001 -> 0.01)" in proc.stdout + proc.stderr
    assert (run_dir / "results.json").read_text() == text


def test_a_finished_folder_is_still_skipped_when_only_where_and_how_it_ran_differ(tmp_path):
    run_dir = tmp_path / "run"
    text = _finished(run_dir, ["optimizer.lr=1e-3", "trainer.max_epochs=1", "threads=2", "logger=none"])
    proc = run_cli([f"hydra.run.dir={run_dir}", "seed=0", "optimizer.lr=0.001", "trainer.max_epochs=1", *QUIET], timeout=120)  # threads=1, csv logger
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already completed; skipping" in proc.stdout + proc.stderr
    assert (run_dir / "results.json").read_text() == text


@pytest.mark.parametrize("how", ["symlink", "moved"])
def test_a_finished_folder_reached_by_another_path_is_still_the_same_run(tmp_path, how):
    """Its checkpoint dirpath and trainer.default_root_dir follow the folder's path: a symlink, a
    moved or copied folder was refused as 'a completed run with other settings'."""
    run_dir = tmp_path / "run"
    text = _finished(run_dir, ["seed=0", "trainer.max_epochs=1", "threads=1"])
    other = tmp_path / "elsewhere"
    other.symlink_to(run_dir) if how == "symlink" else run_dir.rename(other)
    proc = run_cli([f"hydra.run.dir={other}", "seed=0", "trainer.max_epochs=1", *QUIET], timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "already completed; skipping" in proc.stdout + proc.stderr
    assert (other / "results.json").read_text() == text
    assert config_differences({"paths": {"output_dir": "/a/run"}, "seed": 0, "cb": {"dirpath": "/a/run/checkpoints"}, "d": "/a/runs"},
                              {"paths": {"output_dir": "/b/x"}, "seed": 0, "cb": {"dirpath": "/b/x/checkpoints"}, "d": "/b/x/s"}) == ["d: /a/runs -> /b/x/s"]


def test_config_differences_compare_resolved_settings_only():
    saved = {"seed": 0, "optimizer": {"lr": 0.001}, "threads": 2, "paths": {"output_dir": "/a"}, "trainer": {"max_epochs": 5, "accelerator": "cpu"}}
    same = {"seed": 0, "optimizer": {"lr": 1e-3}, "threads": None, "paths": {"output_dir": "/b"}, "trainer": {"max_epochs": 5, "accelerator": "gpu"}}
    assert config_differences(saved, same) == []
    other = {**same, "trainer": {"max_epochs": 300, "precision": "bf16-mixed", "accelerator": "cpu"}}
    assert config_differences(saved, other) == ["trainer.precision: <unset> -> bf16-mixed"]  # max_epochs may change: see below
    assert config_differences({"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 2, "b": 2, "c": 2, "d": 2}) == ["a: 1 -> 2", "b: 1 -> 2", "c: 1 -> 2", "..."]
    # a run continued to more epochs is the same run, its cosine T_max (${trainer.max_epochs}) included
    shorter = {"seed": 0, "trainer": {"max_epochs": 100}, "scheduler": {"T_max": 100}}
    assert config_differences(shorter, {"seed": 0, "trainer": {"max_epochs": 200}, "scheduler": {"T_max": 200}}) == []
    assert config_differences(shorter, {"seed": 1, "trainer": {"max_epochs": 200}, "scheduler": {"T_max": 200}}) == ["seed: 0 -> 1"]


def test_a_lone_process_with_an_inherited_rank_variable_still_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")  # e.g. a pod's environment, but no distributed job (world size 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert not secondary_rank()
    with run_folder_lock(tmp_path):
        with pytest.raises(RunFolderBusy):
            with run_folder_lock(tmp_path):
                pass


def test_a_filesystem_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    def no_flock(fd, mode):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_folder.fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING, logger="fer_sweep.run_folder"):
        with run_folder_lock(tmp_path):
            (tmp_path / LOCK_FILE).write_text('{"pid": 1}')
            assert folder_holder(tmp_path) is None
    assert "has no flock" in caplog.text
