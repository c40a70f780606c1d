"""``python -m fer_sweep.plot <sweep-folder> [<more folders>] [--out DIR] [--group-by KEY]``.

Collects the jobs of the sweep folders (finished, still running or with failed jobs), and writes
the report (figures as PNG and PDF, tables as Markdown and CSV, ``report.md``) to ``--out``,
by default ``<first sweep folder>/report``.  Exit status 0 when the report was written (even if
jobs failed: they are listed), 1 when it was written but no job has a result or a curve to
compare (every job failed: the report says why), 2 on bad input (a folder that is missing or
holds no jobs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_sweep.cli import stops_quietly_when_output_closes

EXIT_NOTHING_TO_COMPARE = 1
EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fer-sweep-plot", description="Figures, tables and report.md of one or more fer_sweep sweep folders (multirun/<date>/<time>_<token>/).",
    )
    p.add_argument("sweeps", nargs="+", type=Path, metavar="SWEEP_FOLDER", help="sweep folder(s) holding job folders such as 'scheduler=cosine,seed=3'")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <first sweep folder>/report)")
    p.add_argument("--group-by", default=None, metavar="KEY",
                   help="results.json key or override to group runs by, e.g. scheduler, lr, optimizer.lr; several as 'a,b' "
                        "(default: the overrides that vary across jobs, else scheduler)")
    p.add_argument("--quiet", action="store_true", help="print only problems and where the report went")
    return p


def _bad(msg: str) -> int:
    print(f"fer-sweep-plot: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _unwritable(out: Path) -> str | None:
    """Why the report cannot go to ``out`` (checked before the analysis), or None."""
    import tempfile

    if out.exists() and not out.is_dir():
        return "is a file, not a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_probe_"):
            pass
    except OSError as exc:
        return f"cannot be created or written ({exc.strerror or type(exc).__name__})"
    return None


@stops_quietly_when_output_closes
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from fer_sweep.sweep.collect import collect, job_dirs

    for d in args.sweeps:
        if not d.is_dir():
            what = "no such folder" if not d.exists() else "not a folder"
            return _bad(f"{d}: {what}; expected a sweep folder (multirun/<date>/<time>_<token>/) holding job folders")
        if not job_dirs(d):
            return _bad(f"{d}: holds no jobs; expected job folders holding results.json or .hydra/overrides.yaml (like {d / 'scheduler=cosine,seed=0'})")
    jobs = collect(*args.sweeps)  # each job folder once, however often it is reached

    if args.group_by not in (None, "auto"):
        from fer_sweep.sweep.stats import available_keys, job_value, normalise_key

        missing = [k for k in normalise_key(args.group_by, jobs) if all(job_value(j, k) is None for j in jobs)]
        if missing:
            return _bad(f"--group-by {args.group_by}: no job has {', '.join(missing)}; expected a results.json key or override such as {', '.join(available_keys(jobs)[:12])}")

    import matplotlib

    matplotlib.use("Agg")
    from fer_sweep.plot.report import analyse, failed_lines, unfinished_lines, write_report

    out = args.out or args.sweeps[0] / "report"
    unwritable = _unwritable(out)
    if unwritable:
        return _bad(f"--out {out}: {unwritable}; expected a folder that can be created and written to")
    analysis = analyse(jobs, group_by=args.group_by, sources=args.sweeps)
    try:
        files = write_report(analysis, out)
    except OSError as exc:
        return _bad(f"--out {out}: writing the report failed ({exc.strerror or exc}); expected a writable folder with free space")

    a = analysis
    print(f"fer-sweep-plot: {len(a.jobs)} jobs in {len(args.sweeps)} sweep folder(s), grouped by {a.group_name}: "
          f"{len(a.completed)} completed, {len(a.unfinished)} unfinished, {len(a.failed)} failed"
          + (f" ({len(a.diverged)} of them diverged)" if a.diverged else ""))
    if a.synthetic:
        print("note: SYNTHETIC demo data (fer_sweep.sweep.synthetic), not training results")
    for line in a.notes:
        print(f"note: {line}")
    for line in unfinished_lines(a):
        print(f"unfinished: {line}")
    for line in failed_lines(a):
        print(f"failed: {line}")
    if not args.quiet:
        for c in a.comparisons:
            print(f"  {c.sentence}")
    print(f"report: {files['report']}")
    if not a.completed and not a.unfinished:  # a report of failures only: say so, in the status too
        print(f"fer-sweep-plot: error: none of the {len(a.jobs)} jobs has results or a curve to compare "
              f"({len(a.failed)} failed: see {files['report']}); expected at least one completed or running job", file=sys.stderr)
        return EXIT_NOTHING_TO_COMPARE
    return 0


if __name__ == "__main__":
    sys.exit(main())
