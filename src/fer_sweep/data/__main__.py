"""``python -m fer_sweep.data [PATH]``: check a FER2013 copy by printing its split x class counts.

This is how a user checks a download before training: it reads the copy exactly as training will
(either layout, every image decoded and validated, the result cached so the first training setup is
instant) and prints the image count of every split and class, a table by default or ``--json`` for
machines.  ``--download DIR`` first fetches the Kaggle image-folder edition through kagglehub.

Bad input is reported as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fer_sweep.data.cache import load_fer2013
from fer_sweep.data.classes import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST, TRAINING, UNSPLIT_TEST, USAGES
from fer_sweep.data.errors import OBTAIN_HINT, FER2013Error
from fer_sweep.data.readers import RawFER, detect_layout, read_raw
from fer_sweep.cli import stops_quietly_when_output_closes

KAGGLE_DATASET = "msambare/fer2013"
"""The Kaggle image-folder edition (train/<class>/Training_*.jpg, test/<class>/P*Test_*.jpg)."""

OFFICIAL_SIZES = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589, "Test": 7_178}
"""Images per split in the complete FER2013 (``Test`` = PublicTest + PrivateTest, unprefixed copies)."""


def shown_usages(raw: RawFER) -> list[int]:
    """Training, then PublicTest and PrivateTest, or Test for a copy without file-name prefixes."""
    if np.any(raw.usage == UNSPLIT_TEST):
        return [TRAINING, UNSPLIT_TEST]
    return [TRAINING, PUBLIC_TEST, PRIVATE_TEST]


def split_counts(raw: RawFER) -> dict[str, list[int]]:
    """Per-class image counts (canonical label order) of every shown split, by Usage name."""
    return {
        USAGES[u]: np.bincount(raw.labels[raw.usage == u], minlength=len(CLASS_NAMES)).tolist()
        for u in shown_usages(raw)
    }


def official_sizes(counts: dict[str, list[int]]) -> bool:
    """Whether every split has as many images as the complete FER2013."""
    return all(sum(c) == OFFICIAL_SIZES[name] for name, c in counts.items())


def summary(raw: RawFER, root: str, layout: str) -> dict:
    """The machine-readable summary (what ``--json`` prints)."""
    counts = split_counts(raw)
    return {
        "root": root,
        "layout": layout,
        "classes": list(CLASS_NAMES),
        "splits": {name: {**dict(zip(CLASS_NAMES, c)), "total": sum(c)} for name, c in counts.items()},
        "total": int(len(raw.labels)),
        "resized": int(raw.resized),
        "official_sizes": official_sizes(counts),
    }


def format_table(info: dict) -> str:
    """The human-readable summary: one row per class, one column per split, with totals."""
    names = list(info["splits"])
    width = max(11, *(len(n) + 2 for n in names))
    layout = "image folders" if info["layout"] == "folders" else "CSV"
    lines = [f"FER2013 at {info['root']} ({layout}, {info['total']:,} images)"]
    lines.append(f"{'label':<6}{'class':<9}" + "".join(f"{n:>{width}}" for n in names) + f"{'total':>{width}}")
    for label, cls in enumerate(info["classes"]):
        row = [info["splits"][n][cls] for n in names]
        lines.append(f"{label:<6}{cls:<9}" + "".join(f"{v:>{width},}" for v in row) + f"{sum(row):>{width},}")
    totals = [info["splits"][n]["total"] for n in names]
    lines.append(f"{'':<6}{'total':<9}" + "".join(f"{v:>{width},}" for v in totals) + f"{sum(totals):>{width},}")
    expected = " / ".join(f"{n} {OFFICIAL_SIZES[n]:,}" for n in names)
    verdict = "match" if info["official_sizes"] else "DIFFER from"
    lines.append(f"Split sizes {verdict} the complete FER2013 ({expected}).")
    if info["resized"]:
        lines.append(f"{info['resized']:,} images were not 48x48 and were resized to 48x48.")
    return "\n".join(lines)


def download(dest: str | os.PathLike) -> Path:
    """Fetch the Kaggle image-folder edition into ``dest`` with kagglehub; return the copy's root."""
    dest = Path(dest).expanduser().resolve()
    os.environ["KAGGLEHUB_CACHE"] = str(dest)  # kagglehub downloads under its cache folder
    try:
        import kagglehub
    except ImportError:
        raise FER2013Error("--download needs kagglehub, which is not installed: pip install 'fer_sweep[download]'") from None
    try:
        path = kagglehub.dataset_download(KAGGLE_DATASET)
    except Exception as exc:  # network, credentials, Kaggle-side errors: all end as one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FER2013Error(
            f"download of Kaggle dataset {KAGGLE_DATASET} into {dest} failed ({type(exc).__name__}: {reason}); "
            "check the network connection and Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)"
        ) from None
    return Path(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_sweep.data",
        description="Check a FER2013 copy: print the image count of every split and class. Accepts the Kaggle "
        "CSV (fer2013.csv or icml_face_data.csv) or image folders train/<class>/ and test/<class>/.",
    )
    parser.add_argument("path", nargs="?", help="FER2013 folder or CSV file (default: $FER2013_ROOT)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cache-dir", help="tensor cache folder (default: $FER_SWEEP_CACHE or ~/.cache/fer_sweep)")
    parser.add_argument("--no-cache", action="store_true", help="decode every image, neither reading nor writing the cache")
    parser.add_argument("--download", metavar="DIR", help=f"first download FER2013 ({KAGGLE_DATASET}) into DIR with kagglehub")
    return parser.parse_args(argv)


def resolve_root(args: argparse.Namespace) -> str:
    """The copy to summarise: the download, the given path, or $FER2013_ROOT."""
    if args.download and args.path:
        raise FER2013Error(f"got both a path ({args.path}) and --download {args.download}; expected one of them")
    if args.download:
        root = download(args.download)
        print(f"FER2013 downloaded to {root}; train with data.root={root} or FER2013_ROOT={root}", file=sys.stderr)
        return str(root)
    root = args.path or os.environ.get("FER2013_ROOT")
    if not root:
        raise FER2013Error(f"no FER2013 path: give one, set FER2013_ROOT, or use --download DIR; {OBTAIN_HINT}")
    return root


@stops_quietly_when_output_closes
def main(argv: list[str] | None = None) -> int:
    """Print the summary; on bad input print one line to stderr and return 2."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        root = resolve_root(args)
        layout, path = detect_layout(root)
        raw = read_raw(path) if args.no_cache else load_fer2013(path, args.cache_dir)
    except (FER2013Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = summary(raw, str(path), layout)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
