"""Content-addressed step cache: a study's built models, evaluations and profiles keyed by a hash of
everything that determines them, so a re-run reuses finished work and a killed run resumes.

Every entry is written to a temp file and renamed into place, so an entry either exists whole or not at
all: a run killed with SIGKILL never leaves a half-written file that a later run could pick up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.io import atomic_path, write_json

CACHE_VERSION = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_sha256(ds: Dataset | None) -> str | None:
    if ds is None:
        return None
    h = hashlib.sha256()
    for name in sorted(ds.inputs):
        a = ds.inputs[name]
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    if ds.labels is not None:
        h.update(b"labels")
        h.update(ds.labels.tobytes())
    return h.hexdigest()


def key_of(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dataclasses and paths via str)."""
    from modelpress import __version__

    text = json.dumps([CACHE_VERSION, __version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class StepCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _json(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> Any | None:
        p = self._json(kind, key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            value = json.loads(p.read_text())
        except ValueError:  # cannot happen with atomic writes, but never trust a damaged entry
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        write_json(self._json(kind, key), value)

    def model(self, key: str) -> Path | None:
        p = self.root / "models" / f"{key}.onnx"
        return p if p.is_file() and self._json("models", key).is_file() else None

    def put_model(self, key: str, path: Path, meta: dict[str, Any]) -> None:
        """The model first, then its meta: the meta's presence marks the entry complete."""
        dest = self.root / "models" / f"{key}.onnx"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest, suffix=".onnx") as tmp:
            shutil.copyfile(path, tmp)
        self.put("models", key, meta)

    @staticmethod
    def restore(cached: Path, dest: Path) -> None:
        with atomic_path(dest, suffix=".onnx") as tmp:
            shutil.copyfile(cached, tmp)
