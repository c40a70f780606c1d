"""Knowledge distillation: a trained teacher's class probabilities as extra training targets.

The Deep-Emotion network (67k parameters) underfits FER2013 once it is augmented (its train
accuracy stays near its test accuracy), and about a third of FER2013's labels are ambiguous
faces.  A stronger teacher (the shipped VGG-style network, 68% PrivateTest) gives every training
face a full distribution over the 7 classes instead of one hard label: which expressions it looks
like, how sure one can be.  Training the student on a mix of the hard labels and the teacher's
softened distribution (Hinton et al., 2015) is a standard way to move a small network towards a
large one.

The teacher runs once, offline, on the clean training faces (optionally with its test-time
augmentation), not on every augmented batch: on a CPU the VGG teacher is about 100x the
student's cost per face, so per-batch teaching would make training many times slower.  The
augmentation used here (flips, small shifts, rotations, zooms) leaves the expression unchanged,
so the clean face's distribution stands for its augmented views.  The probabilities are cached
(``teacher-<hash>.pt`` in the data cache folder, keyed by the teacher file's sha256, the TTA mode
and the faces' bytes), so a resumed or repeated run does not pay for them again.

Only training uses the teacher; validation, test and the exported file are the student alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fer_sweep.io import atomic_write, file_sha256

log = logging.getLogger(__name__)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(p_T || q_T)``, batch mean: ``p_T`` the teacher's probabilities softened by
    temperature ``T`` (``softmax(log p / T)``), ``q_T`` the student's ``softmax(logits / T)``.

    The ``T^2`` keeps the gradient's size independent of ``T`` (Hinton et al., 2015)."""
    t = float(temperature)
    target = torch.softmax(torch.log(teacher_probs.float().clamp_min(1e-8)) / t, dim=1)
    log_q = torch.log_softmax(student_logits.float() / t, dim=1)
    return F.kl_div(log_q, target, reduction="batchmean") * (t * t)


def _faces_digest(faces: torch.Tensor) -> str:
    return hashlib.sha256(faces.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:20]


def teacher_cache_file(teacher_file: Path, faces: torch.Tensor, tta: str, cache_dir: str | os.PathLike) -> Path:
    """Where the teacher's probabilities for ``faces`` are cached."""
    key = hashlib.sha256(f"{file_sha256(teacher_file)}|{tta}|{_faces_digest(faces)}|{tuple(faces.shape)}".encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"teacher-{key}.pt"


def teacher_probabilities(teacher: str | os.PathLike, faces: torch.Tensor, tta: str = "flip", cache_dir: str | os.PathLike | None = None,
                          num_classes: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities ``(N, C)`` of ``teacher`` (a checkpoint file or a shipped model name)
    for uint8 ``faces (N, 48, 48)``, with test-time augmentation ``tta``; computed once, then read
    from the cache (``cache_dir``; default: the FER2013 tensor cache folder).

    Raises ``ValueError`` (one line) when the teacher's classes differ from ``num_classes``, and
    ``FileNotFoundError`` (one line) when ``teacher`` is neither a file nor a shipped model."""
    from fer_sweep.data.cache import default_cache_dir
    from fer_sweep.models.predict import TTA_MODES, optimise_for_inference, predict_proba
    from fer_sweep.models.registry import load_checkpoint
    from fer_sweep.weights import resolve_model

    if tta not in TTA_MODES:
        raise ValueError(f"model.teacher_tta={tta!r}; expected one of {', '.join(TTA_MODES)}")
    path, name = resolve_model(teacher, key="model.teacher")
    cache = teacher_cache_file(path, faces, tta, cache_dir or default_cache_dir())
    if cache.is_file():
        try:
            probs = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # unreadable (truncated by hand, another torch): recompute it
            probs = None
        if isinstance(probs, torch.Tensor) and probs.dim() == 2 and probs.shape[0] == len(faces):
            _check_classes(teacher, probs.shape[1], num_classes)
            log.info("teacher %s (%s TTA): probabilities for %d faces from %s", name, tta, len(faces), cache)
            return probs
        log.warning("ignoring %s: not a readable (%d, C) probability tensor; recomputing", cache, len(faces))
    net, _, _ = load_checkpoint(path)
    _check_classes(teacher, getattr(net, "num_classes", None), num_classes)  # before the long computation
    start = time.perf_counter()
    if faces.device.type == "cpu":
        runner = optimise_for_inference(net.eval(), check=False)
    else:  # faces resident on the training GPU: the teacher runs there, in plain eager mode
        runner = net.to(faces.device).eval()
    probs = torch.from_numpy(predict_proba(runner, faces, tta=tta, batch_size=batch_size)).float()
    _check_classes(teacher, probs.shape[1], num_classes)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda tmp: torch.save(probs, tmp))
    log.info("teacher %s (%s TTA): probabilities for %d faces in %.0f s, cached in %s", name, tta, len(faces), time.perf_counter() - start, cache)
    return probs


def _check_classes(teacher, found: int | None, expected: int | None) -> None:
    if found is not None and expected is not None and int(found) != int(expected):
        raise ValueError(f"model.teacher={teacher}: the teacher predicts {found} classes; the data has {expected} (data.num_classes)")
