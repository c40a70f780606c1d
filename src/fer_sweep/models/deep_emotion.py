"""Deep-Emotion (Minaee & Abdolrashidi, arXiv 1902.01019): a small CNN behind a spatial transformer.

The localisation network looks at the 48x48 face and predicts an affine transform (initialised to
the identity) that ``affine_grid``/``grid_sample`` apply to the input, so the classifier sees the
face re-framed on the regions that matter.  Layer sizes follow the paper's reference code (its
ReLUs after conv1 and conv3 included).  Unlike that code, dropout is on only in training mode.

Speed on the CPU (same parameters, same state dict, same results within float32 rounding; see
``tests/test_speed_equivalence.py`` and ``benchmarks/train_speed.py``):

* the first classifier convolution has a single input channel, a shape whose input gradient
  oneDNN computes slowly (17-32 ms of a ~95 ms step on one core); on the CPU that gradient is one
  matrix product and 9 shifted adds, with the ReLU fused into the same autograd node
  (:class:`_SingleChannelConvReLU`; forward and weight gradient stay oneDNN's);
* the affine grid is one small matrix product with a cached basis instead of a batched
  ``bmm`` over a freshly built base grid (:func:`affine_grid`);
* conv2 (the largest convolution, 10 -> 10 channels at 46x46) takes its input gradient from
  ``conv_transpose2d``, which oneDNN runs ~20% faster than the same product inside
  ``convolution_backward`` (bit-identical results; :class:`_Conv2dTransposedInputGrad`);
* dropout draws its mask as ``rand >= p`` (:func:`_dropout`): CPU ``bernoulli_`` takes ~1.2 ms
  for the 103,680 values of a batch, ``rand`` ~0.3 ms; the mask has the same distribution and
  scale, so only the draws differ from ``nn.Dropout``'s;
* ReLUs that follow a max-pool or a convolution run in place (ReLU after max-pool is the same
  as before it; the order was already pool-then-ReLU);
* BatchNorm runs on an NCHW copy of conv4's output: ATen's channels-last BatchNorm kernels
  take ~4-6 ms of a ~55 ms step (forward and backward, 2 threads) for a ``(128, 10, 18, 18)``
  tensor that NCHW handles in ~0.7 ms; its result goes back to the input's layout before max-pool 4
  (ATen's NCHW max-pool takes 1.1 ms there, channels-last 0.2 ms; the round trip as a whole
  saves ~0.4 ms a step), so the dropout mask is also drawn in the same memory order as in the
  plain network.

The conv2, dropout and BatchNorm paths and fused Adam (``conf/optimizer/adam.yaml``) together took a
bare training step from 55-59 ms to 51-55 ms (alternating runs, 2 threads; ``benchmarks/train_speed.py``).

In a CPU float32 training step (gradients on, none asked for the input) with ``native_train=True``
(the default), the whole features stage before BatchNorm (attention branch, sampling, conv1-conv4,
forward and backward) runs instead as one compiled C++ call per direction
(:class:`fer_sweep.models.native.NativeFeatures`; ``tests/test_native_training.py``): a bare step on a
first-generation AMD EPYC took 94-101 ms against 150-168 ms on the paths above.  Where the kernel
cannot be built, or with ``FER_SWEEP_NATIVE=0``, the paths above run.

Elsewhere (CUDA, float64, autocast) the network runs the plain ``torch.nn.functional`` ops.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_sweep.models import native

_GRID_BASIS: dict[tuple, torch.Tensor] = {}


def _grid_basis(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``B`` with ``theta.view(N, 6) @ B == F.affine_grid(theta, (N, C, h, w)).view(N, -1)``
    (``align_corners=False``): row ``(c, j)``, column ``(pixel, c)`` holds base coordinate ``j``."""
    key = (h, w, dtype, device)
    basis = _GRID_BASIS.get(key)
    if basis is None:
        # a normal tensor even when first built under inference_mode (it is cached, and autograd
        # saves it for theta's gradient later); no autograd history either way
        with torch.inference_mode(False), torch.no_grad():
            # the base grid exactly as ATen builds it (linspace_from_neg_one, align_corners=False)
            xs = torch.linspace(-1, 1, w, dtype=dtype, device=device) * (w - 1) / w
            ys = torch.linspace(-1, 1, h, dtype=dtype, device=device) * (h - 1) / h
            base = torch.stack([xs.expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, dtype=dtype, device=device)], -1).view(h * w, 3)
            basis = torch.zeros(2, 3, h * w, 2, dtype=dtype, device=device)
            basis[0, :, :, 0] = base.t()
            basis[1, :, :, 1] = base.t()
            basis = _GRID_BASIS[key] = basis.view(6, h * w * 2)
    return basis


