"""Evaluate a checkpoint on an official FER2013 split: accuracy, per-class precision/recall/F1,
macro-F1 and the confusion matrix, optionally with test-time augmentation.

    python -m fer_sweep.evaluate ckpt=<path|name> [split=PrivateTest|PublicTest|Training|Test]
                                 [tta=none|flip|tencrop] [out=DIR] [data.root=PATH]
                                 [data.cache_dir=DIR] [batch_size=256] [threads=N]
                                 [device=cpu|cuda] [optimise=true|false]

``ckpt`` is a checkpoint this project writes (Lightning ``.ckpt`` of a run, or a slim ``.pt``), or
the name of a shipped model: ``vgg``, ``deep_emotion_plus``, ``deep_emotion`` or ``default``.
``split`` selects images by FER2013's own usage codes (the CSV's ``Usage`` column, or the
``Training_``/``PublicTest_``/``PrivateTest_`` file-name prefixes), never by the training split
logic, so ``split=PrivateTest`` is always the 3,589 PrivateTest faces.  A copy whose ``test/``
images carry no prefixes has no PrivateTest: its test images are ``split=Test`` (used, with a note,
when no split is given).  ``tta``: see :data:`fer_sweep.models.predict.TTA_DESCRIPTIONS`.

Writes ``metrics.json`` and ``confusion_matrix.png`` (row-normalised, class names on the axes) to
``out`` (default ``evaluations/<ckpt name>-<split>-<tta>/``), each atomically.  Bad input (missing
or foreign checkpoint, unknown split/tta/key, no data, an unreadable file or unwritable ``out``) prints
one line on stderr and exits 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_sweep.cpu import MAX_THREADS
from fer_sweep.io import file_sha256
from fer_sweep.cli import stops_quietly_when_output_closes

PROG = "fer_sweep.evaluate"
SPLITS: tuple[str, ...] = ("PrivateTest", "PublicTest", "Training", "Test")
DEFAULTS: dict[str, Any] = {
    "ckpt": None, "split": None, "tta": "none", "out": None, "data.root": None, "data.cache_dir": None,
    "batch_size": 256, "threads": None, "device": "cpu", "optimise": True,
}
ALIASES = {"root": "data.root", "cache_dir": "data.cache_dir", "optimize": "optimise"}

log = logging.getLogger(__name__)


class EvaluateError(ValueError):
    """Bad input for the evaluation: the message is one line and says what is expected."""


# ------------------------------------------------------------------------------ arguments

def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """``key=value`` arguments (Hydra-style) into a dict with defaults and types checked."""
    from fer_sweep.models.predict import TTA_MODES

    args = dict(DEFAULTS)
    for token in argv:
        key, sep, value = token.partition("=")
        key = ALIASES.get(key.lstrip("+"), key.lstrip("+"))
        if not sep or key not in DEFAULTS:
            raise EvaluateError(f"argument {token!r}; expected key=value with key one of {', '.join(DEFAULTS)}")
        args[key] = value
    if not args["ckpt"]:
        raise EvaluateError("ckpt=<path or name> is required: a fer_sweep checkpoint (.ckpt/.pt) or vgg, deep_emotion_plus, deep_emotion, default")
    if args["split"] is not None and args["split"] not in SPLITS:
        raise EvaluateError(f"split={args['split']}; expected one of {', '.join(SPLITS)}")
    if args["tta"] not in TTA_MODES:
        raise EvaluateError(f"tta={args['tta']}; expected one of {', '.join(TTA_MODES)}")
    for key in ("batch_size", "threads"):
        if args[key] is not None:
            try:
                args[key] = int(args[key])
            except ValueError:
                raise EvaluateError(f"{key}={args[key]}; expected a positive integer") from None
            if args[key] < 1:
                raise EvaluateError(f"{key}={args[key]}; expected a positive integer")
            if key == "threads" and args[key] > MAX_THREADS:
                raise EvaluateError(f"threads={args[key]}; expected a number of CPU threads from 1 to {MAX_THREADS}")
    if isinstance(args["optimise"], str):
        flag = args["optimise"].lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise EvaluateError(f"optimise={args['optimise']}; expected true or false")
        args["optimise"] = flag in ("true", "1", "yes")
    for key in ("data.root", "data.cache_dir", "out"):
        if args[key] in ("", "null", "None"):
            args[key] = None
    return args


# ------------------------------------------------------------------------------ data and model

def load_split(root: str | os.PathLike | None, split: str | None = None, cache_dir: str | os.PathLike | None = None, num_classes: int = 7) -> dict[str, Any]:
    """The uint8 faces and labels of one split of the FER2013 copy at ``root`` (default
    ``$FER2013_ROOT``), selected by usage code.  Returns ``{"images", "labels", "split", "note",
    "root", "layout"}``; ``split=None`` means PrivateTest, or Test for an unprefixed copy (with a note)."""
    from fer_sweep.data.cache import load_fer2013
    from fer_sweep.data.classes import USAGES, fold_to_six
    from fer_sweep.data.errors import OBTAIN_HINT
    from fer_sweep.data.readers import detect_layout

    if root in (None, ""):
        root = os.environ.get("FER2013_ROOT")
    if not root:
        raise EvaluateError(f"no FER2013 path: pass data.root=<path> or set FER2013_ROOT; {OBTAIN_HINT}")
    layout, path = detect_layout(root)
    raw = load_fer2013(root, cache_dir)
    present = {USAGES[u]: int((raw.usage == u).sum()) for u in range(len(USAGES))}
    note = ""
    if split is None:
        split = "PrivateTest" if present["PrivateTest"] else "Test"
        if split == "Test":
            note = (f"{path}: no PrivateTest images (its test/ files carry no PrivateTest_/PublicTest_ prefixes); "
                    f"evaluating split=Test, all {present['Test']} test images")
    if not present[split]:
        if split in ("PrivateTest", "PublicTest") and present["Test"]:
            raise EvaluateError(f"split={split}: {path} has no {split} images (its test/ files carry no PrivateTest_/PublicTest_ "
                                f"prefixes); use split=Test for its {present['Test']} test images")
        if split == "Test" and (present["PrivateTest"] or present["PublicTest"]):
            raise EvaluateError(f"split=Test: {path} keeps the official split; use split=PrivateTest "
                                f"({present['PrivateTest']} images) or split=PublicTest ({present['PublicTest']})")
        have = ", ".join(f"{k} ({v})" for k, v in present.items() if v)
        raise EvaluateError(f"split={split}: no such images in {path}; it has {have}")
    idx = np.flatnonzero(raw.usage == USAGES.index(split))
    labels = raw.labels[idx]
    if num_classes == 6:
        import torch

        labels = fold_to_six(torch.from_numpy(labels)).numpy()
    return {"images": np.ascontiguousarray(raw.images[idx]), "labels": labels, "split": split, "note": note,
            "root": str(path), "layout": layout}


def load_model(spec: str | os.PathLike, device: str = "cpu", optimise: bool = True) -> dict[str, Any]:
    """Load a checkpoint (path or shipped name) for evaluation.  Returns ``{"net" (ready to call),
    "eager", "class_names", "meta", "path", "name", "sha256", "params", "plan"}``."""
    import torch

    from fer_sweep.data.classes import class_names as default_class_names
    from fer_sweep.models.predict import optimise_for_inference
    from fer_sweep.models.registry import load_checkpoint
    from fer_sweep.weights import resolve_model

    try:
        path, name = resolve_model(spec)
    except FileNotFoundError as exc:
        raise EvaluateError(str(exc)) from None
    net, names, meta = load_checkpoint(path, map_location="cpu")
    if not names:
        names = list(default_class_names(getattr(net, "num_classes", 7)))
    try:
        dev = torch.device(device)
        net = net.to(dev)
    except (RuntimeError, AssertionError) as exc:
        raise EvaluateError(f"device={device}: not usable here ({str(exc).splitlines()[0]})") from None
    ready = optimise_for_inference(net) if optimise else net
    return {"net": ready, "eager": net, "class_names": list(names), "meta": meta, "path": str(path), "name": name,
            "sha256": file_sha256(path), "params": int(sum(p.numel() for p in net.parameters())),
            "plan": getattr(ready, "plan", {"optimised": False} if not optimise else {"optimised": "eager (traced path refused)"})}


# ------------------------------------------------------------------------------ outputs

def confusion_figure(cm: Sequence[Sequence[int]], class_names: Sequence[str], title: str = ""):
    """Row-normalised confusion matrix (each true class sums to 100%) with class names and counts."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1, keepdims=True)
    norm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    k = len(class_names)
    fig = Figure(figsize=(1.05 * k + 2.2, 0.95 * k + 1.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}%\n{int(cm[i, j])}", ha="center", va="center", fontsize=7.5,
                    color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xticks(range(k), class_names, rotation=35, ha="right")
    ax.set_yticks(range(k), [f"{c} ({int(s)})" for c, s in zip(class_names, support[:, 0])])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (faces)")
    if title:
        ax.set_title(title, fontsize=9.5)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return fig


def default_out_dir(name: str, split: str, tta: str) -> Path:
    return Path("evaluations") / f"{name}-{split}-{tta}"


def write_outputs(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``metrics.json`` and ``confusion_matrix.png`` in ``out_dir``, each written atomically."""
    from fer_sweep.io import atomic_write, atomic_write_json

    out_dir = Path(out_dir)
    title = (f"{report['checkpoint']['name']} on FER2013 {report['data']['split']} (tta={report['tta']}): "
             f"accuracy {100 * report['accuracy']:.2f}%, macro-F1 {report['macro_f1']:.3f}")
    fig = confusion_figure(report["confusion_matrix"], report["class_names"], title)
    png = atomic_write(out_dir / "confusion_matrix.png", lambda p: fig.savefig(p, format="png", dpi=150))
    js = atomic_write_json(out_dir / "metrics.json", report)
    return {"metrics": js, "figure": png}


def build_report(model: dict[str, Any], data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` document: metrics plus what was evaluated, on what, and how."""
    import platform

    import torch

    from fer_sweep.models.predict import TTA_DESCRIPTIONS

    meta = model["meta"]
    return {
        "checkpoint": {"name": model["name"], "path": model["path"], "sha256": model["sha256"], "network": meta.get("net"),
                       "params": model["params"]},
        "data": {"dataset": "FER2013", "split": data["split"], "n": int(len(data["labels"])), "root": data["root"],
                 "layout": data["layout"], **({"note": data["note"]} if data["note"] else {})},
        **metrics,
        "tta_description": TTA_DESCRIPTIONS[metrics["tta"]],
        "inference": {"plan": model["plan"], "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "device": str(next(model["eager"].parameters()).device),
                      "machine": platform.machine()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate as ``args`` (see :func:`parse_args`) says; returns the report and the written files."""
    import torch

    from fer_sweep.models.predict import evaluate

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    model = load_model(args["ckpt"], args["device"], args["optimise"])
    data = load_split(args["data.root"], args["split"], args["data.cache_dir"], num_classes=len(model["class_names"]))
    if data["note"]:
        print(f"{PROG}: note: {data['note']}", file=sys.stderr)
    metrics = evaluate(model["net"], data["images"], data["labels"], args["tta"], args["batch_size"], model["class_names"])
    report = build_report(model, data, metrics)
    out = Path(args["out"]) if args["out"] else default_out_dir(model["name"], data["split"], args["tta"])
    try:
        return report, write_outputs(report, out)
    except OSError as exc:  # each file is written atomically: a failed write leaves the old one whole
        raise EvaluateError(f"out={out}: cannot write {exc.filename or out} ({exc.strerror or exc}); expected a writable folder") from None


def _os_error_line(exc: OSError) -> str:
    """``<path>: <reason>; expected a readable file`` on one line (``str(exc)`` puts the reason first)."""
    where = exc.filename if exc.filename is not None else "input"
    return " ".join(f"{where}: {exc.strerror or exc}; expected a readable file or folder (checkpoint, FER2013 copy, cache)".split())


@stops_quietly_when_output_closes
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__.strip())
        return 0
    from fer_sweep.data.errors import FER2013Error
    from fer_sweep.models.registry import CheckpointError

    try:
        report, files = run(parse_args(argv))
    except (EvaluateError, CheckpointError, FER2013Error) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable checkpoint, image or folder: name it, as fer_sweep.data does
        print(f"{PROG}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    d = report["data"]
    print(f"{report['checkpoint']['name']} on FER2013 {d['split']} ({d['n']} faces), tta={report['tta']}: "
          f"accuracy {100 * report['accuracy']:.2f}%, macro-F1 {report['macro_f1']:.4f} "
          f"({report['seconds']:.1f} s, {report['faces_per_s']:.0f} faces/s)")
    for c, m in report["per_class"].items():
        print(f"  {c:9s} precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  ({m['support']} faces)")
    print(f"wrote {files['metrics']} and {files['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
