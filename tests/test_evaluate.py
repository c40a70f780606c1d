"""``python -m fer_sweep.evaluate``, test-time augmentation, the optimised inference path, and the
shipped weights against their manifest (sha256 and PrivateTest accuracy, on the real FER2013).

Tests that need FER2013 use the ``fer_root`` fixture; the others run on random networks and tiny
synthetic copies written to tmp_path.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_sweep import evaluate as ev
from fer_sweep.io import file_sha256
from fer_sweep.data.classes import CLASS_NAMES
from fer_sweep.data.preprocess import to_model_input
from fer_sweep.models.predict import (
    TENCROP_SIZE,
    InferenceNet,
    classification_metrics,
    evaluate,
    optimise_for_inference,
    predict_proba,
    tencrop_boxes,
    tta_views,
)
from fer_sweep.models.registry import build_net, net_spec
from fer_sweep.weights import SHIPPED_NAMES, default_model, resolve_model, shipped_models, weights_dir
from fer_sweep.weights.card import CARD, MANIFEST, render_card
from helpers import one_torch_thread  # noqa: F401 (an autouse fixture: one torch thread in every test here)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = shipped_models()
USAGE_NAMES = ("Training", "PublicTest", "PrivateTest")


# ------------------------------------------------------------------------------ helpers



def tiny_net(name: str = "deep_emotion", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "vgg":
        kwargs.setdefault("width", 0.125)
    net = build_net(name, num_classes=7, **kwargs).eval()
    if name == "vgg":  # non-trivial BatchNorm statistics, so folding them is really tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return net


def save_checkpoint(path: Path, name: str = "deep_emotion", lightning: bool = False, seed: int = 0, **kwargs) -> Path:
    """A checkpoint as this project writes it: slim (export) or Lightning-like (with loop state)."""
    net = tiny_net(name, seed, **kwargs)
    blob = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "fer_sweep": {"net": net_spec(net), "class_names": list(CLASS_NAMES)}}
    if lightning:
        blob.update(epoch=3, global_step=120, optimizer_states=[{"state": {}, "param_groups": []}])
        blob["fer_sweep"]["history"] = [{"epoch": 1, "val_acc": 0.3}]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)
    return path


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def write_csv(path: Path, images: np.ndarray, labels, usages) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for img, lab, use in zip(images, labels, usages):
            w.writerow([int(lab), " ".join(map(str, img.reshape(-1).tolist())), use])
    return path


def synthetic_csv(path: Path, n_per_usage: int = 21, seed: int = 0) -> Path:
    imgs = faces(3 * n_per_usage, seed)
    labels = [i % 7 for i in range(len(imgs))]
    usages = [USAGE_NAMES[i // n_per_usage] for i in range(len(imgs))]
    return write_csv(path, imgs, labels, usages)


def run_cli(*args: str, cwd: Path | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "fer_sweep.evaluate", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("fer_sweep.evaluate: error: "), err
    for f in fragments:
        assert f in lines[0], err


# ------------------------------------------------------------------------------ metrics

def test_classification_metrics_by_hand():
    names = ["a", "b", "c"]
    labels = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 0, 0]
    m = classification_metrics(labels, preds, names)
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(3 / 6)
    a, b, c = (m["per_class"][k] for k in names)
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert (b["precision"], b["recall"], b["f1"]) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)  # never predicted: 0, no NaN
    assert m["macro_f1"] == pytest.approx((a["f1"] + b["f1"]) / 3)


# ------------------------------------------------------------------------------ test-time augmentation

@pytest.mark.parametrize("name", ["deep_emotion", "vgg"])
def test_flip_tta_of_a_mirror_symmetric_face_equals_no_tta(name):
    half = faces(6, seed=1)[:, :, :24]
    sym = np.ascontiguousarray(np.concatenate([half, half[:, :, ::-1]], axis=2))
    assert np.array_equal(sym, sym[:, :, ::-1])
    net = tiny_net(name)
    p_none, p_flip = predict_proba(net, sym, "none"), predict_proba(net, sym, "flip")
    np.testing.assert_allclose(p_flip, p_none, atol=1e-6)
    # ...while for ordinary faces flipping changes the probabilities
    assert not np.allclose(predict_proba(net, faces(6), "flip"), predict_proba(net, faces(6), "none"), atol=1e-6)


@pytest.mark.parametrize("name", ["deep_emotion", "vgg"])
def test_tencrop_gives_probabilities(name):
    net = tiny_net(name)
    p = predict_proba(net, faces(5), "tencrop", batch_size=2)
    assert p.shape == (5, 7) and p.dtype == np.float32
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # a flat face looks the same in every crop: ten-crop equals no TTA
    flat = np.full((3, 48, 48), 117, np.uint8)
    np.testing.assert_allclose(predict_proba(net, flat, "tencrop"), predict_proba(net, flat, "none"), atol=1e-6)


def test_tencrop_views_are_the_documented_crops():
    assert tencrop_boxes() == [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    x = to_model_input(torch.from_numpy(faces(2)))
    views = tta_views(x, "tencrop")
    assert len(views) == 10 and all(v.shape == (2, 1, 48, 48) for v in views)
    crop = x[..., 4:4 + TENCROP_SIZE, 0:TENCROP_SIZE]  # bottom-left
    expected = torch.nn.functional.interpolate(crop, size=(48, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(views[2], expected)
    torch.testing.assert_close(views[7], expected.flip(-1))
    assert len(tta_views(x, "flip")) == 2 and len(tta_views(x, "none")) == 1
    with pytest.raises(ValueError, match="tta="):
        tta_views(x, "fivecrop")


def test_predict_proba_accepts_the_usual_face_shapes():
    net = tiny_net()
    f = faces(3)
    ref = predict_proba(net, f)
    np.testing.assert_allclose(predict_proba(net, torch.from_numpy(f)[:, None]), ref, atol=1e-6)
    np.testing.assert_allclose(predict_proba(net, f[0]), ref[:1], atol=1e-6)
    assert predict_proba(net, np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    with pytest.raises(TypeError, match="uint8"):
        predict_proba(net, f.astype(np.float32))
    with pytest.raises(ValueError, match="48"):
        predict_proba(net, np.zeros((2, 40, 40), np.uint8))


def test_evaluate_returns_the_report():
    net = tiny_net()
    labels = np.arange(14) % 7
    rep = evaluate(net, faces(14), labels, "flip", batch_size=4)
    assert rep["n"] == 14 and rep["tta"] == "flip" and rep["views"] == 2
    assert rep["class_names"] == list(CLASS_NAMES)
    assert sum(map(sum, rep["confusion_matrix"])) == 14
    preds = predict_proba(net, faces(14), "flip").argmax(1)
    assert rep["accuracy"] == pytest.approx(float((preds == labels).mean()))


# ------------------------------------------------------------------------------ optimised inference

@pytest.mark.parametrize("name", ["deep_emotion", "vgg"])
def test_optimised_network_equals_eager(name):
    net = tiny_net(name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = optimise_for_inference(net)
    assert isinstance(fast, InferenceNet), "the optimised path was refused"
    for n in (1, 3, fast.threshold, 37):
        x = to_model_input(torch.from_numpy(faces(n, seed=n)))
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), net(x), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(predict_proba(fast, faces(20), "tencrop"), predict_proba(net, faces(20), "tencrop"), atol=1e-5)
    for k, v in net.state_dict().items():  # the network itself is untouched
        assert torch.equal(v, before[k]), k
    assert type(net.pool2 if name == "deep_emotion" else net.features[0][6]).__name__ == "MaxPool2d"
    assert type(net.norm if name == "deep_emotion" else net.features[0][1]).__name__ == "BatchNorm2d"


def test_subnormal_weights_are_flushed_in_the_inference_copy_only():
    """Weight decay leaves weights that get no gradient subnormal (the shipped deep_emotion_plus has
    25,836 in fc1); the optimised copy zeroes them, the network keeps them, the outputs agree."""
    from fer_sweep.models.predict import flush_subnormals_

    net = tiny_net("deep_emotion")
    tiny = torch.finfo(torch.float32).tiny
    with torch.no_grad():
        net.fc1.weight[:, ::2] = tiny / 8  # subnormal
        net.fc1.weight[0, 1] = -tiny / 3
        net.fc1.weight[1, 1] = tiny  # the smallest normal number stays
    kept = net.fc1.weight.detach().clone()
    work = flush_subnormals_(copy.deepcopy(net))
    w = work.fc1.weight.detach()
    assert int((w == 0).sum()) == 50 * 405 + 1 and float(w[1, 1]) == tiny
    assert torch.equal(w[:, 1::2][2:], kept[:, 1::2][2:])
    assert int((optimise_for_inference(net, jit=False).fc1.weight == 0).sum()) == 50 * 405 + 1  # its working copy is flushed
    fast = optimise_for_inference(net)
    assert isinstance(fast, InferenceNet), "the optimised path was refused"
    assert torch.equal(net.fc1.weight, kept)  # the network itself is untouched
    x = to_model_input(torch.from_numpy(faces(9, seed=4)))
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["deep_emotion", "vgg"])
def test_fused_probabilities_equal_eager_softmax(name):
    """``InferenceNet.proba`` (to_model_input, network and softmax in one graph) gives the eager
    probabilities, for one face, a small batch, a chunked large batch and (N, 1, 48, 48) input."""
    from fer_sweep.models.predict import LARGE_BATCH_CHUNK

    net = tiny_net(name)
    fast = optimise_for_inference(net)
    assert isinstance(fast, InferenceNet) and fast.small_proba is not None
    calls = []
    fast.large = _counting(fast.large, calls)
    for n in (1, 5, LARGE_BATCH_CHUNK * 2 + 3):
        u8 = torch.from_numpy(faces(n, seed=n))
        with torch.inference_mode():
            ref = torch.softmax(net(to_model_input(u8)), 1)
            torch.testing.assert_close(fast.proba(u8), ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(fast.proba(u8[:, None]), ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(fast(to_model_input(u8)), net(to_model_input(u8)), atol=1e-4, rtol=1e-4)
    assert calls and max(calls) <= LARGE_BATCH_CHUNK  # the big batch went through in chunks
    np.testing.assert_allclose(predict_proba(fast, faces(300)), predict_proba(net, faces(300)), atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        fast.proba(torch.zeros(1, 48, 48))


def test_one_face_shortcut_matches_the_dispatched_path():
    """A single uint8 face under inference mode on one thread goes straight to the small graph's
    compiled method (the recognizer's per-face call); outside those conditions (gradients allowed,
    more threads than the small graph runs on) ``proba`` takes the general path, and every path
    gives the same probabilities."""
    net = tiny_net("deep_emotion")
    fast = optimise_for_inference(net)
    u8 = torch.from_numpy(faces(1, seed=3))
    ref = torch.softmax(net(to_model_input(u8)), 1).detach()
    taken = []
    inner = fast._one_face
    fast._one_face = lambda x: taken.append(1) or inner(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            torch.testing.assert_close(fast.proba(u8), ref, atol=1e-5, rtol=1e-4)
        assert taken == [1]
        torch.testing.assert_close(fast.proba(u8), ref, atol=1e-5, rtol=1e-4)  # no inference mode: general path
        torch.set_num_threads(2)
        with torch.inference_mode():
            torch.testing.assert_close(fast.proba(u8), ref, atol=1e-5, rtol=1e-4)  # _run drops to 1 thread itself
        assert taken == [1]
    finally:
        torch.set_num_threads(threads)


def _counting(module, calls, record=len):
    """``module`` wrapped so that every call first appends ``record(x)`` to ``calls``."""
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            calls.append(record(x))
            return self.inner(x)
    return Counting()


def test_strided_maxpool_equals_maxpool():
    from fer_sweep.models.predict import MaxPool2x2

    for shape in [(3, 10, 44, 44), (2, 10, 17, 17), (1, 8, 42, 42), (2, 3, 21, 20)]:
        x = torch.randn(*shape)
        pool = MaxPool2x2()
        expected = torch.nn.functional.max_pool2d(x, 2)
        assert torch.equal(pool(x), expected)
        assert torch.equal(pool(x.contiguous(memory_format=torch.channels_last)), expected)
        pool.size = shape[-2:]
        assert torch.equal(pool(x), expected)


def test_single_faces_run_on_one_thread_and_restore_the_count():
    fast = optimise_for_inference(tiny_net())
    seen = []
    fast.small = _counting(fast.small, seen, lambda x: torch.get_num_threads())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fast(to_model_input(torch.from_numpy(faces(1))))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["deep_emotion", "vgg"])
def test_large_batches_run_as_single_threaded_slices_side_by_side(name):
    """With two torch threads a large batch is cut into slices that worker threads run with one
    intra-op thread each; the outputs are those of the one-call path (float rounding at most), and
    the caller keeps its thread count."""
    fast = optimise_for_inference(tiny_net(name))
    assert isinstance(fast, InferenceNet) and fast.parallel and fast.plan["parallel_slices"]
    seen = []
    spy = _counting(fast.large, seen, lambda x: (len(x), torch.get_num_threads(), threading.current_thread().name))
    before = torch.get_num_threads()
    x = to_model_input(torch.from_numpy(faces(2 * fast.threshold + 7, seed=5)))
    try:
        torch.set_num_threads(2)
        with torch.inference_mode():
            fast.parallel = False
            serial = fast(x)
            fast.large, fast.parallel = spy, True
            sliced = fast(x)
            seen_small = len(seen)
            fast(x[: 2 * fast.threshold - 1])  # too few faces for two slices: one call, on this thread
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(sliced, serial, rtol=1e-6, atol=1e-6)
    assert sorted(n for n, _, _ in seen[:seen_small]) == sorted(len(p) for p in x.tensor_split(2))
    assert all(threads == 1 and thread.startswith("fer_sweep-cpu2-") for _, threads, thread in seen[:seen_small])
    assert len({thread for _, _, thread in seen[:seen_small]}) == 2
    assert seen[seen_small:] == [(2 * fast.threshold - 1, 2, threading.current_thread().name)]


def test_parallel_slices_give_every_worker_an_equal_share_within_the_chunk():
    from fer_sweep.models.predict import parallel_slices

    assert parallel_slices(256, 2, 128) == 2 and parallel_slices(300, 2, 128) == 4 and parallel_slices(64, 4, 0) == 4
    for n in range(32, 2000, 7):
        for workers in (2, 3, 4, 16):
            pieces = parallel_slices(n, workers, 128)
            sizes = [len(p) for p in torch.arange(n).tensor_split(pieces)]
            assert pieces % workers == 0 and sum(sizes) == n and max(sizes) <= max(128, -(-n // workers))
            if n > workers * 128:
                assert max(sizes) <= 128


def test_single_thread_workers_keep_order_and_raise_errors():
    from fer_sweep.cpu import single_thread_workers

    pool = single_thread_workers(2)
    assert pool is single_thread_workers(2)
    assert pool.starmap(lambda a, b: (a * b, torch.get_num_threads()), [(i, 10) for i in range(5)]) == [(i * 10, 1) for i in range(5)]
    assert pool.starmap(lambda: torch.is_inference_mode_enabled(), [()] * 2, inference=True) == [True, True]
    # a task that uses the pool itself runs its inner items inline instead of deadlocking
    assert pool.starmap(lambda i: pool.starmap(abs, [(-i,), (-2 * i,)]), [(1,), (2,)]) == [[1, 2], [2, 4]]

    def fail(i):
        if i == 3:
            raise ValueError("slice 3 failed")
        return i
    with pytest.raises(ValueError, match="slice 3 failed"):
        pool.starmap(fail, [(i,) for i in range(4)])
    assert pool.starmap(fail, [(0,), (1,)]) == [0, 1]  # the workers survive an error


def test_creating_workers_leaves_every_other_threads_count_alone():
    """Workers set their own count to 1; neither the caller nor a thread started later sees that."""
    from fer_sweep.cpu import SingleThreadWorkers, _in_fresh_thread

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        default = _in_fresh_thread(torch.get_num_threads)
        pool = SingleThreadWorkers(3)
        assert pool.starmap(torch.get_num_threads, [()] * 3) == [1, 1, 1]
        assert torch.get_num_threads() == 2 and _in_fresh_thread(torch.get_num_threads) == default
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_workers():
    """The parent's worker threads do not exist in a forked child: the child must not wait on them."""
    from fer_sweep.cpu import single_thread_workers

    single_thread_workers(2).starmap(abs, [(-1,), (-2,)])
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if a fresh pool answers
        try:
            os._exit(0 if single_thread_workers(2).starmap(abs, [(-3,), (-4,)]) == [3, 4] else 1)
        except BaseException:
            os._exit(2)
    deadline = time.time() + 30
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung on its parent's worker threads")


