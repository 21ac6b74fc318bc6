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
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from modelpress.errors import CheckFailed, ModelpressError
from modelpress.io import atomic_path
from modelpress.runtimes.ort import _first_line

MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"  # raw 64-byte Ed25519 signature over manifest.json's exact bytes
MANIFEST_SCHEMA = "modelpress.bundle"
MANIFEST_VERSION = 1
SIGN_ALGORITHM = "ed25519"
MAX_MEMBER_BYTES = 8 << 30  # refuse members over 8 GiB
MAX_TOTAL_BYTES = 32 << 30  # and bundles over 32 GiB unpacked
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20
_RESERVED = (MANIFEST, MANIFEST_SIG)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_REQUIRED = {"schema", "schema_version", "name", "model", "files", "signature", "opset", "ir_version", "producer",
             "versions"}
_SIGN_EXTRA = "pip install 'modelpress[sign]'"


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


def _plain_name(name: Any) -> bool:
    """A canonical relative member name: 'a.onnx' or 'sub/a.bin'; no '/', '\\', '.', '..' or empty parts,
    no drive, no control characters."""
    if not isinstance(name, str) or not name or len(name) > 1024 or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts) and ":" not in parts[0]


def _all_tensors(graph) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse initializers, tensor attributes, subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            for sp in a.sparse_tensors:
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _external_locations(proto) -> list[str]:
    locs = set()
    for t in _all_tensors(proto.graph):
        for kv in t.external_data:
            if kv.key == "location":
                locs.add(kv.value)
    return sorted(locs)


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


# ----------------------------------------------------------------------------- signing keys (Ed25519)


def _ed25519():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ModelpressError(f"signing and signature checks need the cryptography package: {_SIGN_EXTRA}") from None
    return serialization, ed25519


