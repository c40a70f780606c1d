"""The compiled features stage of a CPU training step (``fer_sweep.models.native.NativeFeatures``):
conv4's output and all 16 of its parameters' gradients as a float64 evaluation of the plain ops
gives them, at least as closely as PyTorch's own float32 ops; the same training steps as the oneDNN
path (same dropout draws); the plain path wherever it does not apply; bad input refused in one line."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from fer_sweep.models import native
from fer_sweep.models.deep_emotion import DeepEmotion
from helpers import one_torch_thread  # noqa: F401 (autouse)
from test_native import kernel_or_skip, random_net
from test_speed_equivalence import face_batch, make_pair


def features(net: DeepEmotion, x: torch.Tensor) -> torch.Tensor:
    """conv4's output (before BatchNorm) by the plain ops: what the kernel computes."""
    grid = F.affine_grid(net.transform(x), list(x.shape), align_corners=False)
    out = F.relu(net.conv1(F.grid_sample(x, grid, align_corners=False)))
    out = F.relu(net.conv3(F.relu(net.pool2(net.conv2(out)))))
    return net.conv4(out)


def reference(net: DeepEmotion, x: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype):
    """conv4's output and the 16 gradients of ``sum(out * weights)`` by the plain ops in ``dtype``."""
    ref = DeepEmotion(net.num_classes, native_train=False).to(dtype)
    ref.load_state_dict(net.state_dict())
    out = features(ref, x.to(dtype))
    (out * weights.to(dtype)).sum().backward()
    params = dict(ref.named_parameters())
    return out.detach().double(), [params[k].grad.double() for k in native.FEATURE_PARAMETERS]


def kernel_run(kernel, net: DeepEmotion, x: torch.Tensor, weights: torch.Tensor, threads: int = 2):
    params = dict(net.named_parameters())
    flat = [params[k].detach().contiguous() for k in native.FEATURE_PARAMETERS]
    out, saved, choice = kernel.train_forward(x, flat, threads)
    return out, kernel.train_backward(weights, saved, choice, flat, threads)


NETS = {
    "moving attention": lambda: make_pair(False),
    "random, spread logits": lambda: random_net(seed=3),
    "random, mostly padding": lambda: random_net(seed=4, shift=1.5),
}


def smooth_faces(n: int, seed: int) -> torch.Tensor:
    """Face-like float inputs without exact ties (no flat patches, no uint8 steps): in exact arithmetic
    no max-pool window has two equal values, so every gradient is well defined and float32 paths
    agree with float64 to rounding."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(n, 1, 52, 52, generator=g), 5, 1)
    return ((x - x.mean()) / x.std()).contiguous()


def errors(kernel, net: DeepEmotion, x: torch.Tensor, seed: int):
    """Per tensor (output, then the 16 gradients): name, float64 scale, the kernel's and torch's
    float32 largest deviations from float64."""
    weights = torch.randn(x.shape[0], 10, 18, 18, generator=torch.Generator().manual_seed(seed))
    out, grads = kernel_run(kernel, net, x, weights)
    exact_out, exact_grads = reference(net, x, weights, torch.float64)
    f32_out, f32_grads = reference(net, x, weights, torch.float32)
    names = ("output", *native.FEATURE_PARAMETERS)
    for name, got, exact, f32 in zip(names, [out, *grads], [exact_out, *exact_grads], [f32_out, *f32_grads]):
        yield name, exact.abs().max().item(), (got.double() - exact).abs().max().item(), (f32 - exact).abs().max().item()


@pytest.mark.parametrize("which", list(NETS))
@pytest.mark.parametrize("n", [1, 3, 5])
def test_output_and_gradients_match_float64(which: str, n: int):
    """On a few tie-free faces every value is within 1e-5 of its tensor's largest (relative to float64).

    Few faces, because each more face brings more values near a boundary where the gradient jumps (a
    ReLU input or max-pool pair within rounding of a tie, a sampling coordinate within rounding of a
    pixel edge), and there any float32 path can be ~1e-2 off float64: with 8 faces the first network
    here has one such sampling coordinate, and torch's float32 ops are exactly as far off as the
    kernel.  Full batches are compared with torch's float32 errors below."""
    kernel = kernel_or_skip()
    for name, scale, err, _ in errors(kernel, NETS[which](), smooth_faces(n, seed=n), seed=n):
        assert scale > 0, name  # every tensor, the attention branch's included, gets a gradient
        assert err <= 1e-5 * scale, f"{which}, {n} faces, {name}: error {err:.2e} against float64 (scale {scale:.2e})"


@pytest.mark.parametrize("faces", ["smooth", "with ties"])
def test_as_close_to_float64_as_torch_on_full_batches(faces: str):
    """On 64-face batches some ReLU input or max-pool pair lies within float32 rounding of its boundary,
    and there either float32 path (torch's ops as the kernel) can take the other side than float64:
    up to ~1e-3 of the scale in conv1's and the attention branch's gradients, in either order.  So the
    median over five batches of the kernel's error is compared with torch's float32 error's, per tensor."""
    kernel = kernel_or_skip()
    per_tensor: dict[str, list[tuple[float, float, float]]] = {}
    for seed in range(5):
        x = smooth_faces(64, seed) if faces == "smooth" else face_batch(64, seed=seed)[0]
        for name, scale, err, f32_err in errors(kernel, make_pair(False), x, seed=seed):
            per_tensor.setdefault(name, []).append((scale, err, f32_err))
    for name, rows in per_tensor.items():
        scale = statistics.median(r[0] for r in rows)
        err, f32_err = statistics.median(r[1] for r in rows), statistics.median(r[2] for r in rows)
        assert err <= 1.5 * f32_err + 1e-5 * scale, f"{name}: median error {err:.2e} against float64, torch's float32 {f32_err:.2e} (scale {scale:.2e})"


