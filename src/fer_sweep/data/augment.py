"""Augmentation on whole batches of tensors (CPU or GPU), reproducible for a given generator.

Per-sample PIL transforms cost more than this small network's forward pass; here one affine
``grid_sample`` does flip, rotation, scale and shift for the whole batch, and random erasing is a
vectorised mask.  ``BatchAugment()`` with every knob off is the identity (the faithful recipe).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random flip / rotation / scale / translation (one affine warp) and random erasing."""

    def __init__(self, hflip: float = 0.0, rotation: float = 0.0, scale: tuple[float, float] = (1.0, 1.0), translate: float = 0.0, erasing: float = 0.0, erasing_area: tuple[float, float] = (0.02, 0.25)) -> None:
        if not 0.0 <= hflip <= 1.0 or not 0.0 <= erasing <= 1.0:
            raise ValueError(f"augment: hflip={hflip}, erasing={erasing}; expected probabilities in [0, 1]")
        self.hflip, self.rotation, self.translate, self.erasing = hflip, rotation, translate, erasing
        self.scale = (float(scale[0]), float(scale[1]))
        self.erasing_area = (float(erasing_area[0]), float(erasing_area[1]))

    @property
    def active(self) -> bool:
        return bool(self.hflip or self.rotation or self.translate or self.erasing or self.scale != (1.0, 1.0))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch ``(N, C, H, W)``; draws all randomness from ``generator``."""
        if not self.active:
            return x
        n, dev = x.shape[0], x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev)

        if self.hflip or self.rotation or self.translate or self.scale != (1.0, 1.0):
            angle = (rand(n) * 2 - 1) * math.radians(self.rotation)
            s = self.scale[0] + rand(n) * (self.scale[1] - self.scale[0])
            flip = torch.where(rand(n) < self.hflip, -1.0, 1.0)
            tx, ty = ((rand(n) * 2 - 1) * 2 * self.translate for _ in range(2))
            cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
            theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.erasing:
            h, w = x.shape[-2:]
            area = self.erasing_area[0] + rand(n) * (self.erasing_area[1] - self.erasing_area[0])
            aspect = torch.exp((rand(n) * 2 - 1) * math.log(3.0))
            eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
            ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
            y0 = rand(n) * (h - eh)
            x0 = rand(n) * (w - ew)
            ys = torch.arange(h, device=dev).view(1, h, 1)
            xs = torch.arange(w, device=dev).view(1, 1, w)
            inside = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1)) & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
            inside &= (rand(n) < self.erasing).view(-1, 1, 1)
            x = x.masked_fill(inside.unsqueeze(1), 0.0)
        return x
