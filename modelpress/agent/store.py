"""The agent's state on the device: its bearer token and a content-addressed store of models and input data.

No name from a request ever becomes a path: a file is named by a sha256 the agent verified itself (64 hex
digits, checked twice: by the route and here), in a folder chosen by the kind (models/ or data/). Standard
library only, so it is testable without aiohttp.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Iterator

from modelpress.errors import ModelpressError

SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
KINDS = {"models": ".onnx", "data": ".npz"}  # kind -> suffix (the profiler reads .onnx, load_npz reads .npz)


def default_state_dir() -> Path:
    """~/.cache/modelpress-agent (or $XDG_CACHE_HOME/modelpress-agent): models, data and the token."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modelpress-agent"


# ----------------------------------------------------------------------------- the token


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """(token, created). A missing file gets a new random token, written 0600 with O_EXCL (never over a file
    another process just made); an existing one must be a regular file that only its owner can read."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return _read_token(path), False
    except OSError as e:
        raise ModelpressError(f"cannot create the token file {path}: {e.strerror or e}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def _read_token(path: Path) -> str:
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ModelpressError(f"cannot read the token file {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelpressError(f"the token file {path} is not a regular file (a link or a folder): refusing it")
    if st.st_mode & 0o077:
        raise ModelpressError(f"the token file {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                              f"run `chmod 600 {path}` or delete it to get a new token")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelpressError(f"cannot read the token file {path}: {e}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ModelpressError(f"the token file {path} holds no usable token (16 or more characters, no spaces): "
                              "delete it to get a new one")
    return token


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), so the answer time says nothing about the token."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


# ----------------------------------------------------------------------------- the blob store


class TooLarge(ModelpressError):
    """An upload went past the size limit."""


class BlobStore:
    """root/models/<sha256>.onnx and root/data/<sha256>.npz, written through root/incoming/ temps."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in (*KINDS, "incoming"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pinned: dict[str, int] = {}  # sha256 -> jobs holding it (never swept while held)
        self.uploads = 0  # bodies received and stored (the test of "sent once" reads it)

    def path(self, kind: str, sha: str) -> Path:
        if kind not in KINDS or not SHA256_RE.match(sha):
            raise ModelpressError(f"not a blob name: {kind}/{sha[:80]!r}")
        return self.root / kind / f"{sha}{KINDS[kind]}"

    def has(self, kind: str, sha: str) -> bool:
        p = self.path(kind, sha)
        if not p.is_file():
            return False
        with contextlib.suppress(OSError):
            os.utime(p)  # asked for: keep it another TTL
        return True

    @contextlib.contextmanager
    def receiving(self, kind: str, sha: str, max_bytes: int) -> Iterator["_Receiver"]:
        """A temp in incoming/ that becomes the blob only when its bytes hash to `sha` and fit `max_bytes`."""
        dest = self.path(kind, sha)
        fd, tmp = _mkstemp(self.root / "incoming")
        rx = _Receiver(fd, max_bytes)
        try:
            yield rx
            os.fsync(fd)
            os.close(fd)
            rx.fd = -1
            got = rx.hash.hexdigest()
            if got != sha:
                raise ModelpressError(f"the upload's sha256 is {got}, not the {sha} it was sent as (corrupted in "
                                      "transit?); nothing was stored")
            os.replace(tmp, dest)
            self.uploads += 1
        finally:
            if rx.fd >= 0:
                os.close(rx.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def pin(self, *shas: str | None) -> None:
        for s in filter(None, shas):
            self.pinned[s] = self.pinned.get(s, 0) + 1

    def unpin(self, *shas: str | None) -> None:
        for s in filter(None, shas):
            n = self.pinned.get(s, 0) - 1
            if n > 0:
                self.pinned[s] = n
            else:
                self.pinned.pop(s, None)

    def sweep(self, ttl_s: float, now: float | None = None) -> list[str]:
        """Delete blobs not used for `ttl_s` seconds (and not held by a job); stale incoming temps too."""
        now = time.time() if now is None else now
        removed = []
        for kind in KINDS:
            for p in (self.root / kind).iterdir():
                sha = p.name.split(".", 1)[0]
                try:
                    if sha not in self.pinned and now - p.stat().st_mtime > ttl_s:
                        p.unlink()
                        removed.append(f"{kind}/{p.name}")
                except OSError:
                    pass
        for p in (self.root / "incoming").iterdir():
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > max(ttl_s, 3600):
                    p.unlink()
        return removed

    def clear_incoming(self) -> None:
        """At start: every temp in incoming/ belongs to a previous agent (one agent per state folder)."""
        for p in (self.root / "incoming").iterdir():
            with contextlib.suppress(OSError):
                p.unlink()


class _Receiver:
    """Counts, hashes and writes the chunks of one upload; refuses the chunk that passes the limit."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd, self.max_bytes, self.size, self.hash = fd, max_bytes, 0, hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"upload over the agent's limit of {self.max_bytes / 1e6:g} MB (--max-upload-mb)")
        self.hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]


def _mkstemp(folder: Path) -> tuple[int, str]:
    for _ in range(100):
        p = folder / f"up-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), str(p)
        except FileExistsError:
            continue
    raise ModelpressError(f"cannot create a temp file in {folder}")


def lock_state_dir(root: Path) -> int:
    """Hold an exclusive lock on root/agent.lock for the agent's life: two agents never share a store."""
    import fcntl

    Path(root).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(Path(root) / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ModelpressError(f"another agent already uses {root}: give this one its own --state-dir") from None
    return fd
