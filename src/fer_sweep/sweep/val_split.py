"""What a sweep's "val" and "test" splits are, in words, for the report's labels.

Val is not always PublicTest, nor test PrivateTest: :func:`fer_sweep.data.splits.split_indices`
carves val from Training under ``data.split=study``, and under ``official`` too when the copy has
no PublicTest; a copy whose ``test/`` file names carry no prefixes tests on all of ``test/``; and
``data.subset`` keeps a fraction of each.  Runs record the words in ``results.json`` (``splits``,
from :func:`fer_sweep.data.splits.split_sources`); for runs from before that, the words are worked
out from the job's ``config.yaml`` and the data copy at its ``data.root``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable

import yaml

from fer_sweep.sweep.collect import Job


def val_source(jobs: Iterable[Job]) -> str | None:
    """What the jobs validated on, in words ("PublicTest", "30% of Training (data.split=study)", ...),
    or ``None`` when they differ or any of them cannot tell, so that labels fall back to a neutral "val"."""
    return split_words(jobs)["val"]


def source_of_test(jobs: Iterable[Job]) -> str | None:
    """What the jobs tested on, in words ("PrivateTest", "all of test/ (...)", ...), or ``None``
    when they differ or any of them cannot tell, so that labels fall back to a neutral "test"."""
    return split_words(jobs)["test"]


def short_test_name(source: str | None) -> str:
    """The short name for the test split in metric names: "PrivateTest" when that is what the jobs
    tested on (all of it or a subset), else "test" (the report's text says what it is)."""
    return "PrivateTest" if source and source.startswith("PrivateTest") else "test"


def split_words(jobs: Iterable[Job]) -> dict[str, str | None]:
    """``{"val": ..., "test": ...}``: each split of the jobs in words, if all the completed jobs agree
    on it; ``None`` where they differ or one of them cannot tell (one run that says "PrivateTest"
    does not label an older run beside it that does not).  A running job counts when it can tell
    (runs from before splits were recorded at the start take them from their config.yaml and
    data copy); pending and failed jobs, left out of every statistic, do not count."""
    usages: dict[str, Any] = {}  # the data copies looked at, by root: each is listed or scanned once
    found: dict[str, set] = {"val": set(), "test": set()}
    for job in jobs:
        if job.status not in ("completed", "running", "interrupted"):
            continue
        words = _job_sources(job, usages)
        for which in found:
            if words.get(which) is not None or job.status == "completed":
                found[which].add(words.get(which))
    return {which: (s.pop() if len(s) == 1 else None) for which, s in found.items()}


def _split_default(name: str) -> Any:
    from fer_sweep.data.splits import split_indices

    return inspect.signature(split_indices).parameters[name].default


def _recorded_data_settings(job: Job) -> dict | None:
    """The ``data`` section of the job's resolved ``config.yaml`` (else Hydra's own copy)."""
    for f in (job.path / "config.yaml", job.path / ".hydra" / "config.yaml"):
        try:
            data = (yaml.safe_load(f.read_text()) or {}).get("data")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _job_sources(job: Job, usages: dict[str, Any]) -> dict[str, str]:
    recorded = (job.results or {}).get("splits")
    if isinstance(recorded, dict) and all(isinstance(recorded.get(k), str) for k in ("val", "test")):
        return recorded
    return _inferred_sources(job, usages)


def _inferred_sources(job: Job, usages: dict[str, Any]) -> dict[str, str]:
    """The words :func:`fer_sweep.data.splits.split_sources` gives for the job's recorded data
    settings and the copy at its ``data.root`` (checked once per root); ``{}`` when unknown."""
    from fer_sweep.data.readers import held_out_usages
    from fer_sweep.data.splits import split_sources

    data = _recorded_data_settings(job)
    if data is None:
        return {}
    split, subset, root = data.get("split", "official"), data.get("subset"), data.get("root")
    subset = subset if isinstance(subset, (int, float)) else None
    fraction = data.get("val_fraction", _split_default("val_fraction"))  # the datamodule's default is the same
    fraction = fraction if isinstance(fraction, (int, float)) else _split_default("val_fraction")
    holdout = _split_default("study_holdout")
    present = None  # an unresolved or relative root cannot be checked from here
    if isinstance(root, str) and "${" not in root and Path(root).expanduser().is_absolute():
        if root not in usages:
            usages[root] = held_out_usages(root)
        present = usages[root]
    if present is None:  # the copy is unknown: only the study split's val can be told
        return {"val": split_sources((), split, fraction, holdout, subset)["val"]} if split == "study" else {}
    return split_sources(present, split, fraction, holdout, subset)
