"""Seconds per training epoch of Deep-Emotion on the FER2013 train split: naive, bare loop, fer_sweep.

    python benchmarks/train_speed.py                  # short: 60 timed batches, extrapolated
    python benchmarks/train_speed.py --batches 100 --rounds 5
    python benchmarks/train_speed.py --full           # whole epochs (2 per variant; the 2nd counts)

Deep-Emotion, batch 128, Adam lr 1e-3, the 28,709 faces of the official train split, three ways:

(a) naive: the common reimplementation, as the public Deep-Emotion code (omarsayed7/Deep-Emotion,
    ``main.py``) trains - a torch ``DataLoader`` (``num_workers=0``, shuffled) over the JPEG files,
    each face decoded with PIL, turned into a tensor and normalised per sample (``ToTensor`` +
    ``Normalize(0.5, 0.5)``); the network's plain reference forward (``DeepEmotion.reference_forward``:
    NCHW, ``torch.nn.functional`` ops), PyTorch's default threads, default ``torch.optim.Adam``,
    and the running loss and accuracy read every step (``loss.item()``, ``torch.sum(preds == y)``);
(a2) the same with ``num_workers=2`` (``--workers2``): decoding moves to two worker processes, which
    on two cores then compete with the training process - the better of the naive setups here, so
    a2/c is printed too;
(b) bare loop: the best plain loop - FER2013 in memory as a uint8 tensor, one ``randperm`` per
    epoch, batches gathered with ``index_select`` and normalised per batch, the same network as
    fer_sweep uses (``DeepEmotion.forward``, channels-last), the same optimizer (fused Adam), loss
    and accuracy summed on the device;
(c) fer_sweep: ``conf/`` composed with Hydra's compose API (defaults: csv logger, default callbacks,
    output into a temp dir) and run through ``fer_sweep.train.run`` - the function
    ``python -m fer_sweep`` calls - with an extra callback that timestamps batches and epochs.
    Setup, validation and the end-of-epoch work (checkpoint, metrics file) are not in the epoch
    time; validation is reported separately.

Each measurement runs in a fresh subprocess (process-wide settings - threads, allocator - cannot
leak between variants), the variants interleaved round by round; medians over rounds are reported.
Short mode times ``--batches`` steps after ``--warmup`` steps and extrapolates to the 225 steps of
an epoch (the last one holds 37 faces; counted as full); full mode times whole epochs.

Process settings for (b) and (c):

* ``--threads``: 0 (default) keeps PyTorch's default (one thread per core), as ``python -m
  fer_sweep`` runs with ``threads: null``.  On an idle 2-core machine that is the fastest; on a
  shared one (other jobs busy) OpenMP's spin-waiting threads make every step several times slower,
  and ``--threads 1`` (``threads=1`` for fer_sweep) is the fastest.  ``OMP_WAIT_POLICY=PASSIVE`` in
  the environment is the middle ground.  Check ``load average`` in the header.
* ``--malloc``: glibc's default allocator hands every large freed block back to the OS, so each
  step page-faults its ~10 MB activations in again (about 6,000 faults per step on this network);
  ``tuned`` (default) calls ``mallopt`` so freed blocks are reused, for (b).  fer_sweep does the
  same itself (``malloc_tuning: true`` in ``conf/train.yaml``, :func:`fer_sweep.cpu.tune_allocator`),
  so (c) is measured as it ships (``--override malloc_tuning=false`` to switch it off).

(a) always runs with the defaults.  ``--forward reference`` runs (b) and (c) with the plain network
code, to measure what ``DeepEmotion.forward``'s CPU paths save.  Timings on a shared machine are
noisy: compare variants of one run only; the per-round ratios (neighbours in time) are the steadier
ones, and CPU seconds are printed next to the wall-clock ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from fer_sweep.cpu import cpu_model
from fer_sweep.io import atomic_write_json

BATCH = 128
LR = 1e-3
TRAIN_IMAGES = 28_709
STEPS_PER_EPOCH = math.ceil(TRAIN_IMAGES / BATCH)
VARIANTS = {"a": "naive (JPEG DataLoader, 0 workers)", "a2": "naive (JPEG DataLoader, 2 workers)",
            "b": "bare loop (in-memory uint8)", "c": "fer_sweep (Lightning + Hydra)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("FER2013_ROOT"), help="FER2013 image folders (default: $FER2013_ROOT)")
    p.add_argument("--cache", default=os.environ.get("FER_SWEEP_CACHE"), help="tensor cache folder (default: $FER_SWEEP_CACHE)")
    p.add_argument("--batches", type=int, default=60, help="short mode: timed steps per measurement (default 60)")
    p.add_argument("--warmup", type=int, default=10, help="short mode: untimed steps first (default 10)")
    p.add_argument("--full", action="store_true", help="time whole epochs instead")
    p.add_argument("--epochs", type=int, default=2, help="full mode: epochs per measurement; the first is warm-up (default 2)")
    p.add_argument("--rounds", type=int, default=None, help="measurements per variant, interleaved (default 3 short, 1 full)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=0, help="torch threads for (b) and (c); 0 (default): PyTorch's default, as `python -m fer_sweep` (threads: null) runs. On a shared machine 1 is much faster (see the docstring)")
    p.add_argument("--naive-threads", type=int, default=0, help="torch threads for (a) (0: PyTorch's default)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for (a) (default 0, as the reference Deep-Emotion code)")
    p.add_argument("--workers2", type=int, default=2, help="DataLoader workers for (a2) (default 2)")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned", help="glibc allocator settings for (b) and (c)")
    p.add_argument("--forward", choices=["fast", "reference"], default="fast", help="network forward for (b) and (c): DeepEmotion.forward (default) or the plain reference_forward, to measure what the CPU paths save")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override for (c) (repeatable)")
    p.add_argument("--json", help="write all measurements to this file")
    p.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.full else 3
    return args


# -- process settings --------------------------------------------------------------------------
def use_forward(name: str) -> None:
    """``--forward reference``: every DeepEmotion in this process runs the plain reference forward."""
    if name == "reference":
        from fer_sweep.models.deep_emotion import DeepEmotion

        DeepEmotion.forward = DeepEmotion.reference_forward


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


class Clock:
    """Wall and process-CPU timestamps of the timed window."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, float]] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = (time.perf_counter(), time.process_time())

    def span(self, a: str, b: str) -> tuple[float, float]:
        return self.marks[b][0] - self.marks[a][0], self.marks[b][1] - self.marks[a][1]