@pytest.mark.parametrize("name", list(SHIPPED))
def test_optimised_shipped_model_equals_eager(name):
    from fer_sweep.models.registry import load_checkpoint

    net, _, _ = load_checkpoint(SHIPPED[name])
    fast = optimise_for_inference(net)
    assert isinstance(fast, InferenceNet)
    x = to_model_input(torch.from_numpy(faces(40, seed=3)))
    with torch.inference_mode():
        for batch in (x[:1], x):
            ref = net(batch)
            assert float((fast(batch) - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))


# ------------------------------------------------------------------------------ shipped weights and their card

@pytest.mark.parametrize("mode", ["half", "int8"])
def test_export_writes_a_small_file_that_loads_to_nearly_the_same_network(tmp_path, mode):
    from fer_sweep.models.export import export_weights, main as export_main, quantize_int8
    from fer_sweep.models.registry import load_checkpoint

    src = save_checkpoint(tmp_path / "run.ckpt", "vgg", lightning=True)
    out = tmp_path / f"{mode}.pt"
    export_weights(src, out, half=mode == "half", int8=mode == "int8")
    ref, names, _ = load_checkpoint(src)
    net, names2, _ = load_checkpoint(out)
    assert names2 == names
    blob = torch.load(out, weights_only=True)
    assert "optimizer_states" not in blob
    convs = [k for k, v in blob["state_dict"].items() if k.endswith("weight") and v.dim() >= 2]
    assert convs and all(blob["state_dict"][k].dtype == (torch.int8 if mode == "int8" else torch.float16) for k in convs)
    assert out.stat().st_size < src.stat().st_size / (3 if mode == "int8" else 1.8)
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        if a.is_floating_point():
            # int8: at most half a quantisation step (max|w| / 127 / 2 per output channel)
            step = a.reshape(len(a), -1).abs().amax(1).max() / 127 if mode == "int8" and a.dim() >= 2 else a.abs().max() * 2 ** -10
            assert float((a - b).abs().max()) <= float(step) / 2 + 1e-7, k
    x = to_model_input(torch.from_numpy(faces(16)))
    with torch.inference_mode():
        a, b = ref(x), net(x)
    assert float((a - b).abs().max()) <= 0.05 * float(a.abs().max())  # logits within 5% of their scale
    w = torch.randn(5, 3, 3, 3)
    w[2] = 0
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (5,) and float(q.abs().max()) == 127 and scale[2] == 1 and not q[2].any()
    with pytest.raises(SystemExit) as exc:  # one storage kind at a time
        export_main([str(src), str(tmp_path / "x.pt"), "--half", "--int8"])
    assert exc.value.code == 2 and not (tmp_path / "x.pt").exists()


