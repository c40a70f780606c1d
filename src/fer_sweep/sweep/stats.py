"""Statistics of a sweep: per-group summaries, the study's milestone table, pairwise tests.

Pure functions on the jobs of :func:`fer_sweep.sweep.collect.collect`.  Jobs are grouped by a key
(default: the scheduler, or whatever override varies across the jobs); per group they give
mean ± std and a 95% t-interval of the end-of-run accuracies, the epoch of the best, how fast runs
reach 50% and 55% val accuracy, and the val accuracy at fixed epochs.  Differences between groups
are tested with a paired t-test when both groups ran the same seeds (same seed = same initial
weights and data order, so per-seed differences remove the seed's own effect) and with Welch's
t-test otherwise; p-values are Holm-adjusted over all pairs of one metric.

Conventions: accuracies are fractions (0-1) as in ``results.json``; std is the sample standard
deviation (ddof=1); sentences give differences in percent points.  End-of-run statistics use
completed jobs only; curves and milestones also use unfinished jobs (a running job counts at the
epochs it has reached) and leave out failed and diverged ones.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats as sps

from fer_sweep.results import best_epoch as _best_epoch_of
from fer_sweep.sweep.collect import Job

SCHEDULER_ORDER = ("step", "multistep", "cosine", "plateau", "none")
METRICS: dict[str, str] = {
    "best_val_acc": "best val accuracy",
    "final_val_acc": "final val accuracy",
    "test_acc_best": "PrivateTest accuracy",
}
"""End-of-run metrics summarised per group (results.json key -> words)."""


def metric_words(metric: str, test_name: str = "test") -> str:
    """How reports name ``metric``, the test split called ``test_name``: "PrivateTest", or "test"
    when the jobs tested on something else (:func:`fer_sweep.sweep.val_split.short_test_name`)."""
    return METRICS.get(metric, metric).replace("PrivateTest", test_name)

MILESTONE_EPOCHS = (10, 15, 25, 35, 50, 100, 200)
THRESHOLDS = (0.50, 0.55)
CONFIDENCE = 0.95
ALPHA = 0.05
UNFINISHED = ("running", "interrupted", "pending")
FAILED = ("failed", "diverged")
CURVE_STATUSES = ("completed",) + UNFINISHED
"""Statuses whose curves enter group means and milestones."""


# --------------------------------------------------------------------------- job keys and groups

def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets/braces/quotes (Hydra's override_dirname joins with ',')."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p]


def _parse_overrides(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if eq:
            out[key.lstrip("+~")] = value
    return out


def job_overrides(job: Job) -> dict[str, str]:
    """The job's command-line overrides as ``{key: value}`` strings.

    Read from ``.hydra/overrides.yaml`` when present, else from ``results.json``'s ``overrides``,
    else from the job folder's name (``scheduler=cosine,seed=3``).
    """
    f = job.path / ".hydra" / "overrides.yaml"
    if f.is_file():
        try:
            import yaml

            items = yaml.safe_load(f.read_text()) or []
            if isinstance(items, list):
                return _parse_overrides(items)
        except Exception:  # a half-written or odd file: fall back to the folder name
            pass
    if job.results.get("overrides"):
        return _parse_overrides(job.results["overrides"])
    return _parse_overrides(_split_top(job.name)) if "=" in job.name else {}


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def canonical_value(value: Any) -> str:
    """One spelling per number: ``0.001``, ``1e-3`` and ``1.0e-03`` all give ``0.001`` (so they
    group together); integers, names and other strings are kept as written."""
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if isinstance(value, str) and _DECIMAL.fullmatch(text.strip()) and not text.strip().lstrip("+-").isdigit():
        return f"{float(text):g}"
    return text


RESULT_ALIASES = {"lr": "optimizer.lr", "max_epochs": "trainer.max_epochs"}
"""results.json keys that record a config value under a short name (see ``fer_sweep.train``)."""
_CONFIG_NAMES = {**RESULT_ALIASES, **{v: k for k, v in RESULT_ALIASES.items()}}


def _scalar(value: Any) -> Any:
    return None if isinstance(value, (list, dict)) else value


def _config_value(job: Job, key: str) -> Any:
    """``key`` (dotted) in the job's resolved ``config.yaml``, which every started job has: the
    value a job ran with even when it was never overridden (the default)."""
    f = job.path / "config.yaml"
    try:
        node: Any = _load_config(str(f), f.stat().st_mtime_ns)
    except OSError:
        return None
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return _scalar(node)


@functools.lru_cache(maxsize=4096)
def _load_config(path: str, mtime_ns: int) -> Any:
    """A job's config.yaml, read once per version of the file (a report asks for many keys)."""
    try:
        import yaml

        return yaml.safe_load(Path(path).read_text())
    except Exception:  # unreadable or odd: unknown, as if absent
        return None