def test_a_wrong_gradient_would_be_caught():
    """The 1e-5 tolerance above can fail: the gradients of a network whose parameters are 1% larger
    miss it 100-fold (all but conv4's bias gradient, which is the sum of the output's weights alone)."""
    kernel = kernel_or_skip()
    net = make_pair(False)
    x = smooth_faces(3, seed=3)
    weights = torch.randn(3, 10, 18, 18)
    _, grads = kernel_run(kernel, net, x, weights)
    other = make_pair(False)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.01)
    _, exact = reference(other, x, weights, torch.float64)
    for name, g, e in list(zip(native.FEATURE_PARAMETERS, grads, exact))[:-1]:
        assert (g.double() - e).abs().max() > 100 * 1e-5 * e.abs().max(), name


def test_threads_split_the_batch_and_repeat_exactly():
    """Two threads give what one gives (another order of the same sums); a repeated call is bit-identical."""
    kernel = kernel_or_skip()
    net = make_pair(False)
    x, _ = face_batch(37, seed=2)
    weights = torch.randn(37, 10, 18, 18)
    out1, g1 = kernel_run(kernel, net, x, weights, threads=1)
    out2, g2 = kernel_run(kernel, net, x, weights, threads=2)
    out2b, g2b = kernel_run(kernel, net, x, weights, threads=2)
    assert torch.equal(out1, out2) and torch.equal(out2, out2b)
    for a, b, c in zip(g1, g2, g2b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * a.abs().max().item())
        assert torch.equal(b, c)


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_training_steps_match_the_onednn_path(channels_last: bool):
    """At each of three training steps (the whole network: BatchNorm, dropout with the same draws,
    cross-entropy, then an Adam step), every gradient is the oneDNN path's on the same weights within
    1e-5 of its largest value (few tie-free faces: see test_output_and_gradients_match_float64), and
    the BatchNorm statistics are the same.  conv4's bias gradient is 0 in exact arithmetic (training
    BatchNorm subtracts the batch mean) and rounding noise in both paths: only checked to be tiny.
    The weights are copied across before each step: two trajectories of a network with max-pools and
    a sampler part by more than rounding within a few steps, whichever two float32 paths run them."""
    kernel_or_skip()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y = smooth_faces(5, seed=5).contiguous(memory_format=fmt), torch.tensor([0, 3, 6, 3, 1])
    fast, plain = make_pair(channels_last, native_train=True).train(), make_pair(channels_last, native_train=False).train()
    opt = torch.optim.Adam(fast.parameters(), 1e-3)
    calls = []
    original = native.NativeFeatures.apply
    native.NativeFeatures.apply = lambda *a: calls.append(1) or original(*a)
    try:
        for step in range(3):
            plain.load_state_dict(fast.state_dict())
            grads = []
            for net in (fast, plain):
                net.zero_grad()
                torch.manual_seed(100 + step)
                F.cross_entropy(net(x), y).backward()
                grads.append({k: p.grad for k, p in net.named_parameters()})
            for k in grads[0]:
                a, b = grads[0][k].double(), grads[1][k].double()
                if k == "conv4.bias":
                    assert a.abs().max() < 1e-4 and b.abs().max() < 1e-4
                    continue
                assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-8, f"step {step}, gradient of {k}"
            for k in ("norm.running_mean", "norm.running_var"):
                torch.testing.assert_close(fast.state_dict()[k], plain.state_dict()[k], rtol=1e-5, atol=1e-6)
            opt.step()
    finally:
        native.NativeFeatures.apply = original
    assert len(calls) == 3  # the fast network's three forwards, none of the plain one's


def test_the_plain_path_where_the_kernel_does_not_apply(monkeypatch):
    """No gradient wanted, an input that wants one, another size, or native_train=False: the plain ops."""
    kernel_or_skip()
    calls = []
    original = native.NativeFeatures.apply
    monkeypatch.setattr(native.NativeFeatures, "apply", lambda *a: calls.append(1) or original(*a))
    net = make_pair(True, native_train=True).train()
    x, _ = face_batch(4)
    with torch.no_grad():
        net(x)
    xg = x.clone().requires_grad_()
    net(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0  # the input's gradient is there
    DeepEmotion(native_train=False)(x).sum().backward()
    assert calls == []
    net(x).sum().backward()
    assert calls == [1]
    monkeypatch.setenv("FER_SWEEP_NATIVE", "0")
    native.load_kernel.cache_clear()
    try:
        net(x).sum().backward()
        assert calls == [1]
    finally:
        monkeypatch.delenv("FER_SWEEP_NATIVE")
        native.load_kernel.cache_clear()


def test_bad_input_is_refused_in_one_line():
    kernel = kernel_or_skip()
    params = dict(make_pair(False).named_parameters())
    flat = [params[k].detach().contiguous() for k in native.FEATURE_PARAMETERS]
    with pytest.raises(ValueError, match=r"^x must be \(N, 1, 48, 48\) float32 on the CPU, got \[2, 1, 40, 40\] float on cpu$"):
        kernel.train_forward(torch.zeros(2, 1, 40, 40), flat, 1)
    with pytest.raises(ValueError, match=r"^parameter 2 must be a contiguous float32 CPU tensor of 2000 values$"):
        kernel.train_forward(torch.zeros(2, 1, 48, 48), flat[:2] + [flat[2].double()] + flat[3:], 1)
    out, saved, choice = kernel.train_forward(torch.zeros(2, 1, 48, 48), flat, 1)
    with pytest.raises(ValueError, match=r"^grad must be \(2, 10, 18, 18\) float32 on the CPU"):
        kernel.train_backward(torch.zeros(3, 10, 18, 18), saved, choice, flat, 1)
