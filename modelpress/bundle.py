"""Release bundles (`.mpk`): a gzip-compressed tar, chosen over zip because Python's tarfile lets every
header field (mtime, owner, mode, order) be fixed, and gzip's own header carries a settable mtime, so the
same inputs give byte-identical bundles.

Layout: model.onnx (+ its external data files), manifest.json (sha256 and size of every other file, the
I/O signature, opset/IR version, producer, library versions, recipe, measured metrics with the target
profile and machine), README.md (a short model card), and recipe.yaml / report.json when given.
`verify` refuses unsafe members (absolute paths, '..', links, devices, oversize) before extracting anything.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from modelpress.errors import CheckFailed, ModelpressError
from modelpress.io import atomic_path
from modelpress.runtimes.ort import _first_line

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "modelpress.bundle"
MANIFEST_VERSION = 1
MAX_MEMBER_BYTES = 8 << 30  # refuse members over 8 GiB
MAX_MEMBERS = 10_000
_REQUIRED = {"schema", "schema_version", "name", "model", "files", "signature", "opset", "ir_version", "producer",
             "versions"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signature(model_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs: names, element types and shapes with symbolic dims as strings."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    init = {t.name for t in m.graph.initializer}

    def spec(vi) -> dict[str, Any]:
        tt = vi.type.tensor_type
        return {"name": vi.name, "dtype": onnx.TensorProto.DataType.Name(tt.elem_type).lower(),
                "shape": [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim]}

    return {"inputs": [spec(i) for i in m.graph.input if i.name not in init], "outputs": [spec(o) for o in m.graph.output]}


def _external_files(model_path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    files = set()
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                files.add(kv.value)
    return sorted(files)


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
    return "\n".join(lines)


def package(model: str | Path, output: str | Path, *, report: str | Path | None = None, recipe: str | Path | None = None,
            variant: str | None = None, name: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """Write a reproducible bundle; returns its manifest. Nothing is written if anything fails."""
    import onnx

    from modelpress.benchmarks.report import _versions
    from modelpress.onnxutil import check_onnx_file

    model = check_onnx_file(model)
    files: dict[str, bytes] = {"model.onnx": model.read_bytes()}
    for ext in _external_files(model):
        src = model.parent / ext
        if not src.is_file() or Path(ext).is_absolute() or ".." in Path(ext).parts:
            raise ModelpressError(f"{model}: external data file {ext!r} is missing or outside the model's folder")
        files[ext] = src.read_bytes()
    rep = None
    if report is not None:
        try:
            files["report.json"] = Path(report).read_bytes()
            rep = json.loads(files["report.json"])
        except FileNotFoundError:
            raise ModelpressError(f"no such report: {report}") from None
        except ValueError as e:
            raise ModelpressError(f"{report} is not JSON: {e}") from None
        if rep.get("schema") != "modelpress.report":
            raise ModelpressError(f"{report} is not a modelpress report (schema {rep.get('schema')!r})")
    if recipe is not None:
        if not Path(recipe).is_file():
            raise ModelpressError(f"no such recipe: {recipe}")
        files["recipe.yaml"] = Path(recipe).read_bytes()
    elif rep and rep.get("recipe"):
        files["recipe.yaml"] = rep["recipe"].encode()
    m = onnx.load(str(model), load_external_data=False)
    model_sha = _sha(files["model.onnx"])
    metrics = _metrics_for(rep, model_sha, variant) if rep else None
    if rep is not None and metrics is None:
        raise ModelpressError(f"{report} has no variant {variant!r}; it has "
                              f"{[r['name'] for r in rep.get('variants', [])]}")
    name = name or Path(output).name.removesuffix(".mpk")
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA, "schema_version": MANIFEST_VERSION, "name": name, "model": "model.onnx",
        "signature": signature(model), "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ir_version": m.ir_version, "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "versions": _versions(), "recipe": files.get("recipe.yaml", b"").decode() or None, "metrics": metrics,
    }
    if timestamp:
        manifest["created"] = timestamp
    files["README.md"] = _model_card(name, manifest).encode()
    manifest["files"] = {k: {"sha256": _sha(v), "size": len(v)} for k, v in sorted(files.items())}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with atomic_path(output, suffix=".mpk") as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arc in sorted(files):
                info = tarfile.TarInfo(arc)
                info.size, info.mtime, info.mode = len(files[arc]), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(files[arc]))
    return manifest


def _safe_members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    members = []
    for i, mem in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise CheckFailed(f"{where}: more than {MAX_MEMBERS} members")
        p = Path(mem.name)
        if mem.name.startswith(("/", "\\")) or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
            raise CheckFailed(f"{where}: unsafe member path {mem.name!r} (absolute or '..'); refusing to extract")
        if mem.issym() or mem.islnk():
            raise CheckFailed(f"{where}: member {mem.name!r} is a link; refusing to extract")
        if not mem.isfile():
            raise CheckFailed(f"{where}: member {mem.name!r} is not a regular file; refusing to extract")
        if mem.size > MAX_MEMBER_BYTES:
            raise CheckFailed(f"{where}: member {mem.name!r} is {mem.size:,} bytes, over the {MAX_MEMBER_BYTES:,} limit")
        members.append(mem)
    return members


def safe_extract(bundle: str | Path, dest: Path) -> list[str]:
    """Extract after checking every member; returns member names."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise ModelpressError(f"no such bundle: {bundle}")
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = _safe_members(tar, str(bundle))
            names = [m.name for m in members]
            if len(set(names)) != len(names):
                raise CheckFailed(f"{bundle}: duplicate member names")
            for mem in members:
                target = dest / mem.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(mem) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ModelpressError(f"{bundle} is not a readable bundle (tar.gz): {why}") from None
    return names


