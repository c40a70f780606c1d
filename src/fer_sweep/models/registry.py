"""Networks by name, and safe loading of any checkpoint this project writes.

A checkpoint carries ``checkpoint["fer_sweep"] = {"net": {"name": ..., "kwargs": {...}},
"class_names": [...]}`` next to its state dict, so it can be rebuilt without pickled objects:
loading uses ``torch.load(weights_only=True)`` and only networks registered here are built.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.vgg import VGGFace48

NETWORKS: dict[str, type[nn.Module]] = {"deep_emotion": DeepEmotion, "vgg": VGGFace48}


class CheckpointError(ValueError):
    """A file that is not a usable fer_sweep checkpoint; the message names it and says why."""


def net_spec(net: nn.Module) -> dict[str, Any]:
    """Name and constructor arguments that rebuild ``net``."""
    name = next((k for k, cls in NETWORKS.items() if type(net) is cls), None)
    if name is None:
        raise TypeError(f"{type(net).__name__} is not registered in fer_sweep.models.registry.NETWORKS")
    kwargs = getattr(net, "init_kwargs", None)
    if kwargs is None:
        sig = inspect.signature(type(net).__init__)
        kwargs = {p: getattr(net, p) for p in sig.parameters if p != "self" and hasattr(net, p)}
    return {"name": name, "kwargs": kwargs}


def build_net(name: str, **kwargs: Any) -> nn.Module:
    if name not in NETWORKS:
        raise CheckpointError(f"network {name!r}; expected one of {sorted(NETWORKS)}")
    net = NETWORKS[name](**kwargs)
    net.init_kwargs = dict(kwargs)
    return net


def _binds(cls: type, kwargs: dict) -> bool:
    """Whether ``cls(**kwargs)`` matches the constructor's signature (names and count only)."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to check against
        return True
    return True


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words.  Its own messages run to
    paragraphs, get cut mid-sentence, and advise turning the safe loading off, which we never do."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(exc).__name__:
        return "it is not a torch.save file of tensors, or holds Python objects that safe loading (weights_only=True) refuses"
    return f"not a complete torch.save archive: truncated or another kind of file; {type(exc).__name__}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, list[str], dict]:
    """Rebuild the network of a fer_sweep checkpoint (Lightning ``.ckpt`` or shipped ``.pt``).

    Returns ``(net in eval mode, class names, the checkpoint's fer_sweep metadata)``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a checkpoint file (.pt or .ckpt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable PyTorch checkpoint ({_load_failure(exc)}); "
                              "expected a .ckpt or .pt file written by fer_sweep") from None
    meta = ckpt.get("fer_sweep") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "net" not in meta:
        raise CheckpointError(f"{path}: not a fer_sweep checkpoint (no 'fer_sweep' network description); expected a file written by fer_sweep training")
    name, kwargs = _net_description(path, meta)
    try:
        net = build_net(name, **kwargs)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        # kwargs the constructor's signature refuses are the file's fault; anything else was raised
        # inside the constructor (a value it rejects, or a bug there), and is reported as such
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if not _binds(NETWORKS[name], kwargs):
            raise CheckpointError(f"{path}: network {name!r} cannot be built from kwargs {kwargs!r} ({why}); "
                                  "expected the constructor arguments fer_sweep wrote") from None
        raise CheckpointError(f"{path}: network {name!r} refused its kwargs {kwargs!r}: its constructor raised "
                              f"{type(exc).__name__} ({why}); expected values the constructor accepts") from None
    state = _state_dict(path, ckpt)
    scales = ckpt.get("int8_scales") or {}
    if not isinstance(scales, dict):
        raise CheckpointError(f"{path}: 'int8_scales' is a {type(scales).__name__}; expected a dict of weight name -> per-channel scale tensor")
    state = _dequantize(path, state, scales)
    state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit network {name} ({str(exc).splitlines()[0][:200]})") from None
    names = meta.get("class_names") or []
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise CheckpointError(f"{path}: fer_sweep 'class_names' is {names!r:.80}; expected a list of class-name strings")
    return net.eval(), list(names), meta


def _net_description(path: Path, meta: dict) -> tuple[str, dict]:
    """``(name, kwargs)`` of ``meta["net"]``, checked here so that a hand-edited or foreign file
    fails as a CheckpointError naming it rather than as a KeyError/TypeError deep in a caller."""
    spec = meta["net"]
    expected = "expected {'name': <one of " + ", ".join(sorted(NETWORKS)) + ">, 'kwargs': {...}}"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{path}: fer_sweep 'net' is {spec!r:.80}; {expected}")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"{path}: fer_sweep 'net' kwargs are {kwargs!r:.80}; {expected}")
    return spec["name"], kwargs


def _state_dict(path: Path, ckpt: dict) -> dict:
    """The checkpoint's weights: a dict of tensor name -> tensor (a Lightning ``.ckpt`` and an
    exported ``.pt`` both store it as ``state_dict``)."""
    state = ckpt.get("state_dict")
    if state is None:
        raise CheckpointError(f"{path}: fer_sweep metadata but no 'state_dict'; expected the network's weights next to it (a file written by fer_sweep training or export)")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors; expected weight name -> tensor (a file written by fer_sweep training or export)")
    return state


def _dequantize(path: Path, state: dict, scales: dict) -> dict:
    """Float32 weights from the int8 ones of ``python -m fer_sweep.models.export --int8``
    (``w = q * scale`` per output channel)."""
    if not scales:
        return state
    out = dict(state)
    for key, scale in scales.items():
        q = state.get(key)
        if not isinstance(scale, torch.Tensor) or q is None or q.dtype != torch.int8 or scale.dim() != 1 or scale.numel() != q.shape[0]:
            raise CheckpointError(f"{path}: int8 scale for {key!r} does not match its weight; expected one float scale per output channel")
        out[key] = q.float() * scale.float().view(-1, *([1] * (q.dim() - 1)))
    return out
