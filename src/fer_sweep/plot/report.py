"""The sweep report: statistics, figures and tables of one or more sweep folders, and ``report.md``.

:func:`analyse` computes everything from collected jobs (no files written); :func:`write_report`
writes the figures (PNG and PDF), the tables (Markdown and CSV) and ``report.md``, atomically.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fer_sweep.io import atomic_write_text
from fer_sweep.plot import figures as F
from fer_sweep.plot import tables as T
from fer_sweep.plot.style import group_colors
from fer_sweep.sweep import stats
from fer_sweep.sweep.plan import never_started_lines
from fer_sweep.sweep.val_split import short_test_name, split_words
from fer_sweep.sweep.collect import Job
from fer_sweep.sweep.synthetic import is_synthetic

FIGURE_DIR = "figures"
TABLES = ("group_summary", "milestones", "comparisons", "jobs")
"""Table stems: each written as ``<stem>.csv`` and ``<stem>.md``."""
REPORT_FILE = "report.md"


@dataclass
class Analysis:
    """Everything the report shows, computed from the jobs."""

    jobs: list[Job]
    key: tuple[str, ...]
    groups: dict[str, list[Job]]
    summaries: list[stats.GroupSummary]
    milestones: dict[str, dict[int, stats.Estimate]]
    comparisons: list[stats.Comparison]
    colors: dict[str, str]
    sources: list[str] = field(default_factory=list)
    val_source: str | None = None
    """What val is, in words (:func:`fer_sweep.sweep.val_split.split_words`); ``None``: unknown."""
    test_source: str | None = None
    """What test is, in words (:func:`fer_sweep.sweep.val_split.split_words`); ``None``: unknown."""
    notes: list[str] = field(default_factory=list)
    """What a reader must know to trust the numbers: repeated seeds, diverged runs, planned jobs never started."""

    @property
    def test_name(self) -> str:
        """"PrivateTest", or "test" when the jobs tested on something else or do not say."""
        return short_test_name(self.test_source)

    @property
    def group_name(self) -> str:
        return ", ".join(self.key)

    @property
    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if stats.is_unfinished(j)]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if stats.is_failed(j)]

    @property
    def diverged(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "diverged"]

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if stats.is_completed(j)]

    @property
    def synthetic(self) -> bool:
        return is_synthetic(self.jobs)


def analyse(jobs: Sequence[Job], group_by: str | Sequence[str] | None = None, metrics: Sequence[str] = tuple(stats.METRICS), alpha: float = stats.ALPHA, sources: Sequence[str | Path] = ()) -> Analysis:
    """Group the jobs (``group_by=None``: the overrides that vary, see
    :func:`fer_sweep.sweep.stats.infer_group_key`) and compute summaries, milestones and tests."""
    jobs = list(jobs)
    key = stats.normalise_key(group_by, jobs)
    groups = stats.group_jobs(jobs, key)
    words = split_words(jobs)
    return Analysis(
        jobs=jobs, key=key, groups=groups, summaries=stats.summarize(groups, metrics=metrics), milestones=stats.milestones(groups),
        comparisons=stats.pairwise(groups, metrics=metrics, alpha=alpha, test_name=short_test_name(words["test"])), colors=group_colors(groups),
        sources=[str(s) for s in sources], val_source=words["val"], test_source=words["test"],
        notes=never_started_lines(sources, jobs) + stats.repeated_seeds(groups) + stats.diverged_runs(groups),
    )


def _epochs_so_far(job: Job) -> str:
    done = max((r["epoch"] for r in job.metrics), default=0)
    total = job.results.get("max_epochs")
    return f"epoch {done}/{total}" if total else f"epoch {done}"


def _age(job: Job) -> str:
    """How long ago the job last wrote results.json/metrics.csv (a 'running' job silent for hours
    was probably killed without a chance to record it)."""
    times = [p.stat().st_mtime for p in (job.path / "results.json", job.path / "metrics.csv") if p.is_file()]
    if not times:
        return "nothing written yet"
    minutes = (time.time() - max(times)) / 60
    return f"last written {minutes:.0f} min ago" if minutes < 120 else f"last written {minutes / 60:.1f} h ago"


def unfinished_lines(a: Analysis) -> list[str]:
    return [f"{j.name} ({j.status}, {_epochs_so_far(j)}, {_age(j)}): {j.path}" for j in a.unfinished]


def failed_lines(a: Analysis) -> list[str]:
    return [f"{j.name} ({j.status}, {_epochs_so_far(j)}): {j.results.get('error') or 'no error recorded'}: {j.path}" for j in a.failed]


def _common(a: Analysis) -> str:
    """The settings all jobs share (model, optimizer, lr, epochs), in words."""
    parts = []
    for k in ("model", "optimizer", "lr", "max_epochs", "scheduler"):
        if k in a.key:
            continue
        vals = {stats.job_value(j, k) for j in a.jobs} - {None}
        if len(vals) == 1:
            parts.append(f"{k} {vals.pop()}")
    return ", ".join(parts)


def _val_words(a: Analysis) -> str:
    if a.val_source:
        return a.val_source
    return "the runs' validation split (which images it holds could not be told from the jobs' config.yaml and data copy)"


def _test_words(a: Analysis) -> str:
    if a.test_source == "PrivateTest":
        return "*PrivateTest* is the held-out test set"
    if a.test_source:
        return f"*{a.test_name}* is the held-out test set: {a.test_source}"
    return "*test* is the runs' held-out test set (which images it holds could not be told from the jobs' results, config.yaml and data copy)"


def report_markdown(a: Analysis, files: dict[str, Any] | None = None) -> str:
    """``report.md``: status, summary, tests, milestones, figures and the job list."""
    files = files or {}
    g = a.group_name
    lines = [f"# Sweep report: comparison by {g}", ""]
    if a.synthetic:
        lines += ["> **SYNTHETIC DEMO DATA**: these numbers are made up by `fer_sweep.sweep.synthetic`, not training results.", ""]
    lines += [f"Sweep folder{'s' if len(a.sources) > 1 else ''}: " + ", ".join(f"`{s}`" for s in a.sources) if a.sources else "", ""]
    common = _common(a)
    lines += [f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `python -m fer_sweep.plot`." + (f" Shared settings: {common}." if common else ""), ""]
    lines += [f"**{len(a.jobs)} jobs**: {len(a.completed)} completed, {len(a.unfinished)} unfinished, "
              f"{len(a.failed) - len(a.diverged)} failed, {len(a.diverged)} diverged.", ""]
    if a.notes:
        lines += ["## Read this first", ""] + [f"- {n}" for n in a.notes] + [""]
    if a.unfinished:
        lines += ["## Unfinished jobs", "", "Still running or not started: their curves so far are in the figures (a dot marks the last epoch); they are left out of the end-of-run statistics.", ""]
        lines += [f"- {s}" for s in unfinished_lines(a)] + [""]
    if a.failed:
        lines += ["## Failed and diverged jobs", "", "Left out of all statistics and means; their curves are drawn dotted.", ""]
        lines += [f"- {s}" for s in failed_lines(a)] + [""]
    lines += [
        f"## Summary per {g}", "",
        "Completed runs only. Accuracies in %, mean ± std over seeds (sample std) and the 95% t-interval of the mean. "
        f"*val* is {_val_words(a)}, the study's \"test\" accuracy; {_test_words(a)}, scored with the checkpoint of best val accuracy. "
        f"Best val accuracy is the maximum over epochs of the split that also picks that checkpoint, so it is optimistic "
        f"(most for noisy curves); {a.test_name} accuracy is the unbiased one. "
        "Epochs to 50%/55%: mean over the runs that reach that val accuracy (how many in brackets).", "",
        T.summary_markdown(a.summaries, g, a.test_name),
        "## Pairwise comparisons", "",
        "Paired t-test on per-seed differences when both groups ran the same seeds (a seed fixes the initial weights and data order), "
        "Welch's t-test otherwise; p-values Holm-adjusted over all pairs of one metric. Differences in percent points, ± is the standard error of the difference.", "",
        T.comparison_markdown(a.comparisons, test_name=a.test_name),
        "## Val accuracy at the study's milestones", "",
        "Val accuracy (%) at fixed epochs, mean ± std over seeds; completed and unfinished runs that reached the epoch (n where fewer); blank where no run got there.", "",
        T.milestone_markdown(a.milestones, g),
        "## Figures", "",
    ]
    for stem, title in F.FIGURES.items():
        png = files.get("figures", {}).get(stem, {}).get("png")
        rel = f"{FIGURE_DIR}/{stem}.png" if png is None else Path(png).relative_to(files["out"]).as_posix()
        lines += [f"### {title}", "", f"![{title}]({rel})", "", f"[PDF]({rel[:-4]}.pdf)", ""]
    lines += ["## Jobs", "", T.jobs_markdown(T.job_rows(a.groups), a.test_name)]
    lines += ["Tables as CSV: " + ", ".join(f"[{t}.csv]({t}.csv)" for t in TABLES), ""]
    return "\n".join(lines)


def write_report(a: Analysis, out_dir: str | Path) -> dict[str, Any]:
    """Write figures, tables and ``report.md`` under ``out_dir``; returns ``{"out", "figures", "tables", "report"}``."""
    out = Path(out_dir)
    files: dict[str, Any] = {"out": out, "figures": {}, "tables": {}}
    figs = F.all_figures(a.groups, colors=a.colors, val=a.val_source, test=a.test_source)
    for stem, fig in figs.items():
        paths = F.save_figure(fig, out / FIGURE_DIR / stem)
        files["figures"][stem] = {p.suffix[1:]: p for p in paths}
    g = a.group_name
    tables = {
        "group_summary": (T.summary_rows(a.summaries, g), None, T.summary_markdown(a.summaries, g, a.test_name)),
        "milestones": (T.milestone_rows(a.milestones, g), None, T.milestone_markdown(a.milestones, g)),
        "comparisons": (T.comparison_rows(a.comparisons), T.COMPARISON_COLUMNS, T.comparison_markdown(a.comparisons, test_name=a.test_name)),
        "jobs": (T.job_rows(a.groups), T.JOB_COLUMNS, T.jobs_markdown(T.job_rows(a.groups), a.test_name)),
    }
    for stem, (rows, cols, md) in tables.items():
        files["tables"][stem] = {
            "csv": atomic_write_text(out / f"{stem}.csv", T.to_csv(rows, cols)),
            "md": atomic_write_text(out / f"{stem}.md", md),
        }
    files["report"] = atomic_write_text(out / REPORT_FILE, report_markdown(a, files))
    return files
