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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, list[str], dict]:
    """Rebuild the network of a fer_sweep checkpoint (Lightning ``.ckpt`` or shipped ``.pt``).

    Returns ``(net in eval mode, class names, the checkpoint's fer_sweep metadata)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable PyTorch checkpoint ({str(exc).splitlines()[0][:200]})") from None
    meta = ckpt.get("fer_sweep") if isinstance(ckpt, dict) else None
    if not meta or "net" not in meta:
        raise CheckpointError(f"{path}: not a fer_sweep checkpoint (no 'fer_sweep' network description); expected a file written by fer_sweep training")
    net = build_net(meta["net"]["name"], **meta["net"].get("kwargs", {}))
    state = _dequantize(path, ckpt["state_dict"], ckpt.get("int8_scales") or {})
    state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit network {meta['net']['name']} ({str(exc).splitlines()[0][:200]})") from None
    return net.eval(), list(meta.get("class_names", [])), meta


def _dequantize(path: Path, state: dict, scales: dict) -> dict:
    """Float32 weights from the int8 ones of ``python -m fer_sweep.models.export --int8``
    (``w = q * scale`` per output channel)."""
    if not scales:
        return state
    out = dict(state)
    for key, scale in scales.items():
        q = state.get(key)
        if q is None or q.dtype != torch.int8 or scale.dim() != 1 or scale.numel() != q.shape[0]:
            raise CheckpointError(f"{path}: int8 scale for {key!r} does not match its weight; expected one float scale per output channel")
        out[key] = q.float() * scale.float().view(-1, *([1] * (q.dim() - 1)))
    return out