def job_value(job: Job, key: str) -> str | None:
    """The job's value of ``key``: a results.json key, else an override, else its resolved
    config.yaml; ``optimizer.lr`` and results.json's ``lr`` (likewise ``trainer.max_epochs`` and
    ``max_epochs``) are the same setting.  Numbers in one spelling (:func:`canonical_value`); ``None``
    when absent everywhere."""
    names = (key, _CONFIG_NAMES[key]) if key in _CONFIG_NAMES else (key,)
    overrides = None  # read .hydra/overrides.yaml only when results.json does not say
    for name in names:
        value = _scalar(job.results.get(name))
        if value is None:
            overrides = job_overrides(job) if overrides is None else overrides
            value = overrides.get(name)
        if value is not None:
            return canonical_value(value)
    for name in names:
        value = _config_value(job, name)
        if value is not None:
            return canonical_value(value)
    return None


def job_seed(job: Job) -> int | None:
    value = job_value(job, "seed")
    try:
        return int(float(value)) if value not in (None, "", "null", "None") else None
    except ValueError:
        return None


NOT_GROUPING = ("seed", "data.root", "data.cache_dir", "resume", "force", "hydra", "paths", "threads", "callbacks", "logger", "trainer.accelerator")
"""Overrides that never define a group: the seed, and where/how a job ran (as Hydra's job.override_dirname
leaves them out): a key equal to one of these or below it (``hydra.launcher.n_jobs``, ``hydra/launcher``).
``trainer.precision``, ``trainer.devices`` and ``debug`` change what a job computes, so they group."""


def _not_grouping(key: str, exclude: Iterable[str]) -> bool:
    return any(key == e or key.startswith((e + ".", e + "/")) for e in exclude)


def varying_keys(jobs: Sequence[Job], exclude: Iterable[str] = NOT_GROUPING) -> list[str]:
    """Override keys whose value differs between jobs (seed, paths and launcher settings excluded),
    in first-seen order."""
    exclude = tuple(exclude)
    values: dict[str, set] = {}
    per_job = [job_overrides(j) for j in jobs]
    for ov in per_job:
        for k, v in ov.items():
            values.setdefault(k, set()).add(canonical_value(v))
    for ov in per_job:  # a key missing from some jobs varies too
        for k in values:
            if k not in ov:
                values[k].add(None)
    return [k for k, v in values.items() if len(v) > 1 and not _not_grouping(k, exclude)]


_OUTCOME = re.compile(r"acc|f1|best_epoch|epochs_run|wall_time|error|checkpoint|synthetic")  # results, not settings


def available_keys(jobs: Sequence[Job]) -> list[str]:
    """Keys a job can be grouped by: scalar results.json values and overrides, overrides first."""
    keys: dict[str, None] = {}
    for j in jobs:
        keys.update(dict.fromkeys(job_overrides(j)))
    for j in jobs:
        keys.update(dict.fromkeys(k for k, v in j.results.items() if isinstance(v, (str, int, float)) and not _OUTCOME.search(k)))
    return list(keys)


def infer_group_key(jobs: Sequence[Job]) -> tuple[str, ...]:
    """The key(s) to group by: the overrides that vary across jobs, else ``scheduler``."""
    keys = varying_keys(jobs)
    if not keys:
        return ("scheduler",)
    if "scheduler" in keys:  # scheduler first, then the others as found
        keys = ["scheduler"] + [k for k in keys if k != "scheduler"]
    return tuple(keys)


