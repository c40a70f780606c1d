"""Training steps of K Deep-Emotion networks: one after another, or packed into one network.

    python benchmarks/packed_speed.py [--k 20] [--batch 128] [--steps 30] [--warmup 5] [--rounds 3]
                                      [--device auto|cpu|cuda] [--precision 32|bf16] [--json out.json]

Both variants train the same K networks (the study's grid has 20) on batches of ``--batch`` faces
each, with Adam, forward, backward and update:

* separate: K :class:`~fer_sweep.models.deep_emotion.DeepEmotion` networks, each with its own
  ``torch.optim.Adam``, stepped one after another in this process (what K jobs cost when they
  take turns on one device; on the CPU each uses the project's fast training path);
* packed: one :class:`~fer_sweep.models.packed.PackedDeepEmotion` of the K networks and
  :class:`~fer_sweep.models.packed.PackedAdam` (what ``hydra/launcher=packed`` runs), its
  convolutions on NCHW tensors;
* packed_cl: the same on channels-last tensors (what a pack runs with ``model.channels_last=true``,
  the default): grouped convolutions are fast in one layout or the other depending on the device.

The variants alternate over ``--rounds`` and the median round is reported: seconds per step of all
K networks, the ratio separate/packed, and what that step time means for the study's grid (20 jobs x
200 epochs x 225 steps of batch 128 on the 28,709 training faces, validation not included).  Faces
are random: speed does not depend on content.  On a GPU every timed step ends with a device
synchronisation.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fer_sweep.cpu import cpu_model
from fer_sweep.data.preprocess import to_model_input
from fer_sweep.io import atomic_write_json
from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.packed import PackedAdam, PackedDeepEmotion

GRID_JOBS, GRID_EPOCHS, TRAIN_FACES = 20, 200, 28_709


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=GRID_JOBS, help="networks trained together (default 20, the study's grid)")
    p.add_argument("--batch", type=int, default=128, help="faces per network per step (default 128, the study's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN picks its kernels)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: autocast, as trainer.precision=bf16-mixed")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = p.parse_args(argv)
    for key in ("k", "batch", "steps", "rounds"):
        if getattr(args, key) < 1:
            p.error(f"--{key}={getattr(args, key)}: expected an integer >= 1")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, precision: str):
    import contextlib

    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def separate_step(nets, optimizers, faces, labels, device, precision) -> None:
    for net, opt, x, y in zip(nets, optimizers, faces, labels):
        with _autocast(device, precision):
            logits = net(to_model_input(x))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def packed_step(packed, optimizer, faces, labels, device, precision) -> None:
    k, b = faces.shape[:2]
    x = to_model_input(faces.reshape(k * b, *faces.shape[2:])).view(k, b, 1, *faces.shape[2:])
    with _autocast(device, precision):
        logits = packed(x)
    losses = F.cross_entropy(logits.float().reshape(k * b, -1), labels.reshape(-1), reduction="none").view(k, b).mean(1)
    optimizer.zero_grad()
    losses.sum().backward()
    optimizer.step()


def time_steps(step, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    torch.manual_seed(0)
    nets = [DeepEmotion().to(device).train() for _ in range(args.k)]
    packed = PackedDeepEmotion(nets).to(device).train()
    packed_cl = PackedDeepEmotion(nets, channels_last=True).to(device).train()
    optimizers = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    packed_opt = PackedAdam(list(packed.parameters()), torch.full((args.k,), 1e-3, device=device))
    packed_cl_opt = PackedAdam(list(packed_cl.parameters()), torch.full((args.k,), 1e-3, device=device))
    faces = torch.randint(0, 256, (args.k, args.batch, 48, 48), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 7, (args.k, args.batch), device=device)
    variants = {
        "separate": lambda: separate_step(nets, optimizers, faces, labels, device, args.precision),
        "packed": lambda: packed_step(packed, packed_opt, faces, labels, device, args.precision),
        "packed_cl": lambda: packed_step(packed_cl, packed_cl_opt, faces, labels, device, args.precision),
    }
    print(f"Deep-Emotion training steps, K={args.k} networks x batch {args.batch}, Adam, precision {args.precision}, torch {torch.__version__}")
    print(f"device: {device.type}: {name}; {args.steps} timed steps after {args.warmup} warm-up, {args.rounds} alternating rounds")
    for step in variants.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for key, step in (variants.items() if r % 2 == 0 else reversed(list(variants.items()))):
            t = time_steps(step, args.steps, device)
            times[key].append(t)
            print(f"  round {r + 1} {key:9s} {t * 1e3:9.2f} ms per step of {args.k} networks")
    median = {k: statistics.median(v) for k, v in times.items()}
    steps_per_epoch = math.ceil(TRAIN_FACES / args.batch)
    grid_steps = GRID_JOBS * GRID_EPOCHS * steps_per_epoch / args.k  # steps of K networks
    print("\nmedian seconds per step of all K networks:")
    for key, t in median.items():
        print(f"  {key:9s} {t * 1e3:9.2f} ms  ({args.k * args.batch / t:,.0f} faces/s trained)")
    ratio = median["separate"] / median["packed"]
    ratio_cl = median["separate"] / median["packed_cl"]
    print(f"  separate/packed = {ratio:.2f}, separate/packed_cl = {ratio_cl:.2f}")
    projection = {k: grid_steps * t / 60 for k, t in median.items()}
    print(f"study grid ({GRID_JOBS} x {GRID_EPOCHS} epochs, {steps_per_epoch} steps of batch {args.batch}), training steps only: "
          + ", ".join(f"{k} {m:.1f} min" for k, m in projection.items()) + " (target: whole grid <= 10 min on one H100)")
    result = {"device": device.type, "device_name": name, "k": args.k, "batch": args.batch, "precision": args.precision, "torch": torch.__version__,
              "step_s": times, "median_step_s": median, "separate_over_packed": ratio, "separate_over_packed_cl": ratio_cl, "grid_training_minutes": projection}
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