def test_int8_weights_with_a_wrong_scale_are_refused_in_one_line(tmp_path):
    from fer_sweep.models.export import export_weights
    from fer_sweep.models.registry import CheckpointError, load_checkpoint

    out = tmp_path / "q.pt"
    export_weights(save_checkpoint(tmp_path / "run.ckpt"), out, int8=True)
    blob = torch.load(out, weights_only=True)
    key = next(iter(blob["int8_scales"]))
    blob["int8_scales"][key] = blob["int8_scales"][key][:1].repeat(3) if len(blob["int8_scales"][key]) != 3 else torch.ones(2)
    torch.save(blob, out)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(out)
    assert str(out) in str(exc.value) and key in str(exc.value) and "\n" not in str(exc.value)


def test_weights_module_names_and_default(tmp_path):
    assert list(SHIPPED) == [n for n in SHIPPED_NAMES if (weights_dir() / f"{n}.pt").is_file()]
    with pytest.raises(FileNotFoundError) as exc:
        default_model(tmp_path)
    assert "\n" not in str(exc.value)
    save_checkpoint(tmp_path / "deep_emotion.pt")
    assert default_model(tmp_path) == tmp_path / "deep_emotion.pt"
    save_checkpoint(tmp_path / "deep_emotion_plus.pt")
    assert default_model(tmp_path) == tmp_path / "deep_emotion_plus.pt"
    save_checkpoint(tmp_path / "vgg.pt", name="vgg")
    assert default_model(tmp_path) == tmp_path / "vgg.pt"
    assert list(shipped_models(tmp_path)) == ["vgg", "deep_emotion_plus", "deep_emotion"]
    assert resolve_model("default", tmp_path) == (tmp_path / "vgg.pt", "vgg")
    assert resolve_model("deep_emotion", tmp_path) == (tmp_path / "deep_emotion.pt", "deep_emotion")
    run_ckpt = save_checkpoint(tmp_path / "run7" / "checkpoints" / "best.ckpt", lightning=True)
    assert resolve_model(run_ckpt) == (run_ckpt, "run7-best")
    with pytest.raises(FileNotFoundError, match="not a shipped model name"):
        resolve_model(tmp_path / "nope.pt", tmp_path)


