"""The one preprocessing shared by training, evaluation and the live recognizer.

A face becomes a 48x48 uint8 grayscale crop (:func:`face_crop_to_48`), and a batch of such crops
becomes the network's input by :func:`to_model_input` (scale to [0, 1], then normalise with
mean 0.5 / std 0.5 as the Deep-Emotion reference code does).  Training, ``evaluate`` and ``demo``
all call these two functions, so a deployed model sees exactly what it was trained on.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

SIZE = 48
MEAN, STD = 0.5, 0.5


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 48, 48)`` or ``(N, 1, 48, 48)`` -> float ``(N, 1, 48, 48)`` normalised to [-1, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    x = images.float().mul_(1.0 / 255.0)
    return x.sub_(MEAN).div_(STD)


def face_crop_to_48(image: np.ndarray, box: tuple[int, int, int, int] | None = None, margin: float = 0.0) -> np.ndarray:
    """Crop ``box=(x, y, w, h)`` (optionally grown by ``margin`` of its size, kept square) from a BGR
    or grayscale image and return it as a 48x48 uint8 grayscale face."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if box is not None:
        x, y, w, h = box
        side = max(w, h) * (1.0 + margin)
        cx, cy = x + w / 2.0, y + h / 2.0
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x1, y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
        H, W = gray.shape
        pad = max(0, -x0, -y0, x1 - W, y1 - H)
        if pad:
            gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
        gray = gray[y0:y1, x0:x1]
    if gray.shape != (SIZE, SIZE):
        interp = cv2.INTER_AREA if min(gray.shape) > SIZE else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (SIZE, SIZE), interpolation=interp)
    return np.ascontiguousarray(gray, dtype=np.uint8)
