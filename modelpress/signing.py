"""Ed25519 signing keys for release bundles: loading PEM keys (one-line errors), key generation, fingerprints,
and the detached signature over manifest.json's exact bytes (manifest.sig). Imports nothing from
modelpress.bundle; the cryptography package is optional (`pip install 'modelpress[sign]'`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from modelpress.errors import CheckFailed, ModelpressError
from modelpress.manifest import MANIFEST, MANIFEST_SIG, SIGN_ALGORITHM
from modelpress.errors import first_line

_SIGN_EXTRA = "pip install 'modelpress[sign]'"


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
    return "sha256:" + hashlib.sha256(raw).hexdigest()


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
        raise ModelpressError(f"{path} is not a readable PEM private key: {first_line(e)}") from None
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
        raise ModelpressError(f"{path} is not a readable PEM public key: {first_line(e)}") from None
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


# ----------------------------------------------------------------------------- the manifest's signature


def sign_manifest(key: Any, manifest_bytes: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature over manifest.json's exact bytes (deterministic)."""
    return key.sign(manifest_bytes)


def verify_manifest_signature(bundle: Path, raw: bytes, sig: bytes | None, pub: Any, key: str | Path) -> None:
    """CheckFailed unless `sig` (manifest.sig's bytes, None when absent) is `pub`'s signature over `raw`."""
    from cryptography.exceptions import InvalidSignature

    if sig is None:
        raise CheckFailed(f"{bundle} is not signed (no {MANIFEST_SIG}); --key {key} requires a valid signature")
    try:
        pub.verify(sig, raw)
    except InvalidSignature:
        raise CheckFailed(f"{bundle}: the signature over {MANIFEST} does not verify with {key} "
                          f"({fingerprint(pub)}): tampered, or signed by another key") from None
