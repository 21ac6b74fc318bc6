"""The one data format every command accepts: an `.npz` with one array per model input.

Keys are the model's input names; the first axis of each array is samples;
an optional `labels` array holds integer class labels. The same loader feeds
calibration, evaluation and profiling, so a file that works for one works for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from modelpress.errors import ModelpressError
from modelpress.io import atomic_path
from modelpress.runtimes.base import TensorSpec
from modelpress.yamlsafe import clip, short

LABELS_KEY = "labels"
_UNLOADABLE_KINDS = {"O": "Python objects (dtype object)", "V": "records or raw bytes (a structured/void dtype)",
                     "M": "dates (datetime64)", "m": "time spans (timedelta64)"}


def positive_int(value, what: str) -> int:
    """`value` as an int >= 1, or one line saying what is wrong (batch sizes, sample counts, lengths)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ModelpressError(f"{what} must be a whole number >= 1, got {short(value)}")
    return int(value)


def _check_array(name: str, arr) -> None:
    if not isinstance(arr, np.ndarray):
        raise ModelpressError(f"array {short(name)} is a {type(arr).__name__}, not a numpy array")
    kind = _UNLOADABLE_KINDS.get(arr.dtype.kind)
    if kind:
        raise ModelpressError(f"array {short(name)} holds {kind}; model inputs and labels are numeric arrays")
    if arr.ndim == 0:
        raise ModelpressError(f"array {short(name)} is a single value (0-d); each array needs a first axis of samples")
    if len(arr) and arr.size == 0:
        raise ModelpressError(f"array {short(name)} is empty (shape {list(arr.shape)}): each sample has no values")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Integer class labels, one per sample ([N] or [N, 1]); whole-valued floats are accepted as integers."""
    _check_array(LABELS_KEY, labels)
    if labels.ndim > 2 or labels.ndim == 2 and labels.shape[1] != 1:
        raise ModelpressError(f"labels must hold one class index per sample (shape [samples]), got shape "
                              f"{list(labels.shape)}")
    if labels.dtype.kind in "iu":
        return labels
    if labels.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if not bad.any():
            return labels.astype(np.int64)
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ModelpressError(f"labels must be integer class indices; {int(bad.sum())} of {len(labels)} are not "
                              f"(e.g. {short(labels.reshape(-1)[i].item())} at sample {i})")
    raise ModelpressError(f"labels must be integer class indices, got dtype {labels.dtype}")


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ModelpressError("data has no input arrays")
        for k, v in self.inputs.items():
            _check_array(k, v)
        if self.labels is not None:
            _check_array(LABELS_KEY, self.labels)
        counts = {k: len(v) for k, v in self.inputs.items()}
        if self.labels is not None:
            counts[LABELS_KEY] = len(self.labels)
        if len(set(counts.values())) != 1:
            raise ModelpressError(f"arrays disagree on the number of samples (first axis): {short(counts, 300)}")
        if len(self) == 0:
            raise ModelpressError("data holds zero samples")
        if self.labels is not None:
            self.labels = _check_labels(self.labels)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int) -> "Dataset":
        positive_int(n, "the number of samples to take")
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n])

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        batch_size = positive_int(batch_size, "batch size")
        for i in range(0, len(self), batch_size):
            yield {k: v[i : i + batch_size] for k, v in self.inputs.items()}

    def save(self, path: str | Path) -> Path:
        arrays = dict(self.inputs)
        if self.labels is not None:
            arrays[LABELS_KEY] = self.labels
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return Path(path)

    def check_finite(self, what: str = "data") -> None:
        """Fail with one line naming the first float input holding NaN or Inf, and in how many samples."""
        for name, arr in self.inputs.items():
            if arr.dtype.kind not in "fc":
                continue
            flat = arr.reshape(len(arr), -1)
            bad = np.concatenate([~np.isfinite(flat[i : i + 4096]).all(axis=1) for i in range(0, len(flat), 4096)])
            if bad.any():
                raise ModelpressError(
                    f"{what}: input {short(name)} has NaN or Inf values in {int(bad.sum())} of {len(arr)} samples "
                    f"(first: sample {int(np.argmax(bad))}); fix or drop those samples")

    def check_against(self, specs: Sequence[TensorSpec], what: str = "data") -> None:
        """Fail with one line naming the first input whose name, dtype or shape does not fit the model, or
        that holds NaN/Inf (check_finite)."""
        names = {s.name for s in specs}
        missing = [s.name for s in specs if s.name not in self.inputs]
        if missing:
            raise ModelpressError(
                f"{what} lacks model input(s) {missing}; it has {short(sorted(self.inputs), 200)} (keys must be the "
                "model's input names)"
            )
        extra = sorted(set(self.inputs) - names)
        if extra:
            raise ModelpressError(f"{what} has arrays {short(extra, 200)} that are not model inputs {sorted(names)}")
        for s in specs:
            arr = self.inputs[s.name]
            if str(arr.dtype) != s.dtype:
                raise ModelpressError(f"{what}: input {s.name!r} is {arr.dtype}, the model wants {s.dtype}")
            want = s.shape[1:]
            got = arr.shape[1:]
            if len(want) != len(got) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
                raise ModelpressError(
                    f"{what}: input {s.name!r} has per-sample shape {list(got)}, the model wants {_fmt(want)}"
                )
        self.check_finite(what)


def _fmt(shape: Sequence) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise ModelpressError(f"no such data file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        why = "not a zip archive of .npy arrays (np.savez)" if "pickle" in str(e) else clip(e, 200)
        raise ModelpressError(f"{path} is not a readable .npz file: {why}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ModelpressError(f"{path} is a single .npy array, not an .npz file of named arrays (np.savez)")
    arrays = {}
    with loaded as z:
        for k in z.files:
            try:
                arrays[k] = z[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise ModelpressError(f"{path}: array {short(k)} holds Python objects (dtype object), which "
                                          "modelpress does not load; save numeric arrays") from None
                raise ModelpressError(f"{path}: array {short(k)} is not readable: {clip(e, 200)}") from None
            except Exception as e:
                raise ModelpressError(f"{path}: array {short(k)} is not readable: {clip(e, 200)}") from None
    labels = arrays.pop(LABELS_KEY, None)
    try:
        return Dataset(arrays, labels)
    except ModelpressError as e:
        raise ModelpressError(f"{path}: {e}") from None


def batch_size_for(specs: Sequence[TensorSpec], wanted: int) -> int:
    """A model exported with a fixed batch accepts only that batch."""
    first = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)}
    return first.pop() if len(first) == 1 else wanted


def synthetic(
    specs: Sequence[TensorSpec], batch_size: int = 1, samples: int = 8, dims: Mapping[str, int] | None = None, seed: int = 0,
    default_dim: int | None = None, int_high: int = 100,
) -> Dataset:
    """Random inputs shaped by the model's signature; symbolic non-batch dims must be given in `dims`, or all
    become `default_dim`. Integer inputs are drawn from 0..int_high-1 (2: valid ids, masks and token types alike)."""
    positive_int(batch_size, "batch size")
    positive_int(samples, "samples")
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    inputs = {}
    for s in specs:
        if not (s.dtype.startswith(("float", "int", "uint")) or s.dtype == "bool"):
            raise ModelpressError(f"input {s.name!r} is {s.dtype}: synthetic inputs cannot stand in for it; "
                                  "give real samples (--data/--calib)")
        shape = []
        for axis, d in enumerate(s.shape[1:], start=1):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif d is not None and d in dims:
                shape.append(dims[d])
            elif default_dim is not None:
                shape.append(default_dim)
            else:
                raise ModelpressError(
                    f"input {s.name!r} has a symbolic dimension {d or '?'} at axis {axis}; "
                    "give real inputs with --inputs FILE.npz"
                )
        shape = [samples * batch_size, *shape]
        if s.dtype.startswith("float"):
            arr = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype == "bool":
            arr = rng.integers(0, 2, shape).astype(bool)
        else:
            arr = rng.integers(0, int_high, shape).astype(s.dtype)
        inputs[s.name] = arr
    return Dataset(inputs)


# --------------------------------------------------------------------------- converters


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageSpec:
    """How images become model inputs: resize the shorter side, center-crop, scale to 0..1, normalize."""

    size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "nchw"  # or "nhwc"
    grayscale: bool = False

    def check(self) -> None:
        channels = 1 if self.grayscale else 3
        if self.size < 1 or self.resize < self.size:
            raise ModelpressError("image spec: need size >= 1 and resize >= size")
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise ModelpressError(f"image spec: mean and std need {channels} values (std > 0)")
        if self.layout not in ("nchw", "nhwc"):
            raise ModelpressError("image spec: layout is nchw or nhwc")


def image_to_array(image, spec: ImageSpec, box: tuple[float, float, float] | None = None) -> np.ndarray:
    """One PIL image -> CHW (or HWC) float32. `box` = (scale, x, y) picks a crop other than the center:
    a square of `scale` x the shorter side at relative position (x, y); used to make several views of a photo."""
    from PIL import Image

    img = image.convert("L" if spec.grayscale else "RGB")
    if box is not None:
        s, x, y = box
        w, h = img.size
        side = int(min(w, h) * s)
        left, top = int((w - side) * x), int((h - side) * y)
        img = img.crop((left, top, left + side, top + side))
    w, h = img.size
    scale = spec.resize / min(w, h)
    img = img.resize((max(spec.size, round(w * scale)), max(spec.size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - spec.size) // 2, (h - spec.size) // 2
    arr = np.asarray(img.crop((left, top, left + spec.size, top + spec.size)), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = (arr - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return (arr.transpose(2, 0, 1) if spec.layout == "nchw" else arr).copy()


def from_image_folder(folder: str | Path, spec: ImageSpec, input_name: str = "input",
                      labels_from_subfolders: bool = False) -> Dataset:
    """Every image under `folder` (sorted), preprocessed by `spec`. With labels_from_subfolders, each
    immediate subfolder is a class (sorted names -> 0, 1, ...), as torchvision's ImageFolder does."""
    from PIL import Image, UnidentifiedImageError

    spec.check()
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelpressError(f"no such folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelpressError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    classes = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    if labels_from_subfolders and not classes:
        raise ModelpressError(f"--labels-from-subfolders: {folder} has no class subfolders")
    arrays, labels = [], []
    for p in files:
        try:
            with Image.open(p) as im:
                arrays.append(image_to_array(im, spec))
        except (UnidentifiedImageError, OSError) as e:
            raise ModelpressError(f"cannot read image {p}: {e}") from None
        if labels_from_subfolders:
            parts = p.relative_to(folder).parts
            if len(parts) < 2:
                raise ModelpressError(f"{p} is not inside a class subfolder")
            labels.append(classes.index(parts[0]))
    return Dataset({input_name: np.stack(arrays)}, np.array(labels, np.int64) if labels_from_subfolders else None)


def from_text(path: str | Path, tokenizer_dir: str | Path, max_length: int = 128,
              input_names: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids")) -> Dataset:
    """One sample per non-empty line, tokenized with a Hugging Face tokenizer folder (offline), padded
    to the longest line (capped at max_length). Keeps only the tokenizer outputs the model takes."""
    import os

    path, tokenizer_dir = Path(path), Path(tokenizer_dir)
    positive_int(max_length, "max length")
    if not path.is_file():
        raise ModelpressError(f"no such text file: {path}")
    if not tokenizer_dir.is_dir():
        raise ModelpressError(f"no such tokenizer folder: {tokenizer_dir}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        raise ModelpressError(f"{path} has no non-empty lines")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except ImportError:
        raise ModelpressError("text data needs transformers: pip install 'modelpress[models]'") from None
    except Exception as e:
        raise ModelpressError(f"cannot load a tokenizer from {tokenizer_dir}: {e}") from None
    enc = tok(lines, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    return Dataset({k: np.asarray(enc[k], dtype=np.int64) for k in input_names if k in enc})
