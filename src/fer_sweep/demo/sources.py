"""Frames from a webcam, a video file, an image, or a folder of images.

:func:`open_source` picks the kind from the argument: an integer (or a string of digits that is not
an existing path) is a webcam index, a folder is a folder of images, a file is an image or a video by
its extension (else whichever OpenCV can read), and ``scheme://...`` is a network stream.  Problems
raise :class:`~fer_sweep.demo.errors.DemoError` with a one-line message; iterating stops with one
when a video or camera breaks off, after yielding every frame read before.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from fer_sweep.demo.errors import DemoError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                        ".pbm", ".pnm", ".pxm", ".sr", ".ras", ".jp2", ".avif", ".hdr", ".pic"})
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv",
                        ".3gp", ".ts", ".mts", ".m2ts", ".gif", ".mjpeg", ".mjpg", ".h264", ".hevc"})


@dataclass
class Frame:
    """One image of a source."""

    index: int
    """0-based position in the source (counting only frames yielded)."""
    time: float | None
    """Seconds from the start: the video's timestamp, wall-clock time for a camera, None for images."""
    image: np.ndarray
    """BGR uint8 ``(H, W, 3)``."""
    name: str = ""
    """The image's file name (images and folders); empty for videos and cameras."""


class Source(ABC):
    """An iterable of :class:`Frame`; use it as a context manager or call :meth:`close`."""

    kind: str = ""
    stream: bool = False
    """True for videos and cameras (frames in time order, which tracking and smoothing need)."""

    def __init__(self, name: str, on_warning: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.fps: float | None = None
        self.frame_count: int | None = None
        self.size: tuple[int, int] | None = None
        self.warnings: list[str] = []
        self.on_warning = on_warning

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """BGR image of ``path``, or None when it is not a readable image (works with any path encoding)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ImageSource(Source):
    """One image file."""

    kind = "image"

    def __init__(self, path: str | os.PathLike, on_warning=None, image: np.ndarray | None = None) -> None:
        super().__init__(str(path), on_warning)
        self.path = Path(path)
        self.image = image if image is not None else read_image(self.path)
        if self.image is None:
            raise DemoError(f"{self.path}: not a readable image")
        self.frame_count = 1
        self.size = (self.image.shape[1], self.image.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(0, None, self.image, self.path.name)


class FolderSource(Source):
    """The images of a folder (not its subfolders), in name order; other files are skipped with a warning."""

    kind = "folder"

    def __init__(self, path: str | os.PathLike, on_warning=None) -> None:
        super().__init__(str(path), on_warning)
        self.path = Path(path)
        try:
            entries = sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
        except OSError as exc:
            raise DemoError(f"{self.path}: cannot list folder ({exc.strerror or exc})") from None
        self.files = [p for p in entries if p.suffix.lower() in IMAGE_EXTS]
        others = [p.name for p in entries if p.suffix.lower() not in IMAGE_EXTS]
        if not self.files:
            found = f" (it has {len(others)} other files: {_listing(others)})" if others else " (it is empty)"
            raise DemoError(f"{self.path}: no images in folder{found}")
        if others:
            self.warn(f"{self.path}: skipping {len(others)} files that are not images: {_listing(others)}")
        self.frame_count = len(self.files)
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.files:
            image = read_image(path)
            if image is None:
                self.skipped.append(path.name)
                self.warn(f"{path}: skipping unreadable image")
                continue
            yield Frame(index, None, image, path.name)
            index += 1
        if index == 0:
            raise DemoError(f"{self.path}: none of its {len(self.files)} images is readable")


class _CaptureSource(Source):
    """Shared reading loop of videos and cameras."""

    stream = True

    def __init__(self, name: str, cap: cv2.VideoCapture, on_warning=None) -> None:
        super().__init__(name, on_warning)
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()

    def _read(self) -> np.ndarray | None:
        try:
            ok, image = self.cap.read()
        except cv2.error:
            return None
        return image if ok and image is not None and image.size else None


class VideoSource(_CaptureSource):
    """A video file (anything OpenCV's video I/O decodes)."""

    kind = "video"

    def __init__(self, path: str | os.PathLike, on_warning=None, cap: cv2.VideoCapture | None = None) -> None:
        self.path = Path(path)
        cap = cap if cap is not None else cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise DemoError(f"{self.path}: not a readable video (OpenCV cannot open it: damaged, truncated or unsupported format)")
        super().__init__(str(path), cap, on_warning)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            image = self._read()
            if image is None:
                break
            t = index / self.fps if self.fps else self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            yield Frame(index, float(t), image)
            index += 1
        if index == 0:
            raise DemoError(f"{self.path}: not a readable video (no frame could be decoded)")
        expected = self.frame_count
        if expected and index < expected - max(1, int(0.02 * expected)):
            raise DemoError(f"{self.path}: video breaks off after {index} of {expected} frames (truncated or damaged file)")


class CameraSource(_CaptureSource):
    """A webcam by index (or a network stream URL); frames are timed by the wall clock."""

    kind = "webcam"

    def __init__(self, device: int | str, on_warning=None) -> None:
        self.device = device
        what = f"camera {device}" if isinstance(device, int) else f"stream {device}"
        cap = cv2.VideoCapture(device)
        if not cap.isOpened():
            cap.release()
            raise DemoError(f"no {what}: OpenCV cannot open it" + (" (no webcam at that index, or it is in use)" if isinstance(device, int) else ""))
        super().__init__(what, cap, on_warning)
        self.what = what

    def __iter__(self) -> Iterator[Frame]:
        index, start = 0, None
        while True:
            image = self._read()
            if image is None:
                break
            now = time.monotonic()
            start = now if start is None else start
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            yield Frame(index, now - start, image)
            index += 1
        raise DemoError(f"{self.what} gave no frames" if index == 0 else f"{self.what} stopped giving frames after {index} frames")


def open_source(spec: str | int | os.PathLike, on_warning: Callable[[str], None] | None = None) -> Source:
    """The :class:`Source` that ``spec`` names: webcam index, video, image, folder, or stream URL."""
    if isinstance(spec, (int, np.integer)):
        return CameraSource(int(spec), on_warning)
    text = str(spec)
    path = Path(text).expanduser()
    if text.strip().isdigit() and not path.exists():
        return CameraSource(int(text), on_warning)
    if "://" in text and not path.exists():
        return CameraSource(text, on_warning)
    if path.is_dir():
        return FolderSource(path, on_warning)
    if not path.exists():
        raise DemoError(f"{path}: no such file or folder (expected a webcam index, a video, an image or a folder of images)")
    if not path.is_file():
        raise DemoError(f"{path}: not a regular file (expected a video, an image or a folder of images)")
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return ImageSource(path, on_warning)
    if ext in VIDEO_EXTS:
        return VideoSource(path, on_warning)
    image = read_image(path)  # unknown extension: whichever reader takes it
    if image is not None:
        return ImageSource(path, on_warning, image=image)
    cap = cv2.VideoCapture(str(path))
    if cap.isOpened():
        return VideoSource(path, on_warning, cap=cap)
    cap.release()
    raise DemoError(f"{path}: neither a readable image nor a readable video")
