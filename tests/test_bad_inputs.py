"""Bad input found in review, each refused in one line naming the file and what is expected, with
nothing already written lost: malformed checkpoints, binary or non-UTF-8 CSVs, unwritable ``out=``
and unreadable images in ``fer_sweep.evaluate``, damaged job files in ``fer_sweep.plot``, and the
report's "val" label, which follows each job's recorded data settings instead of saying PublicTest.

Everything is written to tmp_path; only the last test reads FER2013 (``fer_root``, skipped with a
visible reason when it is absent).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_sweep import evaluate as ev
from fer_sweep.callbacks import history_to_csv
from fer_sweep.data import __main__ as data_cli
from fer_sweep.data.classes import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST
from fer_sweep.data.errors import FER2013Error
from fer_sweep.data.readers import held_out_usages, read_raw
from fer_sweep.io import atomic_write_text
from fer_sweep.models.registry import CheckpointError, build_net, load_checkpoint, net_spec
from fer_sweep.results import ResultsError, load_results, read_results, write_results
from fer_sweep.data.splits import UNSPLIT_TEST_WORDS
from fer_sweep.sweep.collect import collect, read_metrics
from helpers import one_torch_thread  # noqa: F401 (an autouse fixture: one torch thread in every test here)

USAGES = ("Training", "PublicTest", "PrivateTest")




def one_line(text: str, *fragments: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    for f in fragments:
        assert f in lines[0], (f, text)
    return lines[0]


# --------------------------------------------------------------------------- files to break

def tiny_checkpoint_blob() -> dict:
    torch.manual_seed(0)
    net = build_net("deep_emotion", num_classes=7).eval()
    return {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "fer_sweep": {"net": net_spec(net), "class_names": list(CLASS_NAMES)}}


def synthetic_csv(path: Path, per_usage: int = 7, usages=USAGES) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for u in usages:
            for i in range(per_usage):
                w.writerow([i % 7, " ".join(map(str, rng.integers(0, 256, 48 * 48).tolist())), u])
    return path


def folder_copy(root: Path, prefixed: bool) -> Path:
    """Image folders with real (decodable) 48x48 faces, with or without Kaggle file-name prefixes."""
    import cv2

    rng = np.random.default_rng(0)
    for c in CLASS_NAMES:
        for split, names in (("train", ["Training_0", "Training_1"]), ("test", ["PublicTest_2", "PrivateTest_3"])):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for n in names:
                cv2.imwrite(str(d / f"{n if prefixed else n.split('_')[1]}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


# --------------------------------------------------------------------------- 1. malformed checkpoints

def _spoil(blob: dict, case: str) -> dict:
    meta = blob["fer_sweep"]
    if case == "no state_dict":
        del blob["state_dict"]
    elif case == "state_dict not a dict":
        blob["state_dict"] = [1, 2, 3]
    elif case == "state_dict of non-tensors":
        blob["state_dict"] = {k: 1.0 for k in blob["state_dict"]}
    elif case == "unexpected net kwargs":
        meta["net"]["kwargs"]["bogus"] = 1
    elif case == "net kwarg of the wrong type":
        meta["net"]["kwargs"]["num_classes"] = "seven"  # the names bind; the constructor itself raises TypeError
    elif case == "net kwargs not a dict":
        meta["net"]["kwargs"] = [7]
    elif case == "net a string":
        meta["net"] = "deep_emotion"
    elif case == "net without name":
        meta["net"] = {"kwargs": {}}
    elif case == "unknown network":
        meta["net"]["name"] = "resnet"
    elif case == "metadata a string":
        blob["fer_sweep"] = "network: deep_emotion"
    elif case == "class_names a string":
        meta["class_names"] = "angry"
    elif case == "int8_scales not a dict":
        blob["int8_scales"] = [1.0]
    elif case == "int8 scale not a tensor":
        key = next(iter(blob["state_dict"]))
        blob["int8_scales"] = {key: 0.5}
    return blob


CKPT_CASES = ["no state_dict", "state_dict not a dict", "state_dict of non-tensors", "unexpected net kwargs", "net kwarg of the wrong type",
              "net kwargs not a dict",
              "net a string", "net without name", "unknown network", "metadata a string", "class_names a string",
              "int8_scales not a dict", "int8 scale not a tensor"]


@pytest.mark.parametrize("case", CKPT_CASES)
def test_malformed_checkpoint_is_one_checkpoint_error_naming_the_file(tmp_path, case):
    path = tmp_path / "spoilt.pt"
    torch.save(_spoil(tiny_checkpoint_blob(), case), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = one_line(str(info.value), str(path))
    assert "expected" in msg, msg


def test_constructor_errors_are_told_apart_from_unknown_kwargs(tmp_path):
    """A kwarg the signature lacks is the file's fault; a TypeError raised inside the constructor
    names the constructor, not a kwargs mismatch."""
    msgs = {}
    for case in ("unexpected net kwargs", "net kwarg of the wrong type"):
        path = tmp_path / f"{case.replace(' ', '_')}.pt"
        torch.save(_spoil(tiny_checkpoint_blob(), case), path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        msgs[case] = str(info.value)
    assert "cannot be built from kwargs" in msgs["unexpected net kwargs"] and "bogus" in msgs["unexpected net kwargs"]
    wrong = msgs["net kwarg of the wrong type"]
    assert "its constructor raised TypeError" in wrong and "'seven'" in wrong and "cannot be built" not in wrong


def test_intact_checkpoint_still_loads(tmp_path):
    torch.save(tiny_checkpoint_blob(), tmp_path / "ok.pt")
    net, names, meta = load_checkpoint(tmp_path / "ok.pt")
    assert names == list(CLASS_NAMES) and meta["net"]["name"] == "deep_emotion" and not net.training


def test_evaluate_cli_prints_one_line_for_a_checkpoint_without_weights(tmp_path):
    """Through ``python -m fer_sweep.evaluate``: exit 2 and one line, not a KeyError traceback."""
    path = tmp_path / "nostate.pt"
    torch.save(_spoil(tiny_checkpoint_blob(), "no state_dict"), path)
    r = subprocess.run([sys.executable, "-m", "fer_sweep.evaluate", f"ckpt={path}", f"data.root={tmp_path}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    one_line(r.stderr, "fer_sweep.evaluate: error: ", str(path), "state_dict")


@pytest.mark.parametrize("case", ["unexpected net kwargs", "net a string"])
def test_evaluate_main_prints_one_line_for_malformed_checkpoints(tmp_path, capsys, case):
    path = tmp_path / "spoilt.pt"
    torch.save(_spoil(tiny_checkpoint_blob(), case), path)
    assert ev.main([f"ckpt={path}"]) == 2
    one_line(capsys.readouterr().err, "fer_sweep.evaluate: error: ", str(path))


# --------------------------------------------------------------------------- 2. binary / non-UTF-8 CSV

def _gzip_csv(path: Path) -> Path:
    text = synthetic_csv(path.with_suffix(".tmp")).read_bytes()
    path.with_suffix(".tmp").unlink()
    path.write_bytes(gzip.compress(text))
    return path


@pytest.mark.parametrize("kind, fragment", [
    ("gzip renamed", "gzip archive"),
    ("latin-1 byte", "not UTF-8"),
    ("binary without newlines", "not parseable as CSV"),
])
def test_binary_or_non_utf8_csv_is_one_fer2013_error(tmp_path, monkeypatch, kind, fragment):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "copy"
    root.mkdir()
    path = root / "fer2013.csv"
    if kind == "gzip renamed":
        _gzip_csv(path)
    elif kind == "latin-1 byte":
        synthetic_csv(path)
        path.write_bytes(path.read_bytes().replace(b"PrivateTest", b"PrivateT\xe9st", 1))
    else:
        path.write_bytes(b"emotion,pixels,Usage\n0," + b"7" * 200_000 + b"\n")  # a field over csv's limit
    with pytest.raises(FER2013Error) as info:
        read_raw(root)
    one_line(str(info.value), str(path), fragment, "emotion,pixels,Usage")
    # the data check and evaluate say it in one line, and nothing is cached from the bad copy
    assert data_cli.main([str(root)]) == 2
    assert ev.main(["ckpt=default", f"data.root={root}"]) == 2
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_data_and_evaluate_cli_print_one_line_for_a_gzip_csv(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    path = _gzip_csv(tmp_path / "fer2013.csv")
    assert data_cli.main([str(path)]) == 2
    one_line(capsys.readouterr().err, "error: ", str(path), "gzip", "emotion,pixels,Usage")
    assert ev.main(["ckpt=default", f"data.root={path}"]) == 2
    one_line(capsys.readouterr().err, "fer_sweep.evaluate: error: ", str(path), "gzip")


def test_csv_with_a_byte_order_mark_reads_like_without(tmp_path):
    plain = synthetic_csv(tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = read_raw(plain), read_raw(bom)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and np.array_equal(a.usage, b.usage)


# --------------------------------------------------------------------------- 3. evaluate: OSError as one line

def test_unwritable_out_is_one_line_and_keeps_the_old_files(tmp_path, capsys, monkeypatch):
    """A file that cannot be replaced (here a folder where the PNG goes) fails in one line naming
    it; the metrics.json already there is left whole and no temp file is left behind."""
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    root = synthetic_csv(tmp_path / "fer2013.csv")
    torch.save(tiny_checkpoint_blob(), tmp_path / "tiny.pt")
    out = tmp_path / "out"
    (out / "confusion_matrix.png" / "in-the-way").mkdir(parents=True)
    (out / "metrics.json").write_text('{"old": true}\n')
    assert ev.main([f"ckpt={tmp_path / 'tiny.pt'}", f"data.root={root}", f"out={out}", "optimise=false"]) == 2
    one_line(capsys.readouterr().err, "fer_sweep.evaluate: error: ", f"out={out}", "confusion_matrix.png", "expected a writable folder")
    assert json.loads((out / "metrics.json").read_text()) == {"old": True}
    assert not list(out.glob(".*.tmp"))


def test_out_below_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    root = synthetic_csv(tmp_path / "fer2013.csv")
    torch.save(tiny_checkpoint_blob(), tmp_path / "tiny.pt")
    (tmp_path / "afile").write_text("x")
    assert ev.main([f"ckpt={tmp_path / 'tiny.pt'}", f"data.root={root}", f"out={tmp_path / 'afile' / 'sub'}", "optimise=false"]) == 2
    one_line(capsys.readouterr().err, "fer_sweep.evaluate: error: ", str(tmp_path / "afile"))


def test_unreadable_image_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    """A dangling link in an image folder (unreadable as any image file whose disk went away)."""
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    root = folder_copy(tmp_path / "copy", prefixed=True)
    bad = root / "train" / "angry" / "Training_9.png"
    os.symlink(tmp_path / "gone.png", bad)
    torch.save(tiny_checkpoint_blob(), tmp_path / "tiny.pt")
    assert ev.main([f"ckpt={tmp_path / 'tiny.pt'}", f"data.root={root}", f"out={tmp_path / 'out'}"]) == 2
    one_line(capsys.readouterr().err, "fer_sweep.evaluate: error: ", str(bad))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 4. damaged job files in a sweep

def write_job(sweep: Path, name: str, epochs: int = 4, status: str = "completed", data: dict | None = None) -> Path:
    job = sweep / name
    atomic_write_text(job / ".hydra" / "overrides.yaml", "".join(f"- {o}\n" for o in name.split(",")))
    hist = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.1, "lr": 1e-3, "train_acc": 0.4 + 0.01 * e, "val_acc": 0.35 + 0.01 * e} for e in range(1, epochs + 1)]
    atomic_write_text(job / "metrics.csv", history_to_csv(hist))
    seed = int(name.rsplit("seed=", 1)[1]) if "seed=" in name else 0
    write_results(job, {"status": status, "seed": seed, "scheduler": "cosine", "max_epochs": epochs, "epochs_run": epochs, "best_epoch": epochs,
                        "best_val_acc": hist[-1]["val_acc"], "final_val_acc": hist[-1]["val_acc"], "test_acc_best": 0.5 + 0.01 * seed,
                        "test_acc_last": 0.5, "test_macro_f1_best": 0.45})
    if data is not None:
        atomic_write_text(job / "config.yaml", "seed: 0\ndata:\n" + "".join(f"  {k}: {v}\n" for k, v in data.items()))
    return job


def test_blank_cells_and_lightning_style_rows_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,val_loss,lr,train_acc,val_acc\n"
                    "1,1.5,,0.001,0.3,\n"      # train row of epoch 1 (val on its own row)
                    "1,,1.4,, ,0.35\n"         # val row of epoch 1, with a whitespace-only cell
                    ",,,,,\n"                  # a row without an epoch
                    "2,1.2,1.3,0.001,0.4,0.41\n")
    rows = read_metrics(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["train_loss"] == 1.5 and rows[0]["val_loss"] == 1.4 and rows[0]["train_acc"] == 0.3 and rows[0]["val_acc"] == 0.35
    assert rows[1]["val_acc"] == 0.41


@pytest.mark.parametrize("spoil, fragments", [
    ("metrics-text", ["metrics.csv:3", "'val_acc'", "'oops'", "expected a number"]),
    ("metrics-epoch", ["metrics.csv:2", "'epoch'", "'1.5'", "whole number"]),
    ("metrics-extra-cells", ["metrics.csv:2", "7 cells; expected 6"]),
    ("results-list", ["results.json", "a JSON array, not an object"]),
    ("results-truncated", ["results.json", "not valid JSON", "truncated"]),
    ("results-empty", ["results.json", "empty"]),
])
def test_a_damaged_job_is_reported_unreadable_and_the_report_of_the_others_is_written(tmp_path, capsys, spoil, fragments):
    from fer_sweep.plot.__main__ import main

    sweep = tmp_path / "sweep"
    for s in range(3):
        write_job(sweep, f"scheduler=cosine,seed={s}")
    bad = sweep / "scheduler=cosine,seed=1"
    m, r = bad / "metrics.csv", bad / "results.json"
    if spoil == "metrics-text":
        lines = m.read_text().splitlines()
        lines[2] = lines[2].rsplit(",", 1)[0] + ",oops"
        m.write_text("\n".join(lines) + "\n")
    elif spoil == "metrics-epoch":
        m.write_text(m.read_text().replace("\n1,", "\n1.5,", 1))
    elif spoil == "metrics-extra-cells":
        m.write_text(m.read_text().replace("\n1,", "\n1,9,", 1))
    elif spoil == "results-list":
        r.write_text("[1, 2]\n")
    elif spoil == "results-truncated":
        r.write_text(r.read_text()[:40])
    elif spoil == "results-empty":
        r.write_text("")

    jobs = {j.name: j for j in collect(sweep)}
    job = jobs[bad.name]
    assert job.status == "failed" and job.status != "pending"
    for f in fragments:
        assert f in job.get("error"), (f, job.get("error"))
    assert str(bad) in job.get("error") and job.get("error").startswith("unreadable ")
    assert all(jobs[n].status == "completed" and jobs[n].metrics for n in jobs if n != bad.name)

    assert main([str(sweep), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 completed, 0 unfinished, 1 failed" in out
    line = next(line for line in out.splitlines() if line.startswith("failed: "))
    assert bad.name in line and "unreadable" in line
    report = (sweep / "report" / "report.md").read_text()
    assert "## Failed and diverged jobs" in report and "unreadable" in report and str(bad) in report


@pytest.mark.parametrize("text, what", [("[1, 2]", "a JSON array"), ('"completed"', "a JSON string"), ("null", "a JSON null"), ('{"status": "comp', "not valid JSON")])
def test_results_that_are_not_an_object(tmp_path, text, what):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ResultsError) as info:
        load_results(tmp_path)
    one_line(str(info.value), str(tmp_path / "results.json"), what, "expected a JSON object")
    assert read_results(tmp_path) is None  # training and the sweep callback treat it as no results, as before


# --------------------------------------------------------------------------- 5. what "val" is

def _val_note(groups) -> str:
    from fer_sweep.plot.figures import val_acc_figure

    return " ".join(t.get_text() for t in val_acc_figure(groups).texts)


def _report(sweep: Path) -> str:
    from fer_sweep.plot.report import analyse, write_report

    a = analyse(collect(sweep))
    write_report(a, sweep / "report")
    return (sweep / "report" / "report.md").read_text()


def test_val_label_under_the_study_split(tmp_path):
    from fer_sweep.sweep.val_split import val_source

    sweep = tmp_path / "sweep"
    for s in range(2):
        write_job(sweep, f"seed={s}", data={"root": tmp_path / "nowhere", "split": "study"})
    jobs = collect(sweep)
    assert val_source(jobs) == "30% of Training (data.split=study)"
    assert "val = 30% of Training (data.split=study)" in _val_note({"all": jobs})
    report = _report(sweep)
    assert "*val* is 30% of Training (data.split=study)" in report and "val* is PublicTest" not in report


@pytest.mark.parametrize("prefixed, expected", [(True, "PublicTest"), (False, "10% of Training (the copy has no PublicTest)")])
def test_val_label_follows_the_copy_under_the_official_split(tmp_path, prefixed, expected):
    from fer_sweep.sweep.val_split import val_source

    root = folder_copy(tmp_path / "copy", prefixed)
    sweep = tmp_path / "sweep"
    write_job(sweep, "seed=0", data={"root": root, "split": "official"})
    write_job(sweep, "seed=1", data={"root": root, "split": "official"})
    (sweep / "seed=2" / ".hydra").mkdir(parents=True)  # a pending job: nothing recorded yet, ignored
    (sweep / "seed=2" / ".hydra" / "overrides.yaml").write_text("- seed=2\n")
    assert val_source(collect(sweep)) == expected
    assert f"*val* is {expected}, the study's" in _report(sweep)


def test_val_label_is_neutral_when_unknown_or_mixed(tmp_path):
    from fer_sweep.sweep.val_split import val_source

    unknown = tmp_path / "unknown"
    write_job(unknown, "seed=0", data={"root": tmp_path / "not-here", "split": "official"})  # copy not on this machine
    write_job(unknown, "seed=1")  # no config.yaml at all
    jobs = collect(unknown)
    assert val_source(jobs) is None
    note = _val_note({"all": jobs})
    assert "PublicTest" not in note and "val:" in note
    report = _report(unknown)
    assert "*val* is the runs' validation split" in report and "PublicTest" not in report.split("## Pairwise")[0]

    mixed = tmp_path / "mixed"
    write_job(mixed, "seed=0", data={"root": folder_copy(tmp_path / "copy", True), "split": "official"})
    write_job(mixed, "seed=1", data={"root": tmp_path / "copy", "split": "study"})
    assert val_source(collect(mixed)) is None


def test_held_out_usages_without_decoding(tmp_path):
    from fer_sweep.data.classes import UNSPLIT_TEST

    assert held_out_usages(folder_copy(tmp_path / "pre", True)) == {PUBLIC_TEST, PRIVATE_TEST}
    assert held_out_usages(folder_copy(tmp_path / "unpre", False)) == {UNSPLIT_TEST}
    assert held_out_usages(synthetic_csv(tmp_path / "full.csv")) == {PUBLIC_TEST, PRIVATE_TEST}
    assert held_out_usages(synthetic_csv(tmp_path / "nopub.csv", usages=("Training", "PrivateTest"))) == {PRIVATE_TEST}
    assert held_out_usages(tmp_path / "missing") is None


@pytest.mark.parametrize("prefixed", [True, False])
def test_test_label_follows_the_copy(tmp_path, prefixed):
    """An unprefixed copy tests on all of test/: the report must not call that PrivateTest."""
    from fer_sweep.sweep.val_split import source_of_test

    root = folder_copy(tmp_path / "copy", prefixed)
    sweep = tmp_path / "sweep"
    for s in range(2):
        write_job(sweep, f"seed={s}", data={"root": root, "split": "official"})
    expected = "PrivateTest" if prefixed else UNSPLIT_TEST_WORDS
    assert source_of_test(collect(sweep)) == expected
    report = _report(sweep)
    summary = report.split("## Summary")[1].split("## Pairwise")[0]
    if prefixed:
        assert "*PrivateTest* is the held-out test set," in summary and "PrivateTest accuracy (%)" in summary
        assert "PrivateTest acc (%)" in report.split("## Jobs")[1]
    else:
        assert f"*test* is the held-out test set: {UNSPLIT_TEST_WORDS}," in summary and "test accuracy (%)" in summary
        assert "PrivateTest" not in summary.replace(UNSPLIT_TEST_WORDS, "")
        assert "test acc (%)" in report.split("## Jobs")[1] and "PrivateTest acc" not in report


def _record_splits(job: Path, splits: dict) -> None:
    write_results(job, {**json.loads((job / "results.json").read_text()), "splits": splits})


def test_recorded_splits_win_over_the_copy_and_unknown_is_neutral(tmp_path):
    """What a run recorded in results.json is what it measured, even where its data copy now says
    otherwise; a run that says nothing, on a machine without its data copy, gets neutral labels,
    and so does a sweep that mixes such a run with one that says."""
    from fer_sweep.plot.figures import test_acc_figure
    from fer_sweep.sweep.val_split import source_of_test, val_source

    subset = ", a stratified 3% subset (data.subset=0.03)"
    recorded = tmp_path / "recorded"
    unprefixed = folder_copy(tmp_path / "copy", False)  # inferred, it would say "all of test/"
    for s in range(2):
        job = write_job(recorded, f"seed={s}", data={"root": unprefixed, "split": "official"})
        _record_splits(job, {"val": "PublicTest" + subset, "test": "PrivateTest" + subset})
    jobs = collect(recorded)
    assert (val_source(jobs), source_of_test(jobs)) == ("PublicTest" + subset, "PrivateTest" + subset)
    fig = test_acc_figure({"all": jobs})
    texts = " ".join(t.get_text() for t in fig.texts) + " " + fig.axes[0].get_ylabel()
    assert "test = PrivateTest, a stratified 3% subset" in texts and "PrivateTest accuracy (%)" in texts

    unknown = tmp_path / "unknown"
    write_job(unknown, "seed=0", data={"root": tmp_path / "not-here", "split": "official"})
    report = _report(unknown)
    assert source_of_test(collect(unknown)) is None
    assert "*test* is the runs' held-out test set" in report and "PrivateTest" not in report

    _record_splits(write_job(unknown, "seed=1"), {"val": "PublicTest", "test": "PrivateTest"})
    write_job(unknown, "seed=2", status="failed")  # left out of the statistics, and of the labels
    assert source_of_test(collect(unknown)) is None and val_source(collect(unknown)) is None
    assert "PrivateTest" not in _report(unknown)


def test_old_runs_are_labelled_from_their_config_subset_and_split(tmp_path):
    """Runs from before ``splits`` was recorded: data.subset and data.split come from config.yaml;
    under data.split=study val is known even without the copy, test is not."""
    from fer_sweep.sweep.val_split import source_of_test, val_source

    sub = tmp_path / "sub"
    for s in range(2):
        write_job(sub, f"seed={s}", data={"root": folder_copy(tmp_path / "copy", True), "split": "official", "subset": 0.125})
    jobs = collect(sub)
    assert val_source(jobs) == "PublicTest, a stratified 12.5% subset (data.subset=0.125)"
    assert source_of_test(jobs) == "PrivateTest, a stratified 12.5% subset (data.subset=0.125)"
    study = tmp_path / "study"
    write_job(study, "seed=0", data={"root": tmp_path / "not-here", "split": "study"})
    assert (val_source(collect(study)), source_of_test(collect(study))) == ("30% of Training (data.split=study)", None)


def test_val_label_on_the_real_copy_is_publictest(fer_root, tmp_path):
    from fer_sweep.sweep.val_split import val_source

    assert held_out_usages(fer_root) == {PUBLIC_TEST, PRIVATE_TEST}
    sweep = tmp_path / "sweep"
    write_job(sweep, "seed=0", data={"root": fer_root, "split": "official"})
    write_job(sweep, "seed=1", data={"root": fer_root, "split": "official"})
    assert val_source(collect(sweep)) == "PublicTest"


# --------------------------------------------------------------------------- 6. a reader that goes away

@pytest.mark.parametrize("argv", [
    ["fer_sweep.data", "--json", "--no-cache", "CSV"],
    ["fer_sweep.evaluate", "--help"],
    ["fer_sweep.plot", "SWEEP", "--out", "REPORT"],
    ["fer_sweep.demo", "IMAGE", "--no-show"],
])
def test_closed_stdout_ends_quietly(tmp_path, argv):
    """``... | head -1``: the reader has gone before anything is written; the command stops with
    status 141 (as ``cat`` would) and writes nothing to stderr, where it used to print a traceback."""
    import cv2

    from fer_sweep.sweep.synthetic import make_synthetic_sweep

    subs = {"CSV": synthetic_csv(tmp_path / "fer2013.csv"), "REPORT": tmp_path / "report", "IMAGE": tmp_path / "grey.png"}
    if "SWEEP" in argv:
        subs["SWEEP"] = make_synthetic_sweep(tmp_path / "sweep", schedulers=("step", "cosine"), seeds=range(2), max_epochs=3)
    cv2.imwrite(str(subs["IMAGE"]), np.full((96, 96), 128, np.uint8))
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command starts: every write to stdout fails with EPIPE
    try:
        r = subprocess.run([sys.executable, "-m", *[str(subs.get(a, a)) for a in argv]],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (141, "")
