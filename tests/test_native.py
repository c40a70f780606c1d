"""The compiled single-face path of Deep-Emotion (``fer_sweep.models.native``): same probabilities as
the plain network on real faces, used by ``optimise_for_inference`` for small batches, and a clean
fallback to TorchScript where it cannot be built."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from fer_sweep.data.preprocess import to_model_input
from fer_sweep.models import native
from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.predict import fuse_batchnorm, optimise_for_inference
from fer_sweep.models.registry import load_checkpoint
from fer_sweep.weights import shipped_models
from helpers import one_torch_thread  # noqa: F401 (an autouse fixture: one torch thread in every test here)


def kernel_or_skip():
    from torch.utils.cpp_extension import is_ninja_available

    if native.native_disabled():
        pytest.skip("FER_SWEEP_NATIVE=0: the native kernel is switched off")
    kernel = native.load_kernel()
    if kernel is None:
        if (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")) and is_ninja_available() and sys.platform != "win32":
            pytest.fail("the native Deep-Emotion kernel did not build although a C++ compiler and ninja are installed (see the log)")
        pytest.skip("no C++ compiler or ninja: the native kernel cannot be built here (the TorchScript path is used)")
    return kernel


def reference_logits(net: torch.nn.Module, faces_u8: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """The plain network's logits in float64 (``DeepEmotion.reference_forward``); ``align_corners=True``
    samples the face the wrong way on purpose, to show that the comparisons below notice such an error."""
    net = copy.deepcopy(net).double().eval()
    x = to_model_input(faces_u8).double()
    with torch.no_grad():
        if not align_corners:
            return net.reference_forward(x)
        grid, sample = F.affine_grid, F.grid_sample  # the originals (F is the module being patched)
        with mock.patch.object(F, "affine_grid", lambda *a, **k: grid(*a, **{**k, "align_corners": True})), \
                mock.patch.object(F, "grid_sample", lambda *a, **k: sample(*a, **{**k, "align_corners": True})):
            return net.reference_forward(x)


def reference_proba(net: torch.nn.Module, faces_u8: torch.Tensor) -> torch.Tensor:
    return torch.softmax(reference_logits(net, faces_u8), 1)


def assert_same_log_proba(got: torch.Tensor, net: torch.nn.Module, faces: torch.Tensor, atol: float = 2e-4) -> None:
    """Log-probabilities within ``atol`` of float64 (probabilities alone hide errors when one class dominates)."""
    ref = torch.log_softmax(reference_logits(net, faces), 1)
    torch.testing.assert_close(got.double().log(), ref, rtol=0, atol=atol)
    wrong = torch.log_softmax(reference_logits(net, faces, align_corners=True), 1)
    assert float((got.double().log() - wrong).abs().max()) > 10 * atol  # the check can tell a wrong sampling apart


def random_net(num_classes: int = 7, seed: int = 0, shift: float = 0.5) -> DeepEmotion:
    """Deep-Emotion with random weights scaled so that logits spread over several units, an attention
    transform that rotates, scales and shifts (part of each face sampled from the zero padding) and
    varies from face to face, and BatchNorm statistics."""
    torch.manual_seed(seed)
    net = DeepEmotion(num_classes=num_classes)
    with torch.no_grad():
        net.fc_loc[2].weight.normal_(0, 0.05)
        net.fc_loc[2].bias.copy_(torch.tensor([1.2, -0.4, shift, 0.35, 1.1, -shift]))
        net.fc2.weight.mul_(60)
        net.fc1.weight.mul_(3)
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
    assert_same_log_proba(got, net, faces)
    differ = int((got.argmax(1) != ref.argmax(1)).sum())
    assert differ <= 1, f"{differ} of 3,589 predictions differ"  # only a near-tie may flip


@pytest.mark.parametrize("num_classes,shift", [(7, 0.5), (6, 0.5), (7, 1.6)])
def test_random_weights_and_batch_sizes(num_classes, shift):
    """shift 1.6: most of each sampled face lies outside the input (zero padding)."""
    kernel = kernel_or_skip()
    net = random_net(num_classes, shift=shift)
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(copy.deepcopy(net)), kernel)
    gen = torch.Generator().manual_seed(1)
    faces = torch.randint(0, 256, (17, 48, 48), generator=gen, dtype=torch.uint8)
    spread = reference_logits(net, faces)
    assert float(spread.std()) > 0.5  # logits spread: a wrong weight moves the probabilities visibly
    for n in (1, 3, 17):
        got = fast(faces[:n])
        assert got.shape == (n, num_classes) and got.dtype == torch.float32
        assert_same_log_proba(got, net, faces[:n])
        torch.testing.assert_close(fast(faces[:n].unsqueeze(1)), got)  # (N, 1, 48, 48) too
    strided = torch.randint(0, 256, (2, 48, 96), generator=gen, dtype=torch.uint8)[:, :, ::2]  # not contiguous
    torch.testing.assert_close(fast(strided), fast(strided.contiguous()))
    assert fast(faces[:0]).shape == (0, num_classes)


@pytest.mark.parametrize("theta", [
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # identity: every sample exactly on a pixel centre
    [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # mirrored: pixel centres, the floor of exact integers
    [1.0, 0.0, 1.0, 0.0, 1.0, -1.0],  # shifted by half the face: exact half-pixel edges, half in the zero border
    [1e6, 0.0, 0.0, 0.0, -1e6, 0.0],  # every sample far outside (the clamp, no undefined casts)
    [0.02, 0.0, -0.999, 0.0, 0.02, 0.999],  # a small patch at the very corner, partly outside
])
def test_exact_and_far_outside_sampling(theta):
    """The kernel's branch-free sampling (clamped coordinates in a zero-bordered copy of the face) at the
    edge cases: integer coordinates, the border, and samples far from the image."""
    kernel = kernel_or_skip()
    net = random_net()
    with torch.no_grad():
        net.fc_loc[2].weight.zero_()
        net.fc_loc[2].bias.copy_(torch.tensor(theta))
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(copy.deepcopy(net)), kernel)
    faces = torch.randint(0, 256, (5, 48, 48), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    ref = torch.log_softmax(reference_logits(net, faces), 1)
    torch.testing.assert_close(fast(faces).double().log(), ref, rtol=0, atol=2e-4)


def test_the_callers_floating_point_mode_is_left_as_it_was():
    """The kernel flushes subnormals to zero inside the call only."""
    kernel = kernel_or_skip()
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(random_net()), kernel)
    fast(torch.zeros(2, 48, 48, dtype=torch.uint8))
    assert float(torch.tensor([1e-39]) * 1.0) != 0.0
    with pytest.raises(ValueError):
        fast(torch.zeros(1, 48, 48))  # an error exits the call too
    assert float(torch.tensor([1e-39]) * 1.0) != 0.0


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
    assert_same_log_proba(one, net, faces[:1])
    assert_same_log_proba(batch, net, faces)
    torch.testing.assert_close(sliced, batch, rtol=0, atol=0)
    torch.testing.assert_close(torch.log_softmax(logits.double(), 1), torch.log_softmax(reference_logits(net, faces), 1), rtol=0, atol=2e-4)
    assert optimise_for_inference(net, native=False).plan["native_proba"] is False


def test_without_a_kernel_the_torchscript_path_is_used(monkeypatch):
    monkeypatch.setattr(native, "load_kernel", lambda: None)
    net = random_net()
    fast = optimise_for_inference(net)
    assert fast.plan["native_proba"] is False
    assert not isinstance(fast.small_proba, native.NativeDeepEmotionProba)
    faces = torch.randint(0, 256, (1, 48, 48), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    with torch.inference_mode():
        assert_same_log_proba(fast.proba(faces), net, faces)


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
    -march=native for another one; where the flags are unknown, nothing is built for the host CPU."""
    assert native.build_key("fpu sse2 avx2") != native.build_key("fpu sse2 avx2 avx512f")
    assert native.build_key("fpu sse2 avx2") == native.build_key("fpu sse2 avx2")
    assert "-march=native" in native.compiler_flags("fpu sse2 avx2") and native.compiler_flags("") == ["-O3", *native.openmp_flags()]
    if sys.platform.startswith("linux"):
        assert native.cpu_flags()  # /proc/cpuinfo lists them here


