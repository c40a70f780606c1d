"""Figures, tables and ``report.md`` of fer_sweep sweeps: ``python -m fer_sweep.plot <sweep-folder>``.

- :mod:`fer_sweep.plot.figures`: the figures as matplotlib ``Figure`` objects (no pyplot);
- :mod:`fer_sweep.plot.tables`: the tables as CSV rows and Markdown;
- :mod:`fer_sweep.plot.report`: :func:`~fer_sweep.plot.report.analyse` and
  :func:`~fer_sweep.plot.report.write_report`;
- :mod:`fer_sweep.plot.style`: one colour per scheduler everywhere.

The statistics themselves live in :mod:`fer_sweep.sweep.stats`.
"""
