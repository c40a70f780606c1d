"""The compiled single-face path of Deep-Emotion (``fer_sweep.models.native``): same probabilities as
the plain network on real faces, used by ``optimise_for_inference`` for small batches, and a clean
fallback to TorchScript where it cannot be built."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from fer_sweep.data.preprocess import to_model_input
from fer_sweep.models import native
from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.predict import fuse_batchnorm, optimise_for_inference
from fer_sweep.models.registry import load_checkpoint
from fer_sweep.weights import shipped_models
from helpers import one_torch_thread  # noqa: F401 (an autouse fixture: one torch thread in every test here)


def kernel_or_skip():
    if native.native_disabled():
        pytest.skip("FER_SWEEP_NATIVE=0: the native kernel is switched off")
    kernel = native.load_kernel()
    if kernel is None:
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail("the native Deep-Emotion kernel did not build although a C++ compiler is installed (see the log)")
        pytest.skip("no C++ compiler: the native kernel cannot be built here (the TorchScript path is used)")
    return kernel


def reference_proba(net: torch.nn.Module, faces_u8: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(net.eval().reference_forward(to_model_input(faces_u8)).double(), 1)


def random_net(num_classes: int = 7, seed: int = 0) -> DeepEmotion:
    """Deep-Emotion with random weights, a non-identity attention transform and BatchNorm statistics."""
    torch.manual_seed(seed)
    net = DeepEmotion(num_classes=num_classes)
    with torch.no_grad():
        net.fc_loc[2].weight.normal_(0, 0.01)
        net.fc_loc[2].bias.add_(torch.tensor([0.1, -0.05, 0.02, 0.03, -0.1, 0.04]))
        net.norm.running_mean.normal_(0, 0.2)
        net.norm.running_var.uniform_(0.5, 2.0)
        net.norm.weight.uniform_(0.5, 1.5)
        net.norm.bias.normal_(0, 0.1)
    return net.eval()


@pytest.mark.parametrize("name", ["deep_emotion", "deep_emotion_plus"])
def test_same_probabilities_as_the_network_on_privatetest(name, fer_root):
    from fer_sweep.evaluate import load_split

    kernel = kernel_or_skip()
    net = load_checkpoint(shipped_models()[name])
    net = net[0] if isinstance(net, tuple) else net
    faces = torch.as_tensor(load_split(fer_root, "PrivateTest")["images"])
    assert faces.shape == (3589, 48, 48)
    got = native.NativeDeepEmotionProba(fuse_batchnorm(copy.deepcopy(net).eval()), kernel)(faces)
    ref = reference_proba(net, faces)
    assert float((got.double() - ref).abs().max()) < 2e-5
    differ = int((got.argmax(1) != ref.argmax(1)).sum())
    assert differ <= 1, f"{differ} of 3,589 predictions differ"  # only a near-tie may flip


@pytest.mark.parametrize("num_classes", [7, 6])
def test_random_weights_and_batch_sizes(num_classes):
    kernel = kernel_or_skip()
    net = random_net(num_classes)
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(random_net(num_classes)), kernel)
    gen = torch.Generator().manual_seed(1)
    for n in (1, 3, 17):
        faces = torch.randint(0, 256, (n, 48, 48), generator=gen, dtype=torch.uint8)
        got = fast(faces)
        assert got.shape == (n, num_classes)
        torch.testing.assert_close(got.double(), reference_proba(net, faces), rtol=0, atol=2e-5)
        torch.testing.assert_close(fast(faces.unsqueeze(1)), got)  # (N, 1, 48, 48) too
    strided = torch.randint(0, 256, (2, 48, 96), generator=gen, dtype=torch.uint8)[:, :, ::2]  # not contiguous
    torch.testing.assert_close(fast(strided), fast(strided.contiguous()))


def test_optimise_for_inference_uses_it_for_uint8_faces():
    kernel_or_skip()
    net = random_net()
    fast = optimise_for_inference(net)
    assert fast.plan["native_proba"] is True
    assert isinstance(fast.small_proba, native.NativeDeepEmotionProba) and fast.large_proba is fast.small_proba
    faces = torch.randint(0, 256, (64, 48, 48), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        one = fast.proba(faces[:1])
        batch = fast.proba(faces)
        torch.set_num_threads(2)  # 64 faces on 2 threads: slices on two workers, the kernel in each
        try:
            sliced = fast.proba(faces)
        finally:
            torch.set_num_threads(threads)
        logits = fast(to_model_input(faces))  # float input: the TorchScript graphs
    ref = reference_proba(net, faces)
    torch.testing.assert_close(one.double(), ref[:1], rtol=0, atol=2e-5)
    torch.testing.assert_close(batch.double(), ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(sliced, batch, rtol=0, atol=0)
    torch.testing.assert_close(torch.softmax(logits, 1).double(), ref, rtol=0, atol=2e-5)
    assert optimise_for_inference(net, native=False).plan["native_proba"] is False


def test_without_a_kernel_the_torchscript_path_is_used(monkeypatch):
    monkeypatch.setattr(native, "load_kernel", lambda: None)
    net = random_net()
    fast = optimise_for_inference(net)
    assert fast.plan["native_proba"] is False
    assert not isinstance(fast.small_proba, native.NativeDeepEmotionProba)
    faces = torch.randint(0, 256, (1, 48, 48), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(fast.proba(faces).double(), reference_proba(net, faces), rtol=0, atol=2e-5)


def test_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("FER_SWEEP_NATIVE", "0")
    native.load_kernel.cache_clear()
    try:
        assert native.native_disabled() and native.load_kernel() is None
    finally:
        native.load_kernel.cache_clear()
    monkeypatch.setenv("FER_SWEEP_NATIVE", "1")
    assert not native.native_disabled()


def test_build_name_depends_on_the_cpu_flags():
    """A home directory shared by machines with different CPUs must never load code built with
    -march=native for another one."""
    assert native.build_key("fpu sse2 avx2") != native.build_key("fpu sse2 avx2 avx512f")
    assert native.build_key("fpu sse2 avx2") == native.build_key("fpu sse2 avx2")


def test_bad_input_is_refused_in_one_line():
    kernel = kernel_or_skip()
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(random_net()), kernel)
    with pytest.raises(ValueError, match=r"^faces must be \(N, 48, 48\) uint8 on the CPU, got \[1, 48, 48\] float on cpu$"):
        fast(torch.zeros(1, 48, 48))
    with pytest.raises(ValueError, match="faces must be"):
        fast(torch.zeros(1, 40, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="BatchNorm folded"):
        native.NativeDeepEmotionProba(random_net(), kernel)  # BatchNorm not folded: refused, not wrong


def test_a_first_build_is_announced(monkeypatch, caplog):
    """The first use on a machine type compiles for about a minute: say so, visibly (a warning)."""
    assert native._built("fer_sweep_deep_emotion_never_built") is False
    monkeypatch.setattr(native, "_built", lambda name: False)
    monkeypatch.setattr(native, "native_disabled", lambda: False)
    import torch.utils.cpp_extension as cpp

    def no_compiler(*args, **kwargs):
        raise RuntimeError("error: no C++ compiler found")
    monkeypatch.setattr(cpp, "load", no_compiler)
    native.load_kernel.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="fer_sweep.models.native"):
            assert native.load_kernel() is None  # a failed build falls back, in one line
    finally:
        native.load_kernel.cache_clear()
    messages = [r.getMessage() for r in caplog.records]
    assert any("compiling the native Deep-Emotion kernel" in m for m in messages), messages
    assert any("unavailable (error: no C++ compiler found); using TorchScript" in m for m in messages), messages