def normalise_key(group_by: str | Sequence[str] | None, jobs: Sequence[Job]) -> tuple[str, ...]:
    """``None``/``"auto"`` -> :func:`infer_group_key`; ``"a,b"`` -> ``("a", "b")``."""
    if group_by is None or group_by == "auto":
        return infer_group_key(jobs)
    if isinstance(group_by, str):
        return tuple(k.strip() for k in group_by.split(",") if k.strip())
    return tuple(group_by)


def group_label(job: Job, key: Sequence[str]) -> str:
    """Label of the job's group: ``cosine`` for the scheduler, ``key=value`` for other keys."""
    parts = []
    for k in key:
        v = job_value(job, k)
        v = "unknown" if v is None else v
        parts.append(v if k == "scheduler" else f"{k}={v}")
    return ", ".join(parts)


def _natural(label: str) -> tuple:
    head = label.split(",")[0].split("=")[-1].strip()
    if head in SCHEDULER_ORDER:
        return (0, SCHEDULER_ORDER.index(head), label)
    try:
        return (1, float(head), label)
    except ValueError:
        return (2, 0.0, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)])


def group_jobs(jobs: Sequence[Job], group_by: str | Sequence[str] | None = "scheduler") -> dict[str, list[Job]]:
    """Jobs by group label, groups in a fixed order (step, multistep, cosine, plateau, none, then
    numeric, then alphabetical), jobs of a group by seed then name."""
    key = normalise_key(group_by, jobs)
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(group_label(job, key), []).append(job)
    ordered = sorted(groups, key=_natural)
    seed_key = lambda j: (job_seed(j) is None, job_seed(j) or 0, j.name)  # noqa: E731
    return {g: sorted(groups[g], key=seed_key) for g in ordered}


def repeated_seeds(groups: dict[str, Sequence[Job]]) -> list[str]:
    """One line per group in which a seed ran more than once among the completed jobs (two sweeps
    of the same grid given together, say): those runs are not independent draws of a new seed, and
    the group's comparisons become Welch's tests instead of paired ones."""
    lines = []
    for label, jobs in groups.items():
        by_seed: dict[int, list[Job]] = {}
        for j in jobs:
            if is_completed(j) and job_seed(j) is not None:
                by_seed.setdefault(job_seed(j), []).append(j)
        twice = {s: js for s, js in by_seed.items() if len(js) > 1}
        if twice:
            where = "; ".join(f"seed {s} in " + ", ".join(str(j.path) for j in js) for s, js in sorted(twice.items()))
            lines.append(f"{label}: {len(twice)} seed(s) ran more than once ({where}); its tests are Welch's, not paired, "
                         "and its n counts each run: give each sweep once, or group by a key that tells the runs apart")
    return lines


def diverged_runs(groups: dict[str, Sequence[Job]]) -> list[str]:
    """One line per group that lost runs to divergence: its statistics cover only the runs that
    survived, which flatters it (a scheduler that diverges on some seeds is worse than its mean)."""
    lines = []
    for label, jobs in groups.items():
        div = [j for j in jobs if j.status == "diverged"]
        if div:
            seeds = ", ".join(str(job_seed(j)) for j in div if job_seed(j) is not None)
            lines.append(f"{label}: {len(div)} of {len(jobs)} runs diverged{f' (seed {seeds})' if seeds else ''}; its statistics "
                         f"cover the others only, which flatters it, and its comparisons lose their pairing over seeds")
    return lines


# --------------------------------------------------------------------------- per-job numbers

def is_completed(job: Job) -> bool:
    return job.status == "completed"


def is_unfinished(job: Job) -> bool:
    return job.status not in ("completed",) + FAILED  # running, pending (no results yet)


def is_failed(job: Job) -> bool:
    return job.status in FAILED