def test_a_stale_build_lock_is_removed(tmp_path, monkeypatch):
    """torch waits forever on the lock a killed build leaves behind."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory("fer_sweep_deep_emotion_test", verbose=False)) / "lock"
    lock.write_text("")
    native._clear_stale_lock("fer_sweep_deep_emotion_test")
    assert lock.exists()  # a fresh lock: another build may be running
    old = lock.stat().st_mtime - native.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    native._clear_stale_lock("fer_sweep_deep_emotion_test")
    assert not lock.exists()


def test_bad_input_is_refused_in_one_line():
    kernel = kernel_or_skip()
    fast = native.NativeDeepEmotionProba(fuse_batchnorm(random_net()), kernel)
    with pytest.raises(ValueError, match=r"^faces must be \(N, 48, 48\) uint8 on the CPU, got \[1, 48, 48\] float on cpu$"):
        fast(torch.zeros(1, 48, 48))
    for bad in (torch.zeros(1, 40, 40, dtype=torch.uint8), torch.zeros(1, 2, 48, 48, dtype=torch.uint8), torch.zeros(1, 48, 48, dtype=torch.int8)):
        with pytest.raises(ValueError, match="faces must be"):
            fast(bad)
    with pytest.raises(ValueError, match="BatchNorm folded"):
        native.NativeDeepEmotionProba(random_net(), kernel)  # BatchNorm not folded: refused, not wrong


def test_a_first_build_is_announced(monkeypatch, caplog, tmp_path):
    """The first use on a machine type compiles for about a minute: say so, visibly (a warning)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
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
