"""Drawing results on a frame: box and label per face, probability bars, frames per second."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from fer_sweep.demo.detectors import Box

FONT = cv2.FONT_HERSHEY_SIMPLEX
COLORS: dict[str, tuple[int, int, int]] = {  # BGR
    "angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (170, 60, 150), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (230, 200, 20), "neutral": (190, 190, 190),
}
MIN_SIDE = 240
"""Images whose shorter side is below this are enlarged (by a whole factor) before drawing."""


def color_of(name: str) -> tuple[int, int, int]:
    if name in COLORS:
        return COLORS[name]
    h = sum(map(ord, name)) * 47 % 180  # stable colour for other class names
    hsv = np.uint8([[[h, 200, 230]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, bg=None, thickness: int = 1) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = org
    if bg is not None:
        cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), bg, cv2.FILLED)
    cv2.putText(img, text, (x, y), FONT, scale, color, thickness, cv2.LINE_AA)


def _ink_for(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.114 * bg[0] + 0.587 * bg[1] + 0.299 * bg[2] > 140 else (255, 255, 255)


def enlarge_factor(shape: tuple[int, ...]) -> int:
    """Whole factor by which an image of ``shape`` is enlarged for drawing (1 for usual frames)."""
    side = min(shape[:2])
    return 1 if side >= MIN_SIDE else int(np.ceil(MIN_SIDE / max(side, 1)))


def draw_faces(image: np.ndarray, boxes: Sequence[Box], probs: np.ndarray, class_names: Sequence[str],
               bars: bool = True, track_ids: Sequence[int | None] | None = None) -> np.ndarray:
    """Draw each face's box, top label with its probability and (``bars``) all class probabilities,
    in place on a BGR ``image``; a "no face" note when ``boxes`` is empty.  Returns ``image``."""
    H, W = image.shape[:2]
    scale = max(0.35, min(H, W) / 700.0)
    thick = max(1, int(round(scale * 2)))
    if not len(boxes):
        _text(image, "no face", (8, H - 10), scale * 1.1, (255, 255, 255), bg=(60, 60, 60), thickness=thick)
        return image
    for i, (box, p) in enumerate(zip(boxes, probs)):
        x, y, w, h = (int(v) for v in box)
        k = int(np.argmax(p))
        name = class_names[k]
        col = color_of(name)
        cv2.rectangle(image, (x, y), (x + w, y + h), col, max(2, thick + 1))
        tid = track_ids[i] if track_ids is not None and i < len(track_ids) else None
        label = f"{name} {100 * p[k]:.0f}%" + (f"  #{tid}" if tid is not None else "")
        ty = y - 6 if y - 6 > 20 * scale + 4 else y + h + int(24 * scale) + 4
        _text(image, label, (x, ty), scale * 1.1, _ink_for(col), bg=col, thickness=thick)
        if bars:
            _bars(image, (x, y, w, h), p, class_names, scale)
    return image


def _bars(image: np.ndarray, box: Box, probs: np.ndarray, class_names: Sequence[str], scale: float) -> None:
    """Horizontal probability bars beside the box (right side, or left when there is no room)."""
    H, W = image.shape[:2]
    x, y, w, h = box
    row = max(10, int(round(22 * scale)))
    fs = row / 30.0
    name_w = max(cv2.getTextSize(n, FONT, fs, 1)[0][0] for n in class_names) + 4
    bar_w = max(30, int(round(110 * scale)))
    panel = name_w + bar_w + 6
    px = x + w + 6 if x + w + 6 + panel <= W else max(0, x - 6 - panel)
    py = max(0, min(y, H - row * len(class_names)))
    overlay = image[py:py + row * len(class_names), px:px + panel]
    if overlay.size:
        overlay[:] = (overlay * 0.45).astype(np.uint8)  # darken for contrast
    best = int(np.argmax(probs))
    for j, (name, p) in enumerate(zip(class_names, probs)):
        ry = py + j * row
        cv2.putText(image, name, (px + 2, ry + row - 3), FONT, fs, (255, 255, 255) if j == best else (200, 200, 200), 1, cv2.LINE_AA)
        bx = px + name_w
        cv2.rectangle(image, (bx, ry + 2), (bx + int(round(bar_w * float(p))), ry + row - 2), color_of(name), cv2.FILLED)
        cv2.rectangle(image, (bx, ry + 2), (bx + bar_w, ry + row - 2), (120, 120, 120), 1)


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """Frames-per-second counter at the top left, in place."""
    H, W = image.shape[:2]
    scale = max(0.35, min(H, W) / 700.0)
    _text(image, f"{fps:5.1f} FPS", (8, int(28 * scale) + 6), scale * 1.1, (255, 255, 255), bg=(0, 0, 0), thickness=max(1, int(round(scale * 2))))
    return image


def annotate(image: np.ndarray, boxes: Sequence[Box], probs: np.ndarray, class_names: Sequence[str],
             fps: float | None = None, bars: bool = True, track_ids: Sequence[int | None] | None = None,
             enlarge: bool = False, copy: bool = True) -> np.ndarray:
    """``image`` (a BGR copy of it unless ``copy=False``) with the results drawn on it.  With
    ``enlarge``, small images (such as 48x48 faces) are first enlarged by :func:`enlarge_factor` so
    the drawing is legible."""
    out = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    f = enlarge_factor(out.shape) if enlarge else 1
    if f > 1:
        out = cv2.resize(out, (out.shape[1] * f, out.shape[0] * f), interpolation=cv2.INTER_NEAREST)
        boxes = [tuple(int(v) * f for v in b) for b in boxes]
    elif copy and out is image:
        out = out.copy()
    draw_faces(out, boxes, probs, class_names, bars=bars, track_ids=track_ids)
    if fps is not None:
        draw_fps(out, fps)
    return out
