"""Knowledge distillation from a trained teacher (``model.teacher``): the loss, the batches that
carry the teacher's probabilities, the cached teacher targets on real faces, and a real training."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import QUIET, TINY, compose_cfg, run_cli

from fer_sweep.data.loader import TensorBatches
from fer_sweep.models.distill import distillation_loss, teacher_cache_file, teacher_probabilities


def test_distillation_loss_is_zero_only_when_the_student_matches_the_softened_teacher():
    probs = torch.softmax(torch.randn(16, 7, generator=torch.Generator().manual_seed(0)) * 2, dim=1)
    for t in (1.0, 2.0, 4.0):
        assert distillation_loss(torch.log(probs) + 3.0, probs, t).item() == pytest.approx(0.0, abs=1e-5)  # logits up to a constant
        other = torch.randn(16, 7, generator=torch.Generator().manual_seed(1))
        assert distillation_loss(other, probs, t).item() > 0.01
    # T^2 scaling: at high T the loss tends to (1/2N) sum ||z - log p - mean||^2, independent of T
    z = torch.randn(16, 7, generator=torch.Generator().manual_seed(2))
    assert distillation_loss(z, probs, 50.0).item() == pytest.approx(distillation_loss(z, probs, 100.0).item(), rel=0.05)


def test_distillation_loss_gradient_pulls_the_student_towards_the_teacher():
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    logits = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(logits, teacher, 2.0).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 2]  # gradient descent raises class 0, lowers class 2


def test_batches_carry_per_face_targets_in_the_same_order():
    labels = torch.arange(300) % 7
    images = labels.view(-1, 1, 1).expand(300, 48, 48).to(torch.uint8).contiguous()
    extra = torch.nn.functional.one_hot(labels, 7).float() * 0.9 + 0.01
    for shuffle in (False, True):
        seen = 0
        for x, y, t in TensorBatches(images, labels, 64, shuffle=shuffle, seed=3, extra=extra):
            assert torch.equal(t.argmax(1), y) and torch.equal(x[:, 0, 0].long(), y)
            seen += len(y)
        assert seen == 300
    assert all(len(b) == 2 for b in TensorBatches(images, labels, 64))
    with pytest.raises(ValueError, match="extra has 299 rows for 300 samples"):
        TensorBatches(images, labels, 64, extra=extra[:299])


def test_teacher_probabilities_on_real_faces_are_computed_once_and_cached(fer_raw, tmp_path):
    """The shipped VGG teacher on 200 real training faces: probability rows that sum to 1, far
    better than chance against the labels, and a second call reads the cache file."""
    train = (fer_raw.usage == 0).nonzero()[0][:200]
    faces, labels = torch.from_numpy(fer_raw.images[train]), torch.from_numpy(fer_raw.labels[train])
    probs = teacher_probabilities("vgg", faces, "flip", cache_dir=tmp_path, num_classes=7)
    assert probs.shape == (200, 7) and torch.allclose(probs.sum(1), torch.ones(200), atol=1e-4)
    assert (probs.argmax(1) == labels).float().mean() > 0.6  # the teacher fits its own training faces well above chance (~25%)
    from fer_sweep.weights import resolve_model

    cache = teacher_cache_file(resolve_model("vgg")[0], faces, "flip", tmp_path)
    assert cache.is_file()
    cache.write_bytes(b"")  # a broken cache file is recomputed, not trusted
    with pytest.raises(Exception):
        torch.load(cache, weights_only=True)
    again = teacher_probabilities("vgg", faces, "flip", cache_dir=tmp_path, num_classes=7)
    assert torch.allclose(again, probs, atol=1e-5)
    cached = teacher_probabilities("vgg", faces, "flip", cache_dir=tmp_path, num_classes=7)
    assert torch.equal(cached, again)
    with pytest.raises(ValueError, match="the teacher predicts 7 classes; the data has 6"):
        teacher_probabilities("vgg", faces, "flip", cache_dir=tmp_path, num_classes=6)


@pytest.mark.parametrize("override, fragment", [("model.teacher=no_such_model", "model.teacher=no_such_model: no such checkpoint file"),
                                                ("model.distill_weight=1.5", "model.distill_weight=1.5: expected a weight in [0, 1]"),
                                                ("model.distill_temperature=0", "model.distill_temperature=0: expected a positive temperature"),
                                                ("model.teacher_tta=fivecrop", "model.teacher_tta=fivecrop: expected none, flip or tencrop")])
def test_bad_distillation_settings_fail_before_training_in_one_line(tmp_path, override, fragment):
    extra = [] if "teacher=" in override else ["model.teacher=vgg"]
    proc = run_cli([override, *extra, f"hydra.run.dir={tmp_path}", *QUIET], timeout=120)
    assert proc.returncode == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_distilled_training_runs_and_differs_from_plain_training(fer_root, tmp_path):
    """A real short training with ``model.teacher=vgg`` completes, and the teacher changes what is
    learnt: the same seed without a teacher ends with different weights and training loss."""
    from fer_sweep.train import run

    common = ["trainer.max_epochs=1", "test_after_fit=false", "logger=none", *TINY]
    taught = run(compose_cfg(["model.teacher=vgg", "model.distill_weight=0.7", f"paths.output_dir={tmp_path / 'kd'}", *common]))
    plain = run(compose_cfg([f"paths.output_dir={tmp_path / 'plain'}", *common]))
    assert taught["status"] == "completed", taught.get("error")
    assert plain["status"] == "completed", plain.get("error")
    kd_loss = float((tmp_path / "kd" / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    plain_loss = float((tmp_path / "plain" / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    assert abs(kd_loss - plain_loss) > 1e-3
