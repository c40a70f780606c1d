"""Packed training (``hydra/launcher=packed``): K Deep-Emotion networks as one.

Fast tier: the packed network computes what each DeepEmotion computes (outputs, gradients, BatchNorm
statistics), PackedAdam updates as torch's Adam with each model's own rate, and a pack unpacks into
ordinary state dicts.  Slow tier: a real packed sweep on FER2013 against the same sweep run job by
job (same initial weights and batches: the first epoch's numbers agree), its files, checkpoints and
report, and a job that cannot be packed running alone in the same sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.packed import PackedAdam, PackedDeepEmotion


def _nets(k: int, dropout: float = 0.0) -> list[DeepEmotion]:
    torch.manual_seed(0)
    nets = [DeepEmotion(dropout=dropout, native_train=False) for _ in range(k)]
    with torch.no_grad():  # a non-identity attention transform, so the sampling is exercised
        for net in nets:
            for p in net.fc_loc[2].parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return nets


def _grad_close(packed: PackedDeepEmotion, nets: list[DeepEmotion]) -> None:
    for i, net in enumerate(nets):
        params = dict(net.named_parameters())
        scale = max(p.grad.abs().max().item() for p in params.values())
        for key, p in params.items():
            g = packed._p(key).grad[i]
            assert torch.allclose(g, p.grad, atol=2e-5 * scale, rtol=0), (key, i, (g - p.grad).abs().max().item())


def test_packed_network_computes_each_network() -> None:
    nets = _nets(3)
    packed = PackedDeepEmotion(nets)
    x = torch.randn(3, 16, 1, 48, 48)
    y = torch.randint(0, 7, (3, 16))
    out = packed(x)
    assert out.shape == (3, 16, 7)
    F.cross_entropy(out.reshape(-1, 7), y.reshape(-1), reduction="none").view(3, 16).mean(1).sum().backward()
    for i, net in enumerate(nets):
        ref = net.reference_forward(x[i])
        assert torch.allclose(out[i], ref, atol=2e-5), (out[i] - ref).abs().max()
        F.cross_entropy(ref, y[i]).backward()
    _grad_close(packed, nets)
    for i, net in enumerate(nets):  # BatchNorm statistics are per network
        assert torch.allclose(packed._p("norm.running_mean")[i], net.norm.running_mean, atol=1e-6)
        assert torch.allclose(packed._p("norm.running_var")[i], net.norm.running_var, atol=1e-6)
    packed.eval()
    for net in nets:
        net.eval()
    out = packed(x)
    for i, net in enumerate(nets):
        assert torch.allclose(out[i], net(x[i]), atol=2e-5)


def test_channels_last_pack_computes_the_same() -> None:
    nets = _nets(2)
    plain, cl = PackedDeepEmotion(nets), PackedDeepEmotion(nets, channels_last=True)
    x = torch.randn(2, 8, 1, 48, 48)
    y = torch.randint(0, 7, (2, 8))
    outs = []
    for packed in (plain, cl):
        out = packed(x)
        F.cross_entropy(out.reshape(-1, 7), y.reshape(-1)).backward()
        outs.append(out)
    assert torch.allclose(outs[0], outs[1], atol=2e-5)
    scale = max(p.grad.abs().max().item() for p in plain.parameters())  # conv4.bias's gradient is 0 up to rounding (BatchNorm follows)
    for key in plain._keys:
        p, q = plain._p(key), cl._p(key)
        if isinstance(p, torch.nn.Parameter):
            assert torch.allclose(p.grad, q.grad, atol=2e-5 * scale), key


def test_packed_networks_are_independent() -> None:
    """A NaN in one network (a diverged job) leaves the others' outputs and gradients untouched."""
    nets = _nets(2)
    packed = PackedDeepEmotion(nets)
    with torch.no_grad():
        packed._p("fc1.weight")[0].fill_(float("nan"))
    x = torch.randn(2, 8, 1, 48, 48)
    out = packed(x)
    assert torch.isnan(out[0]).all()
    assert torch.allclose(out[1], nets[1].reference_forward(x[1]), atol=2e-5)


def test_unpack_gives_deep_emotion_state_dicts() -> None:
    nets = _nets(2)
    packed = PackedDeepEmotion(nets)
    with torch.no_grad():
        packed._p("conv2.weight")[1].mul_(1.5)
    net = DeepEmotion(dropout=0.0)
    net.load_state_dict(packed.unpack(1))  # strict: the same names and shapes
    assert torch.equal(net.conv2.weight, packed._p("conv2.weight")[1])
    assert torch.equal(packed.unpack(0)["conv2.weight"], nets[0].conv2.weight)


