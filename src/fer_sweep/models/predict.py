"""Inference on 48x48 faces: probabilities with test-time augmentation, metrics, and a faster CPU path.

Shared by ``python -m fer_sweep.evaluate``, the model card (:mod:`fer_sweep.weights.card`) and the
live recognizer, so all of them see faces exactly as training did: uint8 crops go through
:func:`fer_sweep.data.preprocess.to_model_input` and nothing else.

Test-time augmentation (``tta``), averaged over softmax probabilities:

``none``
    the face as it is (1 forward);
``flip``
    the face and its horizontal mirror (2 forwards);
``tencrop``
    the standard ten-crop adapted to 48x48 faces: the four corner and the centre 44x44 crops
    (no padding), each resized back to 48x48 by bilinear interpolation (``align_corners=False``,
    no antialiasing), plus the mirrors of those five (10 forwards).  The 48/44 zoom (x1.09) stays
    inside the scale range the training augmentation uses (0.85-1.15).

:func:`optimise_for_inference` gives a network that computes the same function (checked against
the eager network within 1e-4) faster on a CPU; see its docstring for what it does and why.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_sweep.cpu import flush_subnormals_ as cpu_flush_subnormals_
from fer_sweep.cpu import single_thread_workers
from fer_sweep.data.classes import class_names as default_class_names
from fer_sweep.data.preprocess import SIZE, to_model_input

log = logging.getLogger(__name__)

TTA_MODES: tuple[str, ...] = ("none", "flip", "tencrop")
TTA_VIEWS: dict[str, int] = {"none": 1, "flip": 2, "tencrop": 10}
TENCROP_SIZE = 44
"""Side of the ten-crop crops (48 - 4: a 4-pixel shift, about 8% of the face)."""
_ONE_FACE = torch.Size((1, SIZE, SIZE))

TTA_DESCRIPTIONS: dict[str, str] = {
    "none": "the 48x48 face as is (1 forward pass)",
    "flip": "mean softmax of the face and its horizontal mirror (2 forward passes)",
    "tencrop": f"mean softmax over the 4 corner and the centre {TENCROP_SIZE}x{TENCROP_SIZE} crops, each resized "
               "back to 48x48 (bilinear, align_corners=False), and their horizontal mirrors (10 forward passes)",
}


# ------------------------------------------------------------------------------ inputs and views

def as_face_batch(images: Any) -> torch.Tensor:
    """uint8 faces as a ``(N, 48, 48)`` or ``(N, 1, 48, 48)`` tensor (one ``(48, 48)`` face becomes N=1)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.dtype != torch.uint8:
        raise TypeError(f"faces must be uint8 (0-255 grayscale), got {x.dtype}")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or tuple(x.shape[1:]) != (SIZE, SIZE):
        raise ValueError(f"faces must be (N, {SIZE}, {SIZE}) uint8, got shape {tuple(images.shape)}")
    return x


def _check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}; expected one of {', '.join(TTA_MODES)}")
    return tta


def tencrop_boxes(size: int = SIZE, crop: int = TENCROP_SIZE) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the five crops: four corners, then the centre."""
    m, c = size - crop, (size - crop) // 2
    return [(0, 0), (0, m), (m, 0), (m, m), (c, c)]


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a normalised batch ``x`` ``(N, 1, 48, 48)`` that ``tta`` averages over.

    Views are taken after :func:`to_model_input`; since it is affine per pixel and bilinear weights
    sum to 1, resizing before or after normalising gives the same input."""
    _check_tta(tta)
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(-1)]
    size = x.shape[-1]
    crops = [x[..., y:y + TENCROP_SIZE, c:c + TENCROP_SIZE] for y, c in tencrop_boxes(size)]
    crops = [F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False, antialias=False) for v in crops]
    return crops + [v.flip(-1) for v in crops]


