"""Optimization pass registry. A new technique is one module with a `@register_pass` class,
imported at the bottom of this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import shutil
import tempfile

from modelpress.data import Dataset
from modelpress.errors import GoalNotMet, ModelpressError
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
    if result.goal_met is False:
        raise GoalNotMet(f"{technique}: accuracy goal not met; the best model found was saved to {model_out} "
                         f"({result.notes[-1] if result.notes else ''})")
    return result


def optimize_chain(
    model_in: str | Path, model_out: str | Path, steps: list[tuple[str, dict[str, Any]]], calib: Dataset | None = None,
) -> list[PassResult]:
    """Apply techniques in order (e.g. graph then static-int8); only the final model is written."""
    if not steps:
        raise ModelpressError("a chain needs at least one technique")
    for name, opts in steps:  # every step's name and options are checked before any work
        build_pass(name, opts)
    if len(steps) == 1:
        return [optimize(model_in, model_out, steps[0][0], steps[0][1], calib)]
    work = Path(tempfile.mkdtemp(prefix="modelpress-chain-"))
    try:
        results, current = [], Path(model_in)
        for i, (name, opts) in enumerate(steps[:-1]):
            nxt = work / f"step{i}-{name}.onnx"
            results.append(optimize(current, nxt, name, opts, calib))
            current = nxt
        results.append(optimize(current, model_out, steps[-1][0], steps[-1][1], calib))
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


# The registry: one import per technique module.
from modelpress.optimizers import fp16, graph, inc, ort_quant, weight_only  # noqa: E402,F401

__all__ = ["PASSES", "Pass", "PassConfig", "PassResult", "build_pass", "optimize", "optimize_chain", "register_pass"]