def curve(job: Job, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of one ``metrics.csv`` column; non-finite values dropped."""
    if not job.metrics:
        return np.zeros(0, int), np.zeros(0)
    ep = np.array([r["epoch"] for r in job.metrics], dtype=int)
    val = np.array([r.get(column, math.nan) for r in job.metrics], dtype=float)
    ok = np.isfinite(val)
    return ep[ok], val[ok]


def value_at_epoch(job: Job, epoch: int, column: str = "val_acc") -> float | None:
    for r in job.metrics:
        if r["epoch"] == epoch:
            v = r.get(column)
            return float(v) if v is not None and math.isfinite(v) else None
    return None


def epochs_to_reach(job: Job, threshold: float, column: str = "val_acc") -> int | None:
    """First epoch (1-based) at which ``column`` is at least ``threshold``; ``None`` if never."""
    for r in sorted(job.metrics, key=lambda r: r["epoch"]):
        v = r.get(column)
        if v is not None and math.isfinite(v) and v >= threshold:
            return int(r["epoch"])
    return None


def job_metric(job: Job, metric: str) -> float | None:
    """An end-of-run number of the job; best epoch/val accuracy from metrics.csv if results lack it."""
    v = job.results.get(metric)
    if v is None and metric in ("best_val_acc", "best_epoch"):
        ep, acc = _best_epoch_of(job.metrics)
        v = acc if metric == "best_val_acc" else ep
    if v is None and metric == "final_val_acc" and job.metrics:
        v = job.metrics[-1].get("val_acc")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- descriptive statistics

@dataclass
class Estimate:
    """Mean, sample std and ``confidence`` t-interval of some values (NaN where undefined)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    values: list[float] = field(default_factory=list)

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def describe(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Estimate:
    """n, mean, std (ddof=1) and the t-interval ``mean ± t_{(1+c)/2, n-1} · std/√n``.

    ``None``/NaN values are dropped; with n=1 std and the interval are NaN, with n=0 all are NaN.
    """
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan, [])
    mean = float(v.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan, v.tolist())
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half, v.tolist())


@dataclass
class Reach:
    """How fast a group's runs reach a val accuracy: epochs (over the runs that reach it)."""

    threshold: float
    epochs: Estimate
    reached: int
    runs: int


@dataclass
class GroupSummary:
    label: str
    jobs: int
    completed: int
    unfinished: int
    failed: int
    """Jobs that failed or diverged (left out of the statistics)."""
    seeds: list[int]
    metrics: dict[str, Estimate]
    best_epoch: Estimate
    reach: dict[float, Reach]
    diverged: int = 0
    """Of ``failed``, the runs whose loss became non-finite: an outcome of the settings, not a crash."""


def summarize_group(label: str, jobs: Sequence[Job], metrics: Sequence[str] = tuple(METRICS), thresholds: Sequence[float] = THRESHOLDS, confidence: float = CONFIDENCE) -> GroupSummary:
    """End-of-run statistics of one group, over its completed jobs."""
    done = [j for j in jobs if is_completed(j)]
    reach = {}
    for thr in thresholds:
        eps = [epochs_to_reach(j, thr) for j in done]
        got = [e for e in eps if e is not None]
        reach[thr] = Reach(thr, describe(got, confidence), len(got), len(done))
    return GroupSummary(
        label=label, jobs=len(jobs), completed=len(done), unfinished=sum(is_unfinished(j) for j in jobs), failed=sum(is_failed(j) for j in jobs),
        seeds=sorted(s for s in (job_seed(j) for j in done) if s is not None),
        metrics={m: describe([job_metric(j, m) for j in done], confidence) for m in metrics},
        best_epoch=describe([job_metric(j, "best_epoch") for j in done], confidence), reach=reach,
        diverged=sum(j.status == "diverged" for j in jobs),
    )


def summarize(groups: dict[str, Sequence[Job]], **kw) -> list[GroupSummary]:
    return [summarize_group(label, jobs, **kw) for label, jobs in groups.items()]


def milestones(groups: dict[str, Sequence[Job]], epochs: Sequence[int] = MILESTONE_EPOCHS, column: str = "val_acc", statuses: Sequence[str] = CURVE_STATUSES) -> dict[str, dict[int, Estimate]]:
    """``{group: {epoch: Estimate}}`` of ``column`` at the given epochs (n=0 where no run got there)."""
    out = {}
    for label, jobs in groups.items():
        use = [j for j in jobs if j.status in statuses]
        out[label] = {e: describe([value_at_epoch(j, e, column) for j in use]) for e in epochs}
    return out


