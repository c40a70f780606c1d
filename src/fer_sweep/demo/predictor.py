"""A trained network that classifies all faces of a frame in one batch.

Faces go through exactly the training preprocessing (:func:`~fer_sweep.data.preprocess.face_crop_to_48`
then :func:`~fer_sweep.data.preprocess.to_model_input`, inside
:func:`~fer_sweep.models.predict.predict_proba`), so the network sees what it was trained on.  Boxes
of the ``full`` detector are cropped with no margin: a 48x48 face then goes through bit-identical
to what ``python -m fer_sweep.evaluate`` feeds the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn

from fer_sweep.data.classes import class_names as default_class_names
from fer_sweep.data.preprocess import SIZE, face_crop_to_48
from fer_sweep.demo.detectors import Box
from fer_sweep.demo.errors import DemoError, one_line
from fer_sweep.models.predict import predict_proba
from fer_sweep.models.registry import CheckpointError, load_checkpoint

DEFAULT_MARGIN = 0.05
"""Grow detector boxes by this fraction before cropping.  Haar boxes on FER2013 faces pasted into
frames come out about 4% smaller than the FER2013 crop itself (median 154 px for a 160 px face), so
this makes live crops frame the face as the training images do.  Not used for the ``full``
detector, whose box is already the face crop (its ``crop_margin`` is 0)."""
MAX_MARGIN = 10.0
"""The largest ``--margin``: ten face widths each side is already the whole frame; far larger ones
overflow OpenCV's border padding."""


def default_model_path(directory: str | os.PathLike | None = None) -> Path:
    """The best shipped weights file in ``directory`` (default: the package's ``fer_sweep/weights/``):
    ``vgg.pt``, else ``deep_emotion_plus.pt``, else ``deep_emotion.pt`` (the order of
    :data:`fer_sweep.weights.SHIPPED_NAMES`).  Raises :class:`DemoError` (one line) when none is there."""
    from fer_sweep import weights

    try:
        return weights.default_model(directory)
    except FileNotFoundError as exc:
        raise DemoError(f"{one_line(exc)}; pass --ckpt PATH to a checkpoint written by fer_sweep training") from None


class Predictor:
    """Expression probabilities for the faces of a frame.

    ``net`` maps float ``(N, 1, 48, 48)`` inputs (normalised by ``to_model_input``) to ``(N, C)``
    logits; ``class_names`` names the ``C`` outputs.
    """

    def __init__(self, net: nn.Module, class_names: Sequence[str], margin: float = DEFAULT_MARGIN,
                 device: str | torch.device = "cpu", source: str = "") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.eager = self.net
        self.class_names = tuple(class_names)
        self.margin = float(margin)
        if not 0 <= self.margin <= MAX_MARGIN:  # a negative one shrinks the crop, -1 or less or a huge one crashes OpenCV
            raise DemoError(f"margin={margin}: expected a fraction from 0 to {MAX_MARGIN:g} of the face box (e.g. {DEFAULT_MARGIN})")
        self.source = source
        self.optimised = False
        self._check()

    def optimise(self) -> "Predictor":
        """Swap in :func:`fer_sweep.models.predict.optimise_for_inference`'s faster CPU version of the
        network (same outputs within 1e-4; BatchNorm folded, traced and frozen).  Takes about a
        second (a few for VGG) once; worth it for videos and webcams.  Returns ``self``."""
        if not self.optimised:
            from fer_sweep.models.predict import optimise_for_inference

            self.net = optimise_for_inference(self.eager)
            self.optimised = True
        return self

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, **kwargs) -> "Predictor":
        """Load a fer_sweep checkpoint (Lightning ``.ckpt`` or shipped ``.pt``), or a shipped model by
        name (``vgg``, ``deep_emotion_plus``, ``deep_emotion``, ``default``); the shipped default
        (:func:`default_model_path`) when ``path`` is None.  Bad files raise :class:`DemoError`."""
        if path is None:
            path = default_model_path()
        elif not Path(path).expanduser().is_file():
            from fer_sweep.weights import resolve_model

            try:
                path, _ = resolve_model(path)
            except FileNotFoundError as exc:
                raise DemoError(one_line(exc)) from None
        path = Path(path)
        try:
            net, names, _meta = load_checkpoint(path)
        except CheckpointError as exc:
            raise DemoError(one_line(exc)) from None
        if not names:
            num = getattr(net, "num_classes", None)
            try:
                names = list(default_class_names(num))
            except (TypeError, ValueError):
                raise DemoError(f"{path}: checkpoint names no classes and its network has {num} outputs") from None
        return cls(net, names, source=str(path), **kwargs)

    def _check(self) -> None:
        """Fail early, with one line, when the network is not a 48x48 face classifier for these classes."""
        where = self.source or type(self.net).__name__
        if not self.class_names:
            raise DemoError(f"{where}: no class names")
        try:
            with torch.inference_mode():
                out = self.net(torch.zeros(1, 1, SIZE, SIZE, device=self.device))
        except Exception as exc:  # any error of a foreign network on our input shape
            raise DemoError(f"{where}: not a 48x48 grayscale face classifier ({one_line(exc)})") from None
        if out.dim() != 2 or out.shape[1] != len(self.class_names):
            raise DemoError(f"{where}: network gives outputs of shape {tuple(out.shape)} but the checkpoint names "
                            f"{len(self.class_names)} classes")

    def crops(self, image: np.ndarray, boxes: Sequence[Box], margin: float | None = None) -> np.ndarray:
        """The ``(N, 48, 48)`` uint8 face crops of ``boxes`` in ``image``, grown by ``margin``
        (None: :attr:`margin`; the recognizer passes its detector's ``crop_margin``)."""
        margin = self.margin if margin is None else float(margin)
        if not len(boxes):
            return np.zeros((0, SIZE, SIZE), np.uint8)
        gray = image
        if image.ndim == 3:
            gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        return np.stack([face_crop_to_48(gray, tuple(int(v) for v in box), margin) for box in boxes])

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, C)`` (rows sum to 1) for uint8 ``(N, 48, 48)`` crops, in one batch."""
        if len(crops) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return predict_proba(self.net, crops, batch_size=max(1, len(crops)))

    def predict(self, image: np.ndarray, boxes: Sequence[Box], margin: float | None = None) -> np.ndarray:
        """Probabilities ``(N, C)`` for the faces ``boxes`` of ``image`` (BGR or grayscale), one batch
        (``margin`` as in :meth:`crops`)."""
        return self.predict_crops(self.crops(image, boxes, margin))
