"""Atomic, safe outputs: every artifact appears whole or not at all, never over one of its own inputs.

A crash, a Ctrl-C, a SIGTERM or a failed check must never leave a half-written model or report where a
pipeline would pick it up, so we write to a temp file in the destination folder and `os.replace` it into
place. Temp names carry the writer's pid (`.NAME.PID.RANDOM.SUFFIX`) and the writer holds an advisory lock
on them, so the temps of a run killed with SIGKILL (which no handler can catch) are swept by the next
write of the same artifact. `guard_outputs` is the one output-safety rule every writing command applies
before any work: no output may be (symlinks and hard links followed) one of the command's inputs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

from modelpress.errors import ModelpressError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the pid check alone decides
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]

# ----------------------------------------------------------------------------- temps beside the target

_TEMP_TAIL = r"\.(\d{1,10})\.[0-9a-f]{8}(?:\.[^./]+)?"


def _temp_re(name: str | None) -> re.Pattern[str]:
    """Temps of `name` (or of any artifact when None): `.NAME.PID.8HEX[.SUFFIX]`."""
    return re.compile(r"\." + (re.escape(name) if name is not None else r".+") + _TEMP_TAIL + r"\Z", re.DOTALL)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, another user's
    return True


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock without waiting; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # the file system has no locks: the pid check alone decides
    return True


def sweep_stale_temps(folder: PathLike, name: str | None = None) -> list[Path]:
    """Remove temps left in `folder` by killed runs (of artifact `name`, or of any artifact): those whose
    writer's pid is gone and whose lock nobody holds. The lock also protects the temps of a live writer
    whose pid this process cannot see (another pid namespace sharing the folder). Returns what it removed."""
    pattern, removed = _temp_re(name), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    own = os.getpid()
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == own or _pid_alive(int(m.group(1))):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not is_dir and not entry.is_file(follow_symlinks=False):
                continue
            fd = os.open(entry.path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0))
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue
            if is_dir:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _cannot_write(dest: Path, e: OSError) -> ModelpressError:
    where = _existing_ancestor(dest.parent) if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else dest
    why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.EROFS: "read-only file system"}.get(e.errno or 0, e.strerror or str(e))
    return ModelpressError(f"cannot write {dest}: {where} is not writable ({why})" if where != dest
                           else f"cannot write {dest}: {why}")


def _new_temp(dest: Path, suffix: str, is_dir: bool) -> tuple[Path, int]:
    """Create `.NAME.PID.RANDOM{suffix}` beside `dest` (a file, or a 0700 folder) and lock it: -> (path, fd)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(dest, e) from None
    sweep_stale_temps(dest.parent, dest.name)
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{'' if is_dir else suffix}"
        try:
            if is_dir:
                os.mkdir(tmp, 0o700)
                fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            else:  # mode 0666 less the umask: artifacts get normal permissions
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise _cannot_write(dest, e) from None
        _lock(fd)
        return tmp, fd
    raise ModelpressError(f"cannot create a temp file beside {dest}")


