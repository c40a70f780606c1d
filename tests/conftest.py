"""Shared fixtures: where FER2013 is, a per-session tensor cache, and small helpers.

Tests that need the real data set use the ``fer_root`` fixture; it skips with a visible reason when
FER2013 is absent (``.ci/run`` turns such skips into a failure).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FER_ROOT = PROJECT_ROOT.parent / "shared" / "data" / "fer2013"
FER_SKIP_REASON = "FER2013 data missing"


def fer2013_root() -> Path:
    return Path(os.environ.get("FER2013_ROOT", DEFAULT_FER_ROOT)).expanduser()


@pytest.fixture(scope="session")
def fer_root() -> Path:
    root = fer2013_root()
    if not (root / "train").is_dir():
        message = f"{FER_SKIP_REASON}: no FER2013 at {root} (set FER2013_ROOT)"
        if os.environ.get("FER_SWEEP_REQUIRE_DATA"):  # CI: a missing data set is a failure
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory) -> None:
    """Point FER2013_ROOT at the data and give the session one tensor cache (decoded once)."""
    os.environ.setdefault("FER2013_ROOT", str(fer2013_root()))
    os.environ.setdefault("FER_SWEEP_CACHE", str(tmp_path_factory.mktemp("fer_cache")))
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def fer_raw(fer_root):
    """The whole decoded FER2013 (from the session cache)."""
    from fer_sweep.data.cache import load_fer2013

    return load_fer2013(fer_root)
