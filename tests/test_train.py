"""Real short trainings on FER2013: learning, the run folder, resume after SIGKILL, divergence, CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer_sweep.callbacks import METRIC_COLUMNS
from fer_sweep.train import run
from helpers import PROJECT_ROOT, QUIET, TINY, compose_cfg, run_cli

pytestmark = pytest.mark.data


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_short_training_learns(fer_root, tmp_path):
    """Loss falls and accuracy beats chance (and the majority class) on a real FER2013 subset."""
    cfg = compose_cfg(["data.subset=0.25", "trainer.max_epochs=4", "trainer.accelerator=cpu", "logger=none", f"paths.output_dir={tmp_path}", *QUIET])
    results = run(cfg)
    assert results["status"] == "completed"
    rows = _metrics(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.05
    majority = 895 / 3589  # 'happy' share of PublicTest
    assert results["best_val_acc"] > majority + 0.03
    assert results["test_acc_best"] > majority
    assert set(results["per_class_acc"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    subset = ", a stratified 25% subset (data.subset=0.25)"  # what it measured, for the report's labels
    assert results["splits"] == {"val": "PublicTest" + subset, "test": "PrivateTest" + subset}
    cm = results["confusion_matrix"]
    assert len(cm) == 7 and sum(map(sum, cm)) == pytest.approx(3589 * 0.25, abs=7)


@pytest.mark.slow
def test_cli_run_leaves_everything_the_study_logged(fer_root, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["scheduler=step", "trainer.max_epochs=2", f"hydra.run.dir={out}", *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _metrics(out)
    assert list(rows[0]) == list(METRIC_COLUMNS) and len(rows) == 2  # one row per epoch
    assert all(r[c] not in ("", "nan") for r in rows for c in METRIC_COLUMNS)
    assert float(rows[0]["lr"]) == pytest.approx(0.001)
    res = json.loads((out / "results.json").read_text())
    for key in ("status", "seed", "scheduler", "lr", "epochs_run", "best_epoch", "best_val_acc", "test_acc_best", "test_acc_last", "per_class_acc", "confusion_matrix", "wall_time_s"):
        assert key in res, key
    assert (res["status"], res["scheduler"], res["epochs_run"], res["seed"]) == ("completed", "step", 2, 0)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    assert not list(out.rglob("*.tmp"))
    # rerunning a completed job skips it and keeps its results
    again = run_cli(["scheduler=step", "trainer.max_epochs=2", f"hydra.run.dir={out}", *TINY])
    assert again.returncode == 0 and "already completed" in again.stderr + again.stdout
    assert json.loads((out / "results.json").read_text()) == res


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(fer_root, tmp_path):
    args = ["trainer.max_epochs=3", "deterministic=true", "data.subset=0.04", "trainer.accelerator=cpu", *QUIET]
    whole = tmp_path / "whole"
    assert run_cli([*args, f"hydra.run.dir={whole}"]).returncode == 0
    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FER_SWEEP_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", *args, f"hydra.run.dir={cut}"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not ((cut / "metrics.csv").is_file() and len(_metrics(cut)) >= 1 and (cut / "checkpoints" / "last.ckpt").is_file()):
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_metrics(cut)) < 3, "the run finished before it could be killed"
    killed = json.loads((cut / "results.json").read_text())
    assert killed["status"] == "running"
    assert killed["splits"] == json.loads((whole / "results.json").read_text())["splits"]  # written at the start, for reports of running jobs
    resumed = run_cli([*args, f"hydra.run.dir={cut}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    a, b = _metrics(whole), _metrics(cut)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for c in METRIC_COLUMNS:
            assert float(ra[c]) == pytest.approx(float(rb[c]), rel=1e-5, abs=1e-6), (c, ra, rb)
    ja, jb = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    assert ja["test_acc_best"] == pytest.approx(jb["test_acc_best"], abs=1e-6)
    assert jb["resumed_from_epoch"] in (1, 2) and "resumed_from_epoch" not in ja

    # a failed job run again from scratch (no last.ckpt) counts only its own time
    (whole / "checkpoints" / "last.ckpt").unlink()
    (whole / "results.json").write_text(json.dumps({**ja, "status": "failed", "wall_time_s": 1e6}))
    assert run_cli([*args, f"hydra.run.dir={whole}"]).returncode == 0
    again = json.loads((whole / "results.json").read_text())
    assert again["status"] == "completed" and again["wall_time_s"] < 1e5 and "resumed_from_epoch" not in again


@pytest.mark.slow
def test_sigterm_stops_with_status_143_and_an_interrupted_record_that_resumes(fer_root, tmp_path):
    """What a cluster's scheduler sends before it kills a job: Lightning's SIGTERMException carries no
    exit code, so the run ended with status 0, results.json still 'running', and nothing said."""
    args = ["trainer.max_epochs=3", "data.subset=0.04", "trainer.accelerator=cpu", *QUIET, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FER_SWEEP_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "run"
    deadline = time.time() + 300
    while time.time() < deadline and not ((run_dir / "metrics.csv").is_file() and len(_metrics(run_dir)) >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out[-2000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "interrupted" and res["epochs_run"] < 3, res
    assert res["error"] == f"stopped by SIGTERM after {res['epochs_run']} epoch(s); rerun the same command to resume from last.ckpt"
    assert res["error"] in out and "Traceback" not in out
    again = run_cli(args)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed" and len(_metrics(run_dir)) == 3


def test_divergence_is_recorded_not_raised(fer_root, tmp_path):
    out = tmp_path / "nan"
    proc = run_cli(["optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=3", f"hydra.run.dir={out}", *TINY])
    assert proc.returncode == 1
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "diverged" and "loss became" in res["error"]
    assert "Traceback" not in proc.stderr
    assert "diverged" in proc.stderr


def test_invalid_value_fails_before_training(tmp_path):
    out = tmp_path / "bad"
    proc = run_cli(["optimizer.lr=-1", f"hydra.run.dir={out}", *QUIET], timeout=120)
    assert proc.returncode == 1
    assert "optimizer.lr=-1" in proc.stderr and "Traceback" not in proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and res.get("epochs_run") is None


def test_unknown_option_is_a_clear_error(tmp_path):
    proc = run_cli(["scheduler=warmup_magic", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert proc.returncode == 2 and proc.stderr == ("fer_sweep: error: scheduler=warmup_magic: no such option in conf/scheduler/; "
                                                    "expected one of cosine, multistep, none, plateau, step\n")
    assert not (tmp_path / "run").exists()


def test_one_unknown_option_in_a_sweep_stops_it_before_any_job(tmp_path):
    """Hydra found it only when composing that job, after the earlier ones had run, and said so in 12 lines."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "scheduler=step,bogus", "seed=0,1", f"hydra.sweep.dir={sweep}"], timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("fer_sweep: error: scheduler=bogus (in scheduler=step,bogus): no such option in conf/scheduler/")
    assert not sweep.exists()