@contextlib.contextmanager
def atomic_path(dest: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to `dest`; rename it onto `dest` only if the block succeeds. The temp is
    removed on every other exit (exceptions, Ctrl-C, SIGTERM/SIGHUP once `install_signal_handlers` ran)."""
    dest = Path(dest)
    tmp_path, fd = _new_temp(dest, suffix or dest.suffix or ".tmp", is_dir=False)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, dest)
        except OSError as e:
            raise _cannot_write(dest, e) from None
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(dest: PathLike) -> Iterator[Path]:
    """Yield a temp folder next to `dest`; it becomes `dest` only if the block succeeds. `dest` must be absent
    or an empty folder (callers check first, to fail before any work)."""
    dest = Path(dest)
    tmp, fd = _new_temp(dest, "", is_dir=True)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # made 0700 while being filled; artifacts get normal permissions
            if dest.exists():
                dest.rmdir()
            os.replace(tmp, dest)
        except OSError as e:
            raise _cannot_write(dest, e) from None
    finally:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_paths(*dests: PathLike) -> Iterator[list[Path]]:
    """atomic_path for several files that form one artifact (a model and its external data): yield a temp
    beside each; only if the block succeeds are they renamed into place, in the order given (put the files
    others point at first: the data, then the model), so the last rename is the one that publishes it."""
    made: list[tuple[Path, int]] = []
    try:
        for d in map(Path, dests):
            made.append(_new_temp(d, d.suffix or ".tmp", is_dir=False))
        yield [t for t, _ in made]
        for (tmp, _), d in zip(made, map(Path, dests)):
            try:
                os.replace(tmp, d)
            except OSError as e:
                raise _cannot_write(d, e) from None
    finally:
        for tmp, fd in made:
            try:
                tmp.unlink(missing_ok=True)
            finally:
                os.close(fd)


def _transfer(src: Path, dst: Path, move: bool) -> None:
    """Move (a rename where both sit on one file system) or stream-copy `src` onto `dst`."""
    if move:
        try:
            os.replace(src, dst)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    shutil.copyfile(src, dst)


def _merge_external(folder: Path, proto: Any, out: Path) -> dict[tuple[str, int], int]:
    """Copy every external tensor's bytes (from files in `folder`) into the one file `out`, in chunks:
    -> (old location, old offset) -> new offset (64-byte aligned)."""
    from modelpress.onnxutil import all_tensors

    offsets: dict[tuple[str, int], int] = {}
    with open(out, "wb") as w:
        for t in all_tensors(proto):
            info = {kv.key: kv.value for kv in t.external_data}
            if "location" not in info:
                continue
            key = (info["location"], int(info.get("offset", 0)))
            if key in offsets:
                continue
            pos = w.tell()
            if pos % 64:
                w.write(b"\0" * (64 - pos % 64))
                pos = w.tell()
            offsets[key] = pos
            with open(folder / key[0], "rb") as r:
                r.seek(key[1])
                left = int(info["length"]) if "length" in info else -1
                while left != 0:
                    chunk = r.read(1 << 24 if left < 0 else min(left, 1 << 24))
                    if not chunk:
                        break
                    w.write(chunk)
                    left -= len(chunk)
    return offsets


class DataCheckFailed(ModelpressError):
    """place_model's `check_data` refused the copied external data (nothing was placed)."""


def place_model(src: PathLike, dest: PathLike, move: bool = False,
                check_data: "Callable[[Path], bool] | None" = None) -> Path:
    """Put the model at `src` with its external data at `dest` as one artifact: its data become the one file
    `DEST.data` beside it (the locations inside the model rewritten to match, from the graph alone: the
    weights are never parsed), written as temps beside `dest` and renamed into place only when both are whole,
    data first. `move` renames the source's files (a private work folder) instead of copying gigabytes. A stale
    `DEST.data` of a previous external-data model at `dest` is removed once an inline model replaces it.
    `check_data(temp data file)` may refuse the copy (a cache entry's hash) before anything is placed."""
    import onnx

    from modelpress.onnxutil import data_file_name, external_locations, relocate_external_data

    src, dest = Path(src), Path(dest)
    proto = onnx.load(str(src), load_external_data=False)
    locs = external_locations(proto)
    data_dest = dest.parent / data_file_name(dest)
    if not locs:
        stale = False
        if data_dest.is_file() and dest.is_file():
            try:
                stale = data_dest.name in external_locations(onnx.load(str(dest), load_external_data=False))
            except Exception:  # noqa: BLE001 - not a model: nothing of ours to tidy
                pass
        with atomic_path(dest, suffix=".onnx") as tmp:
            _transfer(src, tmp, move)
        if stale:
            data_dest.unlink(missing_ok=True)
        return dest
    with atomic_paths(data_dest, dest) as (tmp_data, tmp_model):
        if len(locs) == 1:
            _transfer(src.parent / locs[0], tmp_data, move)
            relocate_external_data(proto, data_dest.name)
        else:
            relocate_external_data(proto, data_dest.name, _merge_external(src.parent, proto, tmp_data))
        if check_data is not None and not check_data(tmp_data):
            raise DataCheckFailed(f"the external data of {src} changed while it was being copied")
        os.chmod(tmp_data, 0o666 & ~_umask())  # onnx writes data files 0600; artifacts get normal permissions
        onnx.save_model(proto, str(tmp_model))
    return dest


def remove_model(path: PathLike) -> None:
    """Delete a model file and the external data files it names (a temp model's, a discarded try's)."""
    from modelpress.onnxutil import model_files

    path = Path(path)
    try:
        files = model_files(path)
    except Exception:  # noqa: BLE001 - unreadable: delete the file itself
        files = [path]
    for f in files:
        f.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: PathLike, obj: Any) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------- signals


