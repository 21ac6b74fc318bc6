"""Generative image models (a decoder: latent -> image): a Frechet distance between features of generated
and real images, plus reconstruction error where the data are encoder latents of those real images.

The features are the penultimate layer (128 values) of modelpress's own DigitsCNN trained on real MNIST
(`modelpress.models.digits.trained`), so the distance is FID-style but is NOT Inception-FID: its numbers
compare variants of one model on digits, not against published FIDs. Pass your own `features`
(package.module:function, images [N, C, H, W] in 0..1 -> [N, D]) for other image domains.

Data: a Dataset of latents for the decoder's input (the encoder's means of the real images in `targets`);
targets: the real images [N, C, H, W] in 0..1. Samples: `samples` latents drawn from N(0, I) with `seed`,
the same for every variant, so the reference's samples and a variant's can be compared pixel by pixel."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from modelpress.data import Dataset, positive_int
from modelpress.errors import ModelpressError
from modelpress.evaluators.base import Evaluator, EvaluatorConfig, ModelLike, Predictions, model_name, run_outputs
from modelpress.registry import load_object


@dataclass
class GenerativeConfig(EvaluatorConfig):
    batch_size: int = 64
    samples: int = 1000  # images generated from the prior for the Frechet distance
    seed: int = 0
    features: str = "modelpress.evaluators.generative:digit_features"

    def validate(self) -> None:
        super().validate()
        positive_int(self.samples, "samples")
        if ":" not in self.features:
            raise ModelpressError(f"evaluator generative: features must be package.module:function, got "
                                  f"{self.features!r}")


@functools.lru_cache(maxsize=1)
def _digits_feature_net():
    from torch import nn

    from modelpress.models.digits import trained

    model, _ = trained()
    return nn.Sequential(model.features, *list(model.classifier)[:-1]).eval()


def digit_features(images: np.ndarray) -> np.ndarray:
    """DigitsCNN's 128 penultimate activations for 28x28 images in 0..1 (normalized as it was trained)."""
    import torch

    from modelpress.models.digits import MNIST_MEAN, MNIST_STD

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ModelpressError(f"digit features need images [N, 1, 28, 28], got {list(x.shape)}")
    net = _digits_feature_net()
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy((x[i:i + 256] - MNIST_MEAN) / MNIST_STD)).numpy()
                               for i in range(0, len(x), 256)]).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets [N, D] (Gaussian fits).
    The trace of the matrix square root is taken from the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, PSD)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ModelpressError(f"Frechet distance needs two feature sets [N >= 2, D], got {list(a.shape)} and "
                              f"{list(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(half @ sb @ half), 0, None)).sum()
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt, 0.0))


def _features_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return load_object(name, "generative: cannot load features")


class GenerativeEvaluator(Evaluator):
    name = "generative"
    summary = ("Frechet distance on DigitsCNN features (FID-style, not Inception-FID) of samples from the prior, "
               "and reconstruction error of encoder latents")
    config_cls = GenerativeConfig
    primary = "fd"
    higher_is_better = False

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        super().__init__(config)
        self._real_cache: tuple[tuple[Any, ...], np.ndarray] | None = None

    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        cfg: GenerativeConfig = self.config  # type: ignore[assignment]
        if len(data.inputs) != 1:
            raise ModelpressError(f"generative: the decoder takes one latent input, the data has {sorted(data.inputs)}")
        name, z = next(iter(data.inputs.items()))
        prior = np.random.default_rng(cfg.seed).standard_normal((cfg.samples, *z.shape[1:])).astype(z.dtype)
        both = run_outputs(model, Dataset({name: np.concatenate([z, prior])}), runtime, cfg.batch_size)
        images = next(iter(both.values()))
        return Predictions(model_name(model), {"reconstructions": images[:len(z)], "samples": images[len(z):]})

    def _real_features(self, features: str, real: np.ndarray) -> np.ndarray:
        """The real images' features, computed once per evaluator and set of real images (a study scores every
        variant against the same targets). Keyed on the features function's name and a hash of the images' bytes,
        not on id(): equal content hits, changed content misses. Only the last set is kept."""
        key = (features, real.shape, real.dtype.str,
               hashlib.blake2b(np.ascontiguousarray(real).data, digest_size=16).hexdigest())
        if self._real_cache is None or self._real_cache[0] != key:
            self._real_cache = (key, _features_fn(features)(real))
        return self._real_cache[1]

    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        cfg: GenerativeConfig = self.config  # type: ignore[assignment]
        if targets is None:
            raise ModelpressError("generative: needs the real images (targets) the latents were encoded from")
        real = np.asarray(targets, dtype=np.float32)
        rec, samples = pred.value["reconstructions"], pred.value["samples"]
        if real.shape != rec.shape:
            raise ModelpressError(f"generative: {list(real.shape)} real images for {list(rec.shape)} reconstructions")
        feats = _features_fn(cfg.features)
        f_real = self._real_features(cfg.features, real)
        out: dict[str, Any] = {
            "samples": int(len(samples)), "real_images": int(len(real)),
            "fd": round(frechet_distance(feats(samples), f_real), 4),
            "fd_reconstructions": round(frechet_distance(feats(rec), f_real), 4),
            "recon_mse": round(float(((rec - real) ** 2).mean()), 6),
            "features": cfg.features, "note": "Frechet distance on DigitsCNN features: FID-style, NOT Inception-FID",
        }
        if reference is not None:
            ref = reference.value["samples"]
            out["sample_mse_to_reference"] = round(float(((samples - ref) ** 2).mean()), 8)
            out["sample_max_abs_to_reference"] = round(float(np.abs(samples - ref).max()), 6)
        return out
