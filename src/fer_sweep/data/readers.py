"""Read FER2013 from either public layout into uint8 arrays.

Two layouts exist in the wild:

* the Kaggle CSV (``fer2013.csv``: ``emotion,pixels,Usage``; also ``icml_face_data.csv`` whose header
  has spaces), one 48x48 face per row as 2,304 space-separated pixel values;
* image folders ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.  File-name prefixes
  ``Training_``/``PublicTest_``/``PrivateTest_`` keep the official split; without them ``test/``
  is one unsplit test set.

Both return a :class:`RawFER` with images ``(N, 48, 48) uint8``, canonical labels (see
:mod:`fer_sweep.data.classes`) and a usage code per image.  Anything malformed raises
:class:`~fer_sweep.data.errors.FER2013Error` before a single tensor is cached.
"""

from __future__ import annotations

import csv
import logging
import os
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fer_sweep.data.classes import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST, TRAINING, UNSPLIT_TEST, USAGES
from fer_sweep.data.errors import OBTAIN_HINT, FER2013Error

log = logging.getLogger(__name__)

SIZE = 48
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")
PREFIX_USAGE = {"Training_": TRAINING, "PublicTest_": PUBLIC_TEST, "PrivateTest_": PRIVATE_TEST}
CSV_EXPECTED = "emotion,pixels,Usage (one 48x48 face per row as 2,304 space-separated pixel values)"
ARCHIVE_MAGIC = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"7z\xbc\xaf": "7z"}
"""Leading bytes of the archives FER2013 is downloaded as (``fer2013.tar.gz``, Kaggle's ``.zip``)."""