class Terminated(SystemExit):
    """SIGTERM or SIGHUP, raised in the main thread so that every `finally` (temp removal) runs.
    Exit status 128 + the signal's number, as a shell reports a process killed by it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.signame = signal.Signals(signum).name


def _on_signal(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once (the next run sweeps)
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into `Terminated` (once, from the CLI entry; SIGINT already raises
    KeyboardInterrupt). A signal the parent set to be ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


# ----------------------------------------------------------------------------- the output-safety rule

Inputs = Mapping[str, Union[PathLike, Iterable[PathLike], None]]
_MAX_FOLDER_FILES = 200_000
_MAX_PARSED_MODEL = 64 << 20  # a bigger .onnx holds its weights inline: no external data to look for


def _external_data(model: Path) -> list[Path]:
    """The external-data files an .onnx names (MODEL.onnx.data and the like); [] when it cannot tell."""
    try:
        if model.stat().st_size > _MAX_PARSED_MODEL:
            return []
        import onnx

        m = onnx.load(str(model), load_external_data=False)
    except Exception:  # not a model: the command reports that itself
        return []
    from modelpress.onnxutil import external_locations

    return [model.parent / loc for loc in external_locations(m)]


def _expand(path: Path) -> Iterator[Path]:
    """An input and what reading it reads: a folder's files, a model's external data."""
    yield path
    if path.is_dir():
        n = 0
        for root, _, files in os.walk(path):
            for f in files:
                yield Path(root) / f
            n += len(files)
            if n > _MAX_FOLDER_FILES:
                break
    elif path.suffix.lower() == ".onnx" and path.is_file():
        yield from _external_data(path)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _check_writable(label: str, out: Path, where: Path) -> None:
    """`where` (the folder `out` is written in), or its nearest existing parent, must be a writable folder."""
    folder = _existing_ancestor(where)
    real = Path(os.path.realpath(folder))
    if not real.is_dir():
        raise ModelpressError(f"{label} {out}: {folder} is not a folder")
    if not os.access(real, os.W_OK | os.X_OK):
        raise ModelpressError(f"{label} {out}: cannot write in {folder} (permission denied or read-only file system)")


def guard_outputs(inputs: Inputs, outputs: Mapping[str, PathLike | None],
                  out_dirs: Mapping[str, PathLike | None] | None = None) -> None:
    """The output-safety rule, checked before any work: raise a one-line ModelpressError when an output is
    (symlinks and hard links followed) one of the inputs, when two outputs are the same file, or when an
    output's folder cannot be written.

    `inputs` maps a label (MODEL, --calib, ...) to a path, a list of paths, or None. A folder counts with
    every file under it (pass the files themselves when only some are read, e.g. a folder's images); an
    .onnx file counts with its external-data files. `outputs` maps a label (-o, --dump-recipe, ...) to a
    path or None; '-' (stdout) is skipped. `out_dirs` maps a label to a folder the command writes files
    into (a study's OUTPUT, the demo's -o): it must not be an input, and it (or, while absent, its nearest
    existing parent) must be writable. Outputs that do not exist yet cannot be inputs, so the inputs are
    only expanded and compared when some output already exists."""
    outs = [(label, Path(p)) for label, p in outputs.items() if p is not None and str(p) != "-"]
    seen: dict[str, tuple[str, Path]] = {}
    for label, out in outs:
        real = os.path.realpath(out)
        if real in seen:
            other_label, other = seen[real]
            raise ModelpressError(f"{other_label} {other} and {label} {out} are the same file: give each its own path")
        seen[real] = (label, out)
    dirs = [(label, Path(p)) for label, p in (out_dirs or {}).items() if p is not None]
    wanted = {ident: (label, out) for label, out in [*outs, *dirs] if (ident := _identity(out)) is not None}
    for in_label, value in (inputs.items() if wanted else ()):
        paths = [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for given in map(Path, filter(None, paths)):
            for p in _expand(given):
                hit = wanted.get(_identity(p))
                if hit is None:
                    continue
                label, out = hit
                if p == given:
                    what = f"the input {in_label}" + ("" if str(given) == str(out) else f" ({given})")
                elif given.is_dir():
                    what = f"{p.relative_to(given)} in the input {in_label} ({given})"
                else:
                    what = f"the external data {p.name} of the input {in_label} ({given})"
                same = "folder" if os.path.isdir(out) else "file"
                raise ModelpressError(f"{label} {out} is the same {same} as {what}: writing it would destroy that "
                                      "input; choose another output path")
    for label, out in outs:
        _check_writable(label, out, out.parent)
    for label, folder in dirs:
        _check_writable(label, folder, folder)


# ----------------------------------------------------------------------------- other helpers


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Silence library prints at the file-descriptor level (dynamo and ORT's calibrators write to the
    terminal, which would corrupt --json output), keeping the text in the yielded list."""
    sink: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stdout(tmp), contextlib.redirect_stderr(tmp):
                yield sink
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            sink.append(tmp.read())


@contextlib.contextmanager
def working_directory(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run a library call whose stray files land in the current directory inside `path` instead
    (ORT's symbolic shape inference dumps sym_shape_infer_temp.onnx + a 90 MB .data there on failure)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
