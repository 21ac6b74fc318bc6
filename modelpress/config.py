"""Typed configs from loose options: one `make_config` for passes, runtimes' options, evaluators and study
sections, so every recipe key and CLI option is checked the same way (unknown key, wrong type, bad value: one
line naming it) and `dataclasses.asdict(config)` is exactly what a recipe-as-run records."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from modelpress.errors import ModelpressError
from modelpress.yamlsafe import short


def make_config(cls: type[Any], options: dict[str, Any], pass_name: str) -> Any:
    """Build a typed config from loose options (CLI/YAML), naming any unknown key or bad value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ModelpressError(f"{pass_name}: unknown option(s) {short(unknown)}; options are {sorted(fields)}")
    values = {}
    for key, raw in options.items():
        values[key] = _coerce(raw, hints[key], f"{pass_name}: option {key}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if raw not in args:
            raise ModelpressError(f"{where} must be one of {list(args)}, got {short(raw)}")
        return raw
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(raw, a, where)
            except ModelpressError as e:
                errors.append(str(e))
        raise ModelpressError(errors[0])
    if origin is list:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ModelpressError(f"{where} must be a list, got {short(raw)}")
        return [_coerce(x.strip() if isinstance(x, str) else x, args[0], where) for x in items]
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes", "on"):
            return True
        if str(raw).lower() in ("false", "0", "no", "off"):
            return False
        raise ModelpressError(f"{where} must be true or false, got {short(raw)}")
    if hint in (int, float):
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = hint(raw)
            if hint is int and isinstance(raw, float) and raw != value:
                raise ValueError
            return value
        except (TypeError, ValueError):
            raise ModelpressError(f"{where} must be {hint.__name__}, got {short(raw)}") from None
    if hint is str:
        return str(raw)
    if origin is dict or hint is dict:
        if not isinstance(raw, dict):
            raise ModelpressError(f"{where} must be a mapping, got {short(raw)}")
        return dict(raw)
    return raw
