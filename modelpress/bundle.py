"""Release bundles (`.mpk`): a gzip-compressed tar, chosen over zip because Python's tarfile lets every
header field (mtime, owner, mode, order) be fixed, and gzip's own header carries a settable mtime, so the
same inputs give byte-identical bundles.

Layout: model.onnx (+ its external data files), manifest.json (sha256 and size of every other file, the
I/O signature, opset/IR version, producer, library versions, recipe, measured metrics with the target
profile and machine), README.md (a short model card), recipe.yaml / report.json when given, and
manifest.sig (a detached Ed25519 signature over the exact manifest.json bytes) when signed.

`verify` refuses unsafe members (absolute paths, '..', non-canonical names, links, devices, oversize) before
extracting anything, hashes members as streams while extracting them, type-checks every manifest field it
uses, and checks the one model the manifest names (a plain member name inside the bundle, listed and
hashed) with its external data (bundle members too). With a public key it first requires a valid signature.

Split: modelpress.manifest holds the manifest's schema, measurements, model card and type checks;
modelpress.signing the Ed25519 keys and the manifest's signature. Both stay importable from here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

from modelpress.errors import CheckFailed, ModelpressError, first_line
from modelpress.io import atomic_path
from modelpress.manifest import (MANIFEST, MANIFEST_SCHEMA, MANIFEST_SIG, MANIFEST_VERSION, SIGN_ALGORITHM, _RESERVED,
                                 _check_manifest, _metrics_for, _model_card, _plain_name)
from modelpress.onnxutil import external_locations
from modelpress.signing import (fingerprint, keygen, load_private_key, load_public_key, sign_manifest,
                                verify_manifest_signature)

__all__ = ["MANIFEST", "MANIFEST_SIG", "MANIFEST_SCHEMA", "MANIFEST_VERSION", "SIGN_ALGORITHM", "MAX_MEMBER_BYTES",
           "MAX_TOTAL_BYTES", "MAX_MEMBERS", "MAX_MANIFEST_BYTES", "package", "verify", "open_model", "safe_extract",
           "signature", "fingerprint", "keygen", "load_private_key", "load_public_key"]

MAX_MEMBER_BYTES = 8 << 30  # refuse members over 8 GiB
MAX_TOTAL_BYTES = 32 << 30  # and bundles over 32 GiB unpacked
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in chunks."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _external_member(location: str) -> str | None:
    """The bundle-relative name an external data location refers to, or None if it could leave the folder."""
    if not isinstance(location, str) or ".." in location.split("/") or "\\" in location or location.startswith("/"):
        return None
    norm = posixpath.normpath(location)
    return norm if _plain_name(norm) else None


def _signature_of(m) -> dict[str, list[dict[str, Any]]]:
    import onnx

    init = {t.name for t in m.graph.initializer}

    def spec(vi) -> dict[str, Any]:
        tt = vi.type.tensor_type
        return {"name": vi.name, "dtype": onnx.TensorProto.DataType.Name(tt.elem_type).lower(),
                "shape": [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim]}

    return {"inputs": [spec(i) for i in m.graph.input if i.name not in init], "outputs": [spec(o) for o in m.graph.output]}


def signature(model_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs: names, element types and shapes with symbolic dims as strings."""
    import onnx

    return _signature_of(onnx.load(str(model_path), load_external_data=False))


def _opset_of(m) -> dict[str, int]:
    return {o.domain or "ai.onnx": o.version for o in m.opset_import}


# ----------------------------------------------------------------------------- package


class _HashingReader:
    """Hashes what tarfile copies out of a source file, to catch a file that changes while it is packaged."""

    def __init__(self, f) -> None:
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        return b


