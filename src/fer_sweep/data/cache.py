"""Decode FER2013 once, then serve it from a uint8 tensor cache outside the (read-only) data folder.

The cache key hashes the layout and every source file's path, size and mtime, so a changed,
added or removed image gives a new key and a stale cache is never served.  The cache file is
written only after the whole data set decoded without error (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from fer_sweep.data.readers import RawFER, detect_layout, fingerprint_entries, read_csv, read_folders
from fer_sweep.io import atomic_write

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_SWEEP_CACHE", Path.home() / ".cache" / "fer_sweep")).expanduser()


def cache_key(root: str | os.PathLike) -> str:
    layout, path = detect_layout(root)
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, layout, fingerprint_entries(layout, path)]).encode())
    return f"fer2013-{layout}-{digest.hexdigest()[:20]}"


def load_fer2013(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> RawFER:
    """Decoded FER2013 at ``root``: from the cache when its key matches, else decoded and cached."""
    t0 = time.perf_counter()
    layout, path = detect_layout(root)
    key = cache_key(root)
    cache_file = Path(cache_dir or default_cache_dir()).expanduser() / f"{key}.pt"
    if cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            raw = RawFER(blob["images"].numpy(), blob["labels"].numpy(), blob["usage"].numpy(), list(blob["sources"]), int(blob["resized"]))
            log.info("FER2013 from cache %s (%d images, %.2fs)", cache_file, len(raw.labels), time.perf_counter() - t0)
            return raw
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, exc)
    raw = read_csv(path) if layout == "csv" else read_folders(path)
    blob = {
        "images": torch.from_numpy(np.ascontiguousarray(raw.images)),
        "labels": torch.from_numpy(raw.labels),
        "usage": torch.from_numpy(raw.usage),
        "sources": raw.sources,
        "resized": raw.resized,
    }
    try:
        atomic_write(cache_file, lambda p: torch.save(blob, p))
    except OSError as exc:
        log.warning("could not write cache %s (%s); continuing without it", cache_file, exc)
    log.info("FER2013 decoded from %s (%d images, %.2fs)", path, len(raw.labels), time.perf_counter() - t0)
    return raw