def _manifest() -> dict:
    path = weights_dir() / MANIFEST
    assert path.is_file(), f"{path} missing: run `python -m fer_sweep.weights.card`"
    return json.loads(path.read_text())


def test_manifest_covers_every_shipped_file_and_the_card_is_current():
    manifest = _manifest()
    assert set(manifest["models"]) == set(SHIPPED), "weights changed: run `python -m fer_sweep.weights.card`"
    assert manifest["default_model"] == default_model().stem
    for name, entry in manifest["models"].items():
        assert entry["file"] == f"{name}.pt"
        assert set(entry["evaluation"]["privatetest"]) == {"none", "flip", "tencrop"}
        assert entry["evaluation"]["n"] == 3589
    card = (weights_dir() / CARD).read_text()
    assert card == render_card(manifest), "MODEL_CARD.md is stale: run `python -m fer_sweep.weights.card`"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg" else n for n in SHIPPED])
def test_shipped_weights_match_manifest_and_reproduce_privatetest_accuracy(name, fer_root):
    entry = _manifest()["models"][name]
    assert file_sha256(SHIPPED[name]) == entry["sha256"], f"{name}.pt differs from the manifest: run `python -m fer_sweep.weights.card`"
    model = ev.load_model(name)
    data = ev.load_split(fer_root, "PrivateTest")
    assert len(data["labels"]) == 3589
    for tta in ("none", "flip", "tencrop"):  # every number of the card, the headline ten-crop ones included
        rep = evaluate(model["net"], data["images"], data["labels"], tta, 256, model["class_names"])
        expected = entry["evaluation"]["privatetest"][tta]
        assert abs(100 * rep["accuracy"] - 100 * expected["accuracy"]) <= 0.1, (tta, rep["accuracy"], expected)
        assert abs(rep["macro_f1"] - expected["macro_f1"]) <= 0.002, (tta, rep["macro_f1"], expected)