def window(args: argparse.Namespace) -> tuple[int, int]:
    """Steps (first timed, first after the timed ones) of the short-mode window."""
    return args.warmup, args.warmup + args.batches


def window_ends(args: argparse.Namespace, clock: Clock, spans: list, step: int) -> bool:
    """Short mode: mark the timed window's start at its first step; at the step after it, record
    the span and return True (the caller stops the epoch).  Full mode: always False."""
    if args.full:
        return False
    first, stop = window(args)
    if step == first:
        clock.mark("t0")
    if step == stop:
        clock.mark("t1")
        spans.append(clock.span("t0", "t1"))
        return True
    return False


def epoch_result(args: argparse.Namespace, spans: list[tuple[float, float]]) -> dict:
    """Seconds per epoch (wall, cpu) from the timed spans: extrapolated (short) or the last epoch (full)."""
    if args.full:
        wall, cpu = spans[-1]
        return {"epoch_s": wall, "epoch_cpu_s": cpu, "epochs_s": [w for w, _ in spans]}
    wall, cpu = spans[0]
    scale = STEPS_PER_EPOCH / args.batches
    return {"epoch_s": wall * scale, "epoch_cpu_s": cpu * scale, "ms_per_step": wall / args.batches * 1e3}


# -- (a) naive ---------------------------------------------------------------------------------
class FolderFaces:
    """``ImageFolder`` + ``Grayscale`` + ``ToTensor`` + ``Normalize((0.5,), (0.5,))`` without torchvision."""

    def __init__(self, root: Path) -> None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.samples = [(str(f), i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        import numpy as np
        import torch
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).unsqueeze(0).float().div(255.0)  # ToTensor
        return x.sub(0.5).div(0.5), label  # Normalize


def run_naive(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from fer_sweep.models.deep_emotion import DeepEmotion

    set_threads(args.naive_threads)
    torch.manual_seed(0)
    data = FolderFaces(Path(args.root) / "train")
    workers = args.workers2 if args.worker == "a2" else args.workers
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers)
    net = DeepEmotion()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    clock, spans = Clock(), []
    train_loss, train_correct = 0.0, 0
    for epoch in range(args.epochs if args.full else 1):
        clock.mark("epoch_start")
        for step, (x, y) in enumerate(loader):
            if window_ends(args, clock, spans, step):
                break
            outputs = net.reference_forward(x)
            loss = F.cross_entropy(outputs, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_loss += loss.item()  # the reference loop's running statistics (a host read per step)
            train_correct += torch.sum(torch.max(outputs, 1)[1] == y)
        if args.full:
            clock.mark("epoch_end")
            spans.append(clock.span("epoch_start", "epoch_end"))
    return {"images": len(data), "threads": torch.get_num_threads(), "workers": workers, **epoch_result(args, spans)}


# -- (b) bare loop -----------------------------------------------------------------------------
def run_bare(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from fer_sweep.cpu import tune_allocator
    from fer_sweep.data.cache import load_fer2013
    from fer_sweep.data.classes import TRAINING
    from fer_sweep.data.preprocess import to_model_input
    from fer_sweep.models.deep_emotion import DeepEmotion

    tuned = tune_allocator() if args.malloc == "tuned" else False
    set_threads(args.threads)
    use_forward(args.forward)
    raw = load_fer2013(args.root, args.cache)
    keep = np.flatnonzero(raw.usage == TRAINING)
    images = torch.from_numpy(raw.images[keep]).contiguous()
    labels = torch.from_numpy(raw.labels[keep]).contiguous()
    torch.manual_seed(0)
    net = DeepEmotion().to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, fused=True)  # as conf/optimizer/adam.yaml
    clock, spans = Clock(), []
    n = len(labels)
    for epoch in range(args.epochs if args.full else 1):
        clock.mark("epoch_start")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for step in range(math.ceil(n / BATCH)):
            if window_ends(args, clock, spans, step):
                break
            idx = order[step * BATCH : (step + 1) * BATCH]
            x = to_model_input(images.index_select(0, idx)).contiguous(memory_format=torch.channels_last)
            y = labels.index_select(0, idx)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        if args.full:
            _ = (loss_sum / n).item(), correct.item()  # what an epoch report reads
            clock.mark("epoch_end")
            spans.append(clock.span("epoch_start", "epoch_end"))
    return {"images": n, "threads": torch.get_num_threads(), "malloc_tuned": tuned, **epoch_result(args, spans)}


# -- (c) fer_sweep -----------------------------------------------------------------------------
class EpochTimer(pl.Callback):
    """Timestamps of batches, validation and epochs (built by Hydra from ``callbacks.epoch_timer``)."""

    clock = Clock()
    records: list[dict] = []

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.clock.mark("epoch_start")
        self.records.append({"epoch": trainer.current_epoch})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self.clock.mark("t0")
        elif batch_idx == self.stop:
            self.clock.mark("t1")
            self.records[-1]["window"] = self.clock.span("t0", "t1")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self.clock.mark("val_start")
            self.records[-1]["train"] = self.clock.span("epoch_start", "val_start")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self.clock.mark("val_end")
            self.records[-1]["val"] = self.clock.span("val_start", "val_end")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.clock.mark("epoch_end")
        self.records[-1].setdefault("train", self.clock.span("epoch_start", "epoch_end"))
        self.records[-1]["epoch_total"] = self.clock.span("epoch_start", "epoch_end")


def compose_fer_sweep(args: argparse.Namespace, out_dir: str):
    from hydra import compose, initialize_config_module

    from fer_sweep.config import register_resolvers

    register_resolvers()
    first, stop = window(args)
    overrides = [
        f"paths.output_dir={out_dir}",
        "test_after_fit=false",
        f"threads={args.threads if args.threads > 0 else 'null'}",
        f"+callbacks.epoch_timer._target_={__name__}.EpochTimer",
        f"+callbacks.epoch_timer.first={first}",
        f"+callbacks.epoch_timer.stop={stop}",
    ]
    if args.root:
        overrides.append(f"data.root={args.root}")
    if args.cache:
        overrides.append(f"data.cache_dir={args.cache}")
    if args.full:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    else:
        overrides += ["trainer.max_epochs=1", f"+trainer.limit_train_batches={stop + 1}"]
    with initialize_config_module(config_module="fer_sweep.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides + list(args.override))


def run_fer_sweep(args: argparse.Namespace) -> dict:
    import logging

    import torch

    from fer_sweep import train

    use_forward(args.forward)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="train_speed_") as out_dir:
        cfg = compose_fer_sweep(args, out_dir)
        tuned = bool(cfg.get("malloc_tuning"))  # fer_sweep tunes the allocator itself (fer_sweep.cpu)
        results = train.run(cfg)
        if results.get("status") != "completed":
            raise RuntimeError(f"fer_sweep run {results.get('status')}: {results.get('error')}")
    log = EpochTimer.records
    if args.full:
        spans = [e["train"] for e in log]
    else:
        spans = [log[0]["window"]]
    out = {"threads": torch.get_num_threads(), "malloc_tuned": tuned, **epoch_result(args, spans)}
    last = log[-1]
    out["val_s"] = last["val"][0] if "val" in last else None
    out["epoch_end_s"] = last["epoch_total"][0] - last["train"][0] - (out["val_s"] or 0.0)
    return out


# -- driver ------------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    fn = {"a": run_naive, "a2": run_naive, "b": run_bare, "c": run_fer_sweep}[args.worker]
    print("RESULT " + json.dumps(fn(args)), flush=True)


def measure(variant: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"variant ({variant}) failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.root or not (Path(args.root) / "train").is_dir():
        raise SystemExit("FER2013 image folders not found: pass --root or set FER2013_ROOT")
    import torch

    mode = "full epochs" if args.full else f"short: {args.batches} steps after {args.warmup} warm-up, x{STEPS_PER_EPOCH / args.batches:.2f} -> 1 epoch"
    print(f"Deep-Emotion, batch {BATCH}, Adam {LR:g}, FER2013 train ({TRAIN_IMAGES} faces, {STEPS_PER_EPOCH} steps/epoch); {mode}")
    print(f"torch {torch.__version__}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; (b),(c): threads={args.threads or 'default'}, malloc={args.malloc}, forward={args.forward}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; rounds={args.rounds}, interleaved")
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for v in args.variants if r % 2 == 0 else args.variants[::-1]:  # a b c, c b a, ...: drift cancels
            res = measure(v, argv)
            runs[v].append(res)
            extra = f", validation {res['val_s']:.2f} s" if res.get("val_s") is not None else ""
            print(f"  round {r + 1} ({v}) {res['epoch_s']:7.2f} s/epoch (cpu {res['epoch_cpu_s']:.2f} s){extra}", flush=True)
    med = {v: statistics.median(x["epoch_s"] for x in runs[v]) for v in runs}
    print("\nseconds per training epoch (median over rounds):")
    for v in args.variants:
        cpu = statistics.median(x["epoch_cpu_s"] for x in runs[v])
        note = f"  cpu {cpu:6.2f} s (main process)  threads {runs[v][0]['threads']}"
        print(f"  ({v}) {VARIANTS[v]:34s} {med[v]:8.2f} s{note}")
    if "c" in runs:
        vals = [x["val_s"] for x in runs["c"] if x.get("val_s") is not None]
        if vals:
            print(f"      (c) validation (3,589 faces, not in the epoch time): {statistics.median(vals):.2f} s; end-of-epoch work (checkpoint, metrics): {statistics.median(x['epoch_end_s'] for x in runs['c']):.3f} s")
    def ratio(x: str, y: str) -> str:
        """Ratio of the medians, and the median of the per-round ratios (neighbours in time, so
        less exposed to the machine's load changing between rounds); cpu: the same for CPU time."""
        per_round = statistics.median(p["epoch_s"] / q["epoch_s"] for p, q in zip(runs[x], runs[y]))
        cpu = statistics.median(p["epoch_cpu_s"] for p in runs[x]) / statistics.median(q["epoch_cpu_s"] for q in runs[y])
        return f"{med[x] / med[y]:.3f}  (per-round median {per_round:.3f}; cpu {cpu:.3f})"

    if "b" in med and "c" in med:
        print(f"  c/b = {ratio('c', 'b')}   target <= 1.15")
    if "a" in med and "c" in med:
        print(f"  a/c = {ratio('a', 'c')}   target >= 3")
    if "a2" in med and "c" in med:
        print(f"  a2/c = {ratio('a2', 'c')}   (a2's cpu: main process only; its workers are not counted)")
    if "c" in med:
        print(f"  (c) {med['c']:.2f} s/epoch      (target <= 15 s)")
    if args.json:
        atomic_write_json(args.json, {"args": vars(args), "cpu": cpu_model(), "runs": runs, "median_epoch_s": med})


if __name__ == "__main__":
    main()
