"""``python -m fer_sweep.demo SOURCE`` (``fer-sweep-demo``): facial expressions live from a webcam,
a video, an image or a folder of images.  Exit codes: 0 done (also when stopped with q or Ctrl+C),
2 bad input (one line on stderr), 1 an unexpected failure."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from fer_sweep.cli import stops_quietly_when_output_closes

PROG = "fer-sweep-demo"

EPILOG = """examples:
  fer-sweep-demo 0                                  webcam 0, window (q quits) when a GUI is available
  fer-sweep-demo clip.mp4 --no-show --out results   annotated video, CSV/JSONL, emotion-over-time figure
  fer-sweep-demo photos/ --out results              annotated images and CSV for a folder of images
  fer-sweep-demo faces48/ --detector full           images that are already face crops
  fer-sweep-demo clip.mp4 --ckpt runs/x/best.ckpt   a model you trained instead of the shipped one

Windows need OpenCV with GUI support: pip install "fer_sweep[gui]" (see docs/demo.md)."""


def build_parser() -> argparse.ArgumentParser:
    from fer_sweep.demo.detectors import DEFAULT_DETECTOR, DEFAULT_MIN_FACE, available_detectors
    from fer_sweep.demo.pipeline import DEFAULT_SMOOTHING
    from fer_sweep.demo.predictor import DEFAULT_MARGIN

    p = argparse.ArgumentParser(prog=PROG, description="Real-time facial-expression recognition (FER2013 classes) with OpenCV.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="webcam index (0), video file, image file, or folder of images")
    p.add_argument("--ckpt", metavar="PATH", help="checkpoint to use (a fer_sweep .ckpt or .pt), or a shipped model name "
                   "(vgg, deep_emotion_plus, deep_emotion); default: the best shipped model")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, metavar="NAME",
                   help=f"face detector: {', '.join(available_detectors())} or none (default: %(default)s)")
    p.add_argument("--detector-model", metavar="PATH", help="model file of the detector (YuNet ONNX for yunet; a cascade XML for haar)")
    p.add_argument("--min-face", type=float, metavar="SIZE",
                   help=f"smallest face to find: pixels, or a fraction < 1 of the shorter image side (default {DEFAULT_MIN_FACE})")
    p.add_argument("--margin", type=float, metavar="FRACTION",
                   help=f"grow face boxes by this fraction (>= 0) before cropping (default {DEFAULT_MARGIN}; "
                        "not with --detector full, whose whole image is the face and is cropped as is)")
    p.add_argument("--out", metavar="DIR", help="write annotated video/images, detections.csv/.jsonl, emotions.png, summary.json here")
    p.add_argument("--no-show", action="store_true", help="never open a window (headless)")
    p.add_argument("--smooth", type=float, default=DEFAULT_SMOOTHING, metavar="ALPHA",
                   help="videos/webcam: weight of the newest frame in the per-face moving average of probabilities; 0 or 1 = off (default %(default)s)")
    p.add_argument("--classify-every", type=int, default=1, metavar="N",
                   help="videos/webcam: classify each tracked face every N-th frame, reuse its averaged probabilities in between (default 1)")
    p.add_argument("--no-bars", action="store_true", help="draw only box and label, no probability bars")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the network, >= 1 (default: 1)")
    p.add_argument("--no-optimise", action="store_true",
                   help="videos/webcam: keep the eager network instead of the faster traced one (saves a second or so at start)")
    p.add_argument("--no-overlap", action="store_true",
                   help="videos/webcam: read and detect each frame after the previous one is drawn, instead of in a worker "
                        "thread while it is classified (one frame less latency, fewer frames per second on 2+ cores)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.add_argument("--verbose", action="store_true", help="keep OpenCV's own log messages; tracebacks for unexpected errors")
    return p


def _fmt(result) -> str:
    if not result.boxes:
        return "no face"
    return "; ".join(f"{lab} {conf:.2f} at ({x},{y},{w},{h})"
                     for lab, conf, (x, y, w, h) in zip(result.labels, result.confidences, result.boxes))


@stops_quietly_when_output_closes
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return int(exc.code or 0)

    import cv2
    import torch

    from fer_sweep.demo.detectors import make_detector
    from fer_sweep.demo.errors import DemoError, one_line
    from fer_sweep.demo.pipeline import run
    from fer_sweep.cpu import MAX_THREADS
    from fer_sweep.demo.predictor import DEFAULT_MARGIN, MAX_MARGIN, Predictor

    if not args.verbose:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # one-line errors, no OpenCV/FFmpeg chatter
        # FFmpeg logs its own errors ("moov atom not found") straight to stderr; OpenCV reads this when it
        # first opens a video, so it still works after `import cv2`.  -8 is AV_LOG_QUIET; a user's value wins.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

    def err(msg: str) -> None:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    def on_result(result) -> None:
        if result.frame is not None and result.frame.name:
            print(f"{result.frame.name}: {_fmt(result)}", flush=True)

    try:
        if args.max_frames is not None and args.max_frames < 1:
            raise DemoError(f"--max-frames {args.max_frames}: expected a positive number")
        if args.classify_every < 1:
            raise DemoError(f"--classify-every {args.classify_every}: expected a positive number")
        if not 0 <= args.smooth <= 1:
            raise DemoError(f"--smooth {args.smooth}: expected a weight between 0 and 1")
        if args.margin is not None and not 0 <= args.margin <= MAX_MARGIN:  # -1 or less, or huge, would crash OpenCV's crop
            raise DemoError(f"--margin {args.margin:g}: expected a fraction from 0 to {MAX_MARGIN:g} of the face box (e.g. {DEFAULT_MARGIN})")
        if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
            raise DemoError(f"--threads {args.threads}: expected a number of CPU threads from 1 to {MAX_THREADS}")
        torch.set_num_threads(args.threads or 1)
        detector = make_detector(args.detector, model=args.detector_model, min_face=args.min_face)
        if args.margin is not None and getattr(detector, "crop_margin", None) not in (None, args.margin):
            raise DemoError(f"--margin {args.margin:g}: not used with --detector {args.detector}, whose box is "
                            f"the face crop itself (cropped with margin {detector.crop_margin:g})")
        predictor = Predictor.from_checkpoint(args.ckpt, margin=DEFAULT_MARGIN if args.margin is None else args.margin)
        summary = run(args.source, predictor=predictor, detector=detector,
                      out_dir=args.out, show=False if args.no_show else True, smoothing=args.smooth,
                      max_frames=args.max_frames, bars=not args.no_bars, classify_every=args.classify_every,
                      optimise=False if args.no_optimise else None, overlap=False if args.no_overlap else None,
                      on_result=None if args.quiet else on_result, on_warning=lambda m: err(f"warning: {m}"))
    except DemoError as exc:
        err(f"error: {one_line(exc)}")
        return 2
    except KeyboardInterrupt:  # before the first frame (while loading); later ones end the run normally
        err("interrupted")
        return 130
    except BrokenPipeError:  # stdout closed (| head): stop quietly, see fer_sweep.cli
        raise
    except Exception as exc:  # a bug, not bad input: still one line unless --verbose
        if args.verbose:
            traceback.print_exc()
        err(f"unexpected error: {type(exc).__name__}: {one_line(exc)} (rerun with --verbose for the traceback)")
        return 1
    if not args.quiet:
        stop = " (stopped by user)" if summary.stopped_by_user else ""
        out = f"; outputs in {args.out}" if args.out else ""
        unit = "frames" if summary.kind in ("video", "webcam") else "images"
        speed = f", {summary.fps:.1f} FPS" if unit == "frames" else ""
        print(f"{summary.frames} {unit}, {summary.faces} faces ({summary.frames_with_face} {unit} with a face)"
              f"{speed}{stop}{out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
