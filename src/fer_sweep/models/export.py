"""Turn a training checkpoint into a small, self-describing weights file (what the package ships).

Keeps only the network's weights and the ``fer_sweep`` description that
:func:`fer_sweep.models.registry.load_checkpoint` needs; drops optimizer and loop state.

    python -m fer_sweep.models.export <run>/checkpoints/best.ckpt weights.pt [--half | --int8]

``--half`` stores float tensors as float16 (half the size).  ``--int8`` also stores every
convolution and linear weight as int8 with one float32 scale per output channel (symmetric,
``scale = max|w| / 127``; about a quarter of the float32 size, which keeps the VGG under the
repository's 8 MiB per-file limit); :func:`~fer_sweep.models.registry.load_checkpoint` turns them back
into float32 (``w = q * scale``), so inference runs in float32 as usual.  The accuracy of the stored
weights is what the model card measures, not that of the checkpoint they came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fer_sweep.io import atomic_write, file_sha256
from fer_sweep.models.registry import CheckpointError, load_checkpoint, net_spec


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``(q, scale)`` with ``q * scale.view(-1, 1, ...) ~ w``
    (rounding error at most ``scale / 2`` per weight; an all-zero channel gets scale 1)."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8).reshape(w.shape)
    return q.contiguous(), scale.contiguous()


def _int8_worthy(name: str, v: torch.Tensor) -> bool:
    return v.is_floating_point() and v.dim() >= 2 and name.endswith("weight")


def export_weights(ckpt: str | Path, out: str | Path, half: bool = False, extra: dict | None = None, int8: bool = False) -> str:
    """Write the slim weights file; returns its sha256."""
    net, class_names, meta = load_checkpoint(ckpt)
    state, scales = {}, {}
    for k, v in net.state_dict().items():
        if int8 and _int8_worthy(k, v):
            state[f"net.{k}"], scales[f"net.{k}"] = quantize_int8(v)
        else:
            state[f"net.{k}"] = (v.half() if (half or int8) and v.is_floating_point() else v).contiguous()
    blob = {"state_dict": state, "fer_sweep": {"net": net_spec(net), "class_names": class_names, **(extra or {})}}
    if scales:
        blob["int8_scales"] = scales
    atomic_write(out, lambda p: torch.save(blob, p))
    return file_sha256(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--half", action="store_true", help="store float weights as float16 (half the size)")
    kind.add_argument("--int8", action="store_true",
                      help="store conv/linear weights as int8 with a float32 scale per output channel, the rest as float16")
    args = ap.parse_args(argv)
    try:
        digest = export_weights(args.ckpt, args.out, args.half, int8=args.int8)
    except CheckpointError as exc:
        print(f"fer_sweep.models.export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output path: a file where a folder should be, no permission, disk full
        print(f"fer_sweep.models.export: {args.out}: cannot write the weights file ({exc.strerror or type(exc).__name__}); "
              "expected a path where a file can be written", file=sys.stderr)
        return 2
    print(f"{args.out} sha256={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
