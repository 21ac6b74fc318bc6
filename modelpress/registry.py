"""A lazy registry: name -> "module:Class", each module imported on first use (as Olive's registry does), so
a package never imports its members at import time and a member never needs the package's registry back."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_object(spec: str, failure: str) -> Any:
    """The object a 'package.module:name' string names (a user's hook: an evaluator, a decoder, a feature
    function). Anything that cannot be imported or found is a one-line ModelpressError, `failure` first."""
    from modelpress.errors import ModelpressError

    try:
        return _resolve(spec)
    except (ImportError, AttributeError, ValueError) as e:
        raise ModelpressError(f"{failure} {spec!r}: {e}") from None


class LazyRegistry(Mapping):
    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Any:
        return _resolve(self._entries[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def register(self, cls: Any) -> Any:
        """Add a class defined outside modelpress (a plugin) under its `name`."""
        self._entries[cls.name] = f"{cls.__module__}:{cls.__qualname__}"
        return cls

    def build(self, name: str, options: dict[str, Any] | None, what: str, label: str | None = None) -> Any:
        """An instance of `name` with its typed config (the class's `config_cls`) made from loose options by
        make_config: an unknown name, option or bad value is one line."""
        from modelpress.config import make_config
        from modelpress.errors import ModelpressError

        if name not in self:
            raise ModelpressError(f"unknown {what} {str(name)[:60]!r}; known: {', '.join(sorted(self))}")
        cls = self[name]
        return cls(make_config(cls.config_cls, options or {}, label or name))

    def path(self, name: str) -> str:
        """"module:Class" of `name`: a child process (the profiler's) registers a plugin from it."""
        return self._entries[name]

    def register_path(self, name: str, path: str) -> None:
        self._entries.setdefault(name, path)
