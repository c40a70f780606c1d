"""Deep-Emotion (Minaee & Abdolrashidi, arXiv 1902.01019): a small CNN behind a spatial transformer.

The localisation network looks at the 48x48 face and predicts an affine transform (initialised to
the identity) that ``affine_grid``/``grid_sample`` apply to the input, so the classifier sees the
face re-framed on the regions that matter.  Layer sizes follow the paper's reference code (its
ReLUs after conv1 and conv3 included).  Unlike that code, dropout is on only in training mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DeepEmotion(nn.Module):
    """Deep-Emotion for ``(N, 1, 48, 48)`` inputs; 66,877 parameters with 7 classes."""

    def __init__(self, num_classes: int = 7, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(640, 32), nn.ReLU(True), nn.Linear(32, 6))
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
        self.conv1 = nn.Conv2d(1, 10, 3)
        self.conv2 = nn.Conv2d(10, 10, 3)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(10, 10, 3)
        self.conv4 = nn.Conv2d(10, 10, 3)
        self.norm = nn.BatchNorm2d(10)
        self.pool4 = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(810, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The affine transform ``(N, 2, 3)`` the attention branch predicts for ``x``."""
        return self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.transform(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stn(x)
        out = F.relu(self.conv1(out))
        out = F.relu(self.pool2(self.conv2(out)))
        out = F.relu(self.conv3(out))
        out = F.relu(self.pool4(self.norm(self.conv4(out))))
        out = self.dropout(out).flatten(1)
        return self.fc2(F.relu(self.fc1(out)))

    def fc_parameters(self) -> list[nn.Parameter]:
        """The fully connected weights the paper regularises with weight decay."""
        return [self.fc1.weight, self.fc2.weight]
