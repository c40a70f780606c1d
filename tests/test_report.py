"""The sweep report: statistics (checked by hand and against scipy), the plot command and its files.

Job folders are written the way fer_sweep writes them: ``results.json`` with
:func:`fer_sweep.results.write_results`, ``metrics.csv`` with :func:`fer_sweep.callbacks.history_to_csv`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from fer_sweep.callbacks import history_to_csv
from fer_sweep.io import atomic_write_text
from fer_sweep.plot import tables as T
from fer_sweep.plot.report import analyse, report_markdown
from fer_sweep.results import best_epoch, write_results
from fer_sweep.sweep import stats
from fer_sweep.sweep.collect import collect
from fer_sweep.sweep.synthetic import make_synthetic_sweep

T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom (tables)

# PrivateTest accuracies per seed (0..4), chosen by hand
COSINE = [0.600, 0.620, 0.610, 0.630, 0.590]
STEP = [0.550, 0.560, 0.570, 0.550, 0.580]
PLATEAU = {0: 0.600, 1: 0.610, 2: 0.595}  # three seeds only: not paired with the others


def _history(epochs: int, plateau: float, cross50: int | None = None, cross55: int | None = None, lr: float = 1e-3) -> list[dict]:
    """A val curve rising 1 point per epoch from 30% to ``plateau``, first at >=50% in epoch ``cross50``
    and at >=55% in epoch ``cross55`` (``None``: never)."""
    rows = []
    for e in range(1, epochs + 1):
        v = min(plateau, 0.30 + 0.01 * e)
        v = min(v, 0.49) if cross50 is None or e < cross50 else max(v, 0.50)
        v = min(v, 0.54) if cross55 is None or e < cross55 else max(v, 0.55)
        rows.append({"epoch": e, "train_loss": 1.9 - 0.01 * e, "val_loss": 1.8 - 0.005 * e, "lr": lr * 0.1 ** ((e - 1) // 10), "train_acc": v + 0.05, "val_acc": v})
    return rows


def write_job(sweep: Path, scheduler: str, seed: int, status: str = "completed", history: list[dict] | None = None, test_acc: float | None = None, **extra) -> Path:
    """A job folder as ``python -m fer_sweep`` leaves it (results.json, metrics.csv, .hydra/overrides.yaml)."""
    job = sweep / f"scheduler={scheduler},seed={seed}"
    atomic_write_text(job / ".hydra" / "overrides.yaml", f"- scheduler={scheduler}\n- seed={seed}\n")
    history = history if history is not None else _history(60, 0.6)
    if history:
        atomic_write_text(job / "metrics.csv", history_to_csv(history))
    results = {"status": "running", "seed": seed, "scheduler": scheduler, "optimizer": "adam", "lr": 0.001, "model": "deep_emotion", "max_epochs": 60, "overrides": [f"scheduler={scheduler}", f"seed={seed}"]}
    if status != "running":
        ep, acc = best_epoch(history)
        results.update(status=status, epochs_run=len(history), best_epoch=ep, best_val_acc=acc, final_val_acc=history[-1]["val_acc"] if history else None,
                       splits={"val": "PublicTest", "test": "PrivateTest"})  # as fer_sweep.train records them
    if status == "completed":
        results.update(test_acc_best=test_acc, test_acc_last=test_acc - 0.01, test_macro_f1_best=test_acc - 0.05, per_class_acc=[test_acc] * 7, confusion_matrix=np.eye(7, dtype=int).tolist(), wall_time_s=12.5)
    results.update(extra)
    write_results(job, results)
    return job


@pytest.fixture()
def sweep(tmp_path) -> Path:
    """cosine and step with seeds 0-4, plateau with seeds 0-2, one failed step job, one running cosine job."""
    d = tmp_path / "multirun" / "2025-01-01" / "12-00-00_abcd"
    for s, acc in enumerate(COSINE):
        write_job(d, "cosine", s, history=_history(60, 0.60 + 0.002 * s, cross50=20 + s, cross55=30 + 2 * s), test_acc=acc)
    for s, acc in enumerate(STEP):
        write_job(d, "step", s, history=_history(60, 0.52, cross50=10 + 2 * s if s < 3 else None), test_acc=acc)
    for s, acc in PLATEAU.items():
        write_job(d, "plateau", s, history=_history(60, 0.58, cross50=15, cross55=40), test_acc=acc)
    write_job(d, "step", 5, status="failed", history=_history(3, 0.6), error="RuntimeError: CUDA out of memory")
    write_job(d, "cosine", 5, status="running", history=_history(12, 0.6))
    return d


# --------------------------------------------------------------------------- statistics


def test_describe_mean_std_and_t_interval_by_hand():
    est = stats.describe(COSINE)
    mean = sum(COSINE) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in COSINE) / 4)
    assert est.n == 5
    assert est.mean == pytest.approx(0.61)
    assert est.std == pytest.approx(std) and est.std == pytest.approx(statistics.stdev(COSINE))
    assert est.std == pytest.approx(math.sqrt(0.001 / 4))  # squared deviations sum to 0.001
    half = T_975_DF4 * std / math.sqrt(5)
    assert (est.ci_low, est.ci_high) == pytest.approx((mean - half, mean + half))
    assert sps.t.ppf(0.975, 4) == pytest.approx(T_975_DF4)


def test_describe_small_samples():
    one = stats.describe([0.5, None, math.nan])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    none = stats.describe([])
    assert none.n == 0 and math.isnan(none.mean)


def test_group_summary_uses_completed_jobs_only(sweep):
    jobs = collect(sweep)
    assert len(jobs) == 15
    groups = stats.group_jobs(jobs)
    assert list(groups) == ["step", "cosine", "plateau"]  # the study's order, not alphabetical
    by = {s.label: s for s in stats.summarize(groups)}
    cos, step = by["cosine"], by["step"]
    assert (cos.jobs, cos.completed, cos.unfinished, cos.failed) == (6, 5, 1, 0)
    assert (step.jobs, step.completed, step.unfinished, step.failed) == (6, 5, 0, 1)
    assert cos.seeds == [0, 1, 2, 3, 4]
    assert cos.metrics["test_acc_best"].mean == pytest.approx(0.61)
    assert cos.metrics["test_acc_best"].std == pytest.approx(statistics.stdev(COSINE))
    assert step.metrics["test_acc_best"].mean == pytest.approx(statistics.mean(STEP))
    # best val accuracy: each cosine run plateaus at 0.60 + 0.002 s
    assert cos.metrics["best_val_acc"].mean == pytest.approx(statistics.mean(0.60 + 0.002 * s for s in range(5)))
    assert cos.metrics["final_val_acc"].values == pytest.approx([0.60 + 0.002 * s for s in range(5)])
    # epochs to 50% / 55%: cosine crosses at 20+s and 30+2s; step reaches 50% in 3 of 5 runs, never 55%
    assert cos.reach[0.50].epochs.mean == pytest.approx(22.0) and cos.reach[0.50].reached == 5
    assert cos.reach[0.55].epochs.mean == pytest.approx(34.0) and cos.reach[0.55].epochs.std == pytest.approx(statistics.stdev([30, 32, 34, 36, 38]))
    assert (step.reach[0.50].reached, step.reach[0.50].runs) == (3, 5)
    assert step.reach[0.50].epochs.mean == pytest.approx(statistics.mean([10, 12, 14]))
    assert step.reach[0.55].reached == 0 and math.isnan(step.reach[0.55].epochs.mean)
    # epoch of the best: first epoch at the plateau (the curve rises 1 point per epoch from 30%)
    assert by["plateau"].best_epoch.values == [40.0, 40.0, 40.0]


def test_milestones_blank_where_no_run_got_there(sweep):
    table = stats.milestones(stats.group_jobs(collect(sweep)))
    cos = table["cosine"]
    # the running cosine job (12 epochs so far) counts at epoch 10 but not later
    assert cos[10].n == 6 and cos[15].n == 5
    assert cos[10].mean == pytest.approx(0.40)  # 0.30 + 0.01 * 10 in every run
    assert cos[50].mean == pytest.approx(statistics.mean(0.60 + 0.002 * s for s in range(5)))
    assert cos[100].n == 0 and cos[200].n == 0  # runs of 60 epochs
    assert table["step"][10].n == 5  # the failed job stays out


def test_pairwise_paired_vs_welch_and_holm_against_scipy(sweep):
    groups = stats.group_jobs(collect(sweep))
    comps = {(c.a, c.b): c for c in stats.pairwise(groups, metrics=["test_acc_best"])}
    assert set(comps) == {("step", "cosine"), ("step", "plateau"), ("cosine", "plateau")}

    paired = comps[("step", "cosine")]  # same seeds 0-4 in both (the running cosine seed 5 is left out)
    assert paired.test == "paired t-test" and paired.n_pairs == 5
    ref = sps.ttest_rel(STEP, COSINE)
    d = np.subtract(STEP, COSINE)
    assert paired.diff == pytest.approx(d.mean()) and paired.diff == pytest.approx(-0.048)
    assert paired.se == pytest.approx(statistics.stdev(d) / math.sqrt(5))
    assert paired.t == pytest.approx(ref.statistic) and paired.p == pytest.approx(ref.pvalue)
    assert paired.t == pytest.approx(d.mean() / (statistics.stdev(d) / math.sqrt(5)))
    assert paired.df == 4

    welch = comps[("step", "plateau")]  # plateau has seeds 0-2 only
    plateau = list(PLATEAU.values())
    ref = sps.ttest_ind(STEP, plateau, equal_var=False)
    assert welch.test == "Welch's t-test" and welch.n_pairs == 0
    assert welch.p == pytest.approx(ref.pvalue) and welch.t == pytest.approx(ref.statistic)
    va, vb = statistics.variance(STEP) / 5, statistics.variance(plateau) / 3
    assert welch.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 2))
    assert welch.se == pytest.approx(math.sqrt(va + vb))
    assert comps[("cosine", "plateau")].test == "Welch's t-test"

    # Holm over the 3 tests, by hand: sort, multiply by 3, 2, 1, running maximum, cap at 1
    order = sorted(comps.values(), key=lambda c: c.p)
    expect, running = {}, 0.0
    for k, c in enumerate(order):
        running = max(running, min(1.0, (3 - k) * c.p))
        expect[(c.a, c.b)] = running
    for key, c in comps.items():
        assert c.p_holm == pytest.approx(expect[key])
        assert c.significant == (expect[key] < 0.05)
    assert paired.significant is True


def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adj = stats.holm([0.02, math.nan, 0.01])  # NaN: no test, does not count in m
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)


def test_comparison_sentences(sweep):
    groups = stats.group_jobs(collect(sweep))
    c = next(c for c in stats.pairwise(groups) if (c.a, c.b) == ("step", "cosine") and c.metric == "test_acc_best")
    p = sps.ttest_rel(STEP, COSINE).pvalue
    se = 100 * statistics.stdev(np.subtract(COSINE, STEP)) / math.sqrt(5)
    assert c.sentence == f"cosine beats step on PrivateTest accuracy by 4.8 ± {se:.1f} points (paired t-test, p={p:.3f}, Holm-adjusted p={c.p_holm:.3f}): significant at 5%"
    assert p < 0.05


def test_no_test_below_two_runs(tmp_path):
    d = tmp_path / "sweep"
    write_job(d, "cosine", 0, test_acc=0.6)
    write_job(d, "step", 0, test_acc=0.5)
    write_job(d, "step", 1, test_acc=0.52)
    (c,) = stats.pairwise(stats.group_jobs(collect(d)))
    assert c.test is None and math.isnan(c.p) and math.isnan(c.p_holm) and c.significant is None
    assert "cosine has 1 completed run" in c.reason and "at least 2" in c.reason
    assert c.sentence.startswith("step vs cosine on PrivateTest accuracy (cosine ahead by 9.0 points): no test")


def test_zero_spread_differences_are_not_tested(tmp_path):
    d = tmp_path / "sweep"
    for s in range(3):  # binary-exact values: every difference is exactly 0.25
        write_job(d, "cosine", s, test_acc=0.5 + 0.125 * s)
        write_job(d, "step", s, test_acc=0.25 + 0.125 * s)
    (c,) = stats.pairwise(stats.group_jobs(collect(d)))
    assert c.test is None and "no spread" in c.reason


def test_group_by_results_key_and_varying_override(tmp_path):
    d = tmp_path / "lr_sweep"
    for lr in (0.01, 0.001):
        for s in range(2):
            job = d / f"optimizer.lr={lr},seed={s}"
            launcher = f"- hydra.launcher.n_jobs={2 + s}\n- data.root=/data/{s}\n"  # differ, but are no groups
            atomic_write_text(job / ".hydra" / "overrides.yaml", f"- optimizer.lr={lr}\n- seed={s}\n" + launcher)
            atomic_write_text(job / "metrics.csv", history_to_csv(_history(5, 0.6)))
            write_results(job, {"status": "completed", "seed": s, "scheduler": "cosine", "lr": lr, "test_acc_best": 0.5 + lr})
    jobs = collect(d)
    assert stats.varying_keys(jobs) == ["optimizer.lr"]
    assert stats.infer_group_key(jobs) == ("optimizer.lr",)
    assert list(stats.group_jobs(jobs, None)) == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    assert list(stats.group_jobs(jobs, "lr")) == ["lr=0.001", "lr=0.01"]  # a results.json key
    assert list(stats.group_jobs(jobs, "scheduler")) == ["cosine"]
    assert list(stats.group_jobs(jobs, "seed")) == ["seed=0", "seed=1"]
    # the folder name is enough when .hydra/ and the overrides in results.json are missing
    running = d / "optimizer.lr=0.1,seed=0"
    write_results(running, {"status": "running", "seed": 0, "scheduler": "cosine"})
    (running / "metrics.csv").write_text(history_to_csv(_history(2, 0.6)))
    groups = stats.group_jobs(collect(d), None)
    assert groups["optimizer.lr=0.1"][0].status == "running"
    assert stats.job_overrides(groups["optimizer.lr=0.1"][0]) == {"optimizer.lr": "0.1", "seed": "0"}


# --------------------------------------------------------------------------- synthetic data: verdict both ways


def test_synthetic_sweep_verdicts_both_ways(tmp_path):
    d = make_synthetic_sweep(tmp_path / "syn", schedulers=("step", "cosine", "plateau"), max_epochs=30, levels={"step": 0.47, "cosine": 0.58, "plateau": 0.58}, rng=1)
    jobs = collect(d)
    assert len(jobs) == 15 and all(j.results["synthetic"] for j in jobs)
    groups = stats.group_jobs(jobs)
    comps = {(c.a, c.b): c for c in stats.pairwise(groups)}
    far, near = comps[("step", "cosine")], comps[("cosine", "plateau")]
    assert far.test == near.test == "paired t-test"
    assert far.significant is True and far.diff < -0.08
    assert far.sentence.startswith("cosine beats step on PrivateTest accuracy by ") and far.sentence.endswith(": significant at 5%")
    assert near.significant is False and abs(near.diff) < 0.01
    assert " is ahead of " in near.sentence and near.sentence.endswith(": not significant at 5%")
    # realistic files: metrics.csv has one row per epoch, results hold the PrivateTest report
    job = groups["cosine"][0]
    assert [r["epoch"] for r in job.metrics] == list(range(1, 31))
    assert sum(map(sum, job.results["confusion_matrix"])) == 3589
    assert job.results["test_acc_best"] == pytest.approx(np.trace(job.results["confusion_matrix"]) / 3589)


# --------------------------------------------------------------------------- the plot command

FIGURE_STEMS = ("val_acc", "train_acc", "loss", "lr", "overfit_gap", "test_acc")
TABLE_STEMS = ("group_summary", "milestones", "comparisons", "jobs")


def test_plot_command_writes_every_figure_and_table(sweep, capsys):
    from fer_sweep.plot.__main__ import main
    from fer_sweep.plot.figures import FIGURES

    assert set(FIGURES) == set(FIGURE_STEMS)
    assert main([str(sweep)]) == 0
    out = sweep / "report"  # the default
    for stem in FIGURE_STEMS:
        png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, stem
        assert pdf.read_bytes()[:5] == b"%PDF-", stem
    for stem in TABLE_STEMS:
        assert (out / f"{stem}.md").read_text().startswith(("|", "**")), stem
        assert list(csv.DictReader((out / f"{stem}.csv").open())), stem
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files

    report = (out / "report.md").read_text()
    for stem in FIGURE_STEMS:
        assert f"](figures/{stem}.png)" in report
    assert "## Failed and diverged jobs" in report and "scheduler=step,seed=5 (failed, epoch 3/60): RuntimeError: CUDA out of memory" in report
    assert "## Unfinished jobs" in report and "scheduler=cosine,seed=5 (running, epoch 12/60, last written 0 min ago)" in report
    assert "cosine beats step on PrivateTest accuracy" in report
    assert "SYNTHETIC" not in report

    stdout = capsys.readouterr().out
    assert "15 jobs" in stdout and "13 completed, 1 unfinished, 1 failed" in stdout
    assert "failed: scheduler=step,seed=5 (failed, epoch 3/60): RuntimeError: CUDA out of memory" in stdout
    assert "unfinished: scheduler=cosine,seed=5 (running" in stdout

    summary = {r["scheduler"]: r for r in csv.DictReader((out / "group_summary.csv").open())}
    assert list(summary) == ["step", "cosine", "plateau"]
    assert float(summary["cosine"]["test_acc_best_mean_pct"]) == pytest.approx(61.0)
    assert summary["cosine"]["unfinished"] == "1" and summary["step"]["failed"] == "1"
    rows = list(csv.DictReader((out / "comparisons.csv").open()))
    row = next(r for r in rows if (r["metric"], r["a"], r["b"]) == ("test_acc_best", "step", "cosine"))
    assert row["test"] == "paired t-test" and float(row["p"]) == pytest.approx(sps.ttest_rel(STEP, COSINE).pvalue, rel=1e-3)
    milestones = {r["scheduler"]: r for r in csv.DictReader((out / "milestones.csv").open())}
    assert milestones["cosine"]["val_acc_e200_mean_pct"] == "" and milestones["cosine"]["val_acc_e200_n"] == "0"
    md = (out / "milestones.md").read_text()
    assert "| 40.0 ± 0.0 |" in md  # epoch 10, every run at 40%


def test_plot_command_on_several_folders_with_out_and_group_by(sweep, tmp_path, capsys):
    from fer_sweep.plot.__main__ import main

    other = make_synthetic_sweep(tmp_path / "syn", schedulers=("none",), seeds=(0, 1), max_epochs=12, pending=[("none", 1)])
    out = tmp_path / "out"
    assert main([str(sweep), str(other), "--out", str(out), "--group-by", "scheduler"]) == 0
    report = (out / "report.md").read_text()
    assert "SYNTHETIC DEMO DATA" in report and "scheduler=none,seed=1 (pending, epoch 0, nothing written yet)" in report
    assert [r["scheduler"] for r in csv.DictReader((out / "group_summary.csv").open())] == ["step", "cosine", "plateau", "none"]
    assert (out / "figures" / "lr.pdf").is_file()
    assert "note: SYNTHETIC" in capsys.readouterr().out


def test_colours_fixed_per_scheduler():
    from fer_sweep.plot.style import FALLBACK_COLORS, SCHEDULER_COLORS, group_colors

    a = group_colors(["cosine", "step"])
    b = group_colors(["step", "multistep", "cosine", "plateau", "none", "warmup"])
    assert a["cosine"] == b["cosine"] == SCHEDULER_COLORS["cosine"] and a["step"] == b["step"]
    assert b["warmup"] == FALLBACK_COLORS[0] and b["warmup"] not in SCHEDULER_COLORS.values()


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_bad_folder_exit_2_with_one_line(tmp_path, capsys, case):
    from fer_sweep.plot.__main__ import main

    bad = tmp_path / "multirun" / case
    if case == "empty":
        (bad / "report").mkdir(parents=True)
    elif case == "file":
        bad.parent.mkdir(parents=True)
        bad.write_text("not a sweep")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err
    assert "expected" in err and ("no such folder" in err if case == "missing" else True)
    assert not (bad / "report" / "report.md").exists()


def test_unknown_group_by_key_exit_2(sweep, capsys):
    from fer_sweep.plot.__main__ import main

    assert main([str(sweep), "--group-by", "optimiser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--group-by optimiser: no job has optimiser" in err and "scheduler" in err
    assert not (sweep / "report").exists()


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_unwritable_out_exit_2_with_one_line(sweep, tmp_path, capsys, where):
    from fer_sweep.plot.__main__ import main

    blocker = tmp_path / "blocker"
    blocker.write_text("keep me\n")
    out = blocker if where == "a_file" else blocker / "report"
    assert main([str(sweep), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fer-sweep-plot: error: --out {out}: ") and "expected a folder" in err, err
    assert blocker.read_text() == "keep me\n"


def test_a_sweep_whose_every_job_failed_is_reported_with_exit_1(tmp_path, capsys):
    """The report lists why each job failed, but a status of 0 would tell a script all is well."""
    from fer_sweep.plot.__main__ import main

    folder = make_synthetic_sweep(tmp_path / "syn", schedulers=("cosine",), seeds=(0,), max_epochs=3)
    (folder / "scheduler=cosine,seed=0" / "results.json").write_text("garbage\n")
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert "0 completed, 0 unfinished, 1 failed" in out and "not valid JSON" in (tmp_path / "out" / "report.md").read_text()
    assert err.count("\n") == 1 and "none of the 1 jobs has results or a curve to compare (1 failed" in err, err


def test_bad_folder_among_good_ones_via_python_m(sweep, tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "fer_sweep.plot", str(sweep), str(missing)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(missing) in proc.stderr and "sweep folder" in proc.stderr
    assert not (sweep / "report").exists()


def test_results_json_round_trip_is_what_collect_reads(sweep):
    job = sweep / "scheduler=cosine,seed=0"
    data = json.loads((job / "results.json").read_text())
    assert data["status"] == "completed" and data["test_acc_best"] == COSINE[0]
    header = (job / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_loss,lr,train_acc,val_acc"


# --------------------------------------------------------------------------- what a reader must be told (review findings)

def _edit_results(job: Path, **changes) -> None:
    f = job / "results.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))


def test_a_folder_given_twice_counts_once(tmp_path, capsys):
    """``plot A A`` pooled every run twice: n doubled, the paired test became Welch's with df 10."""
    from fer_sweep.plot.__main__ import main
    from fer_sweep.sweep.collect import collect

    a = make_synthetic_sweep(tmp_path / "A", schedulers=("step", "cosine"), seeds=range(3), max_epochs=8)
    assert len(collect(a, a)) == len(collect(a, a / "scheduler=step,seed=0")) == 6
    assert main([str(a), str(a), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "6 jobs" in capsys.readouterr().out
    row = next(csv.DictReader((tmp_path / "out" / "comparisons.csv").open()))
    assert row["test"] == "paired t-test" and row["n_a"] == "3"


def test_the_same_seed_twice_in_a_group_is_pointed_out(tmp_path):
    """Two sweeps of one grid given together: the seeds repeat, so the tests lose their pairing; say so."""
    a = make_synthetic_sweep(tmp_path / "A", schedulers=("step", "cosine"), seeds=range(3), max_epochs=8)
    b = make_synthetic_sweep(tmp_path / "B", schedulers=("step", "cosine"), seeds=range(3), max_epochs=8, rng=1)
    an = analyse(collect(a, b), sources=[a, b])
    assert [n.split(":")[0] for n in an.notes] == ["step", "cosine"]
    assert "3 seed(s) ran more than once" in an.notes[0] and str(a / "scheduler=step,seed=0") in an.notes[0]
    assert all(c.test == "Welch's t-test" for c in an.comparisons)
    assert "## Read this first" in report_markdown(an)
    assert analyse(collect(a), sources=[a]).notes == []


def test_one_number_written_two_ways_is_one_group(tmp_path):
    """optimizer.lr=0.001 and optimizer.lr=1e-3 are the same setting; so are results.json's lr, the
    override of a job not yet started, and the default of a sweep that did not override it."""
    from fer_sweep.sweep.stats import canonical_value, group_jobs, job_value

    assert [canonical_value(v) for v in ("0.001", "1e-3", "1.0E-03", 0.001, "3", "cosine", "1.5x")] == ["0.001"] * 4 + ["3", "cosine", "1.5x"]
    s = make_synthetic_sweep(tmp_path / "lr", schedulers=("cosine",), seeds=range(4), max_epochs=8, pending=[("cosine", 3)])
    for seed, text in enumerate(["0.001", "1e-3", "1e-2", "0.01"]):
        job = s / f"scheduler=cosine,seed={seed}"
        (job / ".hydra" / "overrides.yaml").write_text(f"- scheduler=cosine\n- seed={seed}\n- optimizer.lr={text}\n")
        if seed < 3:
            _edit_results(job, lr=float(text), overrides=["scheduler=cosine", f"seed={seed}", f"optimizer.lr={text}"])
    jobs = collect(s)
    for key in ("optimizer.lr", "lr", None):
        groups = group_jobs(jobs, key)
        assert {g: len(js) for g, js in groups.items()} == {f"{key or 'optimizer.lr'}=0.001": 2, f"{key or 'optimizer.lr'}=0.01": 2}, key
    plain = make_synthetic_sweep(tmp_path / "plain", schedulers=("cosine",), seeds=range(2), max_epochs=8)
    assert {job_value(j, "optimizer.lr") for j in collect(plain)} == {"0.001"}  # from results.json's lr
    job = plain / "scheduler=cosine,seed=0"
    (job / "results.json").unlink()
    (job / "config.yaml").write_text("optimizer:\n  lr: 0.0005\ntrainer:\n  max_epochs: 8\n")
    assert job_value(collect(job.parent)[0], "optimizer.lr") == "0.0005" and job_value(collect(job.parent)[0], "max_epochs") == "8"


def test_diverged_runs_are_counted_as_such_and_flagged(tmp_path):
    s = make_synthetic_sweep(tmp_path / "div", schedulers=("step", "cosine"), seeds=range(3), max_epochs=8)
    _edit_results(s / "scheduler=cosine,seed=1", status="diverged", error="non-finite loss at epoch 5", test_acc_best=None)
    an = analyse(collect(s), sources=[s])
    cosine = next(x for x in an.summaries if x.label == "cosine")
    assert (cosine.completed, cosine.failed, cosine.diverged) == (2, 1, 1)
    assert an.notes == ["cosine: 1 of 3 runs diverged (seed 1); its statistics cover the others only, which flatters it, "
                        "and its comparisons lose their pairing over seeds"]
    md = report_markdown(an)
    assert "5 completed, 0 unfinished, 0 failed, 1 diverged" in md and "| cosine | 2 / 3 (1 diverged) |" in md
    rows = {r["scheduler"]: r for r in csv.DictReader(io.StringIO(T.to_csv(T.summary_rows(an.summaries, "scheduler"))))}
    assert (rows["cosine"]["failed"], rows["cosine"]["diverged"], rows["step"]["diverged"]) == ("1", "1", "0")


def test_planned_jobs_that_never_started_are_named(tmp_path, capsys):
    """The reference sweep said "10 jobs" of a 20-job grid: its multirun.yaml plans the whole grid."""
    from fer_sweep.plot.__main__ import main
    from fer_sweep.sweep.plan import never_started, planned_grid

    s = make_synthetic_sweep(tmp_path / "grid", schedulers=("step", "cosine"), seeds=range(2), max_epochs=8)
    (s / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      scheduler: step,multistep\n      seed: 0,1\n"
                                     "  overrides:\n    task:\n    - scheduler=step,cosine,plateau\n    - seed=range(0,2)\n    - threads=1\n")
    assert len(planned_grid(s)) == 6  # the command line's sweeps replace the config's
    planned, missing = never_started(s, collect(s))
    assert planned == 6 and missing == [{"scheduler": "plateau", "seed": "0"}, {"scheduler": "plateau", "seed": "1"}]
    assert main([str(s), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert f"note: {s}: its multirun.yaml plans 6 jobs; 2 not started" in capsys.readouterr().out
    assert "(scheduler=plateau, seed=0), (scheduler=plateau, seed=1)" in (tmp_path / "out" / "report.md").read_text()
    (s / "multirun.yaml").write_text("not: [valid")
    assert planned_grid(s) is None and never_started(s, collect(s)) is None