def test_packed_adam_is_adam_with_a_rate_per_model() -> None:
    """The same gradients give each model the update torch's Adam gives it alone: its own rate,
    weight decay on the FC weights only, bias correction over the steps."""
    nets = _nets(2)
    packed = PackedDeepEmotion(nets)
    rates = [1e-3, 3e-4]
    fc_decay = 1e-2
    opt = PackedAdam(list(packed.parameters()), torch.tensor(rates), decay={id(p): fc_decay for p in packed.fc_weights()})
    refs = []
    for net, lr in zip(nets, rates):
        fc = {id(p) for p in net.fc_parameters()}
        groups = [{"params": [p for p in net.parameters() if id(p) not in fc]}, {"params": net.fc_parameters(), "weight_decay": fc_decay}]
        refs.append(torch.optim.Adam(groups, lr=lr, foreach=False))
    start = {k: v.clone() for k, v in nets[1].state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        opt.zero_grad()
        for key in packed._keys:
            p = packed._p(key)
            if isinstance(p, torch.nn.Parameter):
                p.grad = torch.randn(p.shape, generator=gen) * 10 ** torch.randint(-6, 0, (1,), generator=gen).item()
        opt.step()
        for i, (net, ref) in enumerate(zip(nets, refs)):
            for key, q in net.named_parameters():
                q.grad = packed._p(key).grad[i].clone()
            ref.step()
    for i, net in enumerate(nets):
        for key, p in net.named_parameters():
            assert torch.allclose(packed._p(key)[i], p, atol=1e-7, rtol=1e-6), (key, i, (packed._p(key)[i] - p).abs().max().item())
    moved = (nets[1].fc1.weight - start["fc1.weight"]).abs().max()
    assert moved > 5e-4  # real updates (4 steps of about lr each), not both still at the start



def test_which_jobs_pack_together(tmp_path) -> None:
    """Jobs that differ in seed, scheduler or rate share a pack; other differences, other networks,
    optimizers and CPU jobs (unless pack_on_cpu) do not."""
    from fer_sweep.train_packed import pack_signature, unpackable
    from helpers import compose_cfg

    base = ["trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"]
    cfg = compose_cfg(base)
    assert unpackable(cfg, pack_on_cpu=True) is None
    assert "CPU" in unpackable(cfg)
    for overrides, why in ((["optimizer=sgd"], "SGD"), (["model=vgg"], "vgg"), (["model.teacher=vgg"], "distillation"),
                           (["init_weights=deep_emotion"], "init_weights"), (["trainer.precision=16-mixed"], "precision"),
                           (["seed=null"], "seed=null"), (["scheduler=plateau", "scheduler.monitor=val/f1"], "scheduler.monitor=val/f1"),
                           (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val=1.0"), (["+trainer.accumulate_grad_batches=2"], "accumulate_grad_batches"),
                           (["+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping"], "EarlyStopping"), (["deterministic=true"], "deterministic")):
        assert why in (unpackable(compose_cfg(base + overrides), pack_on_cpu=True) or ""), overrides
    for fine in (["logger=tensorboard"], ["callbacks=none"], ["scheduler=plateau"], ["trainer.benchmark=true"]):  # not results: packable
        assert unpackable(compose_cfg(base + fine), pack_on_cpu=True) is None, fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")  # a run of another launcher to resume
    assert "last.ckpt" in unpackable(cfg, pack_on_cpu=True)
    assert unpackable(compose_cfg(base + ["resume=false"]), pack_on_cpu=True) is None
    sig = pack_signature(cfg)
    for same in (["seed=3"], ["scheduler=plateau"], ["optimizer.lr=0.01"], ["threads=1"]):
        assert pack_signature(compose_cfg(base + same)) == sig, same
    for other in (["trainer.max_epochs=5"], ["model.net.dropout=0.1"], ["data.batch_size=64"], ["augment=light"]):
        assert pack_signature(compose_cfg(base + other)) != sig, other


def test_plateau_steps_on_the_metric_its_monitor_names(tmp_path) -> None:
    from fer_sweep.train_packed import _Job
    from helpers import compose_cfg

    def rates(overrides: list[str], records: list[dict]) -> list[float]:
        job = _Job(compose_cfg(["scheduler=plateau", "scheduler.partial.patience=0", f"paths.output_dir={tmp_path}", *overrides]), [])
        out = []
        for record in records:
            job.step_scheduler(record)
            out.append(job.lr)
        return out

    rising = [{"val_acc": a, "val_loss": 2.0 - a, "train_acc": a, "train_loss": 2.0 - a} for a in (0.3, 0.4, 0.5)]
    assert rates([], rising) == [1e-3, 1e-3, 1e-3]  # val/acc, mode max: improving, no cut
    assert rates(["scheduler.monitor=val/loss", "scheduler.partial.mode=min"], rising) == pytest.approx([1e-3, 1e-3, 1e-3])
    worse_loss = [dict(r, val_loss=1.0 + i) for i, r in enumerate(rising)]
    assert rates(["scheduler.monitor=val/loss", "scheduler.partial.mode=min"], worse_loss) == pytest.approx([1e-3, 1e-4, 1e-5])


def test_job_losses_are_each_jobs_own_cross_entropy() -> None:
    from fer_sweep.train_packed import job_losses

    torch.manual_seed(0)
    logits, labels = torch.randn(3, 10, 7), torch.randint(0, 7, (3, 10))
    weight = torch.rand(7) + 0.5
    got = job_losses(logits, labels, weight, 0.1)
    for k in range(3):
        assert got[k] == pytest.approx(float(F.cross_entropy(logits[k], labels[k], weight=weight, label_smoothing=0.1)), rel=1e-6)
    assert torch.allclose(job_losses(logits, labels), torch.stack([F.cross_entropy(logits[k], labels[k]) for k in range(3)]))

# -- real packed sweeps on FER2013 ------------------------------------------------------------
from helpers import run_cli  # noqa: E402

TINY = ["data.subset=0.05", "trainer.accelerator=cpu", "logger=none", "callbacks=none", "threads=1"]
PACKED = ["hydra/launcher=packed", "hydra.launcher.pack_on_cpu=true"]  # packs on this CPU too, to test them


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir())


@pytest.mark.slow
@pytest.mark.data
def test_packed_jobs_start_and_batch_as_separate_jobs(fer_root, tmp_path):
    """With a rate too small to move the weights (1e-7), one epoch leaves each job's BatchNorm
    running statistics as a function of its initial weights and the order of its batches alone:
    the packed sweep's must equal those of the same sweep run job by job, and the two seeds' differ."""
    args = ["-m", "seed=0,1", "optimizer.lr=1e-7", "trainer.max_epochs=1", *TINY]
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    for sweep, launcher in ((packed, PACKED), (alone, [])):
        proc = run_cli([*args, *launcher, f"hydra.sweep.dir={sweep}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in _jobs(packed)] == [p.name for p in _jobs(alone)]
    states = []
    for run_packed, run_alone in zip(_jobs(packed), _jobs(alone)):
        a, b = _state(run_packed), _state(run_alone)
        for key in ("net.norm.running_mean", "net.norm.running_var", "net.conv2.weight", "net.fc1.weight"):
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), (run_packed.name, key, (a[key] - b[key]).abs().max())
        res_a = json.loads((run_packed / "results.json").read_text())
        res_b = json.loads((run_alone / "results.json").read_text())
        assert res_a["test_acc_best"] == pytest.approx(res_b["test_acc_best"], abs=0.006)  # at most one face of 180
        states.append(a)
    assert not torch.allclose(states[0]["net.norm.running_mean"], states[1]["net.norm.running_mean"], atol=1e-3)
    for run in _jobs(packed):  # each job's own log file has the pack's log
        assert "packed run: 2 jobs" in (run / "train.log").read_text()
    # a forced rerun is a fresh start: the first run's checkpoints are set aside, not overwritten or resumed
    proc = run_cli([*args, *PACKED, f"hydra.sweep.dir={packed}", "force=true"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run in _jobs(packed):
        aside = list(run.glob("checkpoints.replaced-*/best.ckpt"))
        assert len(aside) == 1 and (run / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.data
def test_packed_sweep_files_schedules_and_report(fer_root, tmp_path):
    """2 schedulers x 2 seeds packed, plus an SGD job that runs alone in the same sweep: every job
    completes with its own rate schedule, results, metrics and a best checkpoint that reproduces its
    test accuracy, and the report reads the sweep."""
    from fer_sweep.data.datamodule import FER2013DataModule
    from fer_sweep.data.preprocess import to_model_input
    from fer_sweep.models.registry import load_checkpoint

    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "scheduler=step,cosine", "seed=0,1", "trainer.max_epochs=3",
                    *PACKED, f"hydra.sweep.dir={sweep}", *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "packed run: 4 jobs" in proc.stdout + proc.stderr
    alone = run_cli(["-m", "optimizer=sgd,adam", "optimizer.lr=0.01", "trainer.max_epochs=1", *PACKED, f"hydra.sweep.dir={tmp_path / 'mixed'}", *TINY])
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "runs alone: optimizer torch.optim.SGD" in alone.stdout + alone.stderr
    mixed = {p.name: json.loads((p / "results.json").read_text()) for p in _jobs(tmp_path / "mixed")}
    assert sorted(r["optimizer"] for r in mixed.values()) == ["adam", "sgd"] and all(r["status"] == "completed" for r in mixed.values())
    dm = FER2013DataModule(str(fer_root), subset=0.05)
    dm.setup()
    test_x, test_y = dm.tensors["test"]
    for run in _jobs(sweep):
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "completed" and res["epochs_run"] == 3 and res["packed"]["jobs"] == 4
        assert res["splits"]["val"] and res["class_names"][0] == "angry"
        lines = (run / "metrics.csv").read_text().splitlines()
        assert lines[0] == "epoch,train_loss,val_loss,lr,train_acc,val_acc" and len(lines) == 4
        rates = [float(line.split(",")[3]) for line in lines[1:]]
        expected = [1e-3] * 3 if res["scheduler"] == "step" else [1e-3, 7.5e-4, 2.5e-4]  # step: first cut at 10; cosine: T_max 3
        assert rates == pytest.approx(expected, rel=1e-6), (run.name, rates)
        net, names, meta = load_checkpoint(run / "checkpoints" / "best.ckpt")
        assert names == res["class_names"] and len(meta["history"]) == res["best_epoch"]
        cm = torch.tensor(res["confusion_matrix"])
        assert cm.sum() == 180 and cm.diag().sum() / cm.sum() == pytest.approx(res["test_acc_best"], abs=1e-6)
        with torch.no_grad():  # the checkpoint alone reproduces the job's test accuracy
            predicted = net(to_model_input(test_x)).argmax(1)
        assert float((predicted == test_y).float().mean()) == pytest.approx(res["test_acc_best"], abs=1e-6)
    report = run_cli([str(sweep), "--out", str(tmp_path / "report")], module="fer_sweep.plot", timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**4 jobs**: 4 completed" in text and "| cosine | 2 / 2 |" in text and "| step | 2 / 2 |" in text


@pytest.mark.slow
@pytest.mark.data
def test_a_diverging_job_does_not_touch_its_packmates(fer_root, tmp_path):
    """lr 1e30 diverges in its first epoch and is recorded so (the sweep exits 1 naming it); the job
    packed beside it trains exactly as beside a healthy job (same dropout draws: same pack size)."""
    common = ["-m", "trainer.max_epochs=2", *PACKED, *TINY]
    bad = run_cli([*common, "optimizer.lr=0.001,1e30", f"hydra.sweep.dir={tmp_path / 'bad'}"])
    good = run_cli([*common, "optimizer.lr=0.001,0.002", f"hydra.sweep.dir={tmp_path / 'good'}"])
    assert good.returncode == 0, good.stderr[-3000:]
    assert bad.returncode == 1 and "optimizer.lr=1e+30" in bad.stderr and "(diverged)" in bad.stderr
    diverged = next(p for p in _jobs(tmp_path / "bad") if "1e+30" in p.name)
    res = json.loads((diverged / "results.json").read_text())
    assert res["status"] == "diverged" and res["error"].startswith("training loss became nan in epoch 1")
    healthy = [next(p for p in _jobs(tmp_path / s) if "optimizer.lr=0.001," in p.name) for s in ("bad", "good")]
    assert (healthy[0] / "metrics.csv").read_text() == (healthy[1] / "metrics.csv").read_text()


@pytest.mark.slow
@pytest.mark.data
def test_sigterm_stops_a_pack_and_says_so(fer_root, tmp_path):
    import signal
    import time

    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fer_sweep", "-m", "seed=0,1", "trainer.max_epochs=50", *PACKED, *TINY, f"hydra.sweep.dir={sweep}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(sweep.glob("*/metrics.csv")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    for run in _jobs(sweep):
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "interrupted" and res["epochs_run"] >= 1, res
        assert res["error"] == f"stopped by SIGTERM after {res['epochs_run']} epoch(s); a packed job keeps no last.ckpt, so rerunning the sweep trains it afresh"
        meta = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["fer_sweep"]  # its best epoch so far
        assert len(meta["history"]) == res["best_epoch"]