def package(model: str | Path, output: str | Path, *, report: str | Path | None = None, recipe: str | Path | None = None,
            variant: str | None = None, name: str | None = None, timestamp: str | None = None,
            sign: str | Path | None = None, calibration: str | Path | None = None) -> dict[str, Any]:
    """Write a reproducible bundle; returns its manifest. Nothing is written if anything fails.
    With `sign` (an Ed25519 private key PEM), also a detached signature `manifest.sig` over manifest.json's
    exact bytes (Ed25519 is deterministic: signed bundles stay byte-reproducible). With `calibration` (a folder
    from `modelpress calibrate`), its TensorRT calibration table goes in under calibration/, named in the
    manifest."""
    import onnx

    from modelpress.benchmarks.report import versions
    from modelpress.onnxutil import check_onnx_file

    key = load_private_key(sign) if sign is not None else None  # fail before any work
    model = check_onnx_file(model)
    m = onnx.load(str(model), load_external_data=False)
    # member name -> source: a file (hashed and copied in chunks) or bytes made here
    files: dict[str, Path | bytes] = {"model.onnx": model}
    for ext in external_locations(m):
        member = _external_member(ext)
        src = model.parent / ext
        if member is None or member in _RESERVED or member == "model.onnx" or not src.is_file():
            raise ModelpressError(f"{model}: external data file {ext!r} is missing or outside the model's folder")
        files[member] = src
    rep = None
    if report is not None:
        try:
            files["report.json"] = Path(report).read_bytes()
            rep = json.loads(files["report.json"])
        except FileNotFoundError:
            raise ModelpressError(f"no such report: {report}") from None
        except ValueError as e:
            raise ModelpressError(f"{report} is not JSON: {e}") from None
        if not isinstance(rep, dict) or rep.get("schema") != "modelpress.report":
            schema = rep.get("schema") if isinstance(rep, dict) else None
            raise ModelpressError(f"{report} is not a modelpress report (schema {schema!r})")
    if recipe is not None:
        if not Path(recipe).is_file():
            raise ModelpressError(f"no such recipe: {recipe}")
        files["recipe.yaml"] = Path(recipe).read_bytes()
    elif rep and rep.get("recipe"):
        files["recipe.yaml"] = rep["recipe"].encode()
    cal = _calibration_members(Path(calibration), files) if calibration is not None else None
    meta = {arc: dict(zip(("sha256", "size"), _hash_file(src) if isinstance(src, Path) else (_sha(src), len(src))))
            for arc, src in files.items()}
    metrics = _metrics_for(rep, meta["model.onnx"]["sha256"], variant) if rep else None
    if rep is not None and metrics is None:
        raise ModelpressError(f"{report} has no variant {variant!r}; it has "
                              f"{[r['name'] for r in rep.get('variants', [])]}")
    name = name or Path(output).name.removesuffix(".mpk")
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA, "schema_version": MANIFEST_VERSION, "name": name, "model": "model.onnx",
        "signature": _signature_of(m), "opset": _opset_of(m),
        "ir_version": m.ir_version, "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "versions": versions(), "recipe": files.get("recipe.yaml", b"").decode() or None, "metrics": metrics,
    }
    del m
    if cal is not None:
        manifest["calibration"] = cal
    if timestamp:
        manifest["created"] = timestamp
    if key is not None:
        manifest["signed_by"] = {"algorithm": SIGN_ALGORITHM, "fingerprint": fingerprint(key.public_key())}
    files["README.md"] = _model_card(name, manifest).encode()
    meta["README.md"] = {"sha256": _sha(files["README.md"]), "size": len(files["README.md"])}
    manifest["files"] = {k: meta[k] for k in sorted(files)}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if key is not None:
        files[MANIFEST_SIG] = sign_manifest(key, files[MANIFEST])
    with atomic_path(output, suffix=".mpk") as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arc in sorted(files):
                src = files[arc]
                info = tarfile.TarInfo(arc)
                info.size = meta[arc]["size"] if isinstance(src, Path) else len(src)
                info.mtime, info.mode = 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if not isinstance(src, Path):
                    tar.addfile(info, io.BytesIO(src))
                    continue
                try:
                    with open(src, "rb") as f:
                        reader = _HashingReader(f)
                        tar.addfile(info, reader)
                except OSError as e:
                    raise ModelpressError(f"cannot package {src}: {e.strerror or first_line(e)} "
                                          "(did it change while being packaged?)") from None
                if reader.h.hexdigest() != meta[arc]["sha256"]:
                    raise ModelpressError(f"{src} changed while it was being packaged; try again")
    return manifest


# ----------------------------------------------------------------------------- safe extraction


