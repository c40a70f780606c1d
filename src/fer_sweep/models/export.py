"""Turn a training checkpoint into a small, self-describing weights file (what the package ships).

Keeps only the network's weights (optionally as float16) and the ``fer_sweep`` description that
:func:`fer_sweep.models.registry.load_checkpoint` needs; drops optimizer and loop state.

    python -m fer_sweep.models.export <run>/checkpoints/best.ckpt weights.pt [--half]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from fer_sweep.io import atomic_write
from fer_sweep.models.registry import CheckpointError, load_checkpoint, net_spec


def export_weights(ckpt: str | Path, out: str | Path, half: bool = False, extra: dict | None = None) -> str:
    """Write the slim weights file; returns its sha256."""
    net, class_names, meta = load_checkpoint(ckpt)
    state = {f"net.{k}": (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    blob = {"state_dict": state, "fer_sweep": {"net": net_spec(net), "class_names": class_names, **(extra or {})}}
    atomic_write(out, lambda p: torch.save(blob, p))
    return hashlib.sha256(Path(out).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--half", action="store_true", help="store float weights as float16 (half the size)")
    args = ap.parse_args(argv)
    try:
        digest = export_weights(args.ckpt, args.out, args.half)
    except CheckpointError as exc:
        print(f"fer_sweep.models.export: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out} sha256={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
