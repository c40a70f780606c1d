"""Deep-Emotion's single-face inference as one compiled C++ call (``deep_emotion_native.cpp``).

Why: for one 48x48 face the frozen TorchScript graph of :func:`fer_sweep.models.predict.optimise_for_inference`
runs ~60 small ATen ops, and dispatching them costs about as much as their arithmetic.  The C++
kernel runs the whole network (uint8 face in, probabilities out) in one call with every activation in
the cache, each convolution as whole planes of 5 output channels x 64 positions accumulated in
AVX-512 registers (5 x 16 with AVX2), conv2 and its pool by Winograd's F(2x2, 3x3) (fewer than half
the multiplications), the affine sampling vectorised and the FC layers summed in vector lanes.  On a
2-core AVX-512 Intel Xeon (``benchmarks/inference_speed.py``, which times both side by side;
``docs/benchmarks/inference_speed_2026-12-03.txt``, before the Winograd conv2): 4.5x the frozen graph's
rate for single faces (9,555 against 2,120 faces/s), 2x for batches of 256 on two threads (18,657
against 9,065).
It releases the GIL, so the 2-thread path's slices run side by side.

The kernel is compiled on first use with the C++ compiler PyTorch finds (``torch.utils.cpp_extension``,
``-O3 -march=native``; about a minute, once per machine type: the build is cached in
``~/.cache/torch_extensions`` under a name that includes this CPU's instruction-set flags, so a
home directory shared by different CPUs never loads code built for another; where the flags cannot
be read, the build is generic, without ``-march=native``).  Without a compiler or ninja, on
Windows, or with ``FER_SWEEP_NATIVE=0`` in the environment, :func:`load_kernel` returns ``None`` and
the TorchScript path is used.  A build lock older than 10 minutes (a killed build) is removed first:
torch would otherwise wait on it forever.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from fer_sweep.cpu import cpu_flags
from fer_sweep.data.preprocess import MEAN, STD

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("deep_emotion_native.cpp")

PARAMETER_ORDER = (
    "localization.0.weight", "localization.0.bias", "localization.3.weight", "localization.3.bias",
    "fc_loc.0.weight", "fc_loc.0.bias", "fc_loc.2.weight", "fc_loc.2.bias",
    "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
    "conv4.weight", "conv4.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
)
"""The kernel's parameters, in its order (a Deep-Emotion state dict with BatchNorm folded into conv4)."""


def compiler_flags(flags: str | None = None) -> list[str]:
    """``-O3``, and ``-march=native`` only where the instruction-set flags are known (they key the
    build): elsewhere (macOS, Windows, no ``/proc``) two CPUs could share a cached build, so it is
    built for the generic target."""
    flags = cpu_flags() if flags is None else flags
    return ["-O3", "-march=native"] + openmp_flags() if flags else ["-O3"] + openmp_flags()


def openmp_flags() -> list[str]:
    """``-fopenmp`` on Linux, where torch's wheels run their threads on a ``libgomp.so.1`` that the
    extension then shares (the loader matches the already loaded library by its soname): the training
    kernel's parts run on torch's OpenMP threads (see ``split`` in the source).  Elsewhere (macOS's
    clang has no OpenMP by default) it uses threads of its own."""
    return ["-fopenmp"] if sys.platform.startswith("linux") else []


