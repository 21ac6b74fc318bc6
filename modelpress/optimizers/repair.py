"""Run a pass through the validation choke point, and repair what plain onnxruntime / INC get wrong.

`run_validated` is the one executor behind `optimize()`: it prepares the input (refuses to quantize a
model that is already quantized; upgrades the opset a format needs, checking the upgraded FP32 model
against the original first), runs the pass into a private folder, validates the result
(modelpress.validate), and, below the fidelity floor or for an invalid artifact, lets the technique's
own `repairs()` try again within a bounded number of trials and seconds. Every try is recorded, so the
user sees what was changed and what it cost.

Repairs are generators on the pass classes (`Pass.repairs(ctx, first)`): they yield attempts made with
`ctx.attempt(...)` and return when satisfied. The executor keeps the last attempt that met the floor
(searches refine towards the cheapest fix), else the most faithful valid one.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from modelpress.data import Dataset
from modelpress.errors import ModelpressError, first_line
from modelpress.validate import InvalidArtifact, Validation, Validator, fmt_fidelity

DEFAULT_MAX_TRIALS = 12
DEFAULT_BUDGET_S = 900.0


@dataclass
class Attempt:
    label: str
    path: Path | None
    result: Any = None  # PassResult
    validation: Validation | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return self.validation is not None

    @property
    def passed(self) -> bool:
        return self.validation is not None and self.validation.passed

    @property
    def score(self) -> float:
        v = self.validation
        return -1.0 if v is None or v.worst is None else v.worst

    def line(self) -> str:
        if self.error:
            return f"{self.label}: {self.error}"
        v = self.validation
        return f"{self.label}: {v.metric} {fmt_fidelity(v.worst)}" if v and v.worst is not None else f"{self.label}: valid"


@dataclass
class RepairContext:
    """What a technique's repairs may use: the (prepared) input, data, the validator and a budget."""

    source: Path  # the pass's input after preparation (e.g. the opset-upgraded copy)
    calib: Dataset | None
    validator: Validator
    workdir: Path
    max_trials: int = DEFAULT_MAX_TRIALS
    budget_s: float = DEFAULT_BUDGET_S
    attempts: list[Attempt] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def has_budget(self) -> bool:
        return len(self.attempts) < self.max_trials and time.monotonic() - self.started < self.budget_s

    @property
    def data(self) -> Dataset:
        """Real samples for rankings: the calibration data, else the validator's samples."""
        return self.calib if self.calib is not None else self.validator.data

    def attempt(self, p: Any, label: str, strict: bool = False) -> Attempt:
        """Run pass `p` on the source into a fresh file and validate it. With strict, a ModelpressError
        from the pass itself (a user error such as "nothing to quantize") propagates."""
        out = self.workdir / f"try{len(self.attempts)}.onnx"
        t0 = time.monotonic()
        att = Attempt(label, out)
        try:
            att.result = p.run(self.source, out, self.calib)
            att.result.notes += tidy(out)
            att.validation = self.validator.check(out)
        except InvalidArtifact as e:
            att.error = str(e)
        except ModelpressError as e:
            if strict:
                raise  # the user's input (e.g. nothing to quantize): one line, exit 2, no repairs
            att.error = str(e)
        except Exception as e:  # noqa: BLE001 - a library crashing on this model or setting ends this try only
            att.error = (f"{type(p).__module__.rsplit('.', 1)[-1]} pass failed inside its library: {type(e).__name__}: "
                         f"{first_line(e, 200)}")
        att.seconds = round(time.monotonic() - t0, 2)
        self.attempts.append(att)
        return att


def tidy(path: Path) -> list[str]:
    """Mend, in one load and at most one save, what writers get wrong in ways ONNX Runtime tolerates but
    onnx.checker rightly refuses: a forgotten opset import for a contrib domain (ORT's MatMulNBits writer omits
    com.microsoft on some graphs), and nodes left out of topological order (ORT's float16 converter and INC on
    Paddle exports). Returns a note per mend."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # keeps references to any external data intact
    notes = []
    have = {o.domain for o in model.opset_import}
    used = sorted({n.domain for n in model.graph.node} - {"", "ai.onnx"} - have)
    if used:
        model.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in used)
        notes.append(f"declared the opset import the writer left out: {', '.join(f'{d} 1' for d in used)}")
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    for node in model.graph.node:
        if any(i not in known for i in node.input):
            from onnxruntime.transformers.onnx_model import OnnxModel

            OnnxModel(model).topological_sort()
            notes.append("nodes put in topological order (the writer left them unsorted)")
            break
        known.update(node.output)
    if notes:
        onnx.save(model, str(path))
    return notes


def with_options(p: Any, **changes: Any) -> Any:
    """The same pass with some options changed (configs are dataclasses)."""
    return type(p)(dataclasses.replace(p.config, **changes))


class Variants:
    """A repair walking through alternatives keeps the best so far as the base of its next step.

        tries = Variants(ctx, self, first)
        if (yield from tries.attempt(with_options(self, per_channel=True), "per_channel=true")):
            return  # the floor holds: done
        yield from exclusion_repair(ctx, tries.base)
    """

    def __init__(self, ctx: RepairContext, p: Any, first: Attempt) -> None:
        self.ctx, self.base, self.best = ctx, p, first

    def attempt(self, trial: Any, label: str) -> Iterator[Attempt]:
        """Try `trial` (yielding the attempt); it becomes the base unless it is worse. Returns whether it passed."""
        att = self.ctx.attempt(trial, label)
        yield att
        if att.passed or att.score >= self.best.score:
            self.base, self.best = trial, att
        return att.passed


def exclusion_search(ctx: RepairContext, make: Callable[[list[str]], Any], ranking: Sequence[str],
                     what: str) -> Iterator[Attempt]:
    """Keep the fewest of `ranking` (most harmful first) out of the technique that restore the floor:
    double the count until the floor holds, then bisect. Yields every attempt; any passing attempt comes
    with fewer kept out than every passing one before it, so the executor's "last passing" is the smallest."""
    ranking = list(ranking)
    lo, hi, k = 0, None, 1
    while k <= len(ranking) and ctx.has_budget():
        att = ctx.attempt(make(ranking[:k]), f"{k} {what} kept in FP32")
        yield att
        if att.passed:
            hi = k
            break
        lo, k = k, (k * 2 if k * 2 <= len(ranking) or k == len(ranking) else len(ranking))
    if hi is None:
        return
    while hi - lo > 1 and ctx.has_budget():
        mid = (lo + hi) // 2
        att = ctx.attempt(make(ranking[:mid]), f"{mid} {what} kept in FP32")
        yield att
        if att.passed:
            hi = mid
        else:
            lo = mid


