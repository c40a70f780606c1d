"""Trained weights shipped with the package, and which of them is the default model.

The files (``<name>.pt``, slim checkpoints written by :mod:`fer_sweep.models.export`) are described
in ``MODEL_CARD.md`` and ``manifest.json`` next to them, both written by
``python -m fer_sweep.weights.card``.  This module is the single place that says which names may
ship and which one is the default; it imports nothing heavy.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SHIPPED_NAMES: tuple[str, ...] = ("vgg", "deep_emotion_plus", "deep_emotion")
"""Model names the package may ship as ``<name>.pt``, in order of preference for the default
(VGG-style: most accurate; Deep-Emotion with the project's recipe; the faithful Deep-Emotion)."""

DEFAULT_ALIAS = "default"


def weights_dir() -> Path:
    """The folder of the installed package's weights (``fer_sweep/weights/``)."""
    return Path(str(resources.files("fer_sweep.weights")))


def shipped_models(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{name: path}`` of the weights files present in ``directory`` (default: :func:`weights_dir`),
    in order of preference (the first is the default model)."""
    folder = Path(directory) if directory is not None else weights_dir()
    return {name: folder / f"{name}.pt" for name in SHIPPED_NAMES if (folder / f"{name}.pt").is_file()}


def default_model(directory: str | os.PathLike | None = None) -> Path:
    """The preferred shipped weights file: ``vgg.pt``, else ``deep_emotion_plus.pt``, else
    ``deep_emotion.pt``.  Raises :class:`FileNotFoundError` (one line) when none is there."""
    found = shipped_models(directory)
    if not found:
        folder = Path(directory) if directory is not None else weights_dir()
        raise FileNotFoundError(f"no trained weights in {folder} (looked for {', '.join(n + '.pt' for n in SHIPPED_NAMES)})")
    return next(iter(found.values()))


def resolve_model(spec: str | os.PathLike, directory: str | os.PathLike | None = None, key: str = "ckpt") -> tuple[Path, str]:
    """``(path, name)`` for a checkpoint given as an existing file path, a shipped model name
    (``vgg``, ``deep_emotion_plus``, ``deep_emotion``) or ``default``.

    The name is the shipped name, or for a file its stem (prefixed with the run folder for
    ``<run>/checkpoints/{best,last}.ckpt``).  Raises :class:`FileNotFoundError` (one line, naming
    the setting ``key`` that held ``spec``: ``ckpt=...``, ``init_weights=...``) otherwise."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        name = path.stem
        if path.parent.name == "checkpoints" and path.parent.parent.name:
            name = f"{path.parent.parent.name}-{name}"
        return path, name
    if path.is_dir():  # a run folder, most likely: point at its checkpoint
        inside = next((p for p in (path / "checkpoints" / "best.ckpt", path / "best.ckpt") if p.is_file()), None)
        hint = f" such as {inside}" if inside else " (.pt or .ckpt) or a shipped model name"
        raise FileNotFoundError(f"{key}={text}: is a folder; expected a checkpoint file{hint}")
    found = shipped_models(directory)
    if text == DEFAULT_ALIAS:
        chosen = default_model(directory)
        return chosen, chosen.stem
    if text in SHIPPED_NAMES:
        if text in found:
            return found[text], text
        have = ", ".join(found) or "none"
        raise FileNotFoundError(f"{key}={text}: the shipped model {text}.pt is not installed (shipped: {have})")
    names = ", ".join([*found, DEFAULT_ALIAS])
    raise FileNotFoundError(f"{key}={text}: no such checkpoint file, and not a shipped model name ({names})")


__all__ = ["DEFAULT_ALIAS", "SHIPPED_NAMES", "default_model", "resolve_model", "shipped_models", "weights_dir"]