def _net_device(net: nn.Module) -> torch.device:
    dev = getattr(net, "device", None)
    if isinstance(dev, torch.device):
        return dev
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def predict_proba(net: nn.Module, images_uint8: Any, tta: str = "none", batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, C)`` (float32, rows sum to 1) for uint8 faces ``(N, 48, 48)``.

    Faces go through :func:`to_model_input` in chunks of ``batch_size``; with ``tta`` the softmax
    of every view (see :data:`TTA_DESCRIPTIONS`) is averaged.  ``net`` is used as given (put it
    in eval mode, or pass :func:`optimise_for_inference` of it)."""
    _check_tta(tta)
    faces = as_face_batch(images_uint8)
    device = _net_device(net)
    out: list[torch.Tensor] = []
    fused = tta == "none" and isinstance(net, InferenceNet)  # uint8 -> probabilities in one graph
    for start in range(0, len(faces), max(1, int(batch_size))):
        if fused:
            out.append(net.proba(faces[start:start + batch_size]).float())
            continue
        x = to_model_input(faces[start:start + batch_size].to(device))
        views = tta_views(x, tta)
        probs = torch.softmax(net(views[0]).float(), dim=1)
        for v in views[1:]:
            probs += torch.softmax(net(v).float(), dim=1)
        out.append((probs / len(views)).cpu())
    if not out:
        return np.zeros((0, _num_outputs(net)), np.float32)
    return torch.cat(out).numpy()


def _num_outputs(net: nn.Module) -> int:
    n = getattr(net, "num_classes", None)
    if n:
        return int(n)
    with torch.inference_mode():
        return int(net(torch.zeros(1, 1, SIZE, SIZE, device=_net_device(net))).shape[1])


# ------------------------------------------------------------------------------ metrics

def classification_metrics(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

    ``confusion_matrix[i][j]`` counts faces of true class ``i`` predicted as ``j``.  A class never
    predicted has precision 0 (and F1 0), as in scikit-learn's ``zero_division=0``; macro-F1 is the
    plain mean of the per-class F1 over all classes."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    k = len(class_names)
    if labels.shape != preds.shape:
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k) if len(labels) else np.zeros((k, k), np.int64)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {
        "n": int(len(labels)),
        "accuracy": float(tp.sum() / len(labels)) if len(labels) else float("nan"),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


def evaluate(net: nn.Module, images_uint8: Any, labels: Any, tta: str = "none", batch_size: int = 256,
             class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of ``net`` on uint8 faces ``(N, 48, 48)`` with integer ``labels`` (see
    :func:`classification_metrics`), plus ``tta``, ``seconds`` and ``faces_per_s``."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    t0 = time.perf_counter()
    probs = predict_proba(net, images_uint8, tta, batch_size)
    seconds = time.perf_counter() - t0
    if class_names is None:
        class_names = default_class_names(probs.shape[1])
    if probs.shape[1] != len(class_names):
        raise ValueError(f"network has {probs.shape[1]} outputs but {len(class_names)} class names")
    report = classification_metrics(labels, probs.argmax(1), class_names)
    report.update(tta=tta, views=TTA_VIEWS[tta], seconds=round(seconds, 3), faces_per_s=round(len(labels) / seconds, 1) if seconds > 0 else None)
    return report


# ------------------------------------------------------------------------------ faster CPU inference

class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` (stride 2, no padding, floor) as two element-wise maxima of strided views
    (row pairs, then column pairs): the same values, 2-4x faster than ATen's CPU max-pool on these
    few-channel maps.  ``size`` (the input's height and width, set by :func:`optimise_for_inference`
    for the fixed 48x48 input) makes the slices constants of the traced graph."""

    def __init__(self) -> None:
        super().__init__()
        self.size: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.size if self.size is not None else (x.shape[-2], x.shape[-1])
        h, w = h // 2 * 2, w // 2 * 2
        rows = torch.maximum(x[..., 0:h:2, 0:w], x[..., 1:h:2, 0:w])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _is_plain_pool2(m: nn.Module) -> bool:
    def two(v):
        return v in (2, (2, 2))
    return (type(m) is nn.MaxPool2d and two(m.kernel_size) and two(m.stride if m.stride is not None else m.kernel_size)
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)


