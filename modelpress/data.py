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

LABELS_KEY = "labels"


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ModelpressError("data has no input arrays")
        counts = {k: len(v) for k, v in self.inputs.items()}
        if self.labels is not None:
            counts[LABELS_KEY] = len(self.labels)
        if len(set(counts.values())) != 1:
            raise ModelpressError(f"arrays disagree on the number of samples (first axis): {counts}")
        if len(self) == 0:
            raise ModelpressError("data holds zero samples")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int) -> "Dataset":
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n])

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
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

    def check_against(self, specs: Sequence[TensorSpec], what: str = "data") -> None:
        """Fail with one line naming the first input whose name, dtype or shape does not fit the model."""
        names = {s.name for s in specs}
        missing = [s.name for s in specs if s.name not in self.inputs]
        if missing:
            raise ModelpressError(
                f"{what} lacks model input(s) {missing}; it has {sorted(self.inputs)} (keys must be the model's input names)"
            )
        extra = sorted(set(self.inputs) - names)
        if extra:
            raise ModelpressError(f"{what} has arrays {extra} that are not model inputs {sorted(names)}")
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


def _fmt(shape: Sequence) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise ModelpressError(f"no such data file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise ModelpressError(f"{path} is not a readable .npz file: {e}") from None
    labels = arrays.pop(LABELS_KEY, None)
    return Dataset(arrays, labels)


def batch_size_for(specs: Sequence[TensorSpec], wanted: int) -> int:
    """A model exported with a fixed batch accepts only that batch."""
    first = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)}
    return first.pop() if len(first) == 1 else wanted


def synthetic(
    specs: Sequence[TensorSpec], batch_size: int = 1, samples: int = 8, dims: Mapping[str, int] | None = None, seed: int = 0
) -> Dataset:
    """Random inputs shaped by the model's signature; symbolic non-batch dims must be given in `dims`."""
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    inputs = {}
    for s in specs:
        shape = []
        for axis, d in enumerate(s.shape[1:], start=1):
            if isinstance(d, int):
                shape.append(d)
            elif d is not None and d in dims:
                shape.append(dims[d])
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
            arr = rng.integers(0, 100, shape).astype(s.dtype)
        inputs[s.name] = arr
    return Dataset(inputs)
