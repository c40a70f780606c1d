"""CPU-side settings and helpers that make small-network training and inference fast."""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import sys
import threading
from typing import Any, Callable, Iterable, Sequence


MAX_THREADS = 1024
"""The most CPU threads a ``threads`` setting may ask for: OpenMP crashes (segfault) when asked for
~100,000, and no machine this runs on has more than a few hundred cores."""


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`),
    so that every benchmark's output says which machine it was measured on: speeds differ by
    30-50% between the CPUs a 2-core machine of this project has had.  Read once per process
    (benchmarks ask for it for their header and again for their JSON)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> str:
    """This CPU's instruction-set flags as Linux lists them (``flags`` on x86, ``Features`` on Arm;
    ``""`` elsewhere): what code compiled with ``-march=native`` depends on.  Read once per process."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return value.strip()
    except OSError:
        pass
    return ""


def flush_subnormals_(tensors: Iterable[Any]) -> None:
    """Set the subnormal entries (0 < |x| < ``finfo.tiny``, about 1.2e-38 in float32) of each
    floating-point tensor to zero, in place; other tensors are left alone.

    Why: a CPU multiplies subnormal numbers about 100x slower than normal ones, and weight decay
    makes them: a weight whose input is always 0 gets no gradient, decays towards zero and ends
    subnormal, and so do its optimizer state and its L2 gradient.  Setting them to 0 changes each
    value by less than 1.2e-38 (results are the same within float32 rounding), and a zero with no
    gradient stays zero.  (``torch.set_flush_denormal`` would do it in hardware, but only on the
    calling thread, not on the intra-op threads.)"""
    import torch

    if isinstance(tensors, torch.nn.Module):
        raise TypeError("flush_subnormals_ takes tensors, not a module: pass module.parameters() "
                        "(or fer_sweep.models.predict.flush_subnormals_(module) for parameters and buffers)")
    with torch.inference_mode():  # also takes tensors made under inference_mode; a normal tensor stays normal
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny, 0.0)


def tune_allocator() -> bool:
    """Keep freed large blocks in glibc's heap, so a CPU training step reuses its ~10 MB of
    activation buffers instead of page-faulting them in again (~6,000 faults a step).

    Measured by benchmarks/train_speed.py: -30% time per epoch with 2 threads, -11% with 1.
    The trade-off: the process's resident memory no longer shrinks after a peak."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


class SingleThreadWorkers:
    """Persistent worker threads that each run PyTorch ops on one intra-op thread.

    Why: a small network's ops (10-channel maps) keep two OpenMP threads only partly busy, and
    they synchronise after every op.  Giving each core its own independent slice of a batch and
    running the slices side by side (PyTorch releases the GIL inside ops and TorchScript graphs)
    is faster: Deep-Emotion's batched inference on two cores goes from ~6,500-9,000 to
    ~10,000-10,800 faces/s (``benchmarks/inference_speed.py``).

    Thread counts: PyTorch keeps one per thread, and a process-wide default that a thread reads
    the first time it asks for its count.  Each worker fixes its own count at 1; the default, which
    ``set_num_threads(1)`` in a worker also changes, is put back from a throwaway thread, so neither
    the caller's count nor the count of threads started later changes.

    A task that calls :meth:`starmap` from inside a worker runs inline (no deadlock)."""

    def __init__(self, n: int) -> None:
        import torch

        if n < 1:
            raise ValueError(f"SingleThreadWorkers: n={n}; expected at least 1")
        self.n = int(n)
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(self.n)]
        default = _in_fresh_thread(torch.get_num_threads)
        try:
            ready = [threading.Event() for _ in range(self.n)]
            for i, (q, ev) in enumerate(zip(self._queues, ready)):
                threading.Thread(target=self._serve, args=(q, ev), name=f"fer_sweep-cpu{self.n}-{i}", daemon=True).start()
            for ev in ready:
                ev.wait()
        finally:
            _in_fresh_thread(lambda: torch.set_num_threads(default))

    @staticmethod
    def _serve(tasks: queue.SimpleQueue, ready: threading.Event) -> None:
        import torch

        torch.get_num_threads()  # PyTorch fixes a thread's count lazily, from the default: do it now,
        torch.set_num_threads(1)  # then set this thread's own count (nobody else can change it later)
        _WORKER.active = True
        ready.set()
        while True:
            task = tasks.get()
            fn, items, inference, reply = task
            try:
                with torch.inference_mode(inference):
                    result = (True, [fn(*a) for a in items])
            except BaseException as exc:  # handed back to the caller, raised there
                result = (False, exc)
            reply.put(result)
            del task, fn, items, reply, result  # do not keep the last batch (or network) alive while idle

    def starmap(self, fn: Callable[..., Any], args: Sequence[tuple], inference: bool = False) -> list[Any]:
        """``[fn(*a) for a in args]``, item ``i`` on worker ``i % n``; results in order.  With
        ``inference`` the items run under ``torch.inference_mode()``."""
        if getattr(_WORKER, "active", False):  # called from a worker: run here instead of waiting on ourselves
            import torch

            with torch.inference_mode(inference):
                return [fn(*a) for a in args]
        shares = [list(args[w::self.n]) for w in range(self.n)]
        replies = []
        for q, share in zip(self._queues, shares):
            if share:
                reply: queue.SimpleQueue = queue.SimpleQueue()
                q.put((fn, share, inference, reply))
                replies.append(reply)
        per_worker = []
        error: BaseException | None = None
        for reply in replies:  # wait for every worker before raising, so none is still busy
            ok, value = reply.get()
            if ok:
                per_worker.append(value)
            elif error is None:
                error = value
        if error is not None:
            raise error
        out: list[Any] = [None] * len(args)
        for w, results in enumerate(per_worker):  # workers with work are always 0, 1, ...
            out[w::self.n] = results
        return out


_WORKER = threading.local()


def _in_fresh_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a new, short-lived thread (its thread-local settings die with it)."""
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0] if box else None


_WORKERS: dict[int, SingleThreadWorkers] = {}
_WORKERS_LOCK = threading.Lock()


def _forget_workers_after_fork() -> None:
    """A forked child has none of its parent's threads: it must build its own pool, not wait on one."""
    global _WORKERS_LOCK
    _WORKERS.clear()
    _WORKERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


def single_thread_workers(n: int) -> SingleThreadWorkers:
    """The process's pool of ``n`` :class:`SingleThreadWorkers` (created on first use, then reused)."""
    with _WORKERS_LOCK:
        pool = _WORKERS.get(n)
        if pool is None:
            pool = _WORKERS[n] = SingleThreadWorkers(n)
        return pool