# ------------------------------------------------------------------------------ the command line

def test_cli_writes_json_and_png(tmp_path, monkeypatch, capsys):
    root = synthetic_csv(tmp_path / "fer2013.csv")
    ckpt = save_checkpoint(tmp_path / "tiny.pt")
    env = {"FER_SWEEP_CACHE": str(tmp_path / "cache"), "FER2013_ROOT": str(root), "MPLBACKEND": "Agg"}
    r = run_cli(f"ckpt={ckpt}", "tta=flip", "batch_size=8", "threads=1", cwd=tmp_path, env_extra=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "evaluations" / "tiny-PrivateTest-flip"
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["data"]["split"] == "PrivateTest" and rep["data"]["n"] == 21 and rep["data"]["layout"] == "csv"
    assert rep["tta"] == "flip" and rep["checkpoint"]["sha256"] == file_sha256(ckpt)
    assert set(rep["per_class"]) == set(CLASS_NAMES)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in rep["per_class"].values())
    assert np.array(rep["confusion_matrix"]).shape == (7, 7) and np.sum(rep["confusion_matrix"]) == 21
    assert 0.0 <= rep["accuracy"] <= 1.0 and 0.0 <= rep["macro_f1"] <= 1.0
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{100 * rep['accuracy']:.2f}%" in r.stdout
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    # a Lightning checkpoint of a run, another split, an explicit out (in-process, to save a start-up)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    run_ckpt = save_checkpoint(tmp_path / "runA" / "checkpoints" / "last.ckpt", lightning=True, seed=1)
    assert ev.main([f"ckpt={run_ckpt}", "split=PublicTest", f"out={tmp_path / 'o2'}", "optimise=false"]) == 0, capsys.readouterr().err
    rep2 = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert rep2["checkpoint"]["name"] == "runA-last" and rep2["data"]["split"] == "PublicTest"


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    """In a subprocess, the real exit status and stderr."""
    r = run_cli(f"ckpt={tmp_path / 'missing.pt'}", env_extra={"FER2013_ROOT": str(tmp_path)})
    assert_one_line_error(r.returncode, r.stderr, "missing.pt")