@dataclass
class RawFER:
    """Decoded FER2013: one entry per image, in a stable order."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, canonical 7-class labels
    usage: np.ndarray  # (N,) int8, index into USAGES
    sources: list[str] = field(default_factory=list)  # relative path, or "fer2013.csv:<row>"
    resized: int = 0  # images that were not 48x48 and were resized


def detect_layout(root: str | os.PathLike) -> tuple[str, Path]:
    """Return ``("csv", file)`` or ``("folders", dir)`` for a FER2013 copy at ``root``."""
    path = Path(root).expanduser()
    if not path.exists():
        raise FER2013Error(f"FER2013 not found at {path}: {OBTAIN_HINT}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise FER2013Error(f"{path}: expected fer2013.csv (columns emotion,pixels,Usage) or a folder")
        return "csv", path
    if (path / "train").is_dir() or (path / "test").is_dir():
        return "folders", path
    for name in CSV_NAMES:
        if (path / name).is_file():
            return "csv", path / name
    nested = path / "fer2013"
    if nested.is_dir():
        return detect_layout(nested)
    raise FER2013Error(
        f"{path}: no FER2013 found; expected train/<class>/ and test/<class>/ image folders "
        f"or fer2013.csv; {OBTAIN_HINT}"
    )


def list_image_files(root: Path) -> list[tuple[str, int]]:
    """All ``(relative path, label)`` pairs of a folder layout, sorted; checks class folders."""
    entries: list[tuple[str, int]] = []
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FER2013Error(f"{split_dir}: missing; expected {split}/<class>/ folders with 48x48 faces")
        class_dirs = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
        for class_dir in class_dirs:
            if not class_dir.is_dir():
                raise FER2013Error(f"{class_dir}: unexpected file; expected only class folders {list(CLASS_NAMES)}")
            name = class_dir.name.lower()
            if name not in CLASS_NAMES:
                raise FER2013Error(f"{class_dir}: unknown class folder '{class_dir.name}'; expected one of {list(CLASS_NAMES)}")
            label = CLASS_NAMES.index(name)
            with os.scandir(class_dir) as it:
                names = sorted(e.name for e in it if not e.name.startswith("."))
            entries.extend((f"{split}/{class_dir.name}/{n}", label) for n in names)
    return entries


def _usage_for(relpath: str) -> int | None:
    name = relpath.rsplit("/", 1)[-1]
    for prefix, usage in PREFIX_USAGE.items():
        if name.startswith(prefix):
            return usage
    return None


def read_folders(root: Path) -> RawFER:
    """Decode every image of a folder layout (grayscale, 48x48)."""
    entries = list_image_files(root)
    n = len(entries)
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    usage = np.empty(n, dtype=np.int8)
    resized = 0
    prefixed = {"train": [], "test": []}
    for i, (rel, label) in enumerate(entries):
        path = root / rel
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise FER2013Error(f"{path}: not an image file; expected one of {', '.join(IMAGE_SUFFIXES)}")
        data = np.fromfile(path, dtype=np.uint8)
        if data.size == 0:
            raise FER2013Error(f"{path}: empty (zero-byte) file; expected a 48x48 grayscale image")
        img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FER2013Error(f"{path}: corrupt or unreadable image; expected a 48x48 grayscale image")
        if img.shape != (SIZE, SIZE):
            img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            resized += 1
        images[i] = img
        labels[i] = label
        split = rel.split("/", 1)[0]
        u = _usage_for(rel)
        prefixed[split].append(u is not None)
        usage[i] = u if u is not None else (TRAINING if split == "train" else UNSPLIT_TEST)
    for split, flags in prefixed.items():
        if flags and any(flags) and not all(flags):
            bad = next(rel for rel, _ in entries if rel.startswith(split + "/") and _usage_for(rel) is None)
            raise FER2013Error(
                f"{root / bad}: file name lacks a Training_/PublicTest_/PrivateTest_ prefix while others in {split}/ have one; "
                "expected all or none prefixed"
            )
    raw = RawFER(images, labels, usage, [rel for rel, _ in entries], resized)
    check_splits_present(raw, root, "images in train/<class>/", "PrivateTest_ or unprefixed images in test/<class>/")
    if resized:
        log.warning("%d images in %s were not 48x48 and were resized to 48x48 (INTER_AREA)", resized, root)
    return raw


def _csv_columns(header: list[str], path: Path) -> tuple[int, int, int]:
    names = [h.strip().lower() for h in header]
    try:
        return names.index("emotion"), names.index("pixels"), names.index("usage")
    except ValueError:
        raise FER2013Error(f"{path}: header {header!r:.120}; expected columns emotion,pixels,Usage") from None


def _refuse_archive(path: Path) -> None:
    """A compressed download renamed (or saved) as ``.csv`` is the common binary CSV: say so
    plainly, instead of an undecodable-byte message."""
    with open(path, "rb") as fh:
        start = fh.read(8)
    kind = next((k for magic, k in ARCHIVE_MAGIC.items() if start.startswith(magic)), None)
    if kind:
        raise FER2013Error(f"{path}: a {kind} archive, not a text CSV; extract it first, expected fer2013.csv with columns {CSV_EXPECTED}")


def _csv_records(path: Path) -> Iterator[list[str]]:
    """The records of a CSV file.  A binary or non-UTF-8 file (a gzip saved as ``fer2013.csv``, a
    spreadsheet export in another encoding) ends as one FER2013Error naming it, not as a codec or
    csv traceback."""
    _refuse_archive(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of 'emotion'
        reader = csv.reader(fh)
        try:
            yield from reader
        except UnicodeDecodeError as exc:  # no line number: the text layer decodes ahead in blocks
            raise FER2013Error(f"{path}: not UTF-8 text (undecodable byte {exc.object[exc.start:exc.start + 1]!r}); "
                               f"expected a text CSV with columns {CSV_EXPECTED}") from None
        except csv.Error as exc:  # e.g. a binary file's megabyte-long "line" exceeds the csv field limit
            raise FER2013Error(f"{path}:{reader.line_num}: not parseable as CSV ({exc}); expected a text CSV with columns {CSV_EXPECTED}") from None


def read_csv(path: Path) -> RawFER:
    """Parse the Kaggle CSV, checking every row (pixel count, numbers, label, Usage)."""
    usage_codes = {u.lower(): i for i, u in enumerate(USAGES[:3])}
    images, labels, usage, rows = [], [], [], []
    with closing(_csv_records(path)) as reader:  # closing: the file is shut when a row is refused
        header = next(reader, None)
        if header is None:
            raise FER2013Error(f"{path}: empty file; expected a header emotion,pixels,Usage and 35,887 rows")
        ie, ip, iu = _csv_columns(header, path)
        for row_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise FER2013Error(f"{path}:{row_no}: {len(row)} fields; expected {len(header)} ({','.join(header)})")
            try:
                label = int(row[ie].strip())
            except ValueError:
                raise FER2013Error(f"{path}:{row_no}: emotion {row[ie]!r:.40}; expected an integer 0-6") from None
            if not 0 <= label <= 6:
                raise FER2013Error(f"{path}:{row_no}: emotion {label}; expected 0-6 ({', '.join(CLASS_NAMES)})")
            u = usage_codes.get(row[iu].strip().lower())
            if u is None:
                raise FER2013Error(f"{path}:{row_no}: Usage {row[iu]!r:.40}; expected Training, PublicTest or PrivateTest")
            tokens = row[ip].split()
            if len(tokens) != SIZE * SIZE:
                raise FER2013Error(f"{path}:{row_no}: {len(tokens)} pixel values; expected {SIZE * SIZE} (48x48)")
            try:
                pixels = np.array(tokens, dtype=np.int32)
            except (ValueError, OverflowError):  # OverflowError: a huge integer such as 99999999999
                pixels = None
            if pixels is None or pixels.min() < 0 or pixels.max() > 255:
                raise FER2013Error(f"{path}:{row_no}: pixel value {_bad_pixel(tokens)!r}; expected integers 0-255")
            images.append(pixels.astype(np.uint8).reshape(SIZE, SIZE))
            labels.append(label)
            usage.append(u)
            rows.append(row_no)
    if not images:
        raise FER2013Error(f"{path}: no data rows; expected 35,887 rows of emotion,pixels,Usage")
    raw = RawFER(
        np.stack(images),
        np.asarray(labels, dtype=np.int64),
        np.asarray(usage, dtype=np.int8),
        [f"{path.name}:{i}" for i in rows],  # the real row numbers, blank lines skipped
    )
    check_splits_present(raw, path, "rows with Usage Training", "rows with Usage PrivateTest")
    return raw


def _bad_pixel(tokens: list[str]) -> str:
    """The first token that is not an integer 0-255 (for the error message)."""
    for t in tokens:
        try:
            if 0 <= int(t) <= 255:
                continue
        except ValueError:
            pass
        return t
    return tokens[0] if tokens else ""


def check_splits_present(raw: RawFER, where: Path, train_what: str, test_what: str) -> None:
    """Refuse a copy without training or test images here, in the reader, so that it fails before
    anything is cached (PublicTest may be missing: validation is then carved from training)."""
    if not np.any(raw.usage == TRAINING):
        raise FER2013Error(f"{where}: empty training split; expected {train_what}")
    if not np.any((raw.usage == PRIVATE_TEST) | (raw.usage == UNSPLIT_TEST)):
        raise FER2013Error(f"{where}: empty test split; expected {test_what}")


def fingerprint_entries(layout: str, path: Path) -> list[tuple[str, int, int]]:
    """What the cache key is made of: every source file's relative path, size and mtime."""
    if layout == "csv":
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    out = []
    for rel, _ in list_image_files(path):
        st = (path / rel).stat()
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def held_out_usages(root: str | os.PathLike) -> frozenset[int] | None:
    """Which of PublicTest, PrivateTest and unprefixed ``Test`` images the copy at ``root`` holds,
    found without decoding any: the official split validates on PublicTest when there is one and
    carves val from Training otherwise, and tests on PrivateTest, else on all of an unprefixed
    ``test/`` (:func:`fer_sweep.data.splits.split_indices`); sweep reports of runs that did not
    record their splits label them from this.  ``None`` when the copy is missing or unreadable."""
    try:
        layout, path = detect_layout(root)
        if layout == "folders":
            found = set()
            for rel, _ in list_image_files(path):
                if rel.startswith("test/"):
                    u = _usage_for(rel)
                    found.add(UNSPLIT_TEST if u is None else u)
            return frozenset(found)
        wanted = {b"publictest": PUBLIC_TEST, b"privatetest": PRIVATE_TEST}
        found = set()
        with open(path, "rb") as fh:  # Usage values are the only text a pixel row cannot contain
            tail = b""
            for block in iter(lambda: fh.read(1 << 20), b""):
                text = (tail + block).lower()
                found |= {u for word, u in wanted.items() if word in text}
                if len(found) == len(wanted):
                    break
                tail = block[-16:]
        return frozenset(found)
    except (FER2013Error, OSError):
        return None


def read_raw(root: str | os.PathLike) -> RawFER:
    """Read a FER2013 copy in whichever layout ``root`` holds."""
    layout, path = detect_layout(root)
    return read_csv(path) if layout == "csv" else read_folders(path)
