"""The benchmark scripts run end to end on real data and report what the issues ask for.

Speeds are not asserted here (they belong to the benchmarks' own output, measured against a
baseline in the same run); these tests check that each script runs in its shortest mode, measures
every variant, prints the ratios and the machine, and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fer_sweep.cpu import cpu_model
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow


def run_benchmark(script: str, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / script), *args], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=PROJECT_ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def test_train_speed_short_mode_measures_every_variant_and_prints_the_ratios(fer_root, tmp_path):
    out = tmp_path / "train_speed.json"
    r = run_benchmark("train_speed.py", ["--root", str(fer_root), "--batches", "3", "--warmup", "1", "--rounds", "1",
                                         "--threads", "1", "--naive-threads", "1", "--workers2", "1", "--json", str(out)])
    assert cpu_model() in r.stdout  # the header names the machine
    for line in ("c/b = ", "a/c = ", "a2/c = ", "target <= 15 s"):
        assert line in r.stdout, r.stdout
    data = json.loads(out.read_text())
    assert set(data["median_epoch_s"]) == {"a", "a2", "b", "c"}
    assert all(v > 0 for v in data["median_epoch_s"].values())
    assert data["cpu"] == cpu_model()
    # (c) is fer_sweep's own training: it also timed validation on the 3,589 PublicTest faces
    assert data["runs"]["c"][0]["val_s"] > 0


def test_inference_speed_times_eager_and_optimised_and_checks_they_agree(tmp_path):
    out = tmp_path / "inference_speed.json"
    r = run_benchmark("inference_speed.py", ["--models", "deep_emotion", "--threads", "1", "--seconds", "0.2", "--rounds", "1",
                                             "--batch", "32", "--json", str(out)])
    assert cpu_model() in r.stdout and "| deep_emotion | 1 | single (batch 1) |" in r.stdout, r.stdout
    data = json.loads(out.read_text())
    rows = data["results"]
    assert {row["workload"] for row in rows} >= {"single", "batched"}, rows
    for row in rows:
        assert row["eager"]["best_wall_faces_s"] > 0 and row["optimised"]["best_wall_faces_s"] > 0
        assert row["max_abs_logit_diff"] < 1e-3 and row["max_abs_proba_diff"] < 1e-4
    for row in rows:
        if row["plan"]["native_proba"]:  # with the C++ kernel, the TorchScript graphs are timed beside it
            assert row["torchscript"]["best_wall_faces_s"] > 0 and "without the C++ kernel" in r.stdout


def test_packed_speed_times_both_variants_and_projects_the_grid(tmp_path):
    out = tmp_path / "packed_speed.json"
    r = run_benchmark("packed_speed.py", ["--k", "2", "--batch", "16", "--steps", "1", "--warmup", "1", "--rounds", "2", "--device", "cpu", "--json", str(out)])
    assert cpu_model() in r.stdout and "separate/packed = " in r.stdout and "study grid (20 x 200 epochs" in r.stdout, r.stdout
    data = json.loads(out.read_text())
    assert set(data["median_step_s"]) == {"separate", "packed", "packed_cl"} and all(len(v) == 2 for v in data["step_s"].values())
    assert data["separate_over_packed"] == data["median_step_s"]["separate"] / data["median_step_s"]["packed"]