def build_key(flags: str | None = None) -> str:
    """What the compiled code depends on (the instruction-set flags, the compiler flags, the torch
    build, the source), hashed into the extension's name."""
    flags = cpu_flags() if flags is None else flags
    text = "|".join([flags or platform.machine(), " ".join(compiler_flags(flags)), torch.__version__, SOURCE.read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


STALE_LOCK_S = 600
"""A build lock older than this is left by a killed build (torch waits on it forever): removed."""


def _build_dir(name: str) -> Path | None:
    """Where torch's extension cache builds ``name`` (``None`` if torch's private helper changed)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private: used for best-effort checks only

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


def _clear_stale_lock(name: str) -> None:
    build = _build_dir(name)
    lock = build / "lock" if build is not None else None
    try:
        if lock is not None and lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            log.warning("removing a stale build lock %s (a killed build left it)", lock)
            lock.unlink(missing_ok=True)
    except OSError:
        pass


def native_disabled() -> bool:
    return os.environ.get("FER_SWEEP_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _built(name: str) -> bool:
    """Whether torch's extension cache already holds a build of ``name`` (unknown: ``True``, no notice)."""
    build = _build_dir(name)
    return build is None or any(build.glob(f"{name}.*"))


@functools.lru_cache(maxsize=1)
def load_kernel():
    """The compiled kernel module (built on the first call in a process if it is not cached), or ``None``."""
    if native_disabled():
        return None
    if sys.platform == "win32":  # MSVC has no GCC vector extensions
        return None
    name = f"fer_sweep_deep_emotion_{build_key()}"
    _clear_stale_lock(name)
    if not _built(name):  # a warning, so that it shows without any logging set up (the recognizer's first start waits)
        log.warning("compiling the native Deep-Emotion kernel for this CPU (once per machine type, about a minute)")
    try:
        from torch.utils.cpp_extension import load

        return load(name=name, sources=[str(SOURCE)], extra_cflags=compiler_flags(), extra_ldflags=openmp_flags(), verbose=False)
    except Exception as exc:  # no compiler, no ninja, a failed build: the TorchScript path stays
        log.debug("native Deep-Emotion kernel build failed", exc_info=True)
        log.warning("native Deep-Emotion kernel unavailable (%s); using TorchScript", _first_error(exc))
        return None


def _first_error(exc: BaseException) -> str:
    """The compiler's first ``error:`` line if the message has one, else its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors[0] if errors else lines[-1]) if lines else type(exc).__name__


class NativeDeepEmotionProba(nn.Module):
    """``softmax(net(to_model_input(faces)))`` for uint8 faces ``(N, 48, 48)`` on the CPU, by the kernel.

    ``net`` is a Deep-Emotion with BatchNorm folded into conv4 (what
    :func:`fer_sweep.models.predict.fuse_batchnorm` makes); its weights are copied."""

    def __init__(self, net: nn.Module, kernel) -> None:
        super().__init__()
        state = net.state_dict()
        missing = [k for k in PARAMETER_ORDER if k not in state]
        if missing or any(k.startswith("norm.") for k in state):
            raise ValueError(f"NativeDeepEmotionProba: needs a Deep-Emotion with BatchNorm folded in; missing {missing or 'the fold'}")
        params = [state[k].detach().to("cpu", torch.float32).contiguous().clone() for k in PARAMETER_ORDER]
        self.direct = kernel.Net(params, MEAN, STD).proba  # the C++ object keeps the tensors
        """The compiled call itself (what :class:`~fer_sweep.models.predict.InferenceNet` calls for one
        face): uint8 ``(N, 48, 48)`` or ``(N, 1, 48, 48)`` in, probabilities out; anything else is a
        ``ValueError`` naming the shape and type it got."""

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.direct(faces)


FEATURE_PARAMETERS = PARAMETER_ORDER[:16]
"""The parameters of the features stage the training kernel runs (everything before BatchNorm)."""


class NativeFeatures(torch.autograd.Function):
    """Deep-Emotion's features stage in training, by the kernel: attention branch, affine sampling and
    conv1-conv4, up to conv4's output ``(N, 10, 18, 18)`` before BatchNorm (whose batch statistics
    couple the faces, so it and the layers after it stay in PyTorch).  Forward keeps what the backward
    reads (~170 KB a face); backward returns the 16 parameters' gradients (``FEATURE_PARAMETERS``
    order) and no input gradient (training never needs it; :func:`use_native_features` checks that the
    input does not ask for one).  The batch is split over ``torch.get_num_threads()`` threads."""

    @staticmethod
    def forward(ctx, kernel, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        flat = [p.detach().contiguous() for p in params]
        out, saved, choice = kernel.train_forward(x.detach(), flat, torch.get_num_threads())
        ctx.kernel, ctx.flat = kernel, flat
        ctx.save_for_backward(saved, choice)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        saved, choice = ctx.saved_tensors
        grads = ctx.kernel.train_backward(grad.contiguous(), saved, choice, ctx.flat, torch.get_num_threads())
        return (None, None, *grads)


def use_native_features(x: torch.Tensor):
    """The kernel module if the features stage of a training forward on ``x`` can run natively (float32
    ``(N, 1, 48, 48)`` on the CPU, gradients on, none asked for the input), else ``None``."""
    if not torch.is_grad_enabled() or x.requires_grad or x.dim() != 4 or tuple(x.shape[1:]) != (1, 48, 48) or x.shape[0] == 0:
        return None
    return load_kernel()