@pytest.mark.parametrize("argv", [["scheduler=cosine"], ["-m", "scheduler=step,cosine", "seed=0,1"], ["-m", "scheduler=choice(step,plateau)"],
                                  ["+experiment=faithful"], ["logger=none", "callbacks=none"], ["~logger"], ["model=vgg", "optimizer=sgd"],
                                  ["hydra/launcher=joblib"], ["optimizer.lr=0.01"], ["--config-dir=/elsewhere", "scheduler=mine"],
                                  ["scheduler=["], ["seed=range(0,3)"]])
def test_valid_or_unchecked_command_lines_pass_the_option_check(argv):
    from fer_sweep.group_options import unknown_option

    assert unknown_option(argv) is None


def test_help_and_cfg_job():
    helped = run_cli(["--help"], timeout=120)
    assert helped.returncode == 0 and "scheduler: cosine, multistep, none, plateau, step" in helped.stdout
    job = run_cli(["--cfg", "job", "optimizer.lr=0.0005", "scheduler=step"], timeout=120)
    assert job.returncode == 0 and "lr: 0.0005" in job.stdout and "StepLR" in job.stdout


@pytest.mark.slow
def test_installed_wheel_finds_its_config(tmp_path):
    """Hydra's config_path must work from a wheel installed in another folder, not only the checkout."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(PROJECT_ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("fer_sweep-*.whl"))
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", "import fer_sweep, sys; print(fer_sweep.__file__); sys.argv=['fer_sweep', '--cfg', 'job', 'scheduler=plateau']; from fer_sweep.__main__ import cli; cli()"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(target) in proc.stdout and "ReduceLROnPlateau" in proc.stdout
    # the packed launcher ships in the wheel, and Hydra's own plugin scan finds it there
    # (an editable install needs fer_sweep.__main__.register_packed_launcher)
    assert (target / "hydra_plugins" / "fer_sweep_launchers" / "packed_launcher.py").is_file()
    scan = subprocess.run([sys.executable, "-c", "from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
                           "print([c.__module__ for c in Plugins.instance().discover(Launcher)])"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "hydra_plugins.fer_sweep_launchers.packed_launcher" in scan.stdout, scan.stdout + scan.stderr[-2000:]


@pytest.mark.slow
def test_init_weights_fine_tunes_a_shipped_model(fer_root, tmp_path):
    """``init_weights=deep_emotion`` starts from the shipped network: after one epoch at a tiny
    learning rate it is far above what a fresh network reaches after one epoch on this subset
    (near the majority class, ~25%; the shipped model scores ~57% on PublicTest), and
    results.json records the file and its sha256."""
    from fer_sweep.weights import weights_dir
    from fer_sweep.weights.card import MANIFEST

    cfg = compose_cfg(["init_weights=deep_emotion", "optimizer.lr=1e-7", "trainer.max_epochs=1", "test_after_fit=false",
                       "logger=none", f"paths.output_dir={tmp_path}", *TINY])
    results = run(cfg)
    assert results["status"] == "completed", results.get("error")
    assert results["best_val_acc"] > 0.45
    entry = json.loads((weights_dir() / MANIFEST).read_text())["models"]["deep_emotion"]
    assert results["init_weights"]["sha256"] == entry["sha256"] and results["init_weights"]["path"].endswith("deep_emotion.pt")


@pytest.mark.parametrize("spec, fragment, before_data", [("vgg", "does not fit model.net", False),
                                                         ("no_such_model", "not a shipped model name", True),
                                                         ("NOT_A_CHECKPOINT", "not a loadable PyTorch checkpoint", True)])
def test_init_weights_that_do_not_fit_fail_the_job_in_one_line(fer_root, tmp_path, monkeypatch, spec, fragment, before_data):
    """A missing or unloadable file fails before the data are built; a network that does not fit
    (only known once the model exists) fails before training."""
    import hydra

    from fer_sweep.models.module import FERClassifier

    if spec == "NOT_A_CHECKPOINT":
        spec = str(tmp_path / "notes.txt")
        Path(spec).write_text("not a checkpoint\n")
    built, instantiate = [], hydra.utils.instantiate
    monkeypatch.setattr(hydra.utils, "instantiate", lambda cfg, *a, **k: built.append(str(cfg.get("_target_"))) or instantiate(cfg, *a, **k))
    monkeypatch.setattr(FERClassifier, "training_step", lambda *a, **k: pytest.fail("training started"))
    results = run(compose_cfg([f"init_weights={spec}", "trainer.max_epochs=1", "logger=none", f"paths.output_dir={tmp_path / 'run'}", *TINY]))
    assert results["status"] == "failed"
    assert results["error"].startswith(f"init_weights={spec}: ") and fragment in results["error"] and "\n" not in results["error"]
    assert any("DataModule" in t for t in built) != before_data, built


@pytest.mark.slow
def test_init_weights_accepts_a_lightning_checkpoint_of_an_earlier_run(fer_root, tmp_path):
    """A run's own ``last.ckpt`` works as ``init_weights``: at a learning rate of 1e-9 the second run
    ends with the first run's weights (Adam moves each weight by about lr per step)."""
    import torch

    first, second = tmp_path / "first", tmp_path / "second"
    assert run(compose_cfg(["trainer.max_epochs=1", "test_after_fit=false", "logger=none", f"paths.output_dir={first}", *TINY]))["status"] == "completed"
    ckpt = first / "checkpoints" / "last.ckpt"
    results = run(compose_cfg([f"init_weights={ckpt}", "optimizer.lr=1e-9", "seed=1", "trainer.max_epochs=1", "test_after_fit=false",
                               "logger=none", f"paths.output_dir={second}", *TINY]))
    assert results["status"] == "completed" and results["init_weights"]["path"] == str(ckpt)
    a = torch.load(ckpt, weights_only=True)["state_dict"]
    b = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = [k for k in a if k.startswith("net.") and k.endswith("weight")]
    assert weights and all(torch.allclose(a[k], b[k], atol=1e-6) for k in weights)
    fresh = run(compose_cfg(["seed=1", "trainer.max_epochs=1", "optimizer.lr=1e-9", "test_after_fit=false", "logger=none",
                             f"paths.output_dir={tmp_path / 'fresh'}", *TINY]))
    c = torch.load(tmp_path / "fresh" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert fresh["status"] == "completed" and not all(torch.allclose(a[k], c[k], atol=1e-6) for k in weights)  # the check can fail


@pytest.mark.slow
@pytest.mark.parametrize("callbacks", ["default", "none"])
def test_last_checkpoint_holds_the_last_epoch_even_when_val_accuracy_stopped_improving(fer_root, tmp_path, callbacks):
    """``last.ckpt`` (what a run resumes from) is written every epoch.  Lightning 2.6's own
    ``save_last`` refreshes it only when ``best.ckpt`` is saved, so a run whose val accuracy stopped
    improving would resume from its best epoch and train the epochs after it again.  At a learning
    rate of 1e-12 the weights cannot move, so val accuracy stalls after the first epochs."""
    out = tmp_path / callbacks
    results = run(compose_cfg([f"callbacks={callbacks}", "optimizer.lr=1e-12", "trainer.max_epochs=4", "test_after_fit=false",
                               "logger=none", f"paths.output_dir={out}", *(TINY if callbacks == "default" else ["data.subset=0.05", "trainer.accelerator=cpu", "threads=1"])]))
    assert results["status"] == "completed", results.get("error")
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 3, "last.ckpt must hold the 4th (last) epoch"
    assert best["epoch"] == results["best_epoch"] - 1 < 3, f"the test needs a run whose best epoch ({results['best_epoch']}) is not its last"


def test_errors_of_the_built_objects_are_one_line_not_hydras_wrapper(tmp_path):
    """A data module that cannot be built reports its own one-line error, not Hydra's three-line
    'Error in call to target ... full_key: data' around it."""
    out = tmp_path / "nodata"
    proc = run_cli([f"hydra.run.dir={out}", "data.root=null", *QUIET], timeout=120, env={"FER2013_ROOT": ""})
    assert proc.returncode == 1
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("no FER2013 path: set data.root=<path> or FER2013_ROOT")
    assert "\n" not in res["error"] and "InstantiationException" not in proc.stdout + proc.stderr
    assert "FER2013Error" not in proc.stdout + proc.stderr and not (out / "error.log").exists()  # bad input, not a bug: no traceback


@pytest.mark.slow
def test_a_fresh_start_sets_earlier_checkpoints_aside(fer_root, tmp_path):
    """resume=false in a folder with an earlier run's checkpoints trains from scratch, keeps the old
    files (renamed, after everything that can fail is built), and leaves no stale last.ckpt for a
    later resume; init_weights may point into the checkpoints it sets aside."""
    args = ["trainer.max_epochs=1", "logger=none", f"paths.output_dir={tmp_path}", *TINY]
    assert run(compose_cfg(args))["status"] == "completed"
    ckpts = tmp_path / "checkpoints"
    (ckpts / "note.txt").write_text("an earlier run's file")
    earlier = (ckpts / "best.ckpt").read_bytes()
    bad = run(compose_cfg([*args, "resume=false", "force=true", "data.root=/nonexistent/fer2013"]))
    assert bad["status"] == "failed" and not list(tmp_path.glob("checkpoints.replaced-*"))  # nothing moved by a run that never trained

    results = run(compose_cfg([*args, "resume=false", "force=true", f"init_weights={ckpts / 'best.ckpt'}"]))
    assert results["status"] == "completed", results.get("error")
    assert results.get("resumed_from_epoch") is None
    (aside,) = tmp_path.glob("checkpoints.replaced-*")
    assert (aside / "note.txt").read_text() == "an earlier run's file" and (aside / "best.ckpt").read_bytes() == earlier
    assert results["init_weights"]["path"] == str((aside / "best.ckpt").resolve())  # where the starting weights are now
    assert not (ckpts / "note.txt").exists() and torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0  # this run's own


def _subnormals(t: torch.Tensor) -> int:
    return int(((t.abs() < torch.finfo(t.dtype).tiny) & (t != 0)).sum())


def test_flush_subnormals_zeroes_tiny_weights_and_optimizer_state_only_on_its_steps():
    """The callback on its own: subnormal parameters and Adam moments become 0 on every
    ``every_n_steps``-th step, normal values and the step counter stay as they were."""
    from types import SimpleNamespace

    from fer_sweep.callbacks import FlushSubnormals

    tiny = torch.finfo(torch.float32).tiny
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
    lin(torch.ones(2, 4)).sum().backward()
    opt.step()
    with torch.no_grad():
        lin.weight[0] = tiny / 4
        opt.state[lin.weight]["exp_avg_sq"][1] = tiny / 16
    normal = lin.weight[1:].detach().clone()
    module = SimpleNamespace(device=torch.device("cpu"), parameters=lin.parameters)
    cb = FlushSubnormals(every_n_steps=5)
    cb.on_train_batch_end(SimpleNamespace(global_step=3, optimizers=[opt]), module, None, None, 0)
    assert _subnormals(lin.weight) == 4 and _subnormals(opt.state[lin.weight]["exp_avg_sq"]) == 4  # not its step
    cb.on_train_batch_end(SimpleNamespace(global_step=5, optimizers=[opt]), module, None, None, 0)
    assert _subnormals(lin.weight) == 0 and torch.equal(lin.weight[0], torch.zeros(4)) and torch.equal(lin.weight[1:], normal)
    assert _subnormals(opt.state[lin.weight]["exp_avg_sq"]) == 0 and float(opt.state[lin.weight]["step"]) == 1.0
    with torch.no_grad():
        lin.weight[0] = tiny / 4
    cb.on_train_batch_end(SimpleNamespace(global_step=5, optimizers=[opt]), module, None, None, 1)  # an accumulated batch
    assert _subnormals(lin.weight) == 4, "one flush per optimizer step"
    first = FlushSubnormals(every_n_steps=5)
    first.on_train_batch_end(SimpleNamespace(global_step=0, optimizers=[opt]), module, None, None, 0)
    assert _subnormals(lin.weight) == 4, "nothing before the first optimizer step"
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="every_n_steps="):
            FlushSubnormals(every_n_steps=bad)
    with pytest.raises(TypeError, match="not a module"):
        from fer_sweep.cpu import flush_subnormals_

        flush_subnormals_(lin)