def affine_grid(theta: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``F.affine_grid(theta, size, align_corners=False)`` for 2-D ``theta (N, 2, 3)``, as one
    ``(N, 6) @ (6, H*W*2)`` product (forward and backward), with no per-call base grid."""
    n, _, h, w = size
    return torch.mm(theta.reshape(n, 6), _grid_basis(h, w, theta.dtype, theta.device)).view(n, h, w, 2)


class _SingleChannelConvReLU(torch.autograd.Function):
    """``relu(conv2d(u, weight, bias))`` for a one-channel input ``u (N, 1, H, W)`` (stride 1, no
    padding).  Forward and the weight/bias gradients are oneDNN's; the input gradient, which oneDNN
    computes slowly for one channel, is ``col2im(W^T @ g)``: one ``(k*k, O) @ (O, N*Ho*Wo)`` matrix
    product (long dimension contiguous, fast in MKL) and k*k shifted adds."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = F.conv2d(u, weight, bias).relu_()
        ctx.save_for_backward(u, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):  # type: ignore[override]
        u, weight, y = ctx.saved_tensors
        n, _, h, w = u.shape
        o, k = weight.shape[0], weight.shape[-1]
        ho, wo = h - k + 1, w - k + 1
        g = torch.ops.aten.threshold_backward(grad_y, y, 0)  # the ReLU's gradient, in y's layout
        grad_u = grad_w = grad_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(g, u, weight, [o], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        if ctx.needs_input_grad[0]:
            # (k*k, M) = W^T @ g^T with g viewed (M, O) when channels-last, (O, M) per sample otherwise
            w_t = weight.reshape(o, k * k).t()
            if g.is_contiguous(memory_format=torch.channels_last):
                cols = torch.mm(w_t, g.permute(0, 2, 3, 1).reshape(-1, o).t()).view(k, k, n, ho, wo)
            else:
                cols = torch.matmul(w_t, g.reshape(n, o, ho * wo)).view(n, k, k, ho, wo).permute(1, 2, 0, 3, 4)
            grad_u = g.new_zeros((n, h, w))
            for i in range(k):
                for j in range(k):
                    grad_u[:, i : i + ho, j : j + wo] += cols[i, j]
            grad_u = grad_u.view(n, 1, h, w)
        return grad_u, grad_w, grad_b


class _Conv2dTransposedInputGrad(torch.autograd.Function):
    """``conv2d(u, weight, bias)`` (stride 1, no padding) whose input gradient is
    ``conv_transpose2d(g, weight)``: the same sums in the same order as ``convolution_backward``'s,
    in oneDNN's faster forward-style kernel.  The weight and bias gradients stay oneDNN's."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u, weight)
        return F.conv2d(u, weight, bias)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):  # type: ignore[override]
        u, weight = ctx.saved_tensors
        grad_u = F.conv_transpose2d(grad_y, weight) if ctx.needs_input_grad[0] else None
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(grad_y, u, weight, [weight.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_u, grad_w, grad_b


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout as ATen computes it (``x * mask / (1 - p)``), with the keep-mask drawn
    as ``rand >= p`` (probability ``1 - p``) instead of by the CPU's slow ``bernoulli_``."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    noise = (torch.rand_like(x) >= p).to(x.dtype).div_(1.0 - p)
    return x * noise


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _fast_cpu(x: torch.Tensor) -> bool:
    """Take the hand-written CPU paths: float32 on the CPU, eager (torch.compile and torch.jit.trace
    see the plain ops)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not _autocast_on("cpu") and not _compiling() and not torch.jit.is_tracing()


class DeepEmotion(nn.Module):
    """Deep-Emotion for ``(N, 1, 48, 48)`` inputs; 66,877 parameters with 7 classes."""

    def __init__(self, num_classes: int = 7, dropout: float = 0.5, native_train: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.native_train = native_train
        """Run the features stage of a CPU training step by the compiled kernel (see the module docstring)."""
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(640, 32), nn.ReLU(True), nn.Linear(32, 6))
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
        self.conv1 = nn.Conv2d(1, 10, 3)
        self.conv2 = nn.Conv2d(10, 10, 3)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(10, 10, 3)
        self.conv4 = nn.Conv2d(10, 10, 3)
        self.norm = nn.BatchNorm2d(10)
        self.pool4 = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(810, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The affine transform ``(N, 2, 3)`` the attention branch predicts for ``x``."""
        return self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.transform(x)
        if _fast_cpu(x):
            grid = affine_grid(theta, list(x.shape))
        else:
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def _conv1_relu(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_cpu(x) and x.shape[1] == 1:
            return _SingleChannelConvReLU.apply(x, self.conv1.weight, self.conv1.bias)
        return F.relu(self.conv1(x), inplace=True)

    def _native_features(self, x: torch.Tensor) -> torch.Tensor | None:
        """conv4's output by the compiled training kernel, or ``None`` where it does not apply."""
        kernel = native.use_native_features(x) if self.native_train else None
        if kernel is None:
            return None
        params = dict(self.named_parameters())
        return native.NativeFeatures.apply(kernel, x, *(params[k] for k in native.FEATURE_PARAMETERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = _fast_cpu(x)
        out = self._native_features(x) if fast else None
        if out is not None:  # NCHW; the pool and dropout take the layout oneDNN's conv4 would have given
            return self._head(out, fast, channels_last=not self.conv4.weight.is_contiguous())
        out = self._conv1_relu(self.stn(x))
        if fast and torch.is_grad_enabled():
            out = _Conv2dTransposedInputGrad.apply(out, self.conv2.weight, self.conv2.bias)
        else:
            out = self.conv2(out)
        out = F.relu(self.pool2(out), inplace=True)
        out = F.relu(self.conv3(out), inplace=True)
        return self._head(self.conv4(out), fast)

    def _head(self, out: torch.Tensor, fast: bool, channels_last: bool | None = None) -> torch.Tensor:
        """BatchNorm, pool 4, dropout and the fully connected layers after conv4 (``channels_last``:
        whether the pool and dropout run channels-last; default: ``out``'s layout)."""
        if fast and (not out.is_contiguous() if channels_last is None else channels_last):
            # BatchNorm in NCHW (see the module docstring), then back to the input's layout for
            # the pool (ATen's NCHW max-pool is ~5x slower here) and for dropout, which draws its
            # mask in memory order, so the layout decides the draws
            out = self.norm(out.contiguous()).contiguous(memory_format=torch.channels_last)
            out = F.relu(self.pool4(out), inplace=True)
        else:
            out = F.relu(self.pool4(self.norm(out)), inplace=True)
        out = _dropout(out, self.dropout.p) if fast and self.dropout.training else self.dropout(out)
        out = out.flatten(1)
        return self.fc2(F.relu(self.fc1(out), inplace=True))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference code's forward, plain ``torch.nn.functional`` ops on every device.

        :meth:`forward` computes the same (outputs and gradients within float32 rounding; in
        training mode with the same dropout mask if this forward's ``nn.Dropout`` is given
        :func:`_dropout`'s draws); this one is kept for the equivalence test and the naive baseline of
        ``benchmarks/train_speed.py``."""
        grid = F.affine_grid(self.transform(x), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, align_corners=False)
        out = F.relu(self.conv1(out))
        out = F.relu(self.pool2(self.conv2(out)))
        out = F.relu(self.conv3(out))
        out = F.relu(self.pool4(self.norm(self.conv4(out))))
        out = self.dropout(out).flatten(1)
        return self.fc2(F.relu(self.fc1(out)))

    def fc_parameters(self) -> list[nn.Parameter]:
        """The fully connected weights the paper regularises with weight decay."""
        return [self.fc1.weight, self.fc2.weight]
