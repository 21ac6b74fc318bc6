"""The technique registry: name -> "module:Class", each module imported only when its technique is used
(as Olive's registry does), so importing modelpress.optimizers imports no pass and no pass imports the
registry back. A new technique is one module with a `Pass` subclass (modelpress.optimizers.base) and one
line below."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from modelpress.errors import ModelpressError
from modelpress.optimizers.base import Pass, make_config

_REGISTRY = {
    "graph": "modelpress.optimizers.graph:GraphOptimize",
    "fp16": "modelpress.optimizers.fp16:Fp16",
    "dynamic-int8": "modelpress.optimizers.ort_quant:DynamicInt8",
    "static-int8": "modelpress.optimizers.ort_quant:StaticInt8",
    "int4-weight": "modelpress.optimizers.weight_only:Int4Weight",
    "int8-weight": "modelpress.optimizers.weight_only:Int8Weight",
    "inc-static": "modelpress.optimizers.inc:IncStatic",
    "inc-dynamic": "modelpress.optimizers.inc:IncDynamic",
    "inc-tune": "modelpress.optimizers.inc:IncTune",
}


class _Passes(Mapping):
    """name -> Pass class, its module imported on first use."""

    def __getitem__(self, name: str) -> type[Pass]:
        module, _, cls = _REGISTRY[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


PASSES: Mapping[str, type[Pass]] = _Passes()


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Register a technique defined outside modelpress (a plugin) under its `name`."""
    _REGISTRY[cls.name] = f"{cls.__module__}:{cls.__qualname__}"
    return cls


def build_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    if name not in _REGISTRY:
        raise ModelpressError(f"unknown technique {str(name)[:60]!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = PASSES[name]
    return cls(make_config(cls.config_cls, options or {}, name))