def verify(bundle: str | Path, into: Path | None = None) -> dict[str, Any]:
    """Check hashes, file list, manifest schema, that the model loads and that its signature matches.
    With `into`, the verified contents stay there (extracted once); otherwise in a temp folder, removed."""
    if into is not None:
        return _verify_in(Path(bundle), into)
    with tempfile.TemporaryDirectory(prefix="modelpress-verify-") as tmp:
        return _verify_in(Path(bundle), Path(tmp))


def _verify_in(bundle: Path, root: Path) -> dict[str, Any]:
    import onnxruntime as ort

    names = safe_extract(bundle, root)
    if MANIFEST not in names:
        raise CheckFailed(f"{bundle}: no {MANIFEST}")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except ValueError as e:
        raise CheckFailed(f"{bundle}: {MANIFEST} is not JSON ({e})") from None
    missing_keys = sorted(_REQUIRED - set(manifest)) if isinstance(manifest, dict) else sorted(_REQUIRED)
    if missing_keys:
        raise CheckFailed(f"{bundle}: {MANIFEST} lacks {missing_keys}")
    if manifest["schema"] != MANIFEST_SCHEMA or manifest["schema_version"] != MANIFEST_VERSION:
        raise CheckFailed(f"{bundle}: manifest schema {manifest['schema']!r} v{manifest['schema_version']!r} "
                          f"is not {MANIFEST_SCHEMA} v{MANIFEST_VERSION}")
    listed = set(manifest["files"])
    present = set(names) - {MANIFEST}
    if present - listed:
        raise CheckFailed(f"{bundle}: files not in the manifest: {sorted(present - listed)}")
    if listed - present:
        raise CheckFailed(f"{bundle}: files missing from the bundle: {sorted(listed - present)}")
    for name, meta in sorted(manifest["files"].items()):
        data = (root / name).read_bytes()
        if len(data) != meta["size"] or _sha(data) != meta["sha256"]:
            raise CheckFailed(f"{bundle}: {name} does not match its sha256 in the manifest (tampered or corrupt)")
    model = root / manifest["model"]
    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise CheckFailed(f"{bundle}: the model does not load in ONNX Runtime: {_first_line(e)}") from None
    del sess
    if signature(model) != manifest["signature"]:
        raise CheckFailed(f"{bundle}: the model's I/O signature differs from the manifest's")
    card = (root / "README.md").read_text() if (root / "README.md").is_file() else ""
    return {"bundle": str(bundle), "ok": True, "name": manifest["name"], "files": sorted(manifest["files"]),
            "signature": manifest["signature"], "metrics": manifest.get("metrics"), "card_lines": len(card.splitlines())}


def open_model(path: str | Path, workdir: Path) -> tuple[Path, dict[str, Any] | None]:
    """A .onnx file as is, or a verified bundle's model extracted into `workdir` (with its manifest)."""
    path = Path(path)
    if path.suffix == ".mpk" or (path.is_file() and tarfile.is_tarfile(path)):
        verify(path, into=workdir)
        return workdir / "model.onnx", json.loads((workdir / MANIFEST).read_text())
    from modelpress.onnxutil import check_onnx_file

    return check_onnx_file(path), None