def _safe_members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    """Every member checked before anything is written: plain relative names, regular files, sizes, no
    duplicates (also case-insensitive) and no name that is both a file and a folder."""
    members: list[tarfile.TarInfo] = []
    total = 0
    seen: set[str] = set()
    folders: set[str] = set()
    for i, mem in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise CheckFailed(f"{where}: more than {MAX_MEMBERS} members")
        if not _plain_name(mem.name):
            raise CheckFailed(f"{where}: unsafe member path {mem.name!r} (absolute, '..' or not a plain relative "
                              "name); refusing to extract")
        if mem.issym() or mem.islnk():
            raise CheckFailed(f"{where}: member {mem.name!r} is a link; refusing to extract")
        if not mem.isfile() or mem.issparse():
            raise CheckFailed(f"{where}: member {mem.name!r} is not a regular file; refusing to extract")
        if mem.size > MAX_MEMBER_BYTES:
            raise CheckFailed(f"{where}: member {mem.name!r} is {mem.size:,} bytes, over the {MAX_MEMBER_BYTES:,} limit")
        total += mem.size
        if total > MAX_TOTAL_BYTES:
            raise CheckFailed(f"{where}: members add up to over the {MAX_TOTAL_BYTES:,}-byte limit")
        key = mem.name.casefold()
        if key in seen:
            raise CheckFailed(f"{where}: duplicate member names ({mem.name!r})")
        seen.add(key)
        parts = key.split("/")
        folders.update("/".join(parts[:j]) for j in range(1, len(parts)))
        members.append(mem)
    clash = sorted(seen & folders)
    if clash:
        raise CheckFailed(f"{where}: member {clash[0]!r} is both a file and a folder")
    return members


