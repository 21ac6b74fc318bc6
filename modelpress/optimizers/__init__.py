"""The executor of every ONNX technique: `optimize` / `optimize_chain` run a registered pass
(modelpress.optimizers.registry) through the validation choke point (modelpress.validate) and its repairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import shutil
import tempfile

from modelpress.data import Dataset
from modelpress.errors import BelowFidelityFloor, GoalNotMet, ModelpressError
from modelpress.io import place_model
from modelpress.onnxutil import check_onnx_file
from modelpress.optimizers.base import Pass, PassConfig, PassResult
from modelpress.optimizers.registry import PASSES, build_pass, register_pass
from modelpress.validate import DEFAULT_MIN_FIDELITY, FidelityFloor, InvalidArtifact, Validator, fmt_fidelity


def build_onnx_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    """build_pass, refusing the techniques that change a PyTorch model (they run before export)."""
    p = build_pass(name, options)
    if p.input_kind != "onnx":
        raise ModelpressError(f"{name} changes the PyTorch model before export, not an ONNX file: use "
                              f"`modelpress {'lowrank' if name == 'lowrank' else 'prune'}` or a study with a 'source'")
    return p


def optimize(
    model_in: str | Path, model_out: str | Path, technique: str, options: dict[str, Any] | None = None,
    calib: Dataset | None = None, *, min_fidelity: "FidelityFloor | str | None" = DEFAULT_MIN_FIDELITY,
    data: Dataset | None = None, runtime: str = "ort-cpu", keep_best: bool = False, repair: bool = True,
    validator: Validator | None = None, data_source: str | None = None, judged: list[str] | None = None,
) -> PassResult:
    """Apply one technique to an ONNX file. The output appears only if it is valid (checker, loads on
    `runtime`, finite) and at least `min_fidelity` to the input on `data` (default: the calibration data,
    else synthetic inputs); below the floor the technique's repairs run first. Raises BelowFidelityFloor
    (exit 6) when nothing reaches the floor; `keep_best` then keeps the best try as NAME.below-floor.onnx."""
    p = build_onnx_pass(technique, options)
    model_in = check_onnx_file(model_in)
    model_out = Path(model_out)
    if p.needs_calibration and calib is None:
        raise ModelpressError(f"{technique} needs calibration data: pass --calib FILE.npz")
    if model_out.resolve() == Path(model_in).resolve():
        raise ModelpressError("output must differ from the input model")
    _refuse_data_clash(Path(model_in), model_out)
    from modelpress.optimizers.memory import check_memory

    check_memory(technique, model_in)  # a model past 1 GB: refused up front if its predicted peak cannot fit
    if validator is None:
        src = data_source or ("the given data (--data)" if data is not None else
                              "calibration data" if calib is not None else None)
        validator = Validator(model_in, data if data is not None else calib, runtime, min_fidelity, data_source=src,
                              judged=judged)
    validator.prepare()  # the input must load and run first: its failure is the user's (exit 2), not the pass's
    with tempfile.TemporaryDirectory(prefix="modelpress-opt-") as work:
        att, tries = run_validated(p, Path(model_in), calib, validator, Path(work), repair=repair)
        result = att.result
        result.validation = att.validation.to_dict() if att.validation else None
        result.repairs = tries
        if not att.passed:
            kept = ""
            if keep_best:
                best = model_out.with_name(f"{model_out.stem}.below-floor{model_out.suffix or '.onnx'}")
                place_model(att.path, best)
                kept = f"; the best try was kept as {best}"
            v = att.validation
            raise BelowFidelityFloor(
                f"{technique}: best {v.metric} {fmt_fidelity(v.worst)} on output {v.worst_output!r} is below the floor "
                f"{v.floor} ({v.samples} samples of {v.data_source}); tried: {'; '.join(tries)}; nothing was "
                f"written at {model_out}{kept} (lower the floor with --min-fidelity, or keep more layers in FP32)")
        place_model(att.path, model_out, move=True)  # with its external data, if any: both renamed into place
    if result.goal_met is False:
        raise GoalNotMet(f"{technique}: accuracy goal not met; the best model found was saved to {model_out} "
                         f"({result.notes[-1] if result.notes else ''})")
    given = p.config.to_dict().get("exclude_nodes") or []
    added = [n for n in (result.config or {}).get("exclude_nodes") or [] if n not in given]
    if added:  # name them: a TensorRT engine, say, runs these layers in higher precision
        shown = ", ".join(added[:8]) + (f" and {len(added) - 8} more" if len(added) > 8 else "")
        result.notes.append(f"kept in FP32 by the repairs ({len(added)}): {shown}")
    return result


def optimize_chain(
    model_in: str | Path, model_out: str | Path, steps: list[tuple[str, dict[str, Any]]], calib: Dataset | None = None,
    *, min_fidelity: "FidelityFloor | str | None" = DEFAULT_MIN_FIDELITY, data: Dataset | None = None,
    runtime: str = "ort-cpu", keep_best: bool = False, data_source: str | None = None, judged: list[str] | None = None,
) -> list[PassResult]:
    """Apply techniques in order (e.g. graph then static-int8); only the final model is written.

    Each step is validated against its own input (so repairs happen where the damage is done), and the
    final model once more against the chain's input: the floor holds end to end. An accuracy-aware step
    that misses its goal mid-chain hands its best model on; the chain then raises GoalNotMet at the end."""
    if not steps:
        raise ModelpressError("a chain needs at least one technique")
    for name, opts in steps:  # every step's name and options are checked before any work
        build_onnx_pass(name, opts)
    kw = dict(min_fidelity=min_fidelity, data=data, runtime=runtime, data_source=data_source, judged=judged)
    if len(steps) == 1:
        return [optimize(model_in, model_out, steps[0][0], steps[0][1], calib, keep_best=keep_best, **kw)]
    work = Path(tempfile.mkdtemp(prefix="modelpress-chain-"))
    missed: list[str] = []
    # one validator for the chain's input: the first step is checked against it, and so is the final model, so the
    # input's reference outputs are computed once
    end = Validator(model_in, data if data is not None else calib, runtime, min_fidelity, data_source=data_source or (
        "the given data (--data)" if data is not None else "calibration data" if calib else None), judged=judged)
    try:
        results, current = [], Path(model_in)
        for i, (name, opts) in enumerate(steps):
            nxt = work / f"step{i}-{name}.onnx"
            try:
                results.append(optimize(current, nxt, name, opts, calib, validator=end if i == 0 else None, **kw))
            except BelowFidelityFloor as e:  # name the chain's output, not this step's private temp file
                raise BelowFidelityFloor(str(e).replace(str(nxt), str(model_out))) from None
            except GoalNotMet as e:
                missed.append(str(e))
                results.append(PassResult(name, build_pass(name, opts).config.to_dict(), [str(e)], goal_met=False))
            current = nxt
        v = end.check(current)
        results[-1].notes.append(f"whole chain vs its input: {v.summary()}")
        if not v.passed:
            raise BelowFidelityFloor(f"chain {' -> '.join(t for t, _ in steps)}: each step met the floor but together "
                                     f"they reach {v.metric} {fmt_fidelity(v.worst)} on {v.worst_output!r}, below {v.floor}; "
                                     f"nothing was written at {model_out}")
        place_model(current, model_out, move=True)
        if missed:
            raise GoalNotMet("; ".join(missed).replace(str(work), str(Path(model_out).parent)))
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _refuse_data_clash(model_in: Path, model_out: Path) -> None:
    """An output with external data writes OUT.onnx.data beside it: that must not be a data file of the input."""
    import os

    from modelpress.onnxutil import data_file_name, model_files

    data_out = model_out.parent / data_file_name(model_out)
    if not data_out.exists():
        return
    for f in model_files(model_in)[1:]:
        if f.exists() and os.path.samefile(f, data_out):
            raise ModelpressError(f"-o {model_out} would write its weights to {data_out}, which holds the weights of "
                                  f"the input {model_in}: choose another output name")


def run_validated(p: Pass, model_in: Path, calib: Dataset | None, validator: Validator, work: Path,
                  repair: bool = True) -> tuple[Any, list[str]]:
    """Prepare the input, run the pass, validate, repair: (the attempt to keep, a line per try)."""
    from modelpress.onnxutil import opset_of
    from modelpress.optimizers.repair import RepairContext, refuse_if_quantized, upgrade_opset

    notes: list[str] = []
    source = model_in
    if p.quantizes:
        refuse_if_quantized(model_in, p.name)
    need = p.min_opset()
    if need and opset_of(model_in) < need:
        upgraded, note = upgrade_opset(model_in, need, work, validator)
        notes.append(note)
        if upgraded is not None:
            source = upgraded
        else:
            fallback = p.for_old_opset()
            if fallback is None:
                raise ModelpressError(f"{p.name}: {note}; this technique needs opset >= {need}")
            p = fallback
            notes.append(f"{p.name} runs in a form opset {opset_of(model_in)} supports: {p.config.to_dict()}")
    ctx = RepairContext(source, calib, validator, work)
    first = ctx.attempt(p, "as configured", strict=True)
    chosen = first if first.passed else None
    if chosen is None and repair:
        for att in p.repairs(ctx, first):
            if att.passed:
                chosen = att
    if chosen is None:
        valid = [a for a in ctx.attempts if a.valid]
        if not valid:
            raise InvalidArtifact(f"{p.name} wrote no valid model: " + "; ".join(a.line() for a in ctx.attempts))
        chosen = max(valid, key=lambda a: a.score)
    tries = notes + [a.line() for a in ctx.attempts]
    if chosen is not first:
        tries.append(f"kept: {chosen.label}")
    chosen.result.notes[:0] = notes
    return chosen, tries


__all__ = ["PASSES", "Pass", "PassConfig", "PassResult", "build_onnx_pass", "build_pass", "optimize", "optimize_chain",
           "register_pass"]
