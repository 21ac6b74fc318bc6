"""Bundles you can trust (issue 16): the manifest's paths are plain member names and every field is type-checked,
verify checks only the model the bundle ships, members are hashed as streams under size limits, and
optional Ed25519 signatures (`package --sign`, `verify --key`, `sign-keygen`) catch a re-hashed swap."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_clean_error, run_cli

pytest.importorskip("cryptography")


# ----------------------------------------------------------------------------- helpers


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def _write(dest: Path, files: dict[str, bytes]) -> Path:
    """A tar.gz bundle with exactly these members, in this order (what an attacker can write)."""
    with tarfile.open(dest, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return dest


def _dump(manifest) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _recraft(src: Path, dest: Path, change_manifest=None, change_files=None, rehash: bool = False) -> Path:
    """Rewrite a bundle: change members and/or the parsed manifest; optionally re-hash every member into the
    manifest, as an attacker who swaps the model does. manifest.sig is kept as is unless change_files drops it."""
    files = _members(src)
    man = json.loads(files["manifest.json"])
    if change_files:
        change_files(files)
    if rehash:
        man["files"] = {k: {"sha256": _sha(v), "size": len(v)} for k, v in sorted(files.items())
                        if k not in ("manifest.json", "manifest.sig")}
    if change_manifest:
        man = change_manifest(man) or man
    files["manifest.json"] = _dump(man)
    return _write(dest, files)


def _other_model(tiny_onnx: Path) -> bytes:
    """A different, valid model with the same I/O signature (the payload of a swap)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(tiny_onnx))
    t = m.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0 + 1, t.name))
    m.doc_string = "not the model that was released"
    return m.SerializeToString()


def _set(path: str, value):
    """A manifest change: set a field to value. path: a top-level key, then '.'-separated keys / list indexes;
    under `files` the next part is a whole member name, known or new ('files.README.md.size', 'files.../x')."""
    def change(man):
        top, _, rest = path.partition(".")
        keys = [top]
        if top == "files" and rest:
            name = next((n for n in man["files"] if rest.startswith(n + ".")), None)
            keys += [name, rest[len(name) + 1:]] if name else [rest]
        elif rest:
            keys += rest.split(".")
        obj = man
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        obj[int(keys[-1]) if isinstance(obj, list) else keys[-1]] = value
        return man
    return change


def _drop(key: str):
    def change(man):
        man.pop(key)
        return man
    return change


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    for who in ("release", "other"):
        p = run_cli("sign-keygen", str(d / who))
        assert p.returncode == 0, p.stderr
    return {"priv": d / "release.pem", "pub": d / "release.pub.pem", "other_priv": d / "other.pem",
            "other_pub": d / "other.pub.pem"}


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory, tiny_onnx) -> Path:
    out = tmp_path_factory.mktemp("unsigned") / "u.mpk"
    p = run_cli("package", str(tiny_onnx), "-o", str(out))
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def signed(tmp_path_factory, tiny_onnx, keys) -> Path:
    out = tmp_path_factory.mktemp("signed") / "s.mpk"
    p = run_cli("package", str(tiny_onnx), "-o", str(out), "--sign", str(keys["priv"]))
    assert p.returncode == 0, p.stderr
    return out


# ----------------------------------------------------------------------------- manifest paths


@pytest.mark.parametrize("model,needle", [
    ("ABS", "not a plain relative member name"),
    ("../tiny.onnx", "not a plain relative member name"),
    ("./model.onnx", "not a plain relative member name"),
    ("sub//model.onnx", "not a plain relative member name"),
    ("other.onnx", "model 'other.onnx' is not listed in files"),
    ("manifest.json", "not a plain relative member name"),
])
def test_model_entry_must_be_a_listed_member(tmp_path, tiny_onnx, unsigned, model, needle):
    outside = tmp_path / "tiny.onnx"  # a perfectly loadable model outside the bundle, with the same signature
    outside.write_bytes(tiny_onnx.read_bytes())
    model = str(outside.resolve()) if model == "ABS" else model
    bad = _recraft(unsigned, tmp_path / "bad.mpk", _set("model", model))
    p = run_cli("verify", str(bad), cwd=tmp_path)
    assert_clean_error(p, 3, needle)
    assert "OK" not in p.stdout


