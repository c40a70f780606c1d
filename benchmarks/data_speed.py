"""How fast FER2013 reaches the network: first decode, cached setup, and batches served per second.

    python benchmarks/data_speed.py [--root PATH] [--batch-size 128] [--device auto] [--augment none standard]

1. first decode: every image decoded and written to a fresh, temporary tensor cache;
2. cached setup: ``FER2013DataModule.setup`` served from that cache (median of a few runs);
3. serving: one training epoch through the data module's own loader and per-batch hook
   (``on_after_batch_transfer``: normalise, then augment as ``conf/augment/<name>.yaml`` says),
   on the training device, for each augment setting.

``--synthetic N`` measures the same steps on N random faces written as a temporary CSV copy,
for machines without FER2013 (its decode time is then CSV parsing, not JPEG decoding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fer_sweep.data.cache import load_fer2013
from fer_sweep.data.datamodule import FER2013DataModule

CONF = Path(__file__).resolve().parents[1] / "conf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("FER2013_ROOT"), help="FER2013 copy (default: $FER2013_ROOT)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--augment", nargs="+", default=["none", "standard"], help="conf/augment/<name>.yaml settings to serve")
    p.add_argument("--setups", type=int, default=3, help="cached setups to time (median reported)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N random faces instead of FER2013")
    return p.parse_args()


def write_synthetic_csv(folder: Path, n: int, seed: int = 0) -> Path:
    """A FER2013-shaped CSV of random faces (official Usage proportions) for machines without the data."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, n, p=[0.138, 0.015, 0.143, 0.25, 0.169, 0.112, 0.173])
    usage = rng.choice(["Training", "PublicTest", "PrivateTest"], n, p=[0.8, 0.1, 0.1])
    pixels = rng.integers(0, 256, (n, 48 * 48))
    path = folder / "fer2013.csv"
    with path.open("w") as fh:
        fh.write("emotion,pixels,Usage\n")
        for label, row, u in zip(labels, pixels, usage):
            fh.write(f"{label},{' '.join(map(str, row))},{u}\n")
    return path


def stand_in_trainer(device: torch.device, training: bool) -> SimpleNamespace:
    """The Trainer fields the data module reads: where training runs, whether it is training, the epoch."""
    return SimpleNamespace(strategy=SimpleNamespace(root_device=device), training=training, current_epoch=0)


def make_datamodule(root: str, cache: str, batch_size: int, augment: str, device: torch.device) -> FER2013DataModule:
    dm = FER2013DataModule(root=root, cache_dir=cache, batch_size=batch_size, augment=instantiate(OmegaConf.load(CONF / "augment" / f"{augment}.yaml")))
    dm.trainer = stand_in_trainer(device, training=True)
    return dm


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_decode(root: str, cache: str) -> float:
    t0 = time.perf_counter()
    raw = load_fer2013(root, cache)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in Path(cache).glob("*.pt")) / 2**20
    print(f"first decode        {seconds:8.2f} s   {len(raw.labels):,} images ({len(raw.labels) / seconds:,.0f}/s), cache {size:.0f} MiB")
    return seconds


def cached_setup(root: str, cache: str, batch_size: int, device: torch.device, runs: int) -> float:
    times = []
    for _ in range(runs):
        dm = make_datamodule(root, cache, batch_size, "none", device)
        t0 = time.perf_counter()
        dm.setup("fit")
        sync(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"cached setup        {median:8.2f} s   median of {runs} ({', '.join(f'{t:.2f}' for t in times)}), tensors on {device}")
    return median


def serve_epoch(dm: FER2013DataModule, device: torch.device) -> tuple[int, float]:
    """One training epoch of batches, each through the module's per-batch hook, as Lightning does."""
    n = 0
    sync(device)
    t0 = time.perf_counter()
    for batch in dm.train_dataloader():
        x, y = dm.on_after_batch_transfer(tuple(t.to(device, non_blocking=True) for t in batch), 0)
        n += 1
    sync(device)
    return n, time.perf_counter() - t0


def serving(root: str, cache: str, batch_size: int, augment: str, device: torch.device) -> float:
    dm = make_datamodule(root, cache, batch_size, augment, device)
    dm.setup("fit")
    serve_epoch(dm, device)  # warm-up: kernels, allocator
    batches, seconds = serve_epoch(dm, device)
    images = len(dm.tensors["train"][1])
    print(f"serve augment={augment:<9}{batches / seconds:8.0f} batches/s  ({images / seconds:,.0f} images/s; {batches} batches of {batch_size} in {seconds:.2f} s)")
    return batches / seconds


def main() -> int:
    args = parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    with tempfile.TemporaryDirectory(prefix="fer_speed_") as tmp:
        root = str(write_synthetic_csv(Path(tmp), args.synthetic)) if args.synthetic else args.root
        if not root:
            print("error: no FER2013: give --root PATH, set FER2013_ROOT, or use --synthetic N", file=sys.stderr)
            return 2
        print(f"data {root}{' (synthetic)' if args.synthetic else ''}; device {device}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        cache = str(Path(tmp) / "cache")
        first_decode(root, cache)
        cached_setup(root, cache, args.batch_size, device, args.setups)
        for augment in args.augment:
            serving(root, cache, args.batch_size, augment, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