def safe_extract(bundle: str | Path, dest: Path) -> dict[str, dict[str, Any]]:
    """Check every member, then extract them into `dest` (absent or empty), hashing each as a stream while it
    is written; returns {member: {"sha256", "size"}} of the bytes actually written."""
    bundle, dest = Path(bundle), Path(dest)
    if not bundle.is_file():
        raise ModelpressError(f"no such bundle: {bundle}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelpressError(f"cannot extract {bundle} into {dest}: not an empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = _safe_members(tar, str(bundle))
            for mem in members:
                target = dest / mem.name
                target.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                with tar.extractfile(mem) as src, open(target, "xb") as f:  # never follows or overwrites
                    while chunk := src.read(min(_CHUNK, mem.size - n + 1)):
                        n += len(chunk)
                        if n > mem.size:
                            raise CheckFailed(f"{bundle}: member {mem.name!r} is longer than its header says")
                        h.update(chunk)
                        f.write(chunk)
                if n != mem.size:
                    raise CheckFailed(f"{bundle}: member {mem.name!r} is truncated")
                out[mem.name] = {"sha256": h.hexdigest(), "size": n}
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ModelpressError(f"{bundle} is not a readable bundle (tar.gz): {why}") from None
    return out


# ----------------------------------------------------------------------------- verify


def verify(bundle: str | Path, into: Path | None = None, key: str | Path | None = None,
           runtime: str = "ort-cpu") -> dict[str, Any]:
    """Check the signature (with `key`, a public key PEM: required and valid), the manifest's fields, hashes,
    file list, that the model it names loads on `runtime` and that its I/O signature, opsets and IR version
    match. With `into`, the verified contents stay there (extracted once); otherwise in a temp folder, removed."""
    from modelpress.runtimes import get_runner

    pub = load_public_key(key) if key is not None else None  # a bad key file fails before any work
    get_runner(runtime)  # an unknown or unusable runtime fails before any work too
    if into is not None:
        return _verify_in(Path(bundle), Path(into), pub, key, runtime)
    with tempfile.TemporaryDirectory(prefix="modelpress-verify-") as tmp:
        return _verify_in(Path(bundle), Path(tmp), pub, key, runtime)


def _verify_in(bundle: Path, root: Path, pub: Any = None, key: str | Path | None = None,
               runtime: str = "ort-cpu") -> dict[str, Any]:
    import onnx

    from modelpress.runtimes import create_runner

    members = safe_extract(bundle, root)
    if MANIFEST not in members:
        raise CheckFailed(f"{bundle}: no {MANIFEST}")
    if members[MANIFEST]["size"] > MAX_MANIFEST_BYTES:
        raise CheckFailed(f"{bundle}: {MANIFEST} is over {MAX_MANIFEST_BYTES:,} bytes")
    raw = (root / MANIFEST).read_bytes()
    sig = None
    if MANIFEST_SIG in members:
        if members[MANIFEST_SIG]["size"] != 64:
            raise CheckFailed(f"{bundle}: {MANIFEST_SIG} is not a 64-byte Ed25519 signature")
        sig = (root / MANIFEST_SIG).read_bytes()
    if pub is not None:  # authenticate the manifest before trusting anything in it
        verify_manifest_signature(bundle, raw, sig, pub, key)
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CheckFailed(f"{bundle}: {MANIFEST} is not JSON ({first_line(e)})") from None
    _check_manifest(manifest, str(bundle))
    signed_by = manifest.get("signed_by")
    if (sig is None) != (signed_by is None):
        raise CheckFailed(f"{bundle}: " + (f"{MANIFEST} records a signing key but the bundle has no {MANIFEST_SIG}"
                                           if sig is None else f"{MANIFEST_SIG} present but {MANIFEST} records no "
                                           "signing key (signed_by)"))
    if pub is not None and signed_by["fingerprint"] != fingerprint(pub):
        raise CheckFailed(f"{bundle}: {MANIFEST} names key {signed_by['fingerprint']}, not {key}'s "
                          f"{fingerprint(pub)}")
    files = manifest["files"]
    listed = set(files)
    present = set(members) - set(_RESERVED)
    if present - listed:
        raise CheckFailed(f"{bundle}: files not in the manifest: {sorted(present - listed)}")
    if listed - present:
        raise CheckFailed(f"{bundle}: files missing from the bundle: {sorted(listed - present)}")
    for name, meta in sorted(files.items()):
        if members[name]["size"] != meta["size"] or members[name]["sha256"] != meta["sha256"]:
            raise CheckFailed(f"{bundle}: {name} does not match its sha256 in the manifest (tampered or corrupt)")
    # the one model this bundle ships: a hashed member, inside the extraction root, nothing else
    model = root / manifest["model"]
    real_root = root.resolve()
    if not model.resolve().is_relative_to(real_root) or not model.is_file() or model.is_symlink():
        raise CheckFailed(f"{bundle}: model {manifest['model']!r} is not a file inside the bundle")
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as e:
        raise CheckFailed(f"{bundle}: {manifest['model']} is not an ONNX model: {first_line(e)}") from None
    model_dir = posixpath.dirname(manifest["model"])
    for loc in external_locations(proto):
        member = _external_member(loc)
        member = posixpath.join(model_dir, member) if member is not None and model_dir else member
        if member is None or member not in listed or member in _RESERVED:
            raise CheckFailed(f"{bundle}: the model's external data {loc!r} is not a file of the bundle; "
                              "refusing to load anything outside it")
    try:
        with create_runner(runtime, model):
            pass
    except ModelpressError as e:
        raise CheckFailed(f"{bundle}: the model does not load on {runtime}: {first_line(e)}") from None
    if _signature_of(proto) != manifest["signature"]:
        raise CheckFailed(f"{bundle}: the model's I/O signature differs from the manifest's")
    if _opset_of(proto) != manifest["opset"] or proto.ir_version != manifest["ir_version"]:
        raise CheckFailed(f"{bundle}: the model's opsets or IR version differ from the manifest's")
    card = (root / "README.md").read_text(errors="replace") if "README.md" in listed else ""
    return {"bundle": str(bundle), "ok": True, "name": manifest["name"], "model": manifest["model"], "runtime": runtime,
            "files": sorted(files), "signature": manifest["signature"], "metrics": manifest.get("metrics"),
            "card_lines": len(card.splitlines()),
            "signing": {"signed": sig is not None, "verified": pub is not None,
                        "fingerprint": signed_by["fingerprint"] if signed_by else None,
                        "key": str(key) if pub is not None else None}}


def _calibration_members(folder: Path, files: dict[str, Any]) -> dict[str, Any]:
    """Add a `modelpress calibrate` folder's table files as calibration/NAME members; the manifest's record."""
    from modelpress.optimizers.tensorrt import CALIBRATION_FILES

    present = [n for n in CALIBRATION_FILES if (folder / n).is_file()]
    if not folder.is_dir() or "calibration.flatbuffers" not in present:
        raise ModelpressError(f"--calibration {folder}: not a folder written by `modelpress calibrate` "
                              "(no calibration.flatbuffers)")
    for n in present:
        files[f"calibration/{n}"] = folder / n
    return {"format": "tensorrt", "table": "calibration/calibration.flatbuffers",
            "files": [f"calibration/{n}" for n in present]}


def open_model(path: str | Path, workdir: Path, runtime: str = "ort-cpu") -> tuple[Path, dict[str, Any] | None]:
    """A .onnx file as is, or a bundle's model extracted into `workdir` (with its manifest), verified to load
    on `runtime`."""
    path = Path(path)
    if path.suffix == ".mpk" or (path.is_file() and tarfile.is_tarfile(path)):
        res = verify(path, into=workdir, runtime=runtime)
        return workdir / res["model"], json.loads((workdir / MANIFEST).read_text())
    from modelpress.onnxutil import check_onnx_file

    return check_onnx_file(path), None
