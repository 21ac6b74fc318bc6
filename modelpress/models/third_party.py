"""Third-party ONNX models that ship inside PyPI packages, and real-looking inputs for each.

These are models modelpress did not export: PyTorch 1.9 exports at opsets 11/12, PaddlePaddle exports
made by paddle2onnx (hundreds of Constant nodes, dims named '?' or 'p2o.DynamicDimension.N'), and one model
that is already INT8 (producer `onnx.quantize`). They come from two packages, installed without their
dependencies (only the model files are used, the packages are never imported):

    pip install --no-deps ddddocr==1.6.1 rapidocr-onnxruntime==1.4.4

`THIRD_PARTY` names each model; `locate(name)` finds its file with `importlib.util.find_spec` (no import);
`data_for(name, n, seed)` builds `n` inputs in the model's own preprocessing and shape.

Data: synthetic text on real photos. Every sample is a random crop of one of the real photographs that
ship in installed packages (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg, via
`modelpress.models.mobilenetv2.real_photos()`; scikit-image's astronaut/chelsea/coffee/rocket photos too
where scikit-image is installed), with real English words (from the Python documentation that ships with
Python, `pydoc_data.topics`) rendered onto it with PIL's bundled font (`ImageFont.load_default(size=...)`)
in random colours (contrasting with the crop), sizes and positions. The text is rendered, not
photographed: no labelled OCR data set ships in any package. Different seeds give different crops,
words, colours and positions, so a calibration set (seed 0) and an evaluation set (seed 1) are disjoint.

Each model's preprocessing follows the package that ships it:

- ppocr-cls  (rapidocr's TextClassifier): a text line, BGR, 48x192, (x/255-0.5)/0.5; half the lines
  are turned upside down, and the labels (0: upright, 1: rotated 180) are the model's two classes.
- ppocr-det  (rapidocr's DetPreProcess): a scene with a few words, BGR, 160x160 (multiples of 32),
  (x/255-0.5)/0.5. rapidocr 1.4.4's config.yaml gives mean = std = 0.5 for this model, not PaddleOCR's
  ImageNet statistics; on 32 scenes both give the same map (mean probability 0.32 inside the rendered
  words, 0.001 outside).
- ppocr-rec  (rapidocr's TextRecognizer): a text line, BGR, 48x320, (x/255-0.5)/0.5.
- ddddocr-det (ddddocr's DetectionEngine.preproc): a scene, BGR, 416x416, raw 0-255 pixels (no
  normalisation; ddddocr pads with 114, our crops are square and need no padding).
- ddddocr-ocr / ddddocr-ocr-old (ddddocr's OcrEngine, default model): a text line in grayscale,
  64 high (width 192, a 3:1 line), x/255 (ddddocr divides by 255 and does not centre).

`decode(name, outputs)` turns the recognizers' outputs into text (CTC greedy, with the character set
each package ships), for checking that the models read what was rendered. Measured on evaluation data
(seed 1) with the FP32 models: ppocr-cls tells upright from upside-down lines 86% of the time (64 lines;
chance 50%); ppocr-det's probability is 0.32 on average inside the rendered words and 0.001 outside;
ppocr-rec reads 32 lines with a character similarity of 0.94 (47% exactly); ddddocr's OCR models read
single words with a similarity of 0.88 (47% exactly, ignoring case); every box ddddocr-det scores above
0.5 (507 on 8 scenes) is centred on a rendered word. The outputs are not trivial, so fidelity measures
what the models do.

Note: ddddocr's OCR models declare their output [1, seqlen] but return [T, 1, 8210] logits (steps
first): stacked per sample, the validator compares them step by step.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from modelpress.data import Dataset
from modelpress.errors import ModelpressError

PIP_INSTALL = "pip install --no-deps ddddocr==1.6.1 rapidocr-onnxruntime==1.4.4"


@dataclass(frozen=True)
class ThirdPartyModel:
    name: str
    package: str  # import name (located, never imported)
    requirement: str  # what pip installs
    file: str  # path inside the package
    producer: str  # exporter/producer as the file records it
    opset: int
    description: str
    input_name: str
    shape: tuple[int, ...]  # per-sample shape data_for builds (C, H, W)
    preprocessing: str
    builder: Callable[[int, int], tuple[np.ndarray, np.ndarray | None, list]]  # (n, seed) -> (inputs, labels, truth)
    quantized: bool = False  # already INT8: quantizing techniques refuse it
    slow: bool = False  # large: tests mark it slow

    def label(self) -> str:
        return f"{self.name} ({self.producer}, opset {self.opset})"


# --------------------------------------------------------------------------- photos, words, rendering

_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
_FALLBACK_WORDS = ("model", "quantize", "runtime", "python", "photo", "china", "flower", "text", "detect",
                   "number", "value", "index", "string", "class", "object", "module", "import", "return")


def photo_paths() -> list[Path]:
    """The real photographs used as backgrounds: scikit-learn's and matplotlib's (always), scikit-image's
    (when it is installed; located without importing it)."""
    from modelpress.models.mobilenetv2 import real_photos

    paths = list(real_photos())
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        paths += [data / n for n in _SKIMAGE_PHOTOS if (data / n).is_file()]
    if not paths:
        raise ModelpressError("no real photos found (scikit-learn and matplotlib ship them)")
    return paths


@functools.lru_cache(maxsize=1)
def _photos() -> tuple:
    from PIL import Image

    out = []
    for p in photo_paths():
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """Real English words: those of 3-10 letters in the Python documentation's topics (pydoc_data)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions split the docs out
        return _FALLBACK_WORDS
    found = set()
    for text in topics.values():
        found.update(w for w in re.findall(r"\b[A-Za-z]{3,10}\b", text))
    return tuple(sorted(found)) or _FALLBACK_WORDS


