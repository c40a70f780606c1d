"""notebooks/scheduler_comparison.ipynb runs top to bottom (nbclient): on the synthetic fallback, on a
given sweep folder (FER_SWEEP_REPORT_DIR) and, when committed, on docs/reference_sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
from fer_sweep.sweep.synthetic import REFERENCE_SWEEP, REPORT_DIR_ENV, find_sweep  # noqa: E402

NOTEBOOK = PROJECT_ROOT / "notebooks" / "scheduler_comparison.ipynb"
FIGURES = 6


def run_notebook(cwd: Path) -> tuple[str, int]:
    """Execute the notebook in ``cwd``; returns (all text output, number of PNG outputs)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text.append(data.get("text/markdown", ""))
            images += "image/png" in data
    return "\n".join(text), images


@pytest.fixture()
def nb_env(tmp_path, monkeypatch):
    """A clean environment for the kernel: temp files and the report under tmp_path."""
    monkeypatch.delenv(REPORT_DIR_ENV, raising=False)
    monkeypatch.delenv("FER_SWEEP_GROUP_BY", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("FER_SWEEP_REPORT_OUT", str(tmp_path / "report"))
    return tmp_path


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_synthetic_fallback(nb_env):
    cwd = nb_env / "elsewhere"  # no docs/reference_sweep above it
    cwd.mkdir()
    text, images = run_notebook(cwd)
    assert "sweep folder (synthetic)" in text and "SYNTHETIC DEMO DATA" in text
    assert "20 jobs grouped by scheduler: 18 completed, 1 unfinished, 1 failed" in text
    assert "cosine beats step on PrivateTest accuracy" in text and "significant at 5%" in text
    assert images == FIGURES
    assert (nb_env / "report" / "report.md").is_file() and (nb_env / "report" / "figures" / "val_acc.pdf").is_file()
    assert list(nb_env.glob("fer_sweep_synthetic_*/multirun/synthetic-demo/scheduler=cosine,seed=0/results.json"))


def test_notebook_on_given_folder(nb_env, monkeypatch):
    from test_report import COSINE, STEP, _history, write_job

    sweep = nb_env / "multirun" / "2025-01-01" / "12-00-00_abcd"
    for s in range(5):
        write_job(sweep, "cosine", s, history=_history(60, 0.6, cross50=20, cross55=30), test_acc=COSINE[s])
        write_job(sweep, "step", s, history=_history(60, 0.52, cross50=12), test_acc=STEP[s])
    write_job(sweep, "plateau", 0, status="failed", history=_history(2, 0.6), error="ValueError: boom")
    monkeypatch.setenv(REPORT_DIR_ENV, str(sweep))
    text, images = run_notebook(nb_env)
    assert f"sweep folder (env): {sweep}" in text and "SYNTHETIC" not in text
    assert "11 jobs grouped by scheduler: 10 completed, 0 unfinished, 1 failed" in text
    assert "ValueError: boom" in text
    assert "cosine beats step on PrivateTest accuracy by 4.8" in text
    assert "plateau: no completed run yet" in text
    assert images == FIGURES


@pytest.mark.skipif(not (PROJECT_ROOT / REFERENCE_SWEEP).is_dir(), reason=f"no committed reference results at {REFERENCE_SWEEP}")
def test_notebook_on_reference_sweep(nb_env):
    text, images = run_notebook(PROJECT_ROOT / "notebooks")
    assert "sweep folder (reference)" in text and images == FIGURES


def test_find_sweep_order(tmp_path, monkeypatch):
    monkeypatch.delenv(REPORT_DIR_ENV, raising=False)
    repo = tmp_path / "repo"
    (repo / REFERENCE_SWEEP).mkdir(parents=True)
    (repo / "notebooks").mkdir()
    assert find_sweep(repo / "notebooks") == ((repo / REFERENCE_SWEEP).resolve(), "reference")
    monkeypatch.setenv(REPORT_DIR_ENV, str(tmp_path))
    assert find_sweep(repo / "notebooks") == (tmp_path, "env")
    monkeypatch.setenv(REPORT_DIR_ENV, str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="typo"):
        find_sweep()
    monkeypatch.delenv(REPORT_DIR_ENV)
    path, source = find_sweep(tmp_path / "nowhere", tmp_root=tmp_path, schedulers=("cosine",), seeds=(0,), max_epochs=3)
    assert source == "synthetic" and (path / "SYNTHETIC.md").is_file() and os.path.commonpath([path, tmp_path]) == str(tmp_path)
