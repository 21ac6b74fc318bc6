"""The bundle manifest (manifest.json, schema `modelpress.bundle` v1): its constants, the member-name rule, the
measurements and model card a bundle records, and the type check of every field that verify, open_model and
gate use (docs/bundle-schema.md describes the format). Imports nothing from modelpress.bundle.
"""

from __future__ import annotations

import re
from typing import Any

from modelpress.errors import CheckFailed

MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"  # raw 64-byte Ed25519 signature over manifest.json's exact bytes
MANIFEST_SCHEMA = "modelpress.bundle"
MANIFEST_VERSION = 1
SIGN_ALGORITHM = "ed25519"  # the only signed_by.algorithm a manifest may record
_RESERVED = (MANIFEST, MANIFEST_SIG)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_REQUIRED = {"schema", "schema_version", "name", "model", "files", "signature", "opset", "ir_version", "producer",
             "versions"}


def _plain_name(name: Any) -> bool:
    """A canonical relative member name: 'a.onnx' or 'sub/a.bin'; no '/', '\\', '.', '..' or empty parts,
    no drive, no control characters."""
    if not isinstance(name, str) or not name or len(name) > 1024 or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts) and ":" not in parts[0]


# ----------------------------------------------------------------------------- manifest content


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
            "fidelity": row.get("fidelity"), "validation": row.get("validation"), "latency": lat,
            "metric": report.get("task", {}).get("metric"),
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
    cal = m.get("calibration")
    need(cal is None or (isinstance(cal, dict) and isinstance(cal.get("table"), str) and cal["table"] in files),
         "calibration", "null or an object whose table is a member", cal)
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
