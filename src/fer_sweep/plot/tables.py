"""The report's tables as rows (for CSV) and Markdown.  Accuracies in percent, as ``*_pct`` columns."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from fer_sweep.sweep import stats
from fer_sweep.sweep.collect import Job


def _num(x: float | None, digits: int = 4) -> Any:
    """A number for CSV: rounded, blank when missing or undefined."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return round(float(x), digits)


def _sig(x: float | None, digits: int = 4) -> Any:
    """A number for CSV to ``digits`` significant figures (p-values can be tiny)."""
    if x is None or not math.isfinite(x):
        return ""
    return float(f"{x:.{digits}g}")


def _pm(est: stats.Estimate, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` (just the mean when n=1, blank when n=0)."""
    if est.n == 0:
        return ""
    if est.n == 1:
        return f"{scale * est.mean:.{digits}f}"
    return f"{scale * est.mean:.{digits}f} ± {scale * est.std:.{digits}f}"


def _ci(est: stats.Estimate, scale: float = 100.0, digits: int = 1) -> str:
    if est.n < 2:
        return ""
    return f"[{scale * est.ci_low:.{digits}f}, {scale * est.ci_high:.{digits}f}]"


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` like ``"lrr"`` (l/r/c per column, default left then right)."""
    align = align or ("l" + "r" * (len(header) - 1))
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    esc = lambda v: str("" if v is None else v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- per-group summary

def summary_rows(summaries: Sequence[stats.GroupSummary], group_name: str = "group") -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        r: dict[str, Any] = {group_name: s.label, "jobs": s.jobs, "completed": s.completed, "unfinished": s.unfinished, "failed": s.failed, "diverged": s.diverged, "seeds": " ".join(map(str, s.seeds))}
        for m, est in s.metrics.items():
            r.update({f"{m}_n": est.n, f"{m}_mean_pct": _num(100 * est.mean, 3), f"{m}_std_pct": _num(100 * est.std, 3),
                      f"{m}_ci95_low_pct": _num(100 * est.ci_low, 3), f"{m}_ci95_high_pct": _num(100 * est.ci_high, 3)})
        r.update(best_epoch_mean=_num(s.best_epoch.mean, 2), best_epoch_std=_num(s.best_epoch.std, 2))
        for thr, reach in s.reach.items():
            k = f"epochs_to_{round(100 * thr)}pct"
            r.update({f"{k}_mean": _num(reach.epochs.mean, 2), f"{k}_std": _num(reach.epochs.std, 2), f"{k}_reached": reach.reached, f"{k}_runs": reach.runs})
        rows.append(r)
    return rows


def _reach_cell(reach: stats.Reach) -> str:
    if reach.runs == 0:
        return ""
    if reach.reached == 0:
        return f"never (0/{reach.runs})"
    return f"{_pm(reach.epochs, 1.0)} ({reach.reached}/{reach.runs})"


def summary_markdown(summaries: Sequence[stats.GroupSummary], group_name: str = "group", test_name: str = "test") -> str:
    header = [group_name, "completed / runs"]
    metrics = list(summaries[0].metrics) if summaries else list(stats.METRICS)
    for m in metrics:
        header += [f"{stats.metric_words(m, test_name)} (%)", "95% CI"]
    header += ["epoch of best"] + [f"epochs to {round(100 * t)}%" for t in (summaries[0].reach if summaries else stats.THRESHOLDS)]
    rows = []
    for s in summaries:
        runs = f"{s.completed} / {s.jobs}"
        crashed = s.failed - s.diverged
        extra = [f"{s.unfinished} unfinished" if s.unfinished else "", f"{crashed} failed" if crashed else "",
                 f"{s.diverged} diverged" if s.diverged else ""]
        extra = [e for e in extra if e]
        row = [s.label, runs + (f" ({', '.join(extra)})" if extra else "")]
        for m in metrics:
            row += [_pm(s.metrics[m]), _ci(s.metrics[m])]
        row += [_pm(s.best_epoch, 1.0)] + [_reach_cell(r) for r in s.reach.values()]
        rows.append(row)
    return to_markdown(header, rows, "ll" + "r" * (len(header) - 2))


# --------------------------------------------------------------------------- milestones

def milestone_rows(table: dict[str, dict[int, stats.Estimate]], group_name: str = "group") -> list[dict[str, Any]]:
    rows = []
    for label, cells in table.items():
        r: dict[str, Any] = {group_name: label}
        for e, est in cells.items():
            r.update({f"val_acc_e{e}_mean_pct": _num(100 * est.mean, 3), f"val_acc_e{e}_std_pct": _num(100 * est.std, 3), f"val_acc_e{e}_n": est.n})
        rows.append(r)
    return rows


def milestone_markdown(table: dict[str, dict[int, stats.Estimate]], group_name: str = "group") -> str:
    epochs = list(next(iter(table.values()))) if table else list(stats.MILESTONE_EPOCHS)
    header = [group_name] + [f"epoch {e}" for e in epochs]
    rows = []
    for label, cells in table.items():
        full = max((est.n for est in cells.values()), default=0)
        row = [label]
        for e in epochs:
            est = cells[e]
            cell = _pm(est)
            if cell and est.n < full:
                cell += f" (n={est.n})"
            row.append(cell)
        rows.append(row)
    return to_markdown(header, rows)


# --------------------------------------------------------------------------- comparisons

COMPARISON_COLUMNS = ("metric", "a", "b", "test", "n_a", "n_b", "n_pairs", "diff_pts", "se_pts", "ci95_low_pts", "ci95_high_pts", "t", "df", "p", "p_holm", "significant", "reason", "sentence")


def comparison_rows(comparisons: Sequence[stats.Comparison]) -> list[dict[str, Any]]:
    return [{
        "metric": c.metric, "a": c.a, "b": c.b, "test": c.test or "", "n_a": c.n_a, "n_b": c.n_b, "n_pairs": c.n_pairs,
        "diff_pts": _num(100 * c.diff, 3), "se_pts": _num(100 * c.se, 3), "ci95_low_pts": _num(100 * c.ci_low, 3), "ci95_high_pts": _num(100 * c.ci_high, 3),
        "t": _num(c.t, 4), "df": _num(c.df, 2), "p": _sig(c.p), "p_holm": _sig(c.p_holm),
        "significant": "" if c.significant is None else str(c.significant).lower(), "reason": c.reason, "sentence": c.sentence,
    } for c in comparisons]


def _pcell(p: float) -> str:
    if not math.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_markdown(comparisons: Sequence[stats.Comparison], alpha: float = stats.ALPHA, test_name: str = "test") -> str:
    """Per metric: the sentences as a list, then a table (difference = first - second, points)."""
    out = []
    for metric in dict.fromkeys(c.metric for c in comparisons):
        cs = [c for c in comparisons if c.metric == metric]
        m = sum(c.test is not None for c in cs)
        over = "the 1 test" if m == 1 else f"the {m} tests"
        out.append(f"**{stats.metric_words(metric, test_name)}** (Holm correction over {over} of this metric)\n")
        out += [f"- {c.sentence}" for c in cs]
        out.append("")
        rows = []
        for c in cs:  # oriented winner - loser, so differences read as positive
            sign = -1.0 if (math.isfinite(c.diff) and c.diff < 0) else 1.0
            d, lo, hi = 100 * sign * c.diff, 100 * sign * (c.ci_high if sign < 0 else c.ci_low), 100 * sign * (c.ci_low if sign < 0 else c.ci_high)
            first, second = (c.b, c.a) if sign < 0 else (c.a, c.b)
            diff = f"{d:+.1f} ± {100 * c.se:.1f}" if c.test else (f"{d:+.1f}" if math.isfinite(d) else "")
            ci = f"[{lo:+.1f}, {hi:+.1f}]" if math.isfinite(c.ci_low) else ""
            verdict = "no test" if c.test is None else ("significant" if c.significant else "not significant")
            runs = f"{c.n_b} / {c.n_a}" if sign < 0 else f"{c.n_a} / {c.n_b}"
            rows.append([f"{first} − {second}", c.test or "", runs, diff, ci, _pcell(c.p), _pcell(c.p_holm), verdict])
        out.append(to_markdown(["difference", "test", "runs", "points (± SE)", "95% CI", "p", "Holm p", f"at {100 * alpha:g}%"], rows, "lllrrrrl"))
    return "\n".join(out) if out else "No pairs of groups to compare.\n"


# --------------------------------------------------------------------------- jobs

JOB_COLUMNS = ("job", "group", "seed", "status", "epochs", "max_epochs", "best_val_acc_pct", "final_val_acc_pct", "test_acc_best_pct", "error", "path")


def job_rows(groups: dict[str, Sequence[Job]]) -> list[dict[str, Any]]:
    rows = []
    for label, jobs in groups.items():
        for j in jobs:
            epochs = j.results.get("epochs_run") or (max((r["epoch"] for r in j.metrics), default=0) if j.metrics else 0)
            pct = lambda k: _num(None if stats.job_metric(j, k) is None else 100 * stats.job_metric(j, k), 3)  # noqa: E731
            rows.append({
                "job": j.name, "group": label, "seed": stats.job_seed(j), "status": j.status, "epochs": epochs, "max_epochs": j.results.get("max_epochs", ""),
                "best_val_acc_pct": pct("best_val_acc") if j.metrics or j.results.get("best_val_acc") is not None else "",
                "final_val_acc_pct": pct("final_val_acc") if j.metrics or j.results.get("final_val_acc") is not None else "",
                "test_acc_best_pct": pct("test_acc_best"), "error": j.results.get("error") or "", "path": str(j.path),
            })
    return rows


def jobs_markdown(rows: Sequence[dict[str, Any]], test_name: str = "test") -> str:
    header = ["job", "status", "epochs", "best val acc (%)", f"{test_name} acc (%)", "error"]
    body = [[r["job"], r["status"], f"{r['epochs']}/{r['max_epochs']}" if r["max_epochs"] != "" else r["epochs"],
             f"{r['best_val_acc_pct']:.2f}" if r["best_val_acc_pct"] != "" else "", f"{r['test_acc_best_pct']:.2f}" if r["test_acc_best_pct"] != "" else "", r["error"]] for r in rows]
    return to_markdown(header, body, "llrrrl")
