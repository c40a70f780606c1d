"""Temporal smoothing for videos: follow each face with an IoU tracker and average its expression
probabilities over time (exponential moving average), so labels do not flicker from frame to frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fer_sweep.demo.detectors import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    probs: np.ndarray | None = None
    missed: int = 0
    age: int = 1
    since_classified: int = 0
    """Frames since this face was last classified (0: in this frame)."""


@dataclass
class IoUTracker:
    """Greedy IoU matching of this frame's boxes to the tracks of earlier frames.

    A box joins the unmatched track it overlaps most (IoU >= ``min_iou``); other boxes start new
    tracks; a track not seen for more than ``max_missed`` frames is dropped."""

    min_iou: float = 0.3
    max_missed: int = 10
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, boxes: Sequence[Box]) -> list[Track]:
        """The track of each box (same order as ``boxes``)."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)), reverse=True)
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for score, ti, bi in pairs:
            if score < self.min_iou:
                break
            if ti in used or bi in assigned:
                continue
            used.add(ti)
            assigned[bi] = self.tracks[ti]
        for ti, t in enumerate(self.tracks):
            t.missed = 0 if ti in used else t.missed + 1
        for bi, box in enumerate(boxes):
            t = assigned.get(bi)
            if t is None:
                t = Track(self._next_id, tuple(box))
                self._next_id += 1
                self.tracks.append(t)
                assigned[bi] = t
            else:
                t.box = tuple(box)
                t.age += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return [assigned[bi] for bi in range(len(boxes))]

    def reset(self) -> None:
        self.tracks.clear()


class TemporalSmoother:
    """Per-track exponential moving average of class probabilities.

    ``alpha`` is the weight of the newest frame: ``p = alpha * p_frame + (1 - alpha) * p_previous``
    (1 = no smoothing; 0.3-0.5 steadies labels within a few frames at 30 FPS)."""

    def __init__(self, alpha: float = 0.4, min_iou: float = 0.3, max_missed: int = 10) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha={alpha}: expected 0 < alpha <= 1")
        self.alpha = float(alpha)
        self.tracker = IoUTracker(min_iou=min_iou, max_missed=max_missed)

    def blend(self, track: Track, probs: np.ndarray) -> np.ndarray:
        """Fold one new observation of ``track`` into its average; returns the average."""
        p = np.asarray(probs, dtype=np.float32)
        if track.probs is not None and track.probs.shape == p.shape:
            p = self.alpha * p + (1.0 - self.alpha) * track.probs
        track.probs = p.copy()
        track.since_classified = 0
        return p

    def update(self, boxes: Sequence[Box], probs: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Track ids and smoothed probabilities for this frame's faces (rows still sum to 1)."""
        tracks = self.tracker.update(boxes)
        out = np.array(probs, dtype=np.float32, copy=True)
        for i, t in enumerate(tracks):
            out[i] = self.blend(t, out[i])
        return [t.id for t in tracks], out

    def reset(self) -> None:
        self.tracker.reset()