@dataclass
class Band:
    """Mean and std of a column per epoch over a group's runs."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # NaN where fewer than 2 runs
    n: np.ndarray


def mean_curve(jobs: Sequence[Job], column: str, statuses: Sequence[str] = CURVE_STATUSES, transform=None) -> Band:
    """Per-epoch mean/std of ``column`` over ``jobs`` with a status in ``statuses``.

    ``transform(job) -> (epochs, values)`` replaces :func:`curve` (e.g. for derived columns).
    """
    acc: dict[int, list[float]] = {}
    for j in jobs:
        if j.status not in statuses:
            continue
        ep, val = transform(j) if transform else curve(j, column)
        for e, v in zip(ep, val):
            acc.setdefault(int(e), []).append(float(v))
    eps = np.array(sorted(acc), dtype=int)
    mean = np.array([np.mean(acc[e]) for e in eps], dtype=float)
    std = np.array([np.std(acc[e], ddof=1) if len(acc[e]) > 1 else math.nan for e in eps], dtype=float)
    n = np.array([len(acc[e]) for e in eps], dtype=int)
    return Band(eps, mean, std, n)


# --------------------------------------------------------------------------- pairwise tests

@dataclass
class Comparison:
    """One pairwise test of ``metric`` between groups ``a`` and ``b`` (difference = a - b)."""

    metric: str
    a: str
    b: str
    n_a: int
    n_b: int
    test: str | None  # "paired t-test", "Welch's t-test" or None (no test, see reason)
    diff: float = math.nan  # mean difference a - b (fraction)
    se: float = math.nan  # its standard error
    ci_low: float = math.nan
    ci_high: float = math.nan
    t: float = math.nan
    df: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    significant: bool | None = None
    reason: str = ""
    n_pairs: int = 0
    sentence: str = ""

    @property
    def winner(self) -> str:
        return self.b if self.diff < 0 else self.a

    @property
    def loser(self) -> str:
        return self.a if self.diff < 0 else self.b


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count in m)."""
    p = np.asarray(pvalues, dtype=float)
    idx = [i for i in range(len(p)) if math.isfinite(p[i])]
    out = np.full(len(p), math.nan)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def _paired_values(ja: Sequence[Job], jb: Sequence[Job], metric: str) -> tuple[list[float], list[float]] | None:
    """Per-seed values of both groups when they ran the same seeds (each once), else ``None``."""
    def by_seed(jobs):
        d = {}
        for j in jobs:
            s, v = job_seed(j), job_metric(j, metric)
            if v is None:
                continue
            if s is None or s in d:
                return None
            d[s] = v
        return d
    a, b = by_seed(ja), by_seed(jb)
    if a is None or b is None or not a or set(a) != set(b):
        return None
    seeds = sorted(a)
    return [a[s] for s in seeds], [b[s] for s in seeds]


