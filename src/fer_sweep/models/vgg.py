"""A VGG-style network for 48x48 grayscale faces, the project's stronger architecture.

Four stages of two 3x3 conv + BatchNorm + ReLU and a max-pool (48 -> 24 -> 12 -> 6 -> 3), then
two fully connected layers with dropout: the design of Khaireddin & Chen (2021), 73.3% on FER2013.
``width`` scales every layer, so ``width=0.5`` (about 2.6M parameters) stays fast on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class VGGFace48(nn.Module):
    """VGG-style classifier for ``(N, 1, 48, 48)`` faces."""

    def __init__(self, num_classes: int = 7, width: float = 1.0, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        chans = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.features = nn.Sequential(_stage(1, chans[0]), _stage(chans[0], chans[1]), _stage(chans[1], chans[2]), _stage(chans[2], chans[3]))
        hid = max(32, int(round(hidden * width)))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans[3] * 9, hid), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hid, hid), nn.ReLU(inplace=True), nn.Linear(hid, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def fc_parameters(self) -> list[nn.Parameter]:
        return [m.weight for m in self.classifier if isinstance(m, nn.Linear)]
