"""Real-time facial-expression recognition with OpenCV: webcam, video, images (``fer-sweep-demo``).

Modules: :mod:`~fer_sweep.demo.sources` (frames), :mod:`~fer_sweep.demo.detectors` (faces),
:mod:`~fer_sweep.demo.predictor` (expressions), :mod:`~fer_sweep.demo.smoothing` (tracking and
averaging over time), :mod:`~fer_sweep.demo.draw`, :mod:`~fer_sweep.demo.display` (window),
:mod:`~fer_sweep.demo.outputs` (files), :mod:`~fer_sweep.demo.pipeline` (the loop) and
``python -m fer_sweep.demo`` (the command line).  See docs/demo.md.
"""

from fer_sweep.demo.detectors import FaceDetector, available_detectors, make_detector, register_detector
from fer_sweep.demo.errors import DemoError
from fer_sweep.demo.pipeline import FrameResult, Recognizer, RunSummary, run
from fer_sweep.demo.predictor import Predictor, default_model_path
from fer_sweep.demo.smoothing import IoUTracker, TemporalSmoother
from fer_sweep.demo.sources import Frame, open_source

__all__ = [
    "DemoError", "FaceDetector", "Frame", "FrameResult", "IoUTracker", "Predictor", "Recognizer", "RunSummary",
    "TemporalSmoother", "available_detectors", "default_model_path", "make_detector", "open_source",
    "register_detector", "run",
]