def _swap_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if _is_plain_pool2(child):
            setattr(module, name, MaxPool2x2())
        else:
            _swap_pools(child)


@torch.no_grad()
def _fix_pool_sizes(net: nn.Module, example: torch.Tensor) -> None:
    """Record every :class:`MaxPool2x2`'s input size for ``example`` (shapes are fixed at 48x48)."""
    pools = [m for m in net.modules() if isinstance(m, MaxPool2x2)]
    hooks = [m.register_forward_pre_hook(lambda m, a: setattr(m, "size", (int(a[0].shape[-2]), int(a[0].shape[-1])))) for m in pools]
    try:
        net(example)
    finally:
        for h in hooks:
            h.remove()


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` into that conv, in place:
    consecutive children of an ``nn.Sequential``, and Deep-Emotion's ``conv4 -> norm``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from fer_sweep.models.deep_emotion import DeepEmotion

    for m in list(net.modules()):
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d) and m[i + 1].track_running_stats:
                    m[i] = fuse_conv_bn_eval(m[i], m[i + 1])
                    m[i + 1] = nn.Identity()
        if isinstance(m, DeepEmotion) and isinstance(m.norm, nn.BatchNorm2d):
            m.conv4 = fuse_conv_bn_eval(m.conv4, m.norm)
            m.norm = nn.Identity()
    return net


def flush_subnormals_(net: nn.Module) -> nn.Module:
    """:func:`fer_sweep.cpu.flush_subnormals_` on every parameter and buffer of ``net``, in place.

    The shipped ``deep_emotion_plus`` has 26,060 subnormal weights, 25,836 of them among the 40,500
    of ``fc1`` (weight decay on weights that get no gradient): on one face they cost ~25% of the time.  Each
    flushed weight changes a logit by less than 1e-37, far below float32 rounding."""
    cpu_flush_subnormals_(list(net.parameters()) + list(net.buffers()))
    return net


class _InferenceDeepEmotion(nn.Module):
    """Mixin for an inference copy of Deep-Emotion: ``affine_grid`` as one small matrix product with
    a precomputed base grid (ATen rebuilds the base grid and runs a batched 3x2 product per call,
    ~20x slower on a CPU), and the first classifier convolution called as a module (so that
    :func:`_tune_convs` can pick its kernel; the training-time autograd shortcut brings nothing here)."""

    def _conv1_relu(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x), inplace=True)

    def stn(self, x: torch.Tensor) -> torch.Tensor:  # same maths as F.affine_grid(align_corners=False)
        theta = self.transform(x)
        h, w = SIZE, SIZE  # InferenceNet only passes 48x48 faces here
        base = self._base_grid_t  # (3, h*w): rows x, y, 1
        grid = (theta.reshape(-1, 3) @ base).view(-1, 2, h * w).transpose(1, 2).reshape(-1, h, w, 2)
        return F.grid_sample(x, grid, align_corners=False)


def _fast_grid(net: nn.Module) -> None:
    from fer_sweep.models.deep_emotion import DeepEmotion

    for m in net.modules():
        if type(m) is DeepEmotion:
            base = F.affine_grid(torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), [1, 1, SIZE, SIZE], align_corners=False)
            base = torch.cat([base.view(SIZE * SIZE, 2), torch.ones(SIZE * SIZE, 1)], 1).t().contiguous()
            m.register_buffer("_base_grid_t", base.to(next(m.parameters()).device), persistent=False)
            m.__class__ = type("DeepEmotionInference", (_InferenceDeepEmotion, DeepEmotion), {})


class ThnnConv2d(nn.Module):
    """A ``Conv2d`` computed by ATen's own im2col + GEMM kernel (``thnn_conv2d``) instead of oneDNN:
    for the few-channel convolutions of Deep-Emotion it is up to 2x faster on single faces."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().contiguous(), requires_grad=False)
        self.kernel_size, self.stride, self.padding = tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._C._nn.thnn_conv2d(x.contiguous(), self.weight, self.kernel_size, self.bias, self.stride, self.padding)


def _thnn_ok(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and hasattr(torch._C._nn, "thnn_conv2d") and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and tuple(m.dilation) == (1, 1) and m.out_channels <= 16)


def _paired_best(a, b, reps: int) -> tuple[float, float]:
    """Best-of-``reps`` times of ``a`` and ``b``, measured alternately (so load from other processes
    hits both alike)."""
    a(), b()
    best_a = best_b = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        best_a, best_b = min(best_a, t1 - t0), min(best_b, t2 - t1)
    return best_a, best_b


@torch.no_grad()
def _tune_convs(net: nn.Module, example: torch.Tensor, reps: int, margin: float = 0.8) -> list[str]:
    """Replace each small ``Conv2d`` of ``net`` by :class:`ThnnConv2d` where that is faster (by more than
    1/``margin``) on the input it sees for ``example``, timed here (best of ``reps``).  Returns the choices."""
    inputs: dict[str, torch.Tensor] = {}
    names = {m: n for n, m in net.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(names[m], a[0].clone()))
             for m in net.modules() if _thnn_ok(m)]
    try:
        net(example)
    finally:
        for h in hooks:
            h.remove()
    chosen = []
    for name, x in inputs.items():
        conv = net.get_submodule(name)
        alt = ThnnConv2d(conv)
        t_default, t_thnn = _paired_best(lambda: conv(x), lambda: alt(x), reps)
        if t_thnn < margin * t_default:
            parent_name, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, attr, alt)
            chosen.append(name)
    return chosen


class InferenceNet(nn.Module):
    """What :func:`optimise_for_inference` returns: frozen TorchScript graphs of the network, one in
    NCHW for small batches and (where it is faster) one in channels-last for large ones, with the
    eager network as the fallback for other input sizes.  Inference only (no gradients).

    ``forward`` maps normalised float faces to logits, like the network.  :meth:`proba` maps uint8
    faces straight to probabilities through graphs that also hold :func:`to_model_input` and the
    softmax (the same functions, traced): for one face that saves 5-10% of the time, which
    otherwise goes to a dozen small Python-level calls around the graph.  With ``parallel`` (the
    default), a batch of at least ``threshold`` faces per torch thread of the caller runs as slices
    side by side on single-threaded workers, one worker per thread (see
    :func:`optimise_for_inference`)."""

    def __init__(self, eager: nn.Module, small: nn.Module, large: nn.Module, threshold: int, num_classes: int | None,
                 plan: dict[str, Any], small_threads: int | None = 1, small_proba: nn.Module | None = None,
                 large_proba: nn.Module | None = None, chunk: int = 0, parallel: bool = True) -> None:
        super().__init__()
        self.eager, self.small, self.large = eager, small, large
        self.small_proba, self.large_proba = small_proba, large_proba
        self.threshold, self.num_classes, self.plan = int(threshold), num_classes, plan
        self.small_threads, self.chunk, self.parallel = small_threads, int(chunk), bool(parallel)
        # the bound TorchScript method for one face, valid when _run would call small_proba directly
        self._one_face = getattr(small_proba, "direct", getattr(small_proba, "forward", None)) if self.threshold > 1 else None

    def _small_runs_on(self, threads: int) -> bool:
        """Whether the small graph runs on the caller's ``threads`` as they are (else on ``small_threads``)."""
        return self.small_threads is None or threads <= self.small_threads

    def _run(self, x: torch.Tensor, small: nn.Module | None, large: nn.Module | None) -> torch.Tensor:
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self._run(x, small, large)
        n = x.shape[0]
        threads = torch.get_num_threads()
        if n >= self.threshold:
            if self.parallel and threads > 1 and n >= threads * self.threshold:
                # independent slices side by side, one or more per core (see SingleThreadWorkers)
                slices = [(part,) for part in x.tensor_split(parallel_slices(n, threads, self.chunk))]
                return torch.cat(single_thread_workers(threads).starmap(large, slices, inference=True))
            if self.chunk and n > self.chunk:  # oneDNN's activations for ~128 faces stay in cache; 512 at once run ~40% slower
                return torch.cat([large(x[s:s + self.chunk]) for s in range(0, n, self.chunk)])
            return large(x)
        if self._small_runs_on(threads):
            return small(x)
        # a few faces are too little work to share between threads: waking them costs more
        # than it saves, and on a busy machine it costs far more (threads wait for each other)
        torch.set_num_threads(self.small_threads)
        try:
            return small(x)
        finally:
            torch.set_num_threads(threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, SIZE, SIZE) or x.requires_grad:
            return self.eager(x)
        return self._run(x, self.small, self.large)

    def proba(self, faces: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, C)`` for uint8 faces ``(N, 48, 48)`` (or ``(N, 1, 48, 48)``):
        ``softmax(net(to_model_input(faces)))``, in one graph call where possible."""
        # one face, as a live recognizer calls it: straight into the small graph's compiled method
        # (skipping nn.Module.__call__ and the dispatch below saves ~15 us of ~330 us a face)
        if faces.shape == _ONE_FACE and faces.dtype == torch.uint8 and self._one_face is not None \
                and torch.is_inference_mode_enabled() and self._small_runs_on(torch.get_num_threads()):
            return self._one_face(faces)
        if faces.dim() == 4 and faces.shape[1] == 1:
            faces = faces[:, 0]
        if faces.dtype != torch.uint8 or faces.dim() != 3 or tuple(faces.shape[1:]) != (SIZE, SIZE) or self.small_proba is None:
            x = to_model_input(as_face_batch(faces))
            return torch.softmax(self.forward(x).float(), dim=1)
        return self._run(faces, self.small_proba, self.large_proba)


def parallel_slices(n: int, workers: int, chunk: int) -> int:
    """How many equal slices a batch of ``n`` faces is cut into for ``workers`` side-by-side
    workers: a multiple of ``workers`` (every worker gets as many), and enough that no slice
    exceeds ``chunk`` faces (0: no limit)."""
    pieces = max(workers, -(-n // chunk) if chunk else workers)
    return -(-pieces // workers) * workers


class _Proba(nn.Module):
    """``softmax(net(to_model_input(uint8 faces)))``, traced into one graph by :func:`optimise_for_inference`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(to_model_input(faces)), dim=1)


class _ChannelsLast(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


# Batch size from which the channels-last graph is used (measured on a 2-core AVX-512 EPYC:
# channels-last is slower for single faces, 1.5-2x faster for batches of 256).
CHANNELS_LAST_FROM = {"deep_emotion": 16, "vgg": 8}

LARGE_BATCH_CHUNK = 128
"""Larger batches run through the channels-last graph in chunks of this many faces (Deep-Emotion,
2 threads: 10.8k faces/s at 128, 9.9k at 256, 6.1k at 512 in one call)."""


def _freeze_both(net: nn.Module, example_u8: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """Frozen traces of ``net`` (normalised float input) and of :class:`_Proba` of it (uint8 input)."""
    logits = torch.jit.freeze(torch.jit.trace(net, to_model_input(example_u8)).eval())
    proba = torch.jit.freeze(torch.jit.trace(_Proba(net).eval(), example_u8).eval())
    return logits, proba


def optimise_for_inference(net: nn.Module, check: bool = True, atol: float = 1e-4, jit: bool = True, tune: bool = True,
                           small_threads: int | None = 1, native: bool = True) -> nn.Module:
    """A faster, inference-only version of ``net`` (the network itself is not changed).

    On a CPU, measured on a 2-core AVX-512 EPYC (``benchmarks/inference_speed.py``):

    * BatchNorm folded into the preceding convolution (:func:`fuse_batchnorm`);
    * subnormal weights set to zero (:func:`flush_subnormals_`; 1.25x for ``deep_emotion_plus``
      on one face);
    * 2x2 max-pools as two element-wise maxima of strided views (:class:`MaxPool2x2`), with their
      sizes fixed for 48x48 faces;
    * Deep-Emotion: ``affine_grid`` as one matrix product with a cached base grid;
    * each small convolution (<= 16 output channels) runs on ATen's im2col+GEMM kernel instead of
      oneDNN where that is faster, timed here on this machine (:func:`_tune_convs`);
    * ``torch.jit.trace`` + ``torch.jit.freeze`` (weights become constants, Python is out of the
      loop), once in NCHW for small batches and once in channels-last for batches of at least
      :data:`CHANNELS_LAST_FROM` (oneDNN's faster layout there, slower for single faces);
    * each graph also exists with :func:`to_model_input` and the softmax inside
      (:meth:`InferenceNet.proba`, uint8 faces in, probabilities out), saving the Python-level calls
      around the network (5-10% of the time for one face);
    * one face under ``torch.inference_mode()`` on one thread goes straight to the small graph's
      compiled method (:meth:`InferenceNet.proba`; ~15 us of ~330 us a face);
    * Deep-Emotion with ``native`` (default): :meth:`InferenceNet.proba` (uint8 faces to
      probabilities: the recognizer's per-face calls, ``predict_proba`` without TTA) runs one compiled
      C++ call per batch or slice instead of a TorchScript graph (:mod:`fer_sweep.models.native`;
      built on first use, skipped where it cannot be built, and checked against eager like the rest;
      it releases the GIL, so slices still run side by side).  ``forward`` (float input, logits)
      keeps the graphs;
    * batches larger than :data:`LARGE_BATCH_CHUNK` run in chunks of that size (cache-sized);
    * with ``T > 1`` torch threads, a batch of at least ``T`` x :data:`CHANNELS_LAST_FROM` faces
      is cut into equal slices (:func:`parallel_slices`: ``T`` of them, or a multiple of ``T``
      so that none exceeds :data:`LARGE_BATCH_CHUNK`) that run side by side on ``T`` worker threads
      with one intra-op thread each (:class:`fer_sweep.cpu.SingleThreadWorkers`;
      ``InferenceNet.parallel``).  A few-channel op keeps two OpenMP threads only partly busy and
      makes them wait for each other after every op; slices do not.  Deep-Emotion, batches of 256
      on two cores: ~6,500-9,000 -> ~10,000-10,800 faces/s (VGG +2-9%); outputs within float
      rounding of the one-call path (bit-identical here).  Measured on 2 cores only;
    * batches below :data:`CHANNELS_LAST_FROM` run on ``small_threads`` threads (1; ``None`` leaves the caller's
      count): waking more threads for one face costs more than it saves, and on a busy machine
      far more.  Larger batches that are not sliced use the caller's ``torch.set_num_threads``.

    Tried and not kept: ``torch.jit.optimize_for_inference`` (MKLDNN layout; slower here) and
    ``torch.compile`` (faster than eager, but on one face at 1,650 faces/s about half the speed of
    the frozen graph here, after 14 s of compiling per batch size) and TorchScript's NNC CPU fuser
    (~20% slower).  On other devices: the eager network with BatchNorm folded.

    With ``check`` the result is compared with the eager network on random faces (batch 1 and 64)
    and refused (the eager network is returned, with a warning) if any logit differs by more than
    ``atol`` times max(1, |logit|)."""
    from fer_sweep.models.registry import net_spec

    eager = net.eval()
    device = _net_device(net)
    work = flush_subnormals_(fuse_batchnorm(copy.deepcopy(eager).float().eval()))
    for p in work.parameters():
        p.requires_grad_(False)
    num_classes = getattr(net, "num_classes", None)
    if device.type != "cpu" or not jit:
        return work
    try:
        name = net_spec(net)["name"]
    except TypeError:
        name = ""
    gen = torch.Generator().manual_seed(0)
    probe_u8 = torch.randint(0, 256, (64, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    probe = to_model_input(probe_u8)
    native_proba = _native_proba(work) if native and name == "deep_emotion" else None
    _swap_pools(work)
    _fast_grid(work)
    _fix_pool_sizes(work, probe[:1])
    threshold = CHANNELS_LAST_FROM.get(name, 1 << 30)
    has_large = threshold < (1 << 30)  # a channels-last graph for large batches
    try:
        with torch.no_grad(), _quiet_tracer():
            small_eager = copy.deepcopy(work)
            threads = torch.get_num_threads()
            torch.set_num_threads(min(threads, small_threads or threads))  # as InferenceNet runs it
            try:
                small_thnn = _tune_convs(small_eager, probe[:1], reps=30) if tune else []
            finally:
                torch.set_num_threads(threads)
            small, small_proba = _freeze_both(small_eager, probe_u8[:2])
            large, large_proba, large_thnn = small, small_proba, small_thnn
            if has_large:
                large_eager = _ChannelsLast(copy.deepcopy(work))
                large_thnn = _tune_convs(large_eager, probe[:32], reps=5) if tune else []
                large, large_proba = _freeze_both(large_eager, probe_u8[:threshold])
            if native_proba is not None:  # uint8 faces to probabilities: the C++ kernel at every batch size
                small_proba = large_proba = native_proba
    except Exception as exc:  # a network TorchScript cannot trace stays eager (BatchNorm still folded)
        log.warning("optimise_for_inference: tracing %s failed (%s); using the eager network", type(net).__name__, str(exc).splitlines()[0])
        return work
    chunk = LARGE_BATCH_CHUNK if has_large else 0
    plan = {"network": name, "channels_last_from": threshold, "thnn_convs_small": small_thnn, "thnn_convs_large": large_thnn,
            "chunk": chunk, "parallel_slices": has_large, "native_proba": native_proba is not None}
    fast = InferenceNet(eager, small, large, threshold, num_classes, plan, small_threads, small_proba, large_proba, chunk,
                        parallel=has_large)
    if check:
        with torch.inference_mode():
            for x in (probe[:1], probe):
                ref, got = eager(x), fast(x)
                err = float((ref - got).abs().max())
                tol = atol * max(1.0, float(ref.abs().max()))
                u8 = probe_u8[:len(x)]
                err_p = float((torch.softmax(ref, 1) - fast.proba(u8)).abs().max())
                if not (err <= tol and err_p <= atol):
                    if native_proba is not None and err <= tol:  # only the C++ path is off: keep the graphs
                        log.warning("optimise_for_inference: the native kernel's probabilities differ from eager by %.2e (> %.0e); "
                                    "using TorchScript", err_p, atol)
                        return optimise_for_inference(net, check=check, atol=atol, jit=jit, tune=tune, small_threads=small_threads, native=False)
                    log.warning("optimise_for_inference: %s differs from eager by %.2e (> %.0e); using the eager network", type(net).__name__, err, tol)
                    return eager
    return fast


def _native_proba(work: nn.Module) -> nn.Module | None:
    """The C++ single-face path for a plain Deep-Emotion with BatchNorm folded (``work``), or ``None``."""
    from fer_sweep.models.deep_emotion import DeepEmotion
    from fer_sweep.models.native import NativeDeepEmotionProba, load_kernel

    if type(work) is not DeepEmotion:
        return None
    kernel = load_kernel()
    return None if kernel is None else NativeDeepEmotionProba(work, kernel)


class _quiet_tracer:
    """Silence TracerWarnings (shapes are fixed at 48x48; the batch size stays free)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return self

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
