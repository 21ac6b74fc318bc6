"""A small CNN for 28x28 handwritten digits: the demo's model.

Three 3x3 convolutions carry most of the compute, so the demo shows what
quantizing convolutions does on the CPU at hand (it is not always a speed-up).
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 28, 28)


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 7 * 7, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def factory() -> tuple[nn.Module, torch.Tensor]:
    """`modelpress export modelpress.models.digits:factory`: an untrained DigitsCNN and a batch-1 example."""
    torch.manual_seed(0)
    return DigitsCNN().eval(), torch.randn(1, *INPUT_SHAPE)
