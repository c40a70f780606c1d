"""The report's figures, as :class:`matplotlib.figure.Figure` objects (no pyplot, no GUI backend).

Each curve figure shows, per group, the mean over its runs as a thick line with a ± 1 std band and
every run (seed) as a thin line; unfinished runs end in a dot at the last epoch they reached, failed
and diverged runs are dotted and stay out of the mean.  Colours come from :mod:`.style`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fer_sweep.io import atomic_write
from fer_sweep.sweep import stats
from fer_sweep.sweep.collect import Job
from fer_sweep.plot.style import group_colors
from fer_sweep.sweep.val_split import short_test_name, source_of_test, val_source

FORMATS = ("png", "pdf")
FIGURES: dict[str, str] = {
    "val_acc": "Val accuracy per epoch",
    "train_acc": "Train accuracy per epoch",
    "loss": "Train and val loss per epoch",
    "lr": "Learning rate per epoch",
    "overfit_gap": "Train − val accuracy gap per epoch (overfitting)",
    "test_acc": "Test accuracy of the best checkpoint",
}
"""File stem -> title of every figure the report writes (each as PNG and PDF)."""

Curve = Callable[[Job], tuple[np.ndarray, np.ndarray]]


def _column(col: str, scale: float = 1.0) -> Curve:
    def f(job: Job):
        ep, v = stats.curve(job, col)
        return ep, v * scale
    return f


def _gap(job: Job):
    """Train minus val accuracy in points, at the epochs that have both."""
    e1, tr = stats.curve(job, "train_acc")
    e2, va = stats.curve(job, "val_acc")
    common, i1, i2 = np.intersect1d(e1, e2, return_indices=True)
    return common, 100 * (tr[i1] - va[i2])


def _style_axes(ax, xlabel: str = "epoch", ylabel: str = "") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _draw_curves(ax, groups: dict[str, Sequence[Job]], colors: dict[str, str], curve: Curve, logy: bool = False) -> dict[str, bool]:
    """Seeds thin, mean thick with a ± std band; returns which special run kinds were drawn."""
    drawn = {"unfinished": False, "failed": False}
    for label, jobs in groups.items():
        color = colors[label]
        use = [j for j in jobs if j.status in stats.CURVE_STATUSES]
        for j in jobs:
            ep, v = curve(j)
            if logy:
                ok = v > 0
                ep, v = ep[ok], v[ok]
            if not len(ep):
                continue
            if stats.is_failed(j):
                ax.plot(ep, v, color=color, lw=0.9, ls=":", alpha=0.8, zorder=1)
                drawn["failed"] = True
                continue
            ax.plot(ep, v, color=color, lw=0.6, alpha=0.35, zorder=1)
            if stats.is_unfinished(j):
                ax.plot(ep[-1:], v[-1:], "o", color=color, ms=4, zorder=3)
                drawn["unfinished"] = True
        band = stats.mean_curve(use, "", transform=curve)
        if not len(band.epochs):
            continue
        mean, std, eps = band.mean, band.std, band.epochs
        if logy:  # keep the band on the axis: never below the smallest positive value of a run
            ok = mean > 0
            mean, std, eps = mean[ok], std[ok], eps[ok]
        lo, hi = mean - std, mean + std
        if logy:
            lo = np.where(lo > 0, lo, mean)
        has = np.isfinite(std)
        ax.fill_between(eps, np.where(has, lo, mean), np.where(has, hi, mean), color=color, alpha=0.18, lw=0, zorder=0)
        ax.plot(eps, mean, color=color, lw=2.0, zorder=2)
    if logy:
        ax.set_yscale("log")
    return drawn


def _cut_log_axis(ax, decades: float = 7.0) -> None:
    """Keep a log axis readable: cut it ``decades`` below its top value (StepLR's lr falls to ~1e-22
    over 200 epochs and would squash every other schedule), and say so on the axis."""
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] or [np.zeros(0)])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if not len(ys) or ys.max() / ys.min() <= 10 ** (decades + 0.5):
        return
    floor = ys.max() / 10 ** decades
    ax.set_ylim(floor / 1.5, ys.max() * 2)
    ax.text(0.99, 0.015, f"axis cut at {floor:.0e}: lower values continue below", transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.4")


def _legend(target, groups: dict[str, Sequence[Job]], colors: dict[str, str], drawn: dict[str, bool], fig_level: bool = False) -> None:
    """Legend outside the plotting area (right), so it never hides data."""
    handles = []
    for label, jobs in groups.items():
        n = sum(j.status in stats.CURVE_STATUSES and bool(j.metrics) for j in jobs)
        run = sum(stats.is_unfinished(j) and bool(j.metrics) for j in jobs)
        text = f"{label} (n={n}" + (f", {run} unfinished" if run else "") + ")"
        handles.append(Line2D([], [], color=colors[label], lw=2.0, label=text))
    handles.append(Line2D([], [], color="none", label=""))
    handles.append(Line2D([], [], color="0.3", lw=2.0, label="mean over seeds"))
    handles.append(Patch(color="0.3", alpha=0.18, label="± 1 std"))
    handles.append(Line2D([], [], color="0.3", lw=0.6, alpha=0.6, label="single seed"))
    if drawn.get("unfinished"):
        handles.append(Line2D([], [], color="0.3", marker="o", ls="none", ms=4, label="unfinished: last epoch so far"))
    if drawn.get("failed"):
        handles.append(Line2D([], [], color="0.3", lw=0.9, ls=":", label="failed/diverged (not in mean)"))
    kw = dict(handles=handles, frameon=False, fontsize=9, loc="upper left")
    if fig_level:
        target.legend(bbox_to_anchor=(1.0, 0.93), **kw)
    else:
        target.legend(bbox_to_anchor=(1.02, 1.0), borderaxespad=0, **kw)


def _title(fig: Figure, title: str, note: str = "") -> None:
    fig.suptitle(title, fontsize=13, fontweight="bold", x=0.02, ha="left")
    if note:
        fig.text(0.02, 0.935, note, fontsize=9, color="0.35", ha="left", va="top")


def _empty(ax, text: str = "no data yet", keep_x: bool = False) -> None:
    ax.set_yticks([])
    if not keep_x:
        ax.set_xticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=12)


def _note(groups: dict[str, Sequence[Job]], extra: str = "") -> str:
    jobs = [j for js in groups.values() for j in js]
    unfinished = sum(stats.is_unfinished(j) for j in jobs)
    parts = [extra] if extra else []
    if unfinished:
        parts.append(f"sweep in progress: {unfinished} of {len(jobs)} runs unfinished")
    return "; ".join(parts)


def curve_figure(groups: dict[str, Sequence[Job]], column: str, title: str, ylabel: str, scale: float = 100.0, logy: bool = False, note: str = "", colors: dict[str, str] | None = None) -> Figure:
    """One metrics.csv column against epoch, per group (mean ± std band, seeds as thin lines)."""
    colors = colors or group_colors(groups)
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    ax = fig.add_subplot()
    curve = _gap if column == "overfit_gap" else _column(column, scale)
    drawn = _draw_curves(ax, groups, colors, curve, logy=logy)
    _style_axes(ax, "epoch", ylabel)
    if not ax.has_data():
        _empty(ax)
    else:
        _legend(ax, groups, colors, drawn)
    if column == "overfit_gap":
        ax.axhline(0, color="0.2", lw=0.8)
    if logy and ax.has_data():
        _cut_log_axis(ax)
    _title(fig, title, _note(groups, note))
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.91))
    return fig


def val_acc_figure(groups, colors=None, val: str | None = "auto") -> Figure:
    """``val``: what val is, in words (default: :func:`val_source` of the jobs; ``None``: unknown)."""
    source = val_source(j for js in groups.values() for j in js) if val == "auto" else val
    note = f"val = {source}, the study's 'test' accuracy" if source else "val: the runs' validation split, the study's 'test' accuracy"
    return curve_figure(groups, "val_acc", FIGURES["val_acc"], "val accuracy (%)", note=note, colors=colors)


def train_acc_figure(groups, colors=None) -> Figure:
    return curve_figure(groups, "train_acc", FIGURES["train_acc"], "train accuracy (%)", colors=colors)


def lr_figure(groups, colors=None) -> Figure:
    return curve_figure(groups, "lr", FIGURES["lr"], "learning rate (log scale)", scale=1.0, logy=True, note="lr in use during each epoch", colors=colors)


def gap_figure(groups, colors=None) -> Figure:
    return curve_figure(groups, "overfit_gap", FIGURES["overfit_gap"], "train − val accuracy (percent points)", note="above 0: the network fits the training set better than unseen images (overfitting)", colors=colors)


def loss_figure(groups: dict[str, Sequence[Job]], colors: dict[str, str] | None = None) -> Figure:
    """Train loss and val loss side by side, same y range."""
    colors = colors or group_colors(groups)
    fig = Figure(figsize=(13, 5.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    drawn = {}
    for ax, col, name in ((ax1, "train_loss", "train loss"), (ax2, "val_loss", "val loss")):
        d = _draw_curves(ax, groups, colors, _column(col))
        drawn = {k: drawn.get(k, False) or d[k] for k in d}
        _style_axes(ax, "epoch", "cross-entropy loss" if ax is ax1 else "")
        ax.set_title(name, fontsize=11)
        if not ax.has_data():
            _empty(ax)
    ax2.tick_params(labelleft=True)
    if ax1.has_data() or ax2.has_data():
        _legend(ax2, groups, colors, drawn)
    _title(fig, FIGURES["loss"], _note(groups, "mean cross-entropy per image"))
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.91))
    return fig


def test_acc_figure(groups: dict[str, Sequence[Job]], metric: str = "test_acc_best", colors: dict[str, str] | None = None, rng: int = 0, test: str | None = "auto") -> Figure:
    """Box plot per group of a completed-run metric, every seed as a labelled dot, mean as a diamond.
    ``test``: what the test split is, in words (default: :func:`source_of_test` of the jobs;
    ``None``: unknown, a neutral "test")."""
    colors = colors or group_colors(groups)
    source = source_of_test(j for js in groups.values() for j in js) if test == "auto" else test
    name = short_test_name(source)
    fig = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2.5), 5.2), layout="constrained")
    ax = fig.add_subplot()
    gen = np.random.default_rng(rng)
    labels = list(groups)
    any_data = False
    for i, label in enumerate(labels):
        done = [j for j in groups[label] if stats.is_completed(j)]
        pts = [(stats.job_seed(j), stats.job_metric(j, metric)) for j in done]
        pts = [(s, 100 * v) for s, v in pts if v is not None]
        if not pts:
            ax.text(i, 0.5, "no completed\nrun", transform=ax.get_xaxis_transform(), ha="center", va="center", color="0.5", fontsize=9)
            continue
        any_data = True
        vals = np.array([v for _, v in pts])
        c = colors[label]
        if len(vals) > 1:  # box (quartiles, median) left of centre, the seeds as dots right of it
            ax.boxplot([vals], positions=[i - 0.13], widths=0.26, showfliers=False, patch_artist=True, medianprops=dict(color=c, lw=1.5),
                       boxprops=dict(facecolor=c, alpha=0.18, edgecolor=c), whiskerprops=dict(color=c), capprops=dict(color=c))
        ax.scatter([i - 0.13], [vals.mean()], marker="D", color="white", s=34, zorder=4, edgecolor=c, linewidth=1.4)
        x = i + 0.08 + np.linspace(0, 0.16, len(vals)) + gen.uniform(-0.01, 0.01, len(vals))  # in seed order
        ax.scatter(x, vals, color=c, s=28, zorder=3, edgecolor="white", linewidth=0.6)
        for xi, (s, v) in zip(x, pts):
            if s is not None:
                ax.annotate(str(s), (xi, v), xytext=(5, 0), textcoords="offset points", fontsize=7, color="0.35", va="center")
        est = stats.describe(vals)
        text = f"{est.mean:.1f}" + (f" ± {est.std:.1f}" if est.n > 1 else "") + f"\nn={est.n}"
        ax.annotate(text, (i, 1.0), xycoords=("data", "axes fraction"), xytext=(0, -2), textcoords="offset points", ha="center", va="top", fontsize=8.5, color=c)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if any_data:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.18 * (hi - lo))  # room for the mean ± std labels
    _style_axes(ax, "", f"{stats.metric_words(metric, name)} (%)")
    ax.grid(False, axis="x")
    handles = [Line2D([], [], marker="o", ls="none", color="0.3", label="one seed (number = seed)"),
               Line2D([], [], marker="D", ls="none", color="white", markeredgecolor="0.3", markeredgewidth=1.4, label="mean"),
               Patch(facecolor="0.3", alpha=0.18, edgecolor="0.3", label="box: quartiles, line: median")]
    ax.legend(handles=handles, frameon=False, fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if not any_data:
        _empty(ax, "no completed run yet", keep_x=True)
    title = f"{stats.metric_words(metric, name)} of the best checkpoint" if metric == "test_acc_best" else stats.metric_words(metric, name)
    said = f"test = {source}; " if source else "test: the runs' test split; "
    _title(fig, title, _note(groups, said + "completed runs only; labels: mean ± std over seeds"))
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.91))
    return fig


BUILDERS: dict[str, Callable[..., Figure]] = {
    "val_acc": val_acc_figure,
    "train_acc": train_acc_figure,
    "loss": loss_figure,
    "lr": lr_figure,
    "overfit_gap": gap_figure,
    "test_acc": test_acc_figure,
}


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 150) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically; returns the paths."""
    out = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        meta = {"Software": None} if fmt == "png" else {"CreationDate": None, "Producer": None}
        out.append(atomic_write(path, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=dpi, metadata=meta)))
    return out


def all_figures(groups: dict[str, Sequence[Job]], colors: dict[str, str] | None = None, val: str | None = "auto", test: str | None = "auto") -> dict[str, Figure]:
    """Every report figure, by file stem (see :data:`FIGURES`); ``val`` as in :func:`val_acc_figure`,
    ``test`` as in :func:`test_acc_figure`."""
    colors = colors or group_colors(groups)
    split_words = {"val_acc": {"val": val}, "test_acc": {"test": test}}
    return {name: build(groups, colors=colors, **split_words.get(name, {})) for name, build in BUILDERS.items()}
