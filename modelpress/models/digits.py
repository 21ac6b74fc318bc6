"""A small CNN for 28x28 handwritten digits: the demo's model.

Three 3x3 convolutions carry most of the compute, so the demo shows what
quantizing convolutions does on the CPU at hand (it is not always a speed-up).
"""

from __future__ import annotations

import functools

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


def modelpress_train_data():
    """The demo's 4,000 real MNIST training digits (labels included): fine-tuning data for pruned models."""
    from modelpress.demo import mnist_5k, split

    return split(*mnist_5k())[0]


def modelpress_eval_data():
    """The demo's 1,000 held-out MNIST digits."""
    from modelpress.demo import mnist_5k, split

    return split(*mnist_5k())[1]


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    from modelpress.demo import train

    return train(modelpress_train_data(), epochs=3, seed=0).state_dict()


def trained() -> tuple[nn.Module, torch.Tensor]:
    """`modelpress prune modelpress.models.digits:trained ...`: DigitsCNN trained as in the demo (3 epochs on
    4,000 real MNIST digits, seeded; trained once per process, so a study's candidates share it)."""
    model = DigitsCNN()
    model.load_state_dict({k: v.clone() for k, v in _trained_state().items()})
    return model.eval(), torch.randn(1, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
