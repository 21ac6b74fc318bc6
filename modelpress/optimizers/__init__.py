"""Optimization pass registry. A new technique is one module with a `@register_pass` class,
imported at the bottom of this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.io import atomic_path
from modelpress.onnxutil import check_onnx_file
from modelpress.optimizers.base import Pass, PassConfig, PassResult, make_config

PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    PASSES[cls.name] = cls
    return cls


def build_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    try:
        cls = PASSES[name]
    except KeyError:
        raise ModelpressError(f"unknown technique {name!r}; known: {', '.join(sorted(PASSES))}") from None
    return cls(make_config(cls.config_cls, options or {}, name))


def optimize(
    model_in: str | Path, model_out: str | Path, technique: str, options: dict[str, Any] | None = None,
    calib: Dataset | None = None,
) -> PassResult:
    """Apply one technique to an ONNX file; the output appears only if the pass succeeds."""
    p = build_pass(technique, options)
    model_in = check_onnx_file(model_in)
    if p.needs_calibration and calib is None:
        raise ModelpressError(f"{technique} needs calibration data: pass --calib FILE.npz")
    if Path(model_out).resolve() == Path(model_in).resolve():
        raise ModelpressError("output must differ from the input model")
    with atomic_path(model_out, suffix=".onnx") as tmp:
        result = p.run(Path(model_in), tmp, calib)
    return result


# The registry: one import per technique module.
from modelpress.optimizers import fp16, graph, ort_quant, weight_only  # noqa: E402,F401

__all__ = ["PASSES", "Pass", "PassConfig", "PassResult", "build_pass", "optimize", "register_pass"]
