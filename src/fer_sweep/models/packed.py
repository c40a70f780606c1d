"""K Deep-Emotion networks trained as one: every layer of every network in one GPU kernel.

A sweep of the study's grid trains 20 copies of a 67k-parameter network.  On a GPU one such
network, batch 128, launches dozens of tiny kernels per step and leaves the device idle between
them; 20 processes sharing it time-slice (about 2.6 s per epoch each on an H100, 18 minutes for
the grid; ``docs/gpu_runs/timing.txt``).  Here the K networks' weights are stacked along a leading
model axis and each layer runs once for all of them:

* a convolution is one grouped convolution (``groups=K``: model k's channels see only model k's
  filters), its input the K networks' batches side by side as channels;
* BatchNorm over ``K * C`` channels is K BatchNorms (statistics are per channel);
* a fully connected layer is one batched matrix product over the model axis;
* the spatial transformer samples ``K * B`` faces with their own transforms.

Each network computes exactly what :class:`~fer_sweep.models.deep_emotion.DeepEmotion` computes
with the same weights (``tests/test_packed.py``: outputs and gradients within float32 rounding),
and :meth:`PackedDeepEmotion.unpack` gives back its state dict, so every checkpoint it writes is
an ordinary Deep-Emotion checkpoint.  Only the dropout masks are drawn differently (one draw for
all K networks).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_sweep.models.deep_emotion import DeepEmotion

NORM = "norm"


def _name(key: str) -> str:
    """A parameter name without dots (``nn.Module`` refuses them): ``fc_loc.0.weight`` -> ``fc_loc__0__weight``."""
    return key.replace(".", "__")


class PackedDeepEmotion(nn.Module):
    """``K`` Deep-Emotion networks with stacked weights; input ``(K, B, 1, 48, 48)``, output ``(K, B, classes)``.

    Built from K networks of the same shape (the constructor's ``nets``); the parameter of layer ``L`` has shape
    ``(K, *L.shape)``, so an optimizer that works element-wise (Adam, SGD) updates all K networks as
    it would update each one alone, given a per-model learning rate (:class:`PackedAdam`)."""

    def __init__(self, nets: list[DeepEmotion], channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        """Run the convolutions on channels-last tensors (``model.channels_last``; which layout is
        faster for grouped convolutions depends on the device: ``benchmarks/packed_speed.py``)."""
        if not nets:
            raise ValueError("PackedDeepEmotion needs at least one network")
        first = nets[0]
        self.k = len(nets)
        self.dropout_p = float(first.dropout.p)
        self.bn_eps, self.bn_momentum = first.norm.eps, first.norm.momentum
        states = [n.state_dict() for n in nets]
        for key, value in states[0].items():
            stacked = torch.stack([s[key].detach() for s in states]).clone()
            if key.startswith(NORM + ".") and not key.endswith(("weight", "bias")):
                self.register_buffer(_name(key), stacked)
            else:
                self.register_parameter(_name(key), nn.Parameter(stacked))
        self._keys = list(states[0])

    def _p(self, key: str) -> torch.Tensor:
        return getattr(self, _name(key))

    def unpack(self, k: int) -> dict[str, torch.Tensor]:
        """Network ``k``'s state dict, as :class:`DeepEmotion` names it (tensors on the CPU)."""
        return {key: self._p(key)[k].detach().cpu().clone() for key in self._keys}

    # -- layers over the model axis --------------------------------------------------------
    def _conv(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """``x (B, K*Cin, H, W)`` -> ``(B, K*Cout, H', W')``: model k's channels through its own filters."""
        w, b = self._p(key + ".weight"), self._p(key + ".bias")
        w = w.reshape(-1, *w.shape[2:])
        if self.channels_last:
            w = w.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, w, b.reshape(-1), groups=self.k)

    def _linear(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """``x (K, B, in)`` -> ``(K, B, out)``."""
        w, b = self._p(key + ".weight"), self._p(key + ".bias")
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        p = self._p
        momentum = self.bn_momentum
        if self.training:
            with torch.no_grad():
                self._p(NORM + ".num_batches_tracked").add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm2d with momentum=None
                momentum = 1.0 / float(self._p(NORM + ".num_batches_tracked")[0])
        mean, var = p(NORM + ".running_mean"), p(NORM + ".running_var")
        out = F.batch_norm(x, mean.view(-1), var.view(-1), p(NORM + ".weight").reshape(-1), p(NORM + ".bias").reshape(-1),
                           self.training, momentum or 0.0, self.bn_eps)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[0], x.shape[1]
        if k != self.k:
            raise ValueError(f"input holds batches for {k} networks; this pack has {self.k}")
        faces = x.reshape(k, b, *x.shape[-2:]).transpose(0, 1)  # (B, K, H, W): model k's face is channel k
        h, w = faces.shape[-2:]
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        faces = faces.contiguous(memory_format=layout)
        # attention branch: the affine transform of every face of every model
        loc = F.relu(F.max_pool2d(self._conv(faces, "localization.0"), 2, 2))
        loc = F.relu(F.max_pool2d(self._conv(loc, "localization.3"), 2, 2))
        loc = loc.reshape(b, k, -1).transpose(0, 1)  # (K, B, 640), each model's (C, H, W) flattened
        theta = self._linear(F.relu(self._linear(loc, "fc_loc.0")), "fc_loc.2")  # (K, B, 6)
        theta = theta.transpose(0, 1).reshape(b * k, 2, 3)
        grid = F.affine_grid(theta, [b * k, 1, h, w], align_corners=False)
        out = F.grid_sample(faces.reshape(b * k, 1, h, w), grid, align_corners=False).view(b, k, h, w).contiguous(memory_format=layout)
        # classifier
        out = F.relu(self._conv(out, "conv1"))
        out = F.relu(F.max_pool2d(self._conv(out, "conv2"), 2, 2))
        out = F.relu(self._conv(out, "conv3"))
        out = F.relu(F.max_pool2d(self._norm(self._conv(out, "conv4")), 2, 2))
        if self.training and self.dropout_p > 0:
            out = F.dropout(out, self.dropout_p, True)
        out = out.reshape(b, k, -1).transpose(0, 1)  # (K, B, 810)
        return self._linear(F.relu(self._linear(out, "fc1")), "fc2")

    def fc_weights(self) -> list[nn.Parameter]:
        """The fully connected weights the paper regularises (``DeepEmotion.fc_parameters``)."""
        return [self._p("fc1.weight"), self._p("fc2.weight")]


class PackedAdam:
    """Adam (``torch.optim.Adam``'s update, L2 ``weight_decay`` added to the gradient) over stacked
    parameters, with one learning rate per model: ``lr`` is a ``(K,)`` tensor set before each step.

    ``decay`` maps a parameter to its weight decay (default ``weight_decay`` for all), so the FC-only
    decay of the project's recipe packs too."""

    def __init__(self, params: list[nn.Parameter], lr: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decay: dict[int, float] | None = None, amsgrad: bool = False) -> None:
        if amsgrad:
            raise ValueError("optimizer.amsgrad=true cannot be packed; expected the plain Adam update")
        self.params = list(params)
        self.set_lr(lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.decay = [float((decay or {}).get(id(p), weight_decay)) for p in self.params]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def set_lr(self, lr: torch.Tensor) -> None:
        """Each model's rate, ``(K,)``; spread once here to every parameter's shape, so a step
        multiplies whole tensors (CUDA's multi-tensor kernels need operands of equal shapes)."""
        self.lr = lr
        self._rates = [lr.to(p.device, p.dtype).view(-1, *([1] * (p.dim() - 1))).expand_as(p).contiguous() for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter with a gradient, as multi-tensor (``torch._foreach_*``)
        ops: a handful of kernels per step for all parameters instead of ~8 per parameter, which on
        a GPU would cost more launch time than the arithmetic."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.steps += 1
        bias1 = 1.0 - self.beta1 ** self.steps
        bias2_sqrt = math.sqrt(1.0 - self.beta2 ** self.steps)
        params = [self.params[i] for i in live]
        m = [self.exp_avg[i] for i in live]
        v = [self.exp_avg_sq[i] for i in live]
        grads = [p.grad if self.decay[i] == 0 else p.grad.add(p, alpha=self.decay[i]) for i, p in zip(live, params)]
        torch._foreach_lerp_(m, grads, 1.0 - self.beta1)
        torch._foreach_mul_(v, self.beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - self.beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, [self._rates[i] for i in live])
        torch._foreach_add_(params, update, alpha=-1.0 / bias1)
