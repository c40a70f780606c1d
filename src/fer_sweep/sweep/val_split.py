"""What a sweep's "val" split is, in words, for the report's labels.

Val is not always PublicTest: :func:`fer_sweep.data.splits.split_indices` carves it from Training
under ``data.split=study``, and under ``official`` too when the copy has no PublicTest (image folders
without file-name prefixes).  Each job's ``config.yaml`` records its data settings.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable

import yaml

from fer_sweep.sweep.collect import Job

def val_source(jobs: Iterable[Job]) -> str | None:
    """What the jobs validated on, in words ("PublicTest", "30% of Training (data.split=study)", ...),
    or ``None`` when no job says or the jobs differ, so that labels fall back to a neutral "val".

    Val is not always PublicTest: :func:`fer_sweep.data.splits.split_indices` carves it from
    Training under ``data.split=study``, and under ``official`` too when the copy has no PublicTest
    (image folders without file-name prefixes).  Each job's ``config.yaml`` records its data
    settings; the copy at its ``data.root`` tells whether PublicTest exists (checked once per root)."""
    public: dict[str, bool | None] = {}
    found = {s for s in (_job_val_source(j, public) for j in jobs) if s is not None}
    return found.pop() if len(found) == 1 else None


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


def _job_val_source(job: Job, public: dict[str, bool | None]) -> str | None:
    from fer_sweep.data.readers import has_public_test

    data = _recorded_data_settings(job)
    if data is None:
        return None
    split = data.get("split", "official")
    if split == "study":
        return f"{_split_default('study_holdout'):.0%} of Training (data.split=study)"
    root = data.get("root")
    if split != "official" or not isinstance(root, str) or "${" in root or not Path(root).expanduser().is_absolute():
        return None  # an unresolved or relative root cannot be checked from here
    if root not in public:
        public[root] = has_public_test(root)
    if public[root] is None:
        return None
    if public[root]:
        return "PublicTest"
    fraction = data.get("val_fraction", _split_default("val_fraction"))  # the datamodule's default is the same
    return f"{fraction:.0%} of Training (the copy has no PublicTest)" if isinstance(fraction, (int, float)) else None