@pytest.mark.slow
def test_training_keeps_weights_out_of_the_subnormal_range(fer_root, tmp_path):
    """Fine-tuning the shipped deep_emotion_plus (25,836 of its fc1 weights are subnormal, left by
    its L2 weight decay): with the default callbacks they are 0 after training, without the
    callback they are still there, and every other weight ends the same in both runs."""
    ends = {}
    for name, extra in (("flushed", ["callbacks.flush_subnormals.every_n_steps=5"]), ("kept", ["~callbacks.flush_subnormals"])):
        out = tmp_path / name
        results = run(compose_cfg(["experiment=deep_emotion_plus", "init_weights=deep_emotion_plus", "optimizer.lr=1e-5",
                                   "trainer.max_epochs=1", "test_after_fit=false", "logger=none", "augment=none",
                                   f"paths.output_dir={out}", *extra, *TINY]))
        assert results["status"] == "completed", results.get("error")
        ends[name] = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert _subnormals(ends["kept"]["net.fc1.weight"]) > 20_000  # the check can fail
    assert all(_subnormals(v) == 0 for v in ends["flushed"].values() if v.is_floating_point())
    for k, v in ends["kept"].items():
        if v.is_floating_point():
            torch.testing.assert_close(ends["flushed"][k], v, atol=1e-6, rtol=1e-5, msg=k)


def test_extending_a_finished_cosine_run_follows_the_new_length(fer_root, tmp_path):
    """2 epochs, then the same run with trainer.max_epochs=3 and =6: cosine's T_max follows, and the
    rate continues on the new curve (not cycling back up with the saved T_max, nor stuck at 0)."""
    out = tmp_path / "run"
    for epochs in (2, 3, 6):
        proc = run_cli([f"trainer.max_epochs={epochs}", "data.subset=0.01", "trainer.accelerator=cpu", "scheduler=cosine",
                        "optimizer.lr=0.001", *QUIET, f"hydra.run.dir={out}"])
        assert proc.returncode == 0, proc.stderr[-2000:]
    lrs = [float(r["lr"]) for r in _metrics(out)]
    cosine = lambda e, t: 0.001 * (1 + math.cos(math.pi * e / t)) / 2  # noqa: E731  (rate during epoch e+1)
    expected = [cosine(0, 2), cosine(1, 2), cosine(2, 3), cosine(3, 6), cosine(4, 6), cosine(5, 6)]
    assert lrs == pytest.approx(expected, rel=1e-4, abs=1e-9)
