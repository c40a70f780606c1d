"""Faces per second of the shipped models on this CPU: plain eager PyTorch vs the project's
optimised inference path (:func:`fer_sweep.models.predict.optimise_for_inference`).

    python benchmarks/inference_speed.py [--models vgg deep_emotion_plus] [--threads 1 2]
                                         [--batch 256] [--seconds 4] [--rounds 3] [--json out.json]

Two workloads, each measured in the same run for both paths:

* single: one 48x48 uint8 face per call, batch 1, to probabilities: ``to_model_input``, the network
  and the softmax (what a live recognizer does for one face; the optimised path runs all three in
  one graph, ``InferenceNet.proba``, as the recognizer does);
* batched: ``--batch`` faces per call (as ``python -m fer_sweep.evaluate`` runs).

Eager is ``net.eval()`` under ``torch.no_grad()``; optimised is ``optimise_for_inference(net)`` under
``torch.inference_mode()``.  For Deep-Emotion the optimised path from uint8 faces is the compiled C++ kernel
(:mod:`fer_sweep.models.native`) where it builds; both workloads then also time
``optimise_for_inference(net, native=False)`` (the TorchScript graphs) in the same rounds.  Both paths are timed in alternating rounds (so load from other processes
hits both alike) and the best round is reported, in wall-clock faces/s and in faces per CPU-second of
this process (``time.process_time``; with 1 thread, the rate on a core of its own).  The load average
is printed, since on a shared machine wall-clock rates depend on it.  Outputs of the two paths are
compared (max |logit difference| and max |probability difference|) on the same faces.  Faces are random: speed does not depend on content.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fer_sweep.cpu import cpu_model
from fer_sweep.data.preprocess import to_model_input
from fer_sweep.io import atomic_write_json
from fer_sweep.models.predict import optimise_for_inference
from fer_sweep.models.registry import load_checkpoint
from fer_sweep.weights import shipped_models


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="shipped model names or checkpoint paths (default: every shipped model)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts to measure (default: 1 2)")
    p.add_argument("--batch", type=int, default=256, help="faces per call in the batched workload")
    p.add_argument("--seconds", type=float, default=4.0, help="approximate seconds per path and workload (split over the rounds)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per measurement; the best is reported")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    return p.parse_args(argv)


def probabilities(net, grad_ctx):
    """uint8 faces -> probabilities: ``net.proba`` where the network has it (the optimised one: what
    the recognizer and ``evaluate`` call), else ``softmax(net(to_model_input(faces)))``."""
    proba = getattr(net, "proba", None)

    def run(u8: torch.Tensor) -> torch.Tensor:
        with grad_ctx():
            return proba(u8) if proba is not None else torch.softmax(net(to_model_input(u8)), dim=1)
    return run


def make_single(net, faces: np.ndarray, grad_ctx):
    run = probabilities(net, grad_ctx)

    def call(i: int):
        return run(torch.from_numpy(faces[i % len(faces)][None]))
    return call


def make_batched(net, faces: np.ndarray, batch: int, grad_ctx):
    chunks = [faces[s:s + batch] for s in range(0, len(faces) - batch + 1, batch)]
    run = probabilities(net, grad_ctx)

    def call(i: int):
        return run(torch.from_numpy(chunks[i % len(chunks)]))
    return call


def timed(call, per_call: int, seconds: float) -> dict[str, float]:
    """Run ``call`` for about ``seconds``; faces/s by wall clock and per CPU-second."""
    call(0)
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        call(n)
        n += 1
        wall = time.perf_counter() - w0
        if wall >= seconds and n >= 3:
            break
    cpu = time.process_time() - c0
    return {"calls": n, "wall_faces_s": n * per_call / wall, "cpu_faces_s": n * per_call / cpu if cpu > 0 else float("nan")}


def measure(paths: dict[str, object], per_call: int, seconds: float, rounds: int) -> dict[str, dict]:
    runs: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            runs[name].append(timed(call, per_call, seconds / rounds))
    out = {}
    for name, rs in runs.items():
        best = max(rs, key=lambda r: r["wall_faces_s"])
        out[name] = {"best_wall_faces_s": best["wall_faces_s"], "best_cpu_faces_s": max(r["cpu_faces_s"] for r in rs),
                     "median_wall_faces_s": statistics.median(r["wall_faces_s"] for r in rs), "rounds": rs}
    return out


def resolve(models: list[str] | None) -> dict[str, Path]:
    shipped = shipped_models()
    if not models:
        return shipped
    out = {}
    for m in models:
        if m in shipped:
            out[m] = shipped[m]
        elif Path(m).is_file():
            out[Path(m).stem] = Path(m)
        else:
            raise SystemExit(f"inference_speed: {m}: not a shipped model ({', '.join(shipped)}) or a checkpoint file")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    models = resolve(args.models)
    if not models:
        raise SystemExit("inference_speed: no shipped weights in fer_sweep/weights and no --models given")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (max(4 * args.batch, 1024), 48, 48), dtype=np.uint8)
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    results = []
    for name, path in models.items():
        net, _, _ = load_checkpoint(path)
        params = sum(p.numel() for p in net.parameters())
        for threads in args.threads:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fast = optimise_for_inference(net)
            t_opt = time.perf_counter() - t0
            native = bool(getattr(fast, "plan", {}).get("native_proba"))
            scripted = optimise_for_inference(net, native=False) if native else None  # the same without the C++ kernel
            u8 = torch.from_numpy(faces[:args.batch])
            x = to_model_input(u8)
            with torch.inference_mode():
                err = max(float((fast(x[:1]) - net(x[:1])).abs().max()), float((fast(x) - net(x)).abs().max()))
                err_p = max(float((probabilities(fast, torch.inference_mode)(u) - torch.softmax(net(to_model_input(u)), 1)).abs().max())
                            for u in (u8[:1], u8))
            # VGG is ~70x the work of Deep-Emotion: scale its time budget so the run stays short
            secs = args.seconds * (2.0 if params > 1e6 else 1.0)
            for workload, per_call, mk in (("single", 1, lambda m, ctx: make_single(m, faces, ctx)),
                                          ("batched", args.batch, lambda m, ctx: make_batched(m, faces, args.batch, ctx))):
                paths = {"eager": mk(net, torch.no_grad), "optimised": mk(fast, torch.inference_mode)}
                if scripted is not None:
                    paths["torchscript"] = mk(scripted, torch.inference_mode)
                r = measure(paths, per_call, secs, args.rounds)
                row = {"model": name, "params": params, "threads": threads, "workload": workload, "batch": per_call,
                       "eager": r["eager"], "optimised": r["optimised"], "torchscript": r.get("torchscript"),
                       "max_abs_logit_diff": err, "max_abs_proba_diff": err_p, "optimise_s": t_opt,
                       "plan": getattr(fast, "plan", None)}
                results.append(row)
                ts = f"  (without the C++ kernel {r['torchscript']['best_wall_faces_s']:.0f}/s)" if "torchscript" in r else ""
                print(f"  {name:18s} threads={threads} {workload:8s} eager {r['eager']['best_wall_faces_s']:8.0f}/s  "
                      f"optimised {r['optimised']['best_wall_faces_s']:8.0f}/s  (per CPU-s: {r['eager']['best_cpu_faces_s']:.0f} -> "
                      f"{r['optimised']['best_cpu_faces_s']:.0f}){ts}", flush=True)
    load1 = os.getloadavg()
    print_table(results, args.batch, load0, load1)
    if args.json:
        atomic_write_json(args.json, {"torch": torch.__version__, "cpu": cpu_model(), "cpus": os.cpu_count(), "loadavg_start": load0,
                                      "loadavg_end": load1, "results": results})
        print(f"wrote {args.json}")
    return 0


def print_table(results: list[dict], batch: int, load0, load1) -> None:
    print()
    print(f"Faces/s, best of alternating rounds (load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
          "'per CPU-s' = faces per second of this process's CPU time)")
    print()
    print("| model | threads | workload | eager faces/s | optimised faces/s | ratio | optimised without the C++ kernel | eager per CPU-s | optimised per CPU-s | max abs logit diff |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        e, o, t = r["eager"], r["optimised"], r.get("torchscript")
        wl = "single (batch 1)" if r["workload"] == "single" else f"batched ({batch})"
        ts = f"{t['best_wall_faces_s']:,.0f} ({o['best_wall_faces_s'] / t['best_wall_faces_s']:.2f}x)" if t else "-"
        print(f"| {r['model']} | {r['threads']} | {wl} | {e['best_wall_faces_s']:,.0f} | {o['best_wall_faces_s']:,.0f} | "
              f"{o['best_wall_faces_s'] / e['best_wall_faces_s']:.2f}x | {ts} | {e['best_cpu_faces_s']:,.0f} | {o['best_cpu_faces_s']:,.0f} | "
              f"{r['max_abs_logit_diff']:.1e} |")


if __name__ == "__main__":
    sys.exit(main())