def quantized_ops(path: str | Path) -> dict[str, int]:
    """Quantized ops already in a model (QLinearConv, DequantizeLinear on int8 weights, MatMulNBits, ...)."""
    from modelpress.onnxutil import op_counts
    from modelpress.ops import has

    return {k: v for k, v in op_counts(path).items() if has(k, "quantized") and k != "DynamicQuantizeLinear"}


def refuse_if_quantized(path: Path, technique: str) -> None:
    ops = quantized_ops(path)
    if ops:
        what = ", ".join(f"{v} {k}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:4])
        raise ModelpressError(f"{technique}: {path.name} is already quantized ({what}); modelpress refuses to "
                              "lower its precision again (give the FP32 model it was made from)")


def upgrade_opset(source: Path, target: int, workdir: Path, validator: Validator) -> tuple[Path | None, str]:
    """An upgraded copy of `source` at opset `target`, kept only if its FP32 outputs match the original's."""
    import onnx
    from onnx import version_converter

    from modelpress.onnxutil import opset_of

    before = opset_of(source)
    try:
        model = version_converter.convert_version(onnx.load(str(source)), target)
        out = workdir / f"opset{target}.onnx"
        onnx.save(model, str(out))
        v = validator.check(out, enforce_floor=False)
    except Exception as e:  # noqa: BLE001 - the converter raises many types; any failure means "cannot upgrade"
        return None, f"opset {before} -> {target} upgrade failed ({type(e).__name__}: {str(e)[:120]})"
    cos = min((o.cosine_min for o in v.outputs if o.cosine_min is not None), default=1.0)
    exact = min((o.agreement for o in v.outputs if o.kind == "exact"), default=1.0)
    if cos < 0.9999 or exact < 1.0:
        return None, f"opset {before} -> {target} upgrade changed the FP32 outputs (worst cosine {cos:.5f})"
    return out, f"opset upgraded {before} -> {target} (the format needs it; FP32 outputs checked identical)"


def activation_ranking(model: Path, data: Dataset, op_types: Sequence[str] | None = None,
                       samples: int = 8) -> list[str]:
    """Nodes ranked by the largest magnitude of their FP32 outputs on real data (overflow past float16's 65504
    first): where float16 loses most. Empty when the graph cannot be instrumented (the search is then skipped)."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="modelpress-rank-") as tmp:  # never beside the user's model
            return _activation_ranking(model, Path(tmp) / "all-outputs.onnx", data, op_types, samples)
    except Exception:  # noqa: BLE001 - e.g. tensor names ORT cannot decode: no ranking, no mixed-precision search
        return []


def _activation_ranking(model: Path, tmp: Path, data: Dataset, op_types: Sequence[str] | None,
                        samples: int) -> list[str]:
    import numpy as np
    import onnx

    from modelpress.runtimes import create_runner

    m = onnx.load(str(model))
    float_outs = {o: n.name or o for n in m.graph.node if not op_types or n.op_type in op_types for o in n.output if o}
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in float_outs if o not in existing)
    onnx.save(m, str(tmp))
    scores: dict[str, float] = {}
    with create_runner("ort-cpu", tmp) as r:
        names = [o.name for o in r.outputs]
        for batch in data.take(samples).batches(1):
            for name, v in zip(names, r.session.run(names, batch)):
                if name not in float_outs or not isinstance(v, np.ndarray) or v.dtype.kind != "f" or not v.size:
                    continue
                a = np.abs(v[np.isfinite(v)])
                if a.size:
                    big = float(a.max())
                    scores[name] = max(scores.get(name, 0.0), big + (1e9 if big > 65504 else 0.0))
    return list(dict.fromkeys(float_outs[o] for o in sorted(scores, key=lambda k: -scores[k])))


def keep_file(att: Attempt, dest: Path) -> None:
    """Copy an attempt's model (self-contained) to `dest` (a caller's atomic temp path)."""
    assert att.path is not None
    shutil.copyfile(att.path, dest)