def _read_pem(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelpressError(f"no such key file: {path}") from None
    except OSError as e:
        raise ModelpressError(f"cannot read key file {path}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise ModelpressError(f"{path} is not a PEM key file (no '-----BEGIN' line); "
                              "`modelpress sign-keygen PREFIX` makes a key pair")
    return path, data


def _key_kind(key: Any) -> str:
    return re.sub(r"(Private|Public)Key$", "", type(key).__name__) or type(key).__name__


def fingerprint(public_key: Any) -> str:
    """'sha256:' + the hex sha256 of the raw 32-byte Ed25519 public key."""
    serialization, _ = _ed25519()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + _sha(raw)


def load_private_key(path: str | Path):
    """An unencrypted Ed25519 private key from a PEM file (PKCS#8 or OpenSSL's own), or a one-line error."""
    serialization, ed25519 = _ed25519()
    from cryptography.exceptions import UnsupportedAlgorithm

    path, data = _read_pem(path)
    if b"PRIVATE KEY-----" not in data:
        raise ModelpressError(f"{path} is not a private key (a public key?); --sign takes the private PREFIX.pem")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ModelpressError(f"{path} is encrypted; bundles are signed with an unencrypted key (keep it mode 0600)") \
            from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ModelpressError(f"{path} is not a readable PEM private key: {_first_line(e)}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ModelpressError(f"{path} is not an Ed25519 key (it is {_key_kind(key)}); bundles are signed with Ed25519 keys "
                              "(`modelpress sign-keygen PREFIX` makes one)")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file, or a one-line error."""
    serialization, ed25519 = _ed25519()
    from cryptography.exceptions import UnsupportedAlgorithm

    path, data = _read_pem(path)
    if b"PRIVATE KEY-----" in data:
        raise ModelpressError(f"{path} is a private key; --key takes the public key (PREFIX.pub.pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ModelpressError(f"{path} is not a readable PEM public key: {_first_line(e)}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ModelpressError(f"{path} is not an Ed25519 key (it is {_key_kind(key)}); bundles are signed with Ed25519 keys")
    return key


def keygen(prefix: str | Path) -> dict[str, str]:
    """Write PREFIX.pem (unencrypted PKCS#8 Ed25519 private key, mode 0600) and PREFIX.pub.pem; never overwrites."""
    serialization, ed25519 = _ed25519()
    base = str(prefix)
    base = base[:-len(".pem")] if base.endswith(".pem") else base
    priv, pub = Path(base + ".pem"), Path(base + ".pub.pem")
    for p in (priv, pub):
        if p.exists():
            raise ModelpressError(f"{p} already exists; not overwriting a key")
    if not priv.parent.is_dir():
        raise ModelpressError(f"no such folder: {priv.parent}")
    key = ed25519.Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    written = []
    try:
        for p, data, mode in ((priv, priv_pem, 0o600), (pub, pub_pem, 0o644)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(p)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
    except OSError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise ModelpressError(f"cannot write the key pair {priv} / {pub}: {e.strerror or e}") from None
    return {"private": str(priv), "public": str(pub), "fingerprint": fingerprint(key.public_key()),
            "algorithm": SIGN_ALGORITHM}


# ----------------------------------------------------------------------------- package


def _metrics_for(report: dict, model_sha: str, variant: str | None) -> dict[str, Any] | None:
    """The report row for this model: by name if given, else the row whose file hash matches, else the pick."""
    rows = {r["name"]: r for r in report.get("variants", [])}
    row = rows.get(variant) if variant else None
    if row is None:
        row = next((r for r in rows.values() if r.get("sha256") == model_sha), None)
    if row is None and variant is None:
        row = rows.get(report.get("selection", {}).get("pick"))
    if row is None:
        return None
    keep = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "speedup_p50", "peak_rss_mb", "cold_start_ms")
    lat = {p: {k: v for k, v in s.items() if k in keep} for p, s in row["latency"].items()}
    return {"variant": row["name"], "technique": row.get("technique"), "config": row.get("config"),
            "size_bytes": row["size_bytes"], "size_ratio": row["size_ratio"], "accuracy": row.get("accuracy"),
            "fidelity": row.get("fidelity"), "latency": lat, "metric": report.get("task", {}).get("metric"),
            "profiles": report.get("profiles"), "machine": report.get("machine"), "reference": report.get("reference"),
            "selection": report.get("selection", {}).get("reason")}


def _model_card(name: str, manifest: dict) -> str:
    sig = manifest["signature"]
    io_lines = [f"- input `{s['name']}`: {s['dtype']} {s['shape']}" for s in sig["inputs"]]
    io_lines += [f"- output `{s['name']}`: {s['dtype']} {s['shape']}" for s in sig["outputs"]]
    lines = [f"# {name}", "", f"ONNX model, opset {manifest['opset']}, IR version {manifest['ir_version']}, "
             f"produced by {manifest['producer']}.", "", "## Interface", *io_lines, ""]
    met = manifest.get("metrics")
    if met:
        acc = met.get("accuracy")
        lines += ["## Measured", f"- variant: {met['variant']} ({met.get('technique') or 'reference'}), "
                  f"{met['size_ratio']:.2f}x the reference's size"]
        if acc:
            lines.append(f"- top-1: {acc['top1'] * 100:.2f}% ({-acc['drop'] * 100:+.2f} pt vs reference)")
        for p, s in met["latency"].items():
            lines.append(f"- {p}: p50 {s['p50_ms']:.3f} ms, {s['speedup_p50']:.2f}x the reference")
        if met.get("machine"):
            lines.append(f"- measured on: {met['machine'].get('cpu')} ({met['machine'].get('usable_cores')} cores)")
        if met.get("selection"):
            lines.append(f"- selection: {met['selection']}")
        lines.append("")
    lines += ["Verify with `modelpress verify BUNDLE`; every file's sha256 is in manifest.json.", ""]
    if manifest.get("signed_by"):
        lines[-1:] = [f"Signed (Ed25519, key {manifest['signed_by']['fingerprint']}): "
                      "`modelpress verify BUNDLE --key PUBLIC.pem` checks the signature.", ""]
    return "\n".join(lines)


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
            sign: str | Path | None = None) -> dict[str, Any]:
    """Write a reproducible bundle; returns its manifest. Nothing is written if anything fails.
    With `sign` (an Ed25519 private key PEM), also a detached signature `manifest.sig` over manifest.json's
    exact bytes (Ed25519 is deterministic: signed bundles stay byte-reproducible)."""
    import onnx

    from modelpress.benchmarks.report import _versions
    from modelpress.onnxutil import check_onnx_file

    key = load_private_key(sign) if sign is not None else None  # fail before any work
    model = check_onnx_file(model)
    m = onnx.load(str(model), load_external_data=False)
    # member name -> source: a file (hashed and copied in chunks) or bytes made here
    files: dict[str, Path | bytes] = {"model.onnx": model}
    for ext in _external_locations(m):
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
        "versions": _versions(), "recipe": files.get("recipe.yaml", b"").decode() or None, "metrics": metrics,
    }
    del m
    if timestamp:
        manifest["created"] = timestamp
    if key is not None:
        manifest["signed_by"] = {"algorithm": SIGN_ALGORITHM, "fingerprint": fingerprint(key.public_key())}
    files["README.md"] = _model_card(name, manifest).encode()
    meta["README.md"] = {"sha256": _sha(files["README.md"]), "size": len(files["README.md"])}
    manifest["files"] = {k: meta[k] for k in sorted(files)}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if key is not None:
        files[MANIFEST_SIG] = key.sign(files[MANIFEST])
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
                    raise ModelpressError(f"cannot package {src}: {e.strerror or _first_line(e)} "
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


# ----------------------------------------------------------------------------- manifest checks


def _show(v: Any) -> str:
    if v is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(v), type(v).__name__)
    if isinstance(v, (list, dict)):
        return kind
    r = repr(v)
    return f"{kind} {r[:60] + '…' if len(r) > 60 else r}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_manifest(m: Any, where: str) -> None:
    """Type-check every manifest field that verify, open_model and gate use; CheckFailed names the field."""
    def need(ok: bool, field: str, what: str, v: Any) -> None:
        if not ok:
            raise CheckFailed(f"{where}: {MANIFEST}: {field} must be {what}, not {_show(v)}")

    need(isinstance(m, dict), "the top level", "a JSON object", m)
    missing = sorted(_REQUIRED - set(m))
    if missing:
        raise CheckFailed(f"{where}: {MANIFEST} lacks {missing}")
    need(_is_int(m["schema_version"]), "schema_version", "an integer", m["schema_version"])
    if m["schema"] != MANIFEST_SCHEMA or m["schema_version"] != MANIFEST_VERSION:
        raise CheckFailed(f"{where}: manifest schema {m['schema']!r} v{m['schema_version']!r} "
                          f"is not {MANIFEST_SCHEMA} v{MANIFEST_VERSION}")
    need(isinstance(m["name"], str) and m["name"] != "", "name", "a non-empty string", m["name"])
    files = m["files"]
    need(isinstance(files, dict) and bool(files), "files", "a non-empty object {member: {sha256, size}}", files)
    for k, meta in files.items():
        if not _plain_name(k) or k in _RESERVED:
            raise CheckFailed(f"{where}: {MANIFEST}: files has an entry {k!r} that is not a plain relative member "
                              f"name (absolute, '..', empty part, or {MANIFEST} / {MANIFEST_SIG} themselves)")
        need(isinstance(meta, dict), f"files[{k!r}]", "an object {sha256, size}", meta)
        sha, size = meta.get("sha256"), meta.get("size")
        need(isinstance(sha, str) and bool(_HEX64.fullmatch(sha)), f"files[{k!r}].sha256",
             "64 lowercase hex digits", sha)
        need(_is_int(size) and size >= 0, f"files[{k!r}].size", "an integer >= 0", size)
    model = m["model"]
    need(isinstance(model, str), "model", "a member name (string)", model)
    if not _plain_name(model) or model in _RESERVED:
        raise CheckFailed(f"{where}: {MANIFEST}: model {model!r} is not a plain relative member name (absolute "
                          f"path, '..', empty part, or {MANIFEST} / {MANIFEST_SIG}); refusing to load anything "
                          "outside the bundle")
    if model not in files:
        raise CheckFailed(f"{where}: {MANIFEST}: model {model!r} is not listed in files")
    sig = m["signature"]
    need(isinstance(sig, dict) and isinstance(sig.get("inputs"), list) and isinstance(sig.get("outputs"), list),
         "signature", "an object with inputs and outputs lists", sig)
    for side in ("inputs", "outputs"):
        for i, s in enumerate(sig[side]):
            f = f"signature.{side}[{i}]"
            need(isinstance(s, dict), f, "an object {name, dtype, shape}", s)
            need(isinstance(s.get("name"), str), f + ".name", "a string", s.get("name"))
            need(isinstance(s.get("dtype"), str), f + ".dtype", "a string", s.get("dtype"))
            shape = s.get("shape")
            need(isinstance(shape, list) and all(_is_int(d) or isinstance(d, str) for d in shape), f + ".shape",
                 "a list of integers and strings", shape)
    opset = m["opset"]
    need(isinstance(opset, dict) and all(isinstance(k, str) and _is_int(v) for k, v in opset.items()), "opset",
         "an object {domain: integer version}", opset)
    need(_is_int(m["ir_version"]), "ir_version", "an integer", m["ir_version"])
    need(isinstance(m["producer"], str), "producer", "a string", m["producer"])
    versions = m["versions"]
    need(isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values()), "versions",
         "an object {package: version string}", versions)
    for opt in ("recipe", "created"):
        need(m.get(opt) is None or isinstance(m[opt], str), opt, "a string or null", m.get(opt))
    met = m.get("metrics")
    need(met is None or isinstance(met, dict), "metrics", "an object or null", met)
    acc = (met or {}).get("accuracy")
    need(acc is None or (isinstance(acc, dict) and _is_num(acc.get("top1"))), "metrics.accuracy",
         "null or an object with a numeric top1", acc)
    if "signed_by" in m:
        sb = m["signed_by"]
        need(isinstance(sb, dict), "signed_by", "an object {algorithm, fingerprint}", sb)
        need(sb.get("algorithm") == SIGN_ALGORITHM, "signed_by.algorithm", repr(SIGN_ALGORITHM), sb.get("algorithm"))
        fp = sb.get("fingerprint")
        need(isinstance(fp, str) and bool(_FINGERPRINT.fullmatch(fp)), "signed_by.fingerprint",
             "'sha256:' and 64 lowercase hex digits", fp)


