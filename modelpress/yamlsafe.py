"""Bounded YAML for recipes: a recipe is a few hundred bytes, so anything huge is refused before it is built.

PyYAML expands aliases when it constructs Python objects, so 600 bytes of nested aliases ("billion laughs")
become gigabytes. `load_yaml` first walks the event stream (no objects built) and refuses a file over
MAX_BYTES, more than MAX_ALIASES aliases, a document whose expanded size (every value counted once per use,
alias re-use included) exceeds MAX_NODES, nesting deeper than MAX_DEPTH, a self-referencing alias or a scalar
longer than MAX_SCALAR_CHARS; only then does it compose the node graph and construct the document.
Every refusal is one ModelpressError line naming the file and the limit.

`short(value)` quotes a user value for an error message without printing all of it.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from modelpress.errors import ModelpressError

MAX_BYTES = 1 << 20  # 1 MiB
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 100
MAX_SCALAR_CHARS = 4096

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 6, 6, 6, 6
_repr.maxstring, _repr.maxother, _repr.maxlong = 200, 200, 60


def short(value: Any, n: int = 80) -> str:
    """repr(value), at most `n` characters: a longer one is cut and ends with '…'. Never builds a huge string."""
    n = max(int(n), 2)
    try:
        if isinstance(value, (str, bytes)):
            text = repr(value[: n + 1])  # a longer value gives a repr over n characters: cut below
        else:
            text = _repr.repr(value)
    except Exception:  # a hostile __repr__ must not turn an error message into another error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 1] + "…"


def clip(message: str, n: int = 400) -> str:
    """One line of at most `n` characters, for wrapping an error message that may quote a user value."""
    message = " ".join(str(message).split())
    return message if len(message) <= n else message[: n - 1] + "…"


def read_yaml_file(path: str | Path) -> str:
    """The text of a YAML file, refusing one over MAX_BYTES before reading it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ModelpressError(f"{path}: {size:,} bytes is over the {MAX_BYTES:,}-byte limit for a recipe")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ModelpressError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:  # grew while we looked, or a special file
        raise ModelpressError(f"{path}: over the {MAX_BYTES:,}-byte limit for a recipe")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelpressError(f"{path}: not UTF-8 text (byte {e.start}); a recipe is a YAML text file") from None


def _invalid(path: Path, e: Exception) -> ModelpressError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or e
    return ModelpressError(f"{path}{line}: not valid YAML ({clip(problem, 200)})")


def _check_events(text: str, path: Path) -> None:
    """Walk the event stream, counting what construction would build; raise before anything is built."""
    aliases = 0
    anchors: dict[str, int] = {}  # anchor -> expanded size of its value
    stack: list[list] = []  # open collections: [expanded size so far, anchor]
    doc_size = 0

    def add(size: int, mark) -> None:
        nonlocal doc_size
        if stack:
            stack[-1][0] += size
            total = stack[-1][0]
        else:
            doc_size += size
            total = doc_size
        if total > MAX_NODES or size > MAX_NODES:
            raise ModelpressError(f"{path}:{mark.line + 1}: the YAML expands to more than {MAX_NODES:,} values "
                                  f"(aliases re-used {aliases} times); refusing it (limit {MAX_NODES:,})")

    try:
        for ev in yaml.parse(text, Loader=_Loader):
            mark = ev.start_mark
            if isinstance(ev, yaml.DocumentStartEvent):
                anchors.clear()
                doc_size = 0
            elif isinstance(ev, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ModelpressError(f"{path}:{mark.line + 1}: more than {MAX_ALIASES} YAML aliases (*name); "
                                          f"refusing it (limit {MAX_ALIASES})")
                if any(f[1] == ev.anchor for f in stack):
                    raise ModelpressError(f"{path}:{mark.line + 1}: the alias *{clip(ev.anchor, 40)} refers to a "
                                          "value that contains it (a recursive structure)")
                add(anchors.get(ev.anchor, 1), mark)
            elif isinstance(ev, yaml.ScalarEvent):
                if len(ev.value) > MAX_SCALAR_CHARS:
                    raise ModelpressError(f"{path}:{mark.line + 1}: a value of {len(ev.value):,} characters is over "
                                          f"the {MAX_SCALAR_CHARS:,}-character limit for a recipe value")
                if ev.anchor is not None:
                    anchors[ev.anchor] = 1
                add(1, mark)
            elif isinstance(ev, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise ModelpressError(f"{path}:{mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep; "
                                          f"refusing it (limit {MAX_DEPTH})")
                stack.append([1, ev.anchor])
            elif isinstance(ev, yaml.CollectionEndEvent):
                size, anchor = stack.pop()
                if anchor is not None:
                    anchors[anchor] = size
                add(size, mark)
    except yaml.YAMLError as e:
        raise _invalid(path, e) from None


def load_yaml(text: str, path: str | Path) -> tuple[yaml.Node | None, Any]:
    """(root node, document) of one YAML document, checked against the limits before anything is built.

    The root node is None (and the document None) for an empty file. Errors are one-line ModelpressErrors
    naming `path`.
    """
    path = Path(path)
    if len(text) > MAX_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ModelpressError(f"{path}: over the {MAX_BYTES:,}-byte limit for a recipe")
    _check_events(text, path)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        doc = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        raise _invalid(path, e) from None
    except RecursionError:
        raise ModelpressError(f"{path}: YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError, ArithmeticError) as e:  # e.g. a date 2020-13-45
        raise ModelpressError(f"{path}: not valid YAML (a value cannot be read: {clip(e, 200)})") from None
    finally:
        loader.dispose()
    return root, doc


def load_yaml_file(path: str | Path) -> tuple[yaml.Node | None, Any]:
    """read_yaml_file + load_yaml."""
    return load_yaml(read_yaml_file(path), path)