def test_model_listed_but_not_in_the_bundle(tmp_path, unsigned):
    def change(man):
        man["model"] = "elsewhere.onnx"
        man["files"]["elsewhere.onnx"] = man["files"]["model.onnx"]
    bad = _recraft(unsigned, tmp_path / "bad.mpk", change)
    assert_clean_error(run_cli("verify", str(bad)), 3, "files missing from the bundle: ['elsewhere.onnx']")


def test_model_under_another_listed_name_is_the_one_checked(tmp_path, tiny_onnx, unsigned):
    """A manifest may name any listed member as the model: verify loads that member and nothing else."""
    other = _other_model(tiny_onnx)

    def add(files):
        files["alt.onnx"] = other
    bad = _recraft(unsigned, tmp_path / "alt.mpk", lambda m: m.__setitem__("model", "alt.onnx"), add, rehash=True)
    p = run_cli("verify", str(bad), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"] == "alt.onnx"


def test_external_data_outside_the_bundle_is_refused(tmp_path, tiny_onnx, unsigned):
    import onnx

    (tmp_path / "w.bin").write_bytes(b"\0" * 4096)
    m = onnx.load(str(tiny_onnx))
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../w.bin")
    evil = m.SerializeToString()
    bad = _recraft(unsigned, tmp_path / "bad.mpk", change_files=lambda f: f.__setitem__("model.onnx", evil),
                   rehash=True)
    assert_clean_error(run_cli("verify", str(bad)), 3, "external data '../w.bin' is not a file of the bundle")


def test_external_data_is_packaged_hashed_and_verified(tmp_path, tiny_onnx):
    import onnx

    m = onnx.load(str(tiny_onnx))
    d = tmp_path / "ext"
    d.mkdir()
    onnx.save_model(m, str(d / "m.onnx"), save_as_external_data=True, location="m.weights", size_threshold=0)
    p = run_cli("package", str(d / "m.onnx"), "-o", str(tmp_path / "e.mpk"), "--json")
    assert p.returncode == 0, p.stderr
    man = json.loads(p.stdout)
    w = (d / "m.weights").read_bytes()
    assert man["files"]["m.weights"] == {"sha256": _sha(w), "size": len(w)}
    v = run_cli("verify", str(tmp_path / "e.mpk"), "--json")
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["files"] == ["README.md", "m.weights", "model.onnx"]
    flip = bytearray(w)
    flip[0] ^= 1
    bad = _recraft(tmp_path / "e.mpk", tmp_path / "bad.mpk", change_files=lambda f: f.__setitem__("m.weights", bytes(flip)))
    assert_clean_error(run_cli("verify", str(bad)), 3, "m.weights does not match its sha256")


# ----------------------------------------------------------------------------- manifest types


@pytest.mark.parametrize("change,needle", [
    (lambda m: [m], "the top level must be a JSON object, not a list"),
    (_set("files", ["model.onnx", "README.md"]), "files must be a non-empty object"),
    (_set("files", {}), "files must be a non-empty object"),
    (_set("files.model.onnx", "abc"), "files['model.onnx'] must be an object"),
    (_set("files.README.md.size", "12"), "files['README.md'].size must be an integer >= 0, not a string '12'"),
    (_set("files.README.md.size", -1), "files['README.md'].size must be an integer >= 0"),
    (_set("files.README.md.size", True), "files['README.md'].size must be an integer >= 0, not a boolean"),
    (_set("files.README.md.size", 12.0), "files['README.md'].size must be an integer >= 0, not a number"),
    (_set("files.README.md.sha256", 5), "files['README.md'].sha256 must be 64 lowercase hex digits, not an integer 5"),
    (_set("files.README.md.sha256", "AB" * 32), "files['README.md'].sha256 must be 64 lowercase hex digits"),
    (_set("files./etc/passwd", {"sha256": "0" * 64, "size": 1}),
     "files has an entry '/etc/passwd' that is not a plain relative member name"),
    (_set("files.../x", {"sha256": "0" * 64, "size": 1}), "files has an entry '../x'"),
    (_set("files.manifest.sig", {"sha256": "0" * 64, "size": 64}), "files has an entry 'manifest.sig'"),
    (_set("model", 5), "model must be a member name (string), not an integer 5"),
    (_set("model", None), "model must be a member name (string), not null"),
    (_set("signature", "input -> output"), "signature must be an object with inputs and outputs lists, not a string"),
    (_set("signature.inputs", {"name": "input"}), "signature must be an object with inputs and outputs lists"),
    (_set("signature.inputs.0", "input"), "signature.inputs[0] must be an object"),
    (_set("signature.inputs.0.shape", "batch,1,16,16"), "signature.inputs[0].shape must be a list"),
    (_set("opset", [18]), "opset must be an object {domain: integer version}, not a list"),
    (_set("opset", {"ai.onnx": "18"}), "opset must be an object {domain: integer version}"),
    (_set("ir_version", "8"), "ir_version must be an integer, not a string '8'"),
    (_set("schema_version", "1"), "schema_version must be an integer, not a string '1'"),
    (_set("schema", "other.bundle"), "manifest schema 'other.bundle' v1 is not modelpress.bundle v1"),
    (_set("name", 5), "name must be a non-empty string, not an integer 5"),
    (_set("producer", ["pytorch"]), "producer must be a string, not a list"),
    (_set("versions", ["onnx"]), "versions must be an object"),
    (_set("recipe", 3), "recipe must be a string or null"),
    (_set("metrics", "fast"), "metrics must be an object or null, not a string 'fast'"),
    (_set("metrics", {"accuracy": {"top1": "99%"}}), "metrics.accuracy must be null or an object with a numeric top1"),
    (_set("signed_by", "me"), "signed_by must be an object"),
    (_drop("files"), "manifest.json lacks ['files']"),
])
def test_wrong_typed_manifest_entries_fail_the_check(tmp_path, unsigned, change, needle):
    bad = _recraft(unsigned, tmp_path / "bad.mpk", change)
    assert_clean_error(run_cli("verify", str(bad)), 3, needle)


def test_manifest_json_edge_cases(tmp_path, unsigned):
    files = _members(unsigned)
    files["manifest.json"] = b"[" * 100_000
    assert_clean_error(run_cli("verify", str(_write(tmp_path / "d.mpk", files))), 3, "manifest.json is not JSON")
    files["manifest.json"] = b"\xff\xfe\x00garbage"
    assert_clean_error(run_cli("verify", str(_write(tmp_path / "g.mpk", files))), 3, "manifest.json is not JSON")


# ----------------------------------------------------------------------------- members, streams, limits


@pytest.mark.parametrize("names,needle", [
    (["./model.onnx"], "unsafe member path './model.onnx'"),
    (["sub//x"], "unsafe member path"),
    (["a\\..\\x"], "unsafe member path"),
    (["x", "x"], "duplicate member names"),
    (["README.md", "readme.MD"], "duplicate member names"),
    (["a", "a/b"], "member 'a' is both a file and a folder"),
])
def test_non_canonical_or_clashing_member_names_are_refused(tmp_path, unsigned, names, needle):
    files = list(_members(unsigned).items())
    with tarfile.open(tmp_path / "bad.mpk", "w:gz") as t:
        for name, data in files + [(n, b"x") for n in names]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    assert_clean_error(run_cli("verify", str(tmp_path / "bad.mpk")), 3, needle)


def test_members_are_hashed_while_extracted_and_the_total_is_limited(tmp_path, unsigned, monkeypatch):
    from modelpress import bundle
    from modelpress.errors import CheckFailed

    got = bundle.safe_extract(unsigned, tmp_path / "x")
    files = _members(unsigned)
    assert got == {k: {"sha256": _sha(v), "size": len(v)} for k, v in files.items()}
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read whole member {self}"))
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(CheckFailed, match="over the 1,000-byte limit"):
        bundle.safe_extract(unsigned, tmp_path / "y")
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())
    monkeypatch.setattr(bundle, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(CheckFailed, match="over the 100 limit"):
        bundle.safe_extract(unsigned, tmp_path / "z")


# ----------------------------------------------------------------------------- signing


def test_sign_keygen_writes_a_private_0600_and_a_public_key(tmp_path):
    p = run_cli("sign-keygen", str(tmp_path / "k"), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["private"] == str(tmp_path / "k.pem") and res["public"] == str(tmp_path / "k.pub.pem")
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    assert (tmp_path / "k.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert res["fingerprint"].startswith("sha256:") and len(res["fingerprint"]) == 7 + 64
    before = (tmp_path / "k.pem").read_bytes()
    assert_clean_error(run_cli("sign-keygen", str(tmp_path / "k")), 2, "already exists")
    assert (tmp_path / "k.pem").read_bytes() == before


def test_sign_verify_roundtrip_and_reproducible(tmp_path, tiny_onnx, keys, signed):
    files = _members(signed)
    assert set(files) == {"manifest.json", "manifest.sig", "model.onnx", "README.md"} and len(files["manifest.sig"]) == 64
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    load_pem_public_key(keys["pub"].read_bytes()).verify(files["manifest.sig"], files["manifest.json"])
    man = json.loads(files["manifest.json"])
    p = run_cli("verify", str(signed), "--key", str(keys["pub"]), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["signing"] == {"signed": True, "verified": True, "fingerprint": man["signed_by"]["fingerprint"],
                              "key": str(keys["pub"])}
    human = run_cli("verify", str(signed), "--key", str(keys["pub"]))
    assert human.returncode == 0 and "signature verified" in human.stdout
    # without --key: hashes checked as before, the signature reported as not checked
    nokey = run_cli("verify", str(signed))
    assert nokey.returncode == 0, nokey.stderr
    assert "signature was NOT checked" in nokey.stdout
    # Ed25519 is deterministic: a signed bundle is still byte-reproducible
    again = run_cli("package", str(tiny_onnx), "-o", str(tmp_path / "s.mpk"), "--sign", str(keys["priv"]))
    assert again.returncode == 0, again.stderr
    assert _sha((tmp_path / "s.mpk").read_bytes()) == _sha(signed.read_bytes())


def test_wrong_key_is_refused(keys, signed):
    assert_clean_error(run_cli("verify", str(signed), "--key", str(keys["other_pub"])), 3, "does not verify with")


def test_unsigned_bundle_with_key_is_refused(keys, unsigned):
    assert_clean_error(run_cli("verify", str(unsigned), "--key", str(keys["pub"])), 3, "is not signed")


def test_consistent_model_and_manifest_swap_is_caught_by_the_key(tmp_path, tiny_onnx, keys, signed):
    swap = lambda f: f.__setitem__("model.onnx", _other_model(tiny_onnx))  # noqa: E731
    forged = _recraft(signed, tmp_path / "forged.mpk", change_files=swap, rehash=True)
    # every hash is consistent, so without a key this cannot be told from the release...
    assert run_cli("verify", str(forged)).returncode == 0
    # ...but the signature over the manifest no longer holds
    assert_clean_error(run_cli("verify", str(forged), "--key", str(keys["pub"])), 3, "does not verify with")
    # re-signed by the attacker's own key, with the manifest naming that key: still not the release key
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from modelpress.bundle import fingerprint

    evil = load_pem_private_key(keys["other_priv"].read_bytes(), None)
    files = _members(forged)
    man = json.loads(files["manifest.json"])
    man["signed_by"]["fingerprint"] = fingerprint(evil.public_key())
    files["manifest.json"] = _dump(man)
    files["manifest.sig"] = evil.sign(files["manifest.json"])
    resigned = _write(tmp_path / "resigned.mpk", files)
    assert run_cli("verify", str(resigned), "--key", str(keys["other_pub"])).returncode == 0
    assert_clean_error(run_cli("verify", str(resigned), "--key", str(keys["pub"])), 3, "does not verify with")
    # the signature stripped: refused with --key

    def strip(man):
        man.pop("signed_by")
    stripped = _recraft(forged, tmp_path / "stripped.mpk", strip, lambda f: f.pop("manifest.sig"))
    assert run_cli("verify", str(stripped)).returncode == 0
    assert_clean_error(run_cli("verify", str(stripped), "--key", str(keys["pub"])), 3, "is not signed")


@pytest.mark.parametrize("change,needle", [
    (lambda f: f.__setitem__("manifest.sig", f["manifest.sig"][:32]), "not a 64-byte Ed25519 signature"),
    (lambda f: f.pop("manifest.sig"), "records a signing key but the bundle has no manifest.sig"),
])
def test_broken_signature_members(tmp_path, keys, signed, change, needle):
    bad = _recraft(signed, tmp_path / "bad.mpk", change_files=change)
    assert_clean_error(run_cli("verify", str(bad)), 3, needle)


def _rsa_pem(path: Path, private: bool) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()) if private else
                     k.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize("flag,kind,needle", [
    ("--sign", "missing", "no such key file"),
    ("--sign", "text", "is not a PEM key file"),
    ("--sign", "public", "is not a private key"),
    ("--sign", "garbled", "is not a readable PEM private key"),
    ("--sign", "rsa", "is not an Ed25519 key (it is RSA)"),
    ("--key", "missing", "no such key file"),
    ("--key", "text", "is not a PEM key file"),
    ("--key", "private", "is a private key; --key takes the public key"),
    ("--key", "garbled", "is not a readable PEM public key"),
    ("--key", "rsa", "is not an Ed25519 key (it is RSA)"),
    ("--key", "folder", "cannot read key file"),
])
def test_bad_key_files_are_one_line_exit_2(tmp_path, tiny_onnx, keys, signed, flag, kind, needle):
    k = tmp_path / "key.pem"
    if kind == "text":
        k.write_text("hello\n")
    elif kind == "public":
        k = keys["pub"]
    elif kind == "private":
        k = keys["priv"]
    elif kind == "garbled":
        label = "PRIVATE KEY" if flag == "--sign" else "PUBLIC KEY"
        k.write_text(f"-----BEGIN {label}-----\nbm90IGEga2V5\n-----END {label}-----\n")
    elif kind == "rsa":
        _rsa_pem(k, private=flag == "--sign")
    elif kind == "folder":
        k = tmp_path
    if flag == "--sign":
        p = run_cli("package", str(tiny_onnx), "-o", str(tmp_path / "out.mpk"), "--sign", str(k))
        assert not (tmp_path / "out.mpk").exists()
    else:
        p = run_cli("verify", str(signed), "--key", str(k))
    assert_clean_error(p, 2, needle)


def test_missing_cryptography_says_what_to_install(tmp_path, tiny_onnx, keys):
    code = ("import sys; sys.modules['cryptography'] = None; sys.argv = ['modelpress'] + sys.argv[1:]; "
            "from modelpress.cli import main; main()")
    for args in (["package", str(tiny_onnx), "-o", str(tmp_path / "o.mpk"), "--sign", str(keys["priv"])],
                 ["verify", str(tmp_path / "o.mpk"), "--key", str(keys["pub"])],
                 ["sign-keygen", str(tmp_path / "k")]):
        p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert_clean_error(p, 2, "pip install 'modelpress[sign]'")