# ----------------------------------------------------------------------------- verify


def verify(bundle: str | Path, into: Path | None = None, key: str | Path | None = None) -> dict[str, Any]:
    """Check the signature (with `key`, a public key PEM: required and valid), the manifest's fields, hashes,
    file list, that the model it names loads and that its I/O signature, opsets and IR version match.
    With `into`, the verified contents stay there (extracted once); otherwise in a temp folder, removed."""
    pub = load_public_key(key) if key is not None else None  # a bad key file fails before any work
    if into is not None:
        return _verify_in(Path(bundle), Path(into), pub, key)
    with tempfile.TemporaryDirectory(prefix="modelpress-verify-") as tmp:
        return _verify_in(Path(bundle), Path(tmp), pub, key)


def _verify_signature(bundle: Path, raw: bytes, sig: bytes | None, pub: Any, key: str | Path) -> None:
    from cryptography.exceptions import InvalidSignature

    if sig is None:
        raise CheckFailed(f"{bundle} is not signed (no {MANIFEST_SIG}); --key {key} requires a valid signature")
    try:
        pub.verify(sig, raw)
    except InvalidSignature:
        raise CheckFailed(f"{bundle}: the signature over {MANIFEST} does not verify with {key} "
                          f"({fingerprint(pub)}): tampered, or signed by another key") from None


