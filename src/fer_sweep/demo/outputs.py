"""What a run leaves in ``--out DIR``, written frame by frame so an interrupted run keeps its work.

* ``annotated.mp4`` (videos, cameras) or ``annotated/<image name>`` (images, folders);
* ``detections.csv``: one row per face and frame (a ``no_face`` row for a frame without faces):
  frame, time, image, face, track, box x/y/w/h, one ``p_<class>`` column per class, label, confidence;
* ``detections.jsonl``: the same, one JSON object per frame;
* ``emotions.png`` (videos, cameras): the class probabilities of the main face over time;
* ``summary.json``: what ran, counts, and the error that stopped it, if any.

Tables are flushed after every frame; :meth:`Recorder.close` (also on errors, via ``with``)
finishes the video and draws the figure from what was recorded.  Annotated images, the figure and
``summary.json`` are written to a temp file beside the target and renamed over it
(:func:`fer_sweep.io.atomic_write`), so a crash or Ctrl+C never leaves a truncated one, nor spoils
the one of an earlier run into the same folder.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from fer_sweep.demo.detectors import Box
from fer_sweep.demo.errors import DemoError
from fer_sweep.demo.sources import Frame
from fer_sweep.io import atomic_write, atomic_write_text

NO_FACE = "no_face"
"""``label`` of the CSV row that records a frame without faces."""

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoOutput:
    """Annotated frames to a video file, opened at the first frame (whose size it takes)."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        size = (image.shape[1], image.shape[0])
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(self.path.suffix.lower(), "mp4v"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, size)
            if not self.writer.isOpened():
                self.writer = None
                raise DemoError(f"{self.path}: OpenCV cannot write this video (codec {FOURCC.get(self.path.suffix.lower(), 'mp4v')} unavailable?)")
            self.size = size
        if size != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class TableOutput:
    """Per-face rows to CSV and per-frame objects to JSON Lines, flushed after every frame."""

    def __init__(self, csv_path: str | os.PathLike, jsonl_path: str | os.PathLike | None, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.csv_path = Path(csv_path)
        self._csv_file = open(self.csv_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["frame", "time", "image", "face", "track", "x", "y", "w", "h",
                            *[f"p_{c}" for c in self.class_names], "label", "confidence"])
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._json = open(self.jsonl_path, "w", encoding="utf-8") if self.jsonl_path else None
        self.rows = 0

    def write(self, frame: Frame, boxes: Sequence[Box], probs: np.ndarray, track_ids: Sequence[int | None] | None) -> None:
        t = "" if frame.time is None else f"{frame.time:.4f}"
        faces = []
        if not len(boxes):
            self._csv.writerow([frame.index, t, frame.name, "", "", "", "", "", "", *[""] * len(self.class_names), NO_FACE, ""])
            self.rows += 1
        for i, (box, p) in enumerate(zip(boxes, probs)):
            k = int(np.argmax(p))
            tid = track_ids[i] if track_ids is not None else None
            self._csv.writerow([frame.index, t, frame.name, i, "" if tid is None else tid, *(int(v) for v in box),
                                *(f"{float(v):.5f}" for v in p), self.class_names[k], f"{float(p[k]):.5f}"])
            self.rows += 1
            faces.append({"face": i, "track": tid, "box": [int(v) for v in box],
                          "probabilities": {c: round(float(v), 5) for c, v in zip(self.class_names, p)},
                          "label": self.class_names[k], "confidence": round(float(p[k]), 5)})
        self._csv_file.flush()
        if self._json is not None:
            self._json.write(json.dumps({"frame": frame.index, "time": frame.time, "image": frame.name, "faces": faces}) + "\n")
            self._json.flush()

    def close(self) -> None:
        for f in (self._csv_file, self._json):
            if f is not None and not f.closed:
                f.close()


class Timeline:
    """Probabilities of the main face (the largest face of each frame) over time."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.times: list[float] = []
        self.rows: list[np.ndarray | None] = []

    def add(self, frame: Frame, boxes: Sequence[Box], probs: np.ndarray) -> None:
        self.times.append(frame.time if frame.time is not None else float(frame.index))
        big = int(np.argmax([b[2] * b[3] for b in boxes])) if len(boxes) else None
        self.rows.append(None if big is None else np.asarray(probs[big], dtype=float))

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """Times ``(T,)`` and probabilities ``(T, C)`` (NaN where no face is seen)."""
        p = np.full((len(self.times), len(self.class_names)), np.nan)
        for i, row in enumerate(self.rows):
            if row is not None:
                p[i] = row
        return np.asarray(self.times), p

    def save(self, path: str | os.PathLike, title: str = "") -> Path | None:
        """Write the figure (matplotlib, Agg backend; the format from the suffix of ``path``, PNG
        without one), atomically; None when there is nothing to plot."""
        if not self.times:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: works headless, any backend
        from matplotlib.figure import Figure

        from fer_sweep.demo.draw import color_of

        t, p = self.series()
        fig = Figure(figsize=(10, 4.8), dpi=100)
        FigureCanvasAgg(fig)
        ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1]})
        for j, name in enumerate(self.class_names):
            b, g, r = color_of(name)
            ax.plot(t, p[:, j], label=name, color=(r / 255, g / 255, b / 255), lw=1.6)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
        ax.set_title(title or "Expression of the largest face over time")
        seen = ~np.isnan(p).any(axis=1)
        top = np.where(seen, np.nanargmax(np.where(seen[:, None], p, 0.0), axis=1), -1)
        colors = np.ones((1, len(t), 3))
        for i, k in enumerate(top):
            if k >= 0:
                b, g, r = color_of(self.class_names[k])
                colors[0, i] = (r / 255, g / 255, b / 255)
        x0 = t[0] if len(t) else 0.0
        x1 = t[-1] if len(t) > 1 else x0 + 1.0
        ax2.imshow(colors, aspect="auto", extent=(x0, x1, 0, 1), interpolation="nearest")
        ax2.set_yticks([])
        ax2.set_ylabel("top", rotation=0, ha="right", va="center")
        ax2.set_xlabel("time (s)")
        fig.tight_layout()
        fmt = Path(path).suffix.lstrip(".").lower() or "png"  # the temp file's name ends in .tmp: say the format
        return atomic_write(path, lambda tmp: fig.savefig(str(tmp), format=fmt))


class Recorder:
    """Everything written to ``out_dir`` for one run.  Use as a context manager: leaving the ``with``
    block, normally or by an error, closes the files and writes the figure and ``summary.json``."""

    def __init__(self, out_dir: str | os.PathLike, class_names: Sequence[str], stream: bool, fps: float | None = None,
                 video: bool = True, images: bool = True, table: bool = True, figure: bool = True,
                 video_name: str = "annotated.mp4", info: dict | None = None) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"{self.out_dir}: cannot create output folder ({exc.strerror or exc})") from None
        self.class_names = list(class_names)
        self.stream = stream
        self.info = dict(info or {})
        self.video = VideoOutput(self.out_dir / video_name, fps or 30.0) if stream and video else None
        self.image_dir = self.out_dir / "annotated" if not stream and images else None
        if self.image_dir is not None:
            self.image_dir.mkdir(exist_ok=True)
        self.table = TableOutput(self.out_dir / "detections.csv", self.out_dir / "detections.jsonl", class_names) if table else None
        self.timeline = Timeline(class_names) if stream and figure else None
        self.frames = 0
        self.faces = 0
        self.frames_with_face = 0
        self.labels: Counter = Counter()
        self.paths: dict[str, str] = {}
        self.closed = False

    def write(self, frame: Frame, boxes: Sequence[Box], probs: np.ndarray, track_ids: Sequence[int | None] | None,
              annotated: np.ndarray | None = None) -> None:
        """Record one frame's results (and its annotated image, when given)."""
        self.frames += 1
        self.faces += len(boxes)
        self.frames_with_face += bool(len(boxes))
        self.labels.update(self.class_names[int(np.argmax(p))] for p in probs)
        if self.table is not None:
            self.table.write(frame, boxes, probs, track_ids)
        if self.timeline is not None:
            self.timeline.add(frame, boxes, probs)
        if annotated is not None:
            if self.video is not None:
                self.video.write(annotated)
            elif self.image_dir is not None:
                name = frame.name or f"frame_{frame.index:06d}.png"
                path = self.image_dir / name
                if path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}:
                    path = path.with_suffix(".png")
                ok, buf = cv2.imencode(path.suffix, annotated)  # encoded by the target's suffix, so the temp name may differ
                if ok:
                    atomic_write(path, lambda tmp: buf.tofile(str(tmp)))

    def close(self, error: str | None = None, **extra: Any) -> dict[str, str]:
        """Finish every output (idempotent); returns the written paths by kind."""
        if self.closed:
            return self.paths
        self.closed = True
        problems = []
        if self.video is not None:
            self.video.close()
            if self.video.frames:
                self.paths["video"] = str(self.video.path)
        if self.image_dir is not None:
            self.paths["images"] = str(self.image_dir)
        if self.table is not None:
            self.table.close()
            self.paths["csv"] = str(self.table.csv_path)
            if self.table.jsonl_path:
                self.paths["jsonl"] = str(self.table.jsonl_path)
        if self.timeline is not None and self.frames:
            try:
                fig = self.timeline.save(self.out_dir / "emotions.png")
                if fig is not None:
                    self.paths["figure"] = str(fig)
            except Exception as exc:  # a figure problem must not lose the rest
                problems.append(f"figure not written: {exc}")
        summary = {**self.info, "frames": self.frames, "faces": self.faces, "frames_with_face": self.frames_with_face,
                   "labels": dict(self.labels.most_common()), **extra, "outputs": dict(self.paths),
                   "error": error, "problems": problems}
        path = self.out_dir / "summary.json"
        atomic_write_text(path, json.dumps(summary, indent=2, default=_jsonable) + "\n")  # ASCII (ensure_ascii)
        self.paths["summary"] = str(path)
        return self.paths

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.close(error=None if exc is None else (str(exc).splitlines() or [type(exc).__name__])[0])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, Path):
        return str(value)
    return str(value)
