"""Content-addressed step cache: a study's built models, evaluations and profiles keyed by a hash of
everything that determines them, so a re-run reuses finished work and a killed run resumes.

Every entry is written to a temp file and renamed into place, so an entry either exists whole or not at
all: a run killed with SIGKILL never leaves a half-written file that a later run could pick up.

And no entry is trusted before it is checked: a JSON entry carries the sha256 of its value (and its kind
and key), a model entry's meta carries the sha256 of the model file (and, for a model with external data,
of its one data file `KEY.onnx.data`, hashed as a stream and stored beside it). An entry that does not parse, is not
of the expected type, or whose bytes no longer match its hash (disk damage, a hand edit, a copy from
elsewhere) is a miss: it is deleted and recomputed, and never copied into a study.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.io import atomic_path, write_text

CACHE_VERSION = 2  # 2: entries carry their own sha256 (version 1 entries are never looked up)


class CacheEntryDamaged(ModelpressError):
    """A model entry changed between its check and its copy (another process, the disk): it was deleted."""


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


def _value_sha256(value: Any) -> str:
    """The hash of a JSON value in canonical form (the same before writing and after reading back)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_entry(path: Path, kind: str, key: str) -> tuple[bool, Any]:
    """-> (ok, value) of one JSON entry; ok is False when it is absent, unreadable or fails its checks."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable, not UTF-8, not JSON
        return False, None
    if not (isinstance(doc, dict) and doc.get("cache") == CACHE_VERSION and doc.get("kind") == kind
            and doc.get("key") == key and "value" in doc and isinstance(doc.get("sha256"), str)):
        return False, None
    try:
        ok = _value_sha256(doc["value"]) == doc["sha256"]
    except (TypeError, ValueError):
        return False, None
    return ok, doc["value"] if ok else None


class StepCache:
    """`get`/`put` JSON values by (kind, key); `model`/`put_model`/`restore` model files (kind "models",
    whose JSON value is the model's meta). `hits`/`misses` count lookups: `get` counts each call, `model`
    counts its misses (its callers count the hit with the `get` of the meta that follows), `load_model`
    counts each call."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _json(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def _onnx(self, key: str) -> Path:
        return self.root / "models" / f"{key}.onnx"

    def _data(self, key: str) -> Path:
        return self.root / "models" / f"{key}.onnx.data"

    def _discard(self, kind: str, key: str) -> None:
        """Delete a damaged entry (a model's meta first: without it the model file is not an entry)."""
        self._json(kind, key).unlink(missing_ok=True)
        if kind == "models":
            self._onnx(key).unlink(missing_ok=True)
            self._data(key).unlink(missing_ok=True)

    def _files_match(self, key: str, meta: dict[str, Any]) -> bool:
        """The entry's model (and data file, when its meta names one) still hash to what its meta says."""
        if file_sha256(self._onnx(key)) != meta["sha256"]:
            return False
        data_sha = meta.get("data_sha256")
        return data_sha is None or (self._data(key).is_file() and file_sha256(self._data(key)) == data_sha)

    def _lookup(self, kind: str, key: str, expect: type | tuple[type, ...] = dict) -> Any | None:
        """The checked value, or None (a damaged entry is deleted). Counts nothing."""
        p = self._json(kind, key)
        if not p.is_file():
            return None
        ok, value = _read_entry(p, kind, key)
        if not ok or not isinstance(value, expect):
            self._discard(kind, key)
            return None
        return value

    def get(self, kind: str, key: str, expect: type | tuple[type, ...] = dict) -> Any | None:
        """The value stored under (kind, key) if it is whole, matches its hash and is an `expect` (a dict by
        default: every entry modelpress stores is one); else None, a miss."""
        value = self._lookup(kind, key, expect)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        value = json.loads(json.dumps(value))  # the value as it will read back (tuples -> lists, ...)
        doc = {"cache": CACHE_VERSION, "kind": kind, "key": key, "sha256": _value_sha256(value), "value": value}
        write_text(self._json(kind, key), json.dumps(doc, indent=2) + "\n")

    def _checked_meta(self, key: str) -> dict[str, Any] | None:
        """A model entry's meta when it is whole and names the model's sha256 (the file must exist)."""
        if not self._json("models", key).is_file():
            return None  # not cached (or a put_model still under way: its model file is not ours to delete)
        meta = self._lookup("models", key)
        if meta is None or not isinstance(meta.get("sha256"), str) or not self._onnx(key).is_file():
            self._discard("models", key)
            return None
        return meta

    def model(self, key: str) -> Path | None:
        """The cached model file for `key` once its bytes match the sha256 in its meta; else None (a miss,
        counted; a damaged entry is deleted). On a hit, read the meta with `get("models", key)`."""
        meta = self._checked_meta(key)
        p = self._onnx(key)
        if meta is not None:
            if self._files_match(key, meta):
                return p
            self._discard("models", key)
        self.misses += 1
        return None

    def put_model(self, key: str, path: Path, meta: dict[str, Any]) -> None:
        """The model first, then its meta (with the model's sha256, and its data file's): the meta's presence
        marks the entry complete, and its hashes are what every later use checks the model against. A model
        with external data is stored as KEY.onnx + KEY.onnx.data (modelpress.io.place_model)."""
        from modelpress.io import place_model
        from modelpress.onnxutil import has_external_data

        dest = self._onnx(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            external = has_external_data(path)
        except Exception:  # noqa: BLE001 - not parseable as ONNX: cached as an opaque file
            external = False
        if external:
            from modelpress.io import DataCheckFailed
            from modelpress.onnxutil import model_files

            before = [file_sha256(f) for f in model_files(path)[1:]]
            try:  # a source whose one data file changed while being copied is refused before anything is placed
                place_model(path, dest, check_data=(lambda tmp: file_sha256(tmp) == before[0]) if len(before) == 1
                            else None)
            except DataCheckFailed:
                raise ModelpressError(f"{path} changed while it was being cached") from None
            data_sha = before[0] if len(before) == 1 else file_sha256(self._data(key))
            extra = {"data_sha256": data_sha, "size_bytes": os.path.getsize(dest) + os.path.getsize(self._data(key))}
            self.put("models", key, {**meta, "sha256": file_sha256(dest), **extra})
            return
        sha = file_sha256(path)
        with atomic_path(dest, suffix=".onnx") as tmp:
            shutil.copyfile(path, tmp)
            if file_sha256(tmp) != sha:  # the source changed while being copied: cache nothing
                raise ModelpressError(f"{path} changed while it was being cached")
        self.put("models", key, {**meta, "sha256": sha, "size_bytes": os.path.getsize(dest)})

    def load_model(self, key: str, dest: Path) -> dict[str, Any] | None:
        """Copy the cached model for `key` to `dest` and return its meta (a hit), or return None (a miss) and
        leave `dest` alone. The copy is hashed before it replaces `dest`, so a damaged entry is never used.
        One call, one count: the one-stop replacement for model() + restore() + get("models", key)."""
        meta = self._checked_meta(key)
        if meta is not None:
            try:
                _copy_checked(self._onnx(key), Path(dest), meta["sha256"], meta.get("data_sha256"))
            except CacheEntryDamaged:
                self._discard("models", key)
                meta = None
        if meta is None:
            self.misses += 1
            return None
        self.hits += 1
        return meta

    @staticmethod
    def restore(cached: Path, dest: Path) -> None:
        """Copy a model entry (a path `model()` returned) to `dest`, checking the copy against the entry's
        sha256 before it replaces `dest`. Raises CacheEntryDamaged (after deleting the entry) when they
        differ, which happens only if the entry changed after `model()` checked it."""
        cached = Path(cached)
        ok, meta = _read_entry(cached.with_suffix(".json"), "models", cached.stem)
        try:
            if not ok or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
                raise CacheEntryDamaged(f"cache entry {cached} has no valid meta; rerun to rebuild it")
            _copy_checked(cached, Path(dest), meta["sha256"], meta.get("data_sha256"))
        except CacheEntryDamaged:
            cached.with_suffix(".json").unlink(missing_ok=True)
            cached.unlink(missing_ok=True)
            Path(f"{cached}.data").unlink(missing_ok=True)
            raise


def _copy_checked(src: Path, dest: Path, sha256: str, data_sha256: str | None = None) -> None:
    if data_sha256 is not None:  # KEY.onnx + KEY.onnx.data: both checked, then placed as one artifact at dest
        _place_checked(src, dest, sha256, data_sha256)
        return
    with atomic_path(dest, suffix=".onnx") as tmp:
        try:
            shutil.copyfile(src, tmp)
        except FileNotFoundError:
            raise CacheEntryDamaged(f"cache entry {src} disappeared; rerun to rebuild it") from None
        if file_sha256(tmp) != sha256:
            raise CacheEntryDamaged(f"cache entry {src} does not match its sha256; it was deleted: rerun to rebuild it")


def _place_checked(src: Path, dest: Path, sha256: str, data_sha256: str) -> None:
    """Copy an entry with external data to `dest` (+ DEST.data); the copied data is hashed before either file
    replaces anything at `dest`."""
    from modelpress.io import DataCheckFailed, place_model

    data = Path(f"{src}.data")
    try:
        if file_sha256(src) != sha256:
            raise CacheEntryDamaged(f"cache entry {src} does not match its sha256; it was deleted: rerun to rebuild it")
        place_model(src, dest, check_data=lambda tmp: file_sha256(tmp) == data_sha256)
    except FileNotFoundError:
        raise CacheEntryDamaged(f"cache entry {src} disappeared; rerun to rebuild it") from None
    except DataCheckFailed:
        raise CacheEntryDamaged(f"cache entry {data} does not match its sha256; it was deleted: rerun to rebuild "
                                "it") from None