def _phrase(rng: np.random.Generator, k: int) -> str:
    vocab = words()
    parts = []
    for _ in range(k):
        w = vocab[int(rng.integers(len(vocab)))]
        r = rng.random()
        w = w.upper() if r < 0.15 else w.capitalize() if r < 0.4 else w
        if rng.random() < 0.12:
            w = str(int(rng.integers(10, 10000)))  # numbers too
        parts.append(w)
    return " ".join(parts)


def _crop(rng: np.random.Generator, h: int, w: int, min_scale: float = 0.3):
    """A random crop of a random photo with aspect w:h, resized to (w, h)."""
    from PIL import Image

    photos = _photos()
    im = photos[int(rng.integers(len(photos)))]
    pw, ph = im.size
    aspect = w / h
    # the largest crop of this aspect that fits, scaled down at random
    cw, ch = (pw, pw / aspect) if pw / aspect <= ph else (ph * aspect, ph)
    s = rng.uniform(min_scale, 1.0)
    cw, ch = max(8.0, cw * s), max(8.0, ch * s)
    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    img = im.crop((int(x0), int(y0), int(x0 + cw), int(y0 + ch))).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A random colour that contrasts with `background` (a crop, HxWx3), and a stroke of the other end."""
    lum = float(background.mean()) if background.size else 128.0
    hue = rng.random(3)
    if lum > 110:
        fill = tuple(int(v) for v in hue * 90)  # dark text on a bright region
        stroke = (255, 255, 255)
    else:
        fill = tuple(int(v) for v in 165 + hue * 90)  # bright text on a dark region
        stroke = (0, 0, 0)
    return fill, stroke


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(6, int(size)))


def render_scene(rng: np.random.Generator, h: int, w: int, k_words: tuple[int, int] = (2, 5)):
    """A crop of a real photo with a few words (1-2 per line) drawn at random places: (image, boxes)."""
    from PIL import ImageDraw

    img = _crop(rng, h, w)
    arr = np.asarray(img)
    draw = ImageDraw.Draw(img)
    boxes = []
    for _ in range(int(rng.integers(k_words[0], k_words[1] + 1))):
        text = _phrase(rng, int(rng.integers(1, 3)))
        font = _font(rng.uniform(0.07, 0.16) * min(h, w))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tw, th = x1 - x0, y1 - y0
        if tw >= w - 4:  # too long for the crop: one word, smaller
            text = text.split()[0]
            font = _font(0.08 * min(h, w))
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            tw, th = x1 - x0, y1 - y0
        for _ in range(12):  # a place that overlaps no earlier word, where one is found
            x = int(rng.integers(2, max(3, w - tw - 2))) - x0
            y = int(rng.integers(2, max(3, h - th - 2))) - y0
            if not any(x + x0 < b[2] and b[0] < x + x1 and y + y0 < b[3] and b[1] < y + y1 for b in boxes):
                break
        region = arr[max(0, y + y0): y + y1, max(0, x + x0): x + x1]
        fill, stroke = _colour(rng, region)
        sw = 1 if rng.random() < 0.3 else 0
        draw.text((x, y), text, fill=fill, font=font, stroke_width=sw, stroke_fill=stroke)
        boxes.append((x + x0, y + y0, x + x1, y + y1))
    return img, boxes


def render_line(rng: np.random.Generator, h: int, w: int, max_words: int = 3):
    """A text line as an OCR recognizer sees it after detection: a strip of a real photo with one to
    `max_words` words, the text 55-80% of the height, starting near the left edge: (image, text)."""
    from PIL import ImageDraw

    img = _crop(rng, h, w)
    arr = np.asarray(img)
    draw = ImageDraw.Draw(img)
    size = rng.uniform(0.55, 0.8) * h
    text = _phrase(rng, int(rng.integers(1, max_words + 1)))
    font = _font(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    while x1 - x0 > 0.95 * w and " " in text:
        text = text.rsplit(" ", 1)[0]
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    while x1 - x0 > 0.95 * w and size > 8:
        size *= 0.85
        font = _font(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x = int(rng.integers(1, max(2, int(0.05 * w) + 2))) - x0
    y = (h - (y1 - y0)) // 2 - y0 + int(rng.integers(-2, 3))
    fill, stroke = _colour(rng, arr[max(0, y + y0): y + y1, max(0, x + x0): x + x1])
    draw.text((x, y), text, fill=fill, font=font, stroke_width=1 if rng.random() < 0.2 else 0, stroke_fill=stroke)
    return img, text


# --------------------------------------------------------------------------- per-model preprocessing


def _bgr_chw(img) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1))


def _paddle_norm(img) -> np.ndarray:
    return (_bgr_chw(img) / 255.0 - 0.5) / 0.5


def _ppocr_cls(n: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng([seed, 11])
    xs, labels, texts = [], [], []
    for i in range(n):
        img, text = render_line(rng, 48, 192)
        flip = i % 2 == 1  # half upside down: the classifier's class 1 ('180')
        if flip:
            img = img.transpose(Image.ROTATE_180)
        xs.append(_paddle_norm(img))
        labels.append(int(flip))
        texts.append(text)
    return np.stack(xs).astype(np.float32), np.array(labels, dtype=np.int64), texts


def _scenes(rng: np.random.Generator, n: int, size: int, k_words: tuple[int, int], prep: Callable):
    xs, boxes = [], []
    for _ in range(n):
        img, b = render_scene(rng, size, size, k_words)
        xs.append(prep(img))
        boxes.append(b)
    return np.stack(xs).astype(np.float32), None, boxes


def _lines(rng: np.random.Generator, n: int, h: int, w: int, max_words: int, prep: Callable):
    xs, texts = [], []
    for _ in range(n):
        img, text = render_line(rng, h, w, max_words)
        xs.append(prep(img))
        texts.append(text)
    return np.stack(xs).astype(np.float32), None, texts


def _gray(img) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)[None] / 255.0


def _ppocr_det(n: int, seed: int):
    return _scenes(np.random.default_rng([seed, 12]), n, 160, (2, 5), _paddle_norm)


def _ppocr_rec(n: int, seed: int):
    return _lines(np.random.default_rng([seed, 13]), n, 48, 320, 3, _paddle_norm)


def _ddddocr_det(n: int, seed: int):
    return _scenes(np.random.default_rng([seed, 14]), n, 416, (3, 6), _bgr_chw)


def _ddddocr_ocr(n: int, seed: int):
    return _lines(np.random.default_rng([seed, 15]), n, 64, 192, 1, _gray)


_RAPID = "rapidocr_onnxruntime"
_DDDD = "ddddocr"

THIRD_PARTY: dict[str, ThirdPartyModel] = {m.name: m for m in (
    ThirdPartyModel(
        "ppocr-cls", _RAPID, "rapidocr-onnxruntime==1.4.4", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "PaddlePaddle via paddle2onnx", 11,
        "PP-OCR mobile v2.0 text-orientation classifier (0 / 180 degrees), 0.6 MB", "x", (3, 48, 192),
        "text line, BGR, 48x192, (x/255-0.5)/0.5; half rotated 180 (labels)", _ppocr_cls),
    ThirdPartyModel(
        "ppocr-det", _RAPID, "rapidocr-onnxruntime==1.4.4", "models/ch_PP-OCRv4_det_infer.onnx",
        "PaddlePaddle via paddle2onnx", 12,
        "PP-OCRv4 text detector (DB): per-pixel text probability map, 4.7 MB", "x", (3, 160, 160),
        "scene, BGR, 160x160, (x/255-0.5)/0.5", _ppocr_det),
    ThirdPartyModel(
        "ppocr-rec", _RAPID, "rapidocr-onnxruntime==1.4.4", "models/ch_PP-OCRv4_rec_infer.onnx",
        "PaddlePaddle via paddle2onnx", 12,
        "PP-OCRv4 text recognizer (CTC over 6625 characters), 10.8 MB", "x", (3, 48, 320),
        "text line, BGR, 48x320, (x/255-0.5)/0.5", _ppocr_rec),
    ThirdPartyModel(
        "ddddocr-det", _DDDD, "ddddocr==1.6.1", "common_det.onnx", "PyTorch 1.9", 11,
        "ddddocr's YOLOX-style character detector (click captchas): [1, 3549, 6] boxes, 20 MB", "images",
        (3, 416, 416), "scene, BGR, 416x416, raw 0-255 pixels", _ddddocr_det, slow=True),
    ThirdPartyModel(
        "ddddocr-ocr", _DDDD, "ddddocr==1.6.1", "common.onnx", "PyTorch 1.9", 12,
        "ddddocr's captcha OCR (beta model: CNN + LSTM, CTC class index per step), 54 MB", "input1",
        (1, 64, 192), "text line, grayscale, 64x192, x/255", _ddddocr_ocr, slow=True),
    ThirdPartyModel(
        "ddddocr-ocr-old", _DDDD, "ddddocr==1.6.1", "common_old.onnx", "onnx.quantize 0.1.0", 12,
        "ddddocr's default captcha OCR, already INT8 (ConvInteger, DynamicQuantizeLinear), 13.6 MB", "input1",
        (1, 64, 192), "text line, grayscale, 64x192, x/255", _ddddocr_ocr, quantized=True),
)}


def get(name: str) -> ThirdPartyModel:
    try:
        return THIRD_PARTY[name]
    except KeyError:
        raise ModelpressError(f"unknown third-party model {name!r}; known: {', '.join(THIRD_PARTY)}") from None


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, found without importing it (its dependencies may be absent)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(name: str) -> Path | None:
    """The model file, or None where its package is not installed (or lacks the file)."""
    m = get(name)
    base = package_dir(m.package)
    if base is None:
        return None
    path = base / m.file
    return path if path.is_file() else None


def require(name: str) -> Path:
    """The model file, or one line saying how to install it."""
    path = locate(name)
    if path is None:
        m = get(name)
        raise ModelpressError(f"{name} needs the package {m.requirement} ({m.file}): {PIP_INSTALL}")
    return path


def data_for(name: str, n: int, seed: int = 0) -> Dataset:
    """`n` inputs for model `name` (synthetic text on real photos, the model's own preprocessing).
    Use different seeds for calibration and evaluation: their crops, words and placements differ.
    ppocr-cls's data has labels (0 upright, 1 rotated 180 degrees)."""
    return data_with_truth(name, n, seed)[0]


def data_with_truth(name: str, n: int, seed: int = 0) -> tuple[Dataset, list]:
    """`data_for`'s samples and what was rendered into each: the text of a line (cls, rec, ddddocr-ocr),
    or the word boxes (x0, y0, x1, y1) in input pixels of a scene (det models)."""
    from modelpress.data import positive_int

    m = get(name)
    x, labels, truth = m.builder(positive_int(n, "the number of samples"), int(seed))
    return Dataset({m.input_name: x}, labels), truth


# --------------------------------------------------------------------------- decoding (for checks)


def _ppocr_characters(model_path: Path) -> list[str]:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    chars = meta.get("character", "").splitlines()
    return ["blank", *chars, " "]  # rapidocr's CTCLabelDecode: blank first, space last


def _ddddocr_charset(base: Path, which: str) -> list[str]:
    import ast

    tree = ast.parse((base / "charsets.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == which for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ModelpressError(f"ddddocr's charsets.py has no {which}")


def _ctc(indices: np.ndarray, charset: list[str], blank: int = 0) -> str:
    out, prev = [], None
    for i in indices.astype(np.int64).tolist():
        if i != prev and i != blank and 0 <= i < len(charset):
            out.append(charset[i])
        prev = i
    return "".join(out)


def decode(name: str, output: np.ndarray) -> list[str]:
    """Greedy CTC decoding of a recognizer's outputs, one text per sample. ppocr-rec: an [N, T, C] array of
    probabilities; ddddocr-ocr(-old): a list of one [T, 1, C] array of logits per sample (the file declares
    its output [1, seqlen], but it returns [T, 1, 8210]: steps first, batch second)."""
    path = require(name)
    if name == "ppocr-rec":
        chars = _ppocr_characters(path)
        return [_ctc(o.argmax(-1), chars) for o in output]
    if name in ("ddddocr-ocr", "ddddocr-ocr-old"):
        charset = _ddddocr_charset(path.parent, "CHARSET_BETA" if name == "ddddocr-ocr" else "CHARSET_OLD")
        return [_ctc(np.asarray(o).argmax(-1).reshape(-1), charset) for o in output]
    raise ModelpressError(f"{name} is not a recognizer")


__all__ = ["PIP_INSTALL", "THIRD_PARTY", "ThirdPartyModel", "data_for", "data_with_truth", "decode", "get", "locate",
           "package_dir", "photo_paths", "render_line", "render_scene", "require", "words"]
