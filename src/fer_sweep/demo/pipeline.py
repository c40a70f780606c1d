"""The recognizer (detect, crop, classify, smooth) and the loop that runs it over a source.

>>> from fer_sweep.demo import Predictor, Recognizer, run
>>> summary = run("clip.mp4", ckpt="model.ckpt", out_dir="out", show=False)   # doctest: +SKIP
>>> rec = Recognizer(Predictor.from_checkpoint("model.ckpt"))                  # doctest: +SKIP
>>> result = rec(image_bgr); result.labels, result.probs                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from fer_sweep.demo.detectors import DEFAULT_DETECTOR, Box, FaceDetector, make_detector
from fer_sweep.demo.display import Window
from fer_sweep.demo.draw import annotate
from fer_sweep.demo.outputs import Recorder
from fer_sweep.demo.predictor import Predictor
from fer_sweep.demo.smoothing import TemporalSmoother
from fer_sweep.demo.sources import Frame, Source, open_source

DEFAULT_SMOOTHING = 0.5
"""EMA weight of the newest frame for videos and cameras (1 = no smoothing)."""


@dataclass
class FrameResult:
    """The faces of one frame."""

    boxes: list[Box]
    probs: np.ndarray
    """``(N, C)`` class probabilities (smoothed over time when smoothing is on); rows sum to 1."""
    class_names: tuple[str, ...]
    track_ids: list[int] | None = None
    raw_probs: np.ndarray | None = None
    """The unsmoothed probabilities of this frame alone."""
    frame: Frame | None = None

    @property
    def labels(self) -> list[str]:
        return [self.class_names[int(k)] for k in np.argmax(self.probs, axis=1)] if len(self.boxes) else []

    @property
    def confidences(self) -> list[float]:
        return [float(v) for v in np.max(self.probs, axis=1)] if len(self.boxes) else []


class Recognizer:
    """Detector + predictor (+ optional temporal smoother) applied to one image at a time.

    With ``smoothing`` (an EMA weight; 1 = track faces without averaging) faces are tracked across
    calls, which suits consecutive video frames; ``classify_every=N`` then classifies a tracked
    face only every N-th frame (new faces at once) and reuses its averaged probabilities in
    between: a large network costs 1/N as much per frame."""

    def __init__(self, predictor: Predictor, detector: FaceDetector | str | None = None,
                 smoothing: float | None = None, classify_every: int = 1) -> None:
        self.predictor = predictor
        self.detector = make_detector(detector or DEFAULT_DETECTOR) if detector is None or isinstance(detector, str) else detector
        self.smoother = TemporalSmoother(alpha=smoothing) if smoothing is not None else None
        if classify_every < 1:
            raise ValueError(f"classify_every={classify_every}: expected >= 1")
        self.classify_every = int(classify_every)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.predictor.class_names

    def __call__(self, image: np.ndarray, frame: Frame | None = None, boxes: list[Box] | None = None) -> FrameResult:
        """Detect (unless ``boxes`` of ``image`` are given, e.g. by :func:`detect_ahead`), classify, smooth."""
        boxes = list(self.detector.detect(image)) if boxes is None else list(boxes)
        margin = getattr(self.detector, "crop_margin", None)  # 0 for ``full``: its box is the face crop
        if self.smoother is None:
            raw = self.predictor.predict(image, boxes, margin)
            return FrameResult(boxes, raw, self.class_names, None, raw, frame)
        tracks = self.smoother.tracker.update(boxes)
        todo = [i for i, t in enumerate(tracks) if t.probs is None or t.since_classified + 1 >= self.classify_every]
        fresh = self.predictor.predict(image, [boxes[i] for i in todo], margin)
        probs = np.zeros((len(boxes), len(self.class_names)), np.float32)
        raw = probs.copy()
        for i, t in enumerate(tracks):
            if i in todo:
                raw[i] = fresh[todo.index(i)]
                probs[i] = self.smoother.blend(t, raw[i])
            else:  # not classified in this frame: keep its average
                t.since_classified += 1
                probs[i] = raw[i] = t.probs
        return FrameResult(boxes, probs, self.class_names, [t.id for t in tracks], raw, frame)

    def reset(self) -> None:
        if self.smoother is not None:
            self.smoother.reset()


def detect_ahead(frames: Iterable[Frame], detector: FaceDetector) -> Iterator[tuple[Frame, list[Box]]]:
    """``(frame, boxes)`` for each frame, with the *next* frame read and its faces detected in a
    worker thread while the caller classifies, draws and writes this one.

    OpenCV and PyTorch release the GIL in their kernels, so on two cores reading+detecting and
    classifying+drawing overlap: a frame costs about the longer of the two instead of their sum,
    for one frame of latency.  Order is kept; an error of the reader or the detector is raised at
    the frame where it happened, after every earlier frame was yielded.  Close the generator (as
    :func:`run` does) to stop: it then waits for the one frame in flight."""
    it = iter(frames)
    done = object()

    def read_and_detect():
        frame = next(it, done)
        return done if frame is done else (frame, list(detector.detect(frame.image)))

    with ThreadPoolExecutor(1, thread_name_prefix="fer_sweep-detect") as pool:
        pending = pool.submit(read_and_detect)
        while True:
            item = pending.result()
            if item is done:
                return
            pending = pool.submit(read_and_detect)
            yield item


@dataclass
class RunSummary:
    source: str
    kind: str
    frames: int = 0
    faces: int = 0
    frames_with_face: int = 0
    fps: float = 0.0
    """Frames per second of the whole loop (read, detect, classify, draw, show, write)."""
    labels: Counter = field(default_factory=Counter)
    outputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stopped_by_user: bool = False
    shown: bool = False
    results: list[FrameResult] = field(default_factory=list)


def run(source: str | int | os.PathLike | Source, *, predictor: Predictor | None = None, ckpt: str | os.PathLike | None = None,
        detector: FaceDetector | str | None = None, detector_options: dict | None = None,
        out_dir: str | os.PathLike | None = None, show: bool | None = False, smoothing: float | None = DEFAULT_SMOOTHING,
        max_frames: int | None = None, bars: bool = True, keep_results: bool = False, classify_every: int = 1,
        optimise: bool | None = None, overlap: bool | None = None,
        on_result: Callable[[FrameResult], None] | None = None, on_warning: Callable[[str], None] | None = None,
        write_video: bool = True, write_images: bool = True, write_figure: bool = True) -> RunSummary:
    """Recognise expressions in every frame of ``source`` (webcam index, video, image, folder).

    ``predictor`` (or ``ckpt``, else the shipped model) classifies; ``detector`` is a name from
    :func:`~fer_sweep.demo.detectors.make_detector` (default ``haar``) or a detector object.
    ``show``: True/None shows a window when possible (None: silently skip when not), False never.
    ``smoothing``: EMA weight for videos and cameras (None, 0 or 1 = off; images are never smoothed);
    ``classify_every``: for videos and cameras, classify each tracked face every N-th frame only.
    ``optimise``: use the faster traced network (:meth:`Predictor.optimise`); None = for videos and
    cameras only (it costs a second or so at start).
    ``overlap``: read and detect the next frame while this one is classified and drawn
    (:func:`detect_ahead`); None = for videos and cameras only.
    With ``out_dir`` the outputs of :mod:`fer_sweep.demo.outputs` are written as frames go, and are
    closed properly when the run stops by an error (which is then raised: a
    :class:`DemoError` for bad input).  Ctrl+C ends the run normally with ``stopped_by_user``.
    """
    warn_list: list[str] = []

    def warn(msg: str) -> None:
        warn_list.append(msg)
        if on_warning is not None:
            on_warning(msg)

    predictor = predictor if predictor is not None else Predictor.from_checkpoint(ckpt)
    if detector is None or isinstance(detector, str):
        detector = make_detector(detector or DEFAULT_DETECTOR, **(detector_options or {}))
    src = source if isinstance(source, Source) else open_source(source, on_warning=warn)
    if src.on_warning is None:
        src.on_warning = warn
    if optimise or (optimise is None and src.stream):
        try:
            predictor.optimise()
        except BaseException:
            src.close()
            raise
    alpha = (smoothing if smoothing is not None and 0 < smoothing < 1 else 1.0) if src.stream else None  # 1: track only
    recognizer = Recognizer(predictor, detector, smoothing=alpha, classify_every=classify_every if src.stream else 1)
    summary = RunSummary(source=src.name, kind=src.kind)

    window = recorder = None
    try:
        if show or show is None:
            try:
                window = Window(f"fer_sweep demo: {src.name}")
            except RuntimeError as exc:
                if show:
                    warn(f"no window: {exc}; running headless")
        if out_dir is not None:
            recorder = Recorder(out_dir, predictor.class_names, stream=src.stream, fps=src.fps, video=write_video,
                                images=write_images, figure=write_figure,
                                info={"source": src.name, "kind": src.kind, "model": predictor.source,
                                      "detector": getattr(detector, "name", type(detector).__name__),
                                      "smoothing": alpha if alpha is not None and alpha < 1 else None})
    except BaseException:
        src.close()
        if window is not None:
            window.close()
        raise
    summary.shown = window is not None
    need_drawing = window is not None or (recorder is not None and (recorder.video is not None or recorder.image_dir is not None))

    fps = 0.0
    start = last = time.perf_counter()
    error: BaseException | None = None
    overlap = src.stream if overlap is None else bool(overlap)
    frames = detect_ahead(src, detector) if overlap else ((f, None) for f in src)
    try:
        with src, contextlib.closing(frames):  # the detection thread stops before the source closes
            for frame, boxes in frames:
                result = recognizer(frame.image, frame, boxes)
                now = time.perf_counter()
                dt = now - last
                last = now
                if dt > 0:
                    fps = 1.0 / dt if fps == 0.0 else 0.9 * fps + 0.1 / dt
                drawn = None
                if need_drawing:
                    drawn = annotate(frame.image, result.boxes, result.probs, result.class_names,
                                     fps=fps if src.stream else None, bars=bars, track_ids=result.track_ids,
                                     enlarge=not src.stream, copy=False)
                if recorder is not None:
                    recorder.write(frame, result.boxes, result.probs, result.track_ids, drawn)
                summary.frames += 1
                summary.faces += len(result.boxes)
                summary.frames_with_face += bool(result.boxes)
                summary.labels.update(result.labels)
                if keep_results:
                    summary.results.append(result)
                if on_result is not None:
                    on_result(result)
                if window is not None:
                    wait = 1
                    if src.kind == "video" and frame.time is not None:  # play a file at its own speed
                        wait = max(1, int(1000 * (frame.time - (time.perf_counter() - start))))
                    if not window.show(drawn, wait_ms=wait, until_key=not src.stream):
                        summary.stopped_by_user = True
                        break
                if max_frames is not None and summary.frames >= max_frames:
                    break
    except KeyboardInterrupt:
        summary.stopped_by_user = True
    except BaseException as exc:
        error = exc
        raise
    finally:
        elapsed = time.perf_counter() - start
        summary.fps = summary.frames / elapsed if elapsed > 0 else 0.0
        summary.warnings = warn_list
        if window is not None:
            window.close()
        if recorder is not None:
            msg = None if error is None else (str(error).splitlines() or [type(error).__name__])[0]
            summary.outputs = recorder.close(error=msg, fps=round(summary.fps, 2), stopped_by_user=summary.stopped_by_user,
                                             warnings=warn_list)
    return summary
