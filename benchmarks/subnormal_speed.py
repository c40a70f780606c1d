"""What subnormal weights cost on this CPU, and what flushing them to zero gives back.

    python benchmarks/subnormal_speed.py [--model deep_emotion_plus] [--rounds 6] [--threads 2]

The shipped ``deep_emotion_plus`` was trained with L2 weight decay on its fully connected weights;
weights that never get a gradient decayed until they were subnormal (|w| < 1.2e-38), and a CPU
multiplies subnormals about 100x slower than normal numbers.  Two measurements, each with the
shipped weights as they are ("subnormal") and with the subnormal entries set to 0 ("flushed",
:func:`fer_sweep.cpu.flush_subnormals_`), in alternating rounds of the same run (best round):

* a training step (batch 128, channels-last, forward + backward + SGD at lr 0, so the weights stay
  as they are), as :class:`fer_sweep.callbacks.FlushSubnormals` keeps a CPU run;
* one face through the eager network, as :func:`fer_sweep.models.predict.optimise_for_inference`
  now starts from flushed weights.

The inputs are random: the cost is in the weights, not the faces.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from fer_sweep.cpu import cpu_model, flush_subnormals_, tune_allocator
from fer_sweep.models.registry import load_checkpoint
from fer_sweep.weights import resolve_model


def count_subnormal(net: torch.nn.Module) -> tuple[int, int]:
    tiny = torch.finfo(torch.float32).tiny
    ps = [p for p in net.parameters() if p.is_floating_point()]
    return sum(int(((p.abs() < tiny) & (p != 0)).sum()) for p in ps), sum(p.numel() for p in ps)


def best_ms(fns: list, rounds: int, reps: int) -> list[float]:
    """Best-of-``rounds`` milliseconds per call of each function, measured alternately (so load
    from other processes hits all alike)."""
    best = [float("inf")] * len(fns)
    for f in fns:
        for _ in range(3):
            f()
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            for _ in range(reps):
                f()
            best[i] = min(best[i], (time.perf_counter() - t) / reps * 1e3)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deep_emotion_plus", help="shipped model name or checkpoint path")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="torch threads for the training step (0: PyTorch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tune_allocator()
    path, _ = resolve_model(args.model)
    base, _, _ = load_checkpoint(path)
    flushed = copy.deepcopy(base)
    flush_subnormals_(flushed.parameters())
    n_sub, n_all = count_subnormal(base)
    print(f"{cpu_model()}, torch {torch.__version__}; {args.model}: {n_sub:,} of {n_all:,} weights subnormal")
    if not n_sub:
        print("nothing to flush: both variants are the same network")

    x = torch.randn(128, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (128,))
    steps = []
    for net in (base, flushed):
        net = copy.deepcopy(net).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)

        def step(net=net, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        steps.append(step)
    t_sub, t_flush = best_ms(steps, args.rounds, 15)
    print(f"training step, batch 128, {torch.get_num_threads()} threads: subnormal {t_sub:.1f} ms, flushed {t_flush:.1f} ms, "
          f"ratio {t_sub / t_flush:.2f}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    face = torch.randn(1, 1, 48, 48)
    nets = [copy.deepcopy(n).eval() for n in (base, flushed)]
    with torch.inference_mode():
        f_sub, f_flush = best_ms([lambda n=n: n(face) for n in nets], args.rounds, 300)
    torch.set_num_threads(threads)
    print(f"one face, eager, 1 thread: subnormal {f_sub * 1e3:.0f} us, flushed {f_flush * 1e3:.0f} us, ratio {f_sub / f_flush:.2f}")


if __name__ == "__main__":
    main()