def compare(label_a: str, jobs_a: Sequence[Job], label_b: str, jobs_b: Sequence[Job], metric: str = "test_acc_best", confidence: float = CONFIDENCE) -> Comparison:
    """Test ``metric`` of two groups' completed jobs: paired t-test on per-seed differences when both
    ran the same seeds, Welch's t-test otherwise.  No test (``test=None``, ``reason`` says why) when
    a group has fewer than 2 values or the differences have no spread."""
    ja = [j for j in jobs_a if is_completed(j)]
    jb = [j for j in jobs_b if is_completed(j)]
    va = [v for v in (job_metric(j, metric) for j in ja) if v is not None]
    vb = [v for v in (job_metric(j, metric) for j in jb) if v is not None]
    c = Comparison(metric, label_a, label_b, len(va), len(vb), None)
    if va and vb:
        c.diff = float(np.mean(va) - np.mean(vb))
    short = [(g, n) for g, n in ((label_a, len(va)), (label_b, len(vb))) if n < 2]
    if short:
        c.reason = "; ".join(f"{g} has {n} completed run{'s' if n != 1 else ''}" for g, n in short) + " (a t-test needs at least 2 per group)"
        return c
    paired = _paired_values(ja, jb, metric)
    q = (1 + confidence) / 2
    if paired is not None:
        d = np.subtract(*paired)
        c.test, c.n_pairs, c.diff = "paired t-test", len(d), float(d.mean())
        c.se, c.df = float(d.std(ddof=1) / math.sqrt(len(d))), float(len(d) - 1)
        if c.se <= 1e-12 * max(1.0, abs(c.diff)):
            c.reason = "the per-seed differences are all equal (no spread), so a t-test is undefined"
            c.test = None
            return c
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            res = sps.ttest_rel(*paired)
    else:
        a, b = np.asarray(va), np.asarray(vb)
        c.test = "Welch's t-test"
        sa, sb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        c.se = float(math.sqrt(sa + sb))
        if c.se <= 1e-12:
            c.reason = "both groups have no spread, so a t-test is undefined"
            c.test = None
            return c
        c.df = float((sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1)))
        with warnings.catch_warnings():  # one group without spread is fine for Welch's test
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            res = sps.ttest_ind(a, b, equal_var=False)
    c.t, c.p = float(res.statistic), float(res.pvalue)
    half = float(sps.t.ppf(q, c.df)) * c.se
    c.ci_low, c.ci_high = c.diff - half, c.diff + half
    return c


def _pts(x: float, digits: int = 1) -> str:
    return f"{100 * abs(x):.{digits}f}"


def _p(p: float) -> str:
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.995 else "p=1"


def describe_comparison(c: Comparison, alpha: float = ALPHA, test_name: str = "test") -> str:
    """The comparison in words, differences in percent points, e.g.
    ``cosine beats step on PrivateTest accuracy by 2.1 ± 0.4 points (paired t-test, p=0.003,
    Holm-adjusted p=0.018): significant at 5%`` (± is the standard error of the difference)."""
    what = metric_words(c.metric, test_name)
    if c.test is None:
        lead = f"{c.a} vs {c.b} on {what}"
        if math.isfinite(c.diff):
            lead += f" ({c.winner} ahead by {_pts(c.diff)} points)" if c.diff != 0 else " (equal means)"
        return f"{lead}: no test, {c.reason}"
    level = f"{100 * alpha:g}%"
    if c.diff == 0:
        lead = f"{c.a} and {c.b} tie on {what}: 0.0 ± {_pts(c.se)} points"
    else:
        verb = "beats" if c.significant else "is ahead of"
        lead = f"{c.winner} {verb} {c.loser} on {what} by {_pts(c.diff)} ± {_pts(c.se)} points"
    verdict = f"significant at {level}" if c.significant else f"not significant at {level}"
    return f"{lead} ({c.test}, {_p(c.p)}, Holm-adjusted {_p(c.p_holm)}): {verdict}"


def pairwise(groups: dict[str, Sequence[Job]], metrics: Sequence[str] = ("test_acc_best",), alpha: float = ALPHA, confidence: float = CONFIDENCE, test_name: str | None = None) -> list[Comparison]:
    """All pairs of groups for each metric, Holm-adjusted within each metric's family of tests
    (``test_name``: what the sentences call the test split, see :func:`metric_words`; default:
    what the jobs recorded, :func:`fer_sweep.sweep.val_split.source_of_test`)."""
    if test_name is None:
        from fer_sweep.sweep.val_split import short_test_name, source_of_test

        test_name = short_test_name(source_of_test(j for js in groups.values() for j in js))
    labels = list(groups)
    out = []
    for metric in metrics:
        family = [compare(a, groups[a], b, groups[b], metric, confidence) for i, a in enumerate(labels) for b in labels[i + 1:]]
        for c, adj in zip(family, holm([c.p for c in family])):
            c.p_holm = adj
            c.significant = bool(adj < alpha) if math.isfinite(adj) else None
            c.sentence = describe_comparison(c, alpha, test_name)
        out += family
    return out
