"""Where a remote profile runs: a URL, or a name declared in targets.yaml, with its token.

targets.yaml:
  targets:
    pi5:
      url: https://pi5.local:8765     # or http://127.0.0.1:8765 through an SSH tunnel
      token_env: PI5_AGENT_TOKEN      # or token_file: ~/.config/modelpress/pi5.token
      ca: pi5-cert.pem                # optional: trust this (self-signed) certificate
      runtime: ort-cpu                # optional defaults for commands run against it
      presets: [edge-4core]           # or preset: edge-4core
      timeout_s: 120                  # optional: silence (s) after which the agent counts as gone

A bare URL takes its token from MODELPRESS_AGENT_TOKEN. Relative paths in the file are relative to it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelpress.errors import ModelpressError
from modelpress.yamlsafe import short

TOKEN_ENV = "MODELPRESS_AGENT_TOKEN"
DEFAULT_TARGETS_FILE = "targets.yaml"
_ENTRY_KEYS = {"url", "token_env", "token_file", "ca", "runtime", "preset", "presets", "timeout_s"}
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass
class Target:
    name: str  # the targets.yaml name, or the URL itself
    url: str
    token: str = field(repr=False, default="")
    ca: Path | None = None
    runtime: str | None = None
    presets: list[str] = field(default_factory=list)
    timeout_s: float = 120.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url}


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "ssh":
        raise ModelpressError(
            f"{where}: ssh:// targets are not supported yet; start `modelpress agent serve` on the board and forward "
            "its port (ssh -N -L 8765:127.0.0.1:8765 user@board), then use --target http://127.0.0.1:8765")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelpressError(f"{where}: {short(url)} is not an http:// or https:// URL of an agent")
    try:
        parts.port
    except ValueError:
        raise ModelpressError(f"{where}: {short(url)} has a bad port") from None
    return url.rstrip("/")


def _read_token_file(path: Path, where: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelpressError(f"{where}: cannot read the token file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not token:
        raise ModelpressError(f"{where}: the token file {path} is empty")
    return token


def _env_token(var: str, where: str) -> str:
    token = os.environ.get(var, "").strip()
    if not token:
        raise ModelpressError(f"{where}: no agent token: set {var} (the content of the agent's token file)")
    return token


def load_targets(path: Path) -> dict[str, dict[str, Any]]:
    """The `targets:` mapping of a targets file, every entry's keys checked."""
    from modelpress.yamlsafe import load_yaml_file

    _, doc = load_yaml_file(path)
    if not isinstance(doc, dict) or set(doc) != {"targets"} or not isinstance(doc["targets"], dict):
        raise ModelpressError(f"{path}: a targets file holds one key, `targets:`, mapping names to entries")
    for name, entry in doc["targets"].items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelpressError(f"{path}: target name {short(name)} must be letters, digits, '.', '_' or '-'")
        if not isinstance(entry, dict) or "url" not in entry:
            raise ModelpressError(f"{path}: target {name!r} needs at least `url:`")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ModelpressError(f"{path}: target {name!r}: unknown key(s) {sorted(map(str, unknown))}; "
                                  f"known: {sorted(_ENTRY_KEYS)}")
    return doc["targets"]


def resolve_target(spec: str, targets_file: Path | None = None) -> Target:
    """--target URL (token from MODELPRESS_AGENT_TOKEN) or --target NAME (an entry of --targets or ./targets.yaml)."""
    if "://" in spec:
        url = _check_url(spec, "--target")
        return Target(spec, url, _env_token(TOKEN_ENV, f"--target {spec}"))
    path = Path(targets_file) if targets_file else Path(DEFAULT_TARGETS_FILE)
    if not path.is_file():
        raise ModelpressError(f"--target {short(spec)}: not a URL, and {path} does not exist (give --targets FILE, or "
                              "an http(s):// URL)")
    entries = load_targets(path)
    if spec not in entries:
        raise ModelpressError(f"--target {short(spec)}: no such target in {path}; known: {', '.join(entries) or 'none'}")
    e, where, base = entries[spec], f"{path}: target {spec!r}", path.resolve().parent
    url = _check_url(str(e["url"]), where)
    rel = lambda p: (base / Path(str(p)).expanduser()) if p is not None else None  # noqa: E731
    if e.get("token_env") is not None and e.get("token_file") is not None:
        raise ModelpressError(f"{where}: give token_env or token_file, not both")
    if e.get("token_file") is not None:
        token = _read_token_file(rel(e["token_file"]), where)
    else:
        token = _env_token(str(e.get("token_env") or TOKEN_ENV), where)
    presets = e.get("presets", [e["preset"]] if e.get("preset") is not None else [])
    if not isinstance(presets, list) or not all(isinstance(p, str) for p in presets):
        raise ModelpressError(f"{where}: presets must be a list of preset names")
    timeout = e.get("timeout_s", 120.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ModelpressError(f"{where}: timeout_s must be a number of seconds > 0")
    ca = rel(e.get("ca"))
    if ca is not None and not ca.is_file():
        raise ModelpressError(f"{where}: no such CA file {ca}")
    runtime = e.get("runtime")
    return Target(spec, url, token, ca, None if runtime is None else str(runtime), presets, float(timeout))