def _verify_in(bundle: Path, root: Path, pub: Any = None, key: str | Path | None = None) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

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
        _verify_signature(bundle, raw, sig, pub, key)
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CheckFailed(f"{bundle}: {MANIFEST} is not JSON ({_first_line(e)})") from None
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
        raise CheckFailed(f"{bundle}: {manifest['model']} is not an ONNX model: {_first_line(e)}") from None
    model_dir = posixpath.dirname(manifest["model"])
    for loc in _external_locations(proto):
        member = _external_member(loc)
        member = posixpath.join(model_dir, member) if member is not None and model_dir else member
        if member is None or member not in listed or member in _RESERVED:
            raise CheckFailed(f"{bundle}: the model's external data {loc!r} is not a file of the bundle; "
                              "refusing to load anything outside it")
    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise CheckFailed(f"{bundle}: the model does not load in ONNX Runtime: {_first_line(e)}") from None
    del sess
    if _signature_of(proto) != manifest["signature"]:
        raise CheckFailed(f"{bundle}: the model's I/O signature differs from the manifest's")
    if _opset_of(proto) != manifest["opset"] or proto.ir_version != manifest["ir_version"]:
        raise CheckFailed(f"{bundle}: the model's opsets or IR version differ from the manifest's")
    card = (root / "README.md").read_text(errors="replace") if "README.md" in listed else ""
    return {"bundle": str(bundle), "ok": True, "name": manifest["name"], "model": manifest["model"],
            "files": sorted(files), "signature": manifest["signature"], "metrics": manifest.get("metrics"),
            "card_lines": len(card.splitlines()),
            "signing": {"signed": sig is not None, "verified": pub is not None,
                        "fingerprint": signed_by["fingerprint"] if signed_by else None,
                        "key": str(key) if pub is not None else None}}


def open_model(path: str | Path, workdir: Path) -> tuple[Path, dict[str, Any] | None]:
    """A .onnx file as is, or a verified bundle's model extracted into `workdir` (with its manifest)."""
    path = Path(path)
    if path.suffix == ".mpk" or (path.is_file() and tarfile.is_tarfile(path)):
        res = verify(path, into=workdir)
        return workdir / res["model"], json.loads((workdir / MANIFEST).read_text())
    from modelpress.onnxutil import check_onnx_file

    return check_onnx_file(path), None