@pytest.mark.parametrize("args, fragments", [
    (["ckpt=MISSING"], ["missing.pt", "no such checkpoint"]),
    (["ckpt=FOLDER"], ["emptydir: is a folder; expected a checkpoint file (.pt or .ckpt)"]),
    (["ckpt=RUNDIR"], ["run: is a folder; expected a checkpoint file such as", "run/checkpoints/best.ckpt"]),
    (["ckpt=TEXT"], ["notes.txt", "not a loadable PyTorch checkpoint"]),
    (["ckpt=FOREIGN"], ["foreign.pt", "not a fer_sweep checkpoint"]),
    (["ckpt=CKPT", "split=Validation"], ["split=Validation", "PrivateTest"]),
    (["ckpt=CKPT", "tta=fivecrop"], ["tta=fivecrop", "tencrop"]),
    (["ckpt=CKPT", "colour=red"], ["colour=red", "key=value"]),
    (["ckpt=CKPT", "batch_size=0"], ["batch_size=0"]),
    (["ckpt=CKPT", "threads=100000"], ["threads=100000", "from 1 to 1024"]),
    (["split=PrivateTest"], ["ckpt="]),
    (["ckpt=CKPT", "data.root=NOWHERE"], ["FER2013 not found"]),
    (["ckpt=CKPT", "data.root=UNPREFIXED", "split=PrivateTest"], ["no PrivateTest images", "split=Test"]),
    (["ckpt=CKPT", "data.root=CSV", "split=Test"], ["keeps the official split", "split=PrivateTest"]),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, args, fragments):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    (tmp_path / "emptydir").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", lightning=True)
    subs = {"MISSING": str(tmp_path / "missing.pt"), "TEXT": str(tmp_path / "notes.txt"), "FOREIGN": str(tmp_path / "foreign.pt"),
            "CKPT": str(save_checkpoint(tmp_path / "tiny.pt")), "FOLDER": str(tmp_path / "emptydir"), "RUNDIR": str(tmp_path / "run"), "NOWHERE": str(tmp_path / "nowhere"),
            "UNPREFIXED": str(unprefixed_copy(tmp_path / "unprefixed")), "CSV": str(synthetic_csv(tmp_path / "fer2013.csv"))}
    argv = [a.split("=", 1)[0] + "=" + subs.get(a.split("=", 1)[1], a.split("=", 1)[1]) for a in args]
    rc = ev.main(argv)
    assert_one_line_error(rc, capsys.readouterr().err, *fragments)


def unprefixed_copy(root: Path, per_class: int = 1) -> Path:
    """A folder copy whose file names carry no usage prefix (test/ is one unsplit test set)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CLASS_NAMES:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def test_unprefixed_copy_uses_test_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    root = unprefixed_copy(tmp_path / "copy", per_class=2)
    ckpt = save_checkpoint(tmp_path / "tiny.pt")
    assert ev.main([f"ckpt={ckpt}", f"data.root={root}", f"out={tmp_path / 'out'}"]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "split=Test" in err
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert rep["data"]["split"] == "Test" and rep["data"]["n"] == 14 and "note" in rep["data"]


# ------------------------------------------------------------------------------ both data layouts

def test_csv_layout_evaluates_like_the_folder_layout(fer_root, tmp_path, monkeypatch):
    """~100 real PrivateTest faces, as image folders and as fer2013.csv: the same images, labels and metrics."""
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    files = sorted((fer_root / "test").glob("*/PrivateTest_*.jpg"))[::36][:100]
    train = [next(iter(sorted((fer_root / "train" / c).glob("Training_*.jpg")))) for c in CLASS_NAMES]
    folder = tmp_path / "folders"
    rows = []
    for src in files + train:
        dst = folder / src.parent.parent.name / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        img = cv2.imdecode(np.fromfile(src, np.uint8), cv2.IMREAD_GRAYSCALE)
        rows.append((img, CLASS_NAMES.index(src.parent.name), src.name.split("_", 1)[0]))
    rows.reverse()  # a different order than the folder reader's, on purpose
    csv_path = write_csv(tmp_path / "fer2013.csv", np.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows])

    a, b = ev.load_split(folder, "PrivateTest"), ev.load_split(csv_path, "PrivateTest")
    assert (a["layout"], b["layout"]) == ("folders", "csv")
    assert len(a["labels"]) == len(b["labels"]) == len(files) >= 90
    order_a, order_b = np.lexsort(a["images"].reshape(len(files), -1).T), np.lexsort(b["images"].reshape(len(files), -1).T)
    assert np.array_equal(a["images"][order_a], b["images"][order_b])
    assert np.array_equal(a["labels"][order_a], b["labels"][order_b])

    model = ev.load_model(next((n for n in ("deep_emotion_plus", "deep_emotion") if n in SHIPPED), "default"))
    for tta in ("none", "flip"):
        ra = evaluate(model["net"], a["images"], a["labels"], tta, 64, model["class_names"])
        rb = evaluate(model["net"], b["images"], b["labels"], tta, 64, model["class_names"])
        for key in ("n", "accuracy", "macro_f1", "per_class", "confusion_matrix"):
            assert ra[key] == rb[key], (tta, key)
